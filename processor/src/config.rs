//! Processor configuration: flags with environment fallbacks and defaults.

use ackflow_proto::token::{self, Token};
use clap::Parser;

/// ackflow processor: receives events from core in order, runs the
/// algorithm chosen by each event's kind, and acks with the result.
#[derive(Debug, Clone, Parser)]
#[command(name = "ackflow-processor", version, about, long_about = None)]
pub struct Config {
    /// Core's gRPC address.
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

    /// Fault injection: delay before each incoming batch is handled, in milliseconds.
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

    /// Append two lines per processed event (`life seq attempt start` when it starts, `life seq attempt end` when it ends) to this file; used by the end-to-end tests to check processing order and that no key runs twice at once.
    #[arg(long, env = "ACKFLOW_PROCESSED_LOG")]
    pub processed_log: Option<std::path::PathBuf>,

    /// Process events of KIND by posting them to an HTTP endpoint: KIND=URL (http:// only), repeatable; replaces a built-in of that kind. The contract (request, headers, which answers mean ok, failed or retry later) is in the README under "Process your own events".
    #[arg(long = "webhook", value_name = "KIND=URL")]
    pub webhooks: Vec<crate::webhook::Target>,

    /// A webhook call that has not answered within this many milliseconds (connecting included) is given up and the event retried later.
    #[arg(long, env = "ACKFLOW_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub webhook_timeout_ms: u64,

    /// Register the `crash` algorithm, which aborts the processor process: for tests and the demo, to show core parking an event that crashes the processor (--max-crashes). Never in production.
    #[arg(long, env = "ACKFLOW_ENABLE_CRASH")]
    pub enable_crash: bool,

    /// Disable duplicate detection (negative control for the checker only).
    #[arg(long, hide = true)]
    pub no_dedup: bool,

    /// Ignore core's ordering: every event runs as soon as it arrives, alongside any other (negative control for the checker only).
    #[arg(long, hide = true)]
    pub unsafe_ignore_order: bool,
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

    /// Adds TLS to `endpoint` as configured: an https:// `--core` with
    /// `--tls-ca` or the system roots, or nothing for http://.
    pub fn tls(
        &self,
        endpoint: tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Endpoint, ackflow_proto::client::tls::TlsConfigError> {
        ackflow_proto::client::tls::configure(
            endpoint,
            &self.core,
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
            ackflow_proto::client::tls::check_token_transport(&self.core)?;
        }
        Ok(token)
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
