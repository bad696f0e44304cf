//! Delivery guarantees, per kind: the one place that says which.
//!
//! * **At least once** (every kind, unless configured otherwise): an event
//!   is sent until its result is stored, on timeouts and again on every
//!   new stream; a crash costs a duplicate at the processor (dropped, or
//!   processed again by a new processor life), never a loss.
//! * **At most once** (`--at-most-once KIND`, repeatable): for kinds where
//!   a late duplicate is worse than a gap (telemetry, notifications that
//!   must not repeat). The event runs only once *granted*, and is granted
//!   once:
//!   1. before it may run, its *sent mark* is stored durably
//!      (`Store::mark_sent`, by the marks writer, batched), so not even a
//!      crash of core between granting it and storing the result can grant
//!      it twice. A processor that claims (`Hello.claims`) gets it at once,
//!      *unclaimed*, and claims it when it is about to start it (its lane's
//!      turn, a slot free); the mark is stored then and core grants it.
//!      Until then it has not run: it gets copies as any event does, is no
//!      crash suspect, and no crash abandons it, so a crash abandons only
//!      what may have run (at most the processor's `--concurrency`). A
//!      processor that does not claim gets it granted: after its mark, as
//!      its one copy;
//!   2. if its result arrives it is stored as any result is;
//!   3. where an at-least-once event would get another copy, a granted one
//!      — its processor's stream ended, core restarted (an unresolved sent
//!      mark), or the algorithm asked to retry it later — is *abandoned*:
//!      core stores a result with status `abandoned` whose output says why,
//!      and counts it (`ackflow_results_total{status="abandoned"}`). It may
//!      or may not have been processed; the loss is by design and visible.
//!
//!   A result that the processor reports processed (`processed_below`) but
//!   that never arrived is abandoned too. An ack timeout sends no copy; the
//!   timeouts count towards `--max-deliver` as any event's do, so an event
//!   whose one copy was lost on a stream that stays open (which a gRPC
//!   stream does not do; the processor's fault injection does) is parked as
//!   dead in the end, or abandoned when the stream ends, never sent again.
//!   Order and the window are the same as for every kind.
//!
//! The [`Sender`](super::sender::Sender) applies the rules; it is told each
//! event's guarantee when the event is offered.

use std::collections::BTreeSet;

/// How an event is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Sent until its result is stored (the default).
    AtLeastOnce,
    /// Sent once, after its sent mark is durable; abandoned where another
    /// copy would be needed.
    AtMostOnce,
}

/// An at-most-once event's permit to run, for a processor that claims such
/// events before starting them (`Hello.claims`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Sent to be claimed: it has not run, so it is sent again (a timeout,
    /// a new stream) as an at-least-once event is, and is no crash suspect.
    Unclaimed,
    /// Claimed: its sent mark is being stored, then it is granted. Still
    /// not run; back to `Unclaimed` if the stream ends first.
    Marking,
    /// Granted (or sent to a processor that does not claim): it may have
    /// run. Never sent or granted again; abandoned where another copy
    /// would go.
    Granted,
}

/// Which kinds are delivered at most once; every other kind at least once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guarantees {
    at_most_once: BTreeSet<String>,
}

impl Guarantees {
    /// At most once for `kinds`, at least once for every other kind.
    pub fn at_most_once<I, S>(kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            at_most_once: kinds.into_iter().map(Into::into).collect(),
        }
    }

    /// The guarantee for events of `kind`.
    pub fn of(&self, kind: &str) -> Guarantee {
        if self.at_most_once.contains(kind) {
            Guarantee::AtMostOnce
        } else {
            Guarantee::AtLeastOnce
        }
    }

    /// The at-most-once kinds, sorted.
    pub fn at_most_once_kinds(&self) -> impl Iterator<Item = &str> {
        self.at_most_once.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_kinds_named_are_at_most_once() {
        let g = Guarantees::at_most_once(["telemetry"]);
        assert_eq!(g.of("telemetry"), Guarantee::AtMostOnce);
        assert_eq!(g.of("telemetry2"), Guarantee::AtLeastOnce);
        assert_eq!(g.of(""), Guarantee::AtLeastOnce);
        assert_eq!(
            Guarantees::default().of("telemetry"),
            Guarantee::AtLeastOnce
        );
    }
}
