//! Processors sharing the work, without I/O: a [`Sender`] per stream over
//! the one log, and the routing between them.
//!
//! In `global` ordering there is one stream: one processor is active and
//! any other stands by (core's `membership.rs`); the group then only wraps
//! that stream's `Sender`. In `key` ordering every connected processor has
//! a stream, and the keys are spread over them:
//!
//! * **Partitions.** A key's partition is a stable hash of it
//!   ([`partitions::partition_of`], unkeyed events are one partition), and
//!   the partitions are assigned to the streams' processor ids by
//!   rendezvous hashing ([`partitions::assign`]): a join takes only what
//!   the newcomer wins, a leave moves only the leaver's.
//! * **Routing.** Each event, in seq order, goes to its partition's owner;
//!   every other stream passes over it ([`Sender::on_offer_elsewhere`]),
//!   and each copy says which seqs below it are not its stream's
//!   (`Event.after`).
//! * **Drain, then move.** A partition's events go to its owner only once
//!   no other stream holds one of them unresolved; meanwhile they *wait*
//!   here, as do events whose owner has no room in its window (so a slow
//!   processor holds back its own partitions, and the others only once
//!   the floor it holds is twice the window behind). Waiting events go
//!   out in seq order as soon as they may ([`Sender::take_over`]).
//! * **An ended life.** A stream whose session ended is kept for
//!   `return_grace` (the same processor reconnecting gets it back, with its
//!   partitions); then, if another stream is connected, it is ended for
//!   good ([`Sender::end`]): its unresolved events wait for their
//!   partitions' new owners, with their attempts and crash counts, and its
//!   at-most-once events that may have run are abandoned. A stream cut for
//!   its silence is ended at once, and that is no crash. With no other
//!   stream connected, the next processor to connect takes the stream over
//!   as a new life, as a standby does in `global` ordering.
//! * **A poison event.** An event that crashes every processor it goes to
//!   would be handed from one to the next for ever. The group isolates it
//!   as one stream's `Sender` does across its lives (`suspects.rs`): the
//!   events in flight on a stream whose processor crashed are suspects;
//!   when another crash finds suspects left, only the lowest half of them
//!   go out (the others wait here, and no new event is offered) until
//!   they are resolved, halving again at each crash, so that the culprit
//!   is soon alone in flight when it crashes its processor, and is parked
//!   after `max_crashes` such crashes, whichever processors they were.
//! * **The floor.** Every seq below the lowest of the streams' floors, the
//!   waiting events and the rows of ended streams still being stored is
//!   resolved; that is the floor core persists and tells every processor.
//!   Core offers nothing at or beyond it plus twice the window.
//!
//! `proto/tests/handover.rs` drives this against a `Receiver` per
//! processor life through joins, connection resets, kills and cuts for
//! silence.
//!
//! Here: the routing (offer, wait, flush), the floor, and what every stream
//! shares (acks stored, marks, timers); in `life.rs`, a stream's life in
//! the group (sessions attaching and detaching, the grace, the end, the
//! partitions reassigned).

mod life;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::guarantee::Guarantee;
use super::partitions::partition_of;
use super::sender::{Action, Handover, Link, Offer, Progress, Sender, SenderConfig};
use super::suspects::Suspects;
use super::{DeliveryCursor, Seq};

/// A stream of the group: one processor's at a time, kept over its
/// reconnections.
pub type StreamId = u64;

/// Where [`Group::offer`] put an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// To this stream, with what its `Sender` said.
    To(StreamId, Offer),
    /// It waits for its partition to drain or its owner to have room; it
    /// goes out from [`Group::flush`].
    Waits,
    /// Resolved before a restart: not sent.
    Skip,
    /// Not the next seq to offer: ignore.
    OutOfOrder,
}

/// A processor taking a stream ([`Group::attach`]).
#[derive(Debug, Clone)]
pub struct Joining<'a> {
    pub processor_id: &'a str,
    /// `Hello.life`: 0 when the processor does not say.
    pub life: u64,
    /// The processor's window (`u32::MAX`: no limit of its own).
    pub window: u32,
    pub claims: bool,
    pub paused: bool,
}

/// What [`Group::attach`] did.
#[derive(Debug)]
pub struct Attached {
    pub stream: StreamId,
    /// Not the life that had the stream last: its events in flight are
    /// crash suspects.
    pub new_life: bool,
    /// The processor's own stream, as its previous session left it (a reset
    /// connection, back within the grace): it keeps what it holds. Otherwise
    /// the stream is new to it (`Welcome.new_stream`).
    pub resumed: bool,
    /// The stream's resends, and whatever waited for it.
    pub actions: Vec<(StreamId, Action)>,
}

/// One stream: its `Sender` and whose it is.
#[derive(Debug)]
pub struct Stream {
    pub sender: Sender,
    /// The processor that has (or had) it; `None` before any.
    pub processor_id: Option<String>,
    /// The life and id of the processor that had it last.
    last_life: Option<(u64, String)>,
    /// Its session ended at this time (`None`: connected, or never).
    detached_at: Option<Instant>,
    /// The session was cut for its silence: the processor is frozen, not
    /// known to be dead.
    silent: bool,
}

/// An event waiting here: its partition, and what it had elsewhere.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    partition: u32,
    event: Handover,
}

/// The streams and the routing between them. See the module docs.
#[derive(Debug)]
pub struct Group {
    config: SenderConfig,
    keyed: bool,
    partitions: u32,
    return_grace: Duration,
    streams: BTreeMap<StreamId, Stream>,
    next_stream: StreamId,
    /// The owner of each partition.
    owners: Vec<StreamId>,
    /// Per partition, the streams holding unresolved events of it, with
    /// their counts.
    holders: Vec<Vec<(StreamId, u32)>>,
    /// Unresolved events held by streams: their stream and partition.
    held: HashMap<Seq, (StreamId, u32)>,
    waiting: BTreeMap<Seq, Waiting>,
    /// Waiting events per partition.
    waiting_in: HashMap<u32, u32>,
    /// Rows of ended streams' events being stored.
    orphans: BTreeSet<Seq>,
    /// Events parked after timing out on a stream whose processor may
    /// still be running them (a handler that hangs): resolved, but their
    /// partition stays held there until that processor reports them
    /// finished or the stream ends. Their stream and partition.
    lingering: BTreeMap<Seq, (StreamId, u32)>,
    /// Events in flight on streams whose processors crashed, and their
    /// crash counts: the search for a poison event across streams.
    isolation: Suspects,
    /// The next seq to offer.
    offered: Seq,
    /// Seqs resolved before a restart, at or above `offered`.
    resolved_ahead: BTreeSet<Seq>,
    /// Seqs with a sent mark and no result before a restart, at or above
    /// `offered`: abandoned by their owner when offered, never sent.
    sent_ahead: BTreeSet<Seq>,
    seed: u64,
    /// False only for the negative control (`--unsafe-handoff-without-drain`):
    /// a moved partition's events go to its new owner at once.
    drain: bool,
}

impl Group {
    /// A group resuming from the persisted cursor, with one stream and no
    /// processor yet. `keyed`: every processor connected gets a stream
    /// (`key` ordering), `partitions` of them.
    pub fn new(
        config: SenderConfig,
        cursor: DeliveryCursor,
        keyed: bool,
        partitions: u32,
        return_grace: Duration,
        seed: u64,
    ) -> Self {
        let floor = cursor.acked_floor.max(1);
        let partitions = if keyed { partitions.max(1) } else { 1 };
        let mut group = Self {
            config,
            keyed,
            partitions,
            return_grace,
            streams: BTreeMap::new(),
            next_stream: 0,
            owners: vec![0; partitions as usize],
            holders: vec![Vec::new(); partitions as usize],
            held: HashMap::new(),
            waiting: BTreeMap::new(),
            waiting_in: HashMap::new(),
            orphans: BTreeSet::new(),
            lingering: BTreeMap::new(),
            isolation: Suspects::new(config.max_crashes),
            offered: floor,
            resolved_ahead: cursor.resolved_above.into_iter().collect(),
            sent_ahead: cursor.sent_above.into_iter().collect(),
            seed,
            drain: true,
        };
        group.new_stream();
        group
    }

    /// Negative control only: `false` sends a moved partition's events to
    /// its new owner while the old one still holds some (order breaks, and
    /// the chaos checker must notice).
    pub fn set_drain(&mut self, drain: bool) {
        self.drain = drain;
    }

    /// Every seq below it is resolved (see the module docs).
    pub fn acked_floor(&self) -> Seq {
        self.streams
            .values()
            .map(|s| s.sender.acked_floor())
            .chain(self.waiting.keys().copied())
            .chain(self.orphans.first().copied())
            .fold(self.offered, Seq::min)
    }

    /// The next seq to offer.
    pub fn next_to_offer(&self) -> Seq {
        self.offered
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition `key` belongs to.
    fn partition_of(&self, key: &str) -> u32 {
        if self.keyed {
            partition_of(key, self.partitions)
        } else {
            0
        }
    }

    pub fn streams(&self) -> impl Iterator<Item = (StreamId, &Stream)> {
        self.streams.iter().map(|(id, s)| (*id, s))
    }

    pub fn sender(&self, id: StreamId) -> Option<&Sender> {
        self.streams.get(&id).map(|s| &s.sender)
    }

    pub fn sender_mut(&mut self, id: StreamId) -> Option<&mut Sender> {
        self.streams.get_mut(&id).map(|s| &mut s.sender)
    }

    /// Partitions owned per stream.
    pub fn owned(&self) -> BTreeMap<StreamId, u32> {
        let mut owned = BTreeMap::new();
        for owner in &self.owners {
            *owned.entry(*owner).or_default() += 1;
        }
        owned
    }

    /// Events waiting here for their partitions.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Unresolved crash suspects over all streams and across them.
    pub fn suspects(&self) -> usize {
        self.streams
            .values()
            .map(|s| s.sender.suspects())
            .sum::<usize>()
            + self.isolation.len()
    }

    /// Events in flight over all streams.
    pub fn window_used(&self) -> u64 {
        self.streams.values().map(|s| s.sender.window_used()).sum()
    }

    /// Whether the next event may be offered now. With one stream, when its
    /// `Sender` can send it; with several, while the offered seqs stay
    /// within twice the window above the floor and some stream is
    /// connected (an event whose owner has no room waits). Twice the
    /// window for the group, not per stream: each processor is told the
    /// group's floor, and its reorder buffer, what it passes over and its
    /// cache of acks are bounded by twice its window above that floor.
    pub fn can_offer(&self) -> bool {
        if self.alone() {
            return self.streams.values().all(|s| s.sender.can_send());
        }
        !self.isolation.narrowing()
            && self.offered < self.acked_floor() + 2 * u64::from(self.config.window.max(1))
            && self
                .streams
                .values()
                .any(|s| s.sender.link() != Link::Absent)
    }

    /// The next committed event, `seq` (of `key`, its kind's `guarantee`):
    /// to its partition's owner, or to wait.
    pub fn offer(&mut self, seq: Seq, key: &str, guarantee: Guarantee, now: Instant) -> Routed {
        if seq != self.offered {
            return Routed::OutOfOrder;
        }
        self.offered += 1;
        if self.resolved_ahead.remove(&seq) {
            // Every stream's `Sender` knows it resolved (from its cursor).
            for stream in self.streams.values_mut() {
                stream.sender.on_offer(seq, guarantee, now);
            }
            return Routed::Skip;
        }
        let partition = self.partition_of(key);
        let owner = self.owners[partition as usize];
        // One whose copy may have gone out before a restart is abandoned
        // by its owner, whatever holds its partition: it is never sent.
        let abandon = self.sent_ahead.remove(&seq);
        let waits = !abandon && self.must_wait(partition, owner, seq);
        let mut routed = Routed::Waits;
        for (id, stream) in self.streams.iter_mut() {
            if *id == owner && !waits {
                routed = Routed::To(owner, stream.sender.on_offer(seq, guarantee, now));
            } else {
                stream.sender.on_offer_elsewhere(seq);
            }
        }
        match routed {
            Routed::Waits => {
                self.wait(
                    seq,
                    partition,
                    Handover {
                        seq,
                        attempts: 0,
                        at_most_once: guarantee == Guarantee::AtMostOnce,
                        crashes: 0,
                    },
                );
            }
            Routed::To(_, Offer::Send | Offer::Mark | Offer::Abandon) => {
                self.hold(seq, owner, partition);
            }
            Routed::To(..) | Routed::Skip | Routed::OutOfOrder => {}
        }
        routed
    }

    /// Whether an event of `partition` (at `seq`) must wait instead of
    /// going to `owner`: another stream still holds some of the
    /// partition's events, one of them below `seq` waits, or the owner
    /// cannot take one now.
    fn must_wait(&self, partition: u32, owner: StreamId, seq: Seq) -> bool {
        if self.alone() {
            return false;
        }
        let earlier = self.waiting_in.get(&partition).copied().unwrap_or(0) > 0
            && self
                .waiting
                .range(..seq)
                .any(|(_, w)| w.partition == partition);
        earlier || self.held_elsewhere(partition, owner) || !self.has_room(owner, seq)
    }

    /// Whether a stream other than `owner` holds some of `partition`'s
    /// events unresolved (never, without the drain).
    fn held_elsewhere(&self, partition: u32, owner: StreamId) -> bool {
        self.drain
            && self.holders[partition as usize]
                .iter()
                .any(|(s, n)| *s != owner && *n > 0)
    }

    /// One stream, nothing waiting and no rows of ended streams: the
    /// group is that stream's `Sender`, as in `global` ordering.
    fn alone(&self) -> bool {
        self.streams.len() == 1
            && self.waiting.is_empty()
            && self.orphans.is_empty()
            && self.isolation.is_empty()
    }

    /// Whether `stream` may be sent `seq` now: its window has room, and
    /// `seq` lies within twice *its* window above the group's floor, which
    /// every copy carries (a processor's window may be smaller than
    /// core's, and its receiver drops what lies beyond).
    fn has_room(&self, stream: StreamId, seq: Seq) -> bool {
        self.streams
            .get(&stream)
            .is_some_and(|s| s.sender.can_send_seq(seq))
    }

    fn hold(&mut self, seq: Seq, stream: StreamId, partition: u32) {
        self.held.insert(seq, (stream, partition));
        let holders = &mut self.holders[partition as usize];
        match holders.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, n)) => *n += 1,
            None => holders.push((stream, 1)),
        }
    }

    /// `seq` is no longer held by a stream; returns which, and its
    /// partition.
    fn release(&mut self, seq: Seq) -> Option<(StreamId, u32)> {
        let (stream, partition) = self.held.remove(&seq)?;
        self.unhold(stream, partition);
        Some((stream, partition))
    }

    /// `stream` holds one event of `partition` fewer.
    fn unhold(&mut self, stream: StreamId, partition: u32) {
        let holders = &mut self.holders[partition as usize];
        if let Some(i) = holders.iter().position(|(s, _)| *s == stream) {
            holders[i].1 -= 1;
            if holders[i].1 == 0 {
                holders.swap_remove(i);
            }
        }
    }

    /// What stream `id`'s processor reports it has: events parked while
    /// it ran them and now finished there let their partitions go.
    pub fn on_progress(
        &mut self,
        id: StreamId,
        now: Instant,
        progress: Progress,
    ) -> Vec<(StreamId, Action)> {
        let below = progress.processed_below;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Vec::new();
        };
        let mut actions: Vec<(StreamId, Action)> = stream
            .sender
            .on_progress(now, progress)
            .into_iter()
            .map(|a| (id, a))
            .collect();
        let finished: Vec<(Seq, u32)> = self
            .lingering
            .range(..below)
            .filter(|(_, (s, _))| *s == id)
            .map(|(seq, (_, partition))| (*seq, *partition))
            .collect();
        if !finished.is_empty() {
            for (seq, partition) in finished {
                self.lingering.remove(&seq);
                self.unhold(id, partition);
            }
            actions.extend(self.flush(now));
        }
        actions
    }

    /// Stream `id` ends: what it may still have been running is over.
    fn let_go_lingering(&mut self, id: StreamId) {
        let gone: Vec<(Seq, u32)> = self
            .lingering
            .iter()
            .filter(|(_, (s, _))| *s == id)
            .map(|(seq, (_, partition))| (*seq, *partition))
            .collect();
        for (seq, partition) in gone {
            self.lingering.remove(&seq);
            self.unhold(id, partition);
        }
    }

    fn wait(&mut self, seq: Seq, partition: u32, event: Handover) {
        self.waiting.insert(seq, Waiting { partition, event });
        *self.waiting_in.entry(partition).or_default() += 1;
    }

    /// Sends the waiting events that may go now, in seq order, to their
    /// partitions' owners.
    pub fn flush(&mut self, now: Instant) -> Vec<(StreamId, Action)> {
        let mut actions = Vec::new();
        if self.waiting.is_empty() {
            return actions;
        }
        let mut blocked = BTreeSet::new();
        // While a poison event is searched for, only the suspects released
        // so far go (and what lies below them).
        let hold_from = self.isolation.release();
        let seqs: Vec<(Seq, Waiting)> = self.waiting.iter().map(|(s, w)| (*s, *w)).collect();
        for (seq, w) in seqs {
            let owner = self.owners[w.partition as usize];
            if hold_from.is_some_and(|h| seq >= h) {
                break;
            }
            if blocked.contains(&w.partition)
                || self.held_elsewhere(w.partition, owner)
                || !self.has_room(owner, seq)
            {
                blocked.insert(w.partition);
                continue;
            }
            self.waiting.remove(&seq);
            if let Some(n) = self.waiting_in.get_mut(&w.partition) {
                *n -= 1;
            }
            let sender = &mut self.streams.get_mut(&owner).expect("owners exist").sender;
            match sender.take_over(w.event, now) {
                Some(action) => {
                    self.hold(seq, owner, w.partition);
                    actions.push((owner, action));
                }
                None => {
                    // Cannot happen: every stream passed over a waiting
                    // seq. Kept waiting rather than lost.
                    self.wait(seq, w.partition, w.event);
                    blocked.insert(w.partition);
                }
            }
        }
        actions
    }

    /// Results (or dead rows) of `seqs` are durable. Returns true when the
    /// floor moved.
    pub fn on_stored(&mut self, seqs: impl IntoIterator<Item = Seq>) -> bool {
        let before = self.acked_floor();
        let mut by_stream: BTreeMap<StreamId, Vec<Seq>> = BTreeMap::new();
        for seq in seqs {
            self.isolation.resolved(seq);
            if self.orphans.remove(&seq) {
                continue;
            }
            if let Some((stream, _)) = self.lingering.get(&seq) {
                // Resolved, but perhaps still running there: its partition
                // stays held (see `on_progress`).
                self.held.remove(&seq);
                by_stream.entry(*stream).or_default().push(seq);
                continue;
            }
            // (Not held: a stale report of a seq resolved already.)
            if let Some((stream, _)) = self.release(seq) {
                by_stream.entry(stream).or_default().push(seq);
            }
        }
        for (stream, seqs) in by_stream {
            if let Some(s) = self.streams.get_mut(&stream) {
                s.sender.on_stored(seqs);
            }
        }
        let floor = self.acked_floor();
        if floor != before {
            self.tell_floor(floor);
        }
        floor != before
    }

    /// Every stream's processor is told the group's floor: what it sends
    /// stays within twice its window above it.
    fn tell_floor(&mut self, floor: Seq) {
        for s in self.streams.values_mut() {
            s.sender.set_told_floor(floor);
        }
    }

    /// Sent marks of `seqs` are durable: each goes on in the stream that
    /// holds it.
    pub fn on_marked(&mut self, seqs: Vec<Seq>, now: Instant) -> Vec<(StreamId, Action)> {
        let mut by_stream: BTreeMap<StreamId, Vec<Seq>> = BTreeMap::new();
        for seq in seqs {
            if let Some((stream, _)) = self.held.get(&seq) {
                by_stream.entry(*stream).or_default().push(seq);
            }
        }
        let mut actions = Vec::new();
        for (id, seqs) in by_stream {
            if let Some(s) = self.streams.get_mut(&id) {
                actions.extend(s.sender.on_marked(seqs, now).into_iter().map(|a| (id, a)));
            }
        }
        actions
    }

    /// The earliest timer of any stream, or the next end of a grace.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|s| s.sender.next_deadline())
            .chain(self.next_end())
            .min()
    }

    /// Fires due timers on every stream, and ends streams whose grace is
    /// over; the processor ids of those are returned too.
    pub fn on_tick(&mut self, now: Instant) -> (Vec<String>, Vec<(StreamId, Action)>) {
        let mut actions = Vec::new();
        for (id, s) in self.streams.iter_mut() {
            if s.sender.next_deadline().is_some_and(|d| d <= now) {
                actions.extend(s.sender.on_tick(now).into_iter().map(|a| (*id, a)));
            }
        }
        // Parked after timing out while its processor ran: it may still
        // be running there, so its key must not start elsewhere yet.
        for (id, action) in &actions {
            if let Action::Park { seq, .. } = action
                && let Some((holder, partition)) = self.held.get(seq)
                && holder == id
            {
                self.lingering.insert(*seq, (*id, *partition));
            }
        }
        let (ended, more) = self.end_due(now);
        actions.extend(more);
        // Room may have opened (a park).
        actions.extend(self.flush(now));
        (ended, actions)
    }

    /// The operator paused or resumed the processors.
    pub fn set_paused(&mut self, paused: bool) {
        for s in self.streams.values_mut() {
            s.sender.set_paused(paused);
        }
    }
}
