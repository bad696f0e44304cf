//! A stream's life in the group: a processor's session attaches to its
//! own stream, a free one or a new one; it detaches when the session ends;
//! after `return_grace` (at once for a processor cut for its silence) the
//! stream ends for good while another is connected, and what it held
//! waits for the partitions' new owners. Every change of who is there
//! reassigns the partitions.

use std::time::Instant;

use super::super::DeliveryCursor;
use super::super::partitions::assign;
use super::super::sender::{Action, Link, Sender};
use super::{Attached, Group, Joining, Stream, StreamId};

impl Group {
    /// A processor's session starts on a stream: its own stream if it
    /// has one (a reconnection, or a return within the grace), a stream
    /// no connected processor has when none is connected (a restart, or a
    /// standby taking over: a new life), or a new stream (`key` ordering
    /// only, beside the others).
    pub fn attach(&mut self, joining: Joining<'_>, now: Instant) -> Attached {
        let own = self
            .streams
            .iter()
            .find(|(_, s)| s.processor_id.as_deref() == Some(joining.processor_id))
            .map(|(id, _)| *id);
        let any_connected = self
            .streams
            .values()
            .any(|s| s.sender.link() != Link::Absent);
        let id = match own {
            Some(id) => id,
            None if !self.keyed || !any_connected => *self
                .streams
                .iter()
                .filter(|(_, s)| s.sender.link() == Link::Absent)
                .map(|(id, _)| id)
                .next()
                .unwrap_or_else(|| self.streams.keys().next().expect("one stream at least")),
            None => self.new_stream(),
        };
        // A life with a smaller window than the stream's last one cannot
        // take what that one was sent (its receiver drops what lies beyond
        // twice its window): the stream ends, and what it held waits for
        // the new one, which takes it within its span.
        let mut ended = Vec::new();
        let id = if self.keyed && self.shrinks(id, joining.window) {
            let fresh = self.new_stream();
            let crashed = !self.streams[&id].silent;
            ended = self.end(id, crashed, now);
            fresh
        } else {
            id
        };
        let floor = self.acked_floor();
        let stream = self.streams.get_mut(&id).expect("just found");
        if stream.sender.link() != Link::Absent {
            stream.sender.on_disconnect(); // the same processor's stale stream
        }
        let new_life = match &stream.last_life {
            _ if std::mem::take(&mut stream.silent) => false,
            Some((last, pid)) if joining.life == 0 => *pid != joining.processor_id || *last != 0,
            Some((last, _)) => *last != joining.life,
            None => true,
        };
        stream.last_life = Some((joining.life, joining.processor_id.to_string()));
        stream.processor_id = Some(joining.processor_id.to_string());
        stream.detached_at = None;
        stream.sender.set_told_floor(floor);
        let resend = stream.sender.on_connect(
            now,
            joining.window,
            joining.paused,
            new_life,
            joining.claims,
        );
        let mut actions = ended;
        actions.extend(resend.into_iter().map(|a| (id, a)));
        self.reassign();
        actions.extend(self.flush(now));
        Attached {
            stream: id,
            new_life,
            resumed: own.is_some(),
            actions,
        }
    }

    /// Whether a processor offering `window` would have a smaller window
    /// on stream `id` than its last life, which holds events in flight.
    fn shrinks(&self, id: StreamId, window: u32) -> bool {
        let sender = &self.streams[&id].sender;
        u64::from(window.min(self.config.window).max(1)) < sender.window()
            && sender.window_used() > 0
    }

    /// A stream's session ended. `silent`: it was cut for its silence (the
    /// processor frozen), so the stream is ended at once if another one is
    /// connected, and that is no crash. Otherwise it waits `return_grace`
    /// for its processor ([`end_due`](Self::end_due)).
    pub fn detach(&mut self, id: StreamId, silent: bool, now: Instant) -> Vec<(StreamId, Action)> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Vec::new();
        };
        stream.sender.on_disconnect();
        stream.detached_at = Some(now);
        stream.silent = silent;
        if silent && self.others_connected(id) {
            return self.end(id, false, now);
        }
        Vec::new()
    }

    fn others_connected(&self, id: StreamId) -> bool {
        self.streams
            .iter()
            .any(|(other, s)| *other != id && s.sender.link() != Link::Absent)
    }

    /// When the next stream's grace is over.
    pub fn next_end(&self) -> Option<Instant> {
        self.streams
            .iter()
            .filter(|(id, _)| self.others_connected(**id))
            .filter_map(|(_, s)| s.detached_at)
            .min()
            .map(|at| at + self.return_grace)
    }

    /// Ends the streams whose grace is over while another is connected:
    /// their processors' lives ended. Returns the ended streams' processor
    /// ids and what to do.
    pub fn end_due(&mut self, now: Instant) -> (Vec<String>, Vec<(StreamId, Action)>) {
        let due: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(id, s)| {
                s.detached_at
                    .is_some_and(|at| at + self.return_grace <= now && self.others_connected(**id))
            })
            .map(|(id, _)| *id)
            .collect();
        let mut ended = Vec::new();
        let mut actions = Vec::new();
        for id in due {
            let silent = self.streams[&id].silent;
            ended.push(self.streams[&id].processor_id.clone().unwrap_or_default());
            actions.extend(self.end(id, !silent, now));
        }
        (ended, actions)
    }

    /// Ends stream `id` for good: what it held waits for other streams or is
    /// abandoned; its partitions go to the others.
    fn end(&mut self, id: StreamId, crashed: bool, now: Instant) -> Vec<(StreamId, Action)> {
        let Some(stream) = self.streams.remove(&id) else {
            return Vec::new();
        };
        let ended = stream.sender.end(crashed);
        self.let_go_lingering(id);
        let mut actions = Vec::new();
        self.isolation.on_stream_end(ended.sent);
        let poison = self.isolation.on_hello(crashed);
        for mut event in ended.handover {
            let Some((_, partition)) = self.release(event.seq) else {
                continue;
            };
            if let Some(p) = poison.iter().find(|p| p.seq == event.seq) {
                self.orphans.insert(event.seq);
                actions.push((
                    id,
                    Action::Park {
                        seq: event.seq,
                        attempts: event.attempts,
                        reason: format!(
                            "crashed the processor: {} processor lives ended while it was the only event in flight",
                            p.crashes
                        ),
                    },
                ));
                continue;
            }
            event.crashes = event.crashes.max(self.isolation.crashes(event.seq));
            self.wait(event.seq, partition, event);
        }
        for seq in ended.storing {
            self.release(seq);
            self.orphans.insert(seq);
        }
        for action in ended.abandon {
            if let Action::Abandon { seq, .. } = action {
                self.release(seq);
                self.orphans.insert(seq);
            }
            actions.push((id, action));
        }
        self.reassign();
        actions.extend(self.flush(now));
        actions
    }

    /// A new stream from the floor, passing over everything offered since.
    pub(super) fn new_stream(&mut self) -> StreamId {
        let floor = self.acked_floor();
        let id = self.next_stream;
        self.next_stream += 1;
        let cursor = DeliveryCursor {
            acked_floor: floor,
            resolved_above: self.resolved_ahead.iter().copied().collect(),
            sent_above: self.sent_ahead.iter().copied().collect(),
        };
        let mut sender = Sender::new(self.config, cursor, self.seed.wrapping_add(id));
        sender.set_told_floor(floor);
        for seq in floor..self.offered {
            sender.on_offer_elsewhere(seq);
        }
        self.streams.insert(
            id,
            Stream {
                sender,
                processor_id: None,
                last_life: None,
                detached_at: None,
                silent: false,
            },
        );
        id
    }

    /// Partitions over the streams by their processors' ids (streams in
    /// their grace keep theirs); all to the first stream before any
    /// processor came.
    fn reassign(&mut self) {
        let members: Vec<(StreamId, &str)> = self
            .streams
            .iter()
            .filter_map(|(id, s)| s.processor_id.as_deref().map(|p| (*id, p)))
            .collect();
        if members.is_empty() {
            let first = *self.streams.keys().next().expect("one stream at least");
            self.owners.fill(first);
            return;
        }
        let ids: Vec<&str> = members.iter().map(|(_, p)| *p).collect();
        for (partition, member) in assign(self.partitions, &ids).into_iter().enumerate() {
            self.owners[partition] = members[member].0;
        }
    }
}
