//! TLS on both listeners, with a CA and a server certificate generated in
//! the test (rcgen): gRPC and REST work over TLS for a client that trusts
//! the CA; a plaintext client, or one trusting another CA, gets nothing;
//! tokens are still required over TLS; bad certificate files fail at start;
//! shutdown is not held up by an idle TLS connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ackflow_core::config::Config;
use ackflow_core::server::{Running, start};
use ackflow_proto::v1 as pb;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// PEM files of a test PKI: a CA and a server certificate it signed for
/// `localhost` and 127.0.0.1.
struct Pki {
    cert: PathBuf,
    key: PathBuf,
    ca_pem: String,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("ackflow test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let write = |file: &str, text: &str| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        cert: write("cert.pem", &cert.pem()),
        key: write("key.pem", &key.serialize_pem()),
        ca_pem: ca.pem(),
    }
}

const PROCESSOR_TOKEN: &str = "processor-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

async fn tls_core(dir: &Path, pki: &Pki) -> Running {
    let mut config = Config::local(None, dir.join("data"));
    config.tls_cert = Some(pki.cert.clone());
    config.tls_key = Some(pki.key.clone());
    config.processor_token = Some(PROCESSOR_TOKEN.into());
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.shutdown_timeout_s = 20;
    start(config).await.unwrap()
}

async fn tls_channel(running: &Running, ca_pem: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://localhost:{}", running.grpc_addr.port()))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A rustls client that trusts `ca_pem`.
fn rest_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One HTTP/1.1 request over TLS; returns the status line and body.
async fn https(
    running: &Running,
    ca_pem: &str,
    request: &str,
) -> std::io::Result<(String, String)> {
    let tcp = tokio::net::TcpStream::connect(running.http_addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rest_connector(ca_pem).connect(name, tcp).await?;
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

#[tokio::test]
async fn grpc_and_rest_are_served_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), "good");
    let running = tls_core(dir.path(), &pki).await;
    let channel = tls_channel(&running, &pki.ca_pem).await.unwrap();

    // Ingest over TLS.
    let mut ingest = pb::ingest_client::IngestClient::new(channel.clone());
    let reply = ingest
        .publish(pb::PublishRequest {
            kind: "sum".into(),
            payload: b"[1,2]".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.seq, 1);

    // Tokens are still required over TLS.
    let mut admin = pb::admin_client::AdminClient::new(channel.clone());
    let err = admin.pause(pb::PauseRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(pb::ResumeRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    admin.resume(request).await.unwrap();
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
        .subscribe(tokio_stream::iter(vec![hello.clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(tokio_stream::iter(vec![hello]));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {PROCESSOR_TOKEN}").parse().unwrap(),
    );
    let mut inbound = delivery.subscribe(request).await.unwrap().into_inner();
    let welcome = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("a welcome within 10 s")
        .unwrap()
        .unwrap();
    assert!(matches!(
        welcome.body,
        Some(pb::core_message::Body::Welcome(_))
    ));

    // REST over TLS.
    let (status, body) = https(
        &running,
        &pki.ca_pem,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(status.contains(" 200 "), "{status}: {body}");
    let json = r#"{"kind":"sum","payload":[3]}"#;
    let (status, body) = https(
        &running,
        &pki.ca_pem,
        &format!(
            "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        ),
    )
    .await
    .unwrap();
    assert!(status.contains(" 202 "), "{status}: {body}");
    assert!(body.contains(r#""seq":2"#), "{body}");

    // An idle TLS connection does not hold shutdown up.
    let tcp = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let _idle = rest_connector(&pki.ca_pem)
        .connect(name, tcp)
        .await
        .unwrap();
    drop(inbound);
    let stopping = Instant::now();
    running.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?}",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn clients_without_the_right_ca_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki_good = pki(dir.path(), "good");
    let pki_other = pki(dir.path(), "other");
    let running = tls_core(dir.path(), &pki_good).await;

    // Plaintext gRPC to the TLS port.
    let plain = Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut ingest = pb::ingest_client::IngestClient::new(plain);
    let err = ingest
        .publish(pb::PublishRequest {
            kind: "sum".into(),
            payload: b"[1]".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // Core is up and listening (the right CA connects below): the plaintext
    // client fails at the protocol, not at the socket.
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(
        !format!("{err:?}").contains("Connection refused"),
        "{err:?}"
    );

    // A client trusting another CA: refused for the certificate.
    let err = tls_channel(&running, &pki_other.ca_pem)
        .await
        .expect_err("a client trusting another CA connected");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "not a certificate error: {err:?}"
    );
    // The same client with the right CA connects, so the refusal above was
    // the certificate's doing.
    tls_channel(&running, &pki_good.ca_pem)
        .await
        .expect("the right CA connects");

    // Plaintext HTTP to the TLS REST port: no HTTP answer.
    let plain = tokio::time::timeout(Duration::from_secs(15), async {
        let mut tcp = tokio::net::TcpStream::connect(running.http_addr)
            .await
            .unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let _ = tcp.read_to_end(&mut response).await;
        response
    })
    .await
    .expect("the server closes a plaintext connection");
    assert!(
        !String::from_utf8_lossy(&plain).contains("200"),
        "plaintext got an answer"
    );
    // HTTPS trusting another CA: the handshake fails on the certificate.
    let err = https(
        &running,
        &pki_other.ca_pem,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .expect_err("HTTPS trusting another CA got an answer");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err:?}");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "not a certificate error (is core up?): {err:?}"
    );

    // Nothing stored, and core still serves a proper client.
    assert_eq!(running.store.next_seq().await.unwrap(), 1);
    let channel = tls_channel(&running, &pki_good.ca_pem).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn bad_certificate_files_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let other = pki(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    for (cert, key, expected) in [
        (&missing, &good.key, "missing.pem"),
        (&garbage, &good.key, "no PEM certificate"),
        (&good.cert, &garbage, "no PEM private key"),
        // A key that does not match the certificate.
        (&good.cert, &other.key, "cannot be used"),
    ] {
        let mut config = Config::local(None, dir.path().join("data"));
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
        let err = match start(config).await {
            Ok(running) => {
                running.stop().await;
                panic!("started with {cert:?} / {key:?}");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expected), "{err}");
    }
    let mut config = Config::local(None, dir.path().join("data"));
    config.tls_cert = Some(good.cert.clone());
    let err = config.check().expect_err("a certificate without a key");
    assert!(
        err.contains("--tls-key"),
        "does not name the missing key: {err}"
    );
}
