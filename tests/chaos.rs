//! Short chaos runs on every CI submission, with keyed events (a few hot
//! keys, a long tail, 10 % without a key, 5 % `sleep` events of 1-5 ms):
//!
//! * PostgreSQL under `--ordering key`, the processor at `--concurrency 8`:
//!   10,000 publishes with ack loss, duplication, two SIGKILLs of the
//!   processor and two of core, processor pauses longer than the ack
//!   timeout, proxy resets, a half-open episode and a latency window; 5 %
//!   of the events go to a failing webhook, and `wordcount` events are
//!   delivered at most once (`--at-most-once`);
//! * PostgreSQL under `--ordering global`: 3,000 publishes with a SIGKILL of
//!   each and ack loss;
//! * SQLite: 5,000 publishes while its disk fills up three times, with a
//!   SIGKILL of core and of the processor;
//! * two cores on one PostgreSQL database, one standing by: 5,000
//!   publishes while whichever core leads is killed twice and frozen once
//!   (the other takes over each time), with a processor kill, ack loss and
//!   a webhook; publishers and the processor must follow the leader.
//!
//! The checker must find nothing lost or duplicated, and within each
//! processor life no lane (a key, the events without a key, or everything
//! under global order) processed out of seq order or twice at once.
//!
//! The seed is random and printed; `ACKFLOW_CHAOS_SEED=<seed>` reruns the
//! same schedule (CI sets a fixed one, so a red run can be replayed). The
//! full-size run is the `ackflow-chaos` binary (see docs/RELIABILITY.md).

use std::time::Duration;

use ackflow_tests::chaos::{self, ChaosConfig};
use ackflow_tests::chaos_store::ChaosStore;
use ackflow_tests::checker::Ordering;

/// `ACKFLOW_CHAOS_SEED`, or a random seed.
fn seed() -> u64 {
    std::env::var("ACKFLOW_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// Runs `config`, prints its summary, and asserts that the backlog drained
/// and the checker found no violation.
async fn run_valid(config: &ChaosConfig) -> anyhow::Result<chaos::ChaosOutcome> {
    let seed = config.seed;
    let mut config = config.clone();
    config.verbose = true;
    println!("chaos seed {seed} (rerun with ACKFLOW_CHAOS_SEED={seed})");
    let outcome = chaos::run(&config).await?;
    println!("{}", outcome.summary(&config));
    let r = &outcome.report;
    assert!(outcome.drained, "the backlog did not drain (seed {seed})");
    assert!(r.is_valid(), "violations found (seed {seed}):\n{r}");
    assert!(
        r.conflicts_refused > 0,
        "no conflicting twin was refused, so the run tried no refusal inside a group commit (seed {seed}):\n{r}"
    );
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_chaos_run_keeps_every_guarantee() -> anyhow::Result<()> {
    let mut config = ChaosConfig::quiet(10_000, seed());
    config.rate = 2_500;
    config.processor_kills = 2;
    config.core_kills = 2;
    config.pauses = 2;
    config.pause_ms = (1_200, 2_000);
    config.proxy_resets = 4;
    config.half_opens = 1;
    config.half_open_hold = Duration::from_secs(12);
    config.latency_windows = 1;
    config.ack_loss = 0.1;
    config.duplicate = 0.02;
    // Low enough that the cap binds at times (the checker holds every life
    // to it), high enough for the hot keys not to starve the rest.
    config.concurrency = 8;
    // 5 % of the events go to a webhook that answers 10 % of calls with 503
    // and lets 2 % hang past the timeout: each is retried later, and must
    // still end as exactly one result, in order within its key.
    config.webhooks = 0.05;
    // `wordcount` events (about 8 %) are delivered at most once: the
    // checker lets them be abandoned and flags any started twice.
    config.at_most_once = vec!["wordcount".into()];
    // Some seeds kill the processor with the whole window in flight and
    // again while its crash suspects are narrowed down (in halves).
    config.drain_timeout = Duration::from_secs(150);
    config.publish_timeout = Duration::from_secs(120);
    let outcome = run_valid(&config).await?;
    let r = &outcome.report;
    assert_eq!(r.acknowledged + r.unknown, r.attempted);
    assert!(
        r.acknowledged >= 9_900,
        "only {} of 10,000 publishes acknowledged",
        r.acknowledged
    );
    assert_eq!(outcome.faults.processor_kills, 2);
    assert_eq!(outcome.faults.core_kills, 2);
    let p = &r.processing;
    assert!(p.lives >= 3, "expected 3 processor lives, saw {}", p.lives);
    // The run exercised what key ordering allows: many keys, calls of
    // different keys in progress at the same time.
    assert!(r.keys >= 200 && r.unkeyed > 0, "{r}");
    assert!(
        p.max_in_progress > 1,
        "no two calls ever overlapped: key ordering was not exercised\n{r}"
    );
    assert!(
        r.abandoned > 0,
        "no at-most-once event was abandoned: the kills and ack loss did not reach one\n{r}"
    );
    let (_, errors, hangs) = outcome.webhook.expect("the webhook endpoint ran");
    assert!(
        errors > 0 && hangs > 0 && p.retries > 0,
        "the webhook faults were not exercised: {errors} 503s, {hangs} hangs, {} retries",
        p.retries
    );
    Ok(())
}

/// A processor that claims at-most-once events when it is about to start
/// them (its lane's turn, a slot free) loses to a kill only those that may
/// have run: at most `--concurrency` were granted and not yet started when
/// it died. Few keys, slow `sleep` events and mostly at-most-once kinds, so
/// that at every kill many at-most-once events wait behind their keys (a
/// processor handed them before their turn lost all of those).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processor_kills_abandon_only_at_most_once_events_that_may_have_run() -> anyhow::Result<()>
{
    let mut config = ChaosConfig::quiet(3_000, seed());
    config.rate = 1_500;
    config.keys = 12;
    config.sleep_fraction = 0.2;
    config.sleep_ms = (5, 20);
    config.concurrency = 4;
    config.processor_kills = 3;
    config.at_most_once = vec!["sha256".into(), "wordcount".into(), "sum".into()];
    config.drain_timeout = Duration::from_secs(90);
    config.publish_timeout = Duration::from_secs(60);
    let outcome = run_valid(&config).await?;
    let r = &outcome.report;
    let kills = u64::from(outcome.faults.processor_kills);
    assert_eq!(kills, 3);
    assert!(
        r.abandoned_never_started <= kills * u64::from(config.concurrency),
        "{} at-most-once events abandoned without ever starting after {kills} kills (at most {} may have been granted and not started)\n{r}",
        r.abandoned_never_started,
        kills * u64::from(config.concurrency)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_chaos_run_with_a_standby_core_keeps_every_guarantee() -> anyhow::Result<()> {
    let mut config = ChaosConfig::quiet(5_000, seed());
    config.standby = true;
    config.rate = 1_000;
    config.core_kills = 2;
    config.core_pauses = 1;
    config.processor_kills = 1;
    config.proxy_resets = 2;
    config.ack_loss = 0.05;
    config.duplicate = 0.02;
    config.webhooks = 0.05;
    config.drain_timeout = Duration::from_secs(60);
    config.publish_timeout = Duration::from_secs(120);
    let outcome = run_valid(&config).await?;
    let r = &outcome.report;
    assert!(
        r.acknowledged >= 4_950,
        "only {} of 5,000 publishes acknowledged",
        r.acknowledged
    );
    assert_eq!(outcome.faults.core_kills, 2);
    assert_eq!(outcome.faults.core_pauses, 1);
    Ok(())
}

/// Hot standby processors: kills and pauses hit the active one, and a
/// standby takes over (at once after a kill; after a pause longer than
/// core's `--processor-silence-ms`, once the silence is noticed), while the
/// paused one, thawed, finishes what it had started and rejoins as a
/// standby; or they hit the standby, and nothing changes but who waits.
/// No lane runs in two lives at once but for what ran at a handoff
/// (`checker/across_lives.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_chaos_run_with_standby_processors_keeps_every_guarantee() -> anyhow::Result<()> {
    let mut config = ChaosConfig::quiet(5_000, seed());
    config.rate = 1_000;
    config.processor_standbys = 1;
    config.processor_kills = 2;
    config.pauses = 2;
    // Longer than core's 3 s of silence: the standby takes over.
    config.pause_ms = (3_500, 4_500);
    config.ack_loss = 0.05;
    config.duplicate = 0.02;
    config.drain_timeout = Duration::from_secs(60);
    config.publish_timeout = Duration::from_secs(120);
    let outcome = run_valid(&config).await?;
    let r = &outcome.report;
    assert!(
        r.acknowledged >= 4_950,
        "only {} of 5,000 publishes acknowledged",
        r.acknowledged
    );
    assert_eq!(outcome.faults.processor_kills, 2);
    assert_eq!(outcome.faults.pauses, 2);
    // A kill or pause of the active one hands its work to another life.
    // (One in three hits the standby instead: with four faults, not all.)
    let f = &outcome.faults;
    if f.standby_hits < f.processor_kills + f.pauses {
        assert!(
            r.processing.lives >= 2,
            "lives that processed events: {}\n{r}",
            r.processing.lives
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_chaos_run_in_global_order_keeps_every_guarantee() -> anyhow::Result<()> {
    let mut config = ChaosConfig::quiet(3_000, seed());
    config.ordering = Ordering::Global;
    // One lane: every sleep holds up everything behind it.
    config.rate = 1_000;
    config.sleep_fraction = 0.02;
    config.processor_kills = 1;
    config.core_kills = 1;
    config.ack_loss = 0.1;
    config.duplicate = 0.02;
    config.drain_timeout = Duration::from_secs(60);
    config.publish_timeout = Duration::from_secs(60);
    let outcome = run_valid(&config).await?;
    let r = &outcome.report;
    assert!(
        r.acknowledged >= 2_970,
        "only {} of 3,000 publishes acknowledged",
        r.acknowledged
    );
    assert_eq!(outcome.faults.processor_kills, 1);
    assert_eq!(r.processing.max_in_progress, 1, "{r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_chaos_run_with_full_disks_on_sqlite_keeps_every_guarantee() -> anyhow::Result<()> {
    if std::env::var("ACKFLOW_TEST_NO_MOUNT").as_deref() == Ok("1") {
        eprintln!("SKIPPED: disk fills need a tmpfs; ACKFLOW_TEST_NO_MOUNT=1");
        return Ok(());
    }
    let mut config = ChaosConfig::quiet(5_000, seed());
    config.store = ChaosStore::Sqlite;
    config.rate = 1_500;
    config.disk_fills = 3;
    config.pad = 2_000;
    config.disk_full_ms = (500, 2_000);
    config.processor_kills = 1;
    config.core_kills = 1;
    config.ack_loss = 0.05;
    // Some seeds kill the processor with the whole window in flight and
    // again while its crash suspects are narrowed down (in halves).
    config.drain_timeout = Duration::from_secs(150);
    config.publish_timeout = Duration::from_secs(120);
    let outcome = run_valid(&config).await?;
    let r = &outcome.report;
    assert_eq!(outcome.faults.disk_fills, 3);
    assert!(
        r.acknowledged >= 4_900,
        "only {} of 5,000 publishes acknowledged",
        r.acknowledged
    );
    Ok(())
}
