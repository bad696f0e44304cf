//! Where the open loop's slowest events waited, and what the database did
//! meanwhile.
//!
//! An open loop's p99 and max come from a few hundred events. Grouped by the
//! time they were sent, they show whether the tail is one stall that held
//! every event for a while (a checkpoint, an autovacuum, a process off the
//! CPU) or slow events spread over the run (a commit queued behind another).
//! Each group says how its worst event's time split between the ingest side
//! (sent → its commit's start) and the delivery side (that commit's start →
//! its result stored). `DbActivity` counts the checkpoints and the
//! autovacuum and autoanalyze runs on the section's tables that fell inside
//! the run.

use std::fmt;

/// An event's times, wall-clock µs: sent by the producer, its commit's
/// start, its result's commit's start.
#[derive(Clone, Copy)]
pub(super) struct Times {
    pub(super) seq: u64,
    pub(super) sent: i64,
    pub(super) published: i64,
    pub(super) stored: i64,
}

/// One group of slow events sent close together.
struct Stall {
    /// The first slow event's send, µs after the run's first.
    from_us: i64,
    /// The last slow event's send, µs after the run's first.
    to_us: i64,
    events: usize,
    worst: Times,
}

/// The events slower than a threshold, grouped by send time.
pub(super) struct Stalls {
    over_ms: f64,
    stalls: Vec<Stall>,
}

/// Slow events sent less than this apart belong to one stall.
const GAP_US: i64 = 20_000;
/// At most this many stalls are printed, the worst first.
const SHOWN: usize = 5;

impl Stalls {
    /// Groups the events slower than `over_ms`.
    pub(super) fn of(mut events: Vec<Times>, over_ms: f64) -> Self {
        let first = events.iter().map(|t| t.sent).min().unwrap_or(0);
        let over_us = (over_ms * 1_000.0) as i64;
        events.retain(|t| t.stored - t.sent > over_us);
        events.sort_by_key(|t| t.sent);
        let mut stalls: Vec<Stall> = Vec::new();
        for t in events {
            match stalls.last_mut() {
                Some(s) if t.sent - first - s.to_us < GAP_US => {
                    s.to_us = t.sent - first;
                    s.events += 1;
                    if t.stored - t.sent > s.worst.stored - s.worst.sent {
                        s.worst = t;
                    }
                }
                _ => stalls.push(Stall {
                    from_us: t.sent - first,
                    to_us: t.sent - first,
                    events: 1,
                    worst: t,
                }),
            }
        }
        stalls.sort_by_key(|s| std::cmp::Reverse(s.worst.stored - s.worst.sent));
        Self { over_ms, stalls }
    }
}

impl fmt::Display for Stalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events: usize = self.stalls.iter().map(|s| s.events).sum();
        write!(
            f,
            "{events} events over {} ms, in {} groups",
            self.over_ms,
            self.stalls.len()
        )?;
        for s in self.stalls.iter().take(SHOWN) {
            let w = s.worst;
            write!(
                f,
                "\n      at {:.3}–{:.3} s: {} events, worst {:.1} ms = {:.1} to its commit + {:.1} to its result",
                s.from_us as f64 / 1e6,
                s.to_us as f64 / 1e6,
                s.events,
                (w.stored - w.sent) as f64 / 1e3,
                (w.published - w.sent) as f64 / 1e3,
                (w.stored - w.published) as f64 / 1e3,
            )?;
        }
        Ok(())
    }
}

/// The delivery side of each event's latency split at the moment the
/// processor started it (its processed log's `start` line, the first one
/// for a seq): its commit's start → that start, and that start → its
/// result stored.
pub(super) fn split_at_start(
    log: &std::path::Path,
    times: &[Times],
) -> anyhow::Result<(super::Latency, super::Latency)> {
    let mut started = std::collections::HashMap::new();
    for line in std::fs::read_to_string(log)?.lines() {
        // `life seq attempt phase at_us`
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, seq, _, "start", at] = fields[..] {
            started
                .entry(seq.parse::<u64>()?)
                .or_insert(at.parse::<i64>()?);
        }
    }
    let (mut to_start, mut start_to_stored) = (Vec::new(), Vec::new());
    for t in times {
        if let Some(&at) = started.get(&t.seq) {
            to_start.push(at - t.published);
            start_to_stored.push(t.stored - at);
        }
    }
    anyhow::ensure!(
        to_start.len() == times.len(),
        "the processed log has {} of {} events",
        to_start.len(),
        times.len()
    );
    Ok((
        super::Latency::of(to_start),
        super::Latency::of(start_to_stored),
    ))
}

/// Counters of PostgreSQL's background work, to difference over a run.
#[derive(Clone, Copy, Default)]
pub(super) struct DbActivity {
    checkpoints: i64,
    autovacuums: i64,
    autoanalyzes: i64,
}

impl DbActivity {
    /// The server's checkpoints so far and the autovacuum and autoanalyze
    /// runs on the database's own tables (PostgreSQL only; zeros on SQLite).
    pub(super) async fn read(url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        if url.starts_with("sqlite:") {
            return Ok(Self::default());
        }
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let (checkpoints,): (i64,) =
            sqlx::query_as("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
                .fetch_one(&mut conn)
                .await?;
        let (autovacuums, autoanalyzes): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(sum(autovacuum_count), 0)::bigint, \
                    COALESCE(sum(autoanalyze_count), 0)::bigint FROM pg_stat_user_tables",
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(Self {
            checkpoints,
            autovacuums,
            autoanalyzes,
        })
    }

    /// What happened between `self` (before) and `after`.
    pub(super) fn since(self, after: Self) -> Self {
        Self {
            checkpoints: after.checkpoints - self.checkpoints,
            autovacuums: after.autovacuums - self.autovacuums,
            autoanalyzes: after.autoanalyzes - self.autoanalyzes,
        }
    }
}

impl fmt::Display for DbActivity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} checkpoints, {} autovacuums and {} autoanalyzes of its tables",
            self.checkpoints, self.autovacuums, self.autoanalyzes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sent_ms: i64, latency_ms: i64) -> Times {
        Times {
            seq: sent_ms as u64,
            sent: sent_ms * 1_000,
            published: sent_ms * 1_000 + 1_000,
            stored: (sent_ms + latency_ms) * 1_000,
        }
    }

    #[test]
    fn slow_events_sent_close_together_are_one_stall() {
        let events = vec![
            t(0, 2),
            t(100, 30),
            t(110, 40),
            t(125, 28),
            t(500, 3),
            t(900, 27),
        ];
        let stalls = Stalls::of(events, 25.0);
        assert_eq!(stalls.stalls.len(), 2);
        let worst = &stalls.stalls[0];
        assert_eq!(
            (worst.events, worst.from_us, worst.to_us),
            (3, 100_000, 125_000)
        );
        assert_eq!(worst.worst.stored - worst.worst.sent, 40_000);
        assert_eq!(stalls.stalls[1].events, 1);
    }
}
