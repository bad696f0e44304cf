//! The processor's stream, seen from the hub: a hello becomes the session
//! (`Welcome` with the floor, the window, the pause state and the
//! ordering, then the faults and everything to resend), its messages become
//! acks and progress for the `Sender`, and every message to the processor
//! goes through [`State::send`] into the session's `Outbox`, which ends
//! the session when the processor stops reading. Also the floor told at once while crash suspects are
//! isolated, and the feed's connection events.
//!
//! Who is active and who stands by is `membership.rs`'s to say; which
//! stream an event goes to, the group's (`ackflow_proto::protocol::group`).

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Instant;

use ackflow_proto::protocol::group::{Joining, StreamId};
use ackflow_proto::protocol::sender::{Action, Progress};
use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;

use super::State;
use super::outbox::{Outbox, SessionTx};

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

/// A processor stream the hub serves, on one of the group's streams.
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) stream: StreamId,
    pub(super) processor_id: String,
    /// Its way out (never waited on).
    pub(super) out: Outbox,
    in_rx: mpsc::Receiver<Inbound>,
    /// When its last message came (or the session started).
    pub(super) last_heard: Instant,
    /// The floor it was last told.
    pub(super) last_floor_sent: u64,
    /// Its latest status report.
    pub(super) status: pb::ProcessorStatus,
    /// Acks accepted from it, and how many of them the metrics have.
    pub(super) acks: u64,
    pub(super) acks_synced: u64,
    /// Acks at the start of the current rate sample, and the rate of the
    /// last one (for the snapshot).
    pub(super) ack_sample: (Instant, u64),
    pub(super) ack_rate: f64,
}

impl Session {
    pub(super) fn new(id: u64, stream: StreamId, new: NewSession, now: Instant) -> Self {
        Self {
            id,
            stream,
            processor_id: new.hello.processor_id,
            out: Outbox::new(new.out_tx, now),
            in_rx: new.in_rx,
            last_heard: now,
            last_floor_sent: 0,
            status: pb::ProcessorStatus::default(),
            acks: 0,
            acks_synced: 0,
            ack_sample: (now, 0),
            ack_rate: 0.0,
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

/// The next message of any session, and its stream; pending while there
/// is none. Sessions are polled in turn from `turn`, so that a busy one
/// does not starve the others.
pub(super) async fn recv_any(
    sessions: &mut BTreeMap<StreamId, Session>,
    turn: &mut usize,
) -> (StreamId, Inbound) {
    poll_fn(|cx| {
        let n = sessions.len();
        if n == 0 {
            return Poll::Pending;
        }
        let start = *turn % n;
        let (first, second): (Vec<_>, Vec<_>) = sessions
            .iter_mut()
            .enumerate()
            .partition(|(i, _)| *i >= start);
        for (_, (stream, session)) in first.into_iter().chain(second) {
            match session.in_rx.poll_recv(cx) {
                Poll::Ready(message) => {
                    *turn = turn.wrapping_add(1);
                    let inbound =
                        message.unwrap_or_else(|| Inbound::Closed("stream reader ended".into()));
                    return Poll::Ready((*stream, inbound));
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
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
        let attached = self.group.attach(
            Joining {
                processor_id: &hello.processor_id,
                life: hello.life,
                window: processor_window,
                claims: hello.claims,
                paused: self.paused,
            },
            now,
        );
        let stream = attached.stream;
        let (id, replaced) = self.members.begin(new, stream, now);
        if let Some(old) = replaced {
            tracing::warn!(session = old.id, processor = %old.processor_id, "replaced by a new processor connection");
            self.feed_connection(
                false,
                &old.processor_id,
                old.id,
                "replaced by a new connection",
            );
        }
        let sender = self.group.sender(stream).expect("just attached");
        tracing::info!(
            session = id,
            stream,
            processor = %hello.processor_id,
            acked_floor = self.group.acked_floor(),
            window = sender.window(),
            new_life = attached.new_life,
            resend = attached.actions.len(),
            streams = self.members.active.len(),
            "processor connected"
        );
        self.feed_connection(true, &hello.processor_id, id, "");
        let welcome = pb::core_message::Body::Welcome(pb::Welcome {
            session: id,
            acked_floor: self.group.acked_floor(),
            window: sender.window() as u32,
            paused: self.paused,
            ordering: self.ordering as i32,
            resolved_above: sender.resolved_above(0),
            processor_silence_ms: self.members.silence().as_millis() as u64,
            new_stream: !attached.resumed,
        });
        if !self.send(stream, welcome).await {
            // The stream is gone, but the group has already decided for
            // the new life (events to park or abandon are storing): their
            // rows are written all the same, or the floor would stop at
            // them, and other streams' sends go out. This stream's sends
            // are left to its next session.
            let rows = attached
                .actions
                .into_iter()
                .filter(|(s, a)| {
                    *s != stream
                        || matches!(
                            a,
                            Action::Park { .. } | Action::Abandon { .. } | Action::Mark { .. }
                        )
                })
                .collect();
            self.perform(rows).await;
            return;
        }
        if self.faults != pb::Faults::default() {
            self.send(stream, control(pb::control::Command::Faults(self.faults)))
                .await;
        }
        self.perform(attached.actions).await;
        // The first round trip of the new stream, measured at once.
        self.heartbeat(stream, true).await;
    }

    /// Sends a heartbeat with the floor to `stream`'s processor; with
    /// `probe`, and none awaiting its echo, asks it to echo it (a
    /// round-trip sample).
    pub(super) async fn heartbeat(&mut self, stream: StreamId, probe: bool) {
        let floor = self.group.acked_floor();
        let Some(sender) = self.group.sender_mut(stream) else {
            return;
        };
        let probe = match probe {
            true => sender.probe(Instant::now()).unwrap_or_default(),
            false => 0,
        };
        // What a processor stuck behind resolved seqs may pass over (none
        // once it has received everything sent).
        let resolved_above = match sender.progress().received_below {
            0 => Vec::new(),
            below => sender.resolved_above(below),
        };
        if let Some(session) = self.members.active.get_mut(&stream) {
            session.last_floor_sent = floor;
        }
        self.send(
            stream,
            pb::core_message::Body::Heartbeat(pb::Heartbeat {
                acked_floor: floor,
                probe,
                resolved_above,
            }),
        )
        .await;
    }

    pub(super) async fn on_inbound(&mut self, stream: StreamId, inbound: Inbound) {
        let now = Instant::now();
        if let (Inbound::Message(_), Some(session)) =
            (&inbound, self.members.active.get_mut(&stream))
        {
            session.last_heard = now;
        }
        match inbound {
            Inbound::Closed(reason) => self.disconnect(stream, &reason, false),
            Inbound::Message(msg) => match msg.body {
                Some(pb::processor_message::Body::Acks(mut batch)) => {
                    let progress = Progress {
                        processed_below: batch.processed_below,
                        received_below: batch.received_below,
                        awaiting: std::mem::take(&mut batch.awaiting),
                    };
                    let before = self.totals.acks;
                    self.on_acks(stream, batch);
                    if let Some(session) = self.members.active.get_mut(&stream) {
                        session.acks += self.totals.acks - before;
                    }
                    self.on_progress(stream, progress, now).await;
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
                    self.on_status(stream, status);
                    self.on_progress(stream, progress, now).await;
                }
                Some(pb::processor_message::Body::Echo(echo)) => {
                    if let Some(sender) = self.group.sender_mut(stream) {
                        sender.on_echo(echo.probe, now);
                    }
                }
                Some(pb::processor_message::Body::Claims(claims)) => {
                    let Some(sender) = self.group.sender_mut(stream) else {
                        return;
                    };
                    let claimed = sender.on_claims(claims.seqs);
                    self.mark(claimed.mark);
                    self.permit(stream, claimed.granted, claimed.refused).await;
                }
                Some(pb::processor_message::Body::Hello(_)) | None => {
                    tracing::warn!("unexpected message from processor ignored");
                }
            },
        }
    }

    async fn on_progress(&mut self, stream: StreamId, progress: Progress, now: Instant) {
        let actions = self.group.on_progress(stream, now, progress);
        self.perform(actions).await;
    }

    /// While crash suspects are isolated (in batches, once a second life
    /// ended), a processor life that just started may hold the next batch
    /// in its reorder buffer behind seqs that were resolved before it
    /// connected: it learns they are resolved from the floor, so the floor
    /// goes out as soon as it moves instead of with the next heartbeat
    /// (which cost up to 200 ms per round: when suspects went one at a
    /// time, 362 of them took a minute in a chaos run).
    pub(super) async fn tell_floor_while_isolating(&mut self) {
        let floor = self.group.acked_floor();
        let behind: Vec<StreamId> = self
            .members
            .active
            .values()
            .filter(|s| {
                s.last_floor_sent != floor
                    && self
                        .group
                        .sender(s.stream)
                        .is_some_and(|sender| sender.suspects() > 0)
            })
            .map(|s| s.stream)
            .collect();
        for stream in behind {
            self.heartbeat(stream, false).await;
        }
    }

    pub(super) async fn send_events(&mut self, stream: StreamId, events: Vec<pb::Event>) -> bool {
        // Past this core's tenure another core may lead: the events stay
        // in flight unsent, as if lost, and go out again on their ack
        // timeouts once a renewal confirms the lease (`leadership.rs`).
        if !self.tenure.holds() {
            return true;
        }
        let floor = self.group.acked_floor();
        if let Some(session) = self.members.active.get_mut(&stream) {
            session.last_floor_sent = floor;
        }
        self.send(
            stream,
            pb::core_message::Body::Events(pb::EventBatch {
                events,
                acked_floor: floor,
            }),
        )
        .await
    }

    /// Sends one message to `stream`'s processor, or queues it behind the
    /// ones its channel had no room for; never waits. A closed stream, or
    /// a processor that stopped reading, ends the session.
    pub(super) async fn send(&mut self, stream: StreamId, body: pb::core_message::Body) -> bool {
        let Some(session) = self.members.active.get_mut(&stream) else {
            return false;
        };
        let msg = pb::CoreMessage { body: Some(body) };
        match session.out.send(msg, Instant::now()) {
            Ok(()) => true,
            Err(reason) => {
                self.disconnect(stream, reason, false);
                false
            }
        }
    }

    /// Gives each backed-up session what its channel has room for now;
    /// ends those whose processor stopped reading.
    pub(super) fn drain_outboxes(&mut self) {
        let now = Instant::now();
        let failed: Vec<(StreamId, &'static str)> = self
            .members
            .active
            .iter_mut()
            .filter(|(_, s)| s.out.backed_up())
            .filter_map(|(stream, s)| s.out.drain(now).err().map(|reason| (*stream, reason)))
            .collect();
        for (stream, reason) in failed {
            self.disconnect(stream, reason, false);
        }
    }

    /// Sends one message to every active processor; true when one got it.
    pub(super) async fn broadcast(&mut self, body: pb::core_message::Body) -> bool {
        let streams: Vec<StreamId> = self.members.active.keys().copied().collect();
        let mut sent = false;
        for stream in streams {
            sent |= self.send(stream, body.clone()).await;
        }
        sent
    }

    /// Ends the sessions silent for `--processor-silence-ms` while another
    /// processor could take their work (`Membership::silent`); the run
    /// loop then promotes a standby, or the group moves the partitions.
    pub(super) fn leave_silent(&mut self, now: Instant) {
        for (stream, silent) in self.members.silent(now) {
            let Some(session) = self.members.active.get(&stream) else {
                continue;
            };
            tracing::warn!(
                session = session.id,
                processor = %session.processor_id,
                silent_ms = silent.as_millis() as u64,
                "processor silent: its work moves to another processor"
            );
            self.disconnect(
                stream,
                &format!(
                    "silent for {} ms while another processor could take its work",
                    silent.as_millis()
                ),
                true,
            );
            self.members.after_silent_cut();
        }
    }

    /// `stream`'s session ended (`silent`: cut for its silence). What the
    /// group decides (abandons, events moving to other streams) is carried
    /// out at the top of the next turn of the loop.
    pub(super) fn disconnect(&mut self, stream: StreamId, reason: &str, silent: bool) {
        if let Some(session) = self.members.end(stream, Instant::now()) {
            tracing::info!(session = session.id, processor = %session.processor_id, %reason, "processor disconnected");
            let actions = self.group.detach(stream, silent, Instant::now());
            self.deferred.extend(actions);
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
