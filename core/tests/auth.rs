//! Bearer tokens beyond "no token at all" (see grpc.rs): a wrong token, a
//! truncated or extended one, another scheme, and each service's token used
//! on the other service are all refused on every Admin method and on
//! Delivery.Subscribe; nothing they ask for happens. The publish token
//! guards every REST route under /v1/ and the Ingest service the same way,
//! while /healthz, /readyz and /metrics stay open.

use ackflow_core::config::Config;
use ackflow_core::server::{Running, start};
use ackflow_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::metadata::MetadataValue;

/// A stream message within 10 s, or the test fails saying so.
async fn bounded<T>(message: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), message)
        .await
        .expect("no stream message within 10 s")
}

const PUBLISH_TOKEN: &str = "publish-token-0123456789";
const PROCESSOR_TOKEN: &str = "processor-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

fn with_auth<T>(message: T, auth: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(auth) = auth {
        let value: MetadataValue<_> = auth.parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test]
async fn wrong_tokens_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    config.processor_token = Some(PROCESSOR_TOKEN.into());
    config.admin_token = Some(ADMIN_TOKEN.into());
    let running = start(config).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = pb::admin_client::AdminClient::new(channel.clone());
    let mut delivery = pb::delivery_client::DeliveryClient::new(channel.clone());

    let wrong_admin = [
        format!("Bearer {PROCESSOR_TOKEN}"),
        format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
        format!("Bearer {ADMIN_TOKEN}x"),
        format!("bearer {ADMIN_TOKEN}"),
        format!("Basic {ADMIN_TOKEN}"),
        ADMIN_TOKEN.to_string(),
        "Bearer ".to_string(),
        format!("Bearer  {ADMIN_TOKEN}"),
    ];
    for auth in &wrong_admin {
        let auth = Some(auth.as_str());
        let results = [
            admin
                .pause(with_auth(pb::PauseRequest {}, auth))
                .await
                .map(|_| ()),
            admin
                .resume(with_auth(pb::ResumeRequest {}, auth))
                .await
                .map(|_| ()),
            admin
                .set_faults(with_auth(
                    pb::Faults {
                        drop_acks: 1.0,
                        ..Default::default()
                    },
                    auth,
                ))
                .await
                .map(|_| ()),
            admin
                .requeue(with_auth(pb::RequeueRequest { seq: 1 }, auth))
                .await
                .map(|_| ()),
            admin
                .watch(with_auth(pb::WatchRequest {}, auth))
                .await
                .map(|_| ()),
        ];
        for result in results {
            assert_eq!(
                result.unwrap_err().code(),
                Code::Unauthenticated,
                "{auth:?}"
            );
        }
    }

    let hello = || pb::ProcessorMessage {
        body: Some(pb::processor_message::Body::Hello(pb::Hello {
            processor_id: "intruder".into(),
            window: 16,
            algorithms: vec![],
            ..Default::default()
        })),
    };
    let wrong_processor = [
        format!("Bearer {ADMIN_TOKEN}"),
        format!("Bearer {}", &PROCESSOR_TOKEN[1..]),
        format!("Token {PROCESSOR_TOKEN}"),
        PROCESSOR_TOKEN.to_string(),
    ];
    for auth in &wrong_processor {
        let request = with_auth(tokio_stream::iter(vec![hello()]), Some(auth));
        let err = delivery.subscribe(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{auth:?}");
    }

    // None of it took effect: no processor ever connected, nothing is
    // paused, and no fault was set.
    let request = with_auth(pb::WatchRequest {}, Some(&format!("Bearer {ADMIN_TOKEN}")));
    let mut watch = admin.watch(request).await.unwrap().into_inner();
    let snapshot = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Some(pb::watch_response::Update::Snapshot(s)) =
                watch.message().await.unwrap().unwrap().update
            {
                break s;
            }
        }
    })
    .await
    .expect("a snapshot within 10 s");
    let processor = snapshot.processor.unwrap_or_default();
    assert!(processor.processor_id.is_empty(), "{processor:?}");
    assert_ne!(processor.connection, pb::ProcessorConnection::Paused as i32);
    assert_eq!(snapshot.faults.unwrap_or_default().drop_acks, 0.0);
    running.stop().await;
}

/// Authorization values that are not the publish token.
fn wrong_publish() -> Vec<Option<String>> {
    vec![
        None,
        Some(format!("Bearer {ADMIN_TOKEN}")),
        Some(format!("Bearer {PROCESSOR_TOKEN}")),
        Some(format!(
            "Bearer {}",
            &PUBLISH_TOKEN[..PUBLISH_TOKEN.len() - 1]
        )),
        Some(format!("Bearer {PUBLISH_TOKEN}x")),
        Some(format!("Basic {PUBLISH_TOKEN}")),
        Some(PUBLISH_TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ]
}

async fn core_with_all_tokens(dir: &std::path::Path) -> Running {
    let mut config = Config::local(None, dir.to_path_buf());
    config.publish_token = Some(PUBLISH_TOKEN.into());
    config.processor_token = Some(PROCESSOR_TOKEN.into());
    config.admin_token = Some(ADMIN_TOKEN.into());
    start(config).await.unwrap()
}

/// A response as [`http`] reads it.
struct HttpResponse {
    status: u16,
    /// `name: value` lines, names lower-cased.
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a connection of its own.
async fn http(
    running: &Running,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    json: Option<&str>,
) -> HttpResponse {
    let mut stream = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: core\r\nConnection: close\r\n");
    if let Some(value) = authorization {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    if let Some(body) = json {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(json.unwrap_or(""));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Every REST route under /v1/, with a body that would succeed.
const V1_ROUTES: [(&str, &str, Option<&str>, u16); 5] = [
    (
        "POST",
        "/v1/events",
        Some(r#"{"kind":"sum","payload":[1,2]}"#),
        202,
    ),
    (
        "POST",
        "/v1/events/batch",
        Some(r#"{"events":[{"kind":"sum","payload":[3]},{"kind":"sum","payload":[4]}]}"#),
        202,
    ),
    ("GET", "/v1/events/1", None, 200),
    ("GET", "/v1/events?after=0&limit=10", None, 200),
    ("GET", "/v1/events?status=pending", None, 200),
];

#[tokio::test]
async fn rest_needs_the_publish_token_except_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let running = core_with_all_tokens(dir.path()).await;

    for (method, path, body, _) in V1_ROUTES {
        for auth in wrong_publish() {
            let response = http(&running, method, path, auth.as_deref(), body).await;
            let what = format!("{method} {path} with {auth:?}");
            assert_eq!(response.status, 401, "{what}: {}", response.body);
            assert_eq!(
                response.header("content-type"),
                Some("application/problem+json"),
                "{what}"
            );
            let challenge = response.header("www-authenticate").unwrap_or("");
            assert!(challenge.starts_with("Bearer "), "{what}: {challenge:?}");
            // RFC 6750 §3.1: an error code only when credentials came.
            assert_eq!(
                challenge.contains("invalid_token"),
                auth.is_some(),
                "{what}"
            );
            let problem: serde_json::Value = serde_json::from_str(&response.body).unwrap();
            assert_eq!(problem["status"], 401, "{what}");
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("--publish-token")),
                "{what}: {problem}"
            );
            assert!(!response.body.contains(PUBLISH_TOKEN), "{what}");
        }
    }
    assert_eq!(
        running.store.next_seq().await.unwrap(),
        1,
        "nothing was stored without the token"
    );
    // Unknown paths are guarded too: nothing beyond the open three is
    // served, or told apart, without the token.
    assert_eq!(
        http(&running, "GET", "/v2/anything", None, None)
            .await
            .status,
        401
    );

    // Probes and scrapers need none.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = http(&running, "GET", path, None, None).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
    }

    // The right token: every route does its work.
    let right = format!("Bearer {PUBLISH_TOKEN}");
    for (method, path, body, status) in V1_ROUTES {
        let response = http(&running, method, path, Some(&right), body).await;
        assert_eq!(
            response.status, status,
            "{method} {path}: {}",
            response.body
        );
    }
    assert_eq!(
        running.store.next_seq().await.unwrap(),
        4,
        "three events stored"
    );
    let listed = http(&running, "GET", "/v1/events?after=0", Some(&right), None).await;
    let listed: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(
        listed["events"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    running.stop().await;
}

#[tokio::test]
async fn ingest_needs_the_publish_token() {
    let dir = tempfile::tempdir().unwrap();
    let running = core_with_all_tokens(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut ingest = pb::ingest_client::IngestClient::new(channel.clone());
    let event = |n: u64| pb::PublishRequest {
        kind: "sum".into(),
        payload: format!("[{n}]").into_bytes(),
        request_id: n,
        ..Default::default()
    };

    for auth in wrong_publish() {
        let err = ingest
            .publish(with_auth(event(1), auth.as_deref()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "Publish with {auth:?}");
        let stream = tokio_stream::iter(vec![event(1), event(2)]);
        let result = ingest
            .publish_stream(with_auth(stream, auth.as_deref()))
            .await;
        let err = match result {
            Err(status) => status,
            // A refusal may also arrive as the stream's first message.
            Ok(replies) => bounded(replies.into_inner().message()).await.unwrap_err(),
        };
        assert_eq!(
            err.code(),
            Code::Unauthenticated,
            "PublishStream with {auth:?}"
        );
    }
    assert_eq!(
        running.store.next_seq().await.unwrap(),
        1,
        "nothing was stored without the token"
    );

    let right = format!("Bearer {PUBLISH_TOKEN}");
    let reply = ingest
        .publish(with_auth(event(1), Some(&right)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.seq, 1);
    let mut replies = ingest
        .publish_stream(with_auth(
            tokio_stream::iter(vec![event(2), event(3)]),
            Some(&right),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(reply) = bounded(replies.message()).await.unwrap() {
        seqs.push((reply.request_id, reply.seq));
    }
    assert_eq!(seqs, [(2, 2), (3, 3)]);

    // The publish token opens neither the Admin service nor the stream.
    let mut admin = pb::admin_client::AdminClient::new(channel.clone());
    let err = admin
        .pause(with_auth(pb::PauseRequest {}, Some(&right)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    running.stop().await;
}

#[tokio::test]
async fn publishing_is_open_without_a_publish_token() {
    // Loopback and no --publish-token: as before, anyone on this machine
    // may publish (the other tokens change nothing about that).
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    config.admin_token = Some(ADMIN_TOKEN.into());
    let running = start(config).await.unwrap();
    let response = http(
        &running,
        "POST",
        "/v1/events",
        None,
        Some(r#"{"kind":"sum","payload":[1]}"#),
    )
    .await;
    assert_eq!(response.status, 202, "{}", response.body);
    running.stop().await;
}

#[tokio::test]
async fn insecure_serves_a_public_address_without_tokens_but_keeps_those_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    config.http_addr = "0.0.0.0:0".parse().unwrap();
    config.grpc_addr = "0.0.0.0:0".parse().unwrap();
    config.admin_token = Some(ADMIN_TOKEN.into());
    let refused = start(config.clone()).await.err().expect("refused");
    assert!(
        refused
            .to_string()
            .contains("needs --publish-token, --processor-token."),
        "{refused}"
    );
    config.insecure = true;
    let running = start(config).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "http://127.0.0.1:{}",
        running.grpc_addr.port()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let reply = pb::ingest_client::IngestClient::new(channel.clone())
        .publish(pb::PublishRequest {
            kind: "sum".into(),
            payload: b"[1]".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.seq, 1, "publishing is open: no --publish-token");
    let err = pb::admin_client::AdminClient::new(channel)
        .pause(pb::PauseRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "the admin token still holds"
    );
    running.stop().await;
}
