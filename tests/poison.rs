//! Parking, end to end.
//!
//! An event whose processing crashes the processor (the `crash` algorithm
//! aborts the process) must be parked after `--max-crashes` crashes, while
//! every other event — including those in flight beside it when it crashed
//! the processor, and those behind it on its key — is processed and gets a
//! result. A supervisor restarts the processor whenever it exits, as
//! systemd or Kubernetes would. With two processors, the crashes of both
//! count towards `--max-crashes`.
//!
//! An event the processor rejects is parked at once, and `Admin.Requeue`
//! publishes it again, once however many requeues race. A snapshot whose
//! floor has passed a parked event lists it among the dead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ackflow_proto::v1 as pb;
use ackflow_tests::fake_processor::{FakeProcessor, ok, reject};
use ackflow_tests::{Core, PgDb, http_request, post_json, start_processor, wait_for};
use sqlx::Connection;

const EVENTS: u64 = 40;
const POISON: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_crashes_the_processor_is_parked_and_no_other() -> anyhow::Result<()> {
    crashing_event_parked(1).await
}

/// The same with two processors sharing the keys, each restarted when it
/// exits: the crashing event goes to whichever owns its key's partition,
/// its events move to the others after each crash, and the crashes are
/// counted across processors towards `--max-crashes`, not per processor.
/// (Each life has a new random `--processor-id`, so three crashed lives are
/// three processors; which of the two supervisors' lives they are depends
/// on the ids drawn.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_crashes_two_processors_is_parked_after_max_crashes_in_all()
-> anyhow::Result<()> {
    crashing_event_parked(2).await
}

/// Publishes [`EVENTS`] events, seq [`POISON`] crashing the processor, with
/// `--max-crashes 3`, to `processors` supervised processors (each in a
/// directory of its own, restarted whenever it exits).
async fn crashing_event_parked(processors: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--max-crashes", "3"]).await?;
    let lives: Arc<Vec<AtomicU32>> = Arc::new((0..processors).map(|_| AtomicU32::new(0)).collect());
    let mut supervisors = Vec::new();
    for i in 0..processors {
        let dir = dir.path().join(format!("processor-{i}"));
        std::fs::create_dir_all(&dir)?;
        let (url, lives) = (core.grpc_url(), lives.clone());
        supervisors.push(tokio::spawn(async move {
            loop {
                let mut processor = start_processor(&dir, &url, &["--enable-crash"])?;
                lives[i].fetch_add(1, Ordering::SeqCst);
                processor.wait().await?;
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        }));
    }
    // All connected before the first event, so that with two the first
    // crash finds a standby waiting.
    wait_for(
        "every processor connected",
        Duration::from_secs(30),
        || async {
            let (_, page) = http_request(core.http, "GET", "/metrics", None)
                .await
                .ok()?;
            page.lines()
                .any(|l| l == format!("ackflow_processors_connected {processors}"))
                .then_some(())
        },
    )
    .await?;
    for seq in 1..=EVENTS {
        let kind = if seq == POISON { "crash" } else { "sha256" };
        let body = format!(
            r#"{{"kind":"{kind}","key":"k{}","payload":{seq}}}"#,
            seq % 4
        );
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish {seq}: {status} {text}");
        anyhow::ensure!(text.contains(&format!(r#""seq":{seq}"#)), "{text}");
    }

    let snapshot = wait_for("every event resolved", Duration::from_secs(60), || async {
        let s = core.snapshot().await.ok()?;
        (s.head == EVENTS && s.acked_floor > EVENTS).then_some(s)
    })
    .await;
    for supervisor in &supervisors {
        supervisor.abort(); // drops the running processor (killed on drop)
    }
    let snapshot = snapshot?;

    assert_eq!(
        snapshot.dead.len(),
        1,
        "exactly one event parked: {:?}",
        snapshot.dead
    );
    let dead = &snapshot.dead[0];
    assert_eq!(dead.seq, POISON, "the parked event is the crashing one");
    assert!(
        dead.reason.starts_with("crashed the processor: 3 "),
        "reason names the crashes: {:?}",
        dead.reason
    );
    let lives: Vec<u32> = lives.iter().map(|l| l.load(Ordering::SeqCst)).collect();
    assert!(
        lives.iter().sum::<u32>() as usize >= 3 + processors,
        "three crashes (three processor ids: each life draws its own), and each processor's life that did not crash: {lives:?} lives"
    );
    assert_eq!(snapshot.suspects, 0, "isolation ended");
    for seq in (1..=EVENTS).filter(|s| *s != POISON) {
        let (status, body) =
            http_request(core.http, "GET", &format!("/v1/events/{seq}"), None).await?;
        assert_eq!(status, 200, "GET seq {seq}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(json["state"], "ok", "seq {seq} processed: {body}");
    }
    let (_, body) = http_request(core.http, "GET", &format!("/v1/events/{POISON}"), None).await?;
    let json: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(json["state"], "dead", "{body}");
    Ok(())
}

/// An event joins the snapshot's dead list when its dead row is durable,
/// never between the park and the commit: a snapshot whose floor has
/// passed a parked event lists it. The test holds the write of the dead row (a lock
/// on PostgreSQL's `dead` table that lets reads through) until a snapshot
/// has been taken after the park, then lets the row commit. Reading the
/// list at park time, as core once did, read it without the row and kept
/// that stale list while the floor moved past the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_past_a_parked_event_lists_it() -> anyhow::Result<()> {
    let db = PgDb::create("dead_list").await?;
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), Some(&db.url), &[]).await?;
    let (status, text) = post_json(
        core.http,
        "/v1/events",
        r#"{"kind":"sha256","payload":"doomed"}"#,
    )
    .await?;
    anyhow::ensure!(status == 202, "publish: {status} {text}");
    let mut processor = FakeProcessor::connect(core.grpc, "rejecting", 64, &["sha256"]).await?;
    let events = processor.events(&[1], Duration::from_secs(10)).await?;

    let mut lock = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::query("BEGIN").execute(&mut lock).await?;
    sqlx::query("LOCK TABLE dead IN EXCLUSIVE MODE")
        .execute(&mut lock)
        .await?;
    let mut watch = core
        .admin()
        .await?
        .watch(pb::WatchRequest {})
        .await?
        .into_inner();
    processor.ack(vec![reject(&events[0], "no")]).await?;

    // The park, then a snapshot taken after it, while the row is held.
    let held = tokio::time::timeout(Duration::from_secs(10), async {
        let mut parked = false;
        while let Some(update) = watch.message().await? {
            match update.update {
                Some(pb::watch_response::Update::Feed(pb::FeedEvent {
                    kind: Some(pb::feed_event::Kind::Dead(dead)),
                    ..
                })) if dead.seq == 1 => parked = true,
                Some(pb::watch_response::Update::Snapshot(s)) if parked => return Ok(s),
                _ => {}
            }
        }
        anyhow::bail!("watch ended")
    })
    .await??;
    assert_eq!(held.acked_floor, 1, "the dead row is held: {held:?}");

    sqlx::query("COMMIT").execute(&mut lock).await?;
    let snapshot = wait_for(
        "the floor past the parked event",
        Duration::from_secs(10),
        || async {
            let s = core.snapshot().await.ok()?;
            (s.acked_floor > 1).then_some(s)
        },
    )
    .await?;
    let parked: Vec<u64> = snapshot.dead.iter().map(|d| d.seq).collect();
    assert_eq!(parked, [1], "the snapshot lists the parked event");
    drop(core);
    db.drop_db().await
}

/// `GET /v1/events/{seq}` as JSON (status 200 expected).
async fn event_json(core: &Core, seq: u64) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_request(core.http, "GET", &format!("/v1/events/{seq}"), None).await?;
    anyhow::ensure!(status == 200, "GET seq {seq}: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// A rejected event is parked as dead at once (no retries); `Admin.Requeue`
/// publishes it again as a new event (new seq, same kind, key and payload),
/// which is delivered and gets its result, and the dead entry names the
/// copy. Requeues of one seq racing each other make exactly one copy: every
/// one of them answers with its seq (the copy's idempotency key replays),
/// and the requeue is counted once. A later requeue of the same seq replays
/// too; a seq that is not dead, or does not exist, is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_is_parked_and_requeued_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &[]).await?;
    for (seq, key) in [(1, "a"), (2, "b"), (3, "c")] {
        let body = format!(r#"{{"kind":"sha256","key":"{key}","payload":"event {seq}"}}"#);
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish {seq}: {status} {text}");
        anyhow::ensure!(text.contains(&format!(r#""seq":{seq}"#)), "{text}");
    }

    let mut processor = FakeProcessor::connect(core.grpc, "rejecting", 64, &["sha256"]).await?;
    let events = processor
        .events(&[1, 2, 3], Duration::from_secs(10))
        .await?;
    processor
        .ack(vec![
            ok(&events[0], "one"),
            reject(&events[1], "the \"sha256\" algorithm panicked"),
            reject(&events[2], "the \"sha256\" algorithm panicked"),
        ])
        .await?;
    let snapshot = wait_for(
        "both rejections parked",
        Duration::from_secs(10),
        || async {
            let s = core.snapshot().await.ok()?;
            (s.acked_floor == 4 && s.dead.len() == 2).then_some(s)
        },
    )
    .await?;
    let mut parked: Vec<u64> = snapshot.dead.iter().map(|d| d.seq).collect();
    parked.sort();
    assert_eq!(parked, [2, 3], "the rejected events are the dead ones");
    for dead in &snapshot.dead {
        assert_eq!(
            dead.reason, "rejected by the processor: the \"sha256\" algorithm panicked",
            "seq {}",
            dead.seq
        );
        assert_eq!(
            dead.attempts, 1,
            "parked at the first rejection, not retried"
        );
    }
    let two = event_json(&core, 2).await?;
    assert_eq!(two["state"], "dead", "{two}");
    assert_eq!(two["dead"]["requeued_as"], serde_json::Value::Null, "{two}");

    // Requeue seq 2: a new seq, the same event, delivered and resolved.
    let mut admin = core.admin().await?;
    let new_seq = admin
        .requeue(pb::RequeueRequest { seq: 2 })
        .await?
        .into_inner()
        .new_seq;
    assert_eq!(new_seq, 4, "the copy is the next seq");
    let two = event_json(&core, 2).await?;
    assert_eq!(
        two["dead"]["requeued_as"], 4,
        "the dead entry names its copy: {two}"
    );
    let copy = event_json(&core, 4).await?;
    for field in ["kind", "key", "payload"] {
        assert_eq!(copy[field], two[field], "{field}: {copy} vs {two}");
    }
    let delivered = processor.events(&[4], Duration::from_secs(10)).await?;
    assert_eq!(delivered[0].payload, events[1].payload);
    processor.ack(vec![ok(&delivered[0], "four")]).await?;
    wait_for("the copy's result", Duration::from_secs(10), || async {
        let copy = event_json(&core, 4).await.ok()?;
        (copy["state"] == "ok").then_some(())
    })
    .await?;

    // Eight requeues of seq 3 at once: one copy.
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let client = Core::attach(core.grpc, core.http);
            tokio::spawn(async move {
                let mut admin = client.admin().await?;
                let reply = admin.requeue(pb::RequeueRequest { seq: 3 }).await?;
                anyhow::Ok(reply.into_inner().new_seq)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in racing {
        answers.push(task.await??);
    }
    assert_eq!(
        answers, [5; 8],
        "every racing requeue answers with the one copy"
    );
    let three = event_json(&core, 3).await?;
    assert_eq!(three["dead"]["requeued_as"], 5, "{three}");
    let delivered = processor.events(&[5], Duration::from_secs(10)).await?;
    processor.ack(vec![ok(&delivered[0], "five")]).await?;
    let snapshot = wait_for(
        "the second copy resolved",
        Duration::from_secs(10),
        || async {
            let s = core.snapshot().await.ok()?;
            (s.acked_floor == 6 && s.dead.is_empty()).then_some(s)
        },
    )
    .await?;
    assert_eq!(snapshot.head, 5, "one copy per dead event, no more");
    let totals = snapshot.totals.unwrap_or_default();
    assert_eq!(
        totals.requeued, 2,
        "two dead events were requeued: {totals:?}"
    );
    assert_eq!(totals.dead, 2, "{totals:?}");

    // Requeued already: replays. Not dead, or unknown: refused.
    let again = admin
        .requeue(pb::RequeueRequest { seq: 2 })
        .await?
        .into_inner();
    assert_eq!(again.new_seq, 4);
    let err = admin
        .requeue(pb::RequeueRequest { seq: 1 })
        .await
        .expect_err("seq 1 is not dead");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("not dead"), "{err}");
    let err = admin
        .requeue(pb::RequeueRequest { seq: 99 })
        .await
        .expect_err("seq 99 does not exist");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    let (_, list) = http_request(core.http, "GET", "/v1/events?after=0", None).await?;
    let list: serde_json::Value = serde_json::from_str(&list)?;
    assert_eq!(
        list["events"].as_array().map(Vec::len),
        Some(5),
        "no event was added by the replays: {list}"
    );
    Ok(())
}
