//! The checker's verdict: every count and violation, `is_valid`, and the
//! summary printed at the end of a run.

use super::*;

/// The checker's verdict on one run.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Publishes tried by the publishers.
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
    /// At-most-once events abandoned (a loss by design, not a violation).
    pub abandoned: u64,
    /// Of those, the ones no processor life ever started (no start line):
    /// lost to a crash although they could not have run. Not a violation;
    /// the goal is none.
    pub abandoned_never_started: u64,
    /// Events of at-least-once kinds abandoned: lost.
    pub abandoned_at_least_once: Vec<Seq>,
    /// At-most-once events started more than once (all lives together).
    pub repeated_at_most_once: Vec<Seq>,
    /// Distinct ordering keys among the stored events.
    pub keys: u64,
    /// Stored events without an ordering key.
    pub unkeyed: u64,
    /// The key with the most stored events, and how many.
    pub hottest_key: Option<(String, u64)>,
    /// Acknowledged publishes the store does not honour.
    pub lost: Vec<Lost>,
    /// Stored events with neither a result nor a dead entry.
    pub never_delivered: Vec<Seq>,
    /// Idempotency keys stored as more than one event → their seqs.
    pub duplicate_events: BTreeMap<String, Vec<Seq>>,
    /// Publishes acknowledged with two different seqs.
    pub conflicting_acks: Vec<(String, Seq, Seq)>,
    /// Stored events whose ordering key changed on the way.
    pub rekeyed: Vec<Rekeyed>,
    /// Stored events whose idempotency key no publisher used.
    pub unexpected: Vec<Seq>,
    /// Stored results not computed from their own event's payload.
    pub misprocessed: Vec<Seq>,
    /// Conflicting twins refused (as they must be).
    pub conflicts_refused: u64,
    /// Conflicting twins answered with a seq: (idempotency key, seq).
    pub conflicts_accepted: Vec<(String, Seq)>,
    /// Stored results whose processing no processed log shows (the log is
    /// written before acks leave, so every result's processing is in it).
    pub unlogged_results: Vec<Seq>,
    /// What the processed logs show.
    pub processing: ProcessingReport,
    /// One lane run by two lives at once (see `across_lives.rs`).
    pub across_lives: AcrossLives,
}

impl Report {
    /// Lost acknowledged events, stored events never delivered, and
    /// at-least-once events abandoned.
    pub fn loss_count(&self) -> u64 {
        (self.lost.len() + self.never_delivered.len() + self.abandoned_at_least_once.len()) as u64
    }

    /// Events stored twice, acks that disagree, duplicate processing
    /// within one processor life, and at-most-once events processed twice.
    pub fn duplicate_count(&self) -> u64 {
        (self.duplicate_events.len()
            + self.conflicting_acks.len()
            + self.processing.duplicates.len()
            + self.repeated_at_most_once.len()) as u64
    }

    /// Events of one lane started out of seq order or while another of the
    /// lane was in progress.
    pub fn order_count(&self) -> u64 {
        (self.processing.order_violations.len()
            + self.processing.overlaps.len()
            + self.across_lives.overlaps.len()) as u64
    }

    /// Every violation of the guarantees, added up. Zero means the run kept
    /// every promise.
    pub fn violations(&self) -> u64 {
        let p = &self.processing;
        self.loss_count()
            + self.duplicate_count()
            + self.order_count()
            + (self.rekeyed.len()
                + self.unexpected.len()
                + self.misprocessed.len()
                + self.conflicts_accepted.len()
                + self.unlogged_results.len()
                + p.over_cap.len()
                + p.not_stored.len()
                + p.unmatched_ends.len()) as u64
    }

    /// True when no guarantee was violated.
    pub fn is_valid(&self) -> bool {
        self.violations() == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_valid() { "VALID" } else { "INVALID" };
        let p = &self.processing;
        writeln!(f, "checker: {verdict} ({} violations)", self.violations())?;
        writeln!(
            f,
            "  publishes: {} tried, {} acknowledged, {} unknown outcome ({} of them stored), {} attempts retried after an unknown outcome, {} conflicting twins refused",
            self.attempted,
            self.acknowledged,
            self.unknown,
            self.unknown_stored,
            self.unknown_attempts,
            self.conflicts_refused
        )?;
        writeln!(
            f,
            "  store: {} events, {} ok, {} failed, {} dead, {} abandoned (at most once; {} of them never started)",
            self.stored,
            self.results_ok,
            self.results_failed,
            self.dead,
            self.abandoned,
            self.abandoned_never_started
        )?;
        let hottest = match &self.hottest_key {
            Some((key, n)) => format!(
                ", hottest {key} with {n} ({:.1} %)",
                100.0 * *n as f64 / self.stored.max(1) as f64
            ),
            None => String::new(),
        };
        writeln!(
            f,
            "  keys: {} distinct, {} events without a key{hottest}",
            self.keys, self.unkeyed
        )?;
        writeln!(f, "{p}")?;
        writeln!(
            f,
            "  across lives: {} calls checked in time, {} ran beside a call of a life that had lost its place (at a handoff)",
            self.across_lives.calls_checked, self.across_lives.at_handoff
        )?;
        let counts = [
            ("lost acknowledged events", self.lost.len()),
            ("never delivered", self.never_delivered.len()),
            (
                "abandoned, at least once",
                self.abandoned_at_least_once.len(),
            ),
            (
                "duplicate events/acks",
                self.duplicate_events.len() + self.conflicting_acks.len(),
            ),
            ("duplicate processing", p.duplicates.len()),
            ("at most once, run twice", self.repeated_at_most_once.len()),
            ("order violations (lane)", p.order_violations.len()),
            ("concurrent in one lane", p.overlaps.len()),
            ("one lane in two lives", self.across_lives.overlaps.len()),
            ("lives over the cap", p.over_cap.len()),
            ("rekeyed events", self.rekeyed.len()),
            ("unexpected events", self.unexpected.len()),
            ("misprocessed results", self.misprocessed.len()),
            ("conflicts accepted", self.conflicts_accepted.len()),
            ("results not in the log", self.unlogged_results.len()),
            ("processed, not stored", p.not_stored.len()),
            ("ends without a start", p.unmatched_ends.len()),
        ];
        for (i, (what, n)) in counts.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {:<26} {n}", format!("{what}:"))?;
        }
        if !self.lost.is_empty() {
            write!(f, "\n  first lost: {:?}", first(&self.lost))?;
        }
        if !self.never_delivered.is_empty() {
            write!(
                f,
                "\n  first never delivered: {:?}",
                first(&self.never_delivered)
            )?;
        }
        if !self.abandoned_at_least_once.is_empty() {
            write!(
                f,
                "\n  first abandoned at least once: {:?}",
                first(&self.abandoned_at_least_once)
            )?;
        }
        if !self.repeated_at_most_once.is_empty() {
            write!(
                f,
                "\n  first at most once, run twice: {:?}",
                first(&self.repeated_at_most_once)
            )?;
        }
        if let Some((ik, seqs)) = self.duplicate_events.iter().next() {
            write!(f, "\n  first duplicate event: {ik} at seqs {seqs:?}")?;
        }
        if !self.conflicting_acks.is_empty() {
            write!(
                f,
                "\n  first conflicting acks: {:?}",
                first(&self.conflicting_acks)
            )?;
        }
        if !self.rekeyed.is_empty() {
            write!(f, "\n  first rekeyed: {:?}", first(&self.rekeyed))?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "\n  first unexpected: {:?}", first(&self.unexpected))?;
        }
        if !self.misprocessed.is_empty() {
            write!(f, "\n  first misprocessed: {:?}", first(&self.misprocessed))?;
        }
        if !self.conflicts_accepted.is_empty() {
            write!(
                f,
                "\n  first conflicts accepted: {:?}",
                first(&self.conflicts_accepted)
            )?;
        }
        if !self.unlogged_results.is_empty() {
            write!(
                f,
                "\n  first results not in the log: {:?}",
                first(&self.unlogged_results)
            )?;
        }
        if !self.across_lives.overlaps.is_empty() {
            let shown: Vec<String> = first(&self.across_lives.overlaps)
                .iter()
                .map(|o| {
                    format!(
                        "{}: {} started {} while {} ran {}",
                        o.lane, o.then.0, o.then.1, o.first.0, o.first.1
                    )
                })
                .collect();
            write!(f, "\n  first lanes in two lives: {}", shown.join("; "))?;
        }
        p.fmt_examples(f)
    }
}
