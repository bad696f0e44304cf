//! Webhooks end to end: the real core and processor binaries, and an HTTP
//! server started by the test with endpoints that answer, refuse, fail once,
//! hang, and take their time. Checks the contract README gives: what is
//! sent (body as published, the `ackflow-*`, `idempotency-key` and
//! `traceparent` headers), what each answer becomes (ok, failed, retry later honouring
//! `Retry-After`, parked after `--max-deliver` timeouts), and that calls run
//! side by side across keys but one at a time, in seq order, within a key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackflow_tests::{Core, http_request, post_json, start_processor_with_env, wait_for};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::Value;

/// One call the endpoint received.
#[derive(Debug, Clone)]
struct Call {
    path: &'static str,
    headers: HashMap<String, String>,
    body: String,
}

#[derive(Default)]
struct Seen {
    calls: Vec<Call>,
    /// `/slow`: calls in progress, per key and in all, and the most seen.
    running_per_key: HashMap<String, u32>,
    running: u32,
    most_per_key: u32,
    most: u32,
}

type Shared = Arc<Mutex<Seen>>;

fn record(seen: &Shared, path: &'static str, headers: &HeaderMap, body: String) -> Call {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let call = Call {
        path,
        headers,
        body,
    };
    seen.lock().unwrap().calls.push(call.clone());
    call
}

async fn upper(State(seen): State<Shared>, headers: HeaderMap, body: String) -> String {
    record(&seen, "upper", &headers, body).body.to_uppercase()
}

async fn refuse(State(seen): State<Shared>, headers: HeaderMap, body: String) -> impl IntoResponse {
    record(&seen, "refuse", &headers, body);
    (StatusCode::UNPROCESSABLE_ENTITY, "no thanks")
}

/// 503 with `Retry-After: 1` the first time an event comes, 200 after.
async fn flaky(State(seen): State<Shared>, headers: HeaderMap, body: String) -> impl IntoResponse {
    let call = record(&seen, "flaky", &headers, body);
    let id = &call.headers["idempotency-key"];
    let earlier = seen
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.path == "flaky" && &c.headers["idempotency-key"] == id)
        .count();
    if earlier == 1 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "busy",
        )
            .into_response()
    } else {
        "ok after a retry".into_response()
    }
}

async fn hang(State(seen): State<Shared>, headers: HeaderMap, body: String) -> &'static str {
    record(&seen, "hang", &headers, body);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "never"
}

/// Takes 100 ms, counting the calls in progress per key.
async fn slow(State(seen): State<Shared>, headers: HeaderMap, body: String) -> &'static str {
    let key = record(&seen, "slow", &headers, body).headers["ackflow-key"].clone();
    {
        let mut s = seen.lock().unwrap();
        let n = s.running_per_key.entry(key.clone()).or_default();
        *n += 1;
        let n = *n;
        s.running += 1;
        s.most_per_key = s.most_per_key.max(n);
        s.most = s.most.max(s.running);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = seen.lock().unwrap();
    *s.running_per_key.get_mut(&key).unwrap() -= 1;
    s.running -= 1;
    "slept"
}

async fn start_endpoints(seen: Shared) -> anyhow::Result<SocketAddr> {
    let app = Router::new()
        .route("/upper", post(upper))
        .route("/refuse", post(refuse))
        .route("/flaky", post(flaky))
        .route("/hang", post(hang))
        .route("/slow", post(slow))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The publisher's trace context of the first event.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_keep_the_contract() -> anyhow::Result<()> {
    let seen = Shared::default();
    let endpoints = start_endpoints(seen.clone()).await?;
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--max-deliver", "3"]).await?;
    let hooks: Vec<String> = ["upper", "refuse", "flaky", "hang", "slow"]
        .iter()
        .map(|k| format!("{k}=http://{endpoints}/{k}"))
        .collect();
    let mut args = vec!["--webhook-timeout-ms", "500"];
    for hook in &hooks {
        args.extend(["--webhook", hook.as_str()]);
    }
    // Each event's work is logged with its trace context at debug.
    let log_filter = [("RUST_LOG", "info,ackflow_processor::executor=debug")];
    let mut processor = start_processor_with_env(dir.path(), &core.grpc_url(), &args, &log_filter)?;

    let mut bodies = vec![
        format!(
            r#"{{"kind":"upper","key":"k1","payload":"hello  world","traceparent":"{TRACE}"}}"#
        ),
        r#"{"kind":"upper","payload":{"n": 1}}"#.to_string(),
        r#"{"kind":"refuse","key":"k2","payload":1}"#.to_string(),
        r#"{"kind":"flaky","key":"k3","payload":2}"#.to_string(),
        r#"{"kind":"hang","key":"k4","payload":3}"#.to_string(),
    ];
    // Three keys, four slow calls each.
    for i in 0..12 {
        bodies.push(format!(
            r#"{{"kind":"slow","key":"s{}","payload":{i}}}"#,
            i % 3
        ));
    }
    for body in &bodies {
        let (status, text) = post_json(core.http, "/v1/events", body).await?;
        anyhow::ensure!(status == 202, "publish {body}: {status} {text}");
    }
    let core_ref = &core;
    let last = bodies.len() as u64;
    wait_for(
        "every event resolved",
        Duration::from_secs(60),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            (s.acked_floor > last).then_some(())
        },
    )
    .await?;
    let get = |seq: u64| async move {
        let (status, text) =
            http_request(core_ref.http, "GET", &format!("/v1/events/{seq}"), None).await?;
        anyhow::ensure!(status == 200, "GET {seq}: {status} {text}");
        Ok::<Value, anyhow::Error>(serde_json::from_str(&text)?)
    };
    let calls = seen.lock().unwrap().calls.clone();
    let calls_to = |path: &str| {
        calls
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect::<Vec<_>>()
    };

    // What is sent: the payload as published, and the headers.
    let one = get(1).await?;
    assert_eq!(one["state"], "ok", "{one}");
    assert_eq!(one["result"]["output"], "\"HELLO  WORLD\"", "{one}");
    // Seqs 1 (key k1) and 2 (no key) run side by side: order them by seq,
    // not by arrival.
    let mut upper_calls = calls_to("upper");
    upper_calls.sort_by_key(|c| c.headers.get("ackflow-seq").cloned().unwrap_or_default());
    assert_eq!(upper_calls.len(), 2, "{upper_calls:?}");
    let first = &upper_calls[0];
    assert_eq!(
        first.body, "\"hello  world\"",
        "the payload text as published"
    );
    for (name, want) in [
        ("content-type", "application/json"),
        ("ackflow-seq", "1"),
        ("ackflow-kind", "upper"),
        ("ackflow-key", "k1"),
        ("ackflow-attempt", "1"),
        // The trace goes on: publisher, core, processor, the user's code.
        ("traceparent", TRACE),
    ] {
        assert_eq!(
            first.headers.get(name).map(String::as_str),
            Some(want),
            "{name}: {first:?}"
        );
    }
    assert_eq!(
        first.headers.get("idempotency-key").map(String::as_str),
        one["id"].as_str(),
        "the event's id: {first:?}"
    );
    let unkeyed = &upper_calls[1];
    assert_eq!(unkeyed.body, r#"{"n": 1}"#);
    assert!(!unkeyed.headers.contains_key("ackflow-key"), "{unkeyed:?}");
    assert!(!unkeyed.headers.contains_key("traceparent"), "{unkeyed:?}");
    assert_eq!(one["traceparent"], TRACE, "{one}");
    let log = std::fs::read_to_string(dir.path().join("processor.log"))?;
    let traced = format!("traceparent={TRACE}");
    assert!(
        log.lines()
            .any(|l| l.contains("seq=1 ") && l.contains(&traced) && l.contains("processed")),
        "the processor logs the event's work with its trace context:\n{log}"
    );

    // A 4xx is a failed result with the body as its output.
    let refused = get(3).await?;
    assert_eq!(refused["state"], "failed", "{refused}");
    assert_eq!(refused["result"]["output"], "no thanks");
    assert_eq!(calls_to("refuse").len(), 1, "never retried");

    // A 503 is retried (after its Retry-After), with the same idempotency key.
    let flaky_event = get(4).await?;
    assert_eq!(flaky_event["state"], "ok", "{flaky_event}");
    assert_eq!(flaky_event["result"]["output"], "ok after a retry");
    let flaky_calls = calls_to("flaky");
    assert_eq!(flaky_calls.len(), 2, "{flaky_calls:?}");
    let attempts: Vec<u32> = flaky_calls
        .iter()
        .map(|c| c.headers["ackflow-attempt"].parse().unwrap())
        .collect();
    assert!(attempts[1] > attempts[0], "a later copy: {attempts:?}");
    assert_eq!(
        flaky_calls[0].headers["idempotency-key"],
        flaky_calls[1].headers["idempotency-key"]
    );

    // No answer within --webhook-timeout-ms: retried, then parked at
    // --max-deliver 3.
    let hung = get(5).await?;
    assert_eq!(hung["state"], "dead", "{hung}");
    let reason = hung["dead"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("did not answer within 500 ms"),
        "the park names the timeout: {hung}"
    );
    assert!(!calls_to("hang").is_empty());

    // Keys side by side, one call per key at a time, in seq order.
    let (most, most_per_key) = {
        let s = seen.lock().unwrap();
        (s.most, s.most_per_key)
    };
    assert_eq!(most_per_key, 1, "two calls of one key at once");
    assert!(most > 1, "the three keys never ran side by side");
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for call in calls_to("slow") {
        let seq: u64 = call.headers["ackflow-seq"].parse()?;
        let key = call.headers["ackflow-key"].clone();
        if let Some(before) = last_seq.insert(key.clone(), seq) {
            assert!(seq > before, "key {key}: seq {seq} after {before}");
        }
    }
    for seq in 6..=last {
        assert_eq!(get(seq).await?["state"], "ok", "slow seq {seq}");
    }
    processor.terminate().await?;
    Ok(())
}

#[tokio::test]
async fn a_bad_webhook_flag_is_refused_at_start() -> anyhow::Result<()> {
    let output = tokio::process::Command::new(ackflow_tests::bin("e2e-processor"))
        .args(["--webhook", "resize=https://example.com/resize"])
        .output()
        .await?;
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--webhook") && stderr.contains("https webhooks are not supported"),
        "{stderr}"
    );
    Ok(())
}
