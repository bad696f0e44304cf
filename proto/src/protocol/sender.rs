//! The sender half of the delivery protocol, without I/O.
//!
//! Why one file of ~1,260 lines: every method moves the same entries between
//! the same states, and the invariants (the two window bounds, the floor
//! over resolved entries only, at most one copy of an at-most-once event,
//! no copy of what the processor holds) hold only if all transitions are
//! read together. Its helpers already live apart: [`super::rto`]
//! (timeouts, the retry backoff), [`super::suspects`] (crash isolation),
//! [`super::guarantee`] (per-kind delivery, an at-most-once event's
//! [`Permit`](super::guarantee::Permit)). The next concept to leave
//! would be the heartbeat probe (`probe`, `on_echo`, ~50 lines), should it
//! grow.
//!
//! [`Sender`] decides what to send, when to retransmit, when an event is
//! acknowledged and how far the acked floor moves. It is driven by core's
//! hub (`core/src/delivery/hub`) with calls that carry the current time; it
//! never reads a clock, a socket or the store, so tests drive it through any
//! schedule.
//!
//! Every seq in `[acked_floor, next_to_send)` has an entry in one of three
//! states:
//!
//! ```text
//!   on_send ──▶ InFlight ──on_ack / on_reject / max_deliver──▶ Storing ──on_stored──▶ Resolved
//!                 ▲   │ deadline: retransmit (unless the processor holds it),
//!                 │   │   attempt+1, backoff doubles
//!                 └───┘ on_retry: sent again after max(the wait asked for,
//!                       a few ms doubling per request)
//! ```
//!
//! The floor moves over leading `Resolved` entries only: a seq is below the
//! floor only once its result (or its dead entry) is durable.
//!
//! Words: an *ack* is the processor's message for one event; *storing* is
//! an accepted ack (or a park) whose row is being written; the *acked
//! floor* is the lowest seq not resolved, so "acknowledged" means durable,
//! as it does for a publish.
//!
//! An event of an at-most-once kind (see `guarantee.rs`) runs only once
//! *granted*, and a granted event is never sent or granted again: no
//! retransmit, no fast retransmit, no resend on a new stream, no retry.
//! To a processor that claims (`Hello.claims`) it goes out at once,
//! `Unclaimed` ([`Permit`]); when it is about to start, the processor
//! claims it ([`on_claims`](Sender::on_claims)), its sent mark is stored,
//! and [`on_marked`](Sender::on_marked) grants it (`Action::Permit`).
//! Until then it has not run: it is sent again as any event is, and is no
//! crash suspect, so a crash abandons only what may have run. To a
//! processor that does not claim, it goes out granted: it waits in
//! `Marking` until its sent mark is durable, then goes out once. Where an
//! at-least-once event would get another copy after its processor's stream
//! ended, or when the processor asks to retry it later, a granted event is
//! abandoned (`Action::Abandon`: a result row with status abandoned); after
//! a restart, one with a sent mark and no result is abandoned when offered
//! (`Offer::Abandon`). Its timeouts count towards `max_deliver` as any
//! event's do.
//!
//! The window has two bounds. The first is the in-flight window `W`: at
//! most `W` events in flight (sent, no ack accepted: `InFlight`, or being
//! marked). It is gated by acks, not by the store, so the next events go out
//! while the results of the previous ones are being committed; and it
//! counts events, not a span of seqs, so slow events low in the window
//! (a slow webhook's, waiting for their endpoint) hold only their own
//! places, not every seq above them. The second is `acked_floor + 2W`:
//! at most `W` more seqs may wait for their results to be stored. It keeps
//! what the processor must hold bounded by `2W` above the floor it was told
//! (its reorder buffer and its cache of acks to send again), whatever the
//! store's speed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::guarantee::{Guarantee, Permit};
use super::rto::{self, RtoEstimator};
use super::suspects::Suspects;
use super::{DeliveryCursor, Seq};

/// Tunables of the sender.
#[derive(Debug, Clone, Copy)]
pub struct SenderConfig {
    /// The in-flight window: at most this many events in flight, every seq
    /// sent below `acked_floor + 2 × window`.
    pub window: u32,
    /// Ack timeouts (counted only while the processor runs and the event
    /// blocks the floor) plus retry-later requests after which an event is
    /// parked as dead. 0: never.
    pub max_deliver: u32,
    /// Retransmission timeout before the first round-trip sample.
    pub rto_initial: Duration,
    /// Lowest retransmission timeout.
    pub rto_min: Duration,
    /// Longest wait between two sends of one event (backoff cap).
    pub max_backoff: Duration,
    /// Processor lives an event may end while alone in flight before it is
    /// parked as dead (see `suspects.rs`). 0: never.
    pub max_crashes: u32,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            window: 1024,
            max_deliver: 20,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_crashes: 3,
        }
    }
}

/// State of the processor link as the sender sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// No processor connected: nothing is sent and no timer runs.
    Absent,
    /// Connected and processing.
    Running,
    /// Connected but paused: retransmits continue (backoff grows), but they
    /// do not count towards `max_deliver`.
    Paused,
}

/// One sent-but-unacknowledged event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// 1 for the first send, +1 per retransmission.
    pub attempt: u32,
    /// When attempt 1 was sent (for RTT samples and the monitor).
    pub first_sent: Instant,
    /// When the latest attempt was sent.
    pub last_sent: Instant,
    /// When to retransmit if no ack arrived.
    pub deadline: Instant,
    /// The wait armed at the latest send.
    pub backoff: Duration,
    /// Timeouts that count towards `max_deliver`.
    pub timeouts: u32,
    /// Deadlines passed (with or without a copy sent): the backoff's
    /// exponent.
    pub waits: u32,
    /// Not sent on this stream yet: it waits for its turn while suspects
    /// are isolated (see `suspects.rs`). No timer runs for it.
    pub held: bool,
    /// The processor asked to retry it later: it is sent again at
    /// `deadline`, whatever the processor has, and no timeout is counted.
    pub retry: bool,
    /// Retry-later requests, which count towards `max_deliver`.
    pub retries: u32,
    /// At most once: where its permit to run stands (see the module docs);
    /// `None` for at least once.
    pub once: Option<Permit>,
}

impl InFlight {
    /// At most once, and it may have run: never sent (or granted) again.
    pub fn granted(&self) -> bool {
        self.once == Some(Permit::Granted)
    }

    /// At most once, and it has not run (the processor claims it first).
    pub fn unclaimed(&self) -> bool {
        matches!(self.once, Some(Permit::Unclaimed | Permit::Marking))
    }
}

/// Delivery state of one seq in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// At most once: its sent mark is being stored; not sent yet, no timer.
    Marking,
    InFlight(InFlight),
    /// The ack (or a park decision) arrived; its row is being stored.
    Storing,
    /// Result or dead entry is durable.
    Resolved,
    /// Another stream's seq (several processors share keyed work, each
    /// stream with a `Sender` of its own): passed over here as if
    /// resolved, but not resolved, so never said to be
    /// ([`resolved_above`](Sender::resolved_above)); it may yet come here
    /// ([`take_over`](Sender::take_over)).
    Elsewhere,
}

impl Entry {
    /// Resolved, or another stream's: the floor and `after` pass it.
    pub fn passed(&self) -> bool {
        matches!(self, Entry::Resolved | Entry::Elsewhere)
    }
}

/// What the hub must do after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send (or send again) `seq` as attempt `attempt`.
    Send { seq: Seq, attempt: u32 },
    /// Retransmit after a timeout; `backoff` is the next wait armed.
    Retransmit {
        seq: Seq,
        attempt: u32,
        backoff: Duration,
    },
    /// Park `seq` as dead and store it as such.
    Park {
        seq: Seq,
        attempts: u32,
        reason: String,
    },
    /// At most once: give `seq` up, storing a result with status abandoned
    /// and `reason` as its output.
    Abandon {
        seq: Seq,
        attempts: u32,
        reason: String,
    },
    /// At most once: store `seq`'s sent mark, then call
    /// [`Sender::on_marked`] (a processor that does not claim connected
    /// while it waited to be claimed).
    Mark { seq: Seq },
    /// At most once: tell the processor it may start `seq` (`Permits`).
    Permit { seq: Seq },
}

/// What [`Sender::on_claims`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Store their sent marks, then call [`Sender::on_marked`], which
    /// grants them.
    pub mark: Vec<Seq>,
    /// Resolved without the processor (or being stored): tell it to skip
    /// them.
    pub refused: Vec<Seq>,
    /// In flight at least once (its kind's guarantee changed when core
    /// restarted): nothing to mark, grant them now.
    pub granted: Vec<Seq>,
}

/// An unresolved event moving from one stream to another (several
/// processors share keyed work): [`Sender::end`] gives them,
/// [`Sender::take_over`] takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    pub seq: Seq,
    /// Copies sent so far (0: none yet).
    pub attempts: u32,
    /// At most once and never granted (it cannot have run): it goes out to
    /// be claimed again.
    pub at_most_once: bool,
    /// Processor lives it ended while alone in flight.
    pub crashes: u32,
}

/// What an ended stream held ([`Sender::end`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// Unresolved, for other streams to take over, in seq order.
    pub handover: Vec<Handover>,
    /// At-most-once events that may have run: store them abandoned.
    pub abandon: Vec<Action>,
    /// Rows being stored: unresolved until durable.
    pub storing: Vec<Seq>,
    /// The events sent on the stream and unacknowledged when it ended: what
    /// may have crashed its processor (see `suspects.rs`).
    pub sent: Vec<Seq>,
}

/// What the processor says it has, with every ack batch and status report
/// (like TCP's selective acks: what it holds apart from what it lacks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every seq below it was processed (its ack is cached).
    pub processed_below: Seq,
    /// Every seq below it was received, except `awaiting`: it is processed
    /// without being sent again, as long as this session lasts.
    pub received_below: Seq,
    /// Seqs below `received_below` the processor waits for a new copy of
    /// (they asked to retry later), in increasing order.
    pub awaiting: Vec<Seq>,
}

impl Progress {
    /// Whether the processor holds `seq` (waiting for its turn, running or
    /// done) and needs no copy of it.
    pub fn holds(&self, seq: Seq) -> bool {
        seq < self.received_below && self.awaiting.binary_search(&seq).is_err()
    }
}

/// How long a heartbeat's probe may go unanswered before another one is
/// sent (the processor may predate echoes, or the stream may have ended).
pub const PROBE_GIVE_UP: Duration = Duration::from_secs(2);

/// Result of [`Sender::on_ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// First ack for an in-flight event: store the result.
    Accepted { attempts: u32 },
    /// The event was already acknowledged: ignore (counted).
    Duplicate,
    /// The seq was never sent: ignore.
    Unknown,
}

/// Result of [`Sender::on_retry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Sent again after `wait` (the longer of the backoff and the wait
    /// asked for).
    Scheduled { wait: Duration },
    /// It ends here: parked (`max_deliver` reached) or abandoned (at most
    /// once). Carry out the action.
    End(Action),
    /// Not in flight, held, or already waiting to be retried: ignored.
    Ignored,
}

/// Longest wait a retry-later request may ask for; longer ones are cut.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Result of [`Sender::on_offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Send it as attempt 1.
    Send,
    /// Already resolved (stored before a restart): do not send.
    Skip,
    /// At most once, to a processor that does not claim: store its sent
    /// mark, then call [`Sender::on_marked`], which sends it.
    Mark,
    /// At most once, and its sent mark was stored before a restart: it may
    /// have gone out. Abandon it (store a result with status abandoned).
    Abandon,
    /// Not the next seq to send (stale): ignore.
    OutOfOrder,
}

/// The sender state machine. See the module docs.
#[derive(Debug)]
pub struct Sender {
    config: SenderConfig,
    /// Window for the current session: min(ours, the processor's).
    window: u64,
    /// Every seq below it is resolved.
    acked_floor: Seq,
    /// The next seq to send for the first time.
    next_to_send: Seq,
    /// Entries for `[acked_floor, next_to_send)`.
    entries: BTreeMap<Seq, Entry>,
    /// The seqs of the `InFlight` entries, lowest first.
    unacked: BTreeSet<Seq>,
    /// No later than the earliest retransmit deadline; `None` when nothing
    /// is in flight. May be early (an ack removed the earliest entry): a
    /// tick then finds nothing due and recomputes it. Kept so that the hub
    /// does not scan the window on every turn of its loop.
    timer: Option<Instant>,
    /// What the current session's processor last said it has (0: not said
    /// yet).
    progress: Progress,
    /// Seqs at or above `next_to_send` found resolved at start-up (results
    /// stored out of order before a restart); skipped when reached.
    resolved_ahead: BTreeSet<Seq>,
    /// Unresolved seqs with a sent mark at start-up; abandoned when reached.
    sent_ahead: BTreeSet<Seq>,
    rto: RtoEstimator,
    /// The heartbeat probe awaiting its echo, and when it went out: the
    /// one source of round-trip samples (see `rto.rs`).
    probe: Option<(u64, Instant)>,
    link: Link,
    /// Events in flight when a processor life ended, and crash counts.
    suspects: Suspects,
    /// Some in-flight entry is held (not sent on this stream yet); spares
    /// [`release_held`](Self::release_held) a scan of the window on every
    /// ack batch when none is.
    any_held: bool,
    /// The current session's processor claims at-most-once events before
    /// starting them (`Hello.claims`).
    claims: bool,
    /// The floor its processor is told, when it is not this stream's own
    /// (several streams: the group's, which may lie lower; see
    /// [`set_told_floor`](Self::set_told_floor)).
    told_floor: Option<Seq>,
    /// Source of backoff jitter; seeded so that tests are reproducible.
    rng: fastrand::Rng,
}

impl Sender {
    /// A sender resuming from the persisted cursor.
    pub fn new(config: SenderConfig, cursor: DeliveryCursor, seed: u64) -> Self {
        let mut sender = Self {
            config,
            window: u64::from(config.window.max(1)),
            acked_floor: cursor.acked_floor.max(1),
            next_to_send: cursor.acked_floor.max(1),
            entries: BTreeMap::new(),
            unacked: BTreeSet::new(),
            timer: None,
            progress: Progress::default(),
            resolved_ahead: cursor.resolved_above.into_iter().collect(),
            sent_ahead: cursor.sent_above.into_iter().collect(),
            rto: RtoEstimator::new(config.rto_initial, config.rto_min, config.max_backoff),
            probe: None,
            link: Link::Absent,
            suspects: Suspects::new(config.max_crashes),
            any_held: false,
            claims: false,
            told_floor: None,
            rng: fastrand::Rng::with_seed(seed),
        };
        sender.skip_resolved();
        sender
    }

    /// Every seq below it is resolved.
    pub fn acked_floor(&self) -> Seq {
        self.acked_floor
    }

    /// The next seq to send for the first time.
    pub fn next_to_send(&self) -> Seq {
        self.next_to_send
    }

    /// Window in force.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The floor its processor is told, when several streams share the
    /// log (the group's, which may lie below this stream's own). Its
    /// receiver takes nothing at or beyond that plus twice the window, so
    /// no new event, nor one taken over, is sent there.
    pub fn set_told_floor(&mut self, floor: Seq) {
        self.told_floor = Some(self.told_floor.map_or(floor, |f| f.max(floor)));
    }

    /// Every copy sent lies below this: twice the window above the floor
    /// the processor is told.
    fn span_end(&self) -> Seq {
        self.told_floor
            .unwrap_or(self.acked_floor)
            .min(self.acked_floor)
            + 2 * self.window
    }

    /// The lowest seq sent and not acknowledged, or `next_to_send`.
    pub fn lowest_unacked(&self) -> Seq {
        self.unacked.first().copied().unwrap_or(self.next_to_send)
    }

    /// Events in flight: the in-flight window in use.
    pub fn window_used(&self) -> u64 {
        self.unacked.len() as u64
    }

    /// Seqs above the floor (`next_to_send − acked_floor`), at most twice
    /// the window.
    pub fn span(&self) -> u64 {
        self.next_to_send - self.acked_floor
    }

    pub fn link(&self) -> Link {
        self.link
    }

    /// What the current session's processor last said it has.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn rto(&self) -> &RtoEstimator {
        &self.rto
    }

    /// Entries of the window, in seq order.
    pub fn entries(&self) -> impl Iterator<Item = (Seq, &Entry)> {
        self.entries.iter().map(|(s, e)| (*s, e))
    }

    /// Seqs at or above `from` (and the floor) whose result or dead row is
    /// durable, lowest first: never sent again, whatever happens to core
    /// (those found resolved at start-up, ahead, included). Sent in
    /// `Welcome` and heartbeats, so that a new processor life passes over
    /// them instead of waiting for the floor to. (Not those still being
    /// stored: a core that dies before their rows are durable sends them
    /// again, and a processor that had passed over them would drop that
    /// copy as a duplicate, for good.)
    pub fn resolved_above(&self, from: Seq) -> Vec<Seq> {
        let from = from.max(self.acked_floor);
        let mut seqs: Vec<Seq> = self
            .entries
            .range(from..)
            .filter(|(_, e)| **e == Entry::Resolved)
            .map(|(seq, _)| *seq)
            .collect();
        seqs.extend(self.resolved_ahead.range(from..).copied());
        seqs
    }

    /// What a copy of `seq` tells the processor in `Event.after`: the
    /// highest seq below it whose event may still come to the processor
    /// (any entry not resolved), or 0 when there is none. Every seq in
    /// between is resolved (or another stream's:
    /// [`on_offer_elsewhere`](Self::on_offer_elsewhere)), so the processor
    /// passes over it at once instead of waiting for the floor to pass it.
    /// Not the floor's predecessor: with several streams, the floor a
    /// processor is told (all streams') may lie below this stream's.
    pub fn after(&self, seq: Seq) -> Seq {
        self.entries
            .range(self.acked_floor..seq)
            .rev()
            .find(|(_, e)| !e.passed())
            .map_or(0, |(s, _)| *s)
    }

    /// Unresolved suspects (see `suspects.rs`); while there are any, a
    /// poison event is being looked for.
    pub fn suspects(&self) -> usize {
        self.suspects.len()
    }

    /// True when a new event may be sent now: the window has room, and the
    /// search for a poison event has not narrowed to batches of suspects
    /// (see `suspects.rs`).
    pub fn can_send(&self) -> bool {
        self.can_send_seq(self.next_to_send)
    }

    /// True when `seq` (the next new event, or one taken over from another
    /// stream) may be sent now: as [`can_send`](Self::can_send), and
    /// `seq` lies within the span the processor takes.
    pub fn can_send_seq(&self, seq: Seq) -> bool {
        self.link != Link::Absent
            && !self.suspects.narrowing()
            && self.window_used() < self.window
            && seq < self.span_end()
    }

    /// A processor connected; `new_life` when it is not the processor life
    /// whose stream ended last (it restarted or crashed). Events that
    /// crashed the processor `max_crashes` times by themselves are parked;
    /// everything else in flight is sent again now, in seq order (the
    /// processor drops what it already has and re-acks it) — or, once the
    /// search for a poison event has narrowed, only the batch of suspects
    /// whose turn it is and what lies below it (see `suspects.rs`).
    pub fn on_connect(
        &mut self,
        now: Instant,
        processor_window: u32,
        paused: bool,
        new_life: bool,
        claims: bool,
    ) -> Vec<Action> {
        self.link = if paused { Link::Paused } else { Link::Running };
        self.claims = claims;
        self.window = u64::from(self.config.window.min(processor_window).max(1));
        self.progress = Progress::default();
        self.probe = None;
        let mut actions = Vec::new();
        for poison in self.suspects.on_hello(new_life) {
            if let Some(f) = self.take_in_flight(poison.seq) {
                actions.push(Action::Park {
                    seq: poison.seq,
                    attempts: f.attempt,
                    reason: format!(
                        "crashed the processor: {} processor lives ended while it was the only event in flight",
                        poison.crashes
                    ),
                });
            }
        }
        // At most once: it may have run on the stream that ended, and
        // another copy could run a second time (by another processor life,
        // or after a retry-later request that never arrived).
        let sent_once: Vec<Seq> = self
            .entries
            .iter()
            .filter_map(|(seq, e)| match e {
                Entry::InFlight(f) if f.granted() && !f.held => Some(*seq),
                _ => None,
            })
            .collect();
        for seq in sent_once {
            if let Some(f) = self.take_in_flight(seq) {
                actions.push(Action::Abandon {
                    seq,
                    attempts: f.attempt,
                    reason: "abandoned: the processor's stream ended before its result arrived"
                        .to_string(),
                });
            }
        }
        for (seq, entry) in self.entries.iter_mut() {
            let Entry::InFlight(f) = entry else { continue };
            if !claims && f.unclaimed() {
                // This processor does not claim: it gets the event only
                // once its sent mark is durable, as the only copy.
                *entry = Entry::Marking;
                actions.push(Action::Mark { seq: *seq });
                continue;
            }
            f.held = true;
            self.any_held = true;
        }
        actions.extend(self.release_held(now));
        actions
    }

    /// The processor's stream ended. In-flight entries wait for the next
    /// connection; no timer runs meanwhile.
    pub fn on_disconnect(&mut self) {
        self.link = Link::Absent;
        let mut sent = Vec::new();
        for (seq, entry) in self.entries.iter_mut() {
            let Entry::InFlight(f) = entry else { continue };
            if f.once == Some(Permit::Marking) {
                // Its permit was never sent: it did not run.
                f.once = Some(Permit::Unclaimed);
            }
            // One waiting to be retried was not being processed, nor one
            // waiting to be claimed.
            if !f.held && !f.retry && !f.unclaimed() {
                sent.push(*seq);
            }
        }
        self.suspects.on_stream_end(sent);
    }

    /// Sends held entries whose turn came, in seq order: while the search
    /// for a poison event is narrowed to batches, every one below the top of
    /// the batch released last (see `suspects.rs`); all of them otherwise.
    fn release_held(&mut self, now: Instant) -> Vec<Action> {
        if self.link == Link::Absent || !self.any_held {
            return Vec::new();
        }
        let hold_from = self.suspects.release();
        // Entries from `hold_from` on stay held for a later pass.
        self.any_held = hold_from.is_some();
        let rto = self.rto.rto();
        let mut actions = Vec::new();
        for seq in &self.unacked {
            if hold_from.is_some_and(|h| *seq >= h) {
                break;
            }
            let Some(Entry::InFlight(f)) = self.entries.get_mut(seq) else {
                continue;
            };
            if f.held {
                f.held = false;
                f.retry = false;
                if !f.granted() {
                    // (a held granted entry never went out)
                    f.attempt += 1;
                }
                f.last_sent = now;
                f.backoff = rto;
                f.deadline = now + rto;
                self.timer = Some(self.timer.map_or(f.deadline, |t| t.min(f.deadline)));
                actions.push(Action::Send {
                    seq: *seq,
                    attempt: f.attempt,
                });
            }
        }
        actions
    }

    /// The processor was paused or resumed.
    pub fn set_paused(&mut self, paused: bool) {
        if self.link != Link::Absent {
            self.link = if paused { Link::Paused } else { Link::Running };
        }
    }

    /// The next committed event, `seq`, is available; `guarantee` is its
    /// kind's. Call only when [`can_send`](Self::can_send).
    pub fn on_offer(&mut self, seq: Seq, guarantee: Guarantee, now: Instant) -> Offer {
        if seq != self.next_to_send {
            return Offer::OutOfOrder;
        }
        self.next_to_send += 1;
        if self.resolved_ahead.remove(&seq) {
            self.entries.insert(seq, Entry::Resolved);
            self.advance_floor();
            return Offer::Skip;
        }
        if self.sent_ahead.remove(&seq) {
            // Whatever its kind's guarantee is now: it was sent at most once.
            self.entries.insert(seq, Entry::Storing);
            return Offer::Abandon;
        }
        if guarantee == Guarantee::AtMostOnce {
            if self.claims {
                // The processor claims it before it runs (`on_claims`).
                self.insert_in_flight(seq, Some(Permit::Unclaimed), now);
                return Offer::Send;
            }
            self.entries.insert(seq, Entry::Marking);
            self.unacked.insert(seq);
            return Offer::Mark;
        }
        self.insert_in_flight(seq, None, now);
        Offer::Send
    }

    /// Several processors share keyed work, each stream with a `Sender` of
    /// its own over the one log: `seq`, the next seq, is another stream's.
    /// It is passed over here as if resolved, so this stream's floor and
    /// [`after`](Self::after) go past it. Needs no room in the window.
    pub fn on_offer_elsewhere(&mut self, seq: Seq) -> Offer {
        if seq != self.next_to_send {
            return Offer::OutOfOrder;
        }
        self.next_to_send += 1;
        self.resolved_ahead.remove(&seq);
        self.sent_ahead.remove(&seq);
        self.entries.insert(seq, Entry::Elsewhere);
        self.advance_floor();
        Offer::Skip
    }

    /// Another stream's unresolved event comes to this stream (its key's
    /// partition moved here once the other stream held none of it, or the
    /// other stream's processor life ended: [`end`](Self::end)). It goes
    /// out now, as the copy after the other stream's last, even past the
    /// window; an at-most-once one goes out to be claimed, or is marked
    /// first (`Action::Mark`) for a processor that does not claim. Below
    /// this stream's floor, the floor moves back to it: it is unresolved
    /// here now. Crashes counted for it elsewhere count here too, and at
    /// `max_crashes` it is parked instead. `None` for a seq this stream was
    /// never offered or holds itself.
    pub fn take_over(&mut self, event: Handover, now: Instant) -> Option<Action> {
        let seq = event.seq;
        if seq >= self.next_to_send {
            return None;
        }
        if seq >= self.acked_floor {
            if self.entries.get(&seq) != Some(&Entry::Elsewhere) {
                return None;
            }
        } else {
            for passed in seq + 1..self.acked_floor {
                self.entries.entry(passed).or_insert(Entry::Elsewhere);
            }
            self.acked_floor = seq;
        }
        let limit = self.config.max_crashes;
        if limit > 0 && event.crashes >= limit {
            self.entries.insert(seq, Entry::Storing);
            return Some(Action::Park {
                seq,
                attempts: event.attempts,
                reason: format!(
                    "crashed the processor: {} processor lives ended while it was the only event in flight",
                    event.crashes
                ),
            });
        }
        self.suspects.adopt(seq, event.crashes);
        if event.at_most_once && !self.claims {
            self.entries.insert(seq, Entry::Marking);
            self.unacked.insert(seq);
            return Some(Action::Mark { seq });
        }
        let once = event.at_most_once.then_some(Permit::Unclaimed);
        self.insert_in_flight(seq, once, now);
        let attempt = event.attempts + 1;
        if let Some(Entry::InFlight(f)) = self.entries.get_mut(&seq) {
            f.attempt = attempt;
        }
        Some(Action::Send { seq, attempt })
    }

    /// This stream is given up for good (its processor life ended and
    /// another stream goes on): what it held, sorted out. Unresolved events
    /// that cannot have run twice go to other streams
    /// ([`take_over`](Self::take_over)); an at-most-once event that may
    /// have run is abandoned, as on any ended stream; rows being stored are
    /// left to the caller to track until durable. `crashed` when the life
    /// ended (not a stream cut for its silence): an event alone in flight
    /// counts a crash, as in `suspects.rs`.
    pub fn end(self, crashed: bool) -> Ended {
        let mut ended = Ended::default();
        let sent: Vec<Seq> = self
            .entries
            .iter()
            .filter_map(|(seq, e)| match e {
                Entry::InFlight(f) if !f.held && !f.retry && !f.unclaimed() => Some(*seq),
                _ => None,
            })
            .collect();
        let alone = match sent[..] {
            [seq] if crashed => Some(seq),
            _ => None,
        };
        ended.sent = sent;
        for (seq, entry) in self.entries {
            let crashes = self.suspects.crashes(seq) + u32::from(alone == Some(seq));
            match entry {
                Entry::InFlight(f) if f.granted() && !f.held => {
                    ended.abandon.push(Action::Abandon {
                        seq,
                        attempts: f.attempt,
                        reason: "abandoned: the processor's stream ended before its result arrived"
                            .to_string(),
                    })
                }
                Entry::InFlight(f) => ended.handover.push(Handover {
                    seq,
                    attempts: f.attempt,
                    at_most_once: f.once.is_some(),
                    crashes,
                }),
                Entry::Marking => ended.handover.push(Handover {
                    seq,
                    attempts: 0,
                    at_most_once: true,
                    crashes,
                }),
                Entry::Storing => ended.storing.push(seq),
                Entry::Resolved | Entry::Elsewhere => {}
            }
        }
        ended
    }

    /// Whether `seq` goes out to be claimed (`Event.claim`): at most once
    /// and not granted yet.
    pub fn needs_claim(&self, seq: Seq) -> bool {
        matches!(self.entries.get(&seq), Some(Entry::InFlight(f)) if f.unclaimed())
    }

    /// The processor claims `seqs`: each is about to start (its lane's
    /// turn, a slot free). One waiting to be claimed has its sent mark
    /// stored, and is granted by [`on_marked`](Self::on_marked); one core
    /// resolved without the processor is refused. Any other claim (being
    /// marked or granted already, not sent on this stream yet, unknown) is
    /// ignored: the processor repeats its claims until answered, and no
    /// at-most-once seq is ever granted twice. (One now in flight at least
    /// once is granted at once: a restarted core may deliver the kind
    /// differently.)
    pub fn on_claims(&mut self, seqs: impl IntoIterator<Item = Seq>) -> Claimed {
        let mut claimed = Claimed::default();
        if self.link == Link::Absent {
            return claimed;
        }
        for seq in seqs {
            match self.entries.get_mut(&seq) {
                Some(Entry::InFlight(f)) if f.once == Some(Permit::Unclaimed) && !f.held => {
                    f.once = Some(Permit::Marking);
                    claimed.mark.push(seq);
                }
                Some(Entry::InFlight(f)) if f.once.is_none() => claimed.granted.push(seq),
                Some(Entry::Storing | Entry::Resolved) => claimed.refused.push(seq),
                None if seq < self.acked_floor || self.resolved_ahead.contains(&seq) => {
                    claimed.refused.push(seq)
                }
                _ => {}
            }
        }
        claimed
    }

    /// The sent marks of `seqs` are durable: each claimed on this stream is
    /// granted (`Action::Permit`); each still waiting for its mark to go
    /// out is sent now (held until the next stream when none is open, or,
    /// while crash suspects are released in batches, until its turn).
    pub fn on_marked(&mut self, seqs: impl IntoIterator<Item = Seq>, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for seq in seqs {
            if let Some(Entry::InFlight(f)) = self.entries.get_mut(&seq)
                && f.once == Some(Permit::Marking)
            {
                // (A stream that ended meanwhile made it unclaimed again.)
                f.once = Some(Permit::Granted);
                actions.push(Action::Permit { seq });
                continue;
            }
            if self.entries.get(&seq) != Some(&Entry::Marking) {
                continue;
            }
            let held =
                self.link == Link::Absent || self.suspects.hold_from().is_some_and(|h| seq >= h);
            self.insert_in_flight(seq, Some(Permit::Granted), now);
            if held {
                if let Some(Entry::InFlight(f)) = self.entries.get_mut(&seq) {
                    f.held = true;
                }
                self.any_held = true;
            } else {
                actions.push(Action::Send { seq, attempt: 1 });
            }
        }
        actions
    }

    /// A new in-flight entry for `seq`, sent now as attempt 1 (its timer
    /// armed).
    fn insert_in_flight(&mut self, seq: Seq, once: Option<Permit>, now: Instant) {
        let rto = self.rto.rto();
        let deadline = now + rto;
        self.entries.insert(
            seq,
            Entry::InFlight(InFlight {
                attempt: 1,
                first_sent: now,
                last_sent: now,
                deadline,
                backoff: rto,
                timeouts: 0,
                waits: 0,
                held: false,
                retry: false,
                retries: 0,
                once,
            }),
        );
        self.unacked.insert(seq);
        self.timer = Some(self.timer.map_or(deadline, |t| t.min(deadline)));
    }

    /// An ack for `seq`. It gives no round-trip sample: the time from send
    /// to ack counts the event's wait behind its key and its algorithm's run
    /// (see [`on_echo`](Self::on_echo)).
    pub fn on_ack(&mut self, seq: Seq) -> AckOutcome {
        if seq < self.acked_floor || self.resolved_ahead.contains(&seq) {
            return AckOutcome::Duplicate;
        }
        match self.entries.get(&seq) {
            None => AckOutcome::Unknown,
            // (Another stream's: an ack from a stream that no longer holds it.)
            Some(Entry::Storing | Entry::Resolved | Entry::Elsewhere) => AckOutcome::Duplicate,
            Some(Entry::Marking) => AckOutcome::Unknown,
            // Not granted: it cannot have run.
            Some(Entry::InFlight(f)) if f.unclaimed() => AckOutcome::Unknown,
            Some(Entry::InFlight(_)) => {
                let Some(f) = self.take_in_flight(seq) else {
                    return AckOutcome::Unknown;
                };
                AckOutcome::Accepted {
                    attempts: f.attempt,
                }
            }
        }
    }

    /// The processor's progress, with every ack batch and status report.
    ///
    /// Fast retransmit: every seq below `processed_below` was processed (in
    /// any ordering mode), so an event below it that is still in flight lost
    /// its ack. It is sent again now (the processor holds it, so its timeout
    /// sends nothing); the processor drops the duplicate and answers from its
    /// ack cache. Only a copy sent at least one RTO ago counts: a younger
    /// one may still be on its way, and the processor answers it from the
    /// cache when it arrives. (Guarded by the path's round trip alone, the
    /// burst of copies a new stream or a restarted core sends to a processor
    /// that had processed them was sent again as it was being read: some
    /// 2,000 retransmits after one core restart.) It never counts towards
    /// `max_deliver`.
    ///
    /// An at-most-once event below `processed_below` (its copy an RTO old)
    /// is abandoned instead: the processor sends an ack before any report
    /// that counts it, on the same ordered stream, so its result is lost.
    ///
    /// `received_below` spares the others: an event a running processor has
    /// is waiting for its turn (behind an earlier event of its key, or for a
    /// free slot) or running, and a copy would only be dropped. Its
    /// deadline still comes and counts a timeout (see [`on_tick`]), but
    /// nothing is sent. (A paused processor still gets copies, to show the
    /// timers at work.)
    ///
    /// [`on_tick`]: Self::on_tick
    pub fn on_progress(&mut self, now: Instant, progress: Progress) -> Vec<Action> {
        if self.link == Link::Absent {
            return Vec::new();
        }
        // Not a max: a key handed over to this processor brings it events
        // below what it had processed (it passed over them as not its
        // own), and its next report says so. Kept high, the old value
        // would abandon such an at-most-once event as it runs.
        self.progress.processed_below = progress.processed_below;
        // Not a max: a processor that predates `awaiting` lowers it to an
        // event that waits for a new copy. The stream keeps reports in
        // order, so the latest one is the truth (a stale one in a simulation
        // that reorders them only delays a copy until the next report).
        self.progress.received_below = progress.received_below;
        // Kept sorted and within the window, whatever a processor sends.
        let mut awaiting = progress.awaiting;
        awaiting.retain(|seq| self.unacked.contains(seq));
        awaiting.sort_unstable();
        awaiting.dedup();
        self.progress.awaiting = awaiting;
        let guard = self.rto.rto();
        let mut actions = Vec::new();
        let mut lost_once = Vec::new();
        for seq in self.unacked.range(..self.progress.processed_below) {
            let Some(Entry::InFlight(f)) = self.entries.get_mut(seq) else {
                continue;
            };
            if f.granted() && !f.held {
                // Its one copy was processed on this stream, and its ack,
                // which the processor sends before any report that counts
                // it, did not come: lost for good, and no copy may earn it.
                // Only for a copy sent an RTO ago: a report the processor
                // sent before a handed-over copy reached it still counts
                // it as passed over (one that does not claim gets its copy
                // granted).
                if now.saturating_duration_since(f.last_sent) >= guard {
                    lost_once.push(*seq);
                }
                continue;
            }
            if f.held || f.retry || now.saturating_duration_since(f.last_sent) < guard {
                continue;
            }
            f.attempt += 1;
            f.last_sent = now;
            f.deadline = now + f.backoff;
            actions.push(Action::Retransmit {
                seq: *seq,
                attempt: f.attempt,
                backoff: f.backoff,
            });
        }
        for seq in lost_once {
            if let Some(f) = self.take_in_flight(seq) {
                actions.push(Action::Abandon {
                    seq,
                    attempts: f.attempt,
                    reason: "abandoned: processed, but its result was lost on the way".to_string(),
                });
            }
        }
        actions.extend(self.release_held(now));
        actions
    }

    /// Whether [`probe`](Self::probe) would give a probe now.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.link != Link::Absent
            && self
                .probe
                .is_none_or(|(_, sent)| now.saturating_duration_since(sent) >= PROBE_GIVE_UP)
    }

    /// A probe to put in the next heartbeat, when none is awaiting its echo
    /// (or the last one went unanswered for [`PROBE_GIVE_UP`]).
    pub fn probe(&mut self, now: Instant) -> Option<u64> {
        if !self.probe_due(now) {
            return None;
        }
        let probe = self.rng.u64(1..);
        self.probe = Some((probe, now));
        Some(probe)
    }

    /// The processor echoed `probe`: one round-trip sample of the path.
    /// The processor answers as soon as it reads the heartbeat, on the same
    /// stream as the events, so the sample counts what a copy of an event
    /// and its ack go through on the way (the network, both I/O loops, the
    /// messages queued ahead), and nothing an event waits for once there:
    /// its key, a retry, its algorithm. Returns the sample.
    pub fn on_echo(&mut self, probe: u64, now: Instant) -> Option<Duration> {
        match self.probe {
            Some((expected, sent)) if expected == probe => {
                self.probe = None;
                let rtt = now.saturating_duration_since(sent);
                self.rto.sample(rtt);
                Some(rtt)
            }
            _ => None,
        }
    }

    /// The processor cannot produce a result for `seq`: park it.
    pub fn on_reject(&mut self, seq: Seq, reason: &str) -> Option<Action> {
        let f = self.take_in_flight(seq)?;
        Some(Action::Park {
            seq,
            attempts: f.attempt,
            reason: format!("rejected by the processor: {reason}"),
        })
    }

    /// The processor asks to process `seq` again later, at the earliest
    /// after `after` (see `Ack.retry`). Not an ack: the event stays in
    /// flight, and is sent again after the longer of its backoff and
    /// `after` (cut to [`MAX_RETRY_AFTER`]), whatever the processor says it
    /// has. The request counts towards `max_deliver` with the timeouts; at
    /// the limit the event is parked with `reason`. An at-most-once event
    /// is abandoned instead: it is never sent twice.
    pub fn on_retry(
        &mut self,
        seq: Seq,
        after: Duration,
        reason: &str,
        now: Instant,
    ) -> RetryOutcome {
        let Some(Entry::InFlight(f)) = self.entries.get_mut(&seq) else {
            return RetryOutcome::Ignored;
        };
        if f.held || f.retry || f.unclaimed() {
            // (an unclaimed one cannot have run)
            return RetryOutcome::Ignored;
        }
        if f.granted() {
            let f = self.take_in_flight(seq).expect("in flight");
            return RetryOutcome::End(Action::Abandon {
                seq,
                attempts: f.attempt,
                reason: format!(
                    "abandoned: retry later asked, and an at-most-once event is never sent twice: {reason}"
                ),
            });
        }
        f.retries += 1;
        if self.config.max_deliver > 0 && f.timeouts + f.retries >= self.config.max_deliver {
            let (retries, timeouts) = (f.retries, f.timeouts);
            let f = self.take_in_flight(seq).expect("in flight");
            return RetryOutcome::End(Action::Park {
                seq,
                attempts: f.attempt,
                reason: format!(
                    "retry later asked {retries} times ({timeouts} timeouts; --max-deliver {}): {reason}",
                    self.config.max_deliver
                ),
            });
        }
        f.waits += 1;
        // Exponential in the requests, not in the deadlines it passed while
        // waiting or running, and not from the RTO: a first request is
        // answered within milliseconds however long the event sat behind
        // others (`Retry-After: 0` means now), a repeated one waits longer.
        let backoff = rto::retry_backoff(f.retries, self.config.max_backoff, &mut self.rng);
        let wait = backoff.max(after.min(MAX_RETRY_AFTER));
        f.retry = true;
        f.backoff = wait;
        f.deadline = now + wait;
        self.timer = Some(self.timer.map_or(f.deadline, |t| t.min(f.deadline)));
        RetryOutcome::Scheduled { wait }
    }

    /// If `seq` is in flight, marks it storing (its row being written) and
    /// returns its delivery record.
    fn take_in_flight(&mut self, seq: Seq) -> Option<InFlight> {
        let entry = self.entries.get_mut(&seq)?;
        let Entry::InFlight(f) = *entry else {
            return None;
        };
        *entry = Entry::Storing;
        self.unacked.remove(&seq);
        self.suspects.resolved(seq);
        if self.unacked.is_empty() {
            self.timer = None;
        }
        Some(f)
    }

    /// Results (or dead entries) for `seqs` are durable. Returns true when
    /// the floor moved.
    pub fn on_stored(&mut self, seqs: impl IntoIterator<Item = Seq>) -> bool {
        for seq in seqs {
            if let Some(entry) = self.entries.get_mut(&seq)
                && *entry == Entry::Storing
            {
                *entry = Entry::Resolved;
            }
        }
        self.advance_floor()
    }

    /// Earliest retransmit deadline, if a timer should run.
    /// It may be early (see `timer`), never late.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.link == Link::Absent {
            return None;
        }
        self.timer
    }

    /// Fires due timers: retransmits, and parks an event that blocks the
    /// floor and timed out `max_deliver` times while the processor ran.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        if self.link == Link::Absent {
            return Vec::new();
        }
        let lowest_in_flight = self.unacked.first().copied();
        let mut actions = Vec::new();
        let mut timer: Option<Instant> = None;
        for (seq, entry) in self.entries.iter_mut() {
            let Entry::InFlight(f) = entry else { continue };
            if f.held {
                continue; // not sent on this stream yet: no timer runs
            }
            if f.deadline > now {
                timer = Some(timer.map_or(f.deadline, |t| t.min(f.deadline)));
                continue;
            }
            if f.retry {
                // The wait the processor asked for is over: send it again
                // (the processor holds its lane until it comes), with a
                // fresh ack timeout.
                f.retry = false;
                f.attempt += 1;
                f.last_sent = now;
                f.backoff = self
                    .rto
                    .backoff(f.waits + 1, self.config.max_backoff, &mut self.rng);
                f.deadline = now + f.backoff;
                timer = Some(timer.map_or(f.deadline, |t| t.min(f.deadline)));
                actions.push(Action::Send {
                    seq: *seq,
                    attempt: f.attempt,
                });
                continue;
            }
            // Only the lowest in-flight event is sure not to be waiting for
            // another one: every lower seq is storing or resolved, so under either ordering
            // the processor can start it as soon as it has it. The others
            // may wait behind it (global order) or behind an earlier event
            // of their key, through no fault of their own.
            if self.link == Link::Running && Some(*seq) == lowest_in_flight {
                f.timeouts += 1;
            }
            if self.config.max_deliver > 0 && f.timeouts + f.retries >= self.config.max_deliver {
                let reason = match f.retries {
                    0 => format!("no ack after {} timeouts", f.timeouts),
                    n => format!(
                        "no ack after {} timeouts and {n} retry-later requests",
                        f.timeouts
                    ),
                };
                actions.push(Action::Park {
                    seq: *seq,
                    attempts: f.attempt,
                    reason,
                });
                *entry = Entry::Storing;
                self.unacked.remove(seq);
                self.suspects.resolved(*seq);
                continue;
            }
            // The backoff grows either way, so timeouts are counted at the
            // same pace whether or not a copy is sent.
            f.waits += 1;
            f.backoff = self
                .rto
                .backoff(f.waits + 1, self.config.max_backoff, &mut self.rng);
            f.deadline = now + f.backoff;
            timer = Some(timer.map_or(f.deadline, |t| t.min(f.deadline)));
            if f.granted() {
                continue; // never a second copy: it waits for its ack
            }
            // The processor has it: waiting behind its key or running. A
            // paused processor gets copies all the same (they are dropped
            // as duplicates): pausing is how an operator watches the
            // timers, retransmits and duplicate drops work.
            // (An event waiting for a new copy after asking to retry later
            // is in `awaiting`: the processor no longer holds it.)
            if self.progress.holds(*seq) && self.link == Link::Running {
                continue;
            }
            f.attempt += 1;
            f.last_sent = now;
            actions.push(Action::Retransmit {
                seq: *seq,
                attempt: f.attempt,
                backoff: f.backoff,
            });
        }
        self.timer = timer;
        actions.extend(self.release_held(now)); // after a park
        actions
    }

    fn advance_floor(&mut self) -> bool {
        let before = self.acked_floor;
        while let Some(entry) = self.entries.first_entry() {
            if !entry.get().passed() {
                break;
            }
            entry.remove();
            self.acked_floor += 1;
        }
        if self.entries.is_empty() {
            self.skip_resolved();
        }
        self.acked_floor != before
    }

    /// With nothing in flight, moves floor and `next_to_send` over seqs
    /// already resolved.
    fn skip_resolved(&mut self) {
        while self.entries.is_empty() && self.resolved_ahead.remove(&self.acked_floor) {
            self.acked_floor += 1;
            self.next_to_send = self.acked_floor;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SenderConfig {
        SenderConfig {
            window: 4,
            max_deliver: 3,
            rto_initial: Duration::from_millis(100),
            rto_min: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_crashes: 2,
        }
    }

    fn sender() -> Sender {
        Sender::new(cfg(), DeliveryCursor::default(), 1)
    }

    fn processed(below: Seq) -> Progress {
        Progress {
            processed_below: below,
            received_below: below,
            awaiting: Vec::new(),
        }
    }

    #[test]
    fn window_bounds_sends_and_floor_moves_on_store_only() {
        let t0 = Instant::now();
        let mut s = sender();
        assert!(!s.can_send(), "absent processor");
        s.on_connect(t0, 256, false, false, false);
        for seq in 1..=4 {
            assert!(s.can_send());
            assert_eq!(s.on_offer(seq, Guarantee::AtLeastOnce, t0), Offer::Send);
        }
        assert!(!s.can_send(), "4 in flight");
        assert_eq!(s.on_ack(2), AckOutcome::Accepted { attempts: 1 });
        assert_eq!(s.on_ack(2), AckOutcome::Duplicate);
        assert!(!s.on_stored([2]), "seq 1 still blocks the floor");
        assert_eq!(s.on_ack(1), AckOutcome::Accepted { attempts: 1 });
        assert_eq!(s.acked_floor(), 1, "acked but not stored");
        assert_eq!(s.lowest_unacked(), 3);
        assert!(s.can_send(), "acks open the window before the store");
        for seq in 5..=6 {
            assert_eq!(s.on_offer(seq, Guarantee::AtLeastOnce, t0), Offer::Send);
        }
        assert!(!s.can_send(), "3..=6 in flight");
        for seq in 3..=6 {
            s.on_ack(seq);
        }
        for seq in 7..=8 {
            assert_eq!(s.on_offer(seq, Guarantee::AtLeastOnce, t0), Offer::Send);
        }
        assert_eq!(s.window_used(), 2);
        assert!(
            !s.can_send(),
            "nothing stored: the second bound, floor + 2W, is reached"
        );
        assert!(s.on_stored([1]));
        assert_eq!(s.acked_floor(), 3);
        assert!(s.can_send());
        assert_eq!(s.span(), 6);
    }

    #[test]
    fn after_names_the_highest_seq_below_that_may_still_come() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        for seq in 1..=4 {
            s.on_offer(seq, Guarantee::AtLeastOnce, t0);
        }
        assert_eq!(s.after(1), 0, "nothing below the first seq");
        assert_eq!(s.after(4), 3);
        // Seqs 2 and 3 resolved: the processor may pass over them.
        for seq in [2, 3] {
            s.on_ack(seq);
        }
        assert_eq!(s.after(4), 3, "seq 3 is being stored, not resolved");
        s.on_stored([2, 3]);
        assert_eq!(s.after(4), 1);
        s.on_ack(1);
        s.on_stored([1]);
        assert_eq!(s.acked_floor(), 4);
        assert_eq!(s.after(4), 0, "nothing below may still come");
    }

    #[test]
    fn another_stream_s_seqs_are_passed_over_and_taken_over_below_the_floor() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        assert_eq!(s.on_offer(1, Guarantee::AtLeastOnce, t0), Offer::Send);
        for seq in 2..=3 {
            assert_eq!(s.on_offer_elsewhere(seq), Offer::Skip);
        }
        assert_eq!(s.on_offer_elsewhere(5), Offer::OutOfOrder);
        assert_eq!(s.on_offer(4, Guarantee::AtLeastOnce, t0), Offer::Send);
        assert_eq!(s.window_used(), 2, "the others' seqs take no room");
        assert_eq!(s.after(4), 1, "seqs 2 and 3 are passed over");
        s.on_ack(1);
        s.on_stored([1]);
        assert_eq!(s.acked_floor(), 4, "past seq 1 and the others' 2 and 3");
        assert_eq!(s.take_over(handover(4, 1), t0), None, "its own");
        assert_eq!(s.take_over(handover(5, 1), t0), None, "never offered here");
        assert_eq!(
            s.resolved_above(0),
            Vec::<Seq>::new(),
            "2 and 3 are not resolved"
        );
        // The stream that had seq 2 ended: seq 2 comes here, below the floor.
        assert_eq!(
            s.take_over(handover(2, 2), t0),
            Some(Action::Send { seq: 2, attempt: 3 })
        );
        assert_eq!(s.acked_floor(), 2);
        assert_eq!(s.after(4), 2);
        assert_eq!(s.window_used(), 2);
        assert_eq!(s.on_ack(2), AckOutcome::Accepted { attempts: 3 });
        assert_eq!(s.on_ack(3), AckOutcome::Duplicate, "seq 3 is not here");
        s.on_stored([2]);
        assert_eq!(s.acked_floor(), 4, "seq 3 is still passed over");
    }

    fn handover(seq: Seq, attempts: u32) -> Handover {
        Handover {
            seq,
            attempts,
            at_most_once: false,
            crashes: 0,
        }
    }

    #[test]
    fn an_ended_stream_hands_over_what_cannot_have_run_twice_and_counts_a_lone_crash() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, true);
        assert_eq!(s.on_offer(1, Guarantee::AtLeastOnce, t0), Offer::Send);
        assert_eq!(s.on_offer(2, Guarantee::AtMostOnce, t0), Offer::Send);
        assert_eq!(s.on_offer(3, Guarantee::AtLeastOnce, t0), Offer::Send);
        assert_eq!(s.on_offer(4, Guarantee::AtMostOnce, t0), Offer::Send);
        assert_eq!(s.on_offer_elsewhere(5), Offer::Skip);
        s.on_ack(1);
        // Seq 4 is claimed and granted: it may have run.
        assert_eq!(s.on_claims([4]).mark, vec![4]);
        assert_eq!(s.on_marked([4], t0), vec![Action::Permit { seq: 4 }]);
        let ended = s.end(true);
        assert_eq!(ended.storing, vec![1]);
        assert_eq!(
            ended.handover,
            vec![
                Handover {
                    seq: 2,
                    attempts: 1,
                    at_most_once: true,
                    crashes: 0
                },
                handover(3, 1),
            ],
            "three sent copies were in flight: nobody is blamed"
        );
        assert!(
            matches!(ended.abandon[..], [Action::Abandon { seq: 4, .. }]),
            "{:?}",
            ended.abandon
        );

        // Alone in flight at a crash: one crash, which travels with it and
        // parks it at `max_crashes` (2) on the stream that takes it over.
        let mut a = sender();
        a.on_connect(t0, 256, false, false, false);
        a.on_offer(1, Guarantee::AtLeastOnce, t0);
        let lone = a.end(true).handover[0];
        assert_eq!(lone.crashes, 1);
        let mut b = sender();
        b.on_connect(t0, 256, false, false, false);
        assert_eq!(b.on_offer_elsewhere(1), Offer::Skip);
        assert_eq!(
            b.take_over(lone, t0),
            Some(Action::Send { seq: 1, attempt: 2 })
        );
        let again = b.end(true).handover[0];
        assert_eq!(again.crashes, 2);
        let mut c = sender();
        c.on_connect(t0, 256, false, false, false);
        c.on_offer_elsewhere(1);
        assert!(matches!(
            c.take_over(again, t0),
            Some(Action::Park { seq: 1, .. })
        ));
        c.on_stored([1]);
        assert_eq!(c.acked_floor(), 2);
    }

    #[test]
    fn an_at_most_once_event_taken_over_is_claimed_again_or_marked_first() {
        let t0 = Instant::now();
        let once = Handover {
            at_most_once: true,
            ..handover(1, 1)
        };
        let mut claiming = sender();
        claiming.on_connect(t0, 256, false, false, true);
        claiming.on_offer_elsewhere(1);
        assert_eq!(
            claiming.take_over(once, t0),
            Some(Action::Send { seq: 1, attempt: 2 })
        );
        assert!(claiming.needs_claim(1));
        let mut plain = sender();
        plain.on_connect(t0, 256, false, false, false);
        plain.on_offer_elsewhere(1);
        assert_eq!(plain.take_over(once, t0), Some(Action::Mark { seq: 1 }));
        assert_eq!(
            plain.on_marked([1], t0),
            vec![Action::Send { seq: 1, attempt: 1 }]
        );
    }

    /// A processor that had passed over an at-most-once event (another
    /// processor's key) reported everything below 5 processed; the key
    /// then moved to it with the event. Neither that old report nor one
    /// sent before the copy arrived may abandon the event as "processed,
    /// result lost": it runs, and its ack is taken.
    #[test]
    fn an_at_most_once_event_handed_over_below_what_was_processed_is_not_abandoned() {
        let t0 = Instant::now();
        let once = Handover {
            at_most_once: true,
            ..handover(1, 1)
        };
        let abandons = |actions: &[Action]| {
            actions
                .iter()
                .filter(|a| matches!(a, Action::Abandon { .. }))
                .count()
        };
        for claims in [true, false] {
            let mut s = sender();
            s.on_connect(t0, 256, false, false, claims);
            s.on_offer_elsewhere(1);
            for seq in 2..=4 {
                s.on_offer(seq, Guarantee::AtLeastOnce, t0);
                assert_eq!(s.on_ack(seq), AckOutcome::Accepted { attempts: 1 });
            }
            assert!(s.on_progress(t0, processed(5)).is_empty());
            s.on_stored([2, 3, 4]);
            let t1 = t0 + Duration::from_millis(10);
            if claims {
                assert_eq!(
                    s.take_over(once, t1),
                    Some(Action::Send { seq: 1, attempt: 2 })
                );
                // A report sent before the copy arrived: still passed over.
                assert_eq!(abandons(&s.on_progress(t1, processed(5))), 0);
                assert_eq!(s.on_claims([1]).mark, vec![1]);
                assert_eq!(s.on_marked([1], t1), vec![Action::Permit { seq: 1 }]);
            } else {
                assert_eq!(s.take_over(once, t1), Some(Action::Mark { seq: 1 }));
                assert_eq!(
                    s.on_marked([1], t1),
                    vec![Action::Send { seq: 1, attempt: 1 }]
                );
                let soon = t1 + Duration::from_millis(1);
                assert_eq!(
                    abandons(&s.on_progress(soon, processed(5))),
                    0,
                    "a report sent before the granted copy arrived"
                );
            }
            // It runs: the processor's reports now count it unfinished.
            let later = t1 + Duration::from_secs(5);
            assert_eq!(
                abandons(&s.on_progress(later, processed(1))),
                0,
                "claims: {claims}"
            );
            let attempts = if claims { 2 } else { 1 };
            assert_eq!(s.on_ack(1), AckOutcome::Accepted { attempts });
        }
    }

    #[test]
    fn retransmits_with_growing_backoff_and_parks_the_blocker() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        s.on_offer(1, Guarantee::AtLeastOnce, t0);
        s.on_offer(2, Guarantee::AtLeastOnce, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        let mut parked = None;
        for _ in 0..10 {
            now = s.next_deadline().unwrap();
            for action in s.on_tick(now) {
                match action {
                    Action::Retransmit {
                        seq: 1, backoff, ..
                    } => waits.push(backoff),
                    Action::Park { seq, .. } => parked = Some(seq),
                    _ => {}
                }
            }
            if parked.is_some() {
                break;
            }
        }
        assert_eq!(parked, Some(1));
        assert!(waits.windows(2).all(|w| w[1] > w[0]), "{waits:?}");
        // Seq 2 was not the blocker: it never counted a timeout.
        assert!(matches!(s.entries.get(&2), Some(Entry::InFlight(f)) if f.timeouts == 0));
        let _ = now;
    }

    #[test]
    fn the_retry_backoff_grows_with_requests_not_with_deadlines_passed_waiting() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        s.on_offer(1, Guarantee::AtLeastOnce, t0);
        s.on_offer(2, Guarantee::AtLeastOnce, t0);
        // Seq 2 waits behind seq 1 at the processor while many of its
        // deadlines pass (seq 1 holds the floor and counts the timeouts).
        let mut now = t0;
        for _ in 0..2 {
            now += Duration::from_secs(3);
            s.on_tick(now);
        }
        let Some(Entry::InFlight(f)) = s.entries.get(&2) else {
            panic!("in flight");
        };
        assert_eq!(f.waits, 2, "{f:?}");
        // Then it runs and asks to be retried without a wait: a few
        // milliseconds, not the RTO (100 ms here) nor the 400 ms its passed
        // deadlines would give.
        let RetryOutcome::Scheduled { wait } = s.on_retry(2, Duration::ZERO, "busy", now) else {
            panic!("scheduled expected");
        };
        assert!(wait <= Duration::from_millis(6), "{wait:?}");
        // Sent again at that wait; asking again waits longer (×2 ±20 %).
        now += wait;
        assert_eq!(
            sent(&s.on_tick(now)),
            vec![2],
            "the copy goes at the wait asked"
        );
        let RetryOutcome::Scheduled { wait: second } = s.on_retry(2, Duration::ZERO, "busy", now)
        else {
            panic!("scheduled expected");
        };
        assert!(
            second > wait && second <= Duration::from_millis(12),
            "{second:?}"
        );
    }

    #[test]
    fn round_trips_come_from_heartbeat_echoes_not_from_acks() {
        let t0 = Instant::now();
        let mut s = sender(); // RTO 100 ms before any sample
        assert_eq!(s.probe(t0), None, "no processor: no probe");
        s.on_connect(t0, 256, false, false, false);
        s.on_offer(1, Guarantee::AtLeastOnce, t0);
        // Seq 1 waited 20 s behind its key: its ack is no round trip.
        s.on_ack(1);
        assert_eq!(s.rto().srtt(), None);
        let probe = s.probe(t0).expect("a probe");
        assert_eq!(s.probe(t0), None, "one probe at a time");
        assert_eq!(s.on_echo(probe ^ 1, t0), None, "not ours");
        let t1 = t0 + Duration::from_millis(3);
        assert_eq!(s.on_echo(probe, t1), Some(Duration::from_millis(3)));
        assert_eq!(s.rto().srtt(), Some(Duration::from_millis(3)));
        assert_eq!(s.on_echo(probe, t1), None, "answered already");
        // An echo that never comes (a processor that predates them) does
        // not stop the probes for good.
        let lost = s.probe(t1).expect("a probe");
        assert_eq!(s.probe(t1 + PROBE_GIVE_UP / 2), None);
        let next = s.probe(t1 + PROBE_GIVE_UP).expect("another probe");
        assert_ne!(lost, next);
        // A new stream forgets the probe in flight on the old one.
        s.on_disconnect();
        s.on_connect(t1, 256, false, false, false);
        assert!(s.probe(t1).is_some());
    }

    #[test]
    fn only_what_the_processor_awaits_or_never_got_is_sent_on_a_timeout() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        for seq in 1..=4 {
            s.on_offer(seq, Guarantee::AtLeastOnce, t0);
        }
        // Seq 2 asked to retry later and that request was lost; seqs 1 and
        // 3 are held (waiting or running); seq 4 never arrived.
        let progress = Progress {
            processed_below: 1,
            received_below: 4,
            awaiting: vec![2],
        };
        assert!(s.on_progress(t0, progress).is_empty());
        let now = s.next_deadline().unwrap();
        let mut again: Vec<Seq> = s
            .on_tick(now)
            .iter()
            .filter_map(|a| match a {
                Action::Retransmit { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        again.sort_unstable();
        assert_eq!(again, vec![2, 4]);
    }

    #[test]
    fn retry_later_waits_the_longer_wait_then_parks_at_max_deliver() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        s.on_offer(1, Guarantee::AtLeastOnce, t0);
        s.on_offer(2, Guarantee::AtLeastOnce, t0);
        // The processor has both; seq 1 asks to be retried in 10 s, far
        // longer than the backoff.
        s.on_progress(t0, processed(1));
        let RetryOutcome::Scheduled { wait } = s.on_retry(1, Duration::from_secs(10), "busy", t0)
        else {
            panic!("scheduled expected");
        };
        assert_eq!(
            wait,
            Duration::from_secs(10),
            "the longer of backoff and the wait asked"
        );
        assert_eq!(
            s.on_retry(1, Duration::ZERO, "busy", t0),
            RetryOutcome::Ignored,
            "already waiting"
        );
        assert_eq!(s.lowest_unacked(), 1, "still in flight: it holds the floor");
        // Seq 2's deadline passes first; seq 1 is not due.
        let early = t0 + Duration::from_secs(5);
        assert!(s.on_tick(early).iter().all(|a| !matches!(
            a,
            Action::Send { seq: 1, .. } | Action::Retransmit { seq: 1, .. }
        )));
        // At 10 s it is sent again although the processor has received it,
        // as a plain send (not a retransmit), with no timeout counted.
        let due = t0 + wait;
        let actions = s.on_tick(due);
        assert!(
            actions.contains(&Action::Send { seq: 1, attempt: 2 }),
            "{actions:?}"
        );
        assert!(
            matches!(s.entries.get(&1), Some(Entry::InFlight(f)) if f.timeouts == 0 && f.retries == 1 && !f.retry)
        );
        // That copy is lost: the processor still waits for one (it says so
        // in `awaiting`), so the ack timeout sends another.
        let awaiting = Progress {
            processed_below: 1,
            received_below: 3,
            awaiting: vec![1],
        };
        assert!(s.on_progress(due, awaiting).is_empty());
        let mut now = due;
        let resent = (0..10).any(|_| {
            now = s.next_deadline().unwrap();
            s.on_tick(now)
                .iter()
                .any(|a| matches!(a, Action::Retransmit { seq: 1, .. }))
        });
        assert!(resent, "seq 1 is sent again after its ack timeout");
        // Retry requests count with the timeouts towards max_deliver (3):
        // one timeout, one request so far, the next request parks.
        match s.on_retry(1, Duration::ZERO, "still busy", now) {
            RetryOutcome::End(Action::Park { seq: 1, reason, .. }) => {
                assert!(
                    reason.contains("still busy") && reason.contains("retry later asked 2 times"),
                    "{reason}"
                );
            }
            other => panic!("park expected, got {other:?}"),
        }
        assert_eq!(
            s.on_retry(1, Duration::ZERO, "late", now),
            RetryOutcome::Ignored
        );
    }

    #[test]
    fn an_event_waiting_to_be_retried_is_no_crash_suspect() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        s.on_offer(1, Guarantee::AtLeastOnce, t0);
        s.on_offer(2, Guarantee::AtLeastOnce, t0);
        s.on_retry(1, Duration::from_secs(60), "later", t0);
        s.on_disconnect();
        // A new life: only seq 2 was being processed when the stream ended;
        // both are sent again at once (a new session does not keep the wait).
        let actions = s.on_connect(t0, 256, false, true, false);
        assert_eq!(s.suspects(), 1);
        assert_eq!(
            actions,
            vec![
                Action::Send { seq: 1, attempt: 2 },
                Action::Send { seq: 2, attempt: 2 }
            ],
            "the first round: all at once"
        );
    }

    #[test]
    fn a_lost_ack_is_retransmitted_when_a_later_ack_arrives() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        for seq in 1..=3 {
            s.on_offer(seq, Guarantee::AtLeastOnce, t0);
        }
        // The ack of seq 1 was lost; the ack of seq 2 arrives, saying every
        // seq below 3 was processed.
        s.on_ack(2);
        let t1 = t0 + Duration::from_millis(100);
        assert!(
            s.on_progress(t1, processed(1)).is_empty(),
            "seq 1 still running (keyed order): not a lost ack"
        );
        let mut young = sender();
        young.on_connect(t0, 256, false, false, false);
        young.on_offer(1, Guarantee::AtLeastOnce, t0);
        assert!(
            young
                .on_progress(t0 + Duration::from_millis(10), processed(2))
                .is_empty(),
            "a copy younger than the RTO (100 ms) may still be on its way"
        );
        assert_eq!(
            s.on_progress(t1, processed(3)),
            vec![Action::Retransmit {
                seq: 1,
                attempt: 2,
                backoff: Duration::from_millis(100)
            }]
        );
        assert!(
            s.on_progress(t1, processed(3)).is_empty(),
            "once per RTO, not once per ack"
        );
        // Seq 3 is above every ack: it is not resent.
        let Some(Entry::InFlight(f)) = s.entries.get(&3) else {
            panic!("seq 3 in flight")
        };
        assert_eq!(f.attempt, 1);
        // The retransmit earns the cached ack; no timeout was counted.
        assert_eq!(s.on_ack(1), AckOutcome::Accepted { attempts: 2 });
    }

    #[test]
    fn what_the_processor_has_is_not_sent_again_but_still_times_out() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        for seq in 1..=3 {
            s.on_offer(seq, Guarantee::AtLeastOnce, t0);
        }
        // Seqs 1 and 2 arrived (seq 1 is running, seq 2 waits behind it);
        // seq 3 was lost.
        let progress = Progress {
            processed_below: 1,
            received_below: 3,
            awaiting: Vec::new(),
        };
        assert!(s.on_progress(t0, progress).is_empty());
        let mut parked = None;
        while parked.is_none() {
            let now = s.next_deadline().unwrap();
            for action in s.on_tick(now) {
                match action {
                    Action::Retransmit { seq, .. } => assert_eq!(seq, 3, "only the lost one"),
                    Action::Park { seq, .. } => parked = Some(seq),
                    Action::Send { .. }
                    | Action::Abandon { .. }
                    | Action::Mark { .. }
                    | Action::Permit { .. } => {
                        panic!("no sends, abandons or marks on a tick: {action:?}")
                    }
                }
            }
        }
        assert_eq!(
            parked,
            Some(1),
            "a running event that never finishes is still parked after max_deliver timeouts"
        );
        let Some(Entry::InFlight(f)) = s.entries.get(&2) else {
            panic!("seq 2 still in flight")
        };
        assert_eq!(f.attempt, 1, "seq 2 was never sent again");
    }

    #[test]
    fn a_poison_event_is_isolated_and_parked_and_innocents_are_not() {
        let t0 = Instant::now();
        let mut s = sender(); // max_crashes 2
        s.on_connect(t0, 256, false, true, false);
        for seq in 1..=3 {
            s.on_offer(seq, Guarantee::AtLeastOnce, t0);
        }
        // Seq 2 crashes the processor with seqs 1..=3 in flight: nobody is
        // blamed, all three are suspects, sent again at once.
        s.on_disconnect();
        assert_eq!(
            sent(&s.on_connect(t0, 256, false, true, false)),
            vec![1, 2, 3],
            "the first round: all at once"
        );
        assert_eq!(s.suspects(), 3);
        assert!(s.can_send(), "new events go as usual");
        // It crashes again with the three in flight: batches of 1 (half of
        // 3), lowest first, and nothing new meanwhile.
        s.on_disconnect();
        assert_eq!(
            s.on_connect(t0, 256, false, true, false),
            vec![Action::Send { seq: 1, attempt: 3 }]
        );
        assert!(!s.can_send(), "nothing new while narrowing");
        s.on_ack(1);
        assert_eq!(
            s.on_progress(t0, processed(2)),
            vec![Action::Send { seq: 2, attempt: 3 }]
        );
        // Seq 2 alone crashes it: one crash.
        s.on_disconnect();
        assert_eq!(
            s.on_connect(t0, 256, false, true, false),
            vec![Action::Send { seq: 2, attempt: 4 }]
        );
        // The same life reconnects (a network cut): not a crash.
        s.on_disconnect();
        assert_eq!(
            s.on_connect(t0, 256, false, false, false),
            vec![Action::Send { seq: 2, attempt: 5 }]
        );
        // The second crash alone parks it; seq 3 goes next, alone.
        s.on_disconnect();
        let actions = s.on_connect(t0, 256, false, true, false);
        assert!(
            matches!(&actions[0], Action::Park { seq: 2, reason, .. } if reason.starts_with("crashed the processor")),
            "{actions:?}"
        );
        assert_eq!(actions[1..], [Action::Send { seq: 3, attempt: 3 }]);
        assert!(!s.can_send());
        s.on_ack(3);
        s.on_progress(t0, processed(4));
        assert_eq!(s.suspects(), 0);
        assert!(s.can_send(), "the window opens again");
    }

    fn wide() -> SenderConfig {
        SenderConfig {
            window: 2048,
            max_crashes: 3,
            ..cfg()
        }
    }

    #[test]
    fn a_kill_with_1024_in_flight_resends_them_all_at_once_and_new_events_go() {
        let t0 = Instant::now();
        let mut s = Sender::new(wide(), DeliveryCursor::default(), 1);
        s.on_connect(t0, 2048, false, false, false);
        for seq in 1..=1024 {
            assert_eq!(s.on_offer(seq, Guarantee::AtLeastOnce, t0), Offer::Send);
        }
        s.on_disconnect();
        let actions = s.on_connect(t0, 2048, false, true, false);
        assert_eq!(sent(&actions), (1..=1024).collect::<Vec<_>>());
        assert_eq!(s.suspects(), 1024);
        assert_eq!(s.window(), 2048, "the full window");
        assert!(s.can_send());
        assert_eq!(s.on_offer(1025, Guarantee::AtLeastOnce, t0), Offer::Send);
        for seq in 1..=1025 {
            s.on_ack(seq);
        }
        assert!(s.on_progress(t0, processed(1026)).is_empty());
        assert_eq!(s.suspects(), 0);
    }

    #[test]
    fn the_same_life_reconnecting_after_a_kill_counts_nothing() {
        let t0 = Instant::now();
        let mut s = Sender::new(wide(), DeliveryCursor::default(), 1);
        s.on_connect(t0, 2048, false, false, false);
        s.on_offer(1, Guarantee::AtLeastOnce, t0);
        for _ in 0..5 {
            s.on_disconnect();
            assert_eq!(
                sent(&s.on_connect(t0, 2048, false, false, false)),
                vec![1],
                "a network cut: sent again, nothing more"
            );
        }
        assert_eq!(s.suspects(), 0, "no life ended");
        assert!(s.can_send());
        // One life end makes it a suspect; cuts of that life change nothing.
        s.on_disconnect();
        s.on_connect(t0, 2048, false, true, false);
        for _ in 0..5 {
            s.on_disconnect();
            assert_eq!(sent(&s.on_connect(t0, 2048, false, false, false)), vec![1]);
        }
        assert_eq!(s.suspects(), 1);
        assert_eq!(s.suspects.crashes(1), 1, "the one life end only");
        assert!(s.can_send(), "still the first round");
    }

    /// A processor that dies whenever `poison` is in flight, with 1,024
    /// events in flight at the first end; new events are published all
    /// along. Returns the life ends after that first one until the poison
    /// is parked.
    fn bisect(poison: Seq) -> u32 {
        let t0 = Instant::now();
        let mut s = Sender::new(wide(), DeliveryCursor::default(), 1);
        s.on_connect(t0, 1024, false, false, false);
        let mut next = 1;
        let mut in_flight = BTreeSet::new();
        while s.can_send() {
            assert_eq!(s.on_offer(next, Guarantee::AtLeastOnce, t0), Offer::Send);
            in_flight.insert(next);
            next += 1;
        }
        assert_eq!(in_flight.len(), 1024);
        assert!(in_flight.contains(&poison));
        let mut ends = 0;
        let mut parked = false;
        while !parked {
            if in_flight.contains(&poison) {
                // It dies.
                s.on_disconnect();
                let actions = s.on_connect(t0, 1024, false, true, false);
                ends += 1;
                in_flight.clear();
                for action in actions {
                    match action {
                        Action::Send { seq, .. } => {
                            in_flight.insert(seq);
                        }
                        Action::Park { seq, reason, .. } => {
                            assert_eq!(seq, poison, "innocent seq {seq} parked: {reason}");
                            parked = true;
                        }
                        other => panic!("{other:?}"),
                    }
                }
                assert!(ends <= 64, "no end in sight");
                continue;
            }
            // It processes all it has, in seq order, and acks it.
            for seq in std::mem::take(&mut in_flight) {
                assert_eq!(s.suspects.crashes(seq), 0, "innocent seq {seq} counted");
                assert!(
                    matches!(s.entries.get(&seq), Some(Entry::InFlight(_))),
                    "seq {seq} not in flight"
                );
                assert!(matches!(s.on_ack(seq), AckOutcome::Accepted { .. }));
                s.on_stored([seq]);
            }
            let below = s.lowest_unacked();
            in_flight.extend(sent(&s.on_progress(t0, processed(below))));
            while s.can_send() && next <= 4096 {
                s.on_offer(next, Guarantee::AtLeastOnce, t0);
                in_flight.insert(next);
                next += 1;
            }
            assert!(!in_flight.is_empty(), "stalled: {s:?}");
        }
        ends - 1
    }

    #[test]
    fn a_poison_among_1024_is_parked_after_log2_plus_max_crashes_life_ends() {
        for poison in [1, 2, 100, 512, 513, 777, 1023, 1024] {
            let ends = bisect(poison);
            // ceil(log2 1024) + max_crashes, after the end that made the
            // 1,024 suspects.
            assert!(ends <= 10 + 3, "poison {poison}: {ends} life ends");
        }
    }

    #[test]
    fn paused_processor_is_never_given_up() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, true, false, false);
        s.on_offer(1, Guarantee::AtLeastOnce, t0);
        for _ in 0..50 {
            let now = s.next_deadline().unwrap();
            let actions = s.on_tick(now);
            assert!(
                actions
                    .iter()
                    .all(|a| matches!(a, Action::Retransmit { .. }))
            );
        }
        let Some(Entry::InFlight(f)) = s.entries.get(&1) else {
            panic!("still in flight")
        };
        assert!(f.backoff <= cfg().max_backoff);
    }

    #[test]
    fn reconnect_resends_in_flight_in_order_and_restart_skips_resolved() {
        let t0 = Instant::now();
        let mut s = Sender::new(
            cfg(),
            DeliveryCursor {
                acked_floor: 3,
                resolved_above: vec![3, 5],
                sent_above: vec![],
            },
            1,
        );
        assert_eq!(s.acked_floor(), 4);
        s.on_connect(t0, 256, false, false, false);
        assert_eq!(s.on_offer(4, Guarantee::AtLeastOnce, t0), Offer::Send);
        assert_eq!(s.on_offer(5, Guarantee::AtLeastOnce, t0), Offer::Skip);
        assert_eq!(s.on_offer(6, Guarantee::AtLeastOnce, t0), Offer::Send);
        s.on_disconnect();
        assert!(s.next_deadline().is_none());
        let resent = s.on_connect(t0, 256, false, false, false);
        assert_eq!(
            resent,
            vec![
                Action::Send { seq: 4, attempt: 2 },
                Action::Send { seq: 6, attempt: 2 }
            ]
        );
        s.on_ack(4);
        s.on_ack(6);
        s.on_stored([4, 6]);
        assert_eq!(s.acked_floor(), 7);
    }

    const ONCE: Guarantee = Guarantee::AtMostOnce;

    fn abandoned(actions: &[Action]) -> Vec<Seq> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Abandon { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    fn sent(actions: &[Action]) -> Vec<Seq> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { seq, .. } | Action::Retransmit { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn at_most_once_goes_out_only_after_its_mark_and_never_again() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        assert_eq!(s.on_offer(1, ONCE, t0), Offer::Mark);
        assert_eq!(s.on_ack(1), AckOutcome::Unknown, "not sent yet");
        assert!(
            s.on_tick(t0 + Duration::from_secs(5)).is_empty(),
            "no timer while marking"
        );
        assert_eq!(
            s.on_marked([1], t0),
            vec![Action::Send { seq: 1, attempt: 1 }]
        );
        assert!(
            s.on_marked([1], t0).is_empty(),
            "a mark reported twice sends nothing"
        );
        // Deadlines pass, the processor does not say it has it: still no copy.
        let mut now = t0;
        for _ in 0..2 {
            now += Duration::from_secs(3);
            assert!(sent(&s.on_tick(now)).is_empty());
        }
        let running = Progress {
            processed_below: 1,
            received_below: 2,
            awaiting: Vec::new(),
        };
        assert!(s.on_progress(now, running).is_empty());
        // Its ack is a result like any other.
        assert_eq!(s.on_ack(1), AckOutcome::Accepted { attempts: 1 });
        assert!(s.on_stored([1]));
        assert_eq!(s.acked_floor(), 2);
    }

    #[test]
    fn at_most_once_processed_without_its_ack_is_abandoned_not_sent_again() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        s.on_offer(1, ONCE, t0);
        s.on_offer(2, Guarantee::AtLeastOnce, t0);
        s.on_marked([1], t0);
        // Both processed, both acks lost: the at-least-once one goes again
        // to earn its cached ack; the at-most-once one is given up.
        let actions = s.on_progress(t0 + Duration::from_secs(1), processed(3));
        assert_eq!(sent(&actions), vec![2]);
        assert_eq!(abandoned(&actions), vec![1]);
        assert_eq!(s.on_ack(1), AckOutcome::Duplicate, "too late");
    }

    #[test]
    fn at_most_once_timeouts_still_park_it() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        s.on_offer(1, ONCE, t0);
        s.on_marked([1], t0);
        let mut now = t0;
        let mut parked = false;
        for _ in 0..10 {
            now += Duration::from_secs(3);
            let actions = s.on_tick(now);
            assert!(sent(&actions).is_empty(), "never a copy: {actions:?}");
            parked |= actions
                .iter()
                .any(|a| matches!(a, Action::Park { seq: 1, .. }));
        }
        assert!(parked, "--max-deliver applies to it as to any event");
    }

    #[test]
    fn at_most_once_is_abandoned_where_another_copy_would_go() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        for seq in 1..=3 {
            s.on_offer(seq, ONCE, t0);
        }
        s.on_offer(4, Guarantee::AtLeastOnce, t0);
        s.on_marked([1, 2], t0);
        // 1: retry later asked.
        match s.on_retry(1, Duration::ZERO, "busy", t0) {
            RetryOutcome::End(Action::Abandon { seq: 1, reason, .. }) => {
                assert!(reason.contains("busy"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // The stream ends with 2 sent, 3 still being marked, 4 sent.
        s.on_disconnect();
        let actions = s.on_connect(t0, 256, false, false, false);
        assert_eq!(
            abandoned(&actions),
            vec![2],
            "same life or not: never a second copy"
        );
        assert_eq!(sent(&actions), vec![4], "at least once goes again");
        // 3's mark arrives now: it goes out once, as attempt 1.
        assert_eq!(
            s.on_marked([3], t0),
            vec![Action::Send { seq: 3, attempt: 1 }]
        );
        assert!(s.on_stored([1, 2]));
        assert_eq!(s.acked_floor(), 3);
    }

    #[test]
    fn at_most_once_marked_while_no_stream_goes_out_on_the_next_one() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        s.on_offer(1, ONCE, t0);
        s.on_disconnect();
        assert!(s.on_marked([1], t0).is_empty(), "no stream");
        let actions = s.on_connect(t0, 256, false, true, false);
        assert_eq!(actions, vec![Action::Send { seq: 1, attempt: 1 }]);
        s.on_disconnect();
        let actions = s.on_connect(t0, 256, false, true, false);
        assert_eq!(abandoned(&actions), vec![1]);
        assert!(sent(&actions).is_empty());
    }

    #[test]
    fn at_most_once_marked_while_suspects_go_in_batches_waits_for_its_turn() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, false);
        s.on_offer(1, Guarantee::AtLeastOnce, t0);
        s.on_offer(2, Guarantee::AtLeastOnce, t0);
        assert_eq!(s.on_offer(3, ONCE, t0), Offer::Mark);
        // Two life ends with 1 and 2 in flight: batches of one.
        for _ in 0..2 {
            s.on_disconnect();
            s.on_connect(t0, 256, false, true, false);
        }
        assert_eq!(s.suspects(), 2);
        // Its mark becomes durable with seq 1 out alone: going out now, it
        // would be blamed with seq 1 for a crash, and abandoned.
        assert!(s.on_marked([3], t0).is_empty(), "held above the batch");
        s.on_ack(1);
        assert_eq!(sent(&s.on_progress(t0, processed(2))), vec![2]);
        s.on_ack(2);
        assert_eq!(
            s.on_progress(t0, processed(3)),
            vec![Action::Send { seq: 3, attempt: 1 }],
            "isolation over: its one copy goes"
        );
        assert!(s.can_send());
    }

    #[test]
    fn a_sent_mark_found_at_start_abandons_the_event_whatever_its_kind_is_now() {
        let t0 = Instant::now();
        let cursor = DeliveryCursor {
            acked_floor: 1,
            resolved_above: vec![],
            sent_above: vec![2],
        };
        let mut s = Sender::new(cfg(), cursor, 1);
        s.on_connect(t0, 256, false, true, false);
        assert_eq!(s.on_offer(1, Guarantee::AtLeastOnce, t0), Offer::Send);
        assert_eq!(s.on_offer(2, Guarantee::AtLeastOnce, t0), Offer::Abandon);
        assert_eq!(s.on_ack(2), AckOutcome::Duplicate);
        s.on_ack(1);
        assert!(s.on_stored([1, 2]));
        assert_eq!(s.acked_floor(), 3);
    }

    fn permits(actions: &[Action]) -> Vec<Seq> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Permit { seq } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_claimed_event_is_granted_once_its_mark_is_durable_and_never_again() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, true);
        assert_eq!(
            s.on_offer(1, ONCE, t0),
            Offer::Send,
            "out at once, to be claimed"
        );
        assert!(s.needs_claim(1));
        // Not granted: it cannot have run, so an ack or a retry request is
        // nobody's.
        assert_eq!(s.on_ack(1), AckOutcome::Unknown);
        assert_eq!(
            s.on_retry(1, Duration::ZERO, "busy", t0),
            RetryOutcome::Ignored
        );
        let claimed = s.on_claims([1]);
        assert_eq!(claimed.mark, vec![1]);
        assert!(
            s.on_claims([1]).mark.is_empty(),
            "a repeated claim is ignored"
        );
        assert_eq!(permits(&s.on_marked([1], t0)), vec![1]);
        assert!(!s.needs_claim(1));
        assert!(s.on_claims([1]) == Claimed::default(), "granted once only");
        assert!(permits(&s.on_marked([1], t0)).is_empty());
        assert_eq!(s.on_ack(1), AckOutcome::Accepted { attempts: 1 });
        assert_eq!(s.on_claims([1]).refused, vec![1], "resolved: skip it");
    }

    #[test]
    fn an_unclaimed_event_is_sent_again_after_a_crash_and_a_granted_one_is_abandoned() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, true);
        for seq in 1..=3 {
            s.on_offer(seq, ONCE, t0);
        }
        // 1 granted (it may have run), 2 claimed (its mark being stored),
        // 3 waiting behind its key (never claimed).
        s.on_claims([1, 2]);
        s.on_marked([1], t0);
        s.on_disconnect();
        // 2's mark lands after the stream ended: no permit on any stream.
        assert!(s.on_marked([2], t0).is_empty());
        let actions = s.on_connect(t0, 256, false, true, true);
        assert_eq!(abandoned(&actions), vec![1]);
        assert_eq!(sent(&actions), vec![2, 3], "never ran: sent again");
        assert_eq!(s.suspects(), 0, "and no crash suspects: they never ran");
        assert!(s.needs_claim(2) && s.needs_claim(3));
        // The new life claims 2: granted once more is impossible, granted
        // for the first time it is.
        s.on_claims([2]);
        assert_eq!(permits(&s.on_marked([2], t0)), vec![2]);
    }

    #[test]
    fn an_unclaimed_event_is_marked_before_it_goes_to_a_processor_that_does_not_claim() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, true);
        s.on_offer(1, ONCE, t0);
        s.on_disconnect();
        let actions = s.on_connect(t0, 256, false, true, false);
        assert_eq!(actions, vec![Action::Mark { seq: 1 }]);
        assert_eq!(
            s.on_marked([1], t0),
            vec![Action::Send { seq: 1, attempt: 1 }],
            "its only copy, granted"
        );
        assert!(!s.needs_claim(1));
        assert_eq!(
            s.on_offer(2, ONCE, t0),
            Offer::Mark,
            "and so is every new one"
        );
    }

    #[test]
    fn an_unclaimed_event_the_processor_lacks_is_sent_again_on_a_timeout() {
        let t0 = Instant::now();
        let mut s = sender();
        s.on_connect(t0, 256, false, false, true);
        s.on_offer(1, ONCE, t0);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(sent(&s.on_tick(later)), vec![1], "its copy was lost");
        s.on_progress(
            later,
            Progress {
                processed_below: 0,
                received_below: 2,
                awaiting: vec![],
            },
        );
        let later = later + Duration::from_secs(10);
        assert!(sent(&s.on_tick(later)).is_empty(), "the processor has it");
        // Granted, it never goes again.
        s.on_claims([1]);
        s.on_marked([1], later);
        s.on_progress(later, Progress::default());
        assert!(sent(&s.on_tick(later + Duration::from_secs(60))).is_empty());
    }

    #[test]
    fn slow_events_low_in_the_window_hold_only_their_own_places() {
        let t0 = Instant::now();
        let mut s = Sender::new(
            SenderConfig { window: 4, ..cfg() },
            DeliveryCursor::default(),
            1,
        );
        s.on_connect(t0, 4, false, false, false);
        for seq in 1..=4 {
            assert_eq!(s.on_offer(seq, Guarantee::AtLeastOnce, t0), Offer::Send);
        }
        assert!(!s.can_send(), "four in flight");
        // Seq 1 is slow; the others are acked (their results being stored).
        for seq in 2..=4 {
            s.on_ack(seq);
        }
        assert_eq!(s.window_used(), 1);
        for seq in 5..=7 {
            assert!(s.can_send());
            s.on_offer(seq, Guarantee::AtLeastOnce, t0);
        }
        assert!(!s.can_send(), "four in flight again");
        for seq in 5..=7 {
            s.on_ack(seq);
        }
        // The second bound: nothing at or beyond floor + 2 × window.
        s.on_offer(8, Guarantee::AtLeastOnce, t0);
        assert_eq!((s.window_used(), s.span()), (2, 8));
        assert!(!s.can_send(), "seq 9 is two windows above the floor");
    }
}
