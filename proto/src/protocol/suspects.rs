//! Poison events: events that crash the processor.
//!
//! A disconnection is not a delivery attempt: a processor that loses its
//! stream, or is paused, must never get an event parked. But an event whose
//! processing kills the processor would otherwise be resent after every
//! restart, forever, and hold back everything behind it. So core watches
//! for processor *lives* that end (the next `Hello` comes from a new life)
//! with events in flight:
//!
//! * Every event in flight at such an end becomes a **suspect**. Crashes
//!   are not counted yet: with many events in flight, any one of them may
//!   be the culprit, and an innocent event must not be parked for another's
//!   crash.
//! * While suspects remain, core sends one event at a time, in seq order
//!   (the processor admits events only in seq order, so the isolation must
//!   follow it): the window is 1.
//! * An event that is alone in flight when a life ends has crashed the
//!   processor by itself: one **crash** is counted for it. At
//!   `--max-crashes` it is parked as dead with reason `crashed the
//!   processor`.
//! * A suspect that is acked (or parked) is cleared; when none remain, the
//!   window opens again.
//!
//! A stream that drops and comes back from the *same* life (a network cut,
//! a core restart is different: it forgets all this) is not a crash and
//! changes nothing. Crash counts live in core's memory: a core restart
//! starts them again from zero.

use std::collections::{BTreeSet, HashMap};

use super::Seq;

/// The suspects and their crash counts. No I/O; owned by the `Sender`.
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

    /// True while events are sent one at a time.
    pub fn isolating(&self) -> bool {
        !self.set.is_empty()
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

    /// The stream ended with these events sent on it and unacknowledged.
    pub fn on_stream_end(&mut self, in_flight: Vec<Seq>) {
        self.ended = Some(in_flight);
    }

    /// A processor said hello; `new_life` when it is not the life whose
    /// stream ended last. Returns the events to park.
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
        self.set.extend(in_flight);
        poison
    }

    /// `seq` is acknowledged or parked: it is no longer a suspect.
    pub fn resolved(&mut self, seq: Seq) {
        self.set.remove(&seq);
        self.crashes.remove(&seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!s.isolating());
    }
}
