//! The processor's and the monitor's TLS settings against a core serving
//! TLS with a certificate generated here: `--tls-ca` with an `https://`
//! core URL connects, and so does no `--tls-ca` when the system's roots
//! (`SSL_CERT_FILE`) hold the CA; the wrong CA, or roots without it, do
//! not; tokens still apply. And core towards a PostgreSQL that accepts
//! TLS connections only (`sslmode`, `sslrootcert` in the URL).
//!
//! The processor's stream client must build its endpoint through
//! `Config::tls` for the binary to use TLS; the first test checks that
//! endpoint, the second runs the processor binary itself with `--token`
//! and `--tls-domain`.

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
pub(crate) fn pki(
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
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
    let mut config = ackflow_core::config::Config::local(None, dir.path().join("data"));
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
        .tls(&url, Endpoint::from_shared(url.clone()).unwrap())
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
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("a welcome within 10 s")
        .unwrap();
    assert!(matches!(
        first.and_then(|m| m.body),
        Some(pb::core_message::Body::Welcome(_))
    ));
    drop(inbound);

    // The wrong CA, and https without a CA, do not connect.
    processor.tls_ca = Some(other_ca.clone());
    let endpoint = processor
        .tls(&url, Endpoint::from_shared(url.clone()).unwrap())
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
    // Without --tls-ca: the system's roots, which do not know this CA.
    processor.tls_ca = None;
    let err = processor
        .tls(&url, Endpoint::from_shared(url.clone()).unwrap())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect_err("the system roots trusted a CA made by this test");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "not a certificate error (is core up?): {err:?}"
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
            if let ackflow_monitor::app::AppEvent::Admin(pb::watch_response::Update::Snapshot(s)) =
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

/// Counts the lines of `log` that contain `text` (0 while the file does not
/// exist).
fn lines_with(log: &Path, text: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// Lines of the processor's `log` that say core refused the subscription
/// for its token.
fn refused_for_token(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("subscribe refused") && l.to_ascii_lowercase().contains("token"))
        .count()
}

/// The processor binary against a TLS core that requires a processor
/// token, all three at once: with `--token` and `--tls-domain localhost`
/// (core's certificate names only localhost; the URL says 127.0.0.1) it
/// processes every event; with a wrong token it is refused at subscribe,
/// again and again; without `--tls-domain` it never gets past the
/// handshake. The refused ones change nothing while the good one works, so
/// the refusals are the token's and the name's doing, not a core that is
/// down. The good one has no `--tls-ca`: it trusts the CA through the
/// system's roots (`SSL_CERT_FILE`), as it would a public CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processor_binary_uses_its_token_and_tls_domain() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "core");
    let token = "processor-token-0123456789";
    let mut config = ackflow_core::config::Config::local(None, dir.path().join("data"));
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    config.processor_token = Some(token.into());
    let running = start(config).await.unwrap();
    let url = format!("https://127.0.0.1:{}", running.grpc_addr.port());
    let ca = ca.display().to_string();
    let spawn = |name: &str, args: &[&str]| {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        let mut all = vec!["--tls-ca", ca.as_str(), "--processor-id", name];
        all.extend(args);
        let proc = ackflow_tests::start_processor(&home, &url, &all).unwrap();
        (proc, home.join("processor.log"))
    };
    let (_wrong_token, wrong_token_log) = spawn(
        "wrong-token",
        &[
            "--tls-domain",
            "localhost",
            "--token",
            "not-the-processor-token",
        ],
    );
    let (_no_domain, no_domain_log) = spawn("no-domain", &["--token", token]);

    // Both are refused, twice each (they retry), while core stays unsubscribed.
    ackflow_tests::wait_for("two refusals each", Duration::from_secs(30), || {
        let (a, b) = (&wrong_token_log, &no_domain_log);
        async move {
            (refused_for_token(a) >= 2
                && lines_with(b, "cannot connect") >= 2)
                .then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nwrong token:\n{}\nno domain:\n{}",
            std::fs::read_to_string(&wrong_token_log).unwrap_or_default(),
            std::fs::read_to_string(&no_domain_log).unwrap_or_default()
        )
    });
    for log in [&wrong_token_log, &no_domain_log] {
        assert_eq!(lines_with(log, "connected to core"), 0, "{}", log.display());
    }
    let snapshot = running.hub.snapshot_rx.borrow().clone();
    assert_eq!(
        snapshot.processor.as_ref().map(|p| p.connection),
        Some(pb::ProcessorConnection::Disconnected as i32),
        "a refused processor is not connected"
    );

    // The right token and name: connected, and every event resolved.
    let good_home = dir.path().join("good");
    std::fs::create_dir_all(&good_home).unwrap();
    let _good = ackflow_tests::start_processor_with_env(
        &good_home,
        &url,
        &[
            "--processor-id",
            "good",
            "--tls-domain",
            "localhost",
            "--token",
            token,
        ],
        &[("SSL_CERT_FILE", ca.as_str())],
    )
    .unwrap();
    let good_log = good_home.join("processor.log");
    let events: Vec<_> = (0..5)
        .map(|n| ackflow_core::model::NewEvent {
            kind: "sum".into(),
            key: None,
            payload: format!("[{n}, 1]").into_bytes(),
            idempotency_key: None,
            traceparent: None,
        })
        .collect();
    running.ingest.publish(events).await.unwrap();
    let mut snapshots = running.hub.snapshot_rx.clone();
    let resolved = tokio::time::timeout(
        Duration::from_secs(30),
        snapshots.wait_for(|s| s.acked_floor == 6),
    )
    .await
    .map(|_| ());
    assert!(
        resolved.is_ok(),
        "the processor with the right token and name did not resolve the events:\n{}",
        std::fs::read_to_string(&good_log).unwrap_or_default()
    );
    drop(snapshots);
    let processor = running
        .hub
        .snapshot_rx
        .borrow()
        .processor
        .clone()
        .unwrap_or_default();
    assert_eq!(
        processor.processor_id, "good",
        "the one connected is the good one"
    );
    for seq in 1..=5 {
        let view = running.store.event(seq).await.unwrap().unwrap();
        let result = view.result.expect("a result");
        assert_eq!(
            result.output,
            format!("{}", seq),
            "seq {seq}: [{}, 1] sums to {seq}",
            seq - 1
        );
    }
    running.stop().await;
}

/// Core on a PostgreSQL that accepts TLS connections only (`hostssl`), as
/// managed services (RDS, Cloud SQL, Neon, Supabase) do: with
/// `sslmode=verify-full` and the server's CA in `sslrootcert` it starts and
/// stores a publish over TLS; the wrong CA, and no TLS at all, are refused
/// at start with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_reaches_a_postgresql_that_requires_tls() {
    let dir = tempfile::tempdir().unwrap();
    // The cluster runs as `postgres`, which must reach its files here.
    let _ = std::process::Command::new("chown")
        .arg("postgres")
        .arg(dir.path())
        .status();
    let (ca, cert, key) = pki(dir.path(), "pg");
    let (other_ca, _, _) = pki(dir.path(), "other");
    let pg = ackflow_tests::throwaway_pg::ThrowawayPg::start(
        &dir.path().join("cluster"),
        &dir.path().join("postgres.log"),
    )
    .expect("a throwaway PostgreSQL starts");
    pg.require_tls(&cert, &key)
        .expect("PostgreSQL restarts with TLS");
    let core_on = |url: String| {
        let data = dir.path().join("data");
        async move { start(ackflow_core::config::Config::local(Some(url), data)).await }
    };
    let url = |query: &str| format!("postgres://postgres@localhost:{}/postgres?{query}", pg.port);

    let plain = core_on(url("sslmode=disable"))
        .await
        .err()
        .expect("core started on a plain connection the server refuses");
    assert!(
        format!("{plain:#}").contains("no encryption"),
        "not the server's refusal of a plain connection: {plain:#}"
    );
    let wrong_ca = core_on(url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    )))
    .await
    .err()
    .expect("core trusted a certificate from another CA");
    assert!(
        format!("{wrong_ca:#}").contains("UnknownIssuer"),
        "not a certificate error: {wrong_ca:#}"
    );

    let tls_url = url(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let running = core_on(tls_url.clone())
        .await
        .expect("core starts over TLS");
    let appended = running
        .ingest
        .publish(vec![ackflow_core::model::NewEvent {
            kind: "sum".into(),
            key: None,
            payload: b"[1, 2]".to_vec(),
            idempotency_key: None,
            traceparent: None,
        }])
        .await
        .expect("a publish is stored over TLS");
    assert_eq!(appended.len(), 1);
    let stored = ackflow_tests::all_events(&tls_url)
        .await
        .expect("reading back over TLS");
    assert_eq!(stored.len(), 1);
    running.stop().await;
}
