//! Poison events: events that crash the processor, found by bisection.
//!
//! A disconnection is not a delivery attempt: a processor that loses its
//! stream, or is paused, must never get an event parked. But an event whose
//! processing kills the processor would otherwise be resent after every
//! restart, forever, and hold back everything behind it. So core watches
//! for processor *lives* that end (the next `Hello` comes from a new life)
//! with events in flight, and isolates the culprit in rounds:
//!
//! * **A life ends, no suspects yet.** Every event in flight becomes a
//!   **suspect**, and all of them are sent again at once, with the full
//!   window, new events flowing behind them as usual. The ordinary reason a
//!   life ends is a kill (an operator, a deploy, the OOM killer), not a
//!   poison event: if the suspects then get their results, isolation ends
//!   after one round trip, and a crash costs no more than the resend.
//! * **A life ends again while suspects remain.** Now it looks like a
//!   culprit, and it is among what was in flight at that end: those events
//!   join the suspects, and the round narrows. Suspects are released in
//!   **batches** of half as many as were in flight at that end (at least
//!   one), lowest seqs first: the processor admits events only in seq order
//!   over the contiguous received prefix, so a batch above a held suspect
//!   could not even start. When a batch is resolved without a crash, the
//!   next batch of the same size goes; a crash during a batch halves the
//!   size again. Halves, not one at a time: each end that is the culprit's
//!   doing at least halves the events it can hide among, so it is alone
//!   after about `log2(n)` ends, where one at a time took a round trip per
//!   suspect (838 suspects took about a minute), and a batch that is
//!   innocent clears many suspects in one round trip.
//! * **While narrowing, nothing goes out above the batch**: no new event
//!   (the sender's `can_send`), and no held entry that is not a suspect (one
//!   that waited for a retry-later, an at-most-once event whose one copy is
//!   still to go) unless it lies below the batch's last seq. Past a held
//!   suspect the processor could not admit it anyway; beside the last batch
//!   it would be blamed with it: an end during a batch then blames that
//!   batch only, which is what makes each round halve. When no suspect
//!   remains, isolation ends and the window opens again.
//! * **What counts a crash.** Only an event that is *alone* in flight when
//!   a life ends has crashed the processor by itself: one crash is counted
//!   for it. At `--max-crashes` it is parked as dead with reason `crashed
//!   the processor`. With more than one in flight nobody is counted, so an
//!   innocent event is never blamed for another's crash, and a poison event
//!   among `n` suspects is parked after about `log2(n) + max_crashes` life
//!   ends. An external kill that happens to fall while an event is alone in
//!   flight does count, as it always did.
//! * A suspect that is acked (or parked) is cleared.
//!
//! A stream that drops and comes back from the *same* life (a network cut;
//! a core restart is different: it forgets all this) is not a crash and
//! changes nothing: the batch out there is sent again, the round goes on.
//! Crash counts live in core's memory: a core restart starts them again
//! from zero.
//!
//! The sender asks this module two things: which held entries to release
//! ([`Suspects::release`]: everything below the seq it returns) and whether
//! new events may go ([`Suspects::narrowing`]); [`Suspects::hold_from`]
//! tells it where an at-most-once event whose mark just became durable
//! must wait instead of going out.

use std::collections::{BTreeSet, HashMap};

use super::Seq;

/// The suspects, the round and the crash counts. No I/O; owned by the
/// `Sender`.
#[derive(Debug, Default)]
pub struct Suspects {
    /// Crashes after which an event is parked; 0: never.
    max_crashes: u32,
    /// Unresolved events that were in flight when a life ended.
    set: BTreeSet<Seq>,
    /// Crashes counted per event (alone in flight when a life ended).
    crashes: HashMap<Seq, u32>,
    /// What was in flight when the last stream ended, until the next
    /// `Hello` says whether its life ended too.
    ended: Option<Vec<Seq>>,
    /// Suspects released together once the round narrowed (a life ended
    /// while suspects remained); `None`: all at once (the first round, or
    /// no isolation). Back to `None` when the last suspect is resolved.
    batch: Option<usize>,
    /// Suspects below it were released in this round (the batch out there
    /// and the resolved ones before it); the others are held. Kept over a
    /// stream from the same life; 0 at each new round.
    released_below: Seq,
}

/// An event to park: it crashed the processor `crashes` times by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poison {
    pub seq: Seq,
    pub crashes: u32,
}

impl Suspects {
    pub fn new(max_crashes: u32) -> Self {
        Self {
            max_crashes,
            ..Self::default()
        }
    }

    /// Unresolved suspects.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Crashes counted for `seq`.
    pub fn crashes(&self, seq: Seq) -> u32 {
        self.crashes.get(&seq).copied().unwrap_or(0)
    }

    /// Suspects released together, once the round narrowed; `None`: all at
    /// once.
    pub fn batch(&self) -> Option<usize> {
        self.batch
    }

    /// True while the round is narrowed to batches: no new event may be
    /// sent until every suspect is resolved.
    pub fn narrowing(&self) -> bool {
        self.batch.is_some()
    }

    /// While narrowing, the seq above the batch released last: nothing at
    /// or above it may be sent on this stream yet. `None`: no such limit.
    pub fn hold_from(&self) -> Option<Seq> {
        self.batch.map(|_| self.released_below)
    }

    /// Releases the next batch if its turn came (nothing released in this
    /// round is unresolved), and returns [`hold_from`](Self::hold_from):
    /// the sender sends its held entries below it, in seq order, and keeps
    /// the rest held. `None`: send them all.
    pub fn release(&mut self) -> Option<Seq> {
        let batch = self.batch?;
        if self.set.range(..self.released_below).next().is_none()
            && let Some(last) = self.set.range(self.released_below..).take(batch).last()
        {
            self.released_below = last + 1;
        }
        self.hold_from()
    }

    /// The stream ended with these events sent on it and unacknowledged.
    pub fn on_stream_end(&mut self, in_flight: Vec<Seq>) {
        self.ended = Some(in_flight);
    }

    /// A processor said hello; `new_life` when it is not the life whose
    /// stream ended last. Starts or narrows the round, and returns the
    /// events to park.
    pub fn on_hello(&mut self, new_life: bool) -> Vec<Poison> {
        let Some(in_flight) = self.ended.take() else {
            return Vec::new();
        };
        if !new_life || in_flight.is_empty() {
            return Vec::new();
        }
        let mut poison = Vec::new();
        if let [seq] = in_flight[..] {
            let crashes = self.crashes.entry(seq).or_default();
            *crashes += 1;
            if self.max_crashes > 0 && *crashes >= self.max_crashes {
                poison.push(Poison {
                    seq,
                    crashes: *crashes,
                });
            }
        }
        if !self.set.is_empty() {
            // Again, with suspects left: the culprit was among these.
            self.batch = Some((in_flight.len() / 2).max(1));
        }
        self.released_below = 0;
        self.set.extend(in_flight);
        poison
    }

    /// `seq` comes from another stream with `crashes` counted there
    /// (`Sender::take_over`): they go on counting here.
    pub fn adopt(&mut self, seq: Seq, crashes: u32) {
        if crashes > 0 {
            self.crashes.insert(seq, crashes);
        }
    }

    /// `seq` is acknowledged or parked: it is no longer a suspect. The last
    /// one ends isolation.
    pub fn resolved(&mut self, seq: Seq) {
        self.set.remove(&seq);
        self.crashes.remove(&seq);
        if self.set.is_empty() {
            self.batch = None;
            self.released_below = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Suspects released on the stream: everything below `hold_from`.
    fn released(s: &mut Suspects) -> Vec<Seq> {
        let hold_from = s.release();
        s.set
            .iter()
            .copied()
            .filter(|seq| hold_from.is_none_or(|h| *seq < h))
            .collect()
    }

    #[test]
    fn only_an_event_alone_in_flight_counts_crashes() {
        let mut s = Suspects::new(2);
        s.on_stream_end(vec![4, 5, 6]);
        assert!(
            s.on_hello(true).is_empty(),
            "three in flight: nobody is blamed"
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s.crashes(4), 0);
        s.on_stream_end(vec![4]);
        assert!(s.on_hello(true).is_empty());
        assert_eq!(s.crashes(4), 1);
        s.on_stream_end(vec![4]);
        assert!(s.on_hello(false).is_empty(), "the same life: not a crash");
        assert_eq!(s.crashes(4), 1);
        s.on_stream_end(vec![4]);
        assert_eq!(s.on_hello(true), vec![Poison { seq: 4, crashes: 2 }]);
        s.resolved(4);
        s.resolved(5);
        s.resolved(6);
        assert!(s.is_empty());
        assert!(!s.narrowing(), "isolation ends with the last suspect");
    }

    #[test]
    fn a_kill_with_1024_in_flight_releases_all_of_them_at_once() {
        let mut s = Suspects::new(3);
        s.on_stream_end((1..=1024).collect());
        assert!(s.on_hello(true).is_empty());
        assert_eq!(s.len(), 1024);
        assert_eq!(s.release(), None, "the first round sends every suspect");
        assert!(!s.narrowing(), "new events go as usual");
        for seq in 1..=1024 {
            s.resolved(seq);
        }
        assert!(s.is_empty());
        assert_eq!(s.batch(), None);
    }

    #[test]
    fn a_second_end_narrows_to_halves_lowest_first_and_innocent_batches_clear() {
        let mut s = Suspects::new(3);
        s.on_stream_end((1..=8).collect());
        s.on_hello(true);
        // The next life ends with the 8 and 2 new ones in flight.
        s.on_stream_end((1..=10).collect());
        s.on_hello(true);
        assert_eq!(s.batch(), Some(5));
        assert!(s.narrowing(), "nothing new while narrowing");
        assert_eq!(released(&mut s), vec![1, 2, 3, 4, 5]);
        s.resolved(1);
        assert_eq!(released(&mut s), vec![2, 3, 4, 5], "batch not resolved yet");
        for seq in 2..=5 {
            s.resolved(seq);
        }
        assert_eq!(released(&mut s), (6..=10).collect::<Vec<_>>());
        assert_eq!(s.hold_from(), Some(11), "the last batch is out");
        assert!(s.narrowing(), "still nothing new beside the last batch");
        // A life ends during it: batches of half the 5 in flight.
        s.on_stream_end((6..=10).collect());
        s.on_hello(true);
        assert_eq!(s.batch(), Some(2));
        assert_eq!(released(&mut s), vec![6, 7]);
        assert_eq!(s.hold_from(), Some(8));
    }

    #[test]
    fn the_same_life_reconnecting_counts_nothing_and_keeps_the_round() {
        let mut s = Suspects::new(3);
        s.on_stream_end((1..=8).collect());
        s.on_hello(true);
        s.on_stream_end((1..=8).collect());
        s.on_hello(true);
        assert_eq!(released(&mut s), vec![1, 2, 3, 4]);
        s.resolved(1);
        // A network cut: the batch out there goes again, nothing more.
        s.on_stream_end(vec![2, 3, 4]);
        assert!(s.on_hello(false).is_empty());
        assert_eq!(s.batch(), Some(4));
        assert_eq!(released(&mut s), vec![2, 3, 4]);
        assert!((1..=8).all(|seq| s.crashes(seq) == 0));
        // Alone in flight, then the same life: still nothing counted.
        s.on_stream_end(vec![2]);
        assert!(s.on_hello(false).is_empty());
        assert_eq!(s.crashes(2), 0);
    }

    /// A processor that dies whenever `poison` is in flight, against
    /// `n` suspects; returns the life ends after the one that made them
    /// suspects, until the poison is parked.
    fn bisect(n: u64, poison: Seq, max_crashes: u32) -> u32 {
        let mut s = Suspects::new(max_crashes);
        s.on_stream_end((1..=n).collect());
        assert!(s.on_hello(true).is_empty());
        let mut ends = 0;
        loop {
            let out = released(&mut s);
            assert!(!out.is_empty(), "suspects left, none released");
            if out.contains(&poison) {
                ends += 1;
                assert!(ends <= 64, "no end in sight");
                s.on_stream_end(out);
                let parked = s.on_hello(true);
                for p in &parked {
                    assert_eq!(p.seq, poison, "an innocent event parked");
                }
                if !parked.is_empty() {
                    break;
                }
            } else {
                for seq in out {
                    assert_eq!(s.crashes(seq), 0, "innocent seq {seq} counted a crash");
                    s.resolved(seq);
                }
            }
        }
        ends
    }

    #[test]
    fn a_poison_among_1024_is_parked_after_log2_plus_max_crashes_ends() {
        for poison in [1, 2, 333, 512, 513, 700, 1023, 1024] {
            let ends = bisect(1024, poison, 3);
            assert!(ends <= 10 + 3, "poison {poison}: {ends} life ends");
        }
        for (n, poison) in [(1000u64, 999), (3, 2), (5, 5), (2, 1)] {
            let bound = u64::BITS - (n - 1).leading_zeros() + 3; // ceil(log2 n) + 3
            let ends = bisect(n, poison, 3);
            assert!(ends <= bound, "{n} suspects, poison {poison}: {ends} ends");
        }
    }
}
