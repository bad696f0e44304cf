//! When this processor may start events: only while it is the one core
//! delivers to.
//!
//! Core hands a processor's events to a hot standby once it has heard
//! nothing from it for `--processor-silence-ms` (`Welcome.processor_silence_ms`).
//! If the processor then went on starting the events it holds (a process
//! thawed after a SIGSTOP, a link that went dead one way), two processors
//! would run the same keys at once. So the stream loop asks [`Hold`] at
//! every turn, before it handles anything:
//!
//! * **not welcomed** on the current stream (connecting, or waiting as a
//!   standby: core says nothing to those): starts are held;
//! * **core silent** for two thirds of that silence (core speaks at least
//!   once a second to the active processor): starts are held until core is
//!   heard again;
//! * **stalled**: the loop itself did not turn for two thirds of it (the
//!   process was frozen, or blocked): whatever is buffered on the stream
//!   may be stale, core may already have handed over, so the processor
//!   holds and leaves the stream, to be welcomed anew or to stand by;
//! * **stream ended**, for whatever reason: core may hand over as soon as
//!   it sees the end (after `--processor-return-grace-ms`, or at once
//!   when a restarted core welcomes whoever comes first), so starts stay
//!   held until a welcome on the next stream.
//!
//! An event already running goes on (it cannot be taken back); the rest of
//! its run goes back to the lane unstarted ([`Held`]), and every event not
//! started yet waits. When the next welcome is on a new stream
//! (`Welcome.new_stream`: the processor's work moved elsewhere meanwhile),
//! what it held is dropped instead, and a run handed out before stops at
//! its next event even if it never saw the hold. Both clocks run while a process is stopped, so
//! a thawed processor sees the stall before it starts anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Core's silence before it hands over, when a core that predates
/// `Welcome.processor_silence_ms` does not say.
const DEFAULT_SILENCE: Duration = Duration::from_millis(3000);

/// Whether starts are held, shared with the executor: a run checks it
/// before each of its events and, when held, hands the rest back to its
/// lane unstarted (a run can hold a lane's whole queue). A run also holds
/// when the stream loop has not turned within the limit: after a thaw the
/// runs may go on before the loop has seen its own stall.
#[derive(Clone, Debug)]
pub struct Held(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// Never held (`--unsafe-no-hold`, a negative control).
    off: bool,
    held: AtomicBool,
    base: Instant,
    /// Microseconds since `base`: the stream loop's last turn.
    last_turn_us: AtomicU64,
    /// Microseconds: two thirds of core's silence.
    limit_us: AtomicU64,
    /// Sessions welcomed on a new stream (`Welcome.new_stream`) so far: a
    /// run handed out before the latest one stops before its next event.
    streams: AtomicU64,
}

impl Default for Held {
    fn default() -> Self {
        let base = Instant::now();
        Self(Arc::new(Shared {
            off: false,
            held: AtomicBool::new(false),
            base,
            last_turn_us: AtomicU64::new(0),
            limit_us: AtomicU64::new((DEFAULT_SILENCE * 2 / 3).as_micros() as u64),
            streams: AtomicU64::new(0),
        }))
    }
}

impl Held {
    /// Never held, whatever it is told (`--unsafe-no-hold`: a negative
    /// control for the chaos checker, never for production).
    pub fn never() -> Self {
        let held = Self::default();
        Self(Arc::new(Shared {
            off: true,
            ..Arc::into_inner(held.0).expect("not shared yet")
        }))
    }

    /// Holds or releases; returns whether starts were held before.
    pub fn set(&self, held: bool) -> bool {
        self.0.held.swap(held && !self.0.off, Ordering::AcqRel)
    }

    /// Whether it is told to hold at all (not `--unsafe-no-hold`).
    pub fn enforced(&self) -> bool {
        !self.0.off
    }

    /// A session was welcomed on a new stream: what runs handed out before
    /// hold is no longer this processor's (see `Receiver::on_new_stream`).
    pub fn new_stream(&self) {
        self.0.streams.fetch_add(1, Ordering::AcqRel);
    }

    /// The new streams so far, for a run to remember when it starts.
    pub fn stream(&self) -> u64 {
        self.0.streams.load(Ordering::Acquire)
    }

    /// Whether a run handed out at `stream` must stop before its next
    /// event at `now`: held, or a new stream began since.
    pub fn stops(&self, stream: u64, now: Instant) -> bool {
        self.is_held(now) || (!self.0.off && self.stream() != stream)
    }

    /// The stream loop turned at `now`, under `hold`'s limit.
    pub fn turned(&self, now: Instant, hold: &Hold) {
        let us = now.saturating_duration_since(self.0.base).as_micros() as u64;
        self.0.last_turn_us.store(us, Ordering::Release);
        self.0
            .limit_us
            .store(hold.limit.as_micros() as u64, Ordering::Release);
    }

    /// Whether a run must stop before its next event at `now`.
    pub fn is_held(&self, now: Instant) -> bool {
        if self.0.off {
            return false;
        }
        if self.0.held.load(Ordering::Acquire) {
            return true;
        }
        let now_us = now.saturating_duration_since(self.0.base).as_micros() as u64;
        let since_turn = now_us.saturating_sub(self.0.last_turn_us.load(Ordering::Acquire));
        since_turn > self.0.limit_us.load(Ordering::Acquire)
    }
}

/// What the stream loop may do at this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Start what may start.
    Free,
    /// Start nothing until core is heard on a welcomed stream.
    Held,
    /// The loop did not turn for this long: leave the stream.
    Stalled(Duration),
}

/// The hold of one stream.
#[derive(Debug)]
pub struct Hold {
    /// When core was last heard, once this stream was welcomed.
    heard: Option<Instant>,
    /// When the loop last turned.
    last_turn: Instant,
    /// Two thirds of core's silence before it hands over.
    limit: Duration,
}

impl Hold {
    /// A stream just opened: held until its welcome.
    pub fn new(now: Instant) -> Self {
        Self {
            heard: None,
            last_turn: now,
            limit: DEFAULT_SILENCE * 2 / 3,
        }
    }

    /// The stream was welcomed; core hands over after `silence_ms` (0: a
    /// core that does not say).
    pub fn on_welcome(&mut self, silence_ms: u64, now: Instant) {
        let silence = match silence_ms {
            0 => DEFAULT_SILENCE,
            ms => Duration::from_millis(ms),
        };
        self.limit = silence * 2 / 3;
        self.heard = Some(now);
    }

    /// A message from core arrived (checked by [`turn`](Self::turn) first).
    pub fn on_heard(&mut self, now: Instant) {
        if self.heard.is_some() {
            self.heard = Some(now);
        }
    }

    /// Whether this stream was welcomed.
    pub fn welcomed(&self) -> bool {
        self.heard.is_some()
    }

    /// How long core has been silent on a welcomed stream.
    pub fn silent_for(&self, now: Instant) -> Option<Duration> {
        self.heard.map(|at| now.saturating_duration_since(at))
    }

    /// Called at every turn of the stream loop, first thing. The gap runs
    /// from the last turn's start, so a freeze in the middle of handling
    /// something counts too (and so does a fault's delay).
    pub fn turn(&mut self, now: Instant) -> Turn {
        let gap = now.saturating_duration_since(self.last_turn);
        self.last_turn = now;
        if gap > self.limit {
            return Turn::Stalled(gap);
        }
        match self.silent_for(now) {
            Some(silent) if silent <= self.limit => Turn::Free,
            _ => Turn::Held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn held_until_welcomed_then_free_while_core_speaks() {
        let t0 = Instant::now();
        let mut hold = Hold::new(t0);
        assert_eq!(hold.turn(t0 + 100 * MS), Turn::Held, "not welcomed yet");
        hold.on_welcome(3000, t0 + 150 * MS);
        assert_eq!(hold.turn(t0 + 200 * MS), Turn::Free);
        // Core speaks every second: free throughout.
        for s in 1..10 {
            let at = t0 + 200 * MS + s * 1000 * MS;
            hold.on_heard(at);
            for tick in 0..5 {
                assert_eq!(hold.turn(at + tick * 200 * MS), Turn::Free);
            }
        }
    }

    #[test]
    fn core_silent_for_two_thirds_of_its_silence_holds_until_heard() {
        let t0 = Instant::now();
        let mut hold = Hold::new(t0);
        hold.on_welcome(3000, t0);
        let mut at = t0;
        // The loop turns every 200 ms; core says nothing.
        while at < t0 + 2000 * MS {
            at += 200 * MS;
            assert_eq!(hold.turn(at), Turn::Free, "at {:?}", at - t0);
        }
        at += 200 * MS;
        assert_eq!(hold.turn(at), Turn::Held, "2.2 s of silence");
        hold.on_heard(at);
        assert_eq!(hold.turn(at + 200 * MS), Turn::Free);
    }

    #[test]
    fn a_loop_that_did_not_turn_is_stalled_whatever_arrives_then() {
        let t0 = Instant::now();
        let mut hold = Hold::new(t0);
        hold.on_welcome(3000, t0);
        assert_eq!(hold.turn(t0 + 200 * MS), Turn::Free);
        // Frozen for 4 s: messages buffered meanwhile arrive at once, so
        // what they say is stale; the turn says so before they are heard.
        let thawed = t0 + 4200 * MS;
        assert_eq!(hold.turn(thawed), Turn::Stalled(4000 * MS));
        // A short silence setting shortens the stall that counts.
        let mut hold = Hold::new(t0);
        hold.on_welcome(600, t0);
        assert_eq!(hold.turn(t0 + 300 * MS), Turn::Free);
        assert_eq!(hold.turn(t0 + 800 * MS), Turn::Stalled(500 * MS));
    }

    #[test]
    fn runs_hold_when_told_or_when_the_loop_has_not_turned_within_the_limit() {
        let held = Held::default();
        let t0 = Instant::now();
        let mut hold = Hold::new(t0);
        hold.on_welcome(3000, t0);
        held.turned(t0, &hold);
        assert!(!held.is_held(t0 + 1900 * MS));
        assert!(held.is_held(t0 + 2100 * MS), "the loop stalled");
        held.turned(t0 + 2200 * MS, &hold);
        assert!(!held.is_held(t0 + 2300 * MS));
        held.set(true);
        assert!(held.is_held(t0 + 2300 * MS));
    }

    #[test]
    fn a_core_that_does_not_say_its_silence_gets_the_default() {
        let t0 = Instant::now();
        let mut hold = Hold::new(t0);
        hold.on_welcome(0, t0);
        assert_eq!(hold.turn(t0 + 1900 * MS), Turn::Free);
        assert!(matches!(hold.turn(t0 + 4000 * MS), Turn::Stalled(_)));
    }
}
