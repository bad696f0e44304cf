//! What goes out to the processor: the events the backlog offers, put to
//! the [`Sender`] (sent, held for a sent mark, or abandoned), and the
//! `Sender`'s actions carried out (sends and retransmits batched into
//! messages, parks, abandons, sent marks, permits).

use std::sync::atomic::Ordering;
use std::time::Instant;

use ackflow_proto::protocol::guarantee::Guarantee;
use ackflow_proto::protocol::sender::{Action, Offer};
use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;

use super::{MAX_EVENTS_PER_MESSAGE, State};
use crate::delivery::backlog::ReadAhead;
use crate::delivery::results::Resolution;
use crate::model::{Seq, SharedEvent};

impl State {
    pub(super) async fn on_events(
        &mut self,
        first: ReadAhead,
        events_rx: &mut mpsc::Receiver<ReadAhead>,
    ) {
        let now = Instant::now();
        let mut batch = Vec::new();
        let mut resolution = Resolution::default();
        let mut next = Some(first);
        while let Some(ReadAhead { event, .. }) = next.take() {
            let guarantee = self.guarantees.of(&event.kind);
            let offer = self.sender.on_offer(event.seq, guarantee, now);
            if matches!(offer, Offer::Send | Offer::Mark | Offer::Abandon) {
                self.traces.begin(&event);
            }
            match offer {
                Offer::Send => {
                    // At least once, or at most once to be claimed (one that
                    // goes out granted does from `on_marked`).
                    let claim = self.sender.needs_claim(event.seq);
                    batch.push(to_pb(&event, 1, claim, claim, self.sender.after(event.seq)));
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
                self.sender.on_ack(*seq);
                self.payloads.remove(seq);
                self.traces.end(seq);
            }
            self.sender.on_stored(seqs);
            self.floor
                .store(self.sender.acked_floor(), Ordering::Release);
        }
        let marks = std::mem::take(&mut resolution.sent);
        self.mark(marks);
        if resolution.rows() > 0 {
            let _ = self.rows_tx.send(resolution);
        }
        if !batch.is_empty() {
            self.send_events(batch).await;
        }
    }

    /// Sent marks are durable: those events are granted, or go out now.
    pub(super) async fn on_marked(&mut self, seqs: Vec<Seq>) {
        let actions = self.sender.on_marked(seqs, Instant::now());
        self.totals.delivered += actions
            .iter()
            .filter(|a| matches!(a, Action::Send { .. }))
            .count() as u64;
        self.perform(actions).await;
    }

    pub(super) async fn on_tick(&mut self) {
        let actions = self.sender.on_tick(Instant::now());
        self.perform(actions).await;
    }

    /// Carries out sender actions: sends, retransmits (batched into one
    /// message), parks, abandons, sent marks and permits.
    pub(super) async fn perform(&mut self, actions: Vec<Action>) {
        let mut batch = Vec::new();
        let mut resolution = Resolution::default();
        let mut marks = Vec::new();
        let mut granted = Vec::new();
        for action in actions {
            match action {
                Action::Send { seq, attempt } => batch.extend(self.copy(seq, attempt)),
                Action::Retransmit {
                    seq,
                    attempt,
                    backoff,
                } => {
                    self.totals.retransmits += 1;
                    self.traces.retransmit(seq, attempt);
                    batch.extend(self.copy(seq, attempt));
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
                Action::Mark { seq } => marks.push(seq),
                Action::Permit { seq } => granted.push(seq),
            }
        }
        if resolution.rows() > 0 {
            let _ = self.rows_tx.send(resolution);
        }
        self.mark(marks);
        for chunk in batch.chunks(MAX_EVENTS_PER_MESSAGE) {
            if !self.send_events(chunk.to_vec()).await {
                break;
            }
        }
        self.permit(granted, Vec::new()).await;
    }

    /// Has the sent marks of `seqs` stored (the second writer); their
    /// events go on in `on_marked`.
    pub(super) fn mark(&mut self, seqs: Vec<Seq>) {
        if !seqs.is_empty() {
            let _ = self.marks_tx.send(Resolution {
                sent: seqs,
                ..Resolution::default()
            });
        }
    }

    /// Answers claims: `granted` may start, `refused` are to be skipped.
    pub(super) async fn permit(&mut self, granted: Vec<Seq>, refused: Vec<Seq>) {
        if granted.is_empty() && refused.is_empty() {
            return;
        }
        self.send(pb::core_message::Body::Permits(pb::Permits {
            granted,
            refused,
        }))
        .await;
    }

    /// Copy `attempt` of `seq`, from the window's payloads.
    fn copy(&self, seq: Seq, attempt: u32) -> Option<pb::Event> {
        let event = self.payloads.get(&seq)?;
        let once = self.guarantees.of(&event.kind) == Guarantee::AtMostOnce;
        let claim = self.sender.needs_claim(seq);
        Some(to_pb(event, attempt, once, claim, self.sender.after(seq)))
    }
}

/// The copy of `event` sent as `attempt`; `after` says which seqs below it
/// the processor may pass over ([`Sender::after`]).
///
/// [`Sender::after`]: ackflow_proto::protocol::sender::Sender::after
fn to_pb(
    event: &SharedEvent,
    attempt: u32,
    at_most_once: bool,
    claim: bool,
    after: Seq,
) -> pb::Event {
    pb::Event {
        seq: event.seq,
        id: event.id.clone(),
        kind: event.kind.clone(),
        key: event.key.clone().unwrap_or_default(),
        payload: event.payload.clone(),
        published_at_us: event.published_at_us,
        attempt,
        traceparent: event.traceparent.clone().unwrap_or_default(),
        at_most_once,
        claim,
        after: Some(after),
    }
}
