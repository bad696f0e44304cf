//! The processor's and the monitor's TLS settings against a core serving
//! TLS with a certificate generated here: `--tls-ca` with an `https://`
//! core URL connects; the wrong CA does not; tokens still apply.
//!
//! The processor's stream client must build its endpoint through
//! `Config::tls` for the binary to use TLS; this test checks that endpoint.

use std::path::Path;
use std::time::Duration;

use ackflow_core::server::start;
use ackflow_proto::v1 as pb;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Endpoint;

/// Writes a CA and a server certificate for localhost; returns the paths of
/// (CA, certificate, key).
fn pki(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("ackflow test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let write = |file: &str, text: String| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[tokio::test]
async fn processor_and_monitor_connect_with_their_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "core");
    let (other_ca, _, _) = pki(dir.path(), "other");
    let mut config = ackflow_core::config::Config::for_tests(None, dir.path().join("data"));
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    config.processor_token = Some("processor-token-0123456789".into());
    config.admin_token = Some("admin-token-0123456789".into());
    let running = start(config).await.unwrap();
    let url = format!("https://localhost:{}", running.grpc_addr.port());

    // The processor: --core https://… --tls-ca ca.pem --token ….
    let mut processor = ackflow_processor::config::Config::for_core(url.clone());
    processor.tls_ca = Some(ca.clone());
    let endpoint = processor
        .tls(Endpoint::from_shared(url.clone()).unwrap())
        .unwrap();
    let channel = endpoint.connect().await.unwrap();
    let mut delivery = pb::delivery_client::DeliveryClient::new(channel);
    let hello = pb::ProcessorMessage {
        body: Some(pb::processor_message::Body::Hello(pb::Hello {
            processor_id: "tls".into(),
            window: 16,
            algorithms: vec![],
            ..Default::default()
        })),
    };
    let err = delivery
        .subscribe(tokio_stream::iter(vec![hello.clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "TLS is no token");
    let mut request = tonic::Request::new(tokio_stream::iter(vec![hello]));
    request.metadata_mut().insert(
        "authorization",
        "Bearer processor-token-0123456789".parse().unwrap(),
    );
    let mut inbound = delivery.subscribe(request).await.unwrap().into_inner();
    assert!(matches!(
        inbound.message().await.unwrap().and_then(|m| m.body),
        Some(pb::core_message::Body::Welcome(_))
    ));
    drop(inbound);

    // The wrong CA, and https without a CA, do not connect.
    processor.tls_ca = Some(other_ca.clone());
    let endpoint = processor
        .tls(Endpoint::from_shared(url.clone()).unwrap())
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let err = endpoint
        .connect()
        .await
        .expect_err("the wrong CA connected");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "not a certificate error (is core up?): {err:?}"
    );
    processor.tls_ca = None;
    assert!(
        processor
            .tls(Endpoint::from_shared(url.clone()).unwrap())
            .is_err()
    );

    // The monitor: its watch stream connects over TLS with the admin token.
    let core = ackflow_monitor::client::Core::new(&url, Some("admin-token-0123456789"))
        .unwrap()
        .with_tls(Some(&ca), None)
        .unwrap();
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel(64);
    let cancel = CancellationToken::new();
    let watch = tokio::spawn(ackflow_monitor::client::watch(
        core,
        events_tx,
        cancel.clone(),
    ));
    let snapshot = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events_rx.recv().await {
            if let ackflow_monitor::app::AppEvent::Admin(pb::watch_update::Update::Snapshot(s)) =
                event
            {
                return Some(s);
            }
        }
        None
    })
    .await
    .expect("a snapshot over TLS");
    assert!(snapshot.is_some());
    cancel.cancel();
    let _ = watch.await;
    running.stop().await;
}
