//! The processed logs and what they prove about processing.
//!
//! A processor life writes two lines per event it processes, in the order
//! they happen across all its concurrent calls: `<life> <seq> <attempt>
//! start` when the algorithm starts the event and `<life> <seq> <attempt>
//! end` when it finishes (`retry` instead of `end` when the algorithm asked
//! to retry later: the event may then start again in the same life, before
//! any later event of its lane). Each line ends with its wall-clock time
//! in microseconds, and lines about a life rather than an event (`hold`
//! from the processor, `stopped` and `gone` from the harness's lives log)
//! carry seq 0: those are for [`across_lives`](super::across_lives), and
//! the checks here skip them. (Older processors wrote no time, and before
//! that one line, `<life> <seq> <attempt>`, per event processed one at a
//! time; it reads as a start followed at once by its end.)
//!
//! # Verdicts, per processor life
//!
//! * **duplicate processing**: a seq started twice, not after a `retry`.
//!   Reprocessing in a *later* life is at-least-once working as designed
//!   and is only counted.
//! * **order violation**: an event started after a higher seq of its lane
//!   had started (also an event started again after its `retry` when a
//!   later event of its lane started meanwhile).
//! * **overlap**: an event started while another event of its lane had
//!   started and not ended: one key processed twice at once.
//! * **over the cap**: more events in progress at once than the processor's
//!   `--concurrency` (when the checker is told it).
//! * **not stored**: a processed seq that is no stored event (its lane is
//!   unknown, so it is checked for duplicates only).
//! * **end without a start**: the log contradicts itself.
//!
//! A lane is one key, or the events without a key, under core's
//! `--ordering key`; everything under `--ordering global`. A duplicate
//! start is reported as a duplicate only, not also against its lane's order.
//! A life killed in the middle of calls leaves starts without an end: they
//! count as unfinished, not as a violation, and never overlap the next
//! life (each life is checked apart).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use ackflow_core::model::Seq;

use super::{Ordering, first};

/// Whether a processed-log line says an event started or ended, or
/// that its life lost its place as the one core delivers to (those carry
/// seq 0 and are read by [`across_lives`](super::across_lives) only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Start,
    End,
    /// Ended, asking to retry later.
    Retry,
    /// The processor holds its starts from here on (`hold`).
    Hold,
    /// The harness SIGSTOPped the life (`stopped`, in the run's lives log).
    Stopped,
    /// The life was killed or has exited: it runs nothing after this
    /// (`gone`, in the run's lives log).
    Gone,
}

impl Phase {
    /// Whether the line is about one event (not about its life).
    pub fn is_event(self) -> bool {
        matches!(self, Self::Start | Self::End | Self::Retry)
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
    pub phase: Phase,
    /// When, in wall-clock microseconds since the Unix epoch (lines of
    /// older processors carry none).
    pub at_us: Option<u64>,
}

/// Parses processed-log text (both formats). A SIGKILL can tear the last
/// line of a file; such a line is skipped and counted in the second value.
/// A malformed line anywhere else is an error.
pub fn parse_processed(text: &str) -> anyhow::Result<(Vec<Processed>, u64)> {
    let mut out = Vec::new();
    let mut torn = 0;
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        // The last piece has no newline after it: the write was cut.
        if i + 1 == lines.len() {
            torn += 1;
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let phases: &[Phase] = match fields.get(3) {
            None => &[Phase::Start, Phase::End],
            Some(&"start") => &[Phase::Start],
            Some(&"end") => &[Phase::End],
            Some(&"retry") => &[Phase::Retry],
            Some(&"hold") => &[Phase::Hold],
            Some(&"stopped") => &[Phase::Stopped],
            Some(&"gone") => &[Phase::Gone],
            Some(_) => &[],
        };
        let at_us = match fields.get(4) {
            None => Some(None),
            Some(at) => at.parse::<u64>().ok().map(Some),
        };
        let parsed = match fields.as_slice() {
            [life, seq, attempt] | [life, seq, attempt, _] | [life, seq, attempt, _, _]
                if !phases.is_empty() =>
            {
                seq.parse::<Seq>()
                    .ok()
                    .zip(attempt.parse::<u32>().ok())
                    .zip(at_us)
                    .map(|((seq, attempt), at_us)| (life, seq, attempt, at_us))
            }
            _ => None,
        };
        let Some((life, seq, attempt, at_us)) = parsed else {
            anyhow::bail!("malformed processed-log line {}: {line:?}", i + 1);
        };
        for &phase in phases {
            out.push(Processed {
                life: life.to_string(),
                seq,
                attempt,
                phase,
                at_us,
            });
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

/// What must be processed one at a time, in seq order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lane {
    /// The events with this key (`--ordering key`).
    Key(String),
    /// The events without a key (`--ordering key`).
    Unkeyed,
    /// Every event (`--ordering global`).
    Global,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(key) => write!(f, "key={key}"),
            Self::Unkeyed => f.write_str("no key"),
            Self::Global => f.write_str("global"),
        }
    }
}

/// An event started after a higher seq of its lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderViolation {
    pub life: String,
    pub lane: Lane,
    /// The highest seq of the lane started before.
    pub after: Seq,
    pub seq: Seq,
}

/// An event started while another event of its lane was in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub life: String,
    pub lane: Lane,
    /// The lowest seq of the lane in progress when `seq` started.
    pub running: Seq,
    pub seq: Seq,
}

/// What the processed logs show.
#[derive(Debug, Default, Clone)]
pub struct ProcessingReport {
    /// The ordering the lanes were read under.
    pub ordering: Ordering,
    /// The processor's `--concurrency`, when the checker was told it.
    pub concurrency: Option<u64>,
    /// Processor lives seen in the logs.
    pub lives: u64,
    /// Events started (each start line), over all lives.
    pub started: u64,
    /// Torn last lines (a life killed mid-write).
    pub torn_lines: u64,
    /// Starts never ended (lives killed in the middle of calls).
    pub unfinished: u64,
    /// The most events in progress at once in one life, all lanes together.
    pub max_in_progress: u64,
    /// Seqs started in more than one life (at-least-once across crashes).
    pub reprocessed_across_lives: u64,
    /// Calls that ended asking to retry later.
    pub retries: u64,
    /// (life, seq) started more than once in one life.
    pub duplicates: Vec<(String, Seq)>,
    /// Events started after a higher seq of their lane, in one life.
    pub order_violations: Vec<OrderViolation>,
    /// Events started while another of their lane was in progress.
    pub overlaps: Vec<Overlap>,
    /// (life, the most events it had in progress at once) for the lives
    /// that went over [`concurrency`](Self::concurrency).
    pub over_cap: Vec<(String, u64)>,
    /// (life, seq) processed but not stored.
    pub not_stored: Vec<(String, Seq)>,
    /// (life, seq): an end line without a start in progress.
    pub unmatched_ends: Vec<(String, Seq)>,
}

impl ProcessingReport {
    /// The first few examples of each violation, one line each.
    pub(super) fn fmt_examples(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.duplicates.is_empty() {
            write!(
                f,
                "\n  first duplicate processing (life, seq): {:?}",
                first(&self.duplicates)
            )?;
        }
        if !self.order_violations.is_empty() {
            let shown: Vec<String> = first(&self.order_violations)
                .iter()
                .map(|v| format!("{} {}: {} after {}", v.life, v.lane, v.seq, v.after))
                .collect();
            write!(f, "\n  first order violations: {}", shown.join("; "))?;
        }
        if !self.overlaps.is_empty() {
            let shown: Vec<String> = first(&self.overlaps)
                .iter()
                .map(|o| {
                    format!(
                        "{} {}: {} started while {} ran",
                        o.life, o.lane, o.seq, o.running
                    )
                })
                .collect();
            write!(f, "\n  first concurrent in one lane: {}", shown.join("; "))?;
        }
        if !self.over_cap.is_empty() {
            write!(
                f,
                "\n  lives over the cap of {} (life, most at once): {:?}",
                self.concurrency.unwrap_or_default(),
                first(&self.over_cap)
            )?;
        }
        if !self.not_stored.is_empty() {
            write!(
                f,
                "\n  first processed, not stored (life, seq): {:?}",
                first(&self.not_stored)
            )?;
        }
        if !self.unmatched_ends.is_empty() {
            write!(
                f,
                "\n  first ends without a start (life, seq): {:?}",
                first(&self.unmatched_ends)
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for ProcessingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  processing ({} ordering): {} events started by {} processor lives, at most {} at once (cap {}); {} unfinished and {} lines torn by kills; {} seqs reprocessed by a later life; {} calls asked to retry later",
            self.ordering,
            self.started,
            self.lives,
            self.max_in_progress,
            self.concurrency
                .map_or_else(|| "not checked".to_string(), |c| c.to_string()),
            self.unfinished,
            self.torn_lines,
            self.reprocessed_across_lives,
            self.retries
        )
    }
}

/// One lane within one life.
#[derive(Default)]
struct LaneState {
    /// The highest seq started.
    highest: Option<Seq>,
    /// Seqs started and not ended, with how many starts are open.
    running: BTreeMap<Seq, u32>,
}

/// One life.
#[derive(Default)]
struct LifeState {
    started: HashSet<Seq>,
    /// Seqs whose last call asked to retry later: they may start again.
    retrying: HashSet<Seq>,
    lanes: HashMap<Lane, LaneState>,
    /// Open starts per seq (a duplicate may open a second one).
    open: HashMap<Seq, u32>,
    in_progress: u64,
    most_in_progress: u64,
}

/// Checks `processed` (the lines of each life in the order written), with
/// each seq in the lane `lane_of` gives (`None`: not a stored event), and
/// each life against `concurrency` calls at once. Returns the report and
/// the seqs whose processing ended in some life.
pub fn check(
    processed: &[Processed],
    lane_of: impl Fn(Seq) -> Option<Lane>,
    concurrency: Option<u64>,
) -> (ProcessingReport, HashSet<Seq>) {
    let mut report = ProcessingReport {
        concurrency,
        ..Default::default()
    };
    let mut lives: HashMap<&str, LifeState> = HashMap::new();
    let mut lives_of_seq: HashMap<Seq, HashSet<&str>> = HashMap::new();
    let mut ended = HashSet::new();
    for p in processed {
        if !p.phase.is_event() {
            // About the life, not an event: see `across_lives.rs`.
            continue;
        }
        let life_name = p.life.as_str();
        let life = lives.entry(life_name).or_default();
        let lane_id = lane_of(p.seq);
        match p.phase {
            Phase::Start => {
                report.started += 1;
                lives_of_seq.entry(p.seq).or_default().insert(life_name);
                let again = life.retrying.remove(&p.seq);
                let first_time = life.started.insert(p.seq);
                if !first_time && !again {
                    report.duplicates.push((p.life.clone(), p.seq));
                }
                // A start after a retry is held to its lane's order like a
                // first one: nothing later of its lane may have started.
                let first_time = first_time || again;
                match &lane_id {
                    None => {
                        if first_time {
                            report.not_stored.push((p.life.clone(), p.seq));
                        }
                    }
                    Some(id) => {
                        let lane = life.lanes.entry(id.clone()).or_default();
                        if first_time {
                            if let Some(after) = lane.highest
                                && after > p.seq
                            {
                                report.order_violations.push(OrderViolation {
                                    life: p.life.clone(),
                                    lane: id.clone(),
                                    after,
                                    seq: p.seq,
                                });
                            }
                            if let Some(&running) = lane.running.keys().next() {
                                report.overlaps.push(Overlap {
                                    life: p.life.clone(),
                                    lane: id.clone(),
                                    running,
                                    seq: p.seq,
                                });
                            }
                            lane.highest = lane.highest.max(Some(p.seq));
                        }
                        *lane.running.entry(p.seq).or_default() += 1;
                    }
                }
                *life.open.entry(p.seq).or_default() += 1;
                life.in_progress += 1;
                life.most_in_progress = life.most_in_progress.max(life.in_progress);
            }
            Phase::Hold | Phase::Stopped | Phase::Gone => {}
            Phase::End | Phase::Retry => {
                let Some(open) = life.open.get_mut(&p.seq).filter(|n| **n > 0) else {
                    report.unmatched_ends.push((p.life.clone(), p.seq));
                    continue;
                };
                *open -= 1;
                life.in_progress -= 1;
                if p.phase == Phase::Retry {
                    report.retries += 1;
                    life.retrying.insert(p.seq);
                } else {
                    ended.insert(p.seq);
                }
                if let Some(id) = &lane_id
                    && let Some(lane) = life.lanes.get_mut(id)
                    && let Some(n) = lane.running.get_mut(&p.seq)
                {
                    *n -= 1;
                    if *n == 0 {
                        lane.running.remove(&p.seq);
                    }
                }
            }
        }
    }
    report.lives = lives.len() as u64;
    report.max_in_progress = lives
        .values()
        .map(|l| l.most_in_progress)
        .max()
        .unwrap_or(0);
    if let Some(cap) = concurrency {
        report.over_cap = lives
            .iter()
            .filter(|(_, l)| l.most_in_progress > cap)
            .map(|(name, l)| (name.to_string(), l.most_in_progress))
            .collect();
        report.over_cap.sort();
    }
    report.unfinished = lives.values().map(|l| l.in_progress).sum();
    report.reprocessed_across_lives = lives_of_seq.values().filter(|l| l.len() > 1).count() as u64;
    (report, ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{History, Report, Stored, check};
    use ackflow_core::model::{DeliveryState, ResultStatus};

    const OK: DeliveryState = DeliveryState::Done(ResultStatus::Ok);

    fn stored(seq: Seq, ik: &str, key: Option<&str>) -> Stored {
        Stored {
            seq,
            idempotency_key: Some(ik.into()),
            key: key.map(str::to_string),
            state: OK,
            at_most_once: false,
            misprocessed: false,
        }
    }

    /// Hand-written logs in the processor's format, under key ordering:
    /// seqs 1..=6 with keys a, b, a, -, a, - (`-`: none).
    fn keyed_run(log: &str) -> Report {
        let (lines, torn) = parse_processed(log).expect("a well-formed log");
        assert_eq!(torn, 0);
        keyed_run_with(&lines, None)
    }

    /// [`keyed_run`] on parsed lines, with a concurrency cap.
    fn keyed_run_with(lines: &[Processed], concurrency: Option<u64>) -> Report {
        let keys = [Some("a"), Some("b"), Some("a"), None, Some("a"), None];
        let mut h = History::default();
        let mut store = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let seq = i as Seq + 1;
            let ik = format!("p{seq}");
            h.attempt(&ik, *key);
            h.ack(&ik, seq);
            store.push(stored(seq, &ik, *key));
        }
        check(&h, &store, lines, Ordering::Key, concurrency)
    }

    #[test]
    fn different_keys_may_overlap_and_interleave() {
        let r = keyed_run(
            "L 2 1 start\nL 1 1 start\nL 4 1 start\nL 1 1 end\nL 3 1 start\n\
             L 4 1 end\nL 6 1 start\nL 2 1 end\nL 3 1 end\nL 5 1 start\nL 6 1 end\nL 5 1 end\n",
        );
        assert!(r.is_valid(), "{r}");
        assert_eq!(r.processing.max_in_progress, 3);
        assert_eq!(r.processing.started, 6);
    }

    /// Seqs 2, 4, 5 and 6 processed once each, after what a test gives.
    const REST: &str = "L 2 1 start\nL 2 1 end\nL 4 1 start\nL 4 1 end\n\
                        L 5 1 start\nL 5 1 end\nL 6 1 start\nL 6 1 end\n";

    #[test]
    fn an_event_may_start_again_after_asking_to_retry() {
        let r = keyed_run(&format!(
            "L 1 1 start\nL 1 1 retry\nL 1 3 start\nL 1 3 retry\nL 1 4 start\nL 1 4 end\n\
             L 3 1 start\nL 3 1 end\n{REST}"
        ));
        assert!(r.is_valid(), "{r}");
        assert_eq!((r.processing.retries, r.processing.started), (2, 8));
        // Started again after an end, not a retry: a duplicate.
        let r = keyed_run(&format!(
            "L 1 1 start\nL 1 1 end\nL 1 2 start\nL 1 2 end\nL 3 1 start\nL 3 1 end\n{REST}"
        ));
        assert_eq!(r.processing.duplicates, vec![("L".to_string(), 1)], "{r}");
    }

    #[test]
    fn a_later_event_of_the_lane_before_the_retry_is_an_order_violation() {
        // Seq 3 (key a) ran while seq 1 (key a) waited for its retry.
        let r = keyed_run(&format!(
            "L 1 1 start\nL 1 1 retry\nL 3 1 start\nL 3 1 end\nL 1 2 start\nL 1 2 end\n{REST}"
        ));
        assert!(!r.is_valid());
        assert_eq!(
            r.processing.order_violations,
            vec![OrderViolation {
                life: "L".into(),
                lane: Lane::Key("a".into()),
                after: 3,
                seq: 1,
            }],
            "{r}"
        );
        assert!(r.processing.duplicates.is_empty());
    }

    #[test]
    fn more_calls_at_once_than_the_cap_are_reported() {
        let log = "L 1 1 start\nL 2 1 start\nL 4 1 start\nL 1 1 end\nL 2 1 end\nL 4 1 end\n\
                   M 3 1 start\nM 2 2 start\nM 4 2 start\nM 3 1 end\nM 2 2 end\nM 4 2 end\n\
                   M 5 1 start\nM 5 1 end\nM 6 1 start\nM 6 1 end\n";
        assert!(keyed_run(log).is_valid());
        let (lines, _) = parse_processed(log).unwrap();
        let r = keyed_run_with(&lines, Some(2));
        assert_eq!(
            r.processing.over_cap,
            vec![("L".to_string(), 3), ("M".to_string(), 3)]
        );
        assert_eq!(r.violations(), 2, "{r}");
        assert!(keyed_run_with(&lines, Some(3)).is_valid());
    }

    #[test]
    fn a_key_out_of_seq_order_is_an_order_violation() {
        // Seq 3 (key a) before seq 1 (key a); seq 6 before seq 4 (no key).
        let r = keyed_run(
            "L 3 1 start\nL 3 1 end\nL 1 1 start\nL 1 1 end\nL 2 1 start\nL 2 1 end\n\
             L 6 1 start\nL 6 1 end\nL 4 1 start\nL 4 1 end\nL 5 1 start\nL 5 1 end\n",
        );
        let p = &r.processing;
        assert_eq!(
            p.order_violations,
            vec![
                OrderViolation {
                    life: "L".into(),
                    lane: Lane::Key("a".into()),
                    after: 3,
                    seq: 1
                },
                OrderViolation {
                    life: "L".into(),
                    lane: Lane::Unkeyed,
                    after: 6,
                    seq: 4
                },
            ]
        );
        assert!(p.overlaps.is_empty());
        assert_eq!(r.violations(), 2);
        assert!(
            r.to_string()
                .contains("L key=a: 1 after 3; L no key: 4 after 6"),
            "{r}"
        );
    }

    #[test]
    fn a_key_running_twice_at_once_is_an_overlap() {
        // Seq 3 (key a) starts while seq 1 (key a) runs: in order, but
        // concurrent. Seq 6 starts while seq 4 (both without a key) runs.
        let r = keyed_run(
            "L 1 1 start\nL 2 1 start\nL 3 1 start\nL 1 1 end\nL 3 1 end\nL 2 1 end\n\
             L 4 1 start\nL 5 1 start\nL 6 1 start\nL 6 1 end\nL 5 1 end\nL 4 1 end\n",
        );
        let p = &r.processing;
        assert!(p.order_violations.is_empty(), "{r}");
        assert_eq!(
            p.overlaps,
            vec![
                Overlap {
                    life: "L".into(),
                    lane: Lane::Key("a".into()),
                    running: 1,
                    seq: 3
                },
                Overlap {
                    life: "L".into(),
                    lane: Lane::Unkeyed,
                    running: 4,
                    seq: 6
                },
            ]
        );
        assert_eq!(r.violations(), 2);
    }

    #[test]
    fn lives_are_checked_apart() {
        // Life M starts over at seq 1 while life L's seq 5 never ended (L
        // was killed): neither an order violation nor an overlap.
        let r = keyed_run(
            "L 1 1 start\nL 1 1 end\nL 5 1 start\n\
             M 1 2 start\nM 1 2 end\nM 2 1 start\nM 3 1 start\nM 3 1 end\nM 2 1 end\n\
             M 4 1 start\nM 4 1 end\nM 5 2 start\nM 5 2 end\nM 6 1 start\nM 6 1 end\n",
        );
        assert!(r.is_valid(), "{r}");
        let p = &r.processing;
        assert_eq!(
            (p.lives, p.unfinished, p.reprocessed_across_lives),
            (2, 1, 2)
        );
    }

    #[test]
    fn a_seq_started_twice_in_one_life_is_duplicate_processing() {
        let r = keyed_run(
            "L 1 1 start\nL 1 1 end\nL 1 2 start\nL 1 2 end\nL 2 1 start\nL 2 1 end\n\
             L 3 1 start\nL 3 1 end\nL 4 1 start\nL 4 1 end\nL 5 1 start\nL 5 1 end\n\
             L 6 1 start\nL 6 1 end\n",
        );
        assert_eq!(r.processing.duplicates, vec![("L".to_string(), 1)]);
        assert_eq!(r.order_count(), 0, "a duplicate is reported once");
        assert_eq!(r.violations(), 1);
    }

    #[test]
    fn torn_last_lines_are_tolerated_elsewhere_not() {
        let (lines, torn) = parse_processed("l 1 1 start\nl 1 1 end\nl 2 1 sta").unwrap();
        assert_eq!((lines.len(), torn), (2, 1));
        let (lines, torn) = parse_processed("l 1 1\n").unwrap();
        assert_eq!(
            lines.iter().map(|p| p.phase).collect::<Vec<_>>(),
            vec![Phase::Start, Phase::End],
            "an old line is a whole processing"
        );
        assert_eq!(torn, 0);
        assert!(parse_processed("l 1 1 start\nl x 1 start\nl 3 1 end\n").is_err());
        assert!(parse_processed("l 1 1 begin\nl 1 1 end\n").is_err());
    }

    #[test]
    fn an_end_without_a_start_is_reported() {
        let r = keyed_run(
            "L 1 1 start\nL 1 1 end\nL 1 1 end\nL 2 1 start\nL 2 1 end\nL 3 1 start\nL 3 1 end\n\
             L 4 1 start\nL 4 1 end\nL 5 1 start\nL 5 1 end\nL 6 1 start\nL 6 1 end\n",
        );
        assert_eq!(r.processing.unmatched_ends, vec![("L".to_string(), 1)]);
        assert_eq!(r.violations(), 1, "{r}");
    }

    #[test]
    fn global_order_is_one_lane() {
        let keys = [Some("a"), Some("b"), None];
        let mut h = History::default();
        let mut store = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let seq = i as Seq + 1;
            h.attempt(&format!("p{seq}"), *key);
            h.ack(&format!("p{seq}"), seq);
            store.push(stored(seq, &format!("p{seq}"), *key));
        }
        let interleaved =
            "L 1 1 start\nL 2 1 start\nL 1 1 end\nL 2 1 end\nL 3 1 start\nL 3 1 end\n";
        let (p, _) = parse_processed(interleaved).unwrap();
        assert!(check(&h, &store, &p, Ordering::Key, None).is_valid());
        let r = check(&h, &store, &p, Ordering::Global, None);
        assert_eq!(
            r.processing.overlaps,
            vec![Overlap {
                life: "L".into(),
                lane: Lane::Global,
                running: 1,
                seq: 2
            }]
        );
        let (p, _) = parse_processed("L 2 1\nL 1 1\nL 3 1\n").unwrap();
        let r = check(&h, &store, &p, Ordering::Global, None);
        assert_eq!(r.processing.order_violations.len(), 1, "{r}");
        assert!(r.processing.overlaps.is_empty(), "old lines are whole");
    }
}
