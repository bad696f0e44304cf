//! Webhooks end to end: the real core and processor binaries, and an HTTP
//! server started by the test with endpoints that answer, refuse, fail once,
//! hang, and take their time. Checks the contract README gives: what is
//! sent (body as published, the `ackflow-*`, `idempotency-key` and
//! `traceparent` headers), what each answer becomes (ok, failed, retry later honouring
//! `Retry-After`, parked after `--max-deliver` timeouts), and that calls run
//! side by side across keys but one at a time, in seq order, within a key;
//! `https://` endpoints with a private CA (`--webhook-ca`), Standard
//! Webhooks signatures checked by the reference verifier (the
//! `standardwebhooks` package from PyPI, in a virtual environment of the
//! test's), credentials from files, a certificate that does not verify, and
//! a hanging endpoint that holds back its own kind only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackflow_tests::{
    Core, http_request, post_json, start_processor, start_processor_with_env, wait_for,
};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One call the endpoint received.
#[derive(Debug, Clone)]
struct Call {
    path: &'static str,
    headers: HashMap<String, String>,
    body: String,
}

#[derive(Default)]
struct Seen {
    calls: Vec<Call>,
    /// `/slow`: calls in progress, per key and in all, and the most seen.
    running_per_key: HashMap<String, u32>,
    running: u32,
    most_per_key: u32,
    most: u32,
}

type Shared = Arc<Mutex<Seen>>;

fn record(seen: &Shared, path: &'static str, headers: &HeaderMap, body: String) -> Call {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let call = Call {
        path,
        headers,
        body,
    };
    seen.lock().unwrap().calls.push(call.clone());
    call
}

async fn upper(State(seen): State<Shared>, headers: HeaderMap, body: String) -> String {
    record(&seen, "upper", &headers, body).body.to_uppercase()
}

async fn refuse(State(seen): State<Shared>, headers: HeaderMap, body: String) -> impl IntoResponse {
    record(&seen, "refuse", &headers, body);
    (StatusCode::UNPROCESSABLE_ENTITY, "no thanks")
}

/// 503 with `Retry-After: 1` the first time an event comes, 200 after.
async fn flaky(State(seen): State<Shared>, headers: HeaderMap, body: String) -> impl IntoResponse {
    let call = record(&seen, "flaky", &headers, body);
    let id = &call.headers["idempotency-key"];
    let earlier = seen
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.path == "flaky" && &c.headers["idempotency-key"] == id)
        .count();
    if earlier == 1 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "busy",
        )
            .into_response()
    } else {
        "ok after a retry".into_response()
    }
}

async fn hang(State(seen): State<Shared>, headers: HeaderMap, body: String) -> &'static str {
    record(&seen, "hang", &headers, body);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "never"
}

/// Takes 100 ms, counting the calls in progress per key.
async fn slow(State(seen): State<Shared>, headers: HeaderMap, body: String) -> &'static str {
    let key = record(&seen, "slow", &headers, body).headers["ackflow-key"].clone();
    {
        let mut s = seen.lock().unwrap();
        let n = s.running_per_key.entry(key.clone()).or_default();
        *n += 1;
        let n = *n;
        s.running += 1;
        s.most_per_key = s.most_per_key.max(n);
        s.most = s.most.max(s.running);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = seen.lock().unwrap();
    *s.running_per_key.get_mut(&key).unwrap() -= 1;
    s.running -= 1;
    "slept"
}

async fn start_endpoints(seen: Shared) -> anyhow::Result<SocketAddr> {
    let app = Router::new()
        .route("/upper", post(upper))
        .route("/refuse", post(refuse))
        .route("/flaky", post(flaky))
        .route("/hang", post(hang))
        .route("/slow", post(slow))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The publisher's trace context of the first event.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_keep_the_contract() -> anyhow::Result<()> {
    let seen = Shared::default();
    let endpoints = start_endpoints(seen.clone()).await?;
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--max-deliver", "3"]).await?;
    let hooks: Vec<String> = ["upper", "refuse", "flaky", "hang", "slow"]
        .iter()
        .map(|k| format!("{k}=http://{endpoints}/{k}"))
        .collect();
    let mut args = vec!["--webhook-timeout-ms", "500"];
    for hook in &hooks {
        args.extend(["--webhook", hook.as_str()]);
    }
    // Each event's work is logged with its trace context at debug.
    let log_filter = [("RUST_LOG", "info,ackflow_processor::executor=debug")];
    let mut processor = start_processor_with_env(dir.path(), &core.grpc_url(), &args, &log_filter)?;

    let mut bodies = vec![
        format!(
            r#"{{"kind":"upper","key":"k1","payload":"hello  world","traceparent":"{TRACE}"}}"#
        ),
        r#"{"kind":"upper","payload":{"n": 1}}"#.to_string(),
        r#"{"kind":"refuse","key":"k2","payload":1}"#.to_string(),
        r#"{"kind":"flaky","key":"k3","payload":2}"#.to_string(),
        r#"{"kind":"hang","key":"k4","payload":3}"#.to_string(),
    ];
    // Three keys, four slow calls each.
    for i in 0..12 {
        bodies.push(format!(
            r#"{{"kind":"slow","key":"s{}","payload":{i}}}"#,
            i % 3
        ));
    }
    for body in &bodies {
        let (status, text) = post_json(core.http, "/v1/events", body).await?;
        anyhow::ensure!(status == 202, "publish {body}: {status} {text}");
    }
    let core_ref = &core;
    let last = bodies.len() as u64;
    wait_for(
        "every event resolved",
        Duration::from_secs(60),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            (s.acked_floor > last).then_some(())
        },
    )
    .await?;
    let get = |seq: u64| async move {
        let (status, text) =
            http_request(core_ref.http, "GET", &format!("/v1/events/{seq}"), None).await?;
        anyhow::ensure!(status == 200, "GET {seq}: {status} {text}");
        Ok::<Value, anyhow::Error>(serde_json::from_str(&text)?)
    };
    let calls = seen.lock().unwrap().calls.clone();
    let calls_to = |path: &str| {
        calls
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect::<Vec<_>>()
    };

    // What is sent: the payload as published, and the headers.
    let one = get(1).await?;
    assert_eq!(one["state"], "ok", "{one}");
    assert_eq!(one["result"]["output"], "\"HELLO  WORLD\"", "{one}");
    // Seqs 1 (key k1) and 2 (no key) run side by side: order them by seq,
    // not by arrival.
    let mut upper_calls = calls_to("upper");
    upper_calls.sort_by_key(|c| c.headers.get("ackflow-seq").cloned().unwrap_or_default());
    assert_eq!(upper_calls.len(), 2, "{upper_calls:?}");
    let first = &upper_calls[0];
    assert_eq!(
        first.body, "\"hello  world\"",
        "the payload text as published"
    );
    for (name, want) in [
        ("content-type", "application/json"),
        ("ackflow-seq", "1"),
        ("ackflow-kind", "upper"),
        ("ackflow-key", "k1"),
        ("ackflow-attempt", "1"),
        // The trace goes on: publisher, core, processor, the user's code.
        ("traceparent", TRACE),
    ] {
        assert_eq!(
            first.headers.get(name).map(String::as_str),
            Some(want),
            "{name}: {first:?}"
        );
    }
    assert_eq!(
        first.headers.get("idempotency-key").map(String::as_str),
        one["id"].as_str(),
        "the event's id: {first:?}"
    );
    let unkeyed = &upper_calls[1];
    assert_eq!(unkeyed.body, r#"{"n": 1}"#);
    assert!(!unkeyed.headers.contains_key("ackflow-key"), "{unkeyed:?}");
    assert!(!unkeyed.headers.contains_key("traceparent"), "{unkeyed:?}");
    assert_eq!(one["traceparent"], TRACE, "{one}");
    let log = std::fs::read_to_string(dir.path().join("processor.log"))?;
    let traced = format!("traceparent={TRACE}");
    assert!(
        log.lines()
            .any(|l| l.contains("seq=1 ") && l.contains(&traced) && l.contains("processed")),
        "the processor logs the event's work with its trace context:\n{log}"
    );

    // A 4xx is a failed result with the body as its output.
    let refused = get(3).await?;
    assert_eq!(refused["state"], "failed", "{refused}");
    assert_eq!(refused["result"]["output"], "no thanks");
    assert_eq!(calls_to("refuse").len(), 1, "never retried");

    // A 503 is retried (after its Retry-After), with the same idempotency key.
    let flaky_event = get(4).await?;
    assert_eq!(flaky_event["state"], "ok", "{flaky_event}");
    assert_eq!(flaky_event["result"]["output"], "ok after a retry");
    let flaky_calls = calls_to("flaky");
    assert_eq!(flaky_calls.len(), 2, "{flaky_calls:?}");
    let attempts: Vec<u32> = flaky_calls
        .iter()
        .map(|c| c.headers["ackflow-attempt"].parse().unwrap())
        .collect();
    assert!(attempts[1] > attempts[0], "a later copy: {attempts:?}");
    assert_eq!(
        flaky_calls[0].headers["idempotency-key"],
        flaky_calls[1].headers["idempotency-key"]
    );

    // No answer within --webhook-timeout-ms: retried, then parked at
    // --max-deliver 3.
    let hung = get(5).await?;
    assert_eq!(hung["state"], "dead", "{hung}");
    let reason = hung["dead"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("did not answer within 500 ms"),
        "the park names the timeout: {hung}"
    );
    assert!(!calls_to("hang").is_empty());

    // Keys side by side, one call per key at a time, in seq order.
    let (most, most_per_key) = {
        let s = seen.lock().unwrap();
        (s.most, s.most_per_key)
    };
    assert_eq!(most_per_key, 1, "two calls of one key at once");
    assert!(most > 1, "the three keys never ran side by side");
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for call in calls_to("slow") {
        let seq: u64 = call.headers["ackflow-seq"].parse()?;
        let key = call.headers["ackflow-key"].clone();
        if let Some(before) = last_seq.insert(key.clone(), seq) {
            assert!(seq > before, "key {key}: seq {seq} after {before}");
        }
    }
    for seq in 6..=last {
        assert_eq!(get(seq).await?["state"], "ok", "slow seq {seq}");
    }
    processor.terminate().await?;
    Ok(())
}

#[tokio::test]
async fn a_bad_webhook_flag_is_refused_at_start() -> anyhow::Result<()> {
    let output = tokio::process::Command::new(ackflow_tests::bin("e2e-processor"))
        .args(["--webhook", "resize=ftp://example.com/resize"])
        .output()
        .await?;
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--webhook") && stderr.contains("http:// or https://"),
        "{stderr}"
    );
    // A secret that is not whsec_…: refused at start, and not echoed.
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "hunter2-not-a-secret\n")?;
    let output = tokio::process::Command::new(ackflow_tests::bin("e2e-processor"))
        .args(["--webhook", "resize=https://example.com/resize"])
        .arg("--webhook-secret-file")
        .arg(format!("resize={}", secret.display()))
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("whsec_"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the secret was printed: {stderr}"
    );
    // A flag for a kind without a webhook.
    let output = tokio::process::Command::new(ackflow_tests::bin("e2e-processor"))
        .args(["--webhook", "resize=https://example.com/resize"])
        .arg("--webhook-header-file")
        .arg(format!("crop=Authorization={}", secret.display()))
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no --webhook crop=URL"), "{stderr}");
    Ok(())
}

/// Serves `app` over TLS with the PEM `cert` and `key` on a loopback port.
async fn serve_tls(app: Router, cert: &Path, key: &Path) -> anyhow::Result<SocketAddr> {
    let certs =
        CertificateDer::pem_slice_iter(&std::fs::read(cert)?).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&std::fs::read(key)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let listener = TlsListener {
        listener: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let addr = listener.listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

struct TlsListener {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.listener.accept().await else {
                continue;
            };
            // A client that refuses the certificate ends its handshake.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The Standard Webhooks reference verifier (PyPI `standardwebhooks`), in a
/// virtual environment made once per machine: for each `(secret, call)`,
/// whether it accepts the call's body and `webhook-*` headers.
async fn reference_verifier(cases: &[(&str, &Call)]) -> anyhow::Result<Vec<bool>> {
    const PACKAGE: &str = "standardwebhooks==1.3.0";
    let venv = std::env::temp_dir().join("ackflow-standardwebhooks-1.3.0");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        std::process::Command::new(python)
            .args(["-c", "import standardwebhooks"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready(&python) {
        let made = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()?;
        anyhow::ensure!(made.status.success(), "python3 -m venv: {made:?}");
        let pip = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", PACKAGE])
            .output()?;
        anyhow::ensure!(pip.status.success(), "pip install {PACKAGE}: {pip:?}");
    }
    let input: Vec<Value> = cases
        .iter()
        .map(|(secret, call)| {
            serde_json::json!({
                "secret": secret,
                "body": call.body,
                "headers": {
                    "webhook-id": call.headers.get("webhook-id"),
                    "webhook-timestamp": call.headers.get("webhook-timestamp"),
                    "webhook-signature": call.headers.get("webhook-signature"),
                },
            })
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
verdicts = []
for case in json.load(sys.stdin):
    try:
        Webhook(case["secret"]).verify(case["body"], case["headers"])
        verdicts.append(True)
    except Exception:
        verdicts.append(False)
print(json.dumps(verdicts))
"#;
    let mut child = tokio::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, serde_json::to_string(&input)?.as_bytes())
        .await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    anyhow::ensure!(output.status.success(), "the verifier failed: {output:?}");
    Ok(serde_json::from_slice(&output.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_with_a_private_ca_gets_signed_calls_with_its_credentials()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = crate::tls_clients::pki(dir.path(), "hook");
    let seen = Shared::default();
    let app = Router::new()
        .route("/upper", post(upper))
        .with_state(seen.clone());
    let addr = serve_tls(app, &cert, &key).await?;
    // Two secrets: a rotation in progress (both sign every call).
    let old = "whsec_b2xkLXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==";
    let new = "whsec_bmV3LXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==";
    let other = "whsec_b3RoZXItc2VjcmV0LWtleS0wMTIzNDU2Nzg5";
    std::fs::write(dir.path().join("secret"), format!("{old}\n{new}\n"))?;
    let token = "Bearer hook-token-0123456789";
    std::fs::write(dir.path().join("authorization"), format!("{token}\n"))?;
    let core = Core::start(dir.path(), None, &[]).await?;
    let hook = format!("upper=https://localhost:{}/upper", addr.port());
    let secret = format!("upper={}", dir.path().join("secret").display());
    let header = format!(
        "upper=Authorization={}",
        dir.path().join("authorization").display()
    );
    let ca = ca.display().to_string();
    let args = [
        "--webhook",
        &hook,
        "--webhook-ca",
        &ca,
        "--webhook-secret-file",
        &secret,
        "--webhook-header-file",
        &header,
    ];
    let log = [("RUST_LOG", "debug")];
    let mut processor = start_processor_with_env(dir.path(), &core.grpc_url(), &args, &log)?;
    for i in 0..3 {
        let body = format!(r#"{{"kind":"upper","key":"k","payload":{{"n": {i}}}}}"#);
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish {body}: {status} {text}");
    }
    core.wait_resolved(3, Duration::from_secs(30)).await?;
    for seq in 1..=3 {
        let (_, text) = http_request(core.http, "GET", &format!("/v1/events/{seq}"), None).await?;
        let event: Value = serde_json::from_str(&text)?;
        assert_eq!(event["state"], "ok", "{event}");
    }
    let calls = seen.lock().unwrap().calls.clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for call in &calls {
        assert_eq!(
            call.headers.get("authorization").map(String::as_str),
            Some(token)
        );
        assert_eq!(
            call.headers.get("webhook-id"),
            call.headers.get("idempotency-key")
        );
        let signatures = &call.headers["webhook-signature"];
        assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    }
    // Each secret alone verifies every call; another secret and a tampered
    // body do not.
    let tampered = Call {
        body: calls[0].body.replace('0', "1"),
        ..calls[0].clone()
    };
    assert_ne!(tampered.body, calls[0].body);
    let mut cases: Vec<(&str, &Call)> = Vec::new();
    for call in &calls {
        cases.push((old, call));
        cases.push((new, call));
    }
    cases.push((other, &calls[0]));
    cases.push((old, &tampered));
    let verdicts = reference_verifier(&cases).await?;
    assert_eq!(
        verdicts[..6],
        [true; 6],
        "the reference verifier refused a call"
    );
    assert_eq!(
        verdicts[6..],
        [false, false],
        "a wrong secret or a tampered body passed"
    );
    processor.terminate().await?;
    let log = std::fs::read_to_string(dir.path().join("processor.log"))?;
    for secret in ["hook-token-0123456789", &old[6..], &new[6..]] {
        assert!(
            !log.contains(secret),
            "the processor logged a secret: {secret}"
        );
    }
    assert!(
        log.contains("signed=true"),
        "the start says the webhook signs"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_certificate_that_does_not_verify_is_retried_and_parked_with_why()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_, cert, key) = crate::tls_clients::pki(dir.path(), "hook");
    let seen = Shared::default();
    let app = Router::new()
        .route("/upper", post(upper))
        .with_state(seen.clone());
    let addr = serve_tls(app, &cert, &key).await?;
    let core = Core::start(dir.path(), None, &["--max-deliver", "2"]).await?;
    // No --webhook-ca: the private CA is nobody's root.
    let hook = format!("upper=https://localhost:{}/upper", addr.port());
    let mut processor = start_processor(dir.path(), &core.grpc_url(), &["--webhook", &hook])?;
    let (status, text) =
        post_json(core.http, "/v1/events", r#"{"kind":"upper","payload":1}"#).await?;
    anyhow::ensure!(status == 202, "{status} {text}");
    core.wait_resolved(1, Duration::from_secs(30)).await?;
    let (_, text) = http_request(core.http, "GET", "/v1/events/1", None).await?;
    let event: Value = serde_json::from_str(&text)?;
    assert_eq!(event["state"], "dead", "{event}");
    assert!(
        text.contains("invalid peer certificate") && text.contains("UnknownIssuer"),
        "the reason says why: {event}"
    );
    assert!(seen.lock().unwrap().calls.is_empty(), "no call got through");
    processor.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_holds_back_its_own_kind_only() -> anyhow::Result<()> {
    let release = CancellationToken::new();
    let seen = Shared::default();
    let hold = {
        let release = release.clone();
        move |State(seen): State<Shared>, headers: HeaderMap, body: String| async move {
            record(&seen, "hold", &headers, body);
            {
                let mut s = seen.lock().unwrap();
                s.running += 1;
                s.most = s.most.max(s.running);
            }
            release.cancelled().await;
            seen.lock().unwrap().running -= 1;
            "held"
        }
    };
    let app = Router::new()
        .route("/hold", post(hold))
        .with_state(seen.clone());
    let endpoint = ackflow_tests::serve_router(app, CancellationToken::new()).await?;
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &[]).await?;
    let hook = format!("hold=http://{endpoint}/hold");
    let metrics = format!("127.0.0.1:{}", ackflow_tests::free_port());
    let args = [
        "--concurrency",
        "8",
        "--webhook-concurrency",
        "2",
        "--webhook-timeout-ms",
        "120000",
        "--webhook",
        &hook,
        "--metrics-addr",
        &metrics,
    ];
    let mut processor = start_processor(dir.path(), &core.grpc_url(), &args)?;
    // Twenty of each, interleaved, every event on a key of its own: without
    // a pool, eight hanging calls would take every slot.
    let mut sha256 = Vec::new();
    for i in 0..40 {
        let body = match i % 2 {
            0 => format!(r#"{{"kind":"hold","key":"h{i}","payload":{i}}}"#),
            _ => format!(r#"{{"kind":"sha256","key":"s{i}","payload":"x{i}"}}"#),
        };
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish {body}: {status} {text}");
        if i % 2 == 1 {
            sha256.push(i + 1);
        }
    }
    let core_ref = &core;
    for seq in sha256 {
        wait_for(
            &format!("sha256 seq {seq} done"),
            Duration::from_secs(30),
            || async move {
                let (_, text) =
                    http_request(core_ref.http, "GET", &format!("/v1/events/{seq}"), None)
                        .await
                        .ok()?;
                text.contains(r#""state":"ok""#).then_some(())
            },
        )
        .await?;
    }
    {
        let s = seen.lock().unwrap();
        assert_eq!(
            (s.calls.len(), s.most),
            (2, 2),
            "the hold pool: two calls, held"
        );
    }
    let metrics: SocketAddr = metrics.parse()?;
    let (_, text) = http_request(metrics, "GET", "/metrics", None).await?;
    assert!(
        text.contains(r#"ackflow_processor_webhook_calls{webhook="hold"} 2"#),
        "{text}"
    );
    // Released, the hold events go through, two at a time.
    release.cancel();
    core.wait_resolved(40, Duration::from_secs(60)).await?;
    let (calls, most) = {
        let s = seen.lock().unwrap();
        (s.calls.len(), s.most)
    };
    assert_eq!((calls, most), (20, 2));
    let (_, text) = http_request(metrics, "GET", "/metrics", None).await?;
    assert!(
        text.contains(r#"ackflow_processor_webhook_answers_total{class="2xx",webhook="hold"} 20"#),
        "{text}"
    );
    processor.terminate().await?;
    Ok(())
}
