//! The delivery hub: one task that owns the processor group ([`Group`]: a
//! `Sender` per processor stream and the routing between them) and
//! performs its actions. It multiplexes the processor sessions, the
//! backlog reader, the result writer, retransmit timers, operator commands
//! and the admin snapshot ticker.
//!
//! Architecture invariant: only this task mutates delivery state, so there
//! are no locks on the hot path; everything else talks to it by message.
//!
//! Around this event loop (timers, commands), one file per concern:
//! `membership.rs` says which processors are active and who stands by;
//! `session.rs` is a processor's stream (hello, welcome, inbound
//! messages, every send) and `outbox.rs` its way out, never waited on;
//! `outbound.rs` puts the offered events to the group and carries out the
//! `Sender`s' actions; `acks.rs` turns acks
//! into results, dead entries and retry schedules and takes the writer's
//! "stored" back; `payloads.rs` keeps the window's payloads within
//! `--window-bytes`; `traces.rs` holds the traced events' `deliver` and
//! `result` spans; `snapshot.rs` turns the hub's state into the admin
//! snapshot and the Prometheus metrics. What stays here is the loop, its
//! state and start-up, and the handlers for timers and commands, which
//! are short and only make sense next to the loop.

mod acks;
mod membership;
mod outbound;
mod outbox;
mod payloads;
mod session;
mod snapshot;
mod traces;

pub use self::outbox::SessionTx;
pub use self::session::{Inbound, NewSession};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ackflow_proto::rt::sleep_until;
use ackflow_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::acks::Storing;
use self::membership::Membership;
use self::payloads::Payloads;
use self::session::{control, recv_any};
use self::traces::Traces;
use super::backlog::{self, ReadAhead};
use super::results::{Resolution, Stored};
use crate::ingest::Ingest;
use crate::metrics::CoreMetrics;
use crate::model::{DeadView, Seq, now_us};
use crate::store::SharedStore;
use crate::tail::Tail;
use ackflow_proto::protocol::group::{Group, StreamId};
use ackflow_proto::protocol::guarantee::Guarantees;
use ackflow_proto::protocol::sender::{Action, SenderConfig};

/// Most events in one `EventBatch` message.
const MAX_EVENTS_PER_MESSAGE: usize = 256;
/// How often the admin snapshot is refreshed.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);
/// How often an idle stream gets a heartbeat. A busy one gets one with
/// every snapshot tick too, for its probe (see `Sender::probe`).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Feed events buffered per watcher before it is told it lagged.
pub const FEED_CAPACITY: usize = 4096;
/// Parked events the snapshot lists (the latest).
const DEAD_SHOWN: u32 = 50;

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
    /// Whether this core still leads: no event goes out past it.
    pub tenure: crate::leadership::Tenure,
    /// An active processor silent this long gives way to a waiting standby
    /// (`--processor-silence-ms`).
    pub processor_silence: Duration,
    /// How long standbys wait for an active processor whose stream ended to
    /// come back (`--processor-return-grace-ms`).
    pub processor_return_grace: Duration,
    /// Partitions the keys are spread over under `key` ordering
    /// (`--partitions`).
    pub partitions: u32,
    /// Negative control only (`--unsafe-handoff-without-drain`): a moved
    /// partition's events go to their new processor while the old one
    /// still holds some, so that broken key order can be shown detected.
    pub unsafe_handoff_without_drain: bool,
}

/// Loads the cursor, starts the hub, the backlog reader and the result
/// writer on `tracker`.
pub async fn start(
    parts: HubParts,
    tracker: &TaskTracker,
) -> Result<Hub, crate::store::StoreError> {
    let cursor = parts.store.delivery_cursor().await?;
    let keyed = parts.ordering == pb::Ordering::Key;
    let mut group = Group::new(
        parts.config,
        cursor,
        keyed,
        parts.partitions,
        parts.processor_return_grace,
        fastrand::u64(..),
    );
    group.set_drain(!parts.unsafe_handoff_without_drain);
    let dead = parts.store.dead_events(DEAD_SHOWN).await?;
    tracing::info!(
        acked_floor = group.acked_floor(),
        head = *parts.ingest.head().borrow(),
        partitions = group.partitions(),
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
    let floor = Arc::new(AtomicU64::new(group.acked_floor()));

    // The reader and writer stop with their channels, after the hub, so a
    // shutdown stores every ack the hub has accepted.
    let inner_cancel = CancellationToken::new();
    tracker.spawn(backlog::run(
        group.next_to_offer(),
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
        group,
        deferred: Vec::new(),
        ingest: parts.ingest,
        store: parts.store,
        members: Membership::new(keyed, parts.processor_silence, parts.processor_return_grace),
        payloads: Payloads::new(parts.window_bytes),
        traces: Traces::default(),
        storing: BTreeMap::new(),
        rows_tx,
        marks_tx,
        floor,
        snapshot_tx,
        feed_tx: feed_tx.clone(),
        paused: false,
        faults: pb::Faults::default(),
        totals: pb::Totals::default(),
        history: VecDeque::new(),
        dead,
        parking: BTreeMap::new(),
        dead_dirty: false,
        unsafe_floor_on_send: parts.unsafe_floor_on_send,
        tenure: parts.tenure,
        metrics: parts.metrics,
        synced: pb::Totals::default(),
        labeled: Default::default(),
        ordering: parts.ordering,
        guarantees: parts.guarantees,
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

struct State {
    /// The processor streams' `Sender`s and the routing between them.
    group: Group,
    /// What the group decided when a session ended outside the loop's
    /// turn (a failed send): carried out at the top of the next turn.
    deferred: Vec<(StreamId, Action)>,
    ingest: Ingest,
    store: SharedStore,
    /// The active processors' sessions and the standbys.
    members: Membership,
    /// Events of the window (sent, not yet resolved), for retransmits and
    /// for the result feed. Bounded by the window.
    payloads: Payloads,
    /// What the ack said, kept until the result is stored, for the result
    /// counters and feed. Bounded by the window.
    storing: BTreeMap<Seq, Storing>,
    /// Spans of the traced events in the window. Bounded by the window.
    traces: Traces,
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
    totals: pb::Totals,
    /// (time, totals) samples of the last second, for rates.
    history: VecDeque<(Instant, pb::Totals)>,
    /// The latest parked events (at most [`DEAD_SHOWN`], highest seq
    /// first), for the snapshot: an event joins it when its dead row is
    /// stored, in the same step that lets the floor pass it.
    dead: Vec<DeadView>,
    /// Parked events whose dead rows are being stored. Bounded by the window.
    parking: BTreeMap<Seq, DeadView>,
    /// A requeue changed a dead row: read the list again.
    dead_dirty: bool,
    unsafe_floor_on_send: bool,
    tenure: crate::leadership::Tenure,
    metrics: Arc<CoreMetrics>,
    /// Totals as last copied into the metrics.
    synced: pb::Totals,
    /// Processor ids with labels in the per-processor metrics.
    labeled: std::collections::BTreeSet<String>,
    ordering: pb::Ordering,
    guarantees: Guarantees,
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
            self.drain_outboxes();
            let deferred = std::mem::take(&mut self.deferred);
            self.perform(deferred).await;
            self.flush().await;
            self.promote_standby().await;
            // While a standby waits for the processor whose stream ended.
            let returning = self
                .members
                .return_deadline()
                .map(tokio::time::Instant::from_std);
            let deadline = self
                .group
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            let can_send = self.group.can_offer() && self.payloads.has_room();
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(session) = sessions_rx.recv() => self.on_session(session).await,
                (stream, inbound) = recv_any(&mut self.members.active, &mut self.members.turn) => {
                    self.on_inbound(stream, inbound).await;
                }
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
                _ = sleep_until(returning) => self.members.grace_over(),
                Some(command) = commands_rx.recv() => self.on_command(command).await,
                _ = snapshot_tick.tick() => self.on_snapshot_tick().await,
            }
        }
        // Ending the sessions ends the processors' streams, so the server's
        // graceful shutdown is not held up by them.
        for session in std::mem::take(&mut self.members.active).into_values() {
            tracing::info!(
                session = session.id,
                "closing processor stream for shutdown"
            );
        }
        inner_cancel.cancel();
        // Dropping rows_tx lets the result writer drain and stop.
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
                    .broadcast(control(pb::control::Command::Faults(faults)))
                    .await;
                let _ = reply.send(relayed);
            }
            Command::Requeued { seq, new_seq } => {
                tracing::info!(seq, new_seq, "dead event requeued");
                self.totals.requeued += 1;
                self.parking.remove(&seq);
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
        self.group.set_paused(paused);
        let command = if paused {
            pb::control::Command::Pause(true)
        } else {
            pb::control::Command::Resume(true)
        };
        self.broadcast(control(command)).await
    }

    async fn on_snapshot_tick(&mut self) {
        if self.dead_dirty {
            match self.store.dead_events(DEAD_SHOWN).await {
                Ok(dead) => {
                    self.dead = dead;
                    self.dead_dirty = false;
                }
                Err(e) => tracing::warn!(error = %e, "reading dead events failed"),
            }
        }
        let now = Instant::now();
        self.leave_silent(now);
        // A round-trip sample every tick, however busy the stream: the RTO
        // follows the path as it is now.
        let floor = self.group.acked_floor();
        let due: Vec<StreamId> = self
            .members
            .active
            .values()
            .filter(|s| {
                let quiet = now.duration_since(s.out.last_sent);
                self.group
                    .sender(s.stream)
                    .is_some_and(|sender| sender.probe_due(now))
                    || quiet >= HEARTBEAT_EVERY
                    || s.last_floor_sent != floor && quiet >= SNAPSHOT_EVERY
            })
            .map(|s| s.stream)
            .collect();
        for stream in due {
            self.heartbeat(stream, true).await;
        }
        self.publish_snapshot(now);
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
}
