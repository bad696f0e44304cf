//! Bearer tokens beyond "no token at all" (see grpc.rs): a wrong token, a
//! truncated or extended one, another scheme, and each service's token used
//! on the other service are all refused on every Admin method and on
//! Delivery.Subscribe; nothing they ask for happens.

use ackflow_core::config::Config;
use ackflow_core::server::start;
use ackflow_proto::v1 as pb;
use tonic::Code;
use tonic::metadata::MetadataValue;

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
    let mut config = Config::for_tests(None, dir.path().to_path_buf());
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
            if let Some(pb::watch_update::Update::Snapshot(s)) =
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
