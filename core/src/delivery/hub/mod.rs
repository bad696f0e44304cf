//! The delivery hub: one task that owns the [`Sender`] and performs its
//! actions. It multiplexes the processor session, the backlog reader, the
//! result writer, retransmit timers, operator commands and the admin
//! snapshot ticker.
//!
//! Architecture invariant: only this task mutates delivery state, so there
//! are no locks on the hot path; everything else talks to it by message.
//!
//! Around this event loop (session I/O, sending events, timers, commands),
//! one file per concern: `acks.rs` turns acks into results, dead entries
//! and retry schedules and takes the writer's "stored" back;
//! `payloads.rs` keeps the window's payloads within `--window-bytes`;
//! `snapshot.rs` turns the hub's state into the admin snapshot and the
//! Prometheus metrics. (This file, ~720 lines, is still the event loop plus
//! the session's I/O; moving session I/O out is planned in issue 13.)

mod acks;
mod payloads;
mod snapshot;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::acks::AckedInfo;
use self::payloads::Payloads;
use super::backlog::{self, ReadAhead};
use super::results::{Resolution, Stored};
use crate::ingest::Ingest;
use crate::metrics::CoreMetrics;
use crate::model::{DeadView, Seq, SharedEvent, now_us};
use crate::store::SharedStore;
use crate::tail::Tail;
use ackflow_proto::protocol::guarantee::Guarantees;
use ackflow_proto::protocol::sender::{Action, Offer, Progress, Sender, SenderConfig};

/// Most events in one `EventBatch` message.
const MAX_EVENTS_PER_MESSAGE: usize = 256;
/// How often the admin snapshot is refreshed.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);
/// How often an idle stream gets a heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A processor that does not take a message within this time is cut off.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Feed events buffered per watcher before it is told it lagged.
pub const FEED_CAPACITY: usize = 4096;

/// Outbound half of a processor stream.
pub type SessionTx = mpsc::Sender<Result<pb::CoreMessage, tonic::Status>>;

/// What the stream reader forwards to the hub.
#[derive(Debug)]
pub enum Inbound {
    Message(pb::ProcessorMessage),
    /// The stream ended; the reason is logged and shown on the monitor.
    Closed(String),
}

/// A processor that said hello.
pub struct NewSession {
    pub hello: pb::Hello,
    pub out_tx: SessionTx,
    pub in_rx: mpsc::Receiver<Inbound>,
}

/// Operator commands, from the admin service.
#[derive(Debug)]
pub enum Command {
    Pause(oneshot::Sender<bool>),
    Resume(oneshot::Sender<bool>),
    SetFaults(pb::Faults, oneshot::Sender<bool>),
    /// Dead event `seq` was published again as `new_seq`.
    Requeued {
        seq: Seq,
        new_seq: Seq,
    },
}

/// Handle to the hub, cloned into the gRPC services.
#[derive(Clone)]
pub struct Hub {
    pub sessions_tx: mpsc::Sender<NewSession>,
    pub commands_tx: mpsc::Sender<Command>,
    pub snapshot_rx: watch::Receiver<Arc<pb::Snapshot>>,
    pub feed_tx: broadcast::Sender<pb::FeedEvent>,
}

/// Everything the hub needs to start.
pub struct HubParts {
    pub config: SenderConfig,
    pub store: SharedStore,
    pub tail: Arc<Tail>,
    pub ingest: Ingest,
    pub cancel: CancellationToken,
    /// Negative control only (`--unsafe-floor-on-send`): resolve events when
    /// sent, so that loss can be shown to be detected.
    pub unsafe_floor_on_send: bool,
    pub metrics: Arc<CoreMetrics>,
    /// What processors must keep in order (`--ordering`), sent in `Welcome`.
    pub ordering: pb::Ordering,
    /// Most payload bytes in the window (`--window-bytes`).
    pub window_bytes: usize,
    /// Which kinds are delivered at most once (`--at-most-once`).
    pub guarantees: Guarantees,
}

/// Loads the cursor, starts the hub, the backlog reader and the result
/// writer on `tracker`.
pub async fn start(
    parts: HubParts,
    tracker: &TaskTracker,
) -> Result<Hub, crate::store::StoreError> {
    let cursor = parts.store.delivery_cursor().await?;
    let sender = Sender::new(parts.config, cursor, fastrand::u64(..));
    let dead = parts.store.dead_events(50).await?;
    tracing::info!(
        acked_floor = sender.acked_floor(),
        head = *parts.ingest.head().borrow(),
        "delivery resumes"
    );

    let (sessions_tx, sessions_rx) = mpsc::channel(4);
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(pb::Snapshot::default()));
    let (feed_tx, _) = broadcast::channel(FEED_CAPACITY);
    let (events_tx, events_rx) = backlog::channel();
    let (rows_tx, rows_rx) = mpsc::unbounded_channel();
    let (marks_tx, marks_rx) = mpsc::unbounded_channel();
    let (stored_tx, stored_rx) = mpsc::unbounded_channel();
    let floor = Arc::new(AtomicU64::new(sender.acked_floor()));

    // The reader and writer stop with their channels, after the hub, so a
    // shutdown stores every ack the hub has accepted.
    let inner_cancel = CancellationToken::new();
    tracker.spawn(backlog::run(
        sender.next_to_send(),
        parts.store.clone(),
        parts.tail.clone(),
        parts.ingest.head(),
        events_tx,
        inner_cancel.clone(),
    ));
    // Two writers: results and dead entries in one, sent marks in the
    // other, so an event held for its mark never waits behind a commit of
    // results (the floor they carry is unused by marks).
    for rows_rx in [rows_rx, marks_rx] {
        tracker.spawn(super::results::run(
            parts.store.clone(),
            rows_rx,
            stored_tx.clone(),
            floor.clone(),
            parts.metrics.clone(),
            parts.ingest.store_health().clone(),
            parts.cancel.clone(),
        ));
    }

    let state = State {
        sender,
        ingest: parts.ingest,
        store: parts.store,
        session: None,
        session_counter: 0,
        payloads: Payloads::new(parts.window_bytes),
        acked: BTreeMap::new(),
        rows_tx,
        marks_tx,
        floor,
        snapshot_tx,
        feed_tx: feed_tx.clone(),
        paused: false,
        faults: pb::Faults::default(),
        status: pb::ProcessorStatus::default(),
        totals: pb::Totals::default(),
        history: VecDeque::new(),
        dead,
        dead_dirty: false,
        last_sent: Instant::now(),
        last_floor_sent: 0,
        unsafe_floor_on_send: parts.unsafe_floor_on_send,
        metrics: parts.metrics,
        synced: pb::Totals::default(),
        ordering: parts.ordering,
        guarantees: parts.guarantees,
        last_life: None,
        floor_since: (0, Instant::now()),
        last_snapshot_suspects: 0,
    };
    tracker.spawn(state.run(
        sessions_rx,
        commands_rx,
        events_rx,
        stored_rx,
        parts.cancel,
        inner_cancel,
    ));
    Ok(Hub {
        sessions_tx,
        commands_tx,
        snapshot_rx,
        feed_tx,
    })
}

struct Session {
    id: u64,
    processor_id: String,
    out_tx: SessionTx,
    in_rx: mpsc::Receiver<Inbound>,
}

struct State {
    sender: Sender,
    ingest: Ingest,
    store: SharedStore,
    session: Option<Session>,
    session_counter: u64,
    /// Events of the window (sent, not yet resolved), for retransmits and
    /// for the result feed. Bounded by the window.
    payloads: Payloads,
    /// What the ack said, kept until the result is stored, for the result
    /// counters and feed. Bounded by the window.
    acked: BTreeMap<Seq, AckedInfo>,
    rows_tx: mpsc::UnboundedSender<Resolution>,
    /// Sent marks to store (the second writer).
    marks_tx: mpsc::UnboundedSender<Resolution>,
    /// The floor as last computed, read by the result writer.
    floor: Arc<AtomicU64>,
    snapshot_tx: watch::Sender<Arc<pb::Snapshot>>,
    feed_tx: broadcast::Sender<pb::FeedEvent>,
    /// Operator's choice, applied to every processor that connects.
    paused: bool,
    faults: pb::Faults,
    /// Latest status report of the processor.
    status: pb::ProcessorStatus,
    totals: pb::Totals,
    /// (time, totals) samples of the last second, for rates.
    history: VecDeque<(Instant, pb::Totals)>,
    dead: Vec<DeadView>,
    dead_dirty: bool,
    last_sent: Instant,
    last_floor_sent: Seq,
    unsafe_floor_on_send: bool,
    metrics: Arc<CoreMetrics>,
    /// Totals as last copied into the metrics.
    synced: pb::Totals,
    ordering: pb::Ordering,
    guarantees: Guarantees,
    /// The life and id of the last processor that said hello.
    last_life: Option<(u64, String)>,
    /// The floor as the last snapshot saw it, and since when.
    floor_since: (Seq, Instant),
    /// Crash suspects as the last snapshot saw them (logged when it changes).
    last_snapshot_suspects: u32,
}

impl State {
    async fn run(
        mut self,
        mut sessions_rx: mpsc::Receiver<NewSession>,
        mut commands_rx: mpsc::Receiver<Command>,
        mut events_rx: mpsc::Receiver<ReadAhead>,
        mut stored_rx: mpsc::UnboundedReceiver<Stored>,
        cancel: CancellationToken,
        inner_cancel: CancellationToken,
    ) {
        let mut snapshot_tick = tokio::time::interval(SNAPSHOT_EVERY);
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let deadline = self
                .sender
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            let can_send = self.sender.can_send() && self.payloads.has_room();
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(session) = sessions_rx.recv() => self.on_session(session).await,
                inbound = recv_session(&mut self.session) => self.on_inbound(inbound).await,
                Some(event) = events_rx.recv(), if can_send => {
                    self.on_events(event, &mut events_rx).await;
                }
                Some(stored) = stored_rx.recv() => {
                    if !stored.marked.is_empty() {
                        self.on_marked(stored.marked).await;
                    }
                    self.on_stored(stored.resolved);
                    self.tell_floor_while_isolating().await;
                }
                _ = sleep_until(deadline) => self.on_tick().await,
                Some(command) = commands_rx.recv() => self.on_command(command).await,
                _ = snapshot_tick.tick() => self.on_snapshot_tick().await,
            }
        }
        // Ending the session ends the processor's stream, so the server's
        // graceful shutdown is not held up by it.
        if let Some(session) = self.session.take() {
            tracing::info!(
                session = session.id,
                "closing processor stream for shutdown"
            );
        }
        inner_cancel.cancel();
        // Dropping rows_tx lets the result writer drain and stop.
    }

    async fn on_session(&mut self, new: NewSession) {
        if let Some(old) = self.session.take() {
            tracing::warn!(session = old.id, processor = %old.processor_id, "replaced by a new processor connection");
            self.feed_connection(
                false,
                &old.processor_id,
                old.id,
                "replaced by a new connection",
            );
            self.sender.on_disconnect();
        }
        self.session_counter += 1;
        let id = self.session_counter;
        let now = Instant::now();
        let processor_window = if new.hello.window == 0 {
            u32::MAX
        } else {
            new.hello.window
        };
        let life = (new.hello.life, new.hello.processor_id.clone());
        let new_life = match &self.last_life {
            Some((last, id)) if new.hello.life == 0 => *id != new.hello.processor_id || *last != 0,
            Some((last, _)) => *last != new.hello.life,
            None => true,
        };
        self.last_life = Some(life);
        let resend = self
            .sender
            .on_connect(now, processor_window, self.paused, new_life);
        tracing::info!(
            session = id,
            processor = %new.hello.processor_id,
            acked_floor = self.sender.acked_floor(),
            window = self.sender.window(),
            resend = resend.len(),
            "processor connected"
        );
        self.status = pb::ProcessorStatus::default();
        self.session = Some(Session {
            id,
            processor_id: new.hello.processor_id.clone(),
            out_tx: new.out_tx,
            in_rx: new.in_rx,
        });
        self.feed_connection(true, &new.hello.processor_id, id, "");
        let welcome = pb::core_message::Body::Welcome(pb::Welcome {
            session: id,
            acked_floor: self.sender.acked_floor(),
            window: self.sender.window() as u32,
            paused: self.paused,
            ordering: self.ordering as i32,
        });
        if !self.send(welcome).await {
            return;
        }
        if self.faults != pb::Faults::default() {
            self.send(control(pb::control::Command::Faults(self.faults)))
                .await;
        }
        self.perform(resend).await;
    }

    async fn on_inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Closed(reason) => self.disconnect(&reason),
            Inbound::Message(msg) => match msg.body {
                Some(pb::processor_message::Body::Acks(batch)) => {
                    let progress = Progress {
                        processed_below: batch.processed_below,
                        received_below: batch.received_below,
                    };
                    self.on_acks(batch);
                    let actions = self.sender.on_progress(Instant::now(), progress);
                    self.perform(actions).await;
                }
                Some(pb::processor_message::Body::Status(status)) => {
                    let progress = Progress {
                        processed_below: status.processed_below,
                        received_below: match status.received_below {
                            0 => status.next_expected,
                            below => below,
                        },
                    };
                    self.on_status(status);
                    let actions = self.sender.on_progress(Instant::now(), progress);
                    self.perform(actions).await;
                }
                Some(pb::processor_message::Body::Hello(_)) | None => {
                    tracing::warn!("unexpected message from processor ignored");
                }
            },
        }
    }

    async fn on_events(&mut self, first: ReadAhead, events_rx: &mut mpsc::Receiver<ReadAhead>) {
        let now = Instant::now();
        let mut batch = Vec::new();
        let mut resolution = Resolution::default();
        let mut next = Some(first);
        while let Some(ReadAhead { event, .. }) = next.take() {
            let guarantee = self.guarantees.of(&event.kind);
            match self.sender.on_offer(event.seq, guarantee, now) {
                Offer::Send => {
                    batch.push(to_pb(&event, 1));
                    self.payloads.insert(event);
                    self.totals.delivered += 1;
                }
                Offer::Mark => {
                    // Sent once its mark is durable (`on_marked`).
                    resolution.sent.push(event.seq);
                    self.payloads.insert(event);
                }
                Offer::Abandon => {
                    let seq = event.seq;
                    self.payloads.insert(event);
                    resolution.results.push(self.abandon(
                        seq,
                        1,
                        "abandoned: core restarted after its one copy may have gone out".into(),
                    ));
                }
                Offer::Skip | Offer::OutOfOrder => {}
            }
            if batch.len() >= MAX_EVENTS_PER_MESSAGE
                || !self.sender.can_send()
                || !self.payloads.has_room()
            {
                break;
            }
            next = events_rx.try_recv().ok();
        }
        if self.unsafe_floor_on_send {
            // Deliberately wrong: the floor passes events nobody processed.
            let seqs: Vec<Seq> = batch.iter().map(|e| e.seq).collect();
            for seq in &seqs {
                self.sender.on_ack(*seq, 1, now);
                self.payloads.remove(seq);
            }
            self.sender.on_stored(seqs);
            self.floor
                .store(self.sender.acked_floor(), Ordering::Release);
        }
        if !resolution.sent.is_empty() {
            let _ = self.marks_tx.send(Resolution {
                sent: std::mem::take(&mut resolution.sent),
                ..Resolution::default()
            });
        }
        if resolution.rows() > 0 {
            let _ = self.rows_tx.send(resolution);
        }
        if !batch.is_empty() {
            self.send_events(batch).await;
        }
    }

    /// Sent marks are durable: those events go out now.
    async fn on_marked(&mut self, seqs: Vec<Seq>) {
        let actions = self.sender.on_marked(seqs, Instant::now());
        self.totals.delivered += actions.len() as u64;
        self.perform(actions).await;
    }

    async fn on_tick(&mut self) {
        let actions = self.sender.on_tick(Instant::now());
        self.perform(actions).await;
    }

    /// Carries out sender actions: sends, retransmits (batched into one
    /// message), parks and abandons.
    async fn perform(&mut self, actions: Vec<Action>) {
        let mut batch = Vec::new();
        let mut resolution = Resolution::default();
        for action in actions {
            match action {
                Action::Send { seq, attempt } => {
                    if let Some(event) = self.payloads.get(&seq) {
                        batch.push(to_pb(event, attempt));
                    }
                }
                Action::Retransmit {
                    seq,
                    attempt,
                    backoff,
                } => {
                    self.totals.retransmits += 1;
                    if let Some(event) = self.payloads.get(&seq) {
                        batch.push(to_pb(event, attempt));
                    }
                    self.feed(pb::feed_event::Kind::Retransmit(pb::RetransmitFeed {
                        seq,
                        attempt,
                        backoff_us: backoff.as_micros() as u64,
                    }));
                }
                Action::Park {
                    seq,
                    attempts,
                    reason,
                } => resolution.dead.push(self.park(seq, attempts, reason)),
                Action::Abandon {
                    seq,
                    attempts,
                    reason,
                } => resolution.results.push(self.abandon(seq, attempts, reason)),
            }
        }
        if resolution.rows() > 0 {
            let _ = self.rows_tx.send(resolution);
        }
        for chunk in batch.chunks(MAX_EVENTS_PER_MESSAGE) {
            if !self.send_events(chunk.to_vec()).await {
                break;
            }
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Pause(reply) => {
                let relayed = self.set_paused(true).await;
                let _ = reply.send(relayed);
            }
            Command::Resume(reply) => {
                let relayed = self.set_paused(false).await;
                let _ = reply.send(relayed);
            }
            Command::SetFaults(faults, reply) => {
                tracing::info!(?faults, "fault settings changed");
                self.faults = faults;
                let relayed = self
                    .send(control(pb::control::Command::Faults(faults)))
                    .await;
                let _ = reply.send(relayed);
            }
            Command::Requeued { seq, new_seq } => {
                tracing::info!(seq, new_seq, "dead event requeued");
                self.totals.requeued += 1;
                self.dead_dirty = true;
                self.feed(pb::feed_event::Kind::Requeued(pb::RequeuedFeed {
                    seq,
                    new_seq,
                }));
            }
        }
    }

    async fn set_paused(&mut self, paused: bool) -> bool {
        if self.paused != paused {
            tracing::info!(
                paused,
                "processor {}",
                if paused { "paused" } else { "resumed" }
            );
            self.feed(pb::feed_event::Kind::Pause(pb::PauseFeed { paused }));
        }
        self.paused = paused;
        self.sender.set_paused(paused);
        let command = if paused {
            pb::control::Command::Pause(true)
        } else {
            pb::control::Command::Resume(true)
        };
        self.send(control(command)).await
    }

    async fn on_snapshot_tick(&mut self) {
        if self.dead_dirty {
            match self.store.dead_events(50).await {
                Ok(dead) => {
                    self.dead = dead;
                    self.dead_dirty = false;
                }
                Err(e) => tracing::warn!(error = %e, "reading dead events failed"),
            }
        }
        let now = Instant::now();
        if self.session.is_some()
            && (now.duration_since(self.last_sent) >= HEARTBEAT_EVERY
                || self.last_floor_sent != self.sender.acked_floor())
            && now.duration_since(self.last_sent) >= SNAPSHOT_EVERY
        {
            let floor = self.sender.acked_floor();
            self.send(pb::core_message::Body::Heartbeat(pb::Heartbeat {
                acked_floor: floor,
            }))
            .await;
        }
        self.publish_snapshot(now);
    }

    /// While crash suspects are sent one at a time, a processor life that
    /// just started may hold the next suspect in its reorder buffer behind
    /// seqs that were resolved before it connected: it learns they are
    /// resolved from the floor, so the floor goes out as soon as it moves
    /// instead of with the next heartbeat (which cost up to 200 ms per
    /// suspect: 362 suspects took a minute in a chaos run).
    async fn tell_floor_while_isolating(&mut self) {
        let floor = self.sender.acked_floor();
        if self.sender.suspects() > 0 && self.session.is_some() && self.last_floor_sent != floor {
            self.last_floor_sent = floor;
            self.send(pb::core_message::Body::Heartbeat(pb::Heartbeat {
                acked_floor: floor,
            }))
            .await;
        }
    }

    async fn send_events(&mut self, events: Vec<pb::Event>) -> bool {
        let floor = self.sender.acked_floor();
        self.last_floor_sent = floor;
        self.send(pb::core_message::Body::Events(pb::EventBatch {
            events,
            acked_floor: floor,
        }))
        .await
    }

    /// Sends one message to the processor; a failure ends the session.
    async fn send(&mut self, body: pb::core_message::Body) -> bool {
        let Some(session) = &self.session else {
            return false;
        };
        let msg = pb::CoreMessage { body: Some(body) };
        match tokio::time::timeout(SEND_TIMEOUT, session.out_tx.send(Ok(msg))).await {
            Ok(Ok(())) => {
                self.last_sent = Instant::now();
                true
            }
            Ok(Err(_)) => {
                self.disconnect("stream closed");
                false
            }
            Err(_) => {
                self.disconnect("processor stopped reading");
                false
            }
        }
    }

    fn disconnect(&mut self, reason: &str) {
        if let Some(session) = self.session.take() {
            tracing::info!(session = session.id, processor = %session.processor_id, %reason, "processor disconnected");
            self.sender.on_disconnect();
            self.status = pb::ProcessorStatus::default();
            self.feed_connection(false, &session.processor_id, session.id, reason);
        }
    }

    /// The key of an event in the window (empty: no key, or not held).
    fn key_of(&self, seq: Seq) -> String {
        self.payloads
            .get(&seq)
            .and_then(|e| e.key.clone())
            .unwrap_or_default()
    }

    fn feed(&self, kind: pb::feed_event::Kind) {
        if self.feed_tx.receiver_count() > 0 {
            let _ = self.feed_tx.send(pb::FeedEvent {
                at_us: now_us(),
                kind: Some(kind),
            });
        }
    }

    fn feed_connection(&self, connected: bool, processor_id: &str, session: u64, reason: &str) {
        self.feed(pb::feed_event::Kind::Connection(pb::ConnectionFeed {
            connected,
            processor_id: processor_id.to_string(),
            session,
            reason: reason.to_string(),
        }));
    }
}

fn control(command: pb::control::Command) -> pb::core_message::Body {
    pb::core_message::Body::Control(pb::Control {
        command: Some(command),
    })
}

fn to_pb(event: &SharedEvent, attempt: u32) -> pb::Event {
    pb::Event {
        seq: event.seq,
        id: event.id.clone(),
        kind: event.kind.clone(),
        key: event.key.clone().unwrap_or_default(),
        payload: event.payload.clone(),
        published_at_us: event.published_at_us,
        attempt,
    }
}

async fn recv_session(session: &mut Option<Session>) -> Inbound {
    match session {
        Some(s) => s
            .in_rx
            .recv()
            .await
            .unwrap_or_else(|| Inbound::Closed("stream reader ended".into())),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
