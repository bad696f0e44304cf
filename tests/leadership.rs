//! Two cores on one PostgreSQL database: one leads, the other stands by,
//! names the leader to every client, and takes over when the leader dies or
//! freezes; a processor given both URLs follows the leader; a deposed
//! leader acknowledges nothing and exits.

use std::time::{Duration, Instant};

use anyhow::Context;

use ackflow_proto::v1 as pb;
use ackflow_tests::{
    Core, PgDb, all_events, http_exchange, http_request, post_json, start_processor,
};

const LEASE: [&str; 2] = ["--lease-ms", "1000"];

fn flags(id: &str) -> Vec<&str> {
    let mut flags = vec!["--core-id", id];
    flags.extend(LEASE);
    flags
}

/// Publishes `payload` with idempotency key `key` over REST; returns the
/// status and the body.
async fn publish(core: &Core, key: &str, payload: u64) -> anyhow::Result<(u16, String)> {
    let body =
        format!(r#"{{"kind":"sum","key":"k","payload":[{payload}],"idempotency_key":"{key}"}}"#);
    post_json(core.http, "/v1/events", &body).await
}

#[tokio::test]
async fn a_standby_names_the_leader_and_takes_over_within_seconds_of_a_kill() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let db = PgDb::create("leadership").await?;
    let mut a = Core::start(dir.path(), Some(&db.url), &flags("a")).await?;
    let b = Core::start_standby(dir.path(), &db.url, &flags("b"), "core-b.log").await?;

    // The standby refuses, with the leader's address, on both ports.
    let body = r#"{"kind":"sum","payload":[1]}"#;
    let refused = http_exchange(
        b.http,
        "POST",
        "/v1/events",
        Some(("application/json", body.as_bytes())),
    )
    .await?;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused
            .body
            .contains(&format!(r#""leader_http":"http://{}""#, a.http)),
        "the standby does not name the leader: {}",
        refused.body
    );
    let status = b
        .ingest()
        .await?
        .publish(pb::PublishRequest {
            kind: "sum".into(),
            payload: b"[1]".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("the standby accepted a gRPC publish");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("ackflow-leader")
            .and_then(|v| v.to_str().ok()),
        Some(a.grpc_url().as_str())
    );

    let (_, metrics) = http_request(b.http, "GET", "/metrics", None).await?;
    assert!(metrics.contains("\nackflow_leader 0\n"), "{metrics}");

    // The publish example, given the standby first and no idempotency key,
    // goes where the standby sends it.
    let output = tokio::process::Command::new(ackflow_tests::bin("examples").join("publish"))
        .args(["--core", &format!("{},{}", b.grpc_url(), a.grpc_url())])
        .args(["--kind", "sum", "--key", "k", "--payload", "[1]"])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.starts_with("seq 1 "),
        "publish example: {stdout}{stderr}"
    );
    assert!(stderr.contains("standby"), "{stderr}");

    // A processor given both cores works for the leader.
    let urls = format!("{},{}", b.grpc_url(), a.grpc_url());
    let _processor = start_processor(dir.path(), &urls, &[])?;
    let (status, text) = publish(&a, "first", 1).await?;
    assert!(
        status == 202 && text.contains(r#""seq":2"#),
        "{status} {text}"
    );
    a.wait_resolved(2, Duration::from_secs(30)).await?;

    // kill -9 of the leader: b leads within seconds.
    a.proc.kill().await;
    let killed = Instant::now();
    b.wait_ready().await?;
    let took_over = killed.elapsed();
    // The same idempotency key means the same event on the new leader,
    // and the seq order goes on.
    let (status, text) = publish(&b, "first", 1).await?;
    assert!(
        status < 300 && text.contains(r#""seq":2"#) && text.contains(r#""replayed":true"#),
        "{status} {text}"
    );
    let (_, metrics) = http_request(b.http, "GET", "/metrics", None).await?;
    assert!(
        metrics.contains("\nackflow_leader 1\n") && metrics.contains("\nackflow_leader_epoch 2\n"),
        "{metrics}"
    );
    let (status, text) = publish(&b, "second", 2).await?;
    assert!(
        status == 202 && text.contains(r#""seq":3"#),
        "{status} {text}"
    );
    let accepted = killed.elapsed();
    b.wait_resolved(3, Duration::from_secs(30)).await?;
    println!(
        "kill -9 of the leader: standby ready after {} ms, first publish accepted after {} ms, \
         its result stored after {} ms",
        took_over.as_millis(),
        accepted.as_millis(),
        killed.elapsed().as_millis()
    );
    assert!(
        took_over < Duration::from_secs(10),
        "no takeover within 10 s of a kill with a 1 s lease"
    );

    // One result per event, each event once.
    let events = all_events(&db.url).await?;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.result.is_some()), "{events:?}");
    drop(b);
    db.drop_db().await?;
    Ok(())
}

/// What happened to a publish sent to a frozen leader.
struct Frozen {
    /// Its answer once the leader thawed (`None`: the connection closed).
    answer: Option<(u16, String)>,
    /// The payloads stored, in seq order, after the new leader took one
    /// more publish.
    stored: Vec<String>,
}

/// A leader frozen (SIGSTOP) with a publish waiting in its socket is
/// replaced by the standby, then thaws and must step down; `extra` flags
/// go to the frozen one.
async fn freeze_the_leader(extra: &[&str]) -> anyhow::Result<Frozen> {
    let dir = tempfile::tempdir()?;
    let db = PgDb::create("frozen_leader").await?;
    let mut a_flags = flags("a");
    a_flags.extend(extra);
    let mut a = Core::start(dir.path(), Some(&db.url), &a_flags).await?;
    let b = Core::start_standby(dir.path(), &db.url, &flags("b"), "core-b.log").await?;
    let urls = format!("{},{}", a.grpc_url(), b.grpc_url());
    let processor = start_processor(dir.path(), &urls, &[])?;
    let (status, text) = publish(&a, "before", 1).await?;
    assert!(
        status == 202 && text.contains(r#""seq":1"#),
        "{status} {text}"
    );
    a.wait_resolved(1, Duration::from_secs(30)).await?;

    a.proc.freeze().await?;
    let stopped = Instant::now();
    let a_http = a.http;
    let frozen_publish = tokio::spawn(async move {
        let body = r#"{"kind":"sum","key":"k","payload":[99],"idempotency_key":"while frozen"}"#;
        post_json(a_http, "/v1/events", body).await
    });
    b.wait_ready().await?;
    let ready = stopped.elapsed();
    // The processor leaves the frozen leader on its own: it hears nothing
    // for 3 s (core speaks at least once a second), well before HTTP/2
    // keepalive (10 s) would end the stream.
    let b_ref = &b;
    ackflow_tests::wait_for(
        "the processor to follow the new leader",
        Duration::from_secs(8),
        || async move {
            let s = b_ref.snapshot().await.ok()?;
            (s.processor?.connection == pb::ProcessorConnection::Running as i32).then_some(())
        },
    )
    .await
    .with_context(|| format!("processor log:\n{}", processor.log_tail(20)))?;
    println!(
        "SIGSTOP of the leader: standby ready after {} ms, the processor on it after {} ms",
        ready.as_millis(),
        stopped.elapsed().as_millis()
    );
    // The old leader thaws. Its answer to the waiting publish decides;
    // then it must notice it was replaced, and exit (a core that never
    // checks its epoch does not notice: it is killed).
    a.proc.signal("-CONT")?;
    let answer = tokio::time::timeout(Duration::from_secs(30), frozen_publish)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from the thawed leader"))??
        .ok();
    if extra.contains(&"--unsafe-no-fence") {
        a.proc.kill().await;
    } else {
        let code = tokio::time::timeout(Duration::from_secs(30), a.proc.wait())
            .await
            .map_err(|_| anyhow::anyhow!("the deposed leader did not exit"))??;
        assert_ne!(code, Some(0), "the deposed leader exited 0");
        assert!(
            a.proc.log_tail(200).contains("deposed"),
            "{}",
            a.proc.log_tail(30)
        );
    }
    // (Retried: if the frozen leader's commit landed, the new leader's
    // first try collides with its seq and answers 503.)
    let b_ref = &b;
    ackflow_tests::wait_for(
        "the new leader to accept",
        Duration::from_secs(10),
        || async move { matches!(publish(b_ref, "after", 2).await, Ok((202, _))).then_some(()) },
    )
    .await?;
    let stored = all_events(&db.url)
        .await?
        .iter()
        .map(|e| String::from_utf8_lossy(&e.event.payload).into_owned())
        .collect();
    drop(b);
    db.drop_db().await?;
    Ok(Frozen { answer, stored })
}

#[tokio::test]
async fn a_frozen_leader_is_replaced_and_acknowledges_nothing_when_it_thaws() -> anyhow::Result<()>
{
    let frozen = freeze_the_leader(&[]).await?;
    if let Some((status, text)) = &frozen.answer {
        assert!(*status >= 500, "acknowledged: {status} {text}");
    }
    assert_eq!(
        frozen.stored,
        ["[1]", "[2]"],
        "something of the frozen leader's was stored"
    );
    Ok(())
}

/// The negative control: without the epoch check in its writes, the thawed
/// leader commits and acknowledges the waiting publish although another
/// core leads, and the test above would see it.
#[tokio::test]
async fn without_the_fence_a_frozen_leader_acknowledges_after_it_was_replaced() -> anyhow::Result<()>
{
    let frozen = freeze_the_leader(&["--unsafe-no-fence"]).await?;
    let (status, text) = frozen.answer.expect("an answer");
    assert_eq!(status, 202, "{text}");
    assert_eq!(frozen.stored, ["[1]", "[99]", "[2]"]);
    Ok(())
}
