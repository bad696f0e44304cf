//! Idempotency keys end to end, on both stores: an in-process core
//! (`server::start`), REST through `app(state)` with `oneshot` on the
//! core's own ingest writer and store, gRPC over a socket.
//!
//! Same key, same request (kind, key, payload) → the original seq, replayed.
//! Same key, different request → REST 422 problem+json / gRPC
//! `FAILED_PRECONDITION` naming the key and the original seq, nothing
//! stored; a batch with one conflict is refused whole, naming the index.
//! Concurrent first uses of one key store exactly one event, and fail none
//! of the publishes committed with them.
//!
//! The PostgreSQL half creates a database per test on the server named by
//! `ACKFLOW_TEST_PG` or `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and fails, never skips,
//! when it is unreachable.

use crate::common;

use std::collections::HashSet;

use ackflow_core::config::Config;
use ackflow_core::rest::{RestState, app};
use ackflow_core::server::{Running, start};
use ackflow_proto::v1 as pb;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::common::pg_server;
use tonic::Code;
use tonic::transport::Channel;
use tower::ServiceExt;

/// A running core on one store, with a REST router and a gRPC client.
struct Core {
    running: Running,
    router: axum::Router,
    ingest: pb::ingest_client::IngestClient<Channel>,
    /// The PostgreSQL database to drop afterwards.
    pg: Option<String>,
    _dir: tempfile::TempDir,
}

impl Core {
    /// Starts core on SQLite in a temp dir, or on a new PostgreSQL
    /// database. `linger_us` holds each group commit open that long, so
    /// concurrent publishes share commits.
    async fn start(postgres: bool, linger_us: u64) -> Core {
        let dir = tempfile::tempdir().unwrap();
        let mut pg = None;
        let url = if postgres {
            let server = pg_server();
            let name = format!("ackflow_idem_{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff);
            let mut conn = sqlx::PgConnection::connect(&server)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {server} is unreachable: {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create database");
            let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
            let url = format!("{base}/{name}");
            pg = Some(name);
            Some(url)
        } else {
            None
        };
        let mut config = Config::local(url, dir.path().to_path_buf());
        config.commit_linger_us = linger_us;
        let limits = config.limits();
        let max_request_bytes = config.max_request_bytes as usize;
        let running = start(config).await.expect("core starts");
        let router = app(RestState::new(
            running.ingest.clone(),
            running.store.clone(),
            limits,
            max_request_bytes,
        ));
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        Core {
            running,
            router,
            ingest: pb::ingest_client::IngestClient::new(channel),
            pg,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.running.stop().await;
        if let Some(name) = self.pg {
            let mut conn = sqlx::PgConnection::connect(&pg_server()).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }

    /// Events stored so far.
    async fn stored(&self) -> u64 {
        self.running.store.next_seq().await.unwrap() - 1
    }

    /// A REST POST: status, content type and the body as JSON.
    async fn post(
        &self,
        uri: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String, Value) {
        let mut request = Request::post(uri).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let (status, content_type, text) = common::read_response(response).await;
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, content_type, json)
    }

    /// The stored payload of `seq`, as JSON.
    async fn payload(&self, seq: u64) -> Value {
        let view = self
            .running
            .store
            .event(seq)
            .await
            .unwrap()
            .expect("stored");
        serde_json::from_slice(&view.event.payload).unwrap()
    }
}

fn grpc_request(kind: &str, key: &str, payload: &str, idempotency_key: &str) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: kind.into(),
        key: key.into(),
        payload: payload.as_bytes().to_vec(),
        idempotency_key: idempotency_key.into(),
        request_id: 0,
        ..Default::default()
    }
}

/// Asserts a 422 conflict problem with exactly these members.
fn assert_conflict(got: &(StatusCode, String, Value), expected: Value) {
    let (status, content_type, body) = got;
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(content_type, "application/problem+json");
    let mut body = body.clone();
    let detail = body
        .as_object_mut()
        .and_then(|o| o.remove("detail"))
        .and_then(|d| d.as_str().map(str::to_string))
        .expect("a detail");
    let key = expected["idempotency_key"].as_str().unwrap();
    assert!(detail.contains(&format!("{key:?}")), "{detail}");
    match (
        &expected.get("original_seq"),
        &expected.get("original_index"),
    ) {
        (Some(seq), _) => assert!(detail.contains(&format!("seq {seq}")), "{detail}"),
        (_, Some(index)) => assert!(detail.contains(&format!("events[{index}]")), "{detail}"),
        _ => {}
    }
    if let Some(index) = expected.get("index") {
        assert!(
            detail.starts_with(&format!("events[{index}].idempotency_key: ")),
            "{detail}"
        );
    }
    let mut want = json!({
        "type": "about:blank",
        "title": "Idempotency key reused",
        "status": 422,
    });
    want.as_object_mut()
        .unwrap()
        .extend(expected.as_object().unwrap().clone());
    assert_eq!(body, want);
}

/// Same key, same request: the original seq and id. Same key, another
/// payload, kind or ordering key: 422 naming the key and the original seq,
/// nothing stored. The key may come in the header or the body, and a
/// replay may come over gRPC: the same request is the same bytes.
async fn single_publish(postgres: bool) {
    let core = Core::start(postgres, 0).await;
    let key = [("idempotency-key", "order-17")];
    let first = core
        .post(
            "/v1/events",
            r#"{"kind":"sum","key":"k","payload":[1,2]}"#,
            &key,
        )
        .await;
    assert_eq!(first.0, StatusCode::ACCEPTED, "{}", first.2);
    assert_eq!(
        (&first.2["seq"], &first.2["replayed"]),
        (&json!(1), &json!(false))
    );
    let again = core
        .post(
            "/v1/events",
            r#"{"kind":"sum","key":"k","payload":[1,2]}"#,
            &key,
        )
        .await;
    assert_eq!(again.0, StatusCode::ACCEPTED);
    assert_eq!(
        again.2,
        json!({"id": first.2["id"], "seq": 1, "replayed": true})
    );
    let in_body = core
        .post(
            "/v1/events",
            r#"{"kind":"sum","key":"k","payload":[1,2],"idempotency_key":"order-17"}"#,
            &[],
        )
        .await;
    assert_eq!(in_body.2, again.2);

    for body in [
        r#"{"kind":"sum","key":"k","payload":[1,3]}"#,
        r#"{"kind":"sha256","key":"k","payload":[1,2]}"#,
        r#"{"kind":"sum","key":"other","payload":[1,2]}"#,
        r#"{"kind":"sum","payload":[1,2]}"#,
        // The same JSON written differently is a different request.
        r#"{"kind":"sum","key":"k","payload":[1, 2]}"#,
    ] {
        let got = core.post("/v1/events", body, &key).await;
        assert_conflict(
            &got,
            json!({"idempotency_key": "order-17", "original_seq": 1}),
        );
    }
    assert_eq!(core.stored().await, 1, "a conflict stores nothing");

    // gRPC: the same request replays, a different one is refused.
    let mut ingest = core.ingest.clone();
    let reply = ingest
        .publish(grpc_request("sum", "k", "[1,2]", "order-17"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reply.seq, reply.replayed, &reply.id),
        (1, true, &first.2["id"].as_str().unwrap().to_string())
    );
    let status = ingest
        .publish(grpc_request("sum", "k", "[9]", "order-17"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "idempotency key \"order-17\" was already used by seq 1 with a different kind, key or \
         payload; nothing was stored (repeat the original request to get its seq, or use a new key)"
    );
    assert_eq!(
        status
            .metadata()
            .get("ackflow-original-seq")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert_eq!(core.stored().await, 1);
    core.stop().await;
}

/// A batch with one conflict is refused whole, naming the index; a key
/// twice in one batch with different bodies names both indices; with the
/// same body it is stored once. `Idempotency-Key` on the batch route is
/// refused with 400.
async fn batch_publish(postgres: bool) {
    let core = Core::start(postgres, 0).await;
    let first = core
        .post(
            "/v1/events",
            r#"{"kind":"sum","payload":[1],"idempotency_key":"a"}"#,
            &[],
        )
        .await;
    assert_eq!(first.0, StatusCode::ACCEPTED);

    let one_conflict = r#"{"events":[
        {"kind":"sum","payload":[2],"idempotency_key":"b"},
        {"kind":"sum","payload":[3]},
        {"kind":"sum","payload":[4],"idempotency_key":"a"}]}"#;
    let got = core.post("/v1/events/batch", one_conflict, &[]).await;
    assert_conflict(
        &got,
        json!({"idempotency_key": "a", "index": 2, "original_seq": 1}),
    );
    assert_eq!(core.stored().await, 1, "nothing of the batch was stored");

    let twice = r#"{"events":[
        {"kind":"sum","payload":[5],"idempotency_key":"c"},
        {"kind":"sum","payload":[6],"idempotency_key":"c"}]}"#;
    let got = core.post("/v1/events/batch", twice, &[]).await;
    assert_conflict(
        &got,
        json!({"idempotency_key": "c", "index": 1, "original_index": 0}),
    );
    assert_eq!(core.stored().await, 1);

    // "b" was not taken by the refused batch.
    let same_twice = r#"{"events":[
        {"kind":"sum","payload":[7],"idempotency_key":"b"},
        {"kind":"sum","payload":[8]},
        {"kind":"sum","payload":[7],"idempotency_key":"b"},
        {"kind":"sum","payload":[1],"idempotency_key":"a"}]}"#;
    let got = core.post("/v1/events/batch", same_twice, &[]).await;
    assert_eq!(got.0, StatusCode::ACCEPTED, "{}", got.2);
    let outcomes: Vec<(u64, bool)> = got.2["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["replayed"].as_bool().unwrap()))
        .collect();
    assert_eq!(outcomes, vec![(2, false), (3, false), (2, true), (1, true)]);
    assert_eq!(core.stored().await, 3);
    assert_eq!(core.payload(2).await, json!([7]));

    let got = core
        .post(
            "/v1/events/batch",
            r#"{"events":[{"kind":"sum","payload":[9]}]}"#,
            &[("idempotency-key", "whole-batch")],
        )
        .await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST);
    assert_eq!(got.1, "application/problem+json");
    assert_eq!(
        got.2,
        json!({
            "type": "about:blank",
            "title": "Idempotency-Key not allowed here",
            "status": 400,
            "detail": "the Idempotency-Key header names one event: on /v1/events/batch put an \
                       idempotency_key on each event instead",
        })
    );
    assert_eq!(core.stored().await, 3);
    core.stop().await;
}

/// On a stream each message is a request of its own: the replies before a
/// conflict arrive, then the conflict ends the stream with
/// `FAILED_PRECONDITION` naming its request id, the key and the seq.
async fn grpc_stream(postgres: bool) {
    let core = Core::start(postgres, 0).await;
    let mut ingest = core.ingest.clone();
    ingest
        .publish(grpc_request("sum", "", "[1]", "a"))
        .await
        .unwrap();
    let requests: Vec<pb::PublishRequest> = [
        grpc_request("sum", "", "[2]", "b"),
        grpc_request("sum", "", "[1]", "a"),
        grpc_request("sum", "", "[3]", "a"),
    ]
    .into_iter()
    .zip(10..)
    .map(|(mut r, id)| {
        r.request_id = id;
        r
    })
    .collect();
    let mut replies = ingest
        .publish_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let status = loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), replies.message())
            .await
            .expect("a reply or the conflict within 10 s");
        match next {
            Ok(Some(reply)) => seen.push((reply.request_id, reply.seq, reply.replayed)),
            Ok(None) => panic!("the stream ended without the conflict"),
            Err(status) => break status,
        }
    };
    assert_eq!(seen, vec![(10, 2, false), (11, 1, true)]);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with(
            "request_id 12: idempotency key \"a\" was already used by seq 1 with a different kind"
        ),
        "{}",
        status.message()
    );
    assert_eq!(core.stored().await, 2);
    core.stop().await;
}

/// Twenty concurrent first uses of one key (REST and gRPC, two different
/// bodies) among ten unkeyed publishes, with group commits held open 5 ms
/// so they share commits: exactly one event is stored for the key; a
/// publish with the winner's body replays it, one with the other body is
/// refused naming the winner's seq; every unkeyed publish is stored.
async fn concurrent_first_uses(postgres: bool) {
    let core = Core::start(postgres, 5_000).await;
    let body = |i: usize| format!("[{}]", i % 2);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30usize {
        let router = core.router.clone();
        let mut ingest = core.ingest.clone();
        let keyed = i < 20;
        tasks.spawn(async move {
            // (index, body, Ok((seq, replayed)) or Err(original seq))
            let payload = if keyed { body(i) } else { format!("[\"n{i}\"]") };
            let key = if keyed { "same-key" } else { "" };
            let outcome = if i % 2 == 0 {
                let mut json = json!({"kind": "sum", "payload": serde_json::from_str::<Value>(&payload).unwrap()});
                if keyed {
                    json["idempotency_key"] = key.into();
                }
                let request = Request::post("/v1/events")
                    .header("content-type", "application/json")
                    .body(Body::from(json.to_string()))
                    .unwrap();
                let (status, _, text) =
                    common::read_response(router.oneshot(request).await.unwrap()).await;
                let v: Value = serde_json::from_str(&text).unwrap();
                match status {
                    StatusCode::ACCEPTED => Ok((v["seq"].as_u64().unwrap(), v["replayed"].as_bool().unwrap())),
                    StatusCode::UNPROCESSABLE_ENTITY => {
                        assert_eq!(v["idempotency_key"], "same-key", "{v}");
                        Err(v["original_seq"].as_u64().unwrap())
                    }
                    other => panic!("{other}: {v}"),
                }
            } else {
                match ingest.publish(grpc_request("sum", "", &payload, key)).await {
                    Ok(reply) => Ok((reply.get_ref().seq, reply.get_ref().replayed)),
                    Err(status) => {
                        assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
                        let seq = status.metadata().get("ackflow-original-seq").unwrap();
                        Err(seq.to_str().unwrap().parse::<u64>().unwrap())
                    }
                }
            };
            (i, payload, outcome)
        });
    }
    let mut stored_for_key = Vec::new();
    let mut keyed = Vec::new();
    let mut unkeyed = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, payload, outcome) = joined.unwrap();
        if i >= 20 {
            let (seq, replayed) = outcome.expect("an unkeyed publish is never refused");
            assert!(!replayed);
            assert!(unkeyed.insert(seq), "seq {seq} told twice");
            continue;
        }
        if let Ok((seq, false)) = outcome {
            stored_for_key.push((seq, payload.clone()));
        }
        keyed.push((payload, outcome));
    }
    assert_eq!(
        stored_for_key.len(),
        1,
        "one key, one event: {stored_for_key:?}"
    );
    let (winner, winning_body) = stored_for_key.pop().unwrap();
    for (payload, outcome) in keyed {
        if payload == winning_body {
            assert!(
                matches!(outcome, Ok((seq, _)) if seq == winner),
                "{payload}: {outcome:?}"
            );
        } else {
            assert_eq!(outcome, Err(winner), "{payload}");
        }
    }
    assert_eq!(unkeyed.len(), 10);
    assert_eq!(
        core.stored().await,
        11,
        "the key's event and the ten unkeyed ones"
    );
    assert_eq!(
        core.payload(winner).await.to_string(),
        winning_body.replace(' ', "")
    );
    core.stop().await;
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(false).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(true).await;
                }
            )*
        }
    };
}

on_both_stores!(
    single_publish,
    batch_publish,
    grpc_stream,
    concurrent_first_uses
);
