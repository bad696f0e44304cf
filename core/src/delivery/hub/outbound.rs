//! What goes out to the processors: the events the backlog offers, put to
//! the group (sent on their partition's stream, held for a sent mark,
//! abandoned, or waiting for their partition), and the `Sender`s' actions
//! carried out (sends and retransmits batched into messages per stream,
//! parks, abandons, sent marks, permits).

use std::sync::atomic::Ordering;
use std::time::Instant;

use ackflow_proto::protocol::group::{Routed, StreamId};
use ackflow_proto::protocol::guarantee::Guarantee;
use ackflow_proto::protocol::sender::{Action, Offer};
use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;

use super::{MAX_EVENTS_PER_MESSAGE, State};
use crate::delivery::backlog::ReadAhead;
use crate::delivery::results::Resolution;
use crate::model::{Seq, SharedEvent};

/// Events to send, per stream (one, most of the time).
#[derive(Default)]
struct Batches(Vec<(StreamId, Vec<pb::Event>)>);

impl Batches {
    fn push(&mut self, stream: StreamId, event: pb::Event) {
        match self.0.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, events)) => events.push(event),
            None => self.0.push((stream, vec![event])),
        }
    }

    fn len(&self) -> usize {
        self.0.iter().map(|(_, events)| events.len()).sum()
    }
}

impl State {
    pub(super) async fn on_events(
        &mut self,
        first: ReadAhead,
        events_rx: &mut mpsc::Receiver<ReadAhead>,
    ) {
        let now = Instant::now();
        let mut batches = Batches::default();
        let mut resolution = Resolution::default();
        let mut next = Some(first);
        while let Some(ReadAhead { event, .. }) = next.take() {
            let guarantee = self.guarantees.of(&event.kind);
            let key = event.key.as_deref().unwrap_or_default();
            let routed = self.group.offer(event.seq, key, guarantee, now);
            if matches!(
                routed,
                Routed::Waits | Routed::To(_, Offer::Send | Offer::Mark | Offer::Abandon)
            ) {
                self.traces.begin(&event);
            }
            match routed {
                Routed::To(stream, Offer::Send) => {
                    // At least once, or at most once to be claimed (one that
                    // goes out granted does from `on_marked`).
                    let sender = self.group.sender(stream).expect("routed to it");
                    let claim = sender.needs_claim(event.seq);
                    batches.push(
                        stream,
                        to_pb(&event, 1, claim, claim, sender.after(event.seq)),
                    );
                    self.payloads.insert(event);
                    self.totals.delivered += 1;
                }
                Routed::To(_, Offer::Mark) => {
                    // Sent once its mark is durable (`on_marked`).
                    resolution.sent.push(event.seq);
                    self.payloads.insert(event);
                }
                Routed::To(_, Offer::Abandon) => {
                    let seq = event.seq;
                    self.payloads.insert(event);
                    resolution.results.push(self.abandon(
                        seq,
                        1,
                        "abandoned: core restarted after its one copy may have gone out".into(),
                    ));
                }
                // Its partition drains first, or its processor has no room:
                // it goes out from `flush`.
                Routed::Waits => self.payloads.insert(event),
                Routed::To(_, Offer::Skip | Offer::OutOfOrder)
                | Routed::Skip
                | Routed::OutOfOrder => {}
            }
            if batches.len() >= MAX_EVENTS_PER_MESSAGE
                || !self.group.can_offer()
                || !self.payloads.has_room()
            {
                break;
            }
            next = events_rx.try_recv().ok();
        }
        if self.unsafe_floor_on_send {
            // Deliberately wrong: the floor passes events nobody processed.
            let mut seqs = Vec::new();
            for (stream, events) in &batches.0 {
                let sender = self.group.sender_mut(*stream).expect("sent on it");
                for event in events {
                    sender.on_ack(event.seq);
                    seqs.push(event.seq);
                }
            }
            for seq in &seqs {
                self.payloads.remove(seq);
                self.traces.end(seq);
            }
            self.group.on_stored(seqs);
            self.floor
                .store(self.group.acked_floor(), Ordering::Release);
        }
        let marks = std::mem::take(&mut resolution.sent);
        self.mark(marks);
        if resolution.rows() > 0 {
            let _ = self.rows_tx.send(resolution);
        }
        for (stream, events) in batches.0 {
            self.send_events(stream, events).await;
        }
    }

    /// Sent marks are durable: those events are granted, or go out now.
    pub(super) async fn on_marked(&mut self, seqs: Vec<Seq>) {
        let actions = self.group.on_marked(seqs, Instant::now());
        self.totals.delivered += actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::Send { .. }))
            .count() as u64;
        self.perform(actions).await;
    }

    /// Timers of every stream, and the ends of streams whose processors
    /// did not come back within the grace.
    pub(super) async fn on_tick(&mut self) {
        let (ended, actions) = self.group.on_tick(Instant::now());
        for processor in ended {
            tracing::info!(
                %processor,
                handed_over = self.group.waiting(),
                "processor gone: its partitions and unacknowledged events move to the others"
            );
            self.feed_connection(false, &processor, 0, "gone: its partitions moved");
        }
        self.perform(actions).await;
    }

    /// Sends what waited in the group and may go now.
    pub(super) async fn flush(&mut self) {
        if self.group.waiting() > 0 {
            let actions = self.group.flush(Instant::now());
            self.perform(actions).await;
        }
    }

    /// Carries out sender actions: sends, retransmits (batched into one
    /// message per stream), parks, abandons, sent marks and permits.
    pub(super) async fn perform(&mut self, actions: Vec<(StreamId, Action)>) {
        if actions.is_empty() {
            return;
        }
        let mut batches = Batches::default();
        let mut resolution = Resolution::default();
        let mut marks = Vec::new();
        let mut granted: Vec<(StreamId, Seq)> = Vec::new();
        for (stream, action) in actions {
            match action {
                Action::Send { seq, attempt } => {
                    if let Some(copy) = self.copy(stream, seq, attempt) {
                        batches.push(stream, copy);
                    }
                }
                Action::Retransmit {
                    seq,
                    attempt,
                    backoff,
                } => {
                    self.totals.retransmits += 1;
                    self.traces.retransmit(seq, attempt);
                    if let Some(copy) = self.copy(stream, seq, attempt) {
                        batches.push(stream, copy);
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
                Action::Mark { seq } => marks.push(seq),
                Action::Permit { seq } => granted.push((stream, seq)),
            }
        }
        if resolution.rows() > 0 {
            let _ = self.rows_tx.send(resolution);
        }
        self.mark(marks);
        for (stream, events) in batches.0 {
            for chunk in events.chunks(MAX_EVENTS_PER_MESSAGE) {
                if !self.send_events(stream, chunk.to_vec()).await {
                    break;
                }
            }
        }
        let streams: std::collections::BTreeSet<StreamId> =
            granted.iter().map(|(s, _)| *s).collect();
        for stream in streams {
            let seqs = granted
                .iter()
                .filter(|(s, _)| *s == stream)
                .map(|(_, seq)| *seq)
                .collect();
            self.permit(stream, seqs, Vec::new()).await;
        }
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
    pub(super) async fn permit(&mut self, stream: StreamId, granted: Vec<Seq>, refused: Vec<Seq>) {
        if granted.is_empty() && refused.is_empty() {
            return;
        }
        self.send(
            stream,
            pb::core_message::Body::Permits(pb::Permits { granted, refused }),
        )
        .await;
    }

    /// Copy `attempt` of `seq` for `stream`, from the window's payloads.
    fn copy(&self, stream: StreamId, seq: Seq, attempt: u32) -> Option<pb::Event> {
        let event = self.payloads.get(&seq)?;
        let sender = self.group.sender(stream)?;
        let once = self.guarantees.of(&event.kind) == Guarantee::AtMostOnce;
        let claim = sender.needs_claim(seq);
        Some(to_pb(event, attempt, once, claim, sender.after(seq)))
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
