//! The REST API through `app(state)` with `oneshot`: every documented error
//! status, each time checking that nothing was stored, and idempotent replay.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ackflow_core::ingest::{Ingest, IngestConfig};
use ackflow_core::model::{
    AppendBatch, DeadRow, DeadView, DeliveryCursor, EventView, RequestOutcome, ResultRow, Seq,
    StatusFilter, StoredEvent,
};
use ackflow_core::rest::{RestState, app};
use ackflow_core::store::sqlite::SqliteStore;
use ackflow_core::store::{SharedStore, Store, StoreError};
use ackflow_core::tail::Tail;
use ackflow_core::validate::Limits;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// A store whose writes can be made to fail or to hang, and whose reads
/// can be made to fail, to provoke 503s.
struct Faulty {
    inner: SqliteStore,
    fail: AtomicBool,
    hang: AtomicBool,
    /// Reads (and pings) fail with a text no client may see.
    fail_reads: AtomicBool,
}

impl Faulty {
    fn read(&self) -> Result<(), StoreError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("secret database text".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for Faulty {
    fn backend(&self) -> &'static str {
        "faulty"
    }
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.read()?;
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("store is down".into()));
        }
        self.inner.ping().await
    }
    async fn durability_risks(&self) -> Result<Vec<String>, StoreError> {
        self.inner.durability_risks().await
    }
    async fn probe_write(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("store is down".into()));
        }
        self.inner.probe_write().await
    }
    async fn next_seq(&self) -> Result<Seq, StoreError> {
        self.inner.next_seq().await
    }
    async fn append(
        &self,
        first_seq: Seq,
        at: i64,
        batch: &AppendBatch,
    ) -> Result<Vec<RequestOutcome>, StoreError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("store is down".into()));
        }
        self.inner.append(first_seq, at, batch).await
    }
    async fn events_from(
        &self,
        from: Seq,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.events_from(from, limit, max_bytes).await
    }
    async fn event(&self, seq: Seq) -> Result<Option<EventView>, StoreError> {
        self.read()?;
        self.inner.event(seq).await
    }
    async fn list_events(
        &self,
        after: Seq,
        limit: u32,
        status: Option<StatusFilter>,
    ) -> Result<Vec<EventView>, StoreError> {
        self.read()?;
        self.inner.list_events(after, limit, status).await
    }
    async fn resolve(&self, r: &[ResultRow], d: &[DeadRow], f: Seq) -> Result<(), StoreError> {
        self.inner.resolve(r, d, f).await
    }
    async fn mark_sent(&self, seqs: &[Seq], at_us: i64) -> Result<(), StoreError> {
        self.inner.mark_sent(seqs, at_us).await
    }
    async fn delivery_cursor(&self) -> Result<DeliveryCursor, StoreError> {
        self.inner.delivery_cursor().await
    }
    async fn dead_events(&self, limit: u32) -> Result<Vec<DeadView>, StoreError> {
        self.inner.dead_events(limit).await
    }
    async fn mark_requeued(&self, seq: Seq, new_seq: Seq) -> Result<bool, StoreError> {
        self.inner.mark_requeued(seq, new_seq).await
    }
    async fn prune(&self, before_us: i64, limit: u32) -> Result<u64, StoreError> {
        self.inner.prune(before_us, limit).await
    }
    async fn size_bytes(&self) -> Result<u64, StoreError> {
        self.inner.size_bytes().await
    }
}

struct Fixture {
    router: axum::Router,
    store: Arc<Faulty>,
    _dir: tempfile::TempDir,
    _cancel: tokio_util::sync::DropGuard,
}

async fn fixture(queue: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("rest.db").display());
    let inner = SqliteStore::open(&url).await.unwrap();
    inner.migrate().await.unwrap();
    let store = Arc::new(Faulty {
        inner,
        fail: AtomicBool::new(false),
        hang: AtomicBool::new(false),
        fail_reads: AtomicBool::new(false),
    });
    let shared: SharedStore = store.clone();
    let cancel = CancellationToken::new();
    let ingest = Ingest::start(
        shared.clone(),
        Arc::new(Tail::new(100, 1 << 20)),
        IngestConfig {
            max_batch: 100,
            linger: std::time::Duration::ZERO,
            queue,
            queue_bytes: 256 << 20,
            unsafe_pair_after_refusal: false,
        },
        1,
        Arc::new(ackflow_core::metrics::CoreMetrics::new()),
        cancel.clone(),
        &TaskTracker::new(),
    );
    let limits = Limits {
        max_payload_bytes: 1024,
        max_batch_events: 3,
    };
    let router = app(RestState::new(ingest, shared, limits, 1024));
    Fixture {
        router,
        store,
        _dir: dir,
        _cancel: cancel.drop_guard(),
    }
}

async fn send(
    f: &Fixture,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = f
        .router
        .clone()
        .oneshot(builder.body(body.into()).unwrap())
        .await
        .unwrap();
    common::read_response(response).await
}

async fn post(f: &Fixture, uri: &str, body: &str) -> (StatusCode, String, String) {
    send(
        f,
        "POST",
        uri,
        Some("application/json"),
        body.to_string(),
        &[],
    )
    .await
}

async fn stored(f: &Fixture) -> u64 {
    f.store.next_seq().await.unwrap() - 1
}

/// Asserts a problem+json error with `status` and that nothing was stored.
async fn assert_problem(f: &Fixture, got: (StatusCode, String, String), status: StatusCode) {
    assert_eq!(got.0, status, "body: {}", got.2);
    assert_eq!(got.1, "application/problem+json");
    let json: serde_json::Value = serde_json::from_str(&got.2).unwrap();
    assert_eq!(json["status"], status.as_u16());
    assert!(json["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(stored(f).await, 0, "a failed request stored something");
}

#[tokio::test]
async fn publish_then_read_back() {
    let f = fixture(10).await;
    let (status, _, body) = post(&f, "/v1/events", r#"{"kind":"sum","payload":[1,2]}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["seq"], 1);
    assert!(json["id"].as_str().is_some_and(|id| id.len() == 32));
    let (status, _, body) = send(&f, "GET", "/v1/events/1", None, Body::empty(), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["payload"], serde_json::json!([1, 2]));
    assert_eq!(json["state"], "pending");
    let (status, _, body) = post(
        &f,
        "/v1/events/batch",
        r#"{"events":[{"kind":"a","payload":1},{"kind":"b","payload":"x","key":"k"}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, _, body) = send(
        &f,
        "GET",
        "/v1/events?after=1&limit=5&status=pending",
        None,
        Body::empty(),
        &[],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["events"].as_array().unwrap().len(), 2);
    assert_eq!(json["next_after"], 3);
}

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OTHER_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// The `traceparent` of event `seq` as `GET /v1/events/{seq}` returns it.
async fn traceparent_of(f: &Fixture, seq: u64) -> serde_json::Value {
    let uri = format!("/v1/events/{seq}");
    let (status, _, body) = send(f, "GET", &uri, None, Body::empty(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["traceparent"].clone()
}

#[tokio::test]
async fn trace_context_from_the_header_or_the_field_comes_back_on_read() {
    let f = fixture(10).await;
    let publish = |uri: &'static str, body: &'static str, traceparent: &'static str| {
        let headers = if traceparent.is_empty() {
            vec![]
        } else {
            vec![("traceparent", traceparent)]
        };
        let f = &f;
        async move { send(f, "POST", uri, Some("application/json"), body, &headers).await }
    };
    // A malformed header or field is refused and stores nothing.
    let single = r#"{"kind":"sum","payload":[1]}"#;
    let got = publish("/v1/events", single, "00-not-a-trace").await;
    assert!(got.2.contains("traceparent"), "{}", got.2);
    assert_problem(&f, got, StatusCode::UNPROCESSABLE_ENTITY).await;
    let zeros = r#"{"events":[{"kind":"sum","payload":[1],"traceparent":"00-00000000000000000000000000000000-b7ad6b7169203331-01"}]}"#;
    let got = publish("/v1/events/batch", zeros, "").await;
    assert!(
        got.2
            .contains("events[0].traceparent: the trace-id is all zeros"),
        "{}",
        got.2
    );
    assert_problem(&f, got, StatusCode::UNPROCESSABLE_ENTITY).await;

    // The header: kept as sent; a later version is stored as version 00.
    let (status, _, body) = publish("/v1/events", single, TRACE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
    let (status, _, body) = publish("/v1/events", single, later).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // A batch: the header applies to each event without a field of its own.
    let batch = r#"{"events":[{"kind":"sum","payload":[1]},
        {"kind":"sum","payload":[2],"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}]}"#;
    let (status, _, body) = publish("/v1/events/batch", batch, TRACE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Without either, the event has none and the field is left out.
    let (status, _, body) = publish("/v1/events", single, "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let expected = [
        serde_json::json!(TRACE),
        serde_json::json!(TRACE),
        serde_json::json!(TRACE),
        serde_json::json!(OTHER_TRACE),
        serde_json::Value::Null,
    ];
    for (seq, want) in (1..).zip(expected) {
        assert_eq!(traceparent_of(&f, seq).await, want, "seq {seq}");
    }
}

#[tokio::test]
async fn idempotent_replay_returns_the_original_seq() {
    let f = fixture(10).await;
    let body = r#"{"kind":"sum","payload":[1]}"#;
    let key = [("idempotency-key", "order-17")];
    let first = send(
        &f,
        "POST",
        "/v1/events",
        Some("application/json"),
        body,
        &key,
    )
    .await;
    let second = send(
        &f,
        "POST",
        "/v1/events",
        Some("application/json"),
        body,
        &key,
    )
    .await;
    assert_eq!(first.0, StatusCode::ACCEPTED);
    assert_eq!(second.0, StatusCode::ACCEPTED);
    let a: serde_json::Value = serde_json::from_str(&first.2).unwrap();
    let b: serde_json::Value = serde_json::from_str(&second.2).unwrap();
    assert_eq!(a["seq"], b["seq"]);
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["replayed"], true);
    assert_eq!(stored(&f).await, 1, "the replay stored nothing");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let f = fixture(10).await;
    assert_problem(
        &f,
        post(&f, "/v1/events", r#"{"kind":"a","#).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let bad_utf8 = send(
        &f,
        "POST",
        "/v1/events",
        Some("application/json"),
        vec![b'{', 0xff, b'}'],
        &[],
    )
    .await;
    assert_problem(&f, bad_utf8, StatusCode::BAD_REQUEST).await;
    let deep = format!(
        r#"{{"kind":"a","payload":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert_problem(
        &f,
        post(&f, "/v1/events", &deep).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let f = fixture(10).await;
    let got = send(
        &f,
        "POST",
        "/v1/events",
        Some("text/plain"),
        r#"{"kind":"a","payload":1}"#,
        &[],
    )
    .await;
    assert_problem(&f, got, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let none = send(
        &f,
        "POST",
        "/v1/events",
        None,
        r#"{"kind":"a","payload":1}"#,
        &[],
    )
    .await;
    assert_problem(&f, none, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn over_the_size_limit_is_413() {
    let f = fixture(10).await;
    let big = format!(r#"{{"kind":"a","payload":"{}"}}"#, "x".repeat(2000));
    assert_problem(
        &f,
        post(&f, "/v1/events", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
}

#[tokio::test]
async fn invalid_fields_are_422() {
    let f = fixture(10).await;
    for body in [
        r#"{"kind":"","payload":1}"#,
        r#"{"kind":"has space","payload":1}"#,
        r#"{"kind":5,"payload":1}"#,
        r#"{"kind":"a"}"#,
        r#"{"kind":"a","payload":1,"extra":true}"#,
        r#"[1,2]"#,
    ] {
        assert_problem(
            &f,
            post(&f, "/v1/events", body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    // One bad event fails the whole batch.
    let batch = r#"{"events":[{"kind":"ok","payload":1},{"kind":"","payload":2}]}"#;
    assert_problem(
        &f,
        post(&f, "/v1/events/batch", batch).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let empty = r#"{"events":[]}"#;
    assert_problem(
        &f,
        post(&f, "/v1/events/batch", empty).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let too_many = r#"{"events":[{"kind":"a","payload":1},{"kind":"a","payload":1},{"kind":"a","payload":1},{"kind":"a","payload":1}]}"#;
    assert_problem(
        &f,
        post(&f, "/v1/events/batch", too_many).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

#[tokio::test]
async fn unknown_event_is_404_and_bad_queries_are_400() {
    let f = fixture(10).await;
    let got = send(&f, "GET", "/v1/events/7", None, Body::empty(), &[]).await;
    assert_problem(&f, got, StatusCode::NOT_FOUND).await;
    for uri in [
        "/v1/events/abc",
        "/v1/events?limit=0",
        "/v1/events?status=weird",
        "/v1/events?after=-1",
        "/v1/events?what=1",
    ] {
        let got = send(&f, "GET", uri, None, Body::empty(), &[]).await;
        assert_problem(&f, got, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn store_unavailable_is_503() {
    let f = fixture(10).await;
    f.store.fail.store(true, Ordering::SeqCst);
    let got = post(&f, "/v1/events", r#"{"kind":"a","payload":1}"#).await;
    f.store.fail.store(false, Ordering::SeqCst);
    assert_problem(&f, got, StatusCode::SERVICE_UNAVAILABLE).await;
    f.store.fail.store(true, Ordering::SeqCst);
    let got = send(&f, "GET", "/readyz", None, Body::empty(), &[]).await;
    assert_eq!(got.0, StatusCode::SERVICE_UNAVAILABLE);
    f.store.fail.store(false, Ordering::SeqCst);
    // The writer probes the store by itself (about once a second) and turns
    // ready again; then the next publish gets seq 1 (no gap).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = send(&f, "GET", "/readyz", None, Body::empty(), &[]).await;
        if got.0 == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready 10 s after the store recovered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _, body) = post(&f, "/v1/events", r#"{"kind":"a","payload":1}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(body.contains(r#""seq":1"#), "{body}");
}

#[tokio::test]
async fn full_queue_is_503() {
    let f = fixture(1).await;
    f.store.hang.store(true, Ordering::SeqCst);
    // The first request occupies the writer, the second the queue.
    let a = tokio::spawn({
        let router = f.router.clone();
        async move {
            let req = Request::post("/v1/events")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"kind":"a","payload":1}"#))
                .unwrap();
            router.oneshot(req).await.map(|r| r.status())
        }
    });
    let mut full = None;
    for _ in 0..100 {
        let got = post(&f, "/v1/events", r#"{"kind":"a","payload":1}"#);
        match tokio::time::timeout(std::time::Duration::from_millis(200), got).await {
            Ok(got) if got.0 == StatusCode::SERVICE_UNAVAILABLE => {
                full = Some(got);
                break;
            }
            _ => continue,
        }
    }
    let full = full.expect("a full queue answers 503");
    assert!(full.2.contains("queue is full"), "{}", full.2);
    assert_eq!(stored(&f).await, 0);
    // The same request again, for its headers: still full.
    let (status, retry_after, body) = unavailable(&f, "POST", "/v1/events").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        retry_after.as_deref(),
        Some("1"),
        "a full queue's 503: {body}"
    );
    a.abort();
}

/// Sends a request (a valid publish for POSTs) and returns the status, the
/// `Retry-After` header and the body.
async fn unavailable(f: &Fixture, method: &str, uri: &str) -> (StatusCode, Option<String>, String) {
    let body = match (method, uri) {
        ("POST", "/v1/events/batch") => r#"{"events":[{"kind":"a","payload":1}]}"#,
        ("POST", _) => r#"{"kind":"a","payload":1}"#,
        _ => "",
    };
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        f.router.clone().oneshot(request),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {uri}: no answer within 10 s"))
    .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, _, body) = common::read_response(response).await;
    (status, retry_after, body)
}

/// Every 503 tells the client when to come back: publishes and readiness
/// while writes fail, reads and readiness while reads fail. A failed read
/// says what kind of failure it was, never the store's own text.
#[tokio::test]
async fn every_503_carries_retry_after() {
    let f = fixture(10).await;
    let (status, _, body) = post(&f, "/v1/events", r#"{"kind":"a","payload":1}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    f.store.fail.store(true, Ordering::SeqCst);
    for (method, uri) in [
        ("POST", "/v1/events"),
        ("POST", "/v1/events/batch"),
        ("GET", "/readyz"),
    ] {
        let (status, retry_after, body) = unavailable(&f, method, uri).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}: {body}"
        );
        assert_eq!(retry_after.as_deref(), Some("1"), "{method} {uri}: {body}");
    }
    f.store.fail.store(false, Ordering::SeqCst);
    // Writes recover (the writer probes by itself); then reads fail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while unavailable(&f, "GET", "/readyz").await.0 != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    f.store.fail_reads.store(true, Ordering::SeqCst);
    for uri in [
        "/v1/events/1",
        "/v1/events",
        "/v1/events?after=0&limit=5",
        "/readyz",
    ] {
        let (status, retry_after, body) = unavailable(&f, "GET", uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "GET {uri}: {body}");
        assert_eq!(retry_after.as_deref(), Some("1"), "GET {uri}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], 503, "{body}");
        assert!(
            json["detail"]
                .as_str()
                .is_some_and(|d| d.contains("corrupt")),
            "GET {uri}: the kind of failure: {body}"
        );
        assert!(
            !body.contains("secret"),
            "GET {uri}: the store's text leaked: {body}"
        );
    }
    f.store.fail_reads.store(false, Ordering::SeqCst);
    let (status, _, body) = unavailable(&f, "GET", "/v1/events/1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
