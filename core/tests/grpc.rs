//! The gRPC services of an in-process core: ingest validation and limits,
//! idempotent replay, trace context, token checks, health and reflection.

use ackflow_core::config::Config;
use ackflow_core::server::{Running, start};
use ackflow_proto::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

async fn core(tokens: bool) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    config.max_request_bytes = 4096;
    if tokens {
        config.processor_token = Some("processor-token-0123456789".into());
        config.admin_token = Some("admin-token-0123456789".into());
    }
    (start(config).await.unwrap(), dir)
}

async fn channel(running: &Running) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn request(kind: &str, payload: &[u8]) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: kind.into(),
        payload: payload.to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn publish_validates_and_replays() {
    let (running, _dir) = core(false).await;
    let mut client = pb::ingest_client::IngestClient::new(channel(&running).await);
    for (kind, payload) in [
        ("", &b"1"[..]),
        ("bad kind", b"1"),
        ("sum", b"[1,"),
        ("sum", &[0xff, 0xfe]),
    ] {
        let err = client.publish(request(kind, payload)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{kind:?}: {err}");
    }
    let huge = format!("\"{}\"", "x".repeat(10_000));
    let err = client
        .publish(request("sum", huge.as_bytes()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("payload"), "{err}");
    assert_eq!(running.store.next_seq().await.unwrap(), 1, "nothing stored");

    let mut keyed = request("sum", b"[1]");
    keyed.idempotency_key = "k-1".into();
    let a = client.publish(keyed.clone()).await.unwrap().into_inner();
    let b = client.publish(keyed).await.unwrap().into_inner();
    assert_eq!((a.seq, a.replayed, b.seq, b.replayed), (1, false, 1, true));

    // A stream: replies in order with their request ids, then the error for
    // the invalid request ends it.
    let requests: Vec<pb::PublishRequest> = (0..5)
        .map(|n| {
            let mut r = request(if n == 3 { "" } else { "sum" }, b"[2]");
            r.request_id = 100 + n;
            r
        })
        .collect();
    let mut replies = client
        .publish_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let err = loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), replies.message())
            .await
            .expect("a reply or the error within 10 s");
        match next {
            Ok(Some(reply)) => seen.push((reply.request_id, reply.seq)),
            Ok(None) => panic!("stream ended without the error"),
            Err(status) => break status,
        }
    };
    assert_eq!(seen, vec![(100, 2), (101, 3), (102, 4)]);
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(running.store.next_seq().await.unwrap(), 5);
    running.stop().await;
}

/// A request with `traceparent` metadata.
fn traced<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    request
}

#[tokio::test]
async fn trace_context_comes_from_metadata_or_the_field() {
    const META: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const OWN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let (running, _dir) = core(false).await;
    let mut client = pb::ingest_client::IngestClient::new(channel(&running).await);
    // Malformed, as metadata or as the field: refused, nothing stored.
    let err = client
        .publish(traced(request("sum", b"[1]"), "00-zz"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().starts_with("traceparent: "), "{err}");
    let mut bad_field = request("sum", b"[1]");
    bad_field.traceparent = META.to_uppercase();
    let err = client.publish(bad_field).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = client
        .publish_stream(traced(
            tokio_stream::iter(vec![request("sum", b"[1]")]),
            "x",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(running.store.next_seq().await.unwrap(), 1, "nothing stored");

    // Unary: the metadata (seq 1); the field wins over it (seq 2).
    client
        .publish(traced(request("sum", b"[1]"), META))
        .await
        .unwrap();
    let mut own = request("sum", b"[1]");
    own.traceparent = OWN.into();
    client.publish(traced(own.clone(), META)).await.unwrap();
    // A stream: the metadata for each message without a field (3, 5).
    let messages = vec![request("sum", b"[1]"), own, request("sum", b"[1]")];
    let mut replies = client
        .publish_stream(traced(tokio_stream::iter(messages), META))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(reply) = replies.message().await.unwrap() {
        seqs.push(reply.seq);
    }
    assert_eq!(seqs, vec![3, 4, 5]);
    // No trace context at all (seq 6).
    client.publish(request("sum", b"[1]")).await.unwrap();

    let mut stored = Vec::new();
    for seq in 1..=6 {
        let view = running.store.event(seq).await.unwrap().unwrap();
        stored.push(view.event.traceparent);
    }
    let (meta, own) = (Some(META.to_string()), Some(OWN.to_string()));
    assert_eq!(
        stored,
        vec![meta.clone(), own.clone(), meta.clone(), own, meta, None]
    );
    running.stop().await;
}

#[tokio::test]
async fn tokens_are_required_when_configured() {
    let (running, _dir) = core(true).await;
    let channel = channel(&running).await;
    let mut admin = pb::admin_client::AdminClient::new(channel.clone());
    let unauthenticated = [
        admin.pause(pb::PauseRequest {}).await.map(|_| ()),
        admin.resume(pb::ResumeRequest {}).await.map(|_| ()),
        admin.set_faults(pb::Faults::default()).await.map(|_| ()),
        admin
            .requeue(pb::RequeueRequest { seq: 1 })
            .await
            .map(|_| ()),
        admin.watch(pb::WatchRequest {}).await.map(|_| ()),
    ];
    for result in unauthenticated {
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated);
    }
    let mut delivery = pb::delivery_client::DeliveryClient::new(channel.clone());
    let hello = pb::ProcessorMessage {
        body: Some(pb::processor_message::Body::Hello(pb::Hello {
            processor_id: "p".into(),
            window: 16,
            algorithms: vec![],
            ..Default::default()
        })),
    };
    let err = delivery
        .subscribe(tokio_stream::iter(vec![hello]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // The admin token opens the admin service (and only it).
    let mut request = tonic::Request::new(pb::PauseRequest {});
    request.metadata_mut().insert(
        "authorization",
        "Bearer admin-token-0123456789".parse().unwrap(),
    );
    assert!(admin.pause(request).await.is_ok());
    running.stop().await;
}

#[tokio::test]
async fn health_and_reflection() {
    let (running, _dir) = core(false).await;
    let channel = channel(&running).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "ackflow.v1.Ingest",
        "ackflow.v1.Delivery",
        "ackflow.v1.Admin",
    ] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter(vec![list]))
        .await
        .unwrap()
        .into_inner();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), replies.message())
        .await
        .expect("a reply within 10 s")
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(services)) = reply.message_response else {
        panic!("not a service list");
    };
    let names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    assert_lists_ours(&names, "v1");

    // Older tools ask v1alpha, and get ours too.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as ClientV1alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as RequestV1alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as ResponseV1alpha;
    let list = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(RequestV1alpha::ListServices(String::new())),
    };
    let mut replies = ClientV1alpha::new(self::channel(&running).await)
        .server_reflection_info(tokio_stream::iter(vec![list]))
        .await
        .unwrap()
        .into_inner();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), replies.message())
        .await
        .expect("a v1alpha reply within 10 s")
        .unwrap()
        .unwrap();
    let Some(ResponseV1alpha::ListServicesResponse(services)) = reply.message_response else {
        panic!("not a v1alpha service list");
    };
    let old: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    assert_lists_ours(&old, "v1alpha");
    running.stop().await;
}

/// `names`, a reflection service list, names ackflow's services and health.
fn assert_lists_ours(names: &[String], version: &str) {
    for expected in [
        "ackflow.v1.Ingest",
        "ackflow.v1.Delivery",
        "ackflow.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from reflection {version}'s {names:?}"
        );
    }
}

#[tokio::test]
async fn fault_injection_is_refused_unless_core_allows_it() {
    let (running, _dir) = core(false).await;
    let mut admin = pb::admin_client::AdminClient::new(channel(&running).await);
    let faults = pb::Faults {
        drop_acks: 0.5,
        ..Default::default()
    };
    let err = admin.set_faults(faults).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("--allow-fault-injection"),
        "names the flag: {}",
        err.message()
    );
    // Clearing faults is always allowed.
    admin
        .set_faults(pb::Faults::default())
        .await
        .expect("clearing faults");
}
