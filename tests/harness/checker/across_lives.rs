//! One lane run by two processor lives at once.
//!
//! [`processing`](super::processing) checks each life apart. With hot
//! standbys, two lives are up at the same time, and core hands a lane from
//! one to the other when the first one's stream ends, it falls silent, or
//! it is killed. The promise: a processor starts nothing once it may no
//! longer be the one core delivers to (`processor/src/hold.rs`), so only an
//! event that was already running when its life lost its place can run
//! beside the same lane's events in the next life.
//!
//! The lines carry wall-clock times (all processes share one machine's
//! clock). Each event's call is an interval from its start to its end (or
//! retry); a start never ended is bounded by its life's `gone` (killed or
//! exited, from the harness) and is not checked without one. A life loses
//! its place at each `hold` (the processor's own line, written after it
//! set the hold) and each `stopped` (the harness's SIGSTOP).
//!
//! **Verdict**, per lane: when a call of life M starts while a call of
//! another life L of the same lane is in progress, L must have lost its
//! place between its call's start and M's start. Otherwise both ran the
//! lane at once with neither told to stop: a **handoff overlap**.
//! Overlaps that L's loss of place explains are counted, not violations.

use std::collections::HashMap;

use ackflow_core::model::Seq;

use super::processing::{Lane, Phase, Processed};

/// A call of `then` started while `first` of another life ran the same
/// lane, and `first`'s life had not lost its place in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffOverlap {
    pub lane: Lane,
    /// (life, seq) of the call in progress.
    pub first: (String, Seq),
    /// (life, seq) of the call that started beside it.
    pub then: (String, Seq),
}

/// What the check across lives found.
#[derive(Debug, Default, Clone)]
pub struct AcrossLives {
    /// Calls with both ends known in time, checked against other lives.
    pub calls_checked: u64,
    /// Calls of another life of the lane started beside one whose life had
    /// lost its place: the events running at a handoff.
    pub at_handoff: u64,
    pub overlaps: Vec<HandoffOverlap>,
}

/// One call: `[start, end]` in µs.
struct Call<'a> {
    life: &'a str,
    seq: Seq,
    start: u64,
    end: u64,
}

/// Checks `processed` (every life's lines and the harness's, with times),
/// each event in the lane `lane_of` gives.
pub fn check(processed: &[Processed], lane_of: impl Fn(Seq) -> Option<Lane>) -> AcrossLives {
    let mut gone: HashMap<&str, u64> = HashMap::new();
    let mut lost: HashMap<&str, Vec<u64>> = HashMap::new();
    for p in processed {
        match (p.phase, p.at_us) {
            (Phase::Gone, Some(at)) => {
                let t = gone.entry(&p.life).or_insert(at);
                *t = (*t).min(at);
            }
            (Phase::Hold | Phase::Stopped, Some(at)) => lost.entry(&p.life).or_default().push(at),
            _ => {}
        }
    }
    for times in lost.values_mut() {
        times.sort_unstable();
    }
    // Calls per lane: starts paired with their end in each life's order.
    let mut open: HashMap<(&str, Seq), Vec<u64>> = HashMap::new();
    let mut lanes: HashMap<Lane, Vec<Call>> = HashMap::new();
    for p in processed {
        let Some(at) = p.at_us else { continue };
        match p.phase {
            Phase::Start => open.entry((&p.life, p.seq)).or_default().push(at),
            Phase::End | Phase::Retry => {
                let start = open.get_mut(&(p.life.as_str(), p.seq)).and_then(Vec::pop);
                if let (Some(start), Some(lane)) = (start, lane_of(p.seq)) {
                    lanes.entry(lane).or_default().push(Call {
                        life: &p.life,
                        seq: p.seq,
                        start,
                        end: at,
                    });
                }
            }
            _ => {}
        }
    }
    for ((life, seq), starts) in open {
        let (Some(&end), Some(lane)) = (gone.get(life), lane_of(seq)) else {
            continue;
        };
        for start in starts {
            lanes.entry(lane.clone()).or_default().push(Call {
                life,
                seq,
                start,
                end,
            });
        }
    }
    let lost_between = |life: &str, from: u64, to: u64| {
        lost.get(life)
            .is_some_and(|times| times.iter().any(|t| (from..=to).contains(t)))
    };
    let mut out = AcrossLives::default();
    for (lane, mut calls) in lanes {
        calls.sort_by_key(|c| (c.start, c.end));
        out.calls_checked += calls.len() as u64;
        // The calls in progress as each one starts.
        let mut running: Vec<&Call> = Vec::new();
        for call in &calls {
            running.retain(|r| r.end > call.start);
            for first in running.iter().filter(|r| r.life != call.life) {
                if lost_between(first.life, first.start, call.start) {
                    out.at_handoff += 1;
                } else {
                    out.overlaps.push(HandoffOverlap {
                        lane: lane.clone(),
                        first: (first.life.to_string(), first.seq),
                        then: (call.life.to_string(), call.seq),
                    });
                }
            }
            running.push(call);
        }
    }
    out.overlaps.sort_by_key(|o| (o.first.1, o.then.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::parse_processed;

    /// Every seq in key a.
    fn run(log: &str) -> AcrossLives {
        let (lines, torn) = parse_processed(log).expect("well formed");
        assert_eq!(torn, 0);
        check(&lines, |_| Some(Lane::Key("a".into())))
    }

    #[test]
    fn a_lane_run_by_two_lives_at_once_is_an_overlap_unless_the_first_lost_its_place() {
        // L runs seq 1 from 100 to 500; M starts seq 1 again at 300, then
        // seq 2 at 600 after L ended.
        let lines = "L 1 1 start 100\nM 1 2 start 300\nL 1 1 end 500\nM 1 2 end 550\n\
                     M 2 1 start 600\nM 2 1 end 700\n";
        let r = run(lines);
        assert_eq!(r.calls_checked, 3);
        assert_eq!(
            r.overlaps,
            vec![HandoffOverlap {
                lane: Lane::Key("a".into()),
                first: ("L".into(), 1),
                then: ("M".into(), 1),
            }]
        );
        // L held its starts at 200: seq 1 was running when it lost its place.
        let r = run(&format!("L 0 0 hold 200\n{lines}"));
        assert!(r.overlaps.is_empty());
        assert_eq!(r.at_handoff, 1);
        // The harness stopped L at 150: the same.
        let r = run(&format!("L 0 0 stopped 150\n{lines}"));
        assert!(r.overlaps.is_empty());
        // A hold before L's start does not explain it: L started while held.
        let r = run(&format!("L 0 0 hold 50\n{lines}"));
        assert_eq!(r.overlaps.len(), 1);
        // Nor does one after M started.
        let r = run(&format!("L 0 0 hold 400\n{lines}"));
        assert_eq!(r.overlaps.len(), 1);
    }

    #[test]
    fn an_unfinished_call_lasts_until_its_life_is_gone() {
        // L killed at 250 while seq 1 ran; M runs it from 300: no overlap.
        let killed = "L 1 1 start 100\nL 0 0 gone 250\nM 1 2 start 300\nM 1 2 end 400\n";
        let r = run(killed);
        assert_eq!((r.calls_checked, r.overlaps.len()), (2, 0));
        // Gone only at 350: M started beside it.
        let r = run(&killed.replace("gone 250", "gone 350"));
        assert_eq!(r.overlaps.len(), 1);
        // Without a `gone` the call is not checked.
        let r = run("L 1 1 start 100\nM 1 2 start 300\nM 1 2 end 400\n");
        assert_eq!((r.calls_checked, r.overlaps.len()), (1, 0));
    }

    #[test]
    fn other_lanes_and_lines_without_times_are_apart() {
        let (lines, _) =
            parse_processed("L 1 1 start 100\nM 2 1 start 200\nL 1 1 end 300\nM 2 1 end 400\n")
                .unwrap();
        let r = check(&lines, |seq| Some(Lane::Key(seq.to_string())));
        assert_eq!((r.calls_checked, r.overlaps.len()), (2, 0));
        let r = run("L 1 1 start\nM 1 2 start\nL 1 1 end\nM 1 2 end\n");
        assert_eq!((r.calls_checked, r.overlaps.len()), (0, 0));
    }
}
