//! Lanes: what may start now, under the ordering policy and the concurrency
//! cap. No I/O.
//!
//! A *lane* is a sequence of events processed one at a time, in seq order.
//! The ordering policy decides which lane an event joins:
//!
//! * [`Ordering::Key`]: one lane per key; events without a key share one
//!   lane, so a publisher that never sets a key sees strict global order.
//! * [`Ordering::Global`]: one lane for everything.
//!
//! The receiver admits events here only in seq order and only once each
//! (every lower seq was received before), so each lane's queue is in seq
//! order and a lane never starts an event while an earlier event of its lane
//! is missing or unfinished. Lanes whose head may start wait in `ready`,
//! lowest head seq first: the event holding core's floor is always the
//! first to get a free slot.
//!
//! A lane is handed out as a *run*: every event queued in it at that moment,
//! to be processed one after the other by one task. A run counts as one of
//! the `concurrency` calls that may be in progress; it keeps a lane with a
//! backlog (global order, or one hot key) from paying a scheduling round
//! trip per event.
//!
//! An event whose algorithm asks to retry later *defers* its lane: the
//! lane keeps the event's place and starts nothing until core sends the
//! event again (a copy with a higher attempt), or core's floor passes it
//! (core parked it). An event of an at-most-once kind (`Event.at_most_once`)
//! never gets another copy — core abandons it when it asks to retry — so it
//! defers nothing: its lane goes on at once. (Waiting for the floor instead
//! held the key for as long as any lower event was unresolved: under a hot
//! key with retrying handlers, minutes.)
//!
//! A kind may have a *pool* of its own ([`Lanes::cap_kind`]: a webhook's
//! `--webhook-concurrency`): at most `cap` runs of it in progress, and a run
//! holds events of one pool only (the kinds without a pool share one). A
//! lane whose head waits for its pool waits without a slot, so a slow
//! endpoint holds back its own kind, never the `concurrency` slots of the
//! others.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::v1 as pb;

use super::Seq;

/// What the processor must keep in order (core's `--ordering`, sent in the
/// welcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// Per key; events without a key are ordered among themselves.
    Key,
    /// Everything, one event at a time.
    Global,
    /// Nothing: every event is its own lane. Only for the checker's negative
    /// control (`--unsafe-ignore-order`): it must then report events of one
    /// key processed concurrently or out of order.
    Unordered,
}

impl Ordering {
    /// The mode core asked for; cores that predate modes mean global.
    pub fn from_welcome(ordering: i32) -> Self {
        match pb::Ordering::try_from(ordering) {
            Ok(pb::Ordering::Key) => Self::Key,
            _ => Self::Global,
        }
    }

    fn lane_of(self, event: &pb::Event) -> LaneId {
        match self {
            Self::Key => LaneId::Key(event.key.clone()),
            Self::Global => LaneId::Key(String::new()),
            Self::Unordered => LaneId::Seq(event.seq),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LaneId {
    Key(String),
    Seq(Seq),
}

#[derive(Debug, Default)]
struct Lane {
    /// Admitted events not handed out yet, in seq order.
    queue: VecDeque<pb::Event>,
    /// Events of the run in progress that have not finished; 0: idle.
    running: usize,
    /// The event whose algorithm asked to retry later, and the attempt that
    /// asked: nothing starts until a later copy of it comes.
    deferred: Option<(Seq, u32)>,
    /// The pool of the run in progress (`None`: no pool of its own).
    pool: Option<String>,
}

/// A kind's own cap on runs in progress.
#[derive(Debug, Default)]
struct Pool {
    cap: usize,
    running: usize,
    /// Idle lanes whose head is of this kind, waiting for a run of it to
    /// end, by head seq.
    waiting: BTreeMap<Seq, LaneId>,
}

/// Per-lane queues, the lanes ready to start, and the calls in progress.
#[derive(Debug)]
pub struct Lanes {
    ordering: Ordering,
    /// The mode core asked for; applied once nothing is unfinished, since
    /// switching with events queued could start an event before an earlier
    /// one of its key.
    wanted: Ordering,
    concurrency: usize,
    by_id: HashMap<LaneId, Lane>,
    /// Idle lanes with a queued event, by the seq of that event.
    ready: BTreeMap<Seq, LaneId>,
    /// Lane of each event handed out and not finished.
    started: HashMap<Seq, LaneId>,
    /// Every admitted seq not finished (queued, started or deferred),
    /// lowest first.
    unfinished: BTreeSet<Seq>,
    /// The lane of each deferred event.
    deferred: BTreeMap<Seq, LaneId>,
    /// Admitted at-most-once events not finished: their one copy is all
    /// this processor will get.
    once: BTreeSet<Seq>,
    /// Runs in progress.
    running: usize,
    /// Kinds with a cap of their own on runs in progress.
    pools: HashMap<String, Pool>,
    /// Events handed out in runs before a new stream
    /// ([`forget_unstarted`](Self::forget_unstarted)): given back, they are
    /// dropped, not queued again.
    stale: HashSet<Seq>,
    /// Core's floor as last told: an event given back below it was
    /// resolved without this processor meanwhile, and is dropped.
    floor: Seq,
}

impl Lanes {
    pub fn new(ordering: Ordering, concurrency: usize) -> Self {
        Self {
            ordering,
            wanted: ordering,
            concurrency: concurrency.max(1),
            by_id: HashMap::new(),
            ready: BTreeMap::new(),
            started: HashMap::new(),
            unfinished: BTreeSet::new(),
            deferred: BTreeMap::new(),
            once: BTreeSet::new(),
            running: 0,
            pools: HashMap::new(),
            stale: HashSet::new(),
            floor: 0,
        }
    }

    /// At most `cap` runs of `kind` in progress at once (within
    /// `concurrency`); its events wait for one to end without holding a
    /// slot.
    pub fn cap_kind(&mut self, kind: &str, cap: usize) {
        self.pools.insert(
            kind.to_string(),
            Pool {
                cap: cap.max(1),
                ..Pool::default()
            },
        );
    }

    /// Runs of `kind` in progress, if it has a pool.
    pub fn running_of(&self, kind: &str) -> Option<usize> {
        self.pools.get(kind).map(|p| p.running)
    }

    pub fn ordering(&self) -> Ordering {
        self.ordering
    }

    /// Core's mode for this session. It takes effect once every admitted
    /// event has finished.
    pub fn set_ordering(&mut self, ordering: Ordering) {
        if self.ordering != Ordering::Unordered {
            self.wanted = ordering;
            self.apply_wanted();
        }
    }

    fn apply_wanted(&mut self) {
        if self.unfinished.is_empty() {
            self.ordering = self.wanted;
        }
    }

    /// Most runs in progress at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Runs in progress (each is one algorithm call at a time).
    pub fn running(&self) -> usize {
        self.running
    }

    /// Lanes with an event queued or running.
    pub fn active(&self) -> usize {
        self.by_id.len()
    }

    /// Admitted events not finished (queued or running).
    pub fn unfinished(&self) -> usize {
        self.unfinished.len()
    }

    /// The lowest admitted seq that has not finished.
    pub fn lowest_unfinished(&self) -> Option<Seq> {
        self.unfinished.first().copied()
    }

    /// Whether `seq` was admitted and has not finished (queued, running, or
    /// waiting for a copy after asking to retry later).
    pub fn holds(&self, seq: Seq) -> bool {
        self.unfinished.contains(&seq)
    }

    /// Adds the next event in seq order to its lane.
    pub fn admit(&mut self, event: pb::Event) {
        self.apply_wanted();
        let id = self.ordering.lane_of(&event);
        self.unfinished.insert(event.seq);
        if event.at_most_once {
            self.once.insert(event.seq);
        }
        let lane = self.by_id.entry(id.clone()).or_default();
        if lane.running == 0 && lane.queue.is_empty() && lane.deferred.is_none() {
            self.ready.insert(event.seq, id);
        }
        lane.queue.push_back(event);
    }

    /// Hands out runs while a slot is free, lowest head seq first (a lane
    /// whose head's pool is full waits for it instead).
    pub fn start(&mut self, runs: &mut Vec<Vec<pb::Event>>) {
        while self.running < self.concurrency {
            let Some((head, id)) = self.ready.pop_first() else {
                return;
            };
            let lane = self.by_id.get_mut(&id).expect("a ready lane exists");
            let kind = &lane.queue.front().expect("a ready lane has a head").kind;
            let pools = &mut self.pools;
            let len = match pools.get_mut(kind) {
                Some(pool) if pool.running >= pool.cap => {
                    pool.waiting.insert(head, id);
                    continue;
                }
                Some(pool) => {
                    pool.running += 1;
                    lane.pool = Some(kind.clone());
                    lane.queue.iter().take_while(|e| e.kind == *kind).count()
                }
                None => {
                    lane.pool = None;
                    lane.queue
                        .iter()
                        .take_while(|e| !pools.contains_key(&e.kind))
                        .count()
                }
            };
            let run: Vec<pb::Event> = lane.queue.drain(..len).collect();
            lane.running = run.len();
            for event in &run {
                self.started.insert(event.seq, id.clone());
            }
            self.running += 1;
            runs.push(run);
        }
    }

    /// `seq` finished. Returns false when it was not started (a duplicate
    /// report).
    pub fn finish(&mut self, seq: Seq) -> bool {
        let Some(id) = self.started.remove(&seq) else {
            return false;
        };
        self.stale.remove(&seq);
        self.unfinished.remove(&seq);
        self.once.remove(&seq);
        let lane = self.by_id.get_mut(&id).expect("a started lane exists");
        lane.running -= 1;
        if lane.running == 0 {
            self.running -= 1;
            let pool = lane.pool.take();
            self.end_pool_run(pool);
            let lane = self.by_id.get_mut(&id).expect("a started lane exists");
            match lane.queue.front() {
                Some(next) => {
                    self.ready.insert(next.seq, id);
                }
                None => {
                    self.by_id.remove(&id);
                }
            }
        }
        true
    }

    /// A run ended before `unprocessed`, the rest of it in order, none of
    /// them started (the processor was told to hold its starts, or a claim
    /// went unanswered): they go back to the head of their lane, which
    /// waits its turn again, except those core's floor passed meanwhile.
    /// Returns false when they were not running (a stale report).
    pub fn give_back(&mut self, unprocessed: Vec<pb::Event>) -> bool {
        let Some(id) = unprocessed
            .first()
            .and_then(|e| self.started.get(&e.seq).cloned())
        else {
            return false;
        };
        self.end_run_before(&id, unprocessed);
        let lane = self.by_id.get_mut(&id).expect("a started lane exists");
        while let Some(event) = lane.queue.front()
            && (self.stale.remove(&event.seq) || event.seq < self.floor)
        {
            self.unfinished.remove(&event.seq);
            self.once.remove(&event.seq);
            lane.queue.pop_front();
        }
        match lane.queue.front() {
            Some(head) => {
                self.ready.insert(head.seq, id);
            }
            None if lane.deferred.is_none() => {
                self.by_id.remove(&id);
            }
            None => {}
        }
        true
    }

    /// This processor's session is on a new stream (`Welcome.new_stream`):
    /// what it holds unstarted from before is no longer its own. Queued and
    /// deferred events are dropped; those handed out in runs are dropped
    /// when the runs give them back (a run stops at a new stream); the one
    /// each run has in progress finishes.
    pub fn forget_unstarted(&mut self) {
        self.forget_below(Seq::MAX);
        self.stale = self.started.keys().copied().collect();
    }

    /// Lane `id`'s run ended before `unprocessed` (everything before them
    /// finished): the run and its pool slot are over, and they go back to
    /// the head of the lane, in order.
    fn end_run_before(&mut self, id: &LaneId, unprocessed: Vec<pb::Event>) {
        for event in &unprocessed {
            self.started.remove(&event.seq);
        }
        let lane = self.by_id.get_mut(id).expect("a started lane exists");
        lane.running = 0;
        self.running -= 1;
        let pool = lane.pool.take();
        self.end_pool_run(pool);
        let lane = self.by_id.get_mut(id).expect("a started lane exists");
        for event in unprocessed.into_iter().rev() {
            lane.queue.push_front(event);
        }
    }

    /// The algorithm asked to retry `seq` (copy `attempt`) later, which ended
    /// its run: `unprocessed` are the run's events after it. The lane keeps
    /// them and starts nothing until [`resume`](Self::resume) — unless `seq`
    /// is at most once (core abandons it and sends no copy) or core's floor
    /// passed it while it ran (parked): it is done here and its lane goes
    /// on now. Returns false when `seq` was not
    /// started (a duplicate report).
    pub fn defer(&mut self, seq: Seq, attempt: u32, unprocessed: Vec<pb::Event>) -> bool {
        let Some(id) = self.started.remove(&seq) else {
            return false;
        };
        // The run ended here: everything before it in the run finished.
        self.end_run_before(&id, unprocessed);
        let lane = self.by_id.get_mut(&id).expect("a started lane exists");
        // At most once, or resolved by core while it ran (parked after
        // timeouts, the floor told since): no copy will come.
        if self.once.remove(&seq) || seq < self.floor {
            self.unfinished.remove(&seq);
            match lane.queue.front() {
                Some(next) => {
                    self.ready.insert(next.seq, id);
                }
                None => {
                    self.by_id.remove(&id);
                }
            }
            return true;
        }
        lane.deferred = Some((seq, attempt));
        self.deferred.insert(seq, id);
        true
    }

    /// A run of `pool` ended: the lowest lane waiting for it is ready.
    fn end_pool_run(&mut self, pool: Option<String>) {
        let Some(pool) = pool.and_then(|kind| self.pools.get_mut(&kind)) else {
            return;
        };
        pool.running -= 1;
        if let Some((head, id)) = pool.waiting.pop_first() {
            self.ready.insert(head, id);
        }
    }

    /// The events waiting for a new copy, lowest first.
    pub fn deferred(&self) -> impl Iterator<Item = Seq> + '_ {
        self.deferred.keys().copied()
    }

    /// Whether `seq` waits for a new copy (see [`defer`](Self::defer)).
    pub fn is_deferred(&self, seq: Seq) -> bool {
        self.deferred.contains_key(&seq)
    }

    /// A new stream began: any copy of a deferred event that comes now is
    /// core's answer on that stream (copies sent on the old one cannot
    /// arrive any more), whatever its attempt. A restarted core numbers
    /// attempts from 1 again, and its copy was dropped as older than the
    /// attempt that asked, until a timeout sent another.
    pub fn new_stream(&mut self) {
        for id in self.deferred.values() {
            if let Some(lane) = self.by_id.get_mut(id)
                && let Some((_, asked)) = &mut lane.deferred
            {
                *asked = 0;
            }
        }
    }

    /// A copy of a deferred event arrived: a later attempt than the one
    /// that asked puts it back at the head of its lane, ready to start.
    /// Returns false for an older copy (a duplicate).
    pub fn resume(&mut self, event: pb::Event) -> bool {
        let Some(id) = self.deferred.get(&event.seq) else {
            return false;
        };
        let lane = self.by_id.get_mut(id).expect("a deferred lane exists");
        match lane.deferred {
            Some((_, asked)) if event.attempt > asked => {}
            _ => return false,
        }
        let id = self.deferred.remove(&event.seq).expect("deferred");
        lane.deferred = None;
        self.ready.insert(event.seq, id);
        lane.queue.push_front(event);
        true
    }

    /// Core's floor passed deferred events: it parked them (no copy will
    /// come). Their lanes go on.
    fn release_deferred_below(&mut self, floor: Seq) {
        while let Some(entry) = self.deferred.first_entry() {
            if *entry.key() >= floor {
                break;
            }
            let (seq, id) = entry.remove_entry();
            self.unfinished.remove(&seq);
            let lane = self.by_id.get_mut(&id).expect("a deferred lane exists");
            lane.deferred = None;
            match lane.queue.front() {
                Some(next) => {
                    self.ready.insert(next.seq, id);
                }
                None => {
                    self.by_id.remove(&id);
                }
            }
        }
    }

    /// Core's acked floor: every seq below it is resolved. Deferred events
    /// below it were parked or abandoned; queued ones were resolved without
    /// this processor life (parked or abandoned while they waited here, or
    /// done by an earlier life): core takes no result for them, so they are
    /// dropped. Runs in progress finish.
    pub fn on_floor(&mut self, floor: Seq) {
        self.floor = self.floor.max(floor);
        self.forget_below(floor);
    }

    /// Drops queued events below `floor`: core resolved them without this
    /// processor life, and will not take a result for them.
    pub fn forget_below(&mut self, floor: Seq) {
        self.release_deferred_below(floor);
        if self.unfinished.first().is_none_or(|s| *s >= floor) {
            return;
        }
        let below: Vec<Seq> = self.unfinished.range(..floor).copied().collect();
        for seq in below {
            if !self.started.contains_key(&seq) {
                self.unfinished.remove(&seq);
                self.once.remove(&seq);
            }
        }
        self.ready.clear();
        for pool in self.pools.values_mut() {
            pool.waiting.clear();
        }
        self.by_id.retain(|_, lane| {
            lane.queue.retain(|e| e.seq >= floor);
            lane.running > 0 || !lane.queue.is_empty() || lane.deferred.is_some()
        });
        for (id, lane) in &self.by_id {
            if lane.running == 0
                && lane.deferred.is_none()
                && let Some(head) = lane.queue.front()
            {
                self.ready.insert(head.seq, id.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: Seq, key: &str) -> pb::Event {
        pb::Event {
            seq,
            key: key.into(),
            ..Default::default()
        }
    }

    fn seqs(runs: &[Vec<pb::Event>]) -> Vec<Vec<Seq>> {
        runs.iter()
            .map(|r| r.iter().map(|e| e.seq).collect())
            .collect()
    }

    #[test]
    fn one_run_per_key_at_a_time_lowest_first() {
        let mut l = Lanes::new(Ordering::Key, 2);
        for (seq, key) in [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "")] {
            l.admit(ev(seq, key));
        }
        let mut runs = Vec::new();
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![1, 3], vec![2]], "cap of 2 runs");
        assert_eq!((l.running(), l.active()), (2, 4));
        l.admit(ev(6, "a"));
        runs.clear();
        assert!(l.finish(2));
        assert!(!l.finish(2), "reported twice");
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![4]], "key a is still running");
        runs.clear();
        assert!(l.finish(1));
        l.start(&mut runs);
        assert!(runs.is_empty(), "seq 3 of key a runs in the same run");
        assert!(l.finish(3));
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![5]], "unkeyed seq 5 is lower than 6");
        assert_eq!(l.lowest_unfinished(), Some(4));
    }

    #[test]
    fn global_is_one_lane() {
        let mut l = Lanes::new(Ordering::Global, 64);
        for (seq, key) in [(1, "a"), (2, "b")] {
            l.admit(ev(seq, key));
        }
        let mut runs = Vec::new();
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![1, 2]]);
        l.admit(ev(3, "c"));
        l.start(&mut runs);
        assert_eq!(runs.len(), 1, "seq 3 waits for the run in progress");
        l.set_ordering(Ordering::Key);
        assert_eq!(
            l.ordering(),
            Ordering::Global,
            "not while events are unfinished"
        );
        runs.clear();
        assert!(l.finish(1) && l.finish(2));
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![3]]);
        runs.clear();
        assert!(l.finish(3));
        l.admit(ev(4, "d"));
        l.admit(ev(5, "e"));
        l.start(&mut runs);
        assert_eq!(l.ordering(), Ordering::Key);
        assert_eq!(seqs(&runs), vec![vec![4], vec![5]]);
    }

    #[test]
    fn a_deferred_event_holds_its_lane_until_a_later_copy_or_the_floor() {
        let mut l = Lanes::new(Ordering::Key, 4);
        for (seq, key) in [(1, "a"), (2, "a"), (3, "b"), (4, "a")] {
            l.admit(ev(seq, key));
        }
        let mut runs = Vec::new();
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![1, 2, 4], vec![3]]);
        // Seq 1 asks to retry: seqs 2 and 4 of its run are handed back.
        assert!(l.defer(1, 1, vec![ev(2, "a"), ev(4, "a")]));
        assert!(!l.defer(1, 1, Vec::new()), "reported twice");
        assert_eq!((l.running(), l.lowest_unfinished()), (1, Some(1)));
        l.admit(ev(5, "a"));
        runs.clear();
        l.start(&mut runs);
        assert!(runs.is_empty(), "key a waits for seq 1");
        assert!(l.finish(3));
        l.start(&mut runs);
        assert!(runs.is_empty(), "still, with a free slot");
        // An old copy changes nothing; a later one starts key a again.
        let copy = |attempt| pb::Event {
            attempt,
            ..ev(1, "a")
        };
        assert!(!l.resume(copy(1)));
        assert!(l.resume(copy(2)));
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![1, 2, 4, 5]]);
        // Deferred again, then parked by core: the floor passes it.
        assert!(l.defer(1, 2, vec![ev(2, "a"), ev(4, "a"), ev(5, "a")]));
        runs.clear();
        l.on_floor(2);
        assert!(!l.is_deferred(1));
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![2, 4, 5]]);
        assert_eq!(l.lowest_unfinished(), Some(2));
    }

    #[test]
    fn forget_below_drops_queued_not_started() {
        let mut l = Lanes::new(Ordering::Key, 1);
        for (seq, key) in [(1, "a"), (2, "b"), (3, "b"), (4, "c")] {
            l.admit(ev(seq, key));
        }
        let mut runs = Vec::new();
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![1]]);
        l.forget_below(4);
        assert_eq!(l.unfinished(), 2, "running seq 1 and queued seq 4");
        runs.clear();
        l.finish(1);
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![4]]);
    }

    fn of(seq: Seq, key: &str, kind: &str) -> pb::Event {
        pb::Event {
            kind: kind.into(),
            ..ev(seq, key)
        }
    }

    #[test]
    fn a_kind_with_a_pool_waits_for_it_without_a_slot_and_runs_hold_one_pool() {
        let mut l = Lanes::new(Ordering::Key, 3);
        l.cap_kind("hook", 1);
        // Two keys of hook events, then other kinds; key a mixes them.
        for (seq, key, kind) in [
            (1, "a", "hook"),
            (2, "b", "hook"),
            (3, "a", "sha256"),
            (4, "c", "sha256"),
            (5, "d", "sha256"),
        ] {
            l.admit(of(seq, key, kind));
        }
        let mut runs = Vec::new();
        l.start(&mut runs);
        assert_eq!(
            seqs(&runs),
            vec![vec![1], vec![4], vec![5]],
            "key b waits for the hook pool, not for a slot; key a's run stops at its pool's end"
        );
        assert_eq!(l.running_of("hook"), Some(1));
        runs.clear();
        assert!(l.finish(4));
        l.start(&mut runs);
        assert!(runs.is_empty(), "key a waits for seq 1, key b for the pool");
        assert!(l.finish(1));
        l.start(&mut runs);
        assert_eq!(
            seqs(&runs),
            vec![vec![2], vec![3]],
            "the pool's next lane, and key a goes on"
        );
        runs.clear();
        // Deferred, the pool's run ends all the same.
        l.admit(of(6, "e", "hook"));
        assert!(l.defer(2, 1, Vec::new()));
        l.start(&mut runs);
        assert_eq!(seqs(&runs), vec![vec![6]]);
        assert_eq!(l.running_of("hook"), Some(1));
        assert_eq!(l.running_of("sha256"), None);
    }
}
