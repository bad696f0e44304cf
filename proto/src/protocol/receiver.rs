//! The receiver half of the delivery protocol, without I/O.
//!
//! Core may deliver an event several times (a retransmit after a lost ack, a
//! resend after a reconnection) and out of order (a retransmit overtaking
//! later events). The receiver turns that into what algorithms need: every
//! seq at most once per processor life, and, within each lane (see
//! [`super::lanes`]: one per key, or one for everything), strictly
//! increasing seq order, one event at a time.
//!
//! * `next_expected` is the next seq to admit to the lanes. It starts at the
//!   acked floor core sends in `Welcome` and only grows: an event is admitted
//!   only when every lower seq was received, so a lane never starts an event
//!   while an earlier event of its key is lost in transit.
//! * Events above it wait in the reorder buffer. Core never sends a seq at
//!   or beyond `acked_floor + 2 × window` (the floor it sends along), so the
//!   buffer, the lanes and the result cache each hold at most two windows
//!   (the lanes also the runs in progress whose event core parked after
//!   timeouts meanwhile: at most `concurrency` of them).
//! * An event below it, or already buffered, is a duplicate: dropped,
//!   counted, and — if its result is cached — acked again, because the first
//!   ack may have been lost. The cache keeps results from core's acked floor
//!   up.
//! * `processed_below` (sent with every ack batch) is the lowest admitted seq
//!   not finished: every seq below it has a cached ack or is below core's
//!   floor, so core resends an in-flight event below it at once (its ack was
//!   lost) instead of waiting for a timeout.
//! * Core says, with each event, which seqs below it are not this
//!   stream's (`Event.after`: resolved, or another processor's): they are
//!   passed over at once, as `Welcome.resolved_above` is. Should one of
//!   them come after all (its key moved here from another processor), it
//!   is taken even below `next_expected`: an event below it that this life
//!   never received (not buffered, queued, running, cached or settled) and
//!   not below core's floor is such an event, never a duplicate. Core
//!   moves a key here only once nothing of it is left anywhere else, so
//!   the key's lane is empty and order holds.
//! * Retry later: an event whose algorithm asks to retry later gets no
//!   cached ack (it has no result) and defers its lane (see
//!   [`super::lanes`]): the copy core sends later (a higher attempt) is
//!   processed again, older copies are duplicates. Such events are
//!   reported apart (`awaiting`): everything else below `received_below`
//!   is held here, and core sends it no copy on a timeout. An at-most-once
//!   event defers nothing: core abandons it, and its lane goes on.
//! * Claims: an at-most-once event sent to be claimed (`Event.claim`) is
//!   admitted and run like any other; its run waits for core's permit
//!   before starting it (the processor's I/O does that), and skips it when
//!   core refuses (`on_skipped`: resolved without this processor, so
//!   nothing is cached or acked).
//! * Paused: events are still received and admitted (so the stream keeps
//!   flowing and control messages arrive) but nothing new starts; on resume
//!   the lanes start again, lowest seq first.

use std::collections::{BTreeMap, BTreeSet};

use crate::v1 as pb;

use super::Seq;
use super::lanes::{Lanes, Ordering};

/// What the I/O loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Process these events of one lane, one after the other, in this order
    /// (a run; see [`super::lanes`]).
    Start(Vec<pb::Event>),
    /// Send this ack to core.
    Ack(pb::Ack),
}

/// Counters shown on the monitor and in metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events dropped because they were processed or buffered already.
    pub duplicate_drops: u64,
    /// Duplicates answered with their cached ack.
    pub acks_resent: u64,
    /// Events handed out to be processed.
    pub processed: u64,
    /// Events whose algorithm asked to retry later.
    pub retries: u64,
    /// Events dropped because they were two windows or more beyond
    /// `next_expected` (core never sends those; counted to make a protocol
    /// bug visible).
    pub beyond_window: u64,
    /// Cached acks dropped to keep the cache within its capacity. Core's
    /// second window bound makes this impossible; counted to make a protocol
    /// bug visible (an evicted ack cannot be sent again).
    pub acks_evicted: u64,
    /// Events taken below `next_expected`: passed over as not this
    /// stream's (`Event.after`), then sent here after all (handed over).
    pub handed_over: u64,
}

/// The receiver state machine. See the module docs.
#[derive(Debug)]
pub struct Receiver {
    /// Largest window this processor accepts (sent in `Hello`).
    max_window: usize,
    /// Window in force for the current session.
    window: usize,
    /// Next seq to admit to the lanes; 0 until the first `Welcome`.
    next_expected: Seq,
    /// Events above `next_expected`, waiting for the gap to fill.
    buffer: BTreeMap<Seq, pb::Event>,
    /// Acks of processed events not yet below core's floor.
    cache: BTreeMap<Seq, pb::Ack>,
    /// Admitted events, by lane, and the runs in progress.
    lanes: Lanes,
    /// Seqs at or above `next_expected` that core resolved and will never
    /// send (`Welcome.resolved_above`), or said are not this stream's
    /// (`Event.after`): passed over as if received.
    passed: BTreeSet<Seq>,
    /// Core's acked floor, the highest told: nothing below it is sent again.
    floor: Seq,
    /// Seqs core resolved without an ack cached here: said resolved
    /// (`resolved_above`), a claim core refused, an at-most-once event that
    /// asked to retry later. Known, so a stray copy is a duplicate.
    settled: BTreeSet<Seq>,
    paused: bool,
    /// Starts held back while this life may not be the one core delivers
    /// to (the processor's client decides: not welcomed on the current
    /// stream, core silent, or this process stalled): another processor
    /// may be running the same events. Unlike `paused`, never core's say.
    held: bool,
    /// When false, duplicates are processed again. Only for the checker's
    /// negative control: it must then report duplicate processing.
    dedup: bool,
    counters: Counters,
}

impl Receiver {
    /// A receiver for one processor life: at most `max_window` (the window
    /// it offers in `Hello`), at most `concurrency` runs at once. The
    /// ordering comes with each `Welcome`.
    pub fn new(max_window: usize, concurrency: usize, dedup: bool) -> Self {
        let max_window = max_window.max(1);
        Self {
            max_window,
            window: max_window,
            next_expected: 0,
            buffer: BTreeMap::new(),
            cache: BTreeMap::new(),
            lanes: Lanes::new(Ordering::Global, concurrency),
            passed: BTreeSet::new(),
            floor: 0,
            settled: BTreeSet::new(),
            paused: false,
            held: false,
            dedup,
            counters: Counters::default(),
        }
    }

    /// Ignores the ordering core asks for: every event runs on its own.
    /// Only for the checker's negative control (`--unsafe-ignore-order`).
    pub fn ignoring_order(mut self) -> Self {
        self.lanes = Lanes::new(Ordering::Unordered, self.lanes.concurrency());
        self
    }

    pub fn next_expected(&self) -> Seq {
        self.next_expected
    }

    /// Every seq below it was processed in this life (or is below core's
    /// floor); 0 before the first `Welcome`.
    pub fn processed_below(&self) -> Seq {
        self.lanes.lowest_unfinished().unwrap_or(self.next_expected)
    }

    /// Every seq below it was received in this life and will be processed
    /// without core sending it again, except [`awaiting`](Self::awaiting):
    /// `next_expected`.
    pub fn received_below(&self) -> Seq {
        self.next_expected
    }

    /// The events below `received_below` waiting for a new copy after
    /// asking to retry later, lowest first (at most one per lane): core
    /// must send that copy even if the request was lost.
    pub fn awaiting(&self) -> Vec<Seq> {
        self.lanes.deferred().collect()
    }

    pub fn ordering(&self) -> Ordering {
        self.lanes.ordering()
    }

    /// Runs in progress, and the most that may run at once.
    pub fn running(&self) -> usize {
        self.lanes.running()
    }

    pub fn concurrency(&self) -> usize {
        self.lanes.concurrency()
    }

    /// Lanes with an event queued or running.
    pub fn lanes_active(&self) -> usize {
        self.lanes.active()
    }

    /// Admitted events not finished.
    pub fn unfinished(&self) -> usize {
        self.lanes.unfinished()
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Most entries the result cache may hold: two windows above core's
    /// floor, plus the acks of events core parked while they ran here (they
    /// finish below the floor; at most one per run, so `concurrency`). The
    /// lowest go first, so those are evicted before any ack core may still
    /// ask for.
    pub fn cache_capacity(&self) -> usize {
        2 * self.max_window + self.lanes.concurrency()
    }

    /// A new stream started: core's floor, window, pause state and ordering.
    pub fn on_welcome(
        &mut self,
        acked_floor: Seq,
        window: u32,
        paused: bool,
        ordering: Ordering,
    ) -> Vec<Action> {
        self.paused = paused;
        self.lanes.set_ordering(ordering);
        self.lanes.new_stream();
        self.window = (window as usize).clamp(1, self.max_window);
        if self.next_expected == 0 {
            self.next_expected = acked_floor.max(1);
        }
        self.on_floor(acked_floor)
    }

    /// This session is on a new stream (`Welcome.new_stream`, before
    /// [`on_welcome`](Self::on_welcome)): the events this life holds from
    /// before and has not started are no longer its own (core gave them to
    /// other processors, or sends them again on this stream). They are
    /// dropped, with the reorder buffer and what was passed over. Runs in
    /// progress finish their current event and give the rest back, dropped
    /// then. Processed events' acks stay cached, and `next_expected` stays:
    /// a copy of a seq below it is taken only if this life does not know it
    /// (the hand-over rule), so nothing processed here runs twice.
    pub fn on_new_stream(&mut self) {
        self.lanes.forget_unstarted();
        self.buffer.clear();
        self.passed.clear();
    }

    /// Seqs above the floor that core resolved and will never send again
    /// (`Welcome.resolved_above`): the contiguous prefix passes over them,
    /// so a new life goes on past them instead of waiting for the floor.
    /// Only those within two windows of `next_expected` are kept (core sends
    /// nothing beyond).
    pub fn pass_over(&mut self, seqs: &[Seq]) -> Vec<Action> {
        if self.next_expected == 0 {
            return Vec::new();
        }
        let limit = self.next_expected + 2 * self.window as u64;
        for &seq in seqs {
            if (self.floor..limit).contains(&seq) {
                self.settled.insert(seq);
            }
            self.pass(seq);
        }
        self.drain()
    }

    /// Passes over `seq` if it is within two windows of `next_expected`
    /// (core sends nothing beyond).
    fn pass(&mut self, seq: Seq) {
        let limit = self.next_expected + 2 * self.window as u64;
        if (self.next_expected..limit).contains(&seq) {
            self.passed.insert(seq);
            self.buffer.remove(&seq);
        }
    }

    /// `Event.after`: the seqs between `after` and `seq` are not this
    /// stream's.
    fn pass_between(&mut self, after: Option<Seq>, seq: Seq) {
        let Some(after) = after else {
            return;
        };
        let limit = self.next_expected + 2 * self.window as u64;
        for between in (after + 1).max(self.next_expected)..seq.min(limit) {
            self.pass(between);
        }
    }

    /// Whether this life has `seq` (received, or ended here) or core's
    /// floor passed it: a copy of it is a duplicate.
    fn knows(&self, seq: Seq) -> bool {
        seq < self.floor
            || self.buffer.contains_key(&seq)
            || self.cache.contains_key(&seq)
            || self.settled.contains(&seq)
            || self.lanes.holds(seq)
    }

    /// Core's acked floor. Results below it are stored: forget them. If the
    /// floor passed `next_expected`, those events were resolved without this
    /// processor life (by an earlier life, or parked as dead) and core will
    /// never send them again: skip ahead.
    pub fn on_floor(&mut self, acked_floor: Seq) -> Vec<Action> {
        self.floor = self.floor.max(acked_floor);
        self.cache = self.cache.split_off(&acked_floor);
        self.settled = self.settled.split_off(&acked_floor);
        self.lanes.on_floor(acked_floor);
        if self.next_expected != 0 && acked_floor > self.next_expected {
            self.next_expected = acked_floor;
            self.buffer = self.buffer.split_off(&acked_floor);
            self.passed = self.passed.split_off(&acked_floor);
            self.lanes.forget_below(acked_floor);
        }
        self.drain()
    }

    /// An event arrived (possibly a duplicate, possibly out of order).
    pub fn on_event(&mut self, event: pb::Event) -> Vec<Action> {
        if self.next_expected == 0 {
            return Vec::new();
        }
        let seq = event.seq;
        self.pass_between(event.after, seq);
        if seq < self.next_expected
            && self.lanes.is_deferred(seq)
            && self.lanes.resume(event.clone())
        {
            let mut actions = Vec::new();
            self.start(&mut actions);
            return actions;
        }
        // Passed over as another stream's, and handed over since (checked
        // only off the common path: a new seq at or above `next_expected`).
        let below = seq < self.next_expected;
        if self.dedup && (below || self.passed.contains(&seq)) && !self.knows(seq) {
            self.counters.handed_over += 1;
            if below {
                self.lanes.admit(event);
                let mut actions = Vec::new();
                self.start(&mut actions);
                return actions;
            }
            self.passed.remove(&seq);
        }
        if seq < self.next_expected || self.buffer.contains_key(&seq) || self.passed.contains(&seq)
        {
            if !self.dedup && seq < self.next_expected {
                self.counters.processed += 1;
                return vec![Action::Start(vec![event])];
            }
            self.counters.duplicate_drops += 1;
            if let Some(ack) = self.cache.get(&seq) {
                self.counters.acks_resent += 1;
                let mut ack = ack.clone();
                ack.attempt = event.attempt;
                return vec![Action::Ack(ack)];
            }
            return Vec::new();
        }
        if seq >= self.next_expected + 2 * self.window as u64 {
            self.counters.beyond_window += 1;
            return Vec::new();
        }
        self.buffer.insert(seq, event);
        self.drain()
    }

    /// `ack.seq` was processed: cache the ack and send it; its lane may
    /// start its next event.
    pub fn on_processed(&mut self, ack: pb::Ack) -> Vec<Action> {
        let lane_freed = self.lanes.finish(ack.seq);
        self.cache.insert(ack.seq, ack.clone());
        while self.cache.len() > self.cache_capacity() {
            self.cache.pop_first();
            self.counters.acks_evicted += 1;
        }
        let mut actions = vec![Action::Ack(ack)];
        if lane_freed {
            self.start(&mut actions);
        }
        actions
    }

    /// At most `cap` calls of `kind` in progress, within `concurrency`
    /// (see [`Lanes::cap_kind`]).
    pub fn cap_kind(&mut self, kind: &str, cap: usize) {
        self.lanes.cap_kind(kind, cap);
    }

    /// Runs of `kind` in progress, if it has a pool (see
    /// [`Lanes::cap_kind`]).
    pub fn running_of(&self, kind: &str) -> Option<usize> {
        self.lanes.running_of(kind)
    }

    /// Core refused the claim of `seq` (`Permits.refused`): it was resolved
    /// without this processor (abandoned, parked), and its run went on
    /// without it. Nothing is cached or acked; its lane may go on.
    pub fn on_skipped(&mut self, seq: Seq) -> Vec<Action> {
        self.settled.insert(seq);
        let mut actions = Vec::new();
        if self.lanes.finish(seq) {
            self.start(&mut actions);
        }
        actions
    }

    /// The algorithm asked to retry `ack.seq` later (`ack.retry`), which
    /// ended its run before `unprocessed`. Nothing is cached: the next copy
    /// is processed again. Its lane waits for that copy; the others go on.
    pub fn on_retry_later(&mut self, ack: pb::Ack, unprocessed: Vec<pb::Event>) -> Vec<Action> {
        if !self.lanes.defer(ack.seq, ack.attempt, unprocessed) {
            return Vec::new();
        }
        if !self.lanes.is_deferred(ack.seq) {
            // At most once: core abandons it, and sends no copy.
            self.settled.insert(ack.seq);
        }
        self.counters.retries += 1;
        let mut actions = vec![Action::Ack(ack)];
        self.start(&mut actions);
        actions
    }

    /// A run stopped before `unprocessed` (the rest of it, none started)
    /// because starts were held: they wait in their lane again.
    pub fn on_returned(&mut self, unprocessed: Vec<pb::Event>) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.lanes.give_back(unprocessed) {
            self.start(&mut actions);
        }
        actions
    }

    /// Pause or resume handing out events.
    pub fn set_paused(&mut self, paused: bool) -> Vec<Action> {
        self.paused = paused;
        self.drain()
    }

    /// Hold back or release starts (see `held`); events are still received,
    /// admitted and acked as while paused.
    pub fn set_held(&mut self, held: bool) -> Vec<Action> {
        self.held = held;
        self.drain()
    }

    /// Admits the contiguous start of the buffer (passing over what core
    /// resolved without this life), then starts what may.
    fn drain(&mut self) -> Vec<Action> {
        loop {
            if let Some(entry) = self.buffer.first_entry()
                && *entry.key() == self.next_expected
            {
                self.lanes.admit(entry.remove());
            } else if !self.passed.remove(&self.next_expected) {
                break;
            }
            self.next_expected += 1;
        }
        let mut actions = Vec::new();
        self.start(&mut actions);
        actions
    }

    fn start(&mut self, actions: &mut Vec<Action>) {
        if self.paused || self.held {
            return;
        }
        let mut runs = Vec::new();
        self.lanes.start(&mut runs);
        for run in runs {
            self.counters.processed += run.len() as u64;
            actions.push(Action::Start(run));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: Seq, attempt: u32) -> pb::Event {
        keyed(seq, attempt, "")
    }

    fn keyed(seq: Seq, attempt: u32, key: &str) -> pb::Event {
        pb::Event {
            seq,
            attempt,
            kind: "sha256".into(),
            key: key.into(),
            ..Default::default()
        }
    }

    fn ack(seq: Seq) -> pb::Ack {
        pb::Ack {
            seq,
            attempt: 1,
            ..Default::default()
        }
    }

    /// The runs started, as seq lists.
    /// The ack of copy `attempt` of `seq` asking to retry later.
    fn retry_ack(seq: Seq, attempt: u32) -> pb::Ack {
        pb::Ack {
            seq,
            attempt,
            retry: true,
            ..Default::default()
        }
    }

    fn started(actions: &[Action]) -> Vec<Vec<Seq>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start(run) => Some(run.iter().map(|e| e.seq).collect()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reorders_and_drops_duplicates() {
        let mut r = Receiver::new(8, 4, true);
        assert!(r.on_event(ev(1, 1)).is_empty(), "no welcome yet");
        r.on_welcome(1, 8, false, Ordering::Global);
        assert!(started(&r.on_event(ev(2, 1))).is_empty());
        assert_eq!(started(&r.on_event(ev(1, 1))), vec![vec![1, 2]]);
        assert!(r.on_event(ev(2, 2)).is_empty());
        assert_eq!(r.counters().duplicate_drops, 1);
        assert_eq!(r.processed_below(), 1);
        r.on_processed(ack(1));
        assert_eq!(r.processed_below(), 2);
        match r.on_event(ev(1, 3)).as_slice() {
            [Action::Ack(ack)] => assert_eq!((ack.seq, ack.attempt), (1, 3)),
            other => panic!("expected a re-ack, got {other:?}"),
        }
        assert_eq!(r.counters().acks_resent, 1);
        r.on_processed(ack(2));
        r.on_floor(3);
        assert_eq!(r.cached(), 0);
        // A floor beyond next_expected (resolved by an earlier life) skips.
        r.on_event(ev(5, 1));
        assert_eq!(started(&r.on_floor(5)), vec![vec![5]]);
        assert_eq!(r.next_expected(), 6);
    }

    #[test]
    fn keys_run_side_by_side_but_never_past_a_gap() {
        let mut r = Receiver::new(16, 8, true);
        r.on_welcome(1, 16, false, Ordering::Key);
        assert_eq!(started(&r.on_event(keyed(1, 1, "a"))), vec![vec![1]]);
        // Seq 2 is lost in transit: seq 3 (key b) must wait, since seq 2
        // could be of key b.
        assert!(started(&r.on_event(keyed(3, 1, "b"))).is_empty());
        assert_eq!(
            started(&r.on_event(keyed(2, 1, "a"))),
            vec![vec![3]],
            "seq 2 waits for seq 1 of key a; seq 3 runs"
        );
        assert_eq!(r.lanes_active(), 2);
        let actions = r.on_processed(ack(1));
        assert_eq!(started(&actions), vec![vec![2]]);
        assert_eq!(r.processed_below(), 2);
        r.on_processed(ack(3));
        assert_eq!(r.processed_below(), 2, "seq 2 still running");
        r.on_processed(ack(2));
        assert_eq!(r.processed_below(), 4);
        assert_eq!(r.lanes_active(), 0);
    }

    #[test]
    fn retry_later_holds_its_key_and_runs_a_later_copy_again() {
        let mut r = Receiver::new(16, 8, true);
        r.on_welcome(1, 16, false, Ordering::Key);
        assert_eq!(started(&r.on_event(keyed(1, 1, "a"))), vec![vec![1]]);
        assert_eq!(
            started(&r.on_event(keyed(2, 1, "a"))),
            Vec::<Vec<Seq>>::new()
        );
        let retry = retry_ack(1, 1);
        // Seq 1 ran alone (seq 2 came after its run started).
        let actions = r.on_retry_later(retry, Vec::new());
        assert!(
            matches!(actions.as_slice(), [Action::Ack(a)] if a.retry),
            "{actions:?}"
        );
        assert_eq!(r.cached(), 0, "no result to cache");
        assert_eq!(r.processed_below(), 1, "seq 1 is not processed");
        assert_eq!(
            (r.received_below(), r.awaiting()),
            (3, vec![1]),
            "seq 2 is held; core must send seq 1 again"
        );
        assert_eq!(
            started(&r.on_event(keyed(3, 1, "b"))),
            vec![vec![3]],
            "key b goes on"
        );
        // A duplicate of the copy that asked is dropped, unanswered.
        assert!(r.on_event(keyed(1, 1, "a")).is_empty());
        assert_eq!(r.counters().duplicate_drops, 1);
        // Core's next copy runs, with seq 2 after it.
        assert_eq!(started(&r.on_event(keyed(1, 2, "a"))), vec![vec![1, 2]]);
        assert_eq!((r.received_below(), r.awaiting()), (4, vec![]));
        r.on_processed(pb::Ack {
            attempt: 2,
            ..ack(1)
        });
        r.on_processed(ack(2));
        r.on_processed(ack(3));
        assert_eq!((r.processed_below(), r.counters().retries), (4, 1));
    }

    #[test]
    fn an_at_most_once_event_that_asks_to_retry_frees_its_key_at_once() {
        let mut r = Receiver::new(16, 8, true);
        r.on_welcome(1, 16, false, Ordering::Key);
        let once = pb::Event {
            at_most_once: true,
            ..keyed(1, 1, "a")
        };
        assert_eq!(started(&r.on_event(once)), vec![vec![1]]);
        assert!(r.on_event(keyed(2, 1, "a")).is_empty(), "behind seq 1");
        let retry = retry_ack(1, 1);
        // Core abandons it and sends no copy: seq 2 starts now, not when
        // core's floor passes seq 1.
        let actions = r.on_retry_later(retry, Vec::new());
        assert!(
            matches!(&actions[0], Action::Ack(a) if a.retry),
            "{actions:?}"
        );
        assert_eq!(started(&actions), vec![vec![2]]);
        assert_eq!(r.awaiting(), Vec::<Seq>::new(), "no copy is awaited");
        assert_eq!(r.processed_below(), 2, "seq 1 is done here");
        r.on_processed(ack(2));
        assert_eq!((r.processed_below(), r.lanes_active()), (3, 0));
    }

    #[test]
    fn after_a_new_welcome_any_copy_of_a_deferred_event_runs_it() {
        let mut r = Receiver::new(16, 8, true);
        r.on_welcome(1, 16, false, Ordering::Key);
        assert_eq!(started(&r.on_event(keyed(1, 3, "a"))), vec![vec![1]]);
        r.on_retry_later(retry_ack(1, 3), Vec::new());
        assert!(r.on_event(keyed(1, 2, "a")).is_empty(), "an older copy");
        // Core restarted: its attempts start again at 1.
        r.on_welcome(1, 16, false, Ordering::Key);
        assert_eq!(started(&r.on_event(keyed(1, 1, "a"))), vec![vec![1]]);
        assert_eq!(r.awaiting(), Vec::<Seq>::new());
    }

    #[test]
    fn a_new_life_passes_over_what_core_resolved_above_its_floor() {
        // Seq 5 holds core's floor (a slow event of key a); 6 and 8 were
        // resolved by the life that crashed, so core never sends them.
        let mut r = Receiver::new(16, 8, true);
        r.on_welcome(5, 16, false, Ordering::Key);
        assert!(r.pass_over(&[6, 8]).is_empty(), "nothing received yet");
        assert_eq!(started(&r.on_event(keyed(5, 2, "a"))), vec![vec![5]]);
        assert_eq!(r.received_below(), 7, "seq 6 is passed over");
        // Seq 7 goes on while seq 5 still runs: it does not wait for the
        // floor to pass seq 6.
        assert_eq!(started(&r.on_event(keyed(7, 2, "b"))), vec![vec![7]]);
        assert_eq!(started(&r.on_event(keyed(9, 2, "c"))), vec![vec![9]]);
        assert_eq!(r.received_below(), 10);
        // A stray copy of a passed seq is a duplicate.
        assert!(r.on_event(keyed(8, 1, "d")).is_empty());
        assert_eq!(r.counters().duplicate_drops, 1);
    }

    #[test]
    fn seqs_core_says_are_not_this_streams_are_passed_over_until_handed_over() {
        let mut r = Receiver::new(16, 8, true);
        r.on_welcome(1, 16, false, Ordering::Key);
        // Seqs 2 and 3 are another processor's; seq 1 is still missing.
        assert!(started(&r.on_event(chained(4, 1, "b"))).is_empty());
        assert_eq!(r.received_below(), 1);
        // Seq 1 says nothing: it passes over nothing itself.
        assert_eq!(
            started(&r.on_event(chained(1, 0, "a"))),
            vec![vec![1], vec![4]],
            "seqs 2 and 3 passed over"
        );
        assert_eq!(r.received_below(), 5);
        // Seq 3's key moved here: taken below `received_below`, once.
        assert_eq!(started(&r.on_event(chained(3, 1, "c"))), vec![vec![3]]);
        assert!(r.on_event(chained(3, 1, "c")).is_empty(), "running");
        assert!(r.on_event(chained(4, 1, "b")).is_empty(), "running");
        assert_eq!(r.counters().handed_over, 1);
        assert_eq!(r.counters().duplicate_drops, 2);
        // Seq 6 is passed over while seq 5 is missing, then handed over
        // before seq 5 comes: all three start in seq order.
        assert!(r.on_event(chained(7, 5, "d")).is_empty());
        assert!(r.on_event(chained(6, 5, "d")).is_empty());
        assert_eq!(r.counters().handed_over, 2);
        assert_eq!(
            started(&r.on_event(chained(5, 4, "d"))),
            vec![vec![5, 6, 7]]
        );
        // Finished and cached: a copy is a duplicate, its ack sent again.
        r.on_processed(ack(3));
        assert!(matches!(
            r.on_event(chained(3, 1, "c")).as_slice(),
            [Action::Ack(_)]
        ));
        // Below core's floor: resolved, never taken again.
        r.on_processed(ack(1));
        r.on_floor(3);
        assert!(r.on_event(chained(2, 1, "a")).is_empty());
        assert_eq!(r.counters().handed_over, 2);
    }

    /// Seq `seq` of `key`, saying the seqs between `after` and it are not
    /// this stream's (0: say nothing).
    fn chained(seq: Seq, after: Seq, key: &str) -> pb::Event {
        pb::Event {
            after: (after > 0).then_some(after),
            ..keyed(seq, 1, key)
        }
    }

    #[test]
    fn paused_admits_but_starts_nothing() {
        let mut r = Receiver::new(8, 4, true);
        r.on_welcome(5, 8, false, Ordering::Global);
        r.set_paused(true);
        for seq in [7, 5, 6] {
            assert!(r.on_event(ev(seq, 1)).is_empty());
        }
        assert!(r.on_event(ev(6, 2)).is_empty());
        assert_eq!(r.counters().duplicate_drops, 1);
        assert_eq!(started(&r.set_paused(false)), vec![vec![5, 6, 7]]);
        assert!(r.on_event(ev(23, 1)).is_empty());
        assert_eq!(r.counters().beyond_window, 0, "below next_expected + 2W");
        assert!(r.on_event(ev(24, 1)).is_empty());
        assert_eq!(r.counters().beyond_window, 1);
    }

    #[test]
    fn held_starts_nothing_until_released_whatever_pause_says() {
        let mut r = Receiver::new(8, 4, true);
        r.on_welcome(5, 8, false, Ordering::Global);
        r.set_held(true);
        assert!(r.on_event(ev(5, 1)).is_empty());
        // Core's resume does not release a hold.
        assert!(started(&r.set_paused(false)).is_empty());
        r.set_paused(true);
        assert!(started(&r.set_held(false)).is_empty(), "still paused");
        assert_eq!(started(&r.set_paused(false)), vec![vec![5]]);
    }

    #[test]
    fn a_run_given_back_runs_again_from_where_it_stopped_once_released() {
        let mut r = Receiver::new(8, 4, true);
        r.on_welcome(1, 8, false, Ordering::Key);
        let mut runs = Vec::new();
        for seq in 1..=4 {
            runs.extend(started(&r.on_event(keyed(seq, 1, "k"))));
        }
        assert_eq!(runs, vec![vec![1]], "the lane's first run");
        let more = started(&r.on_processed(ack(1)));
        assert_eq!(more, vec![vec![2, 3, 4]]);
        // Held while 2 was running: 3 and 4 come back unstarted.
        r.set_held(true);
        let (three, four) = (keyed(3, 1, "k"), keyed(4, 1, "k"));
        assert!(started(&r.on_processed(ack(2))).is_empty());
        assert!(started(&r.on_returned(vec![three, four])).is_empty());
        assert_eq!(r.running(), 0);
        assert_eq!(started(&r.set_held(false)), vec![vec![3, 4]]);
        // Events that are not running change nothing.
        assert!(r.on_returned(vec![keyed(7, 1, "j")]).is_empty());
        assert_eq!(r.running(), 1);
    }

    #[test]
    fn welcome_never_moves_backwards() {
        let mut r = Receiver::new(8, 4, true);
        r.on_welcome(1, 8, false, Ordering::Global);
        r.on_event(ev(1, 1));
        r.on_event(ev(2, 1));
        r.on_welcome(1, 8, false, Ordering::Global);
        assert_eq!(r.next_expected(), 3);
        r.on_welcome(10, 8, false, Ordering::Global);
        assert_eq!(r.next_expected(), 10);
    }

    #[test]
    fn events_queued_below_the_floor_are_dropped_not_run() {
        // Key "a": 1 runs, 2 and 3 wait behind it. Core resolves 2 (an
        // abandoned or parked event) while it waits: the floor passes it.
        let mut r = Receiver::new(8, 4, true);
        r.on_welcome(1, 8, false, Ordering::Key);
        assert_eq!(started(&r.on_event(keyed(1, 1, "a"))), vec![vec![1]]);
        r.on_event(keyed(2, 1, "a"));
        r.on_event(keyed(3, 1, "a"));
        assert_eq!(r.unfinished(), 3);
        r.on_floor(3);
        assert_eq!(r.unfinished(), 2, "2 is dropped; 1 keeps running");
        assert_eq!(started(&r.on_processed(ack(1))), vec![vec![3]]);
    }
}
