//! The processor's stream, seen from the hub: a hello becomes the session
//! (`Welcome` with the floor, the window, the pause state and the
//! ordering, then the faults and everything to resend), its messages become
//! acks and progress for the `Sender`, and every message to the processor
//! goes through [`State::send`], which ends the session when the processor
//! stops reading. Also the floor told at once while crash suspects are
//! isolated, and the feed's connection events.
//!
//! One processor is active at a time. A hello from the same processor (its
//! `processor_id`: a reconnection, or a restart with a stable
//! `--processor-id`) replaces the active stream, which is stale. A hello
//! from another processor waits as a hot standby, its stream open, and
//! takes over as soon as the active one's stream ends (its in-flight events
//! are resent to it at once, as to any new life); before, each new
//! processor replaced the active one, and two processors took turns. An
//! active processor that has said nothing for `--processor-silence-ms` (it
//! reports every 200 ms) while a standby waits is frozen or cut off: its
//! stream is ended so that the standby takes over, instead of waiting
//! about 10 s for HTTP/2 keepalive to notice; that end is not taken for a
//! crash. When the active stream ends otherwise, standbys wait
//! `--processor-return-grace-ms` for the same processor to come back (a
//! reset connection) before one takes over and the end counts as a crash.

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
    last_heard: Instant,
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
        let ahead = match (&self.session, &self.returning) {
            (Some(active), _) => Some(format!("{} is active", active.processor_id)),
            (None, Some((id, _))) => Some(format!("{id} may come back")),
            (None, None) => None,
        };
        let id = &new.hello.processor_id;
        let own = |other: &str| other == id;
        if let Some(ahead) = ahead
            && !self.session.as_ref().is_some_and(|s| own(&s.processor_id))
            && !self.returning.as_ref().is_some_and(|(r, _)| own(r))
        {
            tracing::info!(
                processor = %id,
                %ahead,
                standbys = self.standbys.len() + 1,
                "processor stands by"
            );
            self.feed_connection(false, id, 0, &format!("standing by while {ahead}"));
            self.standbys.push_back(new);
            return;
        }
        self.activate(new).await;
    }

    /// The active processor is gone: the first standby whose stream is
    /// still open takes over.
    pub(super) async fn promote_standby(&mut self) {
        while let Some(next) = self.standbys.pop_front() {
            if next.out_tx.is_closed() {
                continue;
            }
            tracing::info!(processor = %next.hello.processor_id, "standby takes over");
            self.activate(next).await;
            return;
        }
    }

    async fn activate(&mut self, new: NewSession) {
        self.returning = None;
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
            // A standby taking over from a processor cut off for its
            // silence: that one was frozen or unreachable, not known dead.
            _ if std::mem::take(&mut self.silent_cut) => false,
            Some((last, id)) if new.hello.life == 0 => *id != new.hello.processor_id || *last != 0,
            Some((last, _)) => *last != new.hello.life,
            None => true,
        };
        self.last_life = Some(life);
        let resend = self.sender.on_connect(
            now,
            processor_window,
            self.paused,
            new_life,
            new.hello.claims,
        );
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
            last_heard: now,
        });
        self.feed_connection(true, &new.hello.processor_id, id, "");
        let welcome = pb::core_message::Body::Welcome(pb::Welcome {
            session: id,
            acked_floor: self.sender.acked_floor(),
            window: self.sender.window() as u32,
            paused: self.paused,
            ordering: self.ordering as i32,
            resolved_above: self.sender.resolved_above(0),
            processor_silence_ms: self.processor_silence.as_millis() as u64,
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
        if let (Inbound::Message(_), Some(session)) = (&inbound, &mut self.session) {
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
                    self.on_acks(batch);
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
        if self.sender.suspects() > 0 && self.session.is_some() && self.last_floor_sent != floor {
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

    /// Ends the active session when it has been silent for
    /// `--processor-silence-ms` and a standby with an open stream waits;
    /// the run loop then promotes the standby. Without one the stream is
    /// kept: a frozen processor may thaw, and there is no one to hand to.
    pub(super) fn leave_silent(&mut self, now: Instant) {
        let Some(session) = &self.session else {
            return;
        };
        let silent = now.duration_since(session.last_heard);
        // Messages waiting in the channel were heard: the hub itself was
        // busy (a slow store read), not the processor silent.
        if silent < self.processor_silence
            || !session.in_rx.is_empty()
            || self.standbys.iter().all(|s| s.out_tx.is_closed())
        {
            return;
        }
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
        // Frozen, it will not be back soon: the standby takes over now, and
        // the events in flight are not crash suspects.
        self.returning = None;
        self.silent_cut = true;
    }

    pub(super) fn disconnect(&mut self, reason: &str) {
        if let Some(session) = self.session.take() {
            tracing::info!(session = session.id, processor = %session.processor_id, %reason, "processor disconnected");
            // Standbys wait a moment for it: a reset connection comes back
            // as the same life, no crash. One taking over at once would
            // count every such end as a crash (core cannot tell a reset
            // from a kill), make every event in flight a crash suspect,
            // and after two resets narrow delivery to the suspects alone.
            // With none waiting, whoever says hello first is welcomed, as
            // a restarted processor under a new id should be at once.
            if self.standbys.iter().any(|s| !s.out_tx.is_closed()) {
                self.returning = Some((
                    session.processor_id.clone(),
                    Instant::now() + self.processor_return_grace,
                ));
            }
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
