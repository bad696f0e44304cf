//! A frozen processor and the one that takes its work, end to end; and a
//! processor whose stream ends.
//!
//! Processors `a` and `b` share the keys (key ordering: each owns some of
//! the partitions). `a` is frozen (SIGSTOP) with its events in flight,
//! most of them queued behind their keys; core hears nothing from it for
//! `--processor-silence-ms` and hands its partitions and events to `b`.
//! Then `a` is thawed. It must start nothing more: the events it still
//! holds are `b`'s now, and starting them would run the same keys in two
//! places at once (`processor/src/hold.rs`). What both processed is at
//! most what `a` had in progress at the freeze: one event per key. Then
//! `b` is killed and `a` takes new events of every key: nothing it kept
//! across the freeze may be lost (a run's report dropped at the thaw once
//! left its key stuck for ever). Under global ordering the same holds with
//! `b` as a hot standby (`core/tests/hub.rs` has the standby's rules).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use ackflow_tests::checker::{Lane, check_across_lives, read_processed};
use ackflow_tests::{Core, post_json, start_processor, wait_for};

const KEYS: u64 = 4;
const PER_KEY: u64 = 12;
/// Each event's `sleep`, in milliseconds. The keys run in step (published
/// together, each event as long), so right after the floor moves no event
/// is about to finish: the freeze finds every ack of `a` delivered and one
/// event per key in progress.
const SLEEP_MS: u64 = 600;

/// The seqs a processed log shows started.
fn started(log: &Path) -> BTreeSet<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words.get(3) == Some(&"start")).then(|| words[1].parse().ok())?
        })
        .collect()
}

/// Publishes `PER_KEY` sleeps of `SLEEP_MS` on each of `KEYS` keys, the
/// keys in turn; returns how many.
async fn publish_sleeps(core: &Core) -> anyhow::Result<u64> {
    let events = KEYS * PER_KEY;
    for n in 0..events {
        let body = format!(
            r#"{{"kind":"sleep","key":"k{}","payload":{SLEEP_MS}}}"#,
            n % KEYS
        );
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish {n}: {status} {text}");
    }
    Ok(events)
}

/// The active processors' ids, from core's snapshot.
async fn active(core: &Core) -> Option<Vec<String>> {
    let snapshot = core.snapshot().await.ok()?;
    Some(
        snapshot
            .processors
            .into_iter()
            .map(|p| p.processor_id)
            .collect(),
    )
}

/// Waits until exactly `ids` are active.
async fn wait_active(core: &Core, ids: &[&str]) -> anyhow::Result<()> {
    wait_for(
        &format!("{ids:?} active"),
        Duration::from_secs(30),
        || async {
            let mut active = active(core).await?;
            active.sort();
            (active == ids).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thawed_processor_starts_nothing_its_standby_took_over() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--processor-silence-ms", "1500"]).await?;
    let log = |id: &str| dir.path().join(format!("processed-{id}.log"));
    let processor = |id: &str| -> anyhow::Result<ackflow_tests::Proc> {
        let path = log(id);
        let sub = dir.path().join(id);
        std::fs::create_dir_all(&sub)?;
        start_processor(
            &sub,
            &core.grpc_url(),
            &[
                "--processor-id",
                id,
                "--processed-log",
                &path.display().to_string(),
            ],
        )
    };
    let mut a = processor("a")?;
    wait_active(&core, &["a"]).await?;
    let mut b = processor("b")?;
    wait_active(&core, &["a", "b"]).await?;

    let events = publish_sleeps(&core).await?;
    // Two rounds of results in: each runs the third event of each of its
    // keys, and every key has a queue behind it.
    wait_for("a processing", Duration::from_secs(30), || async {
        let s = core.snapshot().await.ok()?;
        (s.acked_floor > 2 * KEYS && s.next_to_send > events).then_some(())
    })
    .await?;

    a.freeze().await?;
    wait_active(&core, &["b"]).await?;
    a.signal("-CONT")?;
    wait_for("every event resolved", Duration::from_secs(120), || async {
        let s = core.snapshot().await.ok()?;
        (s.acked_floor > events).then_some(())
    })
    .await?;
    // `a` is back, holding what it kept across the freeze. Now `b` goes,
    // and `a` must process new events of every key: a run's report lost at
    // the thaw would leave its key stuck for ever.
    wait_active(&core, &["a", "b"]).await?;
    b.kill().await;
    for n in 0..KEYS {
        let body = format!(r#"{{"kind":"sleep","key":"k{n}","payload":1}}"#);
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish: {status} {text}");
    }
    wait_for(
        "a takes over and resolves the new events",
        Duration::from_secs(60),
        || async {
            let s = core.snapshot().await.ok()?;
            (s.acked_floor > events + KEYS).then_some(())
        },
    )
    .await?;
    a.terminate().await?;

    // The first batch: what the freeze may have run twice.
    let first = |log: &Path| -> BTreeSet<u64> {
        started(log).into_iter().filter(|s| *s <= events).collect()
    };
    let (by_a, by_b) = (first(&log("a")), first(&log("b")));
    let both: Vec<&u64> = by_a.intersection(&by_b).collect();
    println!(
        "started by a {}, by b {}, by both {}: {both:?}",
        by_a.len(),
        by_b.len(),
        both.len()
    );
    // Only what `a` had in progress at the freeze: one event per key.
    assert!(
        both.len() as u64 <= KEYS,
        "{} seqs started by both a and b (a: {}, b: {}): {both:?}",
        both.len(),
        by_a.len(),
        by_b.len()
    );
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "both took part: a {}, b {}",
        by_a.len(),
        by_b.len()
    );
    assert_eq!(
        (by_a.len() + by_b.len() - both.len()) as u64,
        events,
        "every event started somewhere"
    );
    Ok(())
}

/// Processor `a` ends its own stream every few seconds (`--cut-every-s`);
/// core hands its events to `b`, which shares the keys, as soon as a stream ends
/// (`--processor-return-grace-ms 0`). From the end of its stream `a` must
/// start nothing more: until it is welcomed again, core may deliver
/// elsewhere. Before starts were held at a stream's end, `a`'s runs went
/// on with their lanes' queues while `b` ran the same keys (found by a
/// chaos run with standbys and proxy resets: `checker/across_lives.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_whose_stream_ended_starts_nothing_its_standby_took_over() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--processor-return-grace-ms", "0"]).await?;
    let log = |id: &str| dir.path().join(format!("processed-{id}.log"));
    let processor = |id: &str, extra: &[&str]| -> anyhow::Result<ackflow_tests::Proc> {
        let path = log(id);
        let sub = dir.path().join(id);
        std::fs::create_dir_all(&sub)?;
        let mut args = vec!["--processor-id", id, "--processed-log"];
        let path = path.display().to_string();
        args.push(&path);
        args.extend_from_slice(extra);
        start_processor(&sub, &core.grpc_url(), &args)
    };
    let mut a = processor("a", &["--cut-every-s", "3"])?;
    wait_active(&core, &["a"]).await?;
    let events = publish_sleeps(&core).await?;
    let mut b = processor("b", &[])?;
    wait_for("b active", Duration::from_secs(30), || async {
        active(&core)
            .await?
            .contains(&"b".to_string())
            .then_some(())
    })
    .await?;
    wait_for("every event resolved", Duration::from_secs(120), || async {
        let s = core.snapshot().await.ok()?;
        (s.acked_floor > events).then_some(())
    })
    .await?;
    a.terminate().await?;
    b.terminate().await?;

    // Events `a` finished before its stream ended may run again in `b`
    // (their acks went with the stream): at least once. What must not
    // happen is `a` starting a key's event while `b` runs that key, other
    // than one `a` had started before its stream ended.
    let (lines, _) = read_processed(&[log("a"), log("b")])?;
    let lane = |seq: u64| Some(Lane::Key(format!("k{}", (seq - 1) % KEYS)));
    let across = check_across_lives(&lines, lane);
    let (by_a, by_b) = (started(&log("a")), started(&log("b")));
    println!(
        "started by a {}, by b {}; {} calls checked, {} beside a call of a life that had lost its place, overlaps {:?}",
        by_a.len(),
        by_b.len(),
        across.calls_checked,
        across.at_handoff,
        across.overlaps
    );
    assert!(!by_a.is_empty() && !by_b.is_empty(), "both took part");
    assert_eq!(across.calls_checked, (by_a.len() + by_b.len()) as u64);
    assert!(across.overlaps.is_empty(), "{:?}", across.overlaps);
    assert_eq!(
        by_a.union(&by_b).count() as u64,
        events,
        "every event started somewhere"
    );
    Ok(())
}

/// The link between a busy processor and core freezes (a half-open
/// connection: nothing forwarded, nothing closed, as a dead middlebox
/// leaves it). The processor must leave it once core has been silent for
/// its silence and connect anew, not wait for the connection to be closed
/// (here the proxy holds it for 60 s; HTTP/2 keepalive takes about 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_leaves_a_frozen_link_and_connects_anew() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &[]).await?;
    let proxy = ackflow_tests::proxy::Proxy::start(core.grpc, Duration::from_secs(60)).await?;
    let mut p = start_processor(
        dir.path(),
        &format!("http://{}", proxy.addr),
        &["--processor-id", "p"],
    )?;
    wait_active(&core, &["p"]).await?;
    let session = |s: &ackflow_proto::v1::Snapshot| s.processors.first().map(|p| p.session);
    let first = session(&core.snapshot().await?);
    // Enough short sleeps over many keys that acks flow when it freezes.
    let mut published = 0;
    for n in 0..2_000 {
        let body = format!(r#"{{"kind":"sleep","key":"k{}","payload":20}}"#, n % 200);
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish {n}: {status} {text}");
        published += 1;
    }
    proxy.freeze_all();
    wait_for(
        "the processor on a new session, well before the frozen link closes",
        Duration::from_secs(30),
        || async {
            let s = core.snapshot().await.ok()?;
            (session(&s).is_some() && session(&s) > first).then_some(())
        },
    )
    .await?;
    wait_for("every event resolved", Duration::from_secs(60), || async {
        let s = core.snapshot().await.ok()?;
        (s.acked_floor > published).then_some(())
    })
    .await?;
    p.terminate().await?;
    Ok(())
}
