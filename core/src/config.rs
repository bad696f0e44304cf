//! Configuration: every flag has an environment variable and a default, and
//! `ackflow-core --help` explains each one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::delivery::sender::SenderConfig;
use crate::ingest::IngestConfig;
use crate::retention::Retention;
use crate::validate::Limits;

/// ackflow core: stores events durably before answering, delivers them in
/// order to the processor with retransmission, stores one result per event.
#[derive(Debug, Clone, Parser)]
#[command(name = "ackflow-core", version, about, long_about = None)]
pub struct Config {
    /// Address of the REST API (publish, query, health).
    #[arg(long, env = "ACKFLOW_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Address of the gRPC services (Ingest, Delivery, Admin, health, reflection).
    #[arg(long, env = "ACKFLOW_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Store: postgres://… for PostgreSQL, sqlite:PATH for SQLite. Unset: SQLite at <data-dir>/ackflow.db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory for the default SQLite database.
    #[arg(long, env = "ACKFLOW_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// What is processed in seq order. key: events with the same key one at a time, in seq order, different keys at the same time (events without a key are ordered among themselves, as if they shared one key); global: one event at a time, in seq order.
    #[arg(long, env = "ACKFLOW_ORDERING", value_enum, default_value_t = Ordering::Key)]
    pub ordering: Ordering,

    /// In-flight window: most seqs sent but not yet acknowledged. Core and the processor each hold at most twice this many events (so at most 2 × window × the largest event, --max-request-bytes); under key ordering it must cover the processor's --concurrency several times over, since a slow event at the floor holds back sending past the window.
    #[arg(long, env = "ACKFLOW_WINDOW", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub window: u32,

    /// Ack timeouts (while the processor runs) after which the blocking event is parked as dead; 0 = never.
    #[arg(long, env = "ACKFLOW_MAX_DELIVER", default_value_t = 20)]
    pub max_deliver: u32,

    /// Processor lives an event may end while it is the only event in flight before it is parked as dead ("crashed the processor"). After a processor life ends with events in flight, they are sent one at a time until each is acked or crashes alone; 0 = never park.
    #[arg(long, env = "ACKFLOW_MAX_CRASHES", default_value_t = 3)]
    pub max_crashes: u32,

    /// Lowest retransmission timeout, in milliseconds.
    #[arg(long, env = "ACKFLOW_RTO_MIN_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub rto_min_ms: u64,

    /// Retransmission timeout before the first round-trip sample, in milliseconds.
    #[arg(long, env = "ACKFLOW_RTO_INITIAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub rto_initial_ms: u64,

    /// Longest wait between two sends of one event (backoff cap), in milliseconds.
    #[arg(long, env = "ACKFLOW_MAX_BACKOFF_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub max_backoff_ms: u64,

    /// Largest request body (REST) or message (gRPC), and so the largest payload, in bytes.
    #[arg(long, env = "ACKFLOW_MAX_REQUEST_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(64..=(64 << 20)))]
    pub max_request_bytes: u64,

    /// Most events in one POST /v1/events/batch.
    #[arg(long, env = "ACKFLOW_MAX_BATCH_EVENTS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_batch_events: u64,

    /// Group commit: most events in one transaction.
    #[arg(long, env = "ACKFLOW_COMMIT_MAX_EVENTS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub commit_max_events: u64,

    /// Group commit: how long a batch waits for more events after its first, in microseconds (0: commit what is queued at once).
    #[arg(long, env = "ACKFLOW_COMMIT_LINGER_US", default_value_t = 0)]
    pub commit_linger_us: u64,

    /// Publish requests that may wait for a commit (a REST batch, or a group of up to 256 requests of one PublishStream, counts as one); beyond that publishers get 503 / RESOURCE_EXHAUSTED.
    #[arg(long, env = "ACKFLOW_INGEST_QUEUE", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ingest_queue: u64,

    /// Recent events kept in memory so a processor that keeps up never reads the store.
    #[arg(long, env = "ACKFLOW_TAIL_EVENTS", default_value_t = 65_536)]
    pub tail_events: usize,

    /// Byte budget of the in-memory tail (payload bytes).
    #[arg(long, env = "ACKFLOW_TAIL_BYTES", default_value_t = 64 << 20)]
    pub tail_bytes: usize,

    /// How long resolved events are kept: an event with its result, older than this, is pruned (in small batches, off the hot path); unresolved and dead events are never pruned. An idempotency key is honoured as long as its event is kept, i.e. for this window. A number with a unit s, m, h or d (90s, 30m, 24h, 7d), or 0 / forever to keep everything.
    #[arg(long, env = "ACKFLOW_RETENTION", default_value = "7d", value_parser = Retention::parse)]
    pub retention: Retention,

    /// Bearer token the processor must present on Delivery.Subscribe.
    #[arg(long, env = "ACKFLOW_PROCESSOR_TOKEN", hide_env_values = true)]
    pub processor_token: Option<String>,

    /// Bearer token required on the Admin service (the monitor).
    #[arg(long, env = "ACKFLOW_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Allow binding a non-loopback address without tokens.
    #[arg(long, env = "ACKFLOW_INSECURE")]
    pub insecure: bool,

    /// PEM certificate chain (leaf first): serve gRPC and REST over TLS. Needs --tls-key.
    #[arg(long, env = "ACKFLOW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "ACKFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Start even when the store's settings can lose acknowledged publishes on a crash or power cut (PostgreSQL fsync, synchronous_commit or full_page_writes off; SQLite below synchronous=FULL or not in WAL mode). Without it core refuses to start and names the setting; with it core warns at start, in /readyz and with ackflow_store_durable 0.
    #[arg(long, env = "ACKFLOW_ALLOW_UNSAFE_DURABILITY")]
    pub allow_unsafe_durability: bool,

    /// Breaks the protocol on purpose: moves the acked floor over every event
    /// as soon as it is sent, without waiting for a result. Exists only so the
    /// chaos checker can prove it detects loss (a negative control).
    #[arg(long, hide = true)]
    pub unsafe_floor_on_send: bool,

    /// Breaks durability on purpose: SQLite writes go through sqlx's
    /// transaction bookkeeping and keep their connection after an error, as
    /// ackflow once did; a full disk then loses acknowledged events. Exists
    /// only so the storage-fault tests can prove they detect that loss.
    #[arg(long, hide = true)]
    pub unsafe_sqlx_transactions: bool,

    /// Log format on stderr: pretty (for people) or json (one object per line, for collectors). Filter with RUST_LOG.
    #[arg(long, env = "ACKFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Longest time a graceful shutdown may take before core exits anyway, in seconds.
    #[arg(long, env = "ACKFLOW_SHUTDOWN_TIMEOUT_S", default_value_t = 10)]
    pub shutdown_timeout_s: u64,
}

/// What is processed in seq order (`--ordering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ordering {
    // Per key; events without a key are ordered among themselves. (Plain
    // comments: doc comments here would turn --help into its long form.)
    Key,
    // Everything, one event at a time.
    Global,
}

impl Ordering {
    pub fn to_pb(self) -> ackflow_proto::v1::Ordering {
        match self {
            Self::Key => ackflow_proto::v1::Ordering::Key,
            Self::Global => ackflow_proto::v1::Ordering::Global,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogFormat {
    /// Initialises `tracing` on stderr with `RUST_LOG` (default `info`).
    pub fn init(self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match self {
            LogFormat::Pretty => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }
}

impl Config {
    /// The configuration a test or the demo starts from: defaults, with
    /// ports chosen by the OS.
    pub fn for_tests(database_url: Option<String>, data_dir: PathBuf) -> Self {
        let mut config = Config::parse_from(["ackflow-core"]);
        config.http_addr = "127.0.0.1:0".parse().expect("literal address");
        config.grpc_addr = "127.0.0.1:0".parse().expect("literal address");
        config.database_url = database_url;
        config.data_dir = data_dir;
        config
    }

    /// True when TLS is configured (both --tls-cert and --tls-key).
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// The database URL in force: `--database-url`, else SQLite in the data dir.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!("sqlite:{}", self.data_dir.join("ackflow.db").display()),
        }
    }

    /// Checks combinations clap cannot.
    pub fn check(&self) -> Result<(), String> {
        let public = |addr: &SocketAddr| !addr.ip().is_loopback();
        if !self.insecure
            && public(&self.grpc_addr)
            && (self.processor_token.is_none() || self.admin_token.is_none())
        {
            return Err(format!(
                "--grpc-addr {} is not a loopback address: set --processor-token and --admin-token (or pass --insecure)",
                self.grpc_addr
            ));
        }
        if !self.insecure && public(&self.http_addr) && self.admin_token.is_none() {
            return Err(format!(
                "--http-addr {} is not a loopback address: set --admin-token (or pass --insecure)",
                self.http_addr
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together: set both or neither".into());
        }
        for (flag, token) in [
            ("--processor-token", &self.processor_token),
            ("--admin-token", &self.admin_token),
        ] {
            if token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(format!("{flag} must be at least 16 characters"));
            }
        }
        Ok(())
    }

    pub fn sender(&self) -> SenderConfig {
        SenderConfig {
            window: self.window,
            max_deliver: self.max_deliver,
            rto_initial: Duration::from_millis(self.rto_initial_ms),
            rto_min: Duration::from_millis(self.rto_min_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            max_crashes: self.max_crashes,
        }
    }

    pub fn ingest(&self) -> IngestConfig {
        IngestConfig {
            max_batch: self.commit_max_events as usize,
            linger: Duration::from_micros(self.commit_linger_us),
            queue: self.ingest_queue as usize,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.max_request_bytes as usize,
            max_batch_events: self.max_batch_events as usize,
        }
    }
}
