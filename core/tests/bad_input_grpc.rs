//! Garbage on every gRPC service of an in-process core: random bytes in
//! hand-made gRPC frames (sent over HTTP/2 through tonic's `Channel` used as
//! a plain tower service, so nothing checks them on the way out), malformed
//! frames, random-but-decodable requests, and a processor that says hello
//! and then talks nonsense.
//!
//! Every call must end with a gRPC status within 10 s (never a dropped
//! connection, never `UNKNOWN`, never silence; only a watch stays open,
//! and then it has sent a snapshot): undecodable protobuf is `INTERNAL`
//! ("failed to decode Protobuf message", gRPC's convention), a frame over
//! the size limit `OUT_OF_RANGE`, an invalid field `INVALID_ARGUMENT`. The
//! store changes only by the publishes core acknowledged, and core keeps
//! answering.

use std::time::Duration;

use ackflow_core::config::Config;
use ackflow_core::model::NewEvent;
use ackflow_core::server::{Running, start};
use ackflow_core::validate;
use ackflow_proto::v1 as pb;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use prost::Message;
use tonic::Code;
use tonic::codegen::{Bytes, http};
use tonic::transport::Channel;
use tower::ServiceExt;

const MAX_REQUEST_BYTES: u64 = 4096;

/// Every method of the ackflow services (and health), by path.
const METHODS: &[&str] = &[
    "/ackflow.v1.Ingest/Publish",
    "/ackflow.v1.Ingest/PublishStream",
    "/ackflow.v1.Delivery/Subscribe",
    "/ackflow.v1.Admin/Watch",
    "/ackflow.v1.Admin/Pause",
    "/ackflow.v1.Admin/Resume",
    "/ackflow.v1.Admin/SetFaults",
    "/ackflow.v1.Admin/Requeue",
    "/grpc.health.v1.Health/Check",
];

struct Fixture {
    running: Option<Running>,
    channel: Channel,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    config.max_request_bytes = MAX_REQUEST_BYTES;
    let (running, channel) = runtime.block_on(async {
        let running = start(config).await.unwrap();
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        (running, channel)
    });
    Fixture {
        running: Some(running),
        channel,
        runtime,
        _dir: dir,
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}

/// The one method whose call may stay open: a watch streams snapshots
/// until the client goes away.
const WATCH: &str = "/ackflow.v1.Admin/Watch";

/// How long a call may take to end (or a watch to send its first message).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What came back from a raw call.
#[derive(Debug)]
struct Answer {
    /// `grpc-status`, from the headers (trailers-only) or the trailers;
    /// `None` for a watch that stays open (its first message arrived).
    code: Option<Code>,
    message: String,
    /// Length-prefixed messages in the response body.
    replies: Vec<Vec<u8>>,
}

/// One gRPC message frame: flag, big-endian length, bytes.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Splits a response body into its messages.
fn unframe(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if body.len() < 5 + len {
            break;
        }
        out.push(body[5..5 + len].to_vec());
        body = &body[5 + len..];
    }
    out
}

fn code_of(headers: &http::HeaderMap) -> Option<(Code, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((Code::from_i32(code), message))
}

impl Fixture {
    /// POSTs `body` as it is to `path`, with gRPC headers, and reads the
    /// answer frame by frame. Every call must end within [`ANSWER_WITHIN`]
    /// (a call that never answers fails the test), except a watch, which
    /// may stay open: it counts as open once its first message arrives.
    fn raw(&self, path: &str, body: Vec<u8>) -> Answer {
        self.runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
            let request = http::Request::builder()
                .method("POST")
                .uri(format!("http://localhost{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
                .unwrap();
            let response = tokio::time::timeout_at(deadline, self.channel.clone().oneshot(request))
                .await
                .unwrap_or_else(|_| panic!("{path}: no response headers within {ANSWER_WITHIN:?}"))
                .expect("the connection survived");
            assert_eq!(response.status(), 200, "gRPC answers with HTTP 200");
            let (parts, mut body) = response.into_parts();
            if let Some((code, message)) = code_of(&parts.headers) {
                return Answer {
                    code: Some(code),
                    message,
                    replies: Vec::new(),
                };
            }
            let mut data = Vec::new();
            loop {
                let frame = tokio::time::timeout_at(deadline, body.frame())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "{path}: neither a status nor a message within {ANSWER_WITHIN:?} \
                             (after {} bytes)",
                            data.len()
                        )
                    });
                let frame = match frame {
                    None => panic!("{path}: the response ended without a grpc-status"),
                    Some(Err(e)) => panic!("{path}: the response body failed: {e}"),
                    Some(Ok(frame)) => frame,
                };
                match frame.into_data() {
                    Ok(bytes) => {
                        data.extend_from_slice(&bytes);
                        if path == WATCH && !unframe(&data).is_empty() {
                            // A watch that sends its first snapshot is open
                            // and alive.
                            return Answer {
                                code: None,
                                message: String::new(),
                                replies: unframe(&data),
                            };
                        }
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let (code, message) = code_of(&trailers)
                            .unwrap_or_else(|| panic!("{path}: trailers without a grpc-status"));
                        return Answer {
                            code: Some(code),
                            message,
                            replies: unframe(&data),
                        };
                    }
                }
            }
        })
    }

    fn stored(&self) -> u64 {
        let running = self.running.as_ref().unwrap();
        self.runtime.block_on(running.store.next_seq()).unwrap() - 1
    }

    /// Core still serves: health says SERVING and a valid publish works.
    fn still_serves(&self) {
        let before = self.stored();
        self.runtime.block_on(async {
            let mut health =
                tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
            let reply = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "ackflow.v1.Ingest".into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(reply.status, 1, "SERVING");
            let mut ingest = pb::ingest_client::IngestClient::new(self.channel.clone());
            let reply = ingest
                .publish(pb::PublishRequest {
                    kind: "sum".into(),
                    payload: b"[1]".to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(reply.seq, before + 1);
        });
    }
}

/// Would core accept this publish?
fn valid(request: &pb::PublishRequest) -> bool {
    let traceparent = match request.traceparent.as_str() {
        "" => None,
        value => match ackflow_core::trace::traceparent(value) {
            Ok(canonical) => Some(canonical),
            Err(_) => return false,
        },
    };
    let event = NewEvent {
        kind: request.kind.clone(),
        key: (!request.key.is_empty()).then(|| request.key.clone()),
        payload: request.payload.clone(),
        idempotency_key: (!request.idempotency_key.is_empty())
            .then(|| request.idempotency_key.clone()),
        traceparent,
    };
    let limits = validate::Limits {
        max_payload_bytes: MAX_REQUEST_BYTES as usize,
        max_batch_events: 1000,
    };
    validate::check(&event, &limits).is_ok() && validate::check_json(&event.payload).is_ok()
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// The statuses a method may answer garbage with.
fn allowed(path: &str) -> &'static [Code] {
    match path {
        "/ackflow.v1.Ingest/Publish" | "/ackflow.v1.Ingest/PublishStream" => {
            &[Code::Ok, Code::InvalidArgument, Code::Internal]
        }
        "/ackflow.v1.Delivery/Subscribe" => &[Code::Ok, Code::InvalidArgument, Code::Internal],
        "/ackflow.v1.Admin/Requeue" => &[
            Code::InvalidArgument,
            Code::Internal,
            Code::NotFound,
            Code::FailedPrecondition,
        ],
        "/grpc.health.v1.Health/Check" => &[Code::Ok, Code::Internal, Code::NotFound],
        // Any fault but none is refused: fault injection is off here.
        "/ackflow.v1.Admin/SetFaults" => &[
            Code::Ok,
            Code::InvalidArgument,
            Code::Internal,
            Code::FailedPrecondition,
        ],
        _ => &[Code::Ok, Code::InvalidArgument, Code::Internal],
    }
}

#[test]
fn garbage_protobuf_on_every_method() {
    let f = fixture();
    let message = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        // Plausible field tags followed by junk, so decoding gets further.
        (1u8..16, prop::collection::vec(any::<u8>(), 0..100)).prop_map(|(field, rest)| {
            let mut m = vec![field << 3 | 2, rest.len() as u8];
            m.extend(rest);
            m
        }),
    ];
    let strategy = (0..METHODS.len(), prop::collection::vec(message, 1..4));
    runner(300)
        .run(&strategy, |(method, messages)| {
            let path = METHODS[method];
            let before = f.stored();
            let body: Vec<u8> = messages.iter().flat_map(|m| frame(m)).collect();
            let answer = f.raw(path, body);
            let stored = f.stored() - before;
            match answer.code {
                None => prop_assert_eq!(path, WATCH, "only a watch stays open"),
                Some(code) => prop_assert!(
                    allowed(path).contains(&code),
                    "{path}: {code:?} {:?}",
                    answer.message
                ),
            }
            // Publishes: stored iff acknowledged, and only valid requests.
            let expected_ok: u64 = match path {
                "/ackflow.v1.Ingest/Publish" => {
                    let ok = answer.code == Some(Code::Ok);
                    if ok {
                        let request = pb::PublishRequest::decode(messages[0].as_slice())
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert!(valid(&request), "accepted an invalid publish {request:?}");
                    }
                    u64::from(ok)
                }
                "/ackflow.v1.Ingest/PublishStream" => {
                    for (reply, request) in answer.replies.iter().zip(&messages) {
                        let request = pb::PublishRequest::decode(request.as_slice())
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert!(valid(&request), "accepted an invalid publish {request:?}");
                        prop_assert!(pb::PublishResponse::decode(reply.as_slice()).is_ok());
                    }
                    answer.replies.len() as u64
                }
                _ => 0,
            };
            prop_assert_eq!(stored, expected_ok, "stored without an acknowledgement");
            Ok(())
        })
        .unwrap();
    // A well-formed watch stays open, and what it sends is a snapshot.
    let answer = f.raw(WATCH, frame(&pb::WatchRequest {}.encode_to_vec()));
    assert_eq!(answer.code, None, "a watch ended: {}", answer.message);
    let first = pb::WatchResponse::decode(answer.replies[0].as_slice()).unwrap();
    assert!(
        matches!(first.update, Some(pb::watch_response::Update::Snapshot(_))),
        "{first:?}"
    );
    f.still_serves();
}

#[test]
fn random_publish_requests_are_validated() {
    let f = fixture();
    let strategy = (
        prop_oneof!["[a-z0-9_.-]{1,64}", "\\PC{0,80}"],
        prop_oneof![Just(String::new()), "\\PC{0,300}"],
        prop_oneof![
            Just(b"1".to_vec()),
            "[\\[\\]{}0-9,\":a-z ]{0,80}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..100),
            (MAX_REQUEST_BYTES as usize - 8..MAX_REQUEST_BYTES as usize + 64)
                .prop_map(|n| format!("\"{}\"", "x".repeat(n)).into_bytes()),
        ],
        prop_oneof![Just(String::new()), "\\PC{0,300}"],
        any::<u64>(),
        prop_oneof![
            Just(String::new()),
            Just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string()),
            "[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[a-z]{0,4})?",
            "[0-9a-fA-F-]{50,60}",
            "\\PC{0,80}",
        ],
    );
    runner(300)
        .run(
            &strategy,
            |(kind, key, payload, idempotency_key, request_id, traceparent)| {
                let request = pb::PublishRequest {
                    kind,
                    key,
                    payload,
                    idempotency_key,
                    request_id,
                    traceparent,
                };
                let before = f.stored();
                let answer = f.raw(
                    "/ackflow.v1.Ingest/Publish",
                    frame(&request.encode_to_vec()),
                );
                let code = answer.code.expect("a unary call ends");
                if valid(&request) {
                    prop_assert_eq!(code, Code::Ok, "{}", answer.message);
                    // A replayed idempotency key stores nothing new.
                    prop_assert!(f.stored() - before <= 1);
                } else {
                    prop_assert!(
                        code == Code::InvalidArgument || code == Code::OutOfRange,
                        "{code:?}: {}",
                        answer.message
                    );
                    prop_assert_eq!(f.stored(), before);
                }
                Ok(())
            },
        )
        .unwrap();
    f.still_serves();
}

#[test]
fn malformed_frames_are_refused() {
    let f = fixture();
    let hello = pb::ProcessorMessage {
        body: Some(pb::processor_message::Body::Hello(pb::Hello {
            processor_id: "p".into(),
            window: 16,
            algorithms: vec![],
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let strategy = (
        0..METHODS.len(),
        prop_oneof![
            // An unknown compression flag.
            (2u8..=255).prop_map(|flag| {
                let mut b = frame(b"\x0a\x01a");
                b[0] = flag;
                b
            }),
            // Compressed, with no grpc-encoding.
            Just({
                let mut b = frame(b"\x0a\x01a");
                b[0] = 1;
                b
            }),
            // A length beyond the body (the body ends early).
            (1u32..10_000).prop_map(|extra| {
                let mut b = frame(b"\x0a\x01a");
                b[1..5].copy_from_slice(&(3 + extra).to_be_bytes());
                b
            }),
            // A length beyond every limit.
            (5_000_000u32..=u32::MAX).prop_map(|len| {
                let mut b = vec![0u8];
                b.extend_from_slice(&len.to_be_bytes());
                b.extend_from_slice(b"junk");
                b
            }),
            // A cut frame header.
            (1usize..5).prop_map(|n| frame(b"\x0a\x01a")[..n].to_vec()),
            // No message at all.
            Just(Vec::new()),
        ],
        any::<bool>(),
    );
    runner(200)
        .run(&strategy, |(method, malformed, after_hello)| {
            let path = METHODS[method];
            let mut body = Vec::new();
            if after_hello && path == "/ackflow.v1.Delivery/Subscribe" {
                body.extend(frame(&hello));
            }
            body.extend(malformed);
            let before = f.stored();
            let answer = f.raw(path, body);
            let Some(code) = answer.code else {
                return Err(TestCaseError::fail(format!(
                    "{path} stayed open on a malformed frame"
                )));
            };
            prop_assert!(
                [
                    Code::Internal,
                    Code::OutOfRange,
                    Code::InvalidArgument,
                    Code::Ok,
                ]
                .contains(&code),
                "{path}: {code:?} {}",
                answer.message
            );
            prop_assert_eq!(f.stored(), before);
            Ok(())
        })
        .unwrap();
    f.still_serves();
}

/// A processor that says hello and then sends acks for seqs that do not
/// exist, with out-of-range values, and then garbage, changes nothing; a
/// well-behaved processor afterwards gets its event and stores its result.
#[test]
fn a_processor_talking_nonsense_changes_nothing() {
    let f = fixture();
    let ack = |seq: u64, status: i32, output: String| pb::Ack {
        seq,
        attempt: u32::MAX,
        status,
        output,
        processing_us: u64::MAX,
        reject: seq.is_multiple_of(2),
        retry: seq.is_multiple_of(3),
        retry_after_ms: u64::MAX,
    };
    let strategy = (
        prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()],
        prop::collection::vec(
            (
                prop_oneof![
                    Just(0u64),
                    Just(u64::MAX),
                    Just(i64::MAX as u64 + 1),
                    any::<u64>()
                ],
                any::<i32>(),
                "\\PC{0,50}",
            ),
            0..20,
        ),
        prop::collection::vec(any::<u8>(), 0..50),
    );
    runner(60)
        .run(&strategy, |(window, acks, garbage)| {
            let hello = pb::ProcessorMessage {
                body: Some(pb::processor_message::Body::Hello(pb::Hello {
                    processor_id: "nonsense".into(),
                    window,
                    algorithms: vec!["\u{0}".into(); 3],
                    ..Default::default()
                })),
            };
            let acks = pb::ProcessorMessage {
                body: Some(pb::processor_message::Body::Acks(pb::AckBatch {
                    acks: acks.into_iter().map(|(s, st, o)| ack(s, st, o)).collect(),
                    ..Default::default()
                })),
            };
            let status = pb::ProcessorMessage {
                body: Some(pb::processor_message::Body::Status(pb::ProcessorStatus {
                    next_expected: u64::MAX,
                    buffered: u32::MAX,
                    ..Default::default()
                })),
            };
            let mut body = frame(&hello.encode_to_vec());
            body.extend(frame(&acks.encode_to_vec()));
            body.extend(frame(&status.encode_to_vec()));
            body.extend(frame(&pb::ProcessorMessage::default().encode_to_vec()));
            body.extend(frame(&garbage));
            let before = f.stored();
            let answer = f.raw("/ackflow.v1.Delivery/Subscribe", body);
            // The request ends, so core ends the stream.
            let code = answer
                .code
                .expect("a subscription whose request ended ends");
            prop_assert!(
                [Code::Ok, Code::Internal, Code::InvalidArgument].contains(&code),
                "{code:?} {}",
                answer.message
            );
            prop_assert_eq!(f.stored(), before);
            Ok(())
        })
        .unwrap();

    // No results were stored for events that do not exist, and a real
    // processor is served normally afterwards.
    f.still_serves();
    let seq = f.stored();
    let running = f.running.as_ref().unwrap();
    f.runtime.block_on(async {
        let mut delivery = pb::delivery_client::DeliveryClient::new(f.channel.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tx.send(pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Hello(pb::Hello {
                processor_id: "well-behaved".into(),
                window: 16,
                algorithms: vec!["sum".into()],
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let mut inbound = delivery
            .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let event = loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), inbound.message())
                .await
                .expect("core sends the event")
                .unwrap()
                .expect("the stream stays open");
            if let Some(pb::core_message::Body::Events(batch)) = msg.body
                && let Some(event) = batch.events.into_iter().find(|e| e.seq == seq)
            {
                break event;
            }
        };
        tx.send(pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Acks(pb::AckBatch {
                acks: vec![pb::Ack {
                    seq: event.seq,
                    attempt: event.attempt,
                    status: pb::ResultStatus::Ok as i32,
                    output: "1".into(),
                    processing_us: 1,
                    ..Default::default()
                }],
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let view = running.store.event(seq).await.unwrap().unwrap();
            if view.result.is_some() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the result was never stored"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let views = running.store.list_events(0, 1000, None).await.unwrap();
        assert_eq!(views.len() as u64, seq, "no event appeared from nowhere");
        for view in views {
            assert!(
                view.dead.is_none(),
                "seq {} was parked by garbage acks",
                view.event.seq
            );
        }
    });
}

/// A stream of publishes that turns into garbage: the replies owed are sent,
/// then the stream ends with the decode error, not with OK (the client
/// must learn that its last message was refused).
#[test]
fn a_publish_stream_ending_in_garbage_reports_the_error() {
    let f = fixture();
    let good = |n: u64| pb::PublishRequest {
        kind: "sum".into(),
        payload: b"[1]".to_vec(),
        request_id: n,
        ..Default::default()
    };
    let mut body = frame(&good(1).encode_to_vec());
    body.extend(frame(&good(2).encode_to_vec()));
    body.extend(frame(b"\xff\xff\xff\xff"));
    body.extend(frame(&good(3).encode_to_vec()));
    let answer = f.raw("/ackflow.v1.Ingest/PublishStream", body);
    let ids: Vec<u64> = answer
        .replies
        .iter()
        .map(|r| {
            pb::PublishResponse::decode(r.as_slice())
                .unwrap()
                .request_id
        })
        .collect();
    assert_eq!(
        ids,
        vec![1, 2],
        "the replies owed, and nothing after the garbage"
    );
    assert_eq!(answer.code, Some(Code::Internal), "{}", answer.message);
    assert!(
        answer.message.contains("decode"),
        "the message says why: {}",
        answer.message
    );
    assert_eq!(f.stored(), 2);
    f.still_serves();
}
