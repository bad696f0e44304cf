//! The receiver half of the delivery protocol, without I/O.
//!
//! Core may deliver an event several times (a retransmit after a lost ack, a
//! resend after a reconnection) and out of order (a retransmit overtaking
//! later events). The receiver turns that into what algorithms need:
//! every seq at most once per processor life, in strictly increasing order.
//!
//! * `next_expected` is the next seq to hand to an algorithm. It starts at
//!   the acked floor core sends in `Welcome` and only grows.
//! * Events above it wait in the reorder buffer. Core never sends a seq at
//!   or beyond `acked_floor + 2 × window` (the floor it sends along), so the
//!   buffer holds at most two windows.
//! * An event below it, or already buffered, is a duplicate: dropped,
//!   counted, and — if its result is cached — acked again, because the first
//!   ack may have been lost. The cache keeps results from core's acked floor
//!   up, so it too is bounded by two windows.
//! * Paused: events are still buffered (so the stream keeps flowing and
//!   control messages arrive) but nothing is handed out; on resume the
//!   buffer drains in order.

use std::collections::BTreeMap;

use ackflow_proto::v1 as pb;

/// Position in the log (see core's `model::Seq`).
pub type Seq = u64;

/// What the I/O loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Hand this event to its algorithm (in this order).
    Process(pb::Event),
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
    /// Events handed to an algorithm.
    pub processed: u64,
    /// Events dropped because they were two windows or more beyond
    /// `next_expected` (core never sends those; counted to make a protocol
    /// bug visible).
    pub beyond_window: u64,
    /// Cached acks dropped to keep the cache within its capacity. Core's
    /// second window bound makes this impossible; counted to make a protocol
    /// bug visible (an evicted ack cannot be sent again).
    pub acks_evicted: u64,
}

/// The receiver state machine. See the module docs.
#[derive(Debug)]
pub struct Receiver {
    /// Largest window this processor accepts (sent in `Hello`).
    max_window: usize,
    /// Window in force for the current session.
    window: usize,
    /// Next seq to hand out; 0 until the first `Welcome`.
    next_expected: Seq,
    /// Events above `next_expected`, waiting for the gap to fill.
    buffer: BTreeMap<Seq, pb::Event>,
    /// Acks of processed events not yet below core's floor.
    cache: BTreeMap<Seq, pb::Ack>,
    paused: bool,
    /// When false, duplicates are processed again. Only for the checker's
    /// negative control: it must then report duplicate processing.
    dedup: bool,
    counters: Counters,
}

impl Receiver {
    pub fn new(max_window: usize, dedup: bool) -> Self {
        let max_window = max_window.max(1);
        Self {
            max_window,
            window: max_window,
            next_expected: 0,
            buffer: BTreeMap::new(),
            cache: BTreeMap::new(),
            paused: false,
            dedup,
            counters: Counters::default(),
        }
    }

    pub fn next_expected(&self) -> Seq {
        self.next_expected
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

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Most entries the result cache may hold.
    pub fn cache_capacity(&self) -> usize {
        2 * self.max_window
    }

    /// A new stream started: core's floor, window and pause state.
    pub fn on_welcome(&mut self, acked_floor: Seq, window: u32, paused: bool) -> Vec<Action> {
        self.paused = paused;
        self.window = (window as usize).clamp(1, self.max_window);
        if self.next_expected == 0 {
            self.next_expected = acked_floor.max(1);
        }
        self.on_floor(acked_floor)
    }

    /// Core's acked floor. Results below it are stored: forget them. If the
    /// floor passed `next_expected`, those events were resolved without this
    /// processor life (by an earlier life, or parked as dead) and core will
    /// never send them again: skip ahead.
    pub fn on_floor(&mut self, acked_floor: Seq) -> Vec<Action> {
        self.cache = self.cache.split_off(&acked_floor);
        if self.next_expected != 0 && acked_floor > self.next_expected {
            self.next_expected = acked_floor;
            self.buffer = self.buffer.split_off(&acked_floor);
        }
        self.drain()
    }

    /// An event arrived (possibly a duplicate, possibly out of order).
    pub fn on_event(&mut self, event: pb::Event) -> Vec<Action> {
        if self.next_expected == 0 {
            return Vec::new();
        }
        let seq = event.seq;
        if seq < self.next_expected || self.buffer.contains_key(&seq) {
            if !self.dedup && seq < self.next_expected {
                self.counters.processed += 1;
                return vec![Action::Process(event)];
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

    /// The algorithm finished `ack.seq`: cache the ack and send it.
    pub fn on_processed(&mut self, ack: pb::Ack) -> Action {
        self.cache.insert(ack.seq, ack.clone());
        while self.cache.len() > self.cache_capacity() {
            self.cache.pop_first();
            self.counters.acks_evicted += 1;
        }
        Action::Ack(ack)
    }

    /// Pause or resume handing out events.
    pub fn set_paused(&mut self, paused: bool) -> Vec<Action> {
        self.paused = paused;
        self.drain()
    }

    fn drain(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.paused {
            return actions;
        }
        while let Some(entry) = self.buffer.first_entry() {
            if *entry.key() != self.next_expected {
                break;
            }
            let event = entry.remove();
            self.next_expected += 1;
            self.counters.processed += 1;
            actions.push(Action::Process(event));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: Seq, attempt: u32) -> pb::Event {
        pb::Event {
            seq,
            attempt,
            kind: "sha256".into(),
            ..Default::default()
        }
    }

    fn processed(actions: &[Action]) -> Vec<Seq> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Process(e) => Some(e.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reorders_and_drops_duplicates() {
        let mut r = Receiver::new(8, true);
        assert!(r.on_event(ev(1, 1)).is_empty(), "no welcome yet");
        r.on_welcome(1, 8, false);
        assert!(processed(&r.on_event(ev(2, 1))).is_empty());
        assert_eq!(processed(&r.on_event(ev(1, 1))), vec![1, 2]);
        assert!(r.on_event(ev(2, 2)).is_empty());
        assert_eq!(r.counters().duplicate_drops, 1);
        r.on_processed(pb::Ack {
            seq: 1,
            attempt: 1,
            ..Default::default()
        });
        match r.on_event(ev(1, 3)).as_slice() {
            [Action::Ack(ack)] => assert_eq!((ack.seq, ack.attempt), (1, 3)),
            other => panic!("expected a re-ack, got {other:?}"),
        }
        assert_eq!(r.counters().acks_resent, 1);
        r.on_floor(2);
        assert_eq!(r.cached(), 0);
        // A floor beyond next_expected (resolved by an earlier life) skips.
        r.on_event(ev(5, 1));
        assert_eq!(processed(&r.on_floor(5)), vec![5]);
        assert_eq!(r.next_expected(), 6);
    }

    #[test]
    fn paused_buffers_then_drains_in_order() {
        let mut r = Receiver::new(8, true);
        r.on_welcome(5, 8, false);
        r.set_paused(true);
        for seq in [7, 5, 6] {
            assert!(r.on_event(ev(seq, 1)).is_empty());
        }
        assert!(r.on_event(ev(6, 2)).is_empty());
        assert_eq!(r.counters().duplicate_drops, 1);
        assert_eq!(processed(&r.set_paused(false)), vec![5, 6, 7]);
        assert!(r.on_event(ev(23, 1)).is_empty());
        assert_eq!(r.counters().beyond_window, 0, "below next_expected + 2W");
        assert!(r.on_event(ev(24, 1)).is_empty());
        assert_eq!(r.counters().beyond_window, 1);
    }

    #[test]
    fn welcome_never_moves_backwards() {
        let mut r = Receiver::new(8, true);
        r.on_welcome(1, 8, false);
        r.on_event(ev(1, 1));
        r.on_event(ev(2, 1));
        r.on_welcome(1, 8, false);
        assert_eq!(r.next_expected(), 3);
        r.on_welcome(10, 8, false);
        assert_eq!(r.next_expected(), 10);
    }
}
