//! A checker in the spirit of Jepsen's total-queue checker: it compares
//! what the publishers were told (their own log of acknowledged publishes)
//! with what the store holds at the end of a run and with what each
//! processor life says it processed.
//!
//! Every publish carries an idempotency key, and the publishers also put
//! that key in the event's business `key`, so a stored event can be traced
//! back to the publish that produced it without trusting the store's own
//! idempotency index.
//!
//! # Verdicts
//!
//! * **lost**: core acknowledged a publish (a 2xx/OK with a seq), and at the
//!   end the event at that seq is missing, belongs to another key, or has no
//!   result (and was not parked as dead).
//! * **never delivered**: a stored event (acknowledged or not) with no
//!   result and not parked: at-least-once covers every committed event.
//! * **duplicates**: one idempotency key stored as two events, or
//!   acknowledged with two different seqs. (Two results for one event are
//!   impossible by the results table's primary key; two events for one key
//!   are what a broken replay would produce.)
//! * **duplicate processing**: one processor life handed the same seq to an
//!   algorithm twice. Reprocessing in a *later* life is at-least-once working
//!   as designed and is only counted.
//! * **order violations**: within one processor life, a seq processed after
//!   a higher one.
//! * **unexpected**: a stored event whose key no publisher ever used.
//!
//! Publishes whose outcome is unknown (every attempt failed or timed out
//! before a reply) are counted apart, never as lost; the ones that were
//! committed anyway are "recovered" (and must then be delivered like any
//! other event).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use ackflow_core::model::{DeliveryState, EventView, Seq};

/// What the publishers know about their publishes.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Idempotency key → the seq core acknowledged (first acknowledgement).
    pub acked: HashMap<String, Seq>,
    /// Keys acknowledged twice with different seqs: (key, first, second).
    pub conflicting_acks: Vec<(String, Seq, Seq)>,
    /// Keys whose final outcome is unknown: no attempt got a reply.
    pub unknown: HashSet<String>,
    /// Every key a publisher tried at least once.
    pub attempted: HashSet<String>,
    /// Attempts that failed with an unknown outcome (a reset stream, a
    /// timeout, a 503) and were retried with the same key.
    pub unknown_attempts: u64,
}

impl History {
    /// Records an attempt to publish `key`.
    pub fn attempt(&mut self, key: &str) {
        if !self.attempted.contains(key) {
            self.attempted.insert(key.to_string());
        }
    }

    /// Records core's acknowledgement of `key` at `seq`.
    pub fn ack(&mut self, key: &str, seq: Seq) {
        self.attempt(key);
        self.unknown.remove(key);
        match self.acked.get(key) {
            Some(&first) if first != seq => {
                self.conflicting_acks.push((key.to_string(), first, seq))
            }
            Some(_) => {}
            None => {
                self.acked.insert(key.to_string(), seq);
            }
        }
    }

    /// Records that `key` was given up with an unknown outcome.
    pub fn give_up(&mut self, key: &str) {
        self.attempt(key);
        if !self.acked.contains_key(key) {
            self.unknown.insert(key.to_string());
        }
    }

    /// Merges another publisher's history into this one.
    pub fn merge(&mut self, other: History) {
        for key in other.attempted {
            self.attempt(&key);
        }
        for (key, seq) in other.acked {
            self.ack(&key, seq);
        }
        for key in other.unknown {
            self.give_up(&key);
        }
        self.conflicting_acks.extend(other.conflicting_acks);
        self.unknown_attempts += other.unknown_attempts;
    }
}

/// One line of a processor's `--processed-log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// The processor life (its `--processor-id`).
    pub life: String,
    /// The seq handed to the algorithm.
    pub seq: Seq,
    /// The delivery attempt the processor received.
    pub attempt: u32,
}

/// Parses processed-log text. A SIGKILL can tear the last line of a file;
/// such a line is skipped and counted in the second value. A malformed line
/// anywhere else is an error.
pub fn parse_processed(text: &str) -> anyhow::Result<(Vec<Processed>, u64)> {
    let mut out = Vec::new();
    let mut torn = 0;
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let parsed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(life), Some(seq), Some(attempt), None) => {
                match (seq.parse::<Seq>(), attempt.parse::<u32>()) {
                    (Ok(seq), Ok(attempt)) => Some(Processed {
                        life: life.to_string(),
                        seq,
                        attempt,
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        match parsed {
            Some(p) if i + 1 < lines.len() => out.push(p),
            // The last piece has no newline after it: the write was cut.
            _ if i + 1 == lines.len() => torn += 1,
            _ => anyhow::bail!("malformed processed-log line {}: {line:?}", i + 1),
        }
    }
    Ok((out, torn))
}

/// Reads and parses processed-log files.
pub fn read_processed(paths: &[impl AsRef<Path>]) -> anyhow::Result<(Vec<Processed>, u64)> {
    let mut all = Vec::new();
    let mut torn = 0;
    for path in paths {
        let path = path.as_ref();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            // A life killed before it processed anything has no file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow::Error::new(e).context(path.display().to_string())),
        };
        let (lines, t) =
            parse_processed(&text).map_err(|e| e.context(format!("reading {}", path.display())))?;
        all.extend(lines);
        torn += t;
    }
    Ok((all, torn))
}

/// Why an acknowledged publish counts as lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// No event is stored at the acknowledged seq.
    Missing,
    /// The event at the acknowledged seq belongs to another key (or none).
    Moved { found: Option<String> },
    /// The event is stored but has no result and is not parked.
    NoResult,
}

/// An acknowledged publish that the store does not honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The publish's idempotency key.
    pub key: String,
    /// The seq core acknowledged for it.
    pub seq: Seq,
    /// What is wrong in the store.
    pub reason: LostReason,
}

/// The checker's verdict on one run.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Keys tried by the publishers.
    pub attempted: u64,
    /// Publishes core acknowledged.
    pub acknowledged: u64,
    /// Attempts whose outcome was unknown and that were retried.
    pub unknown_attempts: u64,
    /// Publishes given up with an unknown outcome.
    pub unknown: u64,
    /// Of those, the ones that were committed anyway.
    pub unknown_stored: u64,
    /// Events in the store.
    pub stored: u64,
    /// Stored events with an ok result.
    pub results_ok: u64,
    /// Stored events with a failed result (the algorithm's error).
    pub results_failed: u64,
    /// Stored events parked as dead (documented behaviour, not a loss; a
    /// chaos run with default limits should see none).
    pub dead: u64,
    /// Acknowledged publishes the store does not honour.
    pub lost: Vec<Lost>,
    /// Stored events with neither a result nor a dead entry.
    pub never_delivered: Vec<Seq>,
    /// Keys stored as more than one event: key → seqs.
    pub duplicate_events: BTreeMap<String, Vec<Seq>>,
    /// Keys acknowledged with two different seqs.
    pub conflicting_acks: Vec<(String, Seq, Seq)>,
    /// (life, seq) handed to an algorithm more than once in one life.
    pub duplicate_processing: Vec<(String, Seq)>,
    /// (life, previous seq, seq): a seq processed after a higher one.
    pub order_violations: Vec<(String, Seq, Seq)>,
    /// Stored events whose key no publisher used.
    pub unexpected: Vec<Seq>,
    /// Processor lives seen in the processed logs.
    pub lives: u64,
    /// Lines in the processed logs.
    pub processed: u64,
    /// Torn last lines (a life killed mid-write).
    pub torn_lines: u64,
    /// Seqs processed in more than one life (at-least-once across crashes).
    pub reprocessed_across_lives: u64,
}

impl Report {
    /// Lost acknowledged events plus stored events never delivered.
    pub fn loss_count(&self) -> u64 {
        (self.lost.len() + self.never_delivered.len()) as u64
    }

    /// Events stored twice, acks that disagree, and duplicate processing
    /// within one processor life.
    pub fn duplicate_count(&self) -> u64 {
        (self.duplicate_events.len()
            + self.conflicting_acks.len()
            + self.duplicate_processing.len()) as u64
    }

    /// Every violation of the guarantees, added up. Zero means the run kept
    /// every promise.
    pub fn violations(&self) -> u64 {
        self.loss_count()
            + self.duplicate_count()
            + self.order_violations.len() as u64
            + self.unexpected.len() as u64
    }

    /// True when no guarantee was violated.
    pub fn is_valid(&self) -> bool {
        self.violations() == 0
    }
}

/// Checks a run: `history` from the publishers, `stored` from the store
/// (every event, in seq order), `processed` from the processed logs.
pub fn check(history: &History, stored: &[EventView], processed: &[Processed]) -> Report {
    let mut report = Report {
        attempted: history.attempted.len() as u64,
        acknowledged: history.acked.len() as u64,
        unknown_attempts: history.unknown_attempts,
        unknown: history.unknown.len() as u64,
        stored: stored.len() as u64,
        conflicting_acks: history.conflicting_acks.clone(),
        ..Default::default()
    };

    // The store: one entry per seq, and the seqs of each key.
    let mut by_seq: HashMap<Seq, &EventView> = HashMap::with_capacity(stored.len());
    let mut seqs_of_key: HashMap<&str, Vec<Seq>> = HashMap::with_capacity(stored.len());
    for view in stored {
        by_seq.insert(view.event.seq, view);
        match view.event.key.as_deref() {
            Some(key) if history.attempted.contains(key) => {
                seqs_of_key.entry(key).or_default().push(view.event.seq)
            }
            _ => report.unexpected.push(view.event.seq),
        }
        match view.state {
            DeliveryState::Done(ackflow_core::model::ResultStatus::Ok) => report.results_ok += 1,
            DeliveryState::Done(ackflow_core::model::ResultStatus::Failed) => {
                report.results_failed += 1
            }
            DeliveryState::Dead => report.dead += 1,
            DeliveryState::Pending => report.never_delivered.push(view.event.seq),
        }
    }
    for (key, seqs) in &seqs_of_key {
        if seqs.len() > 1 {
            report
                .duplicate_events
                .insert(key.to_string(), seqs.clone());
        }
    }
    report.unknown_stored = history
        .unknown
        .iter()
        .filter(|k| seqs_of_key.contains_key(k.as_str()))
        .count() as u64;

    // Acknowledged publishes against the store.
    let mut acked: Vec<(&String, &Seq)> = history.acked.iter().collect();
    acked.sort_by_key(|(_, seq)| **seq);
    for (key, &seq) in acked {
        let reason = match by_seq.get(&seq) {
            None => Some(LostReason::Missing),
            Some(view) if view.event.key.as_deref() != Some(key.as_str()) => {
                Some(LostReason::Moved {
                    found: view.event.key.clone(),
                })
            }
            Some(view) if view.state == DeliveryState::Pending => Some(LostReason::NoResult),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            report.lost.push(Lost {
                key: key.clone(),
                seq,
                reason,
            });
        }
    }

    // Processing: per life, strictly increasing seqs, each at most once.
    report.processed = processed.len() as u64;
    let mut last: HashMap<&str, Seq> = HashMap::new();
    let mut seen: HashSet<(&str, Seq)> = HashSet::with_capacity(processed.len());
    let mut lives_of_seq: HashMap<Seq, HashSet<&str>> = HashMap::with_capacity(processed.len());
    for p in processed {
        let life = p.life.as_str();
        if !seen.insert((life, p.seq)) {
            report.duplicate_processing.push((p.life.clone(), p.seq));
        } else if let Some(&prev) = last.get(life)
            && p.seq < prev
        {
            report.order_violations.push((p.life.clone(), prev, p.seq));
        }
        let entry = last.entry(life).or_insert(p.seq);
        *entry = (*entry).max(p.seq);
        lives_of_seq.entry(p.seq).or_default().insert(life);
    }
    report.lives = last.len() as u64;
    report.reprocessed_across_lives = lives_of_seq.values().filter(|l| l.len() > 1).count() as u64;
    report
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_valid() { "VALID" } else { "INVALID" };
        writeln!(f, "checker: {verdict} ({} violations)", self.violations())?;
        writeln!(
            f,
            "  publishes: {} keys tried, {} acknowledged, {} unknown outcome ({} of them stored), {} attempts retried after an unknown outcome",
            self.attempted,
            self.acknowledged,
            self.unknown,
            self.unknown_stored,
            self.unknown_attempts
        )?;
        writeln!(
            f,
            "  store: {} events, {} ok, {} failed, {} dead",
            self.stored, self.results_ok, self.results_failed, self.dead
        )?;
        writeln!(
            f,
            "  processing: {} lines from {} processor lives ({} torn by a kill), {} seqs reprocessed by a later life",
            self.processed, self.lives, self.torn_lines, self.reprocessed_across_lives
        )?;
        writeln!(f, "  lost acknowledged events:  {}", self.lost.len())?;
        writeln!(
            f,
            "  never delivered:           {}",
            self.never_delivered.len()
        )?;
        writeln!(
            f,
            "  duplicate events/acks:     {}",
            self.duplicate_events.len() + self.conflicting_acks.len()
        )?;
        writeln!(
            f,
            "  duplicate processing:      {}",
            self.duplicate_processing.len()
        )?;
        writeln!(
            f,
            "  order violations:          {}",
            self.order_violations.len()
        )?;
        write!(f, "  unexpected events:         {}", self.unexpected.len())?;
        const SHOW: usize = 5;
        if !self.lost.is_empty() {
            write!(
                f,
                "\n  first lost: {:?}",
                &self.lost[..self.lost.len().min(SHOW)]
            )?;
        }
        if !self.never_delivered.is_empty() {
            write!(
                f,
                "\n  first never delivered: {:?}",
                &self.never_delivered[..self.never_delivered.len().min(SHOW)]
            )?;
        }
        if let Some((key, seqs)) = self.duplicate_events.iter().next() {
            write!(f, "\n  first duplicate event: key {key} at seqs {seqs:?}")?;
        }
        if !self.conflicting_acks.is_empty() {
            write!(
                f,
                "\n  first conflicting ack: {:?}",
                self.conflicting_acks[0]
            )?;
        }
        if !self.duplicate_processing.is_empty() {
            write!(
                f,
                "\n  first duplicate processing (life, seq): {:?}",
                &self.duplicate_processing[..self.duplicate_processing.len().min(SHOW)]
            )?;
        }
        if !self.order_violations.is_empty() {
            write!(
                f,
                "\n  first order violations (life, after, seq): {:?}",
                &self.order_violations[..self.order_violations.len().min(SHOW)]
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ackflow_core::model::{ResultRow, ResultStatus, StoredEvent};

    fn view(seq: Seq, key: &str, state: DeliveryState) -> EventView {
        EventView {
            event: StoredEvent {
                seq,
                id: format!("id{seq}"),
                kind: "sum".into(),
                key: Some(key.into()),
                payload: b"1".to_vec(),
                published_at_us: 0,
            },
            state,
            result: match state {
                DeliveryState::Done(status) => Some(ResultRow {
                    seq,
                    status,
                    output: String::new(),
                    attempt: 1,
                    processing_us: 0,
                    stored_at_us: 0,
                }),
                _ => None,
            },
            dead: None,
        }
    }

    const OK: DeliveryState = DeliveryState::Done(ResultStatus::Ok);

    fn processed(life: &str, seqs: &[Seq]) -> Vec<Processed> {
        seqs.iter()
            .map(|&seq| Processed {
                life: life.into(),
                seq,
                attempt: 1,
            })
            .collect()
    }

    #[test]
    fn a_clean_history_is_valid() {
        let mut h = History::default();
        h.ack("a", 1);
        h.ack("b", 2);
        h.ack("a", 1); // a replay
        h.give_up("c");
        let stored = [view(1, "a", OK), view(2, "b", OK), view(3, "c", OK)];
        let mut p = processed("l1", &[1, 2]);
        p.extend(processed("l2", &[2, 3]));
        let r = check(&h, &stored, &p);
        assert!(r.is_valid(), "{r}");
        assert_eq!((r.acknowledged, r.unknown, r.unknown_stored), (2, 1, 1));
        assert_eq!((r.lives, r.reprocessed_across_lives), (2, 1));
    }

    #[test]
    fn every_violation_is_reported() {
        let mut h = History::default();
        for (key, seq) in [("a", 1), ("b", 2), ("c", 3), ("d", 9), ("e", 4)] {
            h.ack(key, seq);
        }
        h.ack("e", 5);
        let stored = [
            view(1, "a", OK),
            view(2, "b", DeliveryState::Pending), // acked, no result
            view(3, "x", OK),                     // moved, and unexpected
            view(4, "e", OK),
            view(5, "e", OK), // e stored twice
        ];
        let p = processed("l1", &[1, 2, 2, 4, 3]);
        let r = check(&h, &stored, &p);
        let reasons: Vec<&LostReason> = r.lost.iter().map(|l| &l.reason).collect();
        assert_eq!(
            reasons,
            vec![
                &LostReason::NoResult,
                &LostReason::Moved {
                    found: Some("x".into())
                },
                &LostReason::Missing
            ]
        );
        assert_eq!(r.never_delivered, vec![2]);
        assert_eq!(r.unexpected, vec![3]);
        assert_eq!(r.duplicate_events.len(), 1);
        assert_eq!(r.conflicting_acks, vec![("e".to_string(), 4, 5)]);
        assert_eq!(r.duplicate_processing, vec![("l1".to_string(), 2)]);
        assert_eq!(r.order_violations, vec![("l1".to_string(), 4, 3)]);
        assert!(!r.is_valid());
    }

    #[test]
    fn torn_last_lines_are_tolerated_elsewhere_not() {
        let (lines, torn) = parse_processed("l 1 1\nl 2 1\nl 3").unwrap();
        assert_eq!((lines.len(), torn), (2, 1));
        let (lines, torn) = parse_processed("l 1 1\n").unwrap();
        assert_eq!((lines.len(), torn), (1, 0));
        assert!(parse_processed("l 1 1\nl x 1\nl 3 1\n").is_err());
    }
}
