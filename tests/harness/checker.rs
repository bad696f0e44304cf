//! A checker in the spirit of Jepsen's total-queue checker: it compares
//! what the publishers were told (their own log of acknowledged publishes)
//! with what the store holds at the end of a run and with what each
//! processor life says it processed.
//!
//! Every publish carries an idempotency key of its own, and the store keeps
//! it in the event's row, so a stored event can be traced back to the
//! publish that produced it without trusting the store's idempotency
//! lookup. The event's business `key` is the ordering key: several
//! publishes share one, some carry none. The publishers record the key each
//! publish carried, so the checker can tell a stored event whose key
//! changed on the way.
//!
//! # Verdicts on the store
//!
//! * **lost**: core acknowledged a publish (a 2xx/OK with a seq), and at the
//!   end the event at that seq is missing, belongs to another publish, or
//!   has no result (and was not parked as dead).
//! * **never delivered**: a stored event (acknowledged or not) with no
//!   result and not parked: at-least-once covers every committed event.
//! * **duplicates**: one idempotency key stored as two events, or
//!   acknowledged with two different seqs. (Two results for one event are
//!   impossible by the results table's primary key; two events for one key
//!   are what a broken replay would produce.)
//! * **rekeyed**: a stored event whose ordering key is not the one its
//!   publish carried (it would be processed in another lane).
//! * **unexpected**: a stored event whose idempotency key no publisher used.
//! * **misprocessed**: a stored result that was not computed from its own
//!   event's payload (an ok `sha256` result that is not the digest of the
//!   stored payload): the event was delivered with another's.
//! * **conflicts accepted**: a publish reusing an acknowledged idempotency
//!   key with another payload (a *conflicting twin*, which core must refuse
//!   and store nothing of) answered with a seq.
//!
//! # Verdicts on processing
//!
//! See [`processing`]: per processor life, each seq started at most once;
//! per lane (one per key and one for the events without a key under
//! `--ordering key`, one for everything under `--ordering global`), starts
//! in strictly increasing seq order and never while another event of the
//! lane is in progress. Besides: every stored result's processing is in
//! the processed logs (the processor writes them before its acks leave),
//! and every processed seq is a stored event. Across lives, see
//! [`across_lives`]: a lane runs in two lives at once only where the
//! first one lost its place (held its starts, was stopped) meanwhile.
//!
//! # At-most-once kinds
//!
//! An event whose kind core delivers at most once (`--at-most-once`) may
//! end with a result of status abandoned: a loss by design, counted, not a
//! violation. Two verdicts replace the ones it is spared:
//!
//! * **abandoned at least once**: an event of any other kind abandoned. It
//!   is a loss.
//! * **repeated at most once**: an at-most-once event started more than
//!   once, in any lives together (not only within one).
//!
//! Publishes whose outcome is unknown (every attempt failed or timed out
//! before a reply) are counted apart, never as lost; the ones that were
//! committed anyway are "recovered" (and must then be delivered like any
//! other event).

mod across_lives;
mod processing;
mod report;

pub use across_lives::{AcrossLives, HandoffOverlap, check as check_across_lives};

pub use report::Report;

pub use processing::{
    Lane, OrderViolation, Overlap, Phase, Processed, ProcessingReport, parse_processed,
    read_processed,
};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use ackflow_core::model::{DeliveryState, ResultStatus, Seq};

/// What core keeps in order (its `--ordering`), as the checker applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Per key; the events without a key form one lane of their own.
    #[default]
    Key,
    /// Everything is one lane.
    Global,
}

impl Ordering {
    /// The value of core's `--ordering` flag.
    pub fn as_flag(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Global => "global",
        }
    }

    /// The lane of an event with `key`.
    pub fn lane(self, key: Option<&str>) -> Lane {
        match (self, key) {
            (Self::Global, _) => Lane::Global,
            (Self::Key, Some(key)) => Lane::Key(key.to_string()),
            (Self::Key, None) => Lane::Unkeyed,
        }
    }
}

impl fmt::Display for Ordering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_flag())
    }
}

/// What the publishers know about their publishes. Publishes are named by
/// their idempotency key.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Idempotency key → the seq core acknowledged (first acknowledgement).
    pub acked: HashMap<String, Seq>,
    /// Publishes acknowledged twice with different seqs:
    /// (idempotency key, first, second).
    pub conflicting_acks: Vec<(String, Seq, Seq)>,
    /// Publishes whose final outcome is unknown: no attempt got a reply.
    pub unknown: HashSet<String>,
    /// Every publish tried at least once: idempotency key → the ordering
    /// key it carried (`None`: no key).
    pub attempted: HashMap<String, Option<String>>,
    /// Attempts that failed with an unknown outcome (a reset stream, a
    /// timeout, a 503) and were retried with the same idempotency key.
    pub unknown_attempts: u64,
    /// Conflicting twins refused, as they must be.
    pub conflicts_refused: u64,
    /// Conflicting twins answered with a seq (idempotency key, the seq).
    pub conflicts_accepted: Vec<(String, Seq)>,
}

impl History {
    /// Records an attempt to publish `idempotency_key` with `key`.
    pub fn attempt(&mut self, idempotency_key: &str, key: Option<&str>) {
        if !self.attempted.contains_key(idempotency_key) {
            self.attempted
                .insert(idempotency_key.to_string(), key.map(str::to_string));
        }
    }

    /// Records core's acknowledgement of `idempotency_key` at `seq` (after
    /// an [`attempt`](Self::attempt)).
    pub fn ack(&mut self, idempotency_key: &str, seq: Seq) {
        self.unknown.remove(idempotency_key);
        match self.acked.get(idempotency_key) {
            Some(&first) if first != seq => {
                self.conflicting_acks
                    .push((idempotency_key.to_string(), first, seq))
            }
            Some(_) => {}
            None => {
                self.acked.insert(idempotency_key.to_string(), seq);
            }
        }
    }

    /// Records that `idempotency_key` was given up with an unknown outcome.
    pub fn give_up(&mut self, idempotency_key: &str) {
        if !self.acked.contains_key(idempotency_key) {
            self.unknown.insert(idempotency_key.to_string());
        }
    }

    /// Merges another publisher's history into this one.
    pub fn merge(&mut self, other: History) {
        for (idempotency_key, key) in other.attempted {
            self.attempt(&idempotency_key, key.as_deref());
        }
        for (idempotency_key, seq) in other.acked {
            self.ack(&idempotency_key, seq);
        }
        for idempotency_key in other.unknown {
            self.give_up(&idempotency_key);
        }
        self.conflicting_acks.extend(other.conflicting_acks);
        self.unknown_attempts += other.unknown_attempts;
        self.conflicts_refused += other.conflicts_refused;
        self.conflicts_accepted.extend(other.conflicts_accepted);
    }
}

/// One event as the store holds it at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: Seq,
    /// The idempotency key in the event's row: which publish it came from.
    pub idempotency_key: Option<String>,
    /// The ordering key.
    pub key: Option<String>,
    /// Result (ok, failed or abandoned), dead, or nothing yet.
    pub state: DeliveryState,
    /// Its kind is delivered at most once (core's `--at-most-once`).
    pub at_most_once: bool,
    /// Its result cannot have been computed from its stored payload (see
    /// the module docs, "misprocessed").
    pub misprocessed: bool,
}

/// Why an acknowledged publish counts as lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// No event is stored at the acknowledged seq.
    Missing,
    /// The event at the acknowledged seq belongs to another publish (its
    /// idempotency key, if it has one).
    Moved { found: Option<String> },
    /// The event is stored but has no result and is not parked.
    NoResult,
}

/// An acknowledged publish that the store does not honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub idempotency_key: String,
    /// The seq core acknowledged for it.
    pub seq: Seq,
    /// What is wrong in the store.
    pub reason: LostReason,
}

/// A stored event whose ordering key is not the one its publish carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rekeyed {
    pub seq: Seq,
    pub idempotency_key: String,
    /// The key the publish carried.
    pub sent: Option<String>,
    /// The key in the store.
    pub stored: Option<String>,
}

/// Checks a run: `history` from the publishers, `stored` from the store
/// (every event), `processed` from the processed logs, read under
/// `ordering` and, when given, the processor's `concurrency`.
pub fn check(
    history: &History,
    stored: &[Stored],
    processed: &[Processed],
    ordering: Ordering,
    concurrency: Option<u64>,
) -> Report {
    let mut report = Report {
        attempted: history.attempted.len() as u64,
        acknowledged: history.acked.len() as u64,
        unknown_attempts: history.unknown_attempts,
        unknown: history.unknown.len() as u64,
        stored: stored.len() as u64,
        conflicting_acks: history.conflicting_acks.clone(),
        conflicts_refused: history.conflicts_refused,
        conflicts_accepted: history.conflicts_accepted.clone(),
        ..Default::default()
    };

    // The store: one entry per seq, the seqs of each publish, the keys.
    let mut by_seq: HashMap<Seq, &Stored> = HashMap::with_capacity(stored.len());
    let mut seqs_of_publish: HashMap<&str, Vec<Seq>> = HashMap::with_capacity(stored.len());
    let mut per_key: HashMap<&str, u64> = HashMap::new();
    for event in stored {
        by_seq.insert(event.seq, event);
        match event.idempotency_key.as_deref() {
            Some(ik) if history.attempted.contains_key(ik) => {
                seqs_of_publish.entry(ik).or_default().push(event.seq);
                let sent = &history.attempted[ik];
                if sent != &event.key {
                    report.rekeyed.push(Rekeyed {
                        seq: event.seq,
                        idempotency_key: ik.to_string(),
                        sent: sent.clone(),
                        stored: event.key.clone(),
                    });
                }
            }
            _ => report.unexpected.push(event.seq),
        }
        match event.key.as_deref() {
            Some(key) => *per_key.entry(key).or_default() += 1,
            None => report.unkeyed += 1,
        }
        match event.state {
            DeliveryState::Done(ResultStatus::Ok) => report.results_ok += 1,
            DeliveryState::Done(ResultStatus::Failed) => report.results_failed += 1,
            DeliveryState::Done(ResultStatus::Abandoned) if event.at_most_once => {
                report.abandoned += 1
            }
            DeliveryState::Done(ResultStatus::Abandoned) => {
                report.abandoned_at_least_once.push(event.seq)
            }
            DeliveryState::Dead => report.dead += 1,
            DeliveryState::Pending => report.never_delivered.push(event.seq),
        }
        if event.misprocessed {
            report.misprocessed.push(event.seq);
        }
    }
    report.misprocessed.sort_unstable();
    report.never_delivered.sort_unstable();
    report.abandoned_at_least_once.sort_unstable();
    report.unexpected.sort_unstable();
    report.rekeyed.sort_by_key(|r| r.seq);
    report.keys = per_key.len() as u64;
    report.hottest_key = per_key
        .iter()
        .max_by_key(|(key, n)| (**n, std::cmp::Reverse(**key)))
        .map(|(key, n)| (key.to_string(), *n));
    for (ik, seqs) in &seqs_of_publish {
        if seqs.len() > 1 {
            let mut seqs = seqs.clone();
            seqs.sort_unstable();
            report.duplicate_events.insert(ik.to_string(), seqs);
        }
    }
    report.unknown_stored = history
        .unknown
        .iter()
        .filter(|ik| seqs_of_publish.contains_key(ik.as_str()))
        .count() as u64;

    // Acknowledged publishes against the store.
    let mut acked: Vec<(&String, &Seq)> = history.acked.iter().collect();
    acked.sort_by_key(|(_, seq)| **seq);
    for (ik, &seq) in acked {
        let reason = match by_seq.get(&seq) {
            None => Some(LostReason::Missing),
            Some(event) if event.idempotency_key.as_deref() != Some(ik.as_str()) => {
                Some(LostReason::Moved {
                    found: event.idempotency_key.clone(),
                })
            }
            Some(event) if event.state == DeliveryState::Pending => Some(LostReason::NoResult),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            report.lost.push(Lost {
                idempotency_key: ik.clone(),
                seq,
                reason,
            });
        }
    }

    // Processing, each seq in the lane of its stored key.
    let (processing, ended) = processing::check(
        processed,
        |seq| {
            by_seq
                .get(&seq)
                .map(|event| ordering.lane(event.key.as_deref()))
        },
        concurrency,
    );
    report.processing = processing;
    report.across_lives = across_lives::check(processed, |seq| {
        by_seq
            .get(&seq)
            .map(|event| ordering.lane(event.key.as_deref()))
    });
    report.processing.ordering = ordering;
    let mut starts: HashMap<Seq, u32> = HashMap::new();
    for p in processed {
        if p.phase == Phase::Start && by_seq.get(&p.seq).is_some_and(|e| e.at_most_once) {
            *starts.entry(p.seq).or_default() += 1;
        }
    }
    report.repeated_at_most_once = starts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(seq, _)| *seq)
        .collect();
    report.repeated_at_most_once.sort_unstable();
    // Abandoned without a start line: a crash gave up an event that never
    // reached its algorithm (the processor writes an at-most-once start
    // before the call). Not a violation, but a loss no crash forced.
    report.abandoned_never_started = stored
        .iter()
        .filter(|e| {
            e.at_most_once
                && e.state == DeliveryState::Done(ResultStatus::Abandoned)
                && !starts.contains_key(&e.seq)
        })
        .count() as u64;
    report.unlogged_results = stored
        .iter()
        .filter(|e| {
            matches!(e.state, DeliveryState::Done(status) if status != ResultStatus::Abandoned)
                && !ended.contains(&e.seq)
        })
        .map(|e| e.seq)
        .collect();
    report.unlogged_results.sort_unstable();
    report
}

/// How many examples of each violation the summary shows.
const SHOW: usize = 5;

/// The first [`SHOW`] items, for a summary line.
fn first<T>(items: &[T]) -> &[T] {
    &items[..items.len().min(SHOW)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: DeliveryState = DeliveryState::Done(ResultStatus::Ok);

    fn stored(seq: Seq, ik: &str, key: Option<&str>, state: DeliveryState) -> Stored {
        Stored {
            seq,
            idempotency_key: Some(ik.into()),
            key: key.map(str::to_string),
            state,
            at_most_once: false,
            misprocessed: false,
        }
    }

    /// Whole processings (start then end) of `seqs` by `life`.
    fn whole(life: &str, seqs: &[Seq]) -> Vec<Processed> {
        seqs.iter()
            .flat_map(|&seq| {
                [Phase::Start, Phase::End].map(|phase| Processed {
                    life: life.into(),
                    seq,
                    attempt: 1,
                    phase,
                    at_us: None,
                })
            })
            .collect()
    }

    fn history(publishes: &[(&str, Option<&str>, Seq)]) -> History {
        let mut h = History::default();
        for &(ik, key, seq) in publishes {
            h.attempt(ik, key);
            h.ack(ik, seq);
        }
        h
    }

    #[test]
    fn a_clean_history_is_valid() {
        let mut h = history(&[("a", Some("x"), 1), ("b", None, 2)]);
        h.ack("a", 1); // a replay
        h.attempt("c", Some("x"));
        h.give_up("c");
        let store = [
            stored(1, "a", Some("x"), OK),
            stored(2, "b", None, OK),
            stored(3, "c", Some("x"), OK),
        ];
        let mut p = whole("l1", &[1, 2]);
        p.extend(whole("l2", &[2, 3]));
        let r = check(&h, &store, &p, Ordering::Key, None);
        assert!(r.is_valid(), "{r}");
        assert_eq!((r.acknowledged, r.unknown, r.unknown_stored), (2, 1, 1));
        assert_eq!(
            (r.processing.lives, r.processing.reprocessed_across_lives),
            (2, 1)
        );
        assert_eq!((r.keys, r.unkeyed), (1, 1));
        assert_eq!(r.hottest_key, Some(("x".to_string(), 2)));
    }

    #[test]
    fn every_store_violation_is_reported() {
        let mut h = history(&[
            ("a", None, 1),
            ("b", None, 2),
            ("c", None, 3),
            ("d", None, 9),
            ("e", None, 4),
            ("f", Some("x"), 6),
        ]);
        h.ack("e", 5);
        let store = [
            stored(1, "a", None, OK),
            stored(2, "b", None, DeliveryState::Pending), // acked, no result
            stored(3, "z", None, OK),                     // moved, and unexpected
            stored(4, "e", None, OK),
            stored(5, "e", None, OK),      // e stored twice
            stored(6, "f", Some("y"), OK), // the key changed
        ];
        let p = whole("l1", &[1, 3, 4, 5, 6]);
        let r = check(&h, &store, &p, Ordering::Key, None);
        let reasons: Vec<&LostReason> = r.lost.iter().map(|l| &l.reason).collect();
        assert_eq!(
            reasons,
            vec![
                &LostReason::NoResult,
                &LostReason::Moved {
                    found: Some("z".into())
                },
                &LostReason::Missing
            ]
        );
        assert_eq!(r.never_delivered, vec![2]);
        assert_eq!(r.unexpected, vec![3]);
        assert_eq!(r.duplicate_events.len(), 1);
        assert_eq!(r.conflicting_acks, vec![("e".to_string(), 4, 5)]);
        assert_eq!(
            r.rekeyed,
            vec![Rekeyed {
                seq: 6,
                idempotency_key: "f".into(),
                sent: Some("x".into()),
                stored: Some("y".into()),
            }]
        );
        assert_eq!(r.order_count(), 0, "{r}");
        assert!(!r.is_valid());
    }

    #[test]
    fn misprocessed_results_and_accepted_conflicts_are_reported() {
        let mut h = history(&[("a", None, 1), ("b", None, 2)]);
        h.conflicts_refused = 3;
        h.conflicts_accepted.push(("a".into(), 7));
        let mut shifted = stored(2, "b", None, OK);
        shifted.misprocessed = true;
        let store = [stored(1, "a", None, OK), shifted];
        let r = check(&h, &store, &whole("l1", &[1, 2]), Ordering::Key, None);
        assert_eq!(r.misprocessed, vec![2]);
        assert_eq!(r.conflicts_accepted, vec![("a".to_string(), 7)]);
        assert_eq!(r.conflicts_refused, 3);
        assert_eq!(r.violations(), 2, "{r}");
        let shown = r.to_string();
        assert!(shown.contains("first misprocessed: [2]"), "{shown}");
        assert!(shown.contains("3 conflicting twins refused"), "{shown}");
    }

    #[test]
    fn results_missing_from_the_log_and_phantom_processing_are_reported() {
        let h = history(&[("a", None, 1), ("b", None, 2)]);
        let store = [stored(1, "a", None, OK), stored(2, "b", None, OK)];
        // Seq 2's result has no processing; seq 7 is no stored event.
        let p = whole("l1", &[1, 7]);
        let r = check(&h, &store, &p, Ordering::Key, None);
        assert_eq!(r.unlogged_results, vec![2]);
        assert_eq!(r.processing.not_stored, vec![("l1".to_string(), 7)]);
        assert_eq!(r.violations(), 2, "{r}");
    }

    #[test]
    fn at_most_once_may_be_abandoned_but_never_run_twice() {
        const ABANDONED: DeliveryState = DeliveryState::Done(ResultStatus::Abandoned);
        let h = history(&[
            ("a", None, 1),
            ("b", None, 2),
            ("c", None, 3),
            ("d", None, 4),
            ("e", None, 5),
        ]);
        let once = |s: Stored| Stored {
            at_most_once: true,
            ..s
        };
        let store = [
            once(stored(1, "a", None, ABANDONED)), // by design: no violation
            once(stored(2, "b", None, OK)),        // run in two lives
            stored(3, "c", None, ABANDONED),       // at least once: lost
            stored(4, "d", None, OK),              // at least once: may run twice
            once(stored(5, "e", None, ABANDONED)), // started, then its life ended
        ];
        let mut p = whole("l1", &[2, 3, 4, 5]);
        p.extend(whole("l2", &[2, 4]));
        let r = check(&h, &store, &p, Ordering::Key, None);
        assert_eq!(r.abandoned, 2);
        assert_eq!(
            r.abandoned_never_started, 1,
            "seq 1 never started, seq 5 did: {r}"
        );
        assert_eq!(r.abandoned_at_least_once, vec![3]);
        assert_eq!(r.repeated_at_most_once, vec![2]);
        assert!(r.lost.is_empty(), "{r}");
        assert!(
            r.unlogged_results.is_empty(),
            "an abandoned result has no processing: {r}"
        );
        assert_eq!((r.loss_count(), r.duplicate_count()), (1, 1), "{r}");
        assert_eq!(r.violations(), 2, "{r}");
    }
}
