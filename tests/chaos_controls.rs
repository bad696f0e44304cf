//! Negative controls: the checker must be able to fail. Each run breaks one
//! guarantee on purpose with a hidden flag, and the checker has to say so.
//!
//! * The processor without duplicate detection (`--no-dedup`), under ack
//!   loss and duplication, hands some seqs to the algorithm twice in one
//!   life: duplicate processing must be reported.
//! * Core moving the acked floor on send (`--unsafe-floor-on-send`), with a
//!   processor that drops some events, never retransmits them: loss must be
//!   reported. (That floor lives in memory only, so core is not killed.)
//! * SQLite written through the old writer (`--unsafe-sqlx-transactions`),
//!   whose transactions a full disk desynchronised: acknowledged publishes
//!   are lost when its disk fills, and that loss must be reported.
//! * Core not told that a kind is at most once (the checker still holds
//!   `sleep` to it): after processor kills, the sleep events that were
//!   running are processed again by the next life, and that must be
//!   reported.
//! * The processor ignoring core's key ordering (`--unsafe-ignore-order`):
//!   every event starts as soon as it arrives, so events of one hot key run
//!   at the same time (and may start out of seq order): processing of one
//!   key twice at once must be reported.
//! * A processor that never holds its starts (`--unsafe-no-hold`), with a
//!   hot standby and pauses longer than core's silence: thawed, it goes on
//!   with its lanes' queues while the standby runs the same keys; one lane
//!   in two lives at once must be reported.
//! * Core pairing the events committed after a refused request with the
//!   wrong seqs (`--unsafe-pair-after-refusal`, the bug conflicting twins
//!   once revealed), with many conflicting twins: the processor gets events
//!   with other events' payloads, and their results must be reported as
//!   misprocessed.

use std::time::Duration;

use ackflow_tests::chaos::{self, ChaosConfig};
use ackflow_tests::chaos_store::ChaosStore;
use ackflow_tests::checker::{self, Lane};

fn control(seed: u64) -> ChaosConfig {
    let mut config = ChaosConfig::quiet(3_000, seed);
    config.rate = 3_000;
    config.publishers = 2;
    config.drain_timeout = Duration::from_secs(60);
    config.publish_timeout = Duration::from_secs(60);
    config.keep_invalid = false;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dedup_duplicate_processing_is_reported() -> anyhow::Result<()> {
    let mut config = control(1);
    config.ack_loss = 0.2;
    config.duplicate = 0.2;
    config.processor_args.push("--no-dedup".into());
    let outcome = chaos::run(&config).await?;
    println!("{}", outcome.summary(&config));
    let r = &outcome.report;
    assert!(
        !r.processing.duplicates.is_empty(),
        "the checker missed duplicate processing:\n{r}"
    );
    assert!(!r.is_valid());
    assert_eq!(r.loss_count(), 0, "dedup off must not lose anything:\n{r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_ignoring_key_order_is_reported() -> anyhow::Result<()> {
    let mut config = control(4);
    // More sleeps: a hot key's next event arrives while one of its sleeps
    // is still in progress.
    config.sleep_fraction = 0.1;
    config.processor_args.push("--unsafe-ignore-order".into());
    let outcome = chaos::run(&config).await?;
    println!("{}", outcome.summary(&config));
    let r = &outcome.report;
    let p = &r.processing;
    assert!(
        !p.overlaps.is_empty(),
        "the checker missed events of one key processed at once:\n{r}"
    );
    assert!(
        p.overlaps.iter().any(|o| matches!(o.lane, Lane::Key(_))),
        "no keyed lane among the overlaps:\n{r}"
    );
    assert!(!r.is_valid());
    assert_eq!(
        r.loss_count(),
        0,
        "ignoring order must not lose anything:\n{r}"
    );
    assert_eq!(r.duplicate_count(), 0, "nor duplicate anything:\n{r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_delivered_at_least_once_is_reported() -> anyhow::Result<()> {
    let mut config = control(5);
    // Many calls in progress at each kill: the next life runs them again.
    // (A slower rate keeps the window from filling, so the crash suspects
    // after each kill stay few.)
    config.rate = 1_000;
    config.sleep_fraction = 0.3;
    config.sleep_ms = (20, 50);
    config.at_most_once = vec!["sleep".into()];
    config.at_most_once_unenforced = true;
    config.processor_kills = 2;
    let outcome = chaos::run(&config).await?;
    println!("{}", outcome.summary(&config));
    let r = &outcome.report;
    assert!(
        !r.repeated_at_most_once.is_empty(),
        "the checker missed at-most-once events processed twice:\n{r}"
    );
    assert!(!r.is_valid());
    assert_eq!(r.loss_count(), 0, "nothing is lost:\n{r}");
    Ok(())
}

/// Three processors share the keys; each killed one is followed by a new
/// life that joins and wins partitions from the others: without the
/// drain, their events go to it while the processor that held them is
/// still running or queuing their earlier events, and a key runs in two
/// places at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_without_the_drain_is_reported() -> anyhow::Result<()> {
    let mut config = control(7);
    config.rate = 1_000;
    config.processor_standbys = 2;
    config.processor_kills = 3;
    // Long sleeps: a moved key's events are still running or queued where
    // they were when its partition moves back.
    config.sleep_fraction = 0.3;
    config.sleep_ms = (20, 50);
    config
        .core_args
        .push("--unsafe-handoff-without-drain".into());
    let outcome = chaos::run(&config).await?;
    println!("{}", outcome.summary(&config));
    let r = &outcome.report;
    assert!(
        !r.across_lives.overlaps.is_empty(),
        "the checker missed a key run in two places at once:\n{r}"
    );
    assert!(!r.is_valid());
    assert_eq!(r.loss_count(), 0, "nothing is lost:\n{r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_that_never_holds_its_starts_is_reported() -> anyhow::Result<()> {
    let mut config = control(6);
    config.rate = 1_000;
    // One active processor and a hot standby that takes all of its work
    // (under key ordering a second processor shares the keys, and the
    // thawed one's stale runs would meet half as many of them).
    config.ordering = checker::Ordering::Global;
    config.processor_standbys = 1;
    config.active_only = true;
    config.pauses = 2;
    // Longer than core's 3 s of silence: the standby takes over, and the
    // thawed one finds its lanes' queues (sleeps keep them long).
    config.pause_ms = (3_500, 4_500);
    config.sleep_fraction = 0.3;
    config.sleep_ms = (20, 50);
    config.processor_args.push("--unsafe-no-hold".into());
    let outcome = chaos::run(&config).await?;
    println!("{}", outcome.summary(&config));
    let r = &outcome.report;
    assert_eq!(outcome.faults.pauses, 2);
    assert!(
        !r.across_lives.overlaps.is_empty(),
        "the checker missed one lane run by two lives at once:\n{r}"
    );
    assert!(!r.is_valid());
    assert_eq!(r.loss_count(), 0, "nothing is lost:\n{r}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floor_moved_without_results_is_reported_as_loss() -> anyhow::Result<()> {
    let mut config = control(2);
    config.drop_events = 0.1;
    config.core_args.push("--unsafe-floor-on-send".into());
    let outcome = chaos::run(&config).await?;
    println!("{}", outcome.summary(&config));
    let r = &outcome.report;
    assert!(!r.lost.is_empty(), "the checker missed the loss:\n{r}");
    assert!(!r.never_delivered.is_empty());
    assert!(!r.is_valid());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_publishes_lost_to_a_full_disk_are_reported() -> anyhow::Result<()> {
    if std::env::var("ACKFLOW_TEST_NO_MOUNT").as_deref() == Ok("1") {
        eprintln!("SKIPPED: disk fills need a tmpfs; ACKFLOW_TEST_NO_MOUNT=1");
        return Ok(());
    }
    let mut config = control(3);
    config.store = ChaosStore::Sqlite;
    // The old writer loses events only when a rollback leaves an outer
    // transaction open, which not every fill provokes: four fills over
    // 6,000 events make it all but certain.
    config.events = 6_000;
    config.disk_fills = 4;
    config.pad = 2_000;
    config.disk_full_ms = (1_000, 1_500);
    // The lost events leave results without events behind, which the old
    // writer can never store: the backlog does not drain, so do not wait.
    config.drain_timeout = Duration::from_secs(15);
    config.core_args.push("--unsafe-sqlx-transactions".into());
    let outcome = chaos::run(&config).await?;
    println!("{}", outcome.summary(&config));
    let r = &outcome.report;
    assert!(!r.lost.is_empty(), "the checker missed the loss:\n{r}");
    assert!(!r.is_valid());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_paired_with_the_wrong_seqs_are_reported() -> anyhow::Result<()> {
    let mut config = control(6);
    // Many REST publishes, each followed by its conflicting twin, sharing
    // group commits with the streams' events.
    config.rest_fraction = 0.2;
    config.conflicts = 1.0;
    config.core_args.push("--unsafe-pair-after-refusal".into());
    let outcome = chaos::run(&config).await?;
    println!("{}", outcome.summary(&config));
    let r = &outcome.report;
    assert!(r.conflicts_refused > 0, "no twin was refused:\n{r}");
    assert!(
        !r.misprocessed.is_empty(),
        "the checker missed results computed from other events' payloads:\n{r}"
    );
    assert!(!r.is_valid());
    Ok(())
}
