//! At-most-once kinds (`--at-most-once KIND`), end to end: an event of such
//! a kind goes out once and is never sent again. Where an at-least-once
//! event would be sent again, it is abandoned instead: a result with status
//! `abandoned` whose output says why, counted in
//! `ackflow_results_total{status="abandoned"}`.
//!
//! * its processor's stream ends before its result: abandoned, while the
//!   at-least-once event beside it is sent to the next processor;
//! * core is killed after sending it: the restarted core finds its sent
//!   mark and abandons it;
//! * its algorithm asks to retry it later: abandoned, and the next event of
//!   its key is processed after it;
//! * otherwise it is processed and its result stored like any other;
//! * to a processor that claims (`Hello.claims`), it goes out at once to be
//!   claimed, is sent again like any event until granted (a crash before
//!   then loses nothing), and is abandoned only once granted; the
//!   processors above do not claim, so they get it granted, after its
//!   sent mark.

use std::time::Duration;

use ackflow_proto::v1 as pb;
use ackflow_tests::checker::{Phase, parse_processed};
use ackflow_tests::fake_processor::{FakeProcessor, ok};
use ackflow_tests::{Core, http_request, post_json, start_processor, wait_for};

/// Publishes `(kind, key, payload)` in order; checks each got the next seq.
async fn publish(core: &Core, first: u64, events: &[(&str, &str, &str)]) -> anyhow::Result<()> {
    for (i, (kind, key, payload)) in events.iter().enumerate() {
        let seq = first + i as u64;
        let body = format!(r#"{{"kind":"{kind}","key":"{key}","payload":{payload}}}"#);
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish {seq}: {status} {text}");
        anyhow::ensure!(text.contains(&format!(r#""seq":{seq}"#)), "{text}");
    }
    Ok(())
}

/// `GET /v1/events/{seq}` as JSON.
async fn event_json(core: &Core, seq: u64) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_request(core.http, "GET", &format!("/v1/events/{seq}"), None).await?;
    anyhow::ensure!(status == 200, "GET seq {seq}: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Waits until every seq up to `head` is resolved.
async fn wait_resolved(core: &Core, head: u64) -> anyhow::Result<pb::Snapshot> {
    wait_for("every event resolved", Duration::from_secs(30), || async {
        let s = core.snapshot().await.ok()?;
        (s.head == head && s.acked_floor > head).then_some(s)
    })
    .await
}

fn seqs(events: &[pb::Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_stream_ended_is_abandoned_not_sent_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--at-most-once", "telemetry"]).await?;
    publish(
        &core,
        1,
        &[
            ("telemetry", "a", r#""reading 1""#),
            ("sha256", "b", r#""x""#),
        ],
    )
    .await?;

    // The first processor gets both and dies without a result.
    let mut first = FakeProcessor::connect(core.grpc, "first", 64, &["sha256"]).await?;
    let got = first.events(&[1, 2], Duration::from_secs(10)).await?;
    assert_eq!(got[0].attempt, 1);
    drop(first);

    // The next one gets the at-least-once event again, and only that: core
    // resends in seq order, so seq 1 would have come first.
    let mut second = FakeProcessor::connect(core.grpc, "second", 64, &["sha256"]).await?;
    let got = second
        .events_until(Duration::from_secs(10), |got| {
            got.iter().any(|e| e.seq == 2)
        })
        .await?;
    assert_eq!(seqs(&got), vec![2], "the at-most-once event was sent again");
    second.ack(vec![ok(&got[0], "digest")]).await?;
    let snapshot = wait_resolved(&core, 2).await?;
    assert_eq!(snapshot.totals.unwrap_or_default().abandoned, 1);

    let abandoned = event_json(&core, 1).await?;
    assert_eq!(abandoned["state"], "abandoned", "{abandoned}");
    let output = abandoned["result"]["output"].as_str().unwrap_or_default();
    assert!(output.contains("stream ended"), "{abandoned}");
    assert_eq!(event_json(&core, 2).await?["state"], "ok");

    let (_, metrics) = http_request(core.http, "GET", "/metrics", None).await?;
    assert!(
        metrics.contains(r#"ackflow_results_total{status="abandoned"} 1"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_not_granted_yet_survives_a_crash_and_a_granted_one_is_abandoned()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--at-most-once", "telemetry"]).await?;
    publish(
        &core,
        1,
        &[
            ("telemetry", "a", r#""reading 1""#),
            ("telemetry", "a", r#""reading 2""#),
        ],
    )
    .await?;

    // The first life gets both at once, to be claimed, and dies first.
    let mut first = FakeProcessor::connect_claiming(core.grpc, "first", 64, &["telemetry"]).await?;
    let got = first.events(&[1, 2], Duration::from_secs(10)).await?;
    assert!(got.iter().all(|e| e.claim && e.at_most_once), "{got:?}");
    drop(first);

    // The next life gets both again: neither can have run.
    let mut second =
        FakeProcessor::connect_claiming(core.grpc, "second", 64, &["telemetry"]).await?;
    let got = second.events(&[1, 2], Duration::from_secs(10)).await?;
    assert!(got.iter().all(|e| e.claim), "{got:?}");
    // Seq 1 is claimed and granted (its sent mark is durable then); a
    // repeated claim is not granted twice.
    second.claim(&[1]).await?;
    assert_eq!(
        second.permits(Duration::from_secs(10)).await?.granted,
        vec![1]
    );
    second.claim(&[1]).await?;
    drop(second);

    // The third life gets only seq 2: seq 1 may have run, so it is abandoned.
    let mut third = FakeProcessor::connect_claiming(core.grpc, "third", 64, &["telemetry"]).await?;
    let got = third
        .events_until(Duration::from_secs(10), |got| {
            got.iter().any(|e| e.seq == 2)
        })
        .await?;
    assert_eq!(seqs(&got), vec![2], "the granted event was sent again");
    assert_eq!(got[0].attempt, 3, "its third copy");
    // A claim of the abandoned one is refused: skip it.
    third.claim(&[1, 2]).await?;
    let permits = third.permits(Duration::from_secs(10)).await?;
    let permits = match permits.granted.is_empty() {
        // Seq 2's grant waits for its sent mark: a second answer.
        true => pb::Permits {
            granted: third.permits(Duration::from_secs(10)).await?.granted,
            ..permits
        },
        false => permits,
    };
    assert_eq!((permits.granted, permits.refused), (vec![2], vec![1]));
    third.ack(vec![ok(&got[0], "stored")]).await?;
    let snapshot = wait_resolved(&core, 2).await?;
    assert_eq!(snapshot.totals.unwrap_or_default().abandoned, 1);
    assert_eq!(event_json(&core, 1).await?["state"], "abandoned");
    assert_eq!(event_json(&core, 2).await?["state"], "ok");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_core_abandons_what_it_may_have_sent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut core = Core::start(dir.path(), None, &["--at-most-once", "telemetry"]).await?;
    publish(&core, 1, &[("telemetry", "a", r#""reading 1""#)]).await?;
    let mut processor = FakeProcessor::connect(core.grpc, "p", 64, &["sha256"]).await?;
    processor.events(&[1], Duration::from_secs(10)).await?;
    // Sent, so its mark is durable; core dies before any result.
    core.proc.kill().await;
    drop(processor);
    core.restart().await?;

    publish(&core, 2, &[("telemetry", "a", r#""reading 2""#)]).await?;
    let mut processor = FakeProcessor::connect(core.grpc, "p2", 64, &["sha256"]).await?;
    let got = processor
        .events_until(Duration::from_secs(10), |got| {
            got.iter().any(|e| e.seq == 2)
        })
        .await?;
    assert_eq!(
        seqs(&got),
        vec![2],
        "seq 1 was sent again after the restart"
    );
    assert_eq!(got[0].attempt, 1);
    processor.ack(vec![ok(&got[0], "stored")]).await?;
    wait_resolved(&core, 2).await?;

    let abandoned = event_json(&core, 1).await?;
    assert_eq!(abandoned["state"], "abandoned", "{abandoned}");
    let output = abandoned["result"]["output"].as_str().unwrap_or_default();
    assert!(output.contains("core restarted"), "{abandoned}");
    assert_eq!(event_json(&core, 2).await?["state"], "ok");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_later_abandons_and_everything_else_is_processed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--at-most-once", "retry,sha256"]).await?;
    publish(
        &core,
        1,
        &[
            ("retry", "k", r#"{"times": 1}"#),
            ("sha256", "k", r#""after it""#),
            ("wordcount", "k", r#""at least once""#),
        ],
    )
    .await?;
    let log = dir.path().join("processed.log");
    let _processor = start_processor(
        dir.path(),
        &core.grpc_url(),
        &["--processed-log", &log.display().to_string()],
    )?;
    let snapshot = wait_resolved(&core, 3).await?;
    let totals = snapshot.totals.unwrap_or_default();
    assert_eq!((totals.abandoned, totals.results_ok), (1, 2), "{totals:?}");

    let abandoned = event_json(&core, 1).await?;
    assert_eq!(abandoned["state"], "abandoned", "{abandoned}");
    let output = abandoned["result"]["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("retry later") && output.contains("attempt 1 of the first 1"),
        "the reason and the algorithm's words: {abandoned}"
    );
    assert_eq!(event_json(&core, 2).await?["state"], "ok");
    assert_eq!(event_json(&core, 3).await?["state"], "ok");

    // Seq 1 started once; its key's next event only after it.
    let text = std::fs::read_to_string(&log)?;
    let (lines, _) = parse_processed(&text)?;
    let starts: Vec<u64> = lines
        .iter()
        .filter(|l| l.phase == Phase::Start)
        .map(|l| l.seq)
        .collect();
    assert_eq!(starts, vec![1, 2, 3], "processed log:\n{text}");
    Ok(())
}
