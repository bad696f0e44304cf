//! The delivery guarantees end to end, with the real binaries on PostgreSQL.
//!
//! `crashes_lose_nothing`: 20,000 events are published (with idempotency
//! keys, resumed after every failure) while the processor is SIGKILLed three
//! times and core once; the processor also drops 1 % of its acks. Afterwards
//! every event has exactly one result, processing order increases within
//! each processor life, and the retransmit and duplicate-drop counters show
//! that the faults were exercised.
//!
//! `pause_retransmits_then_drains`: pausing the processor makes core
//! retransmit with a doubling backoff (read from the feed) and the
//! processor drop duplicates; on resume the window drains in order.
//!
//! `a_stuck_watcher_never_slows_delivery`: an admin watcher that stops
//! reading does not hold delivery back, and is told how much it missed.
//!
//! `a_processor_built_from_the_library_runs_its_own_algorithm`: the
//! `uppercase` example (`examples/uppercase.rs`, the processor library with
//! one algorithm of its own) processes its kind end to end, keeps the
//! built-ins, and its errors become failed results.
//!
//! `set_faults_is_relayed_to_the_processor`: `Admin.SetFaults` reaches the
//! connected processor and the next one to connect, and clearing it too.
//!
//! `retry_later_keeps_key_order_and_parks_at_max_deliver`: an event whose
//! algorithm asks to retry later is processed again after the wait it asked
//! for, later events of its key wait for it while other keys go on, and an
//! event that always asks is parked at `--max-deliver` with its reason.
//!
//! `events_committed_beside_a_refused_request_are_delivered_as_published`:
//! a request refused inside a group commit does not shift the events
//! committed with it onto other seqs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ackflow_proto::v1 as pb;
use ackflow_tests::checker::{Phase, parse_processed};
use ackflow_tests::fake_processor::FakeProcessor;
use ackflow_tests::{
    Client, Core, PgDb, all_events, http_request, post_json, start_example, start_processor,
    wait_for,
};
use tokio_stream::wrappers::ReceiverStream;

const EVENTS: u64 = 20_000;

/// Publishes `EVENTS` events at about `per_second`, resuming after any
/// failure from the first unacknowledged one. `acked` counts acknowledged
/// publishes (replays of the same key included only once).
async fn publish_all(client: Client, per_second: u64, acked: Arc<AtomicU64>) {
    let mut next = 0u64;
    while next < EVENTS {
        let Ok(mut ingest) = client.ingest().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let start = next;
        let producer = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let per_tick = (per_second / 100).max(1);
            let mut n = start;
            while n < EVENTS {
                tick.tick().await;
                for _ in 0..per_tick.min(EVENTS - n) {
                    let request = pb::PublishRequest {
                        kind: if n.is_multiple_of(10) {
                            "wordcount"
                        } else {
                            "sha256"
                        }
                        .into(),
                        payload: format!(r#""event number {n}""#).into_bytes(),
                        idempotency_key: format!("e2e-{n}"),
                        request_id: n,
                        ..Default::default()
                    };
                    if tx.send(request).await.is_err() {
                        return;
                    }
                    n += 1;
                }
            }
        });
        if let Ok(response) = ingest.publish_stream(ReceiverStream::new(rx)).await {
            let mut replies = response.into_inner();
            while let Ok(Some(reply)) = replies.message().await {
                if reply.request_id == next {
                    next += 1;
                    acked.store(next, Ordering::Relaxed);
                }
            }
        }
        producer.abort();
        if next < EVENTS {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Checks the processed log: within each processor life, the events (none
/// has a key: one lane) start in strictly increasing seq order. Returns the
/// number of lives seen.
fn check_processing_order(log: &Path) -> anyhow::Result<usize> {
    let (lines, _torn) = parse_processed(&std::fs::read_to_string(log)?)?;
    let mut last: HashMap<String, u64> = HashMap::new();
    for line in lines.iter().filter(|l| l.phase == Phase::Start) {
        if let Some(prev) = last.insert(line.life.clone(), line.seq) {
            anyhow::ensure!(
                line.seq > prev,
                "life {} started {} after {prev}",
                line.life,
                line.seq
            );
        }
    }
    Ok(last.len())
}

async fn wait_acked(acked: &Arc<AtomicU64>, at_least: u64) -> anyhow::Result<()> {
    wait_for(
        &format!("{at_least} acknowledged publishes"),
        Duration::from_secs(120),
        || {
            let acked = acked.clone();
            async move { (acked.load(Ordering::Relaxed) >= at_least).then_some(()) }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashes_lose_nothing() -> anyhow::Result<()> {
    let db = PgDb::create("e2e").await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("processed.log");
    let log_arg = log.display().to_string();
    let processor_args = ["--processed-log", log_arg.as_str(), "--drop-acks", "0.01"];
    let mut core = Core::start(dir.path(), Some(&db.url), &[]).await?;
    let mut processor = start_processor(dir.path(), &core.grpc_url(), &processor_args)?;

    let acked = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_all(
        Client {
            grpc: core.grpc,
            http: core.http,
        },
        2_000,
        acked.clone(),
    ));

    let mut processor_kills = 0;
    for (at, kill_core) in [
        (3_000, false),
        (7_000, false),
        (10_000, true),
        (14_000, false),
    ] {
        wait_acked(&acked, at).await?;
        if kill_core {
            core.proc.kill().await;
            core.restart().await?;
        } else {
            processor.kill().await;
            processor_kills += 1;
            processor = start_processor(dir.path(), &core.grpc_url(), &processor_args)?;
        }
    }
    assert_eq!(processor_kills, 3);
    tokio::time::timeout(Duration::from_secs(120), publisher).await??;

    let snapshot = wait_for("every event resolved", Duration::from_secs(180), || async {
        let s = core.snapshot().await.ok()?;
        (s.acked_floor > EVENTS).then_some(s)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\ncore log:\n{}", core.proc.log_tail(40)))?;

    let events = all_events(&db.url).await?;
    assert_eq!(events.len() as u64, EVENTS, "one stored event per publish");
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    for view in &events {
        *states.entry(view.state.as_str()).or_default() += 1;
        assert!(
            view.result.is_some(),
            "seq {} has no result",
            view.event.seq
        );
    }
    assert_eq!(states.get("ok"), Some(&EVENTS), "{states:?}");

    processor.terminate().await?;
    let lives = check_processing_order(&log)?;
    assert!(
        lives >= 4,
        "expected at least 4 processor lives, saw {lives}"
    );
    let totals = snapshot.totals.unwrap_or_default();
    println!("after the last core restart: {totals:?}");
    assert!(
        totals.retransmits > 0,
        "no retransmit: the ack loss was not exercised"
    );
    assert!(totals.duplicate_drops > 0, "no duplicate drop was counted");
    core.proc.terminate().await?;
    db.drop_db().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_retransmits_then_drains() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("processed.log");
    let log_arg = log.display().to_string();
    let core = Core::start(
        dir.path(),
        None,
        &[
            "--rto-min-ms",
            "100",
            "--rto-initial-ms",
            "100",
            "--max-backoff-ms",
            "3000",
            "--window",
            "16",
        ],
    )
    .await?;
    let mut processor =
        start_processor(dir.path(), &core.grpc_url(), &["--processed-log", &log_arg])?;
    let mut ingest = core.ingest().await?;
    let mut admin = core.admin().await?;
    let publish = |n: u64| pb::PublishRequest {
        kind: "sum".into(),
        payload: format!("[{n}, 1]").into_bytes(),
        ..Default::default()
    };
    for n in 0..10 {
        ingest.publish(publish(n)).await?;
    }
    wait_for("the first results", Duration::from_secs(30), || async {
        let s = core.snapshot().await.ok()?;
        (s.acked_floor == 11).then_some(())
    })
    .await?;

    let mut feed = admin.watch(pb::WatchRequest {}).await?.into_inner();
    admin.pause(pb::PauseRequest {}).await?;
    for n in 10..40 {
        ingest.publish(publish(n)).await?;
    }
    // Retransmits of the lowest in-flight seq: (attempt, armed backoff).
    let mut retransmits: Vec<(u32, u64)> = Vec::new();
    let mut paused_seen = false;
    tokio::time::timeout(Duration::from_secs(60), async {
        while retransmits.len() < 4 {
            let Some(update) = feed.message().await? else {
                break;
            };
            match update.update {
                Some(pb::watch_response::Update::Feed(pb::FeedEvent {
                    kind: Some(pb::feed_event::Kind::Retransmit(r)),
                    ..
                })) if r.seq == 11 => retransmits.push((r.attempt, r.backoff_us)),
                Some(pb::watch_response::Update::Snapshot(s)) => {
                    let connection = s.processor.map(|p| p.connection).unwrap_or_default();
                    paused_seen |= connection == pb::ProcessorConnection::Paused as i32;
                }
                _ => {}
            }
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("4 retransmits of seq 11 within 60 s: saw {retransmits:?}"))??;
    assert!(
        paused_seen,
        "the snapshot never showed the processor paused"
    );
    assert!(
        retransmits.len() >= 4,
        "only {} retransmits of seq 11 (the feed ended)",
        retransmits.len()
    );
    // What core armed, from the feed (never the wall clock, which carries
    // the machine's scheduling noise): each wait doubles, give or take the
    // ±20 % jitter, so consecutive waits differ by a factor in (1.33, 3);
    // 100 ms doubled three times stays under the 3 s cap.
    for pair in retransmits.windows(2) {
        let ((a0, b0), (a1, b1)) = (pair[0], pair[1]);
        assert_eq!(a1, a0 + 1, "attempts go up by one: {retransmits:?}");
        assert!(
            b1 * 3 > b0 * 4 && b1 < b0 * 3,
            "the backoff doubles (within the jitter): {retransmits:?}"
        );
    }

    let before = core.snapshot().await?;
    assert_eq!(before.acked_floor, 11, "nothing is acked while paused");
    wait_for(
        "duplicate drops while paused",
        Duration::from_secs(30),
        || async {
            let s = core.snapshot().await.ok()?;
            (s.totals?.duplicate_drops > 0).then_some(())
        },
    )
    .await?;

    admin.resume(pb::ResumeRequest {}).await?;
    wait_for("the window to drain", Duration::from_secs(60), || async {
        let s = core.snapshot().await.ok()?;
        (s.acked_floor == 41).then_some(())
    })
    .await?;
    processor.terminate().await?;
    let (lines, _torn) = parse_processed(&std::fs::read_to_string(&log)?)?;
    let seqs: Vec<u64> = lines
        .iter()
        .filter(|l| l.phase == Phase::Start)
        .map(|l| l.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<u64>>(),
        "processed once each, in order"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_watcher_never_slows_delivery() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &[]).await?;
    let mut processor = start_processor(dir.path(), &core.grpc_url(), &[])?;
    // This watcher never reads until delivery is over. Its HTTP/2 windows
    // are the protocol minimum, so core cannot park the feed in buffers.
    let channel = tonic::transport::Endpoint::from_shared(core.grpc_url())?
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await?;
    let mut stuck = pb::admin_client::AdminClient::new(channel)
        .watch(pb::WatchRequest {})
        .await?
        .into_inner();
    let mut ingest = core.ingest().await?;
    let n = 20_000u64;
    let requests = tokio_stream::iter((0..n).map(|i| pb::PublishRequest {
        kind: "sha256".into(),
        payload: format!("{i}").into_bytes(),
        request_id: i,
        ..Default::default()
    }));
    let mut replies = ingest.publish_stream(requests).await?.into_inner();
    tokio::time::timeout(Duration::from_secs(120), async {
        while replies.message().await?.is_some() {}
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("the publish stream did not finish within 120 s"))??;
    wait_for("every event resolved", Duration::from_secs(120), || async {
        let s = core.snapshot().await.ok()?;
        (s.acked_floor > n).then_some(())
    })
    .await?;
    // The stuck watcher is told how much of the feed it missed.
    let missed = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(update) = stuck.message().await? {
            if let Some(pb::watch_response::Update::Lagged(n)) = update.update {
                return Ok(n);
            }
        }
        anyhow::Ok(0)
    })
    .await??;
    assert!(missed > 0, "the stuck watcher was not told it lagged");
    processor.terminate().await?;
    Ok(())
}

/// Waits for the admin snapshot to show `faults` in force.
async fn snapshot_shows(core: &Core, faults: pb::Faults) -> anyhow::Result<()> {
    wait_for(
        &format!("the snapshot to show {faults:?}"),
        Duration::from_secs(10),
        || async move {
            let s = core.snapshot().await.ok()?;
            (s.faults == Some(faults)).then_some(())
        },
    )
    .await
}

/// `Admin.SetFaults` reaches the processor that is connected and every
/// processor that connects later, and clearing the faults reaches it too.
/// The fault used, `duplicate: 1.0`, hands every incoming event to the
/// receiver twice, so its effect is in the processor's own status report:
/// one duplicate drop per event. Each check waits for a status report sent
/// after the processor received the last event (`next_expected`, which
/// only status reports carry), so it sees every drop those events caused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_faults_is_relayed_to_the_processor() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--allow-fault-injection"]).await?;
    let mut processor = start_processor(dir.path(), &core.grpc_url(), &[])?;
    let mut ingest = core.ingest().await?;
    let mut admin = core.admin().await?;
    let mut published = 0u64;
    // Publishes `n` events and waits until they are resolved and the
    // processor has reported receiving them; returns that snapshot's totals.
    let mut publish = async |n: u64| -> anyhow::Result<pb::Totals> {
        for _ in 0..n {
            published += 1;
            ingest
                .publish(pb::PublishRequest {
                    kind: "sum".into(),
                    payload: format!("[{published}]").into_bytes(),
                    ..Default::default()
                })
                .await?;
        }
        let head = published;
        let core = &core;
        let snapshot = wait_for(
            &format!("events up to {head} resolved and reported received"),
            Duration::from_secs(30),
            || async move {
                let s = core.snapshot().await.ok()?;
                (s.acked_floor == head + 1 && s.next_expected == head + 1).then_some(s)
            },
        )
        .await?;
        Ok(snapshot.totals.unwrap_or_default())
    };

    let clean = publish(10).await?;
    assert_eq!(
        clean.duplicate_drops, 0,
        "no fault, no duplicate: {clean:?}"
    );

    let faults = pb::Faults {
        duplicate: 1.0,
        ..Default::default()
    };
    let reply = admin.set_faults(faults).await?.into_inner();
    assert!(reply.relayed, "a connected processor gets the faults");
    snapshot_shows(&core, faults).await?;
    let faulty = publish(20).await?;
    assert!(
        faulty.duplicate_drops - clean.duplicate_drops >= 20,
        "every event handed twice drops one copy: {clean:?} then {faulty:?}"
    );

    // A new processor gets the faults when it connects.
    processor.kill().await;
    processor = start_processor(dir.path(), &core.grpc_url(), &[])?;
    let reconnected = publish(10).await?;
    assert!(
        reconnected.duplicate_drops - faulty.duplicate_drops >= 10,
        "the new processor duplicates too: {faulty:?} then {reconnected:?}"
    );

    let reply = admin.set_faults(pb::Faults::default()).await?.into_inner();
    assert!(reply.relayed);
    snapshot_shows(&core, pb::Faults::default()).await?;
    let cleared = publish(10).await?;
    assert!(
        cleared.duplicate_drops - reconnected.duplicate_drops
            <= cleared.retransmits - reconnected.retransmits,
        "duplicates after the faults were cleared (beyond retransmits): {reconnected:?} then {cleared:?}"
    );
    processor.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_built_from_the_library_runs_its_own_algorithm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &[]).await?;
    let mut processor = start_example(dir.path(), "uppercase", &core.grpc_url(), &[])?;
    let events = [
        (
            r#"{"kind":"uppercase","key":"a","payload":"hello"}"#,
            "ok",
            "HELLO",
        ),
        (
            r#"{"kind":"uppercase","key":"b","payload":"keyed world"}"#,
            "ok",
            "KEYED WORLD",
        ),
        (
            r#"{"kind":"uppercase","key":"a","payload":[1]}"#,
            "failed",
            "uppercase expects a JSON string",
        ),
        (r#"{"kind":"sum","payload":[1,2]}"#, "ok", "3"),
    ];
    for (body, _, _) in events {
        let (status, text) = post_json(core.http, "/v1/events", body).await?;
        anyhow::ensure!(status == 202, "publish {body}: {status} {text}");
    }
    // The publish example (examples/publish.rs), twice with one
    // idempotency key: stored once, with the caller's trace context.
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut printed = Vec::new();
    for _ in 0..2 {
        let output = tokio::process::Command::new(ackflow_tests::bin("examples").join("publish"))
            .args(["--core", &core.grpc_url(), "--kind", "uppercase"])
            .args(["--payload", "\"from rust\"", "--idempotency-key", "rust-1"])
            .args(["--traceparent", TRACE])
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::ensure!(output.status.success(), "publish example: {stdout}{stderr}");
        printed.push(stdout);
    }
    let published = events.len() as u64 + 1;
    assert!(
        printed[0].starts_with(&format!("seq {published} (id ")),
        "{printed:?}"
    );
    assert!(!printed[0].contains("replay"), "{printed:?}");
    assert!(printed[1].ends_with(", a replay)\n"), "{printed:?}");
    let last = published;
    let core_ref = &core;
    wait_for(
        "every event resolved",
        Duration::from_secs(30),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            (s.acked_floor > last).then_some(())
        },
    )
    .await?;
    for (seq, (body, state, output)) in (1..).zip(events) {
        let (status, text) =
            http_request(core.http, "GET", &format!("/v1/events/{seq}"), None).await?;
        assert_eq!(status, 200, "GET {seq}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text)?;
        assert_eq!(json["state"], state, "{body}: {text}");
        assert_eq!(json["result"]["output"], output, "{body}: {text}");
    }
    let (_, text) = http_request(core.http, "GET", &format!("/v1/events/{last}"), None).await?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(json["result"]["output"], "FROM RUST", "{text}");
    assert_eq!(json["traceparent"], TRACE, "{text}");
    processor.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_later_keeps_key_order_and_parks_at_max_deliver() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--max-deliver", "4"]).await?;
    let log = dir.path().join("processed.log");
    let log_arg = log.display().to_string();
    let mut processor =
        start_processor(dir.path(), &core.grpc_url(), &["--processed-log", &log_arg])?;
    let events = [
        // Seq 1 asks twice, 1 s apart; seq 2, of its key, must wait for it.
        r#"{"kind":"retry","key":"a","payload":{"times":2,"after_ms":1000}}"#,
        r#"{"kind":"sha256","key":"a","payload":"after the retries"}"#,
        // Another key goes on meanwhile.
        r#"{"kind":"sha256","key":"b","payload":"not held"}"#,
        // Always asks: parked at the fourth request (--max-deliver 4).
        r#"{"kind":"retry","key":"c","payload":{"times":1000}}"#,
        // Its key goes on once core parked it.
        r#"{"kind":"sha256","key":"c","payload":"after the park"}"#,
    ];
    for body in events {
        let (status, text) = post_json(core.http, "/v1/events", body).await?;
        anyhow::ensure!(status == 202, "publish {body}: {status} {text}");
    }
    let get = |seq: u64| {
        let http = core.http;
        async move {
            let (status, text) =
                http_request(http, "GET", &format!("/v1/events/{seq}"), None).await?;
            anyhow::ensure!(status == 200, "GET {seq}: {status} {text}");
            Ok::<serde_json::Value, anyhow::Error>(serde_json::from_str(&text)?)
        }
    };
    // Key b's result is stored while seq 1 waits for its retry.
    let core_ref = &core;
    wait_for(
        "seq 3 stored while seq 1 waits to be retried",
        Duration::from_secs(30),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            let waiting = s.in_flight.iter().any(|e| e.seq == 1 && e.retry);
            let three = get(3).await.ok()?;
            (waiting && three["state"] == "ok").then_some(())
        },
    )
    .await?;
    wait_for(
        "every event resolved",
        Duration::from_secs(60),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            (s.acked_floor > events.len() as u64).then_some(())
        },
    )
    .await?;
    let one = get(1).await?;
    assert_eq!(one["state"], "ok", "{one}");
    let output = one["result"]["output"].as_str().unwrap_or_default();
    assert!(output.starts_with("done at attempt "), "{one}");
    for seq in [2, 3, 5] {
        let event = get(seq).await?;
        assert_eq!(event["state"], "ok", "seq {seq}: {event}");
    }
    let four = get(4).await?;
    assert_eq!(four["state"], "dead", "{four}");
    let reason = four["dead"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("retry later asked") && reason.contains("is asked to retry"),
        "the park names the requests and the last reason: {four}"
    );
    let snapshot = core.snapshot().await?;
    let retries = snapshot.totals.unwrap_or_default().retries;
    assert!(
        retries >= 3,
        "seq 1's two requests and seq 4's at least one: {retries}"
    );

    // In the processor: seq 1 ran once per copy (attempts increasing) and
    // seq 2 started only after seq 1's last run ended; seq 5 only after
    // seq 4's last.
    let (lines, _torn) = parse_processed(&std::fs::read_to_string(&log)?)?;
    let position = |seq: u64, phases: &[Phase], last: bool| {
        let mut found = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.seq == seq && phases.contains(&l.phase))
            .map(|(i, _)| i);
        if last {
            found.next_back()
        } else {
            found.next()
        }
    };
    let attempts: Vec<u32> = lines
        .iter()
        .filter(|l| l.seq == 1 && l.phase == Phase::Start)
        .map(|l| l.attempt)
        .collect();
    assert!(
        attempts.len() == 3 && attempts.windows(2).all(|w| w[0] < w[1]),
        "seq 1 ran three times, each a later copy: {attempts:?}"
    );
    let asked = lines
        .iter()
        .filter(|l| l.seq == 1 && l.phase == Phase::Retry)
        .count();
    assert_eq!(asked, 2, "two of them asked to retry");
    for (before, after) in [(1, 2), (4, 5)] {
        let ended = position(before, &[Phase::End, Phase::Retry], true).expect("an end line");
        let started = position(after, &[Phase::Start], false).expect("a start line");
        assert!(
            ended < started,
            "seq {after} started before seq {before}'s last run ended: {lines:?}"
        );
    }
    processor.terminate().await?;
    Ok(())
}

/// A request refused in a group commit (its idempotency key stands for
/// another request) must not shift the events committed beside it: each is
/// delivered from memory with its own kind and payload at the seq it was
/// told. Core once paired the outcomes after a refused request with the
/// refused request's events, so the processor got one event's seq with
/// another's payload (the store, and `GET`, held the right one). The
/// commits are held open 200 ms so that the stream's messages share one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_beside_a_refused_request_are_delivered_as_published() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--commit-linger-us", "200000"]).await?;
    let request = |payload: &str, idempotency_key: &str, request_id| pb::PublishRequest {
        kind: "sha256".into(),
        payload: payload.as_bytes().to_vec(),
        idempotency_key: idempotency_key.into(),
        request_id,
        ..Default::default()
    };
    // Connected first, so that the events reach it from memory (the tail).
    let mut processor = FakeProcessor::connect(core.grpc, "checking", 64, &["sha256"]).await?;
    let mut ingest = core.ingest().await?;
    let first = ingest
        .publish(request("\"first\"", "k", 0))
        .await?
        .into_inner();
    assert_eq!(first.seq, 1);

    let stream = vec![
        request("\"before\"", "", 1),
        request("\"other\"", "k", 2),
        request("\"after\"", "", 3),
        request("\"last\"", "", 4),
    ];
    let mut replies = ingest
        .publish_stream(tokio_stream::iter(stream))
        .await?
        .into_inner();
    let mut answered = Vec::new();
    let refused = loop {
        match replies.message().await {
            Ok(Some(reply)) => answered.push((reply.request_id, reply.seq)),
            Ok(None) => anyhow::bail!("the stream ended without refusing request 2"),
            Err(status) => break status,
        }
    };
    assert_eq!(answered, [(1, 2)], "the reply before the refusal");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    let events = processor
        .events(&[1, 2, 3, 4], Duration::from_secs(10))
        .await?;
    let delivered: Vec<(u64, String)> = events
        .iter()
        .map(|e| (e.seq, String::from_utf8_lossy(&e.payload).into_owned()))
        .collect();
    assert_eq!(
        delivered,
        [
            (1, "\"first\"".to_string()),
            (2, "\"before\"".to_string()),
            (3, "\"after\"".to_string()),
            (4, "\"last\"".to_string()),
        ],
        "every event delivered with its own payload"
    );
    for (seq, payload) in &delivered {
        let (status, body) =
            http_request(core.http, "GET", &format!("/v1/events/{seq}"), None).await?;
        anyhow::ensure!(status == 200, "GET {seq}: {status} {body}");
        let json: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(
            json["payload"].to_string(),
            *payload,
            "stored as delivered: {body}"
        );
    }
    Ok(())
}
