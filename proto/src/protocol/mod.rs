//! The delivery protocol, both sides, without I/O: the state machines core
//! and the processor run, and the types they share. Nothing here touches a
//! clock, a socket, a runtime or a store; every call carries the time it
//! needs, so the property test (`proto/tests/protocol.rs`) drives both sides
//! through any schedule of losses, delays, crashes and restarts.
//!
//! * Core's side: [`sender::Sender`] (what to send, retransmit, park or
//!   abandon, and how far the floor moves), with [`rto`] (timeouts),
//!   [`suspects`] (crash isolation) and [`guarantee`] (per-kind delivery).
//!   Core's hub (`core/src/delivery/hub`) runs it against the store and the
//!   processor's stream.
//! * The processor's side: [`receiver::Receiver`] (duplicates, reordering,
//!   the result cache, `processed_below`) with [`lanes::Lanes`], the
//!   ordering policy and the concurrency cap. The processor's client
//!   (`processor/src/client.rs`) runs it.
//!
//! * Several processors sharing keyed work: [`group::Group`] (a `Sender` per
//!   stream and the routing between them) with [`partitions`] (a key's
//!   partition, and which processor owns it). Each event says which seqs
//!   below it are not its stream's (`Event.after`, [`sender::Sender::after`]),
//!   and a receiver takes an event handed over from another stream even
//!   below what it has received (`proto/tests/handover.rs`).
//!
//! Where to add things: a new ordering (what may start together) is a new
//! [`lanes::Ordering`] and its lane assignment in `lanes.rs`; a new delivery
//! guarantee per kind is a [`guarantee::Guarantee`] and its rule in the
//! sender; the window and its two bounds live in the sender alone.
//!
//! # Guarantees
//!
//! * **At-least-once.** An event is acknowledged only when its result row is
//!   stored; until then core keeps sending it: on a timeout, and again on
//!   every reconnection. Nothing that was committed is ever skipped.
//! * **Exactly one stored result.** The processor drops duplicates and
//!   re-sends the cached ack; core stores results with
//!   `ON CONFLICT DO NOTHING`, so even a processor restart that reprocesses
//!   an event cannot produce a second result.
//! * **Order.** Seqs are commit order (core's `ingest` writer); the sender sends
//!   them in increasing order and resends in increasing order; the processor
//!   reorders them, admits them to lanes only over the contiguous received
//!   prefix, and runs each lane one event at a time, in seq order. The mode
//!   (`--ordering`, sent in `Welcome`) decides the lanes: one per key (events
//!   without a key share one) or one for everything.
//! * **At most once, per kind.** Kinds named with `--at-most-once` trade
//!   the first guarantee for its opposite: sent once, never again, and
//!   abandoned (a result with status `abandoned`) where another copy would
//!   be needed. See `guarantee.rs`.
//! * **Progress.** A poison event (the one blocking the floor, timing out
//!   `max_deliver` times while the processor runs, or rejected by it) is
//!   parked as dead; the floor moves past it; `Admin.Requeue` publishes it
//!   again as a new event. A paused or absent processor never causes a park.
//!
//! # The window
//!
//! The window has two bounds: core sends seq `s` only while fewer than
//! `window` events are in flight (sent, no ack yet) and `s < acked_floor +
//! 2 × window`. The first is gated by acks, so the next events go out while
//! the results of the previous ones are being committed (the floor only
//! moves once they are durable); it counts events, not seqs, so a slow
//! event holds its own place only. The second bounds everything downstream: the
//! processor's reorder buffer and its cache of recent acks both stay below
//! two windows, and core's memory is two windows plus the tail, whatever the
//! backlog.
//!
//! # Time
//!
//! Each in-flight event has a deadline. At the deadline it is retransmitted
//! and the next deadline is armed with exponential backoff from the RTO
//! (RFC 6298: `srtt + 4·rttvar`, a floor), capped, with jitter — unless the
//! processor said it has the event (below `received_below` and not in
//! `awaiting`, like TCP's selective acks): then it is waiting behind an
//! earlier event of its key, or running, and a copy would only be dropped;
//! the deadline is re-armed and nothing is sent.
//!
//! Timers measure the path, not the queue. The round trips come from the
//! heartbeat's probe, which the processor echoes as soon as it reads it,
//! never from acks: the time from send to ack counts the event's wait
//! behind its key, for a retry and in its algorithm, and an estimate fed
//! with it grew with every wait until the RTO sat at its cap (215–349 s
//! "round trips" under a hot key with retrying handlers).
//!
//! An algorithm that asks to retry later gets its copy after the wait it
//! asked for, or within milliseconds when it asked for none (`Retry-After:
//! 0`); each further request of the same event doubles that wait
//! (`rto::retry_backoff`).
//!
//! Under key ordering the window is also where head-of-line blocking shows:
//! other keys go on while one key's event is slow, but only up to
//! `acked_floor + 2 × window`. A slow event at the floor holds back every
//! send past that; the admin snapshot names it (`floor_holder`).
//!
//! # Failures
//!
//! * *Lost event*: the deadline fires; the event is sent again.
//! * *Lost ack*: the processor holds the event, so its deadline sends
//!   nothing; but every ack batch and status report carries the
//!   processor's `processed_below`, which proves the seqs below it were
//!   processed, and core resends such a seq still in flight (fast
//!   retransmit; once its latest copy is one RTO old, since a younger one
//!   may still be on its way) to earn the cached ack.
//! * *Processor disconnects or restarts*: timers stop; on the next hello core
//!   answers with the floor and resends everything in flight, in order.
//!   The seqs above the floor that are already resolved (their rows
//!   durable) go in the `Welcome` (and in heartbeats while the processor
//!   is behind them): a new life passes over them instead of waiting at
//!   the first one until the floor passes it. Without that, a slow event
//!   at the floor stopped a new life entirely, and core sent its reorder
//!   buffer again at every timeout (2,000 retransmits in a run with four
//!   kills).
//! * *Core restarts*: the floor and the results above it are read back from
//!   the store; unresolved events are sent again.
//! * *The store fails*: results are retried until stored; the floor does not
//!   move meanwhile, so nothing is considered acknowledged that is not.
//!
pub mod group;
pub mod guarantee;
pub mod lanes;
pub mod partitions;
pub mod receiver;
pub mod rto;
pub mod sender;
pub mod suspects;

/// Position of an event in the log. Assigned by core's ingest writer in
/// commit order, starting at 1, with no gaps.
pub type Seq = u64;

/// Delivery state loaded at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryCursor {
    /// Every seq below it is resolved (has a result or is dead).
    pub acked_floor: Seq,
    /// Resolved seqs at or above the floor (selective acks stored before a
    /// restart), in increasing order.
    pub resolved_above: Vec<Seq>,
    /// Unresolved seqs at or above the floor whose sent mark is durable:
    /// events of at-most-once kinds whose one copy may have gone out before
    /// a restart. They are abandoned, never sent again.
    pub sent_above: Vec<Seq>,
}
