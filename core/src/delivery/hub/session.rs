//! The processor's stream, seen from the hub: a hello becomes the session
//! (`Welcome` with the floor, the window, the pause state and the
//! ordering, then the faults and everything to resend), its messages become
//! acks and progress for the `Sender`, and every message to the processor
//! goes through [`State::send`], which ends the session when the processor
//! stops reading. Also the floor told at once while crash suspects are
//! isolated, and the feed's connection events.
//!
//! Who is active and who stands by is `membership.rs`'s to say.

use std::time::Instant;

use ackflow_proto::protocol::sender::{Action, Progress};
use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;

use super::{SEND_TIMEOUT, State};

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

/// The processor stream the hub serves (one at a time).
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) processor_id: String,
    out_tx: SessionTx,
    in_rx: mpsc::Receiver<Inbound>,
    /// When its last message came (or the session started).
    pub(super) last_heard: Instant,
    /// Acks accepted from it, and how many of them the metrics have.
    pub(super) acks: u64,
    pub(super) acks_synced: u64,
}

impl Session {
    pub(super) fn new(id: u64, new: NewSession, now: Instant) -> Self {
        Self {
            id,
            processor_id: new.hello.processor_id,
            out_tx: new.out_tx,
            in_rx: new.in_rx,
            last_heard: now,
            acks: 0,
            acks_synced: 0,
        }
    }

    /// Whether messages from it wait in the channel, unread by the hub.
    pub(super) fn has_waiting(&self) -> bool {
        !self.in_rx.is_empty()
    }
}

/// An operator's command as a message to the processor.
pub(super) fn control(command: pb::control::Command) -> pb::core_message::Body {
    pb::core_message::Body::Control(pb::Control {
        command: Some(command),
    })
}

/// The next message of the session's stream; pending while there is none.
pub(super) async fn recv_session(session: &mut Option<Session>) -> Inbound {
    match session {
        Some(s) => s
            .in_rx
            .recv()
            .await
            .unwrap_or_else(|| Inbound::Closed("stream reader ended".into())),
        None => std::future::pending().await,
    }
}

impl State {
    pub(super) async fn on_session(&mut self, new: NewSession) {
        let id = new.hello.processor_id.clone();
        if let Some(ahead) = self.members.ahead_of(&id) {
            let standbys = self.members.stand_by(new);
            tracing::info!(processor = %id, %ahead, standbys, "processor stands by");
            self.feed_connection(false, &id, 0, &format!("standing by while {ahead}"));
            return;
        }
        self.activate(new).await;
    }

    /// The active processor is gone: the first standby whose stream is
    /// still open takes over.
    pub(super) async fn promote_standby(&mut self) {
        if let Some(next) = self.members.next_standby() {
            tracing::info!(processor = %next.hello.processor_id, "standby takes over");
            self.activate(next).await;
        }
    }

    async fn activate(&mut self, new: NewSession) {
        let now = Instant::now();
        let processor_window = if new.hello.window == 0 {
            u32::MAX
        } else {
            new.hello.window
        };
        let hello = new.hello.clone();
        let (id, replaced, new_life) = self.members.begin(new, now);
        if let Some(old) = replaced {
            tracing::warn!(session = old.id, processor = %old.processor_id, "replaced by a new processor connection");
            self.feed_connection(
                false,
                &old.processor_id,
                old.id,
                "replaced by a new connection",
            );
            self.sender.on_disconnect();
        }
        let resend =
            self.sender
                .on_connect(now, processor_window, self.paused, new_life, hello.claims);
        tracing::info!(
            session = id,
            processor = %hello.processor_id,
            acked_floor = self.sender.acked_floor(),
            window = self.sender.window(),
            resend = resend.len(),
            "processor connected"
        );
        self.status = pb::ProcessorStatus::default();
        self.feed_connection(true, &hello.processor_id, id, "");
        let welcome = pb::core_message::Body::Welcome(pb::Welcome {
            session: id,
            acked_floor: self.sender.acked_floor(),
            window: self.sender.window() as u32,
            paused: self.paused,
            ordering: self.ordering as i32,
            resolved_above: self.sender.resolved_above(0),
            processor_silence_ms: self.members.silence().as_millis() as u64,
        });
        if !self.send(welcome).await {
            // The stream is gone, but the Sender has already decided for
            // the new life (events to park or abandon are storing): their
            // rows are written all the same, or the floor would stop at
            // them. The sends are left to the next session.
            let rows = resend
                .into_iter()
                .filter(|a| {
                    matches!(
                        a,
                        Action::Park { .. } | Action::Abandon { .. } | Action::Mark { .. }
                    )
                })
                .collect();
            self.perform(rows).await;
            return;
        }
        if self.faults != pb::Faults::default() {
            self.send(control(pb::control::Command::Faults(self.faults)))
                .await;
        }
        self.perform(resend).await;
        // The first round trip of the new stream, measured at once.
        self.heartbeat(true).await;
    }

    /// Sends a heartbeat with the floor; with `probe`, and none awaiting
    /// its echo, asks the processor to echo it (a round-trip sample).
    pub(super) async fn heartbeat(&mut self, probe: bool) {
        let floor = self.sender.acked_floor();
        let probe = match probe {
            true => self.sender.probe(Instant::now()).unwrap_or_default(),
            false => 0,
        };
        self.last_floor_sent = floor;
        // What a processor stuck behind resolved seqs may pass over (none
        // once it has received everything sent).
        let received_below = self.sender.progress().received_below;
        let resolved_above = match received_below {
            0 => Vec::new(),
            below => self.sender.resolved_above(below),
        };
        self.send(pb::core_message::Body::Heartbeat(pb::Heartbeat {
            acked_floor: floor,
            probe,
            resolved_above,
        }))
        .await;
    }

    pub(super) async fn on_inbound(&mut self, inbound: Inbound) {
        if let (Inbound::Message(_), Some(session)) = (&inbound, &mut self.members.active) {
            session.last_heard = Instant::now();
        }
        match inbound {
            Inbound::Closed(reason) => self.disconnect(&reason),
            Inbound::Message(msg) => match msg.body {
                Some(pb::processor_message::Body::Acks(mut batch)) => {
                    let progress = Progress {
                        processed_below: batch.processed_below,
                        received_below: batch.received_below,
                        awaiting: std::mem::take(&mut batch.awaiting),
                    };
                    let before = self.totals.acks;
                    self.on_acks(batch);
                    if let Some(session) = &mut self.members.active {
                        session.acks += self.totals.acks - before;
                    }
                    let actions = self.sender.on_progress(Instant::now(), progress);
                    self.perform(actions).await;
                }
                Some(pb::processor_message::Body::Status(mut status)) => {
                    let progress = Progress {
                        processed_below: status.processed_below,
                        received_below: match status.received_below {
                            0 => status.next_expected,
                            below => below,
                        },
                        awaiting: std::mem::take(&mut status.awaiting),
                    };
                    self.on_status(status);
                    let actions = self.sender.on_progress(Instant::now(), progress);
                    self.perform(actions).await;
                }
                Some(pb::processor_message::Body::Echo(echo)) => {
                    self.sender.on_echo(echo.probe, Instant::now());
                }
                Some(pb::processor_message::Body::Claims(claims)) => {
                    let claimed = self.sender.on_claims(claims.seqs);
                    self.mark(claimed.mark);
                    self.permit(claimed.granted, claimed.refused).await;
                }
                Some(pb::processor_message::Body::Hello(_)) | None => {
                    tracing::warn!("unexpected message from processor ignored");
                }
            },
        }
    }

    /// While crash suspects are isolated (in batches, once a second life
    /// ended), a processor life that just started may hold the next batch
    /// in its reorder buffer behind seqs that were resolved before it
    /// connected: it learns they are resolved from the floor, so the floor
    /// goes out as soon as it moves instead of with the next heartbeat
    /// (which cost up to 200 ms per round: when suspects went one at a
    /// time, 362 of them took a minute in a chaos run).
    pub(super) async fn tell_floor_while_isolating(&mut self) {
        let floor = self.sender.acked_floor();
        if self.sender.suspects() > 0
            && self.members.active.is_some()
            && self.last_floor_sent != floor
        {
            self.heartbeat(false).await;
        }
    }

    pub(super) async fn send_events(&mut self, events: Vec<pb::Event>) -> bool {
        // Past this core's tenure another core may lead: the events stay
        // in flight unsent, as if lost, and go out again on their ack
        // timeouts once a renewal confirms the lease (`leadership.rs`).
        if !self.tenure.holds() {
            return true;
        }
        let floor = self.sender.acked_floor();
        self.last_floor_sent = floor;
        self.send(pb::core_message::Body::Events(pb::EventBatch {
            events,
            acked_floor: floor,
        }))
        .await
    }

    /// Sends one message to the processor; a failure ends the session.
    pub(super) async fn send(&mut self, body: pb::core_message::Body) -> bool {
        let Some(session) = &self.members.active else {
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

    /// Ends the active session when it has been silent for
    /// `--processor-silence-ms` and a standby with an open stream waits
    /// (`Membership::silent_for`); the run loop then promotes the standby.
    pub(super) fn leave_silent(&mut self, now: Instant) {
        let (Some(silent), Some(session)) = (self.members.silent_for(now), &self.members.active)
        else {
            return;
        };
        tracing::warn!(
            session = session.id,
            processor = %session.processor_id,
            silent_ms = silent.as_millis() as u64,
            "active processor silent: a standby takes over"
        );
        self.disconnect(&format!(
            "silent for {} ms while a standby waits",
            silent.as_millis()
        ));
        self.members.after_silent_cut();
    }

    pub(super) fn disconnect(&mut self, reason: &str) {
        if let Some(session) = self.members.end(Instant::now()) {
            tracing::info!(session = session.id, processor = %session.processor_id, %reason, "processor disconnected");
            self.sender.on_disconnect();
            self.status = pb::ProcessorStatus::default();
            self.feed_connection(false, &session.processor_id, session.id, reason);
        }
    }

    pub(super) fn feed_connection(
        &self,
        connected: bool,
        processor_id: &str,
        session: u64,
        reason: &str,
    ) {
        self.feed(pb::feed_event::Kind::Connection(pb::ConnectionFeed {
            connected,
            processor_id: processor_id.to_string(),
            session,
            reason: reason.to_string(),
        }));
    }
}
