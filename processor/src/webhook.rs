//! Webhooks: events of a kind processed by the user's own HTTP endpoint, in
//! any language (`--webhook KIND=URL`). A webhook is one more [`Algorithm`],
//! so it gets every guarantee the built-ins get: one call per key at a time
//! in seq order, at most `--concurrency` calls at once.
//!
//! The contract (README, "Process your own events"):
//!
//! * request: `POST URL` (`http://` or `https://`), the body the event's
//!   payload exactly as published (`content-type: application/json`),
//!   headers `ackflow-seq`, `ackflow-kind`, `ackflow-key` (when the event has
//!   one), `ackflow-attempt`, `idempotency-key` (the event's id, the same on
//!   every attempt) and `traceparent` (the publisher's W3C trace context,
//!   when it sent one); with a signing secret, the Standard Webhooks
//!   headers `webhook-id`, `webhook-timestamp`, `webhook-signature` (see
//!   `signing.rs`); the extra headers of `--webhook-header-file`;
//! * `2xx`: an ok result, the response body (UTF-8, at most 64 KiB) its
//!   output;
//! * `4xx` other than 408 and 429, and anything else unexpected (a
//!   redirect): a failed result, the body its output;
//! * `408`, `429`, `5xx`, no answer within `--webhook-timeout-ms`, a
//!   connection error: retry later, after `Retry-After` when the answer has
//!   one.
//!
//! Connections are pooled and kept alive, one client for every webhook.
//! `https://` endpoints are verified against the system's roots and
//! `--webhook-ca` (a private CA); a certificate that does not verify is a
//! connection error, retried later, its reason stored if the event is
//! parked. Each webhook has its own cap on calls in progress
//! (`--webhook-concurrency`, a pool of the processor's lanes), so a slow
//! endpoint holds back its own kind only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ackflow_proto::v1 as pb;
use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::algorithms::{Algorithm, AlgorithmError, Outcome, Registry};
use crate::config::Config;
use crate::metrics::ProcessorMetrics;
use crate::signing::Secrets;

/// Most bytes of a response body kept as the output; the rest is not read.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Idle pooled connections are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// A `--webhook KIND=URL` flag, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: String,
    pub url: Uri,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, url) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not KIND=URL"))?;
        if kind.is_empty() || kind.chars().any(char::is_control) {
            return Err(format!("{kind:?} is not a kind (KIND=URL)"));
        }
        let url: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        match url.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(format!(
                    "{url}: a webhook URL starts with http:// or https://"
                ));
            }
        }
        if url.host().is_none_or(str::is_empty) {
            return Err(format!("{url}: no host"));
        }
        Ok(Self {
            kind: kind.to_string(),
            url,
        })
    }
}

/// A `KIND=VALUE` flag (`--webhook-secret-file`, `--webhook-secret-env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindValue {
    pub kind: String,
    pub value: String,
}

impl std::str::FromStr for KindValue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((kind, value)) if !kind.is_empty() && !value.is_empty() => Ok(Self {
                kind: kind.into(),
                value: value.into(),
            }),
            _ => Err(format!("{s:?} is not KIND=VALUE")),
        }
    }
}

/// A `--webhook-header-file KIND=NAME=PATH` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFile {
    pub kind: String,
    pub name: HeaderName,
    pub path: std::path::PathBuf,
}

impl std::str::FromStr for HeaderFile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let KindValue { kind, value } = s
            .parse()
            .map_err(|_| format!("{s:?} is not KIND=NAME=PATH"))?;
        let (name, path) = value
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
            .ok_or_else(|| format!("{s:?} is not KIND=NAME=PATH"))?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not an HTTP header name"))?;
        if name.as_str().starts_with("ackflow-") || name.as_str().starts_with("webhook-") {
            return Err(format!(
                "{name}: the ackflow-* and webhook-* headers are the contract's"
            ));
        }
        Ok(Self {
            kind,
            name,
            path: path.into(),
        })
    }
}

/// What one webhook sends besides the contract's headers.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// Signs every call (Standard Webhooks).
    pub secrets: Option<Secrets>,
    /// Extra headers (`Authorization`, …); their values are marked
    /// sensitive and never logged.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The HTTP client all webhooks share.
#[derive(Clone)]
pub struct Webhooks {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    metrics: Arc<ProcessorMetrics>,
}

impl Webhooks {
    /// A client whose calls give up after `timeout` (connecting and the TLS
    /// handshake included), keeping up to `max_idle` idle connections per
    /// host; `https://` endpoints are verified against the system's roots
    /// and the certificates in `ca` (PEM).
    pub fn new(
        timeout: Duration,
        max_idle: usize,
        ca: Option<&Path>,
        metrics: Arc<ProcessorMetrics>,
    ) -> anyhow::Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(max_idle)
            .build(connector);
        Ok(Self {
            client,
            timeout,
            metrics,
        })
    }

    /// The algorithm that posts events of `kind` to `url`.
    pub fn to(&self, kind: &str, url: Uri, extras: Extras) -> Webhook {
        Webhook {
            hooks: self.clone(),
            url,
            extras,
            calls: self.metrics.webhook_calls.with_label_values(&[kind]),
            answers: ["2xx", "3xx", "4xx", "5xx", "timeout", "error"].map(|class| {
                self.metrics
                    .webhook_answers
                    .with_label_values(&[kind, class])
            }),
        }
    }
}

/// Registers the algorithm of every `--webhook` (replacing a built-in of
/// its kind), with its extras read from their files and variables.
pub fn register(
    config: &Config,
    registry: &mut Registry,
    metrics: &Arc<ProcessorMetrics>,
) -> anyhow::Result<()> {
    if config.webhooks.is_empty() {
        return Ok(());
    }
    let hooks = Webhooks::new(
        Duration::from_millis(config.webhook_timeout_ms),
        config.concurrency as usize,
        config.webhook_ca.as_deref(),
        metrics.clone(),
    )?;
    let extras = config.webhook_extras()?;
    for (target, extras) in config.webhooks.iter().zip(extras) {
        tracing::info!(
            kind = %target.kind,
            url = %target.url,
            signed = extras.secrets.is_some(),
            headers = ?extras.headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
            cap = config.webhook_concurrency,
            "webhook"
        );
        registry.register(
            &target.kind,
            hooks.to(&target.kind, target.url.clone(), extras),
        );
    }
    Ok(())
}

/// The roots `https://` webhooks are verified against: the system's, and
/// those of `ca`.
fn tls_config(ca: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "a system root certificate could not be read");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca {
        let pem =
            std::fs::read(ca).with_context(|| format!("reading --webhook-ca {}", ca.display()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .with_context(|| format!("--webhook-ca {}: not PEM certificates", ca.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "--webhook-ca {}: no certificate in it",
            ca.display()
        );
        for cert in certs {
            roots.add(cert).with_context(|| {
                format!(
                    "--webhook-ca {}: a certificate rustls refuses",
                    ca.display()
                )
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Processes events by posting them to one URL.
pub struct Webhook {
    hooks: Webhooks,
    url: Uri,
    extras: Extras,
    /// Calls in progress.
    calls: prometheus::IntGauge,
    /// Answers by class: 2xx, 3xx, 4xx, 5xx, timeout, error.
    answers: [prometheus::IntCounter; 6],
}

/// What came back.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: String,
}

impl Algorithm for Webhook {
    async fn process(&self, event: &pb::Event) -> Outcome {
        let request = self.request(event)?;
        let timeout = self.hooks.timeout;
        self.calls.inc();
        let called = tokio::time::timeout(timeout, self.call(request)).await;
        self.calls.dec();
        let class = match &called {
            Err(_) => 4,
            Ok(Err(_)) => 5,
            Ok(Ok(answer)) => (answer.status.as_u16() / 100).clamp(2, 5) as usize - 2,
        };
        self.answers[class].inc();
        match called {
            Err(_) => Err(AlgorithmError::retry_later(format!(
                "{} did not answer within {} ms (--webhook-timeout-ms)",
                self.url,
                timeout.as_millis()
            ))),
            Ok(Err(e)) => Err(AlgorithmError::retry_later(format!(
                "calling {} failed: {e:#}",
                self.url
            ))),
            Ok(Ok(answer)) => verdict(&self.url, answer),
        }
    }
}

impl Webhook {
    fn request(&self, event: &pb::Event) -> Result<Request<Full<Bytes>>, AlgorithmError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("ackflow-processor/", env!("CARGO_PKG_VERSION")),
            )
            .header("ackflow-seq", event.seq)
            .header("ackflow-attempt", event.attempt);
        let headers = request.headers_mut().expect("a valid builder");
        let mut text_header = |name: &'static str, value: &str| {
            // Kinds, keys and ids hold no control characters (core refuses
            // them), so any UTF-8 text is a valid header value but DEL.
            let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
                AlgorithmError::failed(format!(
                    "the event's {name} cannot be sent as an HTTP header"
                ))
            })?;
            headers.insert(HeaderName::from_static(name), value);
            Ok::<_, AlgorithmError>(())
        };
        text_header("ackflow-kind", &event.kind)?;
        if !event.key.is_empty() {
            text_header("ackflow-key", &event.key)?;
        }
        text_header("idempotency-key", &event.id)?;
        if !event.traceparent.is_empty() {
            text_header("traceparent", &event.traceparent)?;
        }
        if let Some(secrets) = &self.extras.secrets {
            let timestamp = chrono::Utc::now().timestamp();
            text_header("webhook-id", &event.id)?;
            headers.insert(
                HeaderName::from_static("webhook-timestamp"),
                timestamp.into(),
            );
            let signature = secrets.sign(&event.id, timestamp, &event.payload);
            let value = HeaderValue::from_str(&signature).expect("base64 is a header value");
            headers.insert(HeaderName::from_static("webhook-signature"), value);
        }
        for (name, value) in &self.extras.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
            .body(Full::new(Bytes::copy_from_slice(&event.payload)))
            .map_err(|e| AlgorithmError::failed(format!("building the request: {e}")))
    }

    async fn call(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let response = self.hooks.client.request(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                let room = MAX_OUTPUT_BYTES - bytes.len();
                bytes.extend_from_slice(&data[..data.len().min(room)]);
                if bytes.len() == MAX_OUTPUT_BYTES {
                    break; // the rest is not read; the connection is not reused
                }
            }
        }
        Ok(Answer {
            status,
            retry_after,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// The outcome an answer stands for.
fn verdict(url: &Uri, answer: Answer) -> Outcome {
    let status = answer.status;
    if status.is_success() {
        return Ok(answer.body);
    }
    let retry = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    if retry {
        let reason = format!("{url} answered {status}: {}", cut(&answer.body, 200));
        return Err(match answer.retry_after {
            Some(after) => AlgorithmError::retry_after(reason, after),
            None => AlgorithmError::retry_later(reason),
        });
    }
    Err(AlgorithmError::failed(if answer.body.is_empty() {
        format!("{url} answered {status}")
    } else {
        answer.body
    }))
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

fn cut(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<Duration>, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after,
            body: body.into(),
        }
    }

    #[test]
    fn statuses_map_to_the_three_outcomes() {
        let url: Uri = "http://127.0.0.1:9/hook".parse().unwrap();
        assert_eq!(verdict(&url, answer(200, None, "done")), Ok("done".into()));
        assert_eq!(verdict(&url, answer(204, None, "")), Ok(String::new()));
        assert_eq!(
            verdict(&url, answer(422, None, "bad payload")),
            Err(AlgorithmError::failed("bad payload"))
        );
        assert_eq!(
            verdict(&url, answer(404, None, "")),
            Err(AlgorithmError::failed(
                "http://127.0.0.1:9/hook answered 404 Not Found"
            ))
        );
        assert_eq!(
            verdict(&url, answer(301, None, "")),
            Err(AlgorithmError::failed(
                "http://127.0.0.1:9/hook answered 301 Moved Permanently"
            ))
        );
        for status in [408, 429, 500, 503] {
            assert!(
                matches!(
                    verdict(&url, answer(status, None, "busy")),
                    Err(AlgorithmError::RetryLater { after: None, .. })
                ),
                "{status}"
            );
        }
        let wait = Some(Duration::from_secs(7));
        assert!(matches!(
            verdict(&url, answer(503, wait, "")),
            Err(AlgorithmError::RetryLater { after, .. }) if after == wait
        ));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: at once"
        );
        let soon = chrono::Utc::now() + chrono::TimeDelta::seconds(30);
        let wait = parse_retry_after(&soon.to_rfc2822()).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn targets_are_kind_equals_http_url() {
        let t: Target = "resize=http://127.0.0.1:8000/resize".parse().unwrap();
        assert_eq!(t.kind, "resize");
        assert_eq!(t.url, "http://127.0.0.1:8000/resize");
        assert!("resize".parse::<Target>().unwrap_err().contains("KIND=URL"));
        assert!("=http://x/".parse::<Target>().is_err());
        let t: Target = "a=https://hooks.example.com/a".parse().unwrap();
        assert_eq!(t.url.scheme_str(), Some("https"));
        assert!("a=ftp://x/".parse::<Target>().is_err());
        assert!("a=not a url".parse::<Target>().is_err());
    }
}
