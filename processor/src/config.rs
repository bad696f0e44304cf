//! Processor configuration: flags with environment fallbacks and defaults.

use ackflow_proto::token::{self, Token};
use clap::Parser;

/// ackflow processor: receives events from core in order, runs the
/// algorithm chosen by each event's kind, and acks with the result.
#[derive(Debug, Clone, Parser)]
#[command(name = "ackflow-processor", version, about, long_about = None)]
pub struct Config {
    /// Core's gRPC address. Several, comma-separated, for cores sharing one PostgreSQL database: the processor tries them in turn and stays with the one that leads (a standby refuses it and names the leader).
    #[arg(long, env = "ACKFLOW_CORE", default_value = "http://127.0.0.1:50051")]
    pub core: String,

    /// Bearer token for Delivery.Subscribe (core's --processor-token). Sent only over TLS (an https:// --core) or to a loopback address.
    #[arg(
        long,
        env = "ACKFLOW_PROCESSOR_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<Token>,

    /// File holding --token (one trailing newline is ignored), so the token is in no process listing or environment.
    #[arg(long, env = "ACKFLOW_PROCESSOR_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,

    /// PEM certificate of the CA that signed core's TLS certificate (a private CA); needs an https:// --core. Without it an https:// core is verified against the system's trusted roots (SSL_CERT_FILE / SSL_CERT_DIR when set).
    #[arg(long, env = "ACKFLOW_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Name core's certificate must carry (default: the host of --core).
    #[arg(long, env = "ACKFLOW_TLS_DOMAIN")]
    pub tls_domain: Option<String>,

    /// Largest window this processor accepts; its reorder buffer holds at most twice this, its ack cache twice this plus --concurrency.
    #[arg(long, env = "ACKFLOW_PROCESSOR_WINDOW", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub window: u32,

    /// Identifies this processor life in core's logs and the monitor (default: random).
    #[arg(long, env = "ACKFLOW_PROCESSOR_ID")]
    pub processor_id: Option<String>,

    /// Fault injection: fraction [0, 1] of incoming events dropped.
    #[arg(long, env = "ACKFLOW_FAULT_DROP_EVENTS", default_value_t = 0.0, value_parser = fraction)]
    pub drop_events: f64,

    /// Fault injection: fraction [0, 1] of outgoing acks dropped.
    #[arg(long, env = "ACKFLOW_FAULT_DROP_ACKS", default_value_t = 0.0, value_parser = fraction)]
    pub drop_acks: f64,

    /// Fault injection: fraction [0, 1] of incoming events handled twice.
    #[arg(long, env = "ACKFLOW_FAULT_DUPLICATE", default_value_t = 0.0, value_parser = fraction)]
    pub duplicate: f64,

    /// Fault injection: delay before each incoming batch is handled, in milliseconds. At two thirds of core's --processor-silence-ms or more, the processor takes its own delay for a stall: it holds its starts and reconnects.
    #[arg(long, env = "ACKFLOW_FAULT_DELAY_MS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub delay_ms: u32,

    /// Fault injection: cut the stream every this many seconds (0 = never).
    #[arg(long, env = "ACKFLOW_FAULT_CUT_EVERY_S", default_value_t = 0)]
    pub cut_every_s: u32,

    /// Serve Prometheus metrics at http://ADDR/metrics (off when unset).
    #[arg(long, env = "ACKFLOW_PROCESSOR_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Log format on stderr: pretty or json. Filter with RUST_LOG. Built with the `otlp` feature, trace spans go to OTEL_EXPORTER_OTLP_ENDPOINT when it is set.
    #[arg(long, env = "ACKFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Most algorithm calls in progress at once, at most one per lane (per key under core's `--ordering key`; one lane in all under `--ordering global`). A call that waits (sleep, I/O) holds no thread.
    #[arg(long, env = "ACKFLOW_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub concurrency: u32,

    /// Append two lines per processed event (`life seq attempt start time_us` when it starts, `life seq attempt end time_us` when it ends) and `life 0 0 hold time_us` whenever starts are held to this file, times in microseconds of the wall clock; used by the end-to-end tests to check processing order and that no key runs twice at once, in one processor or in two.
    #[arg(long, env = "ACKFLOW_PROCESSED_LOG")]
    pub processed_log: Option<std::path::PathBuf>,

    /// Process events of KIND by posting them to an HTTP endpoint: KIND=URL (http:// or https://), repeatable; replaces a built-in of that kind. The contract (request, headers, which answers mean ok, failed or retry later) is in the README under "Process your own events".
    #[arg(long = "webhook", value_name = "KIND=URL")]
    pub webhooks: Vec<crate::webhook::Target>,

    /// A webhook call that has not answered within this many milliseconds (connecting included) is given up and the event retried later.
    #[arg(long, env = "ACKFLOW_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub webhook_timeout_ms: u64,

    /// Most calls in progress per webhook. Events of a webhook at its cap wait in their lanes without holding a --concurrency slot, so a slow or hanging endpoint holds back its own kind only.
    #[arg(long, env = "ACKFLOW_WEBHOOK_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub webhook_concurrency: u32,

    /// PEM file of CA certificates that https:// webhooks may also be signed by (a private CA), besides the system's trusted roots (SSL_CERT_FILE / SSL_CERT_DIR when set).
    #[arg(long, env = "ACKFLOW_WEBHOOK_CA", value_name = "PATH")]
    pub webhook_ca: Option<std::path::PathBuf>,

    /// Sign the calls of webhook KIND with the secret in FILE (Standard Webhooks: headers webhook-id, webhook-timestamp, webhook-signature): `whsec_<base64>`, two on separate lines during a rotation (both sign). KIND=PATH, repeatable. Never on the command line itself.
    #[arg(long = "webhook-secret-file", value_name = "KIND=PATH")]
    pub webhook_secret_files: Vec<crate::webhook::KindValue>,

    /// As --webhook-secret-file, the secret read from the environment variable VAR (two separated by a space during a rotation): KIND=VAR, repeatable.
    #[arg(long = "webhook-secret-env", value_name = "KIND=VAR")]
    pub webhook_secret_envs: Vec<crate::webhook::KindValue>,

    /// Send header NAME, its value read from FILE (one trailing newline ignored), with every call of webhook KIND, e.g. KIND=Authorization=/run/secrets/hook-token. Repeatable; values are never logged.
    #[arg(long = "webhook-header-file", value_name = "KIND=NAME=PATH")]
    pub webhook_header_files: Vec<crate::webhook::HeaderFile>,

    /// Register the `crash` algorithm, which aborts the processor process: for tests and the demo, to show core parking an event that crashes the processor (--max-crashes). Never in production.
    #[arg(long, env = "ACKFLOW_ENABLE_CRASH")]
    pub enable_crash: bool,

    /// Disable duplicate detection (negative control for the checker only).
    #[arg(long, hide = true)]
    pub no_dedup: bool,

    /// Ignore core's ordering: every event runs as soon as it arrives, alongside any other (negative control for the checker only).
    #[arg(long, hide = true)]
    pub unsafe_ignore_order: bool,

    /// Never hold starts (`hold.rs` off): a processor that lost its place to a standby goes on with what it holds (negative control for the checker only).
    #[arg(long, hide = true)]
    pub unsafe_no_hold: bool,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction between 0 and 1"))
    }
}

impl Config {
    /// Defaults, pointed at `core`.
    pub fn for_core(core: String) -> Self {
        let mut config = Config::parse_from(["ackflow-processor"]);
        config.core = core;
        config
    }

    /// Each URL of `--core`, in order.
    pub fn cores(&self) -> Vec<String> {
        ackflow_proto::client::leader::urls(&self.core)
    }

    /// Adds TLS to `endpoint` of `core` (one of [`Config::cores`]) as
    /// configured: an https:// URL with `--tls-ca` or the system roots, or
    /// nothing for http://.
    pub fn tls(
        &self,
        core: &str,
        endpoint: tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Endpoint, ackflow_proto::client::tls::TlsConfigError> {
        ackflow_proto::client::tls::configure(
            endpoint,
            core,
            self.tls_ca.as_deref(),
            self.tls_domain.as_deref(),
        )
    }

    /// The token to send, read from --token-file when that is set, once
    /// it is known that it can travel safely: over TLS, or in clear text to
    /// a loopback address only.
    pub fn token(&self) -> anyhow::Result<Option<Token>> {
        let token =
            token::from_flag_or_file("--token", self.token.as_ref(), self.token_file.as_deref())
                .map_err(anyhow::Error::msg)?;
        if token.is_some() {
            for core in self.cores() {
                ackflow_proto::client::tls::check_token_transport(&core)?;
            }
        }
        Ok(token)
    }

    /// What each `--webhook` sends besides the contract's headers, read
    /// from the secret and header files and variables; an error for one
    /// that names no `--webhook` kind, or that cannot be read. Errors never
    /// contain a secret or a header value.
    pub fn webhook_extras(&self) -> anyhow::Result<Vec<crate::webhook::Extras>> {
        use anyhow::Context;
        let kinds: Vec<&str> = self.webhooks.iter().map(|t| t.kind.as_str()).collect();
        let known = |flag: &str, kind: &str| {
            anyhow::ensure!(
                kinds.contains(&kind),
                "{flag} {kind}=…: no --webhook {kind}=URL"
            );
            Ok(())
        };
        let mut extras = vec![crate::webhook::Extras::default(); kinds.len()];
        let index = |kind: &str| kinds.iter().position(|k| *k == kind).expect("checked");
        for flag in &self.webhook_secret_files {
            known("--webhook-secret-file", &flag.kind)?;
            let text = std::fs::read_to_string(&flag.value).with_context(|| {
                format!(
                    "--webhook-secret-file {}: reading {}",
                    flag.kind, flag.value
                )
            })?;
            let secrets = crate::signing::Secrets::parse(&text).map_err(|e| {
                anyhow::anyhow!("--webhook-secret-file {}={}: {e}", flag.kind, flag.value)
            })?;
            extras[index(&flag.kind)].secrets = Some(secrets);
        }
        for flag in &self.webhook_secret_envs {
            known("--webhook-secret-env", &flag.kind)?;
            let text = std::env::var(&flag.value).map_err(|_| {
                anyhow::anyhow!(
                    "--webhook-secret-env {}: ${} is not set",
                    flag.kind,
                    flag.value
                )
            })?;
            let secrets = crate::signing::Secrets::parse(&text).map_err(|e| {
                anyhow::anyhow!("--webhook-secret-env {}=${}: {e}", flag.kind, flag.value)
            })?;
            extras[index(&flag.kind)].secrets = Some(secrets);
        }
        for flag in &self.webhook_header_files {
            known("--webhook-header-file", &flag.kind)?;
            let text = std::fs::read_to_string(&flag.path).with_context(|| {
                format!(
                    "--webhook-header-file {}={}: reading {}",
                    flag.kind,
                    flag.name,
                    flag.path.display()
                )
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            let mut value = hyper::header::HeaderValue::from_str(text).map_err(|_| {
                anyhow::anyhow!(
                    "--webhook-header-file {}={}: {} is not a header value (one line of visible text)",
                    flag.kind,
                    flag.name,
                    flag.path.display()
                )
            })?;
            value.set_sensitive(true);
            extras[index(&flag.kind)]
                .headers
                .push((flag.name.clone(), value));
        }
        Ok(extras)
    }

    /// Fault settings from the flags.
    pub fn faults(&self) -> ackflow_proto::v1::Faults {
        ackflow_proto::v1::Faults {
            drop_events: self.drop_events,
            drop_acks: self.drop_acks,
            duplicate: self.duplicate,
            delay_ms: self.delay_ms,
            cut_every_s: self.cut_every_s,
        }
    }
}
