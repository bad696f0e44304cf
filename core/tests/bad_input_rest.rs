//! Bad input on the REST API, generated with proptest and sent through
//! `app(state)` with `oneshot`: random bytes, truncated JSON, wrong types,
//! unknown fields, out-of-range numbers, huge bodies, deep nesting, invalid
//! UTF-8, bad headers and bad query strings.
//!
//! Each request must get its documented problem+json status (400 malformed,
//! 404 unknown event, 413 too large, 415 wrong content type, 422 invalid
//! field), the store must be unchanged, and nothing may panic. At the end a
//! valid publish gets seq 1: nothing was stored before it.

use crate::common;

use std::sync::Arc;

use ackflow_core::ingest::{Ingest, IngestConfig};
use ackflow_core::rest::{RestState, app};
use ackflow_core::store::sqlite::SqliteStore;
use ackflow_core::store::{SharedStore, Store};
use ackflow_core::tail::Tail;
use ackflow_core::validate::{Limits, MAX_JSON_DEPTH};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Largest body the fixture accepts.
const MAX_BODY: usize = 4096;

struct Fixture {
    router: axum::Router,
    store: SharedStore,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    _cancel: tokio_util::sync::DropGuard,
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("rest.db").display());
    let cancel = CancellationToken::new();
    let (router, store) = runtime.block_on(async {
        let store = SqliteStore::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let store: SharedStore = Arc::new(store);
        let ingest = Ingest::start(
            store.clone(),
            Arc::new(Tail::new(100, 1 << 20)),
            IngestConfig {
                max_batch: 100,
                linger: std::time::Duration::ZERO,
                queue: 100,
                queue_bytes: 256 << 20,
                unsafe_pair_after_refusal: false,
            },
            1,
            Arc::new(ackflow_core::metrics::CoreMetrics::new()),
            cancel.clone(),
            &TaskTracker::new(),
        );
        let limits = Limits {
            max_payload_bytes: MAX_BODY,
            max_batch_events: 10,
        };
        let router = app(RestState::new(ingest, store.clone(), limits, MAX_BODY));
        (router, store)
    });
    Fixture {
        router,
        store,
        runtime,
        _dir: dir,
        _cancel: cancel.drop_guard(),
    }
}

/// A request to send.
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    uri: String,
    content_type: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// Send the body as a stream without Content-Length.
    chunked: bool,
}

fn post(uri: &str, body: impl Into<Vec<u8>>) -> Req {
    Req {
        method: "POST",
        uri: uri.into(),
        content_type: Some("application/json".into()),
        headers: Vec::new(),
        body: body.into(),
        chunked: false,
    }
}

fn get(uri: String) -> Req {
    Req {
        method: "GET",
        uri,
        content_type: None,
        headers: Vec::new(),
        body: Vec::new(),
        chunked: false,
    }
}

impl Fixture {
    /// Sends `req`; returns the status, content type and body.
    fn send(&self, req: &Req) -> (StatusCode, String, String) {
        self.runtime.block_on(async {
            let mut builder = Request::builder().method(req.method).uri(&req.uri);
            if let Some(ct) = &req.content_type {
                builder = builder.header("content-type", ct.as_str());
            }
            for (name, value) in &req.headers {
                builder = builder.header(name.as_str(), value.as_slice());
            }
            let body = if req.chunked {
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    req.body.chunks(512).map(|c| Ok(c.to_vec())).collect();
                Body::from_stream(tokio_stream::iter(chunks))
            } else {
                Body::from(req.body.clone())
            };
            let response = self
                .router
                .clone()
                .oneshot(builder.body(body).unwrap())
                .await
                .unwrap();
            common::read_response(response).await
        })
    }

    fn stored(&self) -> u64 {
        self.runtime
            .block_on(self.store.next_seq())
            .expect("the store answers")
            - 1
    }

    /// Sends `req` and checks: one of `allowed`, problem+json, the store
    /// unchanged.
    fn expect_problem(&self, req: &Req, allowed: &[StatusCode]) -> Result<(), TestCaseError> {
        let (status, ct, body) = self.send(req);
        prop_assert!(
            allowed.contains(&status),
            "{status} not in {allowed:?} for {req:?}: {body}"
        );
        prop_assert_eq!(ct, "application/problem+json", "body: {}", body);
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| TestCaseError::fail(format!("problem body is not JSON: {e}: {body}")))?;
        prop_assert_eq!(json["status"].as_u64(), Some(status.as_u16() as u64));
        prop_assert!(json["detail"].as_str().is_some_and(|d| !d.is_empty()));
        prop_assert_eq!(self.stored(), 0, "a rejected request stored something");
        Ok(())
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// Ends the test: a valid publish still works and gets seq 1.
fn still_serves(f: &Fixture) {
    let (status, _, body) = f.send(&post("/v1/events", r#"{"kind":"sum","payload":[1]}"#));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["seq"], 1, "something was stored before");
}

const BAD_SYNTAX: StatusCode = StatusCode::BAD_REQUEST;
const INVALID: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
const TOO_LARGE: StatusCode = StatusCode::PAYLOAD_TOO_LARGE;

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON value that is not a string (and not null when `allow_null`).
fn not_a_string(allow_null: bool) -> impl Strategy<Value = serde_json::Value> {
    json_value().prop_filter("not a string", move |v| {
        !v.is_string() && (allow_null || !v.is_null())
    })
}

#[test]
fn random_bytes_are_rejected() {
    let f = fixture();
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        // Mostly printable, so the parser gets further.
        "[ -~]{0,300}".prop_map(String::into_bytes),
        // JSON-ish punctuation soup.
        r#"[\[\]{}:,"a-z0-9 \\.eE+-]{0,200}"#.prop_map(String::into_bytes),
    ];
    runner(400)
        .run(&(strategy, any::<bool>()), |(body, batch)| {
            let uri = if batch {
                "/v1/events/batch"
            } else {
                "/v1/events"
            };
            f.expect_problem(&post(uri, body), &[BAD_SYNTAX, INVALID, TOO_LARGE])
        })
        .unwrap();
    still_serves(&f);
}

#[test]
fn truncated_json_is_400() {
    let f = fixture();
    let bodies = [
        r#"{"kind":"sum","key":"k","idempotency_key":"i-1","payload":{"a":[1,2,{"b":"c"}]}}"#,
        r#"{"events":[{"kind":"a","payload":1},{"kind":"b","payload":"x\"y"}]}"#,
        r#"  {"kind" : "wordcount" , "payload" : "many words here"}  "#,
    ];
    let strategy = (0..bodies.len()).prop_flat_map(move |i| {
        let body = bodies[i];
        // Cut before the closing brace: never a complete document.
        let end = body.rfind('}').unwrap();
        (Just(body), 0..end)
    });
    runner(300)
        .run(&strategy, |(body, cut)| {
            let uri = if body.contains("events") {
                "/v1/events/batch"
            } else {
                "/v1/events"
            };
            f.expect_problem(&post(uri, &body.as_bytes()[..cut]), &[BAD_SYNTAX])
        })
        .unwrap();
    still_serves(&f);
}

#[test]
fn wrong_types_and_unknown_fields_are_422() {
    let f = fixture();
    #[derive(Debug, Clone)]
    enum Case {
        Kind(serde_json::Value),
        Key(serde_json::Value),
        IdempotencyKey(serde_json::Value),
        Unknown(String, serde_json::Value),
        MissingKind,
        MissingPayload,
        NotAnObject(serde_json::Value),
        BatchEvents(serde_json::Value),
        BatchEventUnknown(String),
    }
    let known = ["kind", "key", "payload", "idempotency_key"];
    let strategy = prop_oneof![
        not_a_string(true).prop_map(Case::Kind),
        not_a_string(false).prop_map(Case::Key),
        not_a_string(false).prop_map(Case::IdempotencyKey),
        ("[a-zA-Z_]{1,12}", json_value())
            .prop_filter("unknown", move |(n, _)| !known.contains(&n.as_str()))
            .prop_map(|(n, v)| Case::Unknown(n, v)),
        Just(Case::MissingKind),
        Just(Case::MissingPayload),
        json_value()
            .prop_filter("not an object", |v| !v.is_object())
            .prop_map(Case::NotAnObject),
        json_value()
            .prop_filter("not an array", |v| !v.is_array())
            .prop_map(Case::BatchEvents),
        "[a-z]{1,8}"
            .prop_filter("unknown", move |n| !known.contains(&n.as_str()))
            .prop_map(Case::BatchEventUnknown),
    ];
    runner(400)
        .run(&strategy, |case| {
            let event = |field: &str, value: serde_json::Value| {
                let mut e = serde_json::json!({"kind": "sum", "payload": [1]});
                e[field] = value;
                e
            };
            let (uri, body) = match case {
                Case::Kind(v) => ("/v1/events", event("kind", v)),
                Case::Key(v) => ("/v1/events", event("key", v)),
                Case::IdempotencyKey(v) => ("/v1/events", event("idempotency_key", v)),
                Case::Unknown(n, v) => ("/v1/events", event(&n, v)),
                Case::MissingKind => ("/v1/events", serde_json::json!({"payload": 1})),
                Case::MissingPayload => ("/v1/events", serde_json::json!({"kind": "sum"})),
                Case::NotAnObject(v) => ("/v1/events", v),
                Case::BatchEvents(v) => ("/v1/events/batch", serde_json::json!({ "events": v })),
                Case::BatchEventUnknown(n) => (
                    "/v1/events/batch",
                    serde_json::json!({ "events": [event(&n, serde_json::json!(1))] }),
                ),
            };
            f.expect_problem(&post(uri, body.to_string()), &[INVALID])
        })
        .unwrap();
    still_serves(&f);
}

#[test]
fn invalid_field_values_are_422() {
    let f = fixture();
    let strategy = prop_oneof![
        // Kinds outside [A-Za-z0-9_.-]{1,64}.
        "\\PC{0,80}"
            .prop_filter("invalid kind", |k| {
                k.is_empty()
                    || k.len() > 64
                    || !k
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            })
            .prop_map(|k| serde_json::json!({"kind": k, "payload": 1})),
        // Keys over 256 bytes.
        "[a-z]{257,400}".prop_map(|k| serde_json::json!({"kind": "a", "key": k, "payload": 1})),
        "[a-z]{257,400}"
            .prop_map(|k| serde_json::json!({"kind": "a", "idempotency_key": k, "payload": 1})),
        Just(serde_json::json!({"kind": "a", "idempotency_key": "", "payload": 1})),
        // Core's reserved idempotency-key prefix.
        "[a-z0-9:]{0,20}".prop_map(|rest| {
            serde_json::json!({"kind": "a", "idempotency_key": format!("ackflow-{rest}"), "payload": 1})
        }),
        // Control characters (NUL included) in keys: one rule on both stores.
        "[a-z]{0,8}[\\x00-\\x1f\\x7f][a-z]{0,8}"
            .prop_map(|k| serde_json::json!({"kind": "a", "key": k, "payload": 1})),
        "[a-z]{0,8}[\\x00-\\x1f\\x7f][a-z]{0,8}"
            .prop_map(|k| serde_json::json!({"kind": "a", "idempotency_key": k, "payload": 1})),
    ];
    runner(200)
        .run(&strategy, |body| {
            f.expect_problem(&post("/v1/events", body.to_string()), &[INVALID])?;
            let batch = serde_json::json!({ "events": [{"kind": "ok", "payload": 1}, body] });
            f.expect_problem(&post("/v1/events/batch", batch.to_string()), &[INVALID])
        })
        .unwrap();
    // Batches with no events or too many.
    for n in [0, 11, 500] {
        let events: Vec<serde_json::Value> = (0..n)
            .map(|_| serde_json::json!({"kind": "a", "payload": 1}))
            .collect();
        let body = serde_json::json!({ "events": events }).to_string();
        let allowed = if body.len() > MAX_BODY {
            TOO_LARGE
        } else {
            INVALID
        };
        f.expect_problem(&post("/v1/events/batch", body), &[allowed])
            .unwrap();
    }
    still_serves(&f);
}

#[test]
fn out_of_range_numbers_are_rejected() {
    let f = fixture();
    let huge = prop_oneof![
        Just("1e400".to_string()),
        Just("-1e400".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-9223372036854775809".to_string()),
        "[1-9][0-9]{20,60}",
        "-[1-9][0-9]{20,60}",
        "[0-9]\\.[0-9]{1,5}e[1-9][0-9]{3,5}",
    ];
    runner(150)
        .run(&huge, |n| {
            // Where a string is expected.
            for body in [
                format!(r#"{{"kind":{n},"payload":1}}"#),
                format!(r#"{{"kind":"a","payload":1,"key":{n}}}"#),
                format!(r#"{{"kind":"a","payload":1,"idempotency_key":{n}}}"#),
            ] {
                f.expect_problem(&post("/v1/events", body), &[BAD_SYNTAX, INVALID])?;
            }
            // In the query string and the path.
            for uri in [
                format!("/v1/events?after={n}"),
                format!("/v1/events?limit={n}"),
                format!("/v1/events/{n}"),
            ] {
                f.expect_problem(&get(uri), &[BAD_SYNTAX])?;
            }
            Ok(())
        })
        .unwrap();
    // In range for u64 but beyond any stored seq: not found.
    for uri in [
        "/v1/events/18446744073709551615",
        "/v1/events/9223372036854775808",
    ] {
        f.expect_problem(&get(uri.into()), &[StatusCode::NOT_FOUND])
            .unwrap();
    }
    for limit in ["0", "1001", "-1", "4294967296"] {
        f.expect_problem(&get(format!("/v1/events?limit={limit}")), &[BAD_SYNTAX])
            .unwrap();
    }
    still_serves(&f);
}

#[test]
fn huge_bodies_are_413() {
    let f = fixture();
    let strategy = (MAX_BODY + 1..MAX_BODY * 8, any::<bool>(), any::<bool>());
    runner(40)
        .run(&strategy, |(size, chunked, batch)| {
            let filler = "x".repeat(size);
            let body = if batch {
                format!(r#"{{"events":[{{"kind":"a","payload":"{filler}"}}]}}"#)
            } else {
                format!(r#"{{"kind":"a","payload":"{filler}"}}"#)
            };
            let mut req = post(
                if batch {
                    "/v1/events/batch"
                } else {
                    "/v1/events"
                },
                body,
            );
            req.chunked = chunked;
            f.expect_problem(&req, &[TOO_LARGE])
        })
        .unwrap();
    // A Content-Length that announces too much is refused before reading.
    let mut req = post("/v1/events", r#"{"kind":"a","payload":1}"#);
    req.headers
        .push(("content-length".into(), b"1000000000000".to_vec()));
    let (status, _, _) = f.send(&req);
    assert!(
        status == TOO_LARGE || status == BAD_SYNTAX,
        "a lying Content-Length got {status}"
    );
    assert_eq!(f.stored(), 0);
    still_serves(&f);
}

#[test]
fn deep_nesting_is_rejected_and_the_limit_is_the_same_everywhere() {
    let f = fixture();
    let nest = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
    runner(60)
        .run(
            &(MAX_JSON_DEPTH + 1..20_000, 0..3usize),
            |(depth, place)| {
                let (uri, body) = match place {
                    0 => (
                        "/v1/events",
                        format!(r#"{{"kind":"a","payload":{}}}"#, nest(depth)),
                    ),
                    1 => (
                        "/v1/events/batch",
                        format!(r#"{{"events":[{{"kind":"a","payload":{}}}]}}"#, nest(depth)),
                    ),
                    _ => (
                        "/v1/events",
                        format!(r#"{{"kind":{},"payload":1}}"#, nest(depth)),
                    ),
                };
                if body.len() > MAX_BODY {
                    return f.expect_problem(&post(uri, body), &[TOO_LARGE, BAD_SYNTAX]);
                }
                f.expect_problem(&post(uri, body), &[BAD_SYNTAX, INVALID])
            },
        )
        .unwrap();
    // The deepest accepted payload is accepted alone and in a batch; one
    // level more is refused in both, as on gRPC.
    let ok = format!(r#"{{"kind":"a","payload":{}}}"#, nest(MAX_JSON_DEPTH));
    let (status, _, body) = f.send(&post("/v1/events", ok.clone()));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, body) = f.send(&post("/v1/events/batch", format!(r#"{{"events":[{ok}]}}"#)));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let stored = f.stored();
    let deep = format!(r#"{{"kind":"a","payload":{}}}"#, nest(MAX_JSON_DEPTH + 1));
    let (status, _, body) = f.send(&post("/v1/events", deep.clone()));
    assert_eq!(status, BAD_SYNTAX, "{body}");
    assert!(body.contains("nested deeper than 64 levels"), "{body}");
    let (status, _, body) = f.send(&post(
        "/v1/events/batch",
        format!(r#"{{"events":[{deep}]}}"#),
    ));
    assert_eq!(status, BAD_SYNTAX, "{body}");
    assert_eq!(f.stored(), stored, "a too-deep payload was stored");
}

#[test]
fn invalid_utf8_is_400() {
    let f = fixture();
    let body = r#"{"kind":"sum","key":"abc","payload":"some text"}"#;
    let invalid = prop_oneof![
        Just(vec![0xff]),
        Just(vec![0xc0, 0x80]),             // overlong
        Just(vec![0xed, 0xa0, 0x80]),       // a surrogate
        Just(vec![0xf4, 0x90, 0x80, 0x80]), // beyond U+10FFFF
        Just(vec![0xe2, 0x82]),             // truncated sequence
        prop::collection::vec(0x80u8..=0xff, 1..4)
            .prop_filter("invalid UTF-8", |b| std::str::from_utf8(b).is_err()),
    ];
    runner(200)
        .run(&(invalid, 0..body.len()), |(bytes, at)| {
            let mut raw = body.as_bytes().to_vec();
            raw.splice(at..at, bytes);
            f.expect_problem(&post("/v1/events", raw), &[BAD_SYNTAX])
        })
        .unwrap();
    still_serves(&f);
}

#[test]
fn bad_headers_are_rejected() {
    let f = fixture();
    // Content types other than application/json.
    let strategy = "[ -~]{0,40}".prop_filter("not JSON", |ct| {
        !ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
    });
    runner(200)
        .run(&strategy, |ct| {
            let mut req = post("/v1/events", r#"{"kind":"a","payload":1}"#);
            req.content_type = Some(ct);
            f.expect_problem(&req, &[StatusCode::UNSUPPORTED_MEDIA_TYPE])
        })
        .unwrap();
    // Idempotency-Key headers that are not visible ASCII, empty or too long.
    let keys = prop_oneof![
        prop::collection::vec(0x80u8..=0xff, 1..20),
        Just(Vec::new()),
        "[a-z]{257,300}".prop_map(String::into_bytes),
    ];
    runner(100)
        .run(&keys, |key| {
            let mut req = post("/v1/events", r#"{"kind":"a","payload":1}"#);
            req.headers.push(("idempotency-key".into(), key));
            f.expect_problem(&req, &[INVALID])
        })
        .unwrap();
    still_serves(&f);
}

#[test]
fn bad_paths_and_queries_never_crash() {
    let f = fixture();
    let strategy = (
        "[a-zA-Z0-9%._~!$&'()*+,;=:@/-]{0,40}",
        "[a-zA-Z0-9%._~!$&'()*+,;=:@/?-]{0,40}",
    );
    runner(300)
        .run(&strategy, |(seq, query)| {
            for uri in [format!("/v1/events/{seq}"), format!("/v1/events?{query}")] {
                let Ok(uri) = uri.parse::<axum::http::Uri>() else {
                    continue;
                };
                let (status, _, body) = f.send(&get(uri.to_string()));
                prop_assert!(
                    status.is_success()
                        || [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND].contains(&status),
                    "{status} for {uri}: {body}"
                );
                prop_assert_eq!(f.stored(), 0);
            }
            Ok(())
        })
        .unwrap();
    still_serves(&f);
}
