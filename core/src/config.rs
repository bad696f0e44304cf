//! Configuration: every flag has an environment variable and a default, and
//! `ackflow-core --help` explains each one.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ackflow_proto::token::{self, Token};
use clap::Parser;

use crate::http::HttpLimits;
use crate::ingest::IngestConfig;
use crate::retention::Retention;
use crate::validate::Limits;
use ackflow_proto::protocol::sender::SenderConfig;

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

    /// In-flight window: most seqs sent but not yet acknowledged. Core and the processor each hold at most twice this many events, and core at most --window-bytes of their payloads; under key ordering it must cover the processor's --concurrency several times over, since a slow event at the floor holds back sending past the window.
    #[arg(long, env = "ACKFLOW_WINDOW", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub window: u32,

    /// Most payload bytes in flight (sent and their results not stored yet); with large events it binds before --window. An event larger than it is sent alone.
    #[arg(long, env = "ACKFLOW_WINDOW_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..=(16u64 << 30)))]
    pub window_bytes: u64,

    /// Deliver events of this kind at most once (repeatable, or a comma-separated list): sent once, never again, not even after a crash; where an at-least-once event would be sent again (its processor's stream ended, core restarted, the algorithm asked to retry it later) it is abandoned instead: stored with result status "abandoned" and counted in ackflow_results_total{status="abandoned"}. For kinds where a repeat is worse than a gap. Every other kind is delivered at least once.
    #[arg(long = "at-most-once", value_name = "KIND", env = "ACKFLOW_AT_MOST_ONCE", value_delimiter = ',', value_parser = crate::validate::kind)]
    pub at_most_once: Vec<String>,

    /// Ack timeouts (while the processor runs) after which the blocking event is parked as dead; 0 = never.
    #[arg(long, env = "ACKFLOW_MAX_DELIVER", default_value_t = 20)]
    pub max_deliver: u32,

    /// Let Admin.SetFaults turn on the processor's fault injection (dropped events and acks, duplicates, delays, cut streams): for demos and tests. Off, a request that sets any fault is refused with FAILED_PRECONDITION (clearing them is always allowed); the processor's own fault flags are unaffected.
    #[arg(long, env = "ACKFLOW_ALLOW_FAULT_INJECTION")]
    pub allow_fault_injection: bool,

    /// Processor lives an event may end while it is the only event in flight before it is parked as dead ("crashed the processor"). After a processor life ends with events in flight, they are all sent again at once; if another life ends before they have results, they go in batches of half what was in flight then (bisection) until each has a result or crashes alone; 0 = never park.
    #[arg(long, env = "ACKFLOW_MAX_CRASHES", default_value_t = 3)]
    pub max_crashes: u32,

    /// Partitions the keys are spread over when several processors share the work under key ordering (a partition is a stable hash of the key; unkeyed events are one partition). Each connected processor owns a share, assigned by rendezvous hashing so that a join or a leave moves as few as possible; a partition moves only once its previous processor has none of its events unacknowledged. More partitions spread the work more evenly; the count must stay the same across restarts for keys to keep their processor.
    #[arg(long, env = "ACKFLOW_PARTITIONS", default_value_t = ackflow_proto::protocol::partitions::DEFAULT_PARTITIONS, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub partitions: u32,

    /// A processor whose work another could take (a hot standby under global ordering, or another connected processor under key ordering) loses its stream when core has heard nothing from it for this long, in milliseconds (a running processor reports every 200 ms, paused or not; a frozen or cut-off one says nothing). Its stream is ended, and its events in flight go to the others at once; that end is not counted as a crash. With no other processor to take its work, the stream is kept until HTTP/2 keepalive ends it (about 10 s).
    #[arg(long, env = "ACKFLOW_PROCESSOR_SILENCE_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(500..=600_000))]
    pub processor_silence_ms: u64,

    /// When a processor's stream ends (a crash, or a reset connection) while hot standbys wait (global ordering) or other processors are connected (key ordering), they wait this long, in milliseconds, for the same processor to come back before one takes over (under key ordering: before its partitions and its unacknowledged events move to the others). One that comes back in time is the same life: its events in flight are sent again, no crash counted. A standby that takes over counts the end as a crash (core cannot tell a reset from a kill): every event in flight becomes a crash suspect. A processor cut off for its silence (--processor-silence-ms) is not waited for, and its end is not counted as a crash.
    #[arg(long, env = "ACKFLOW_PROCESSOR_RETURN_GRACE_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub processor_return_grace_ms: u64,

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

    /// REST: most connections open at once; one more is answered 503 (Retry-After: 1) and closed. Each takes a file descriptor: keep the process's limit (ulimit -n) above it.
    #[arg(long, env = "ACKFLOW_HTTP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,

    /// REST: seconds a client may take to send a request's header (also the longest an idle keep-alive connection stays open); then the connection is closed.
    #[arg(long, env = "ACKFLOW_HTTP_HEADER_TIMEOUT_S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout_s: u64,

    /// REST: seconds a client may take to send a request's body once its header is in; then it is answered 408 and nothing is stored.
    #[arg(long, env = "ACKFLOW_HTTP_BODY_TIMEOUT_S", default_value_t = crate::rest::DEFAULT_BODY_TIMEOUT_S, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_body_timeout_s: u64,

    /// gRPC: most concurrent streams (calls) on one HTTP/2 connection; a client opening more waits for one to end (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "ACKFLOW_GRPC_MAX_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub grpc_max_streams: u32,

    /// Most Admin.Watch streams open at once (all clients together); one more is refused with RESOURCE_EXHAUSTED until one closes.
    #[arg(long, env = "ACKFLOW_MAX_WATCHERS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_watchers: u32,

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

    /// Bytes (payloads, keys, kinds, idempotency keys) that publish requests waiting for or in a commit may hold together; a request that would take them past it gets 503 / RESOURCE_EXHAUSTED like a full queue (a PublishStream waits for room instead). At least --max-request-bytes, so one largest request always fits.
    #[arg(long, env = "ACKFLOW_INGEST_QUEUE_BYTES", default_value_t = 256 << 20, value_parser = clap::value_parser!(u64).range(64..=(4 << 30) - 1))]
    pub ingest_queue_bytes: u64,

    /// Recent events kept in memory so a processor that keeps up never reads the store.
    #[arg(long, env = "ACKFLOW_TAIL_EVENTS", default_value_t = 65_536)]
    pub tail_events: usize,

    /// Byte budget of the in-memory tail (payload bytes).
    #[arg(long, env = "ACKFLOW_TAIL_BYTES", default_value_t = 64 << 20)]
    pub tail_bytes: usize,

    /// How long resolved events are kept: an event with its result, older than this, is pruned (in small batches, off the hot path); unresolved and dead events are never pruned. An idempotency key is honoured as long as its event is kept, i.e. for this window. A number with a unit s, m, h or d (90s, 30m, 24h, 7d), or 0 / forever to keep everything.
    #[arg(long, env = "ACKFLOW_RETENTION", default_value = "7d", value_parser = Retention::parse)]
    pub retention: Retention,

    /// Bearer token publishers must present on every REST route but /healthz, /readyz and /metrics (publishing and reading events and results) and on the gRPC Ingest service. Unset: anyone who reaches the ports may publish and read.
    #[arg(
        long,
        env = "ACKFLOW_PUBLISH_TOKEN",
        hide_env_values = true,
        conflicts_with = "publish_token_file"
    )]
    pub publish_token: Option<Token>,

    /// File holding --publish-token (one trailing newline is ignored), so the token is in no process listing or environment.
    #[arg(long, env = "ACKFLOW_PUBLISH_TOKEN_FILE", value_name = "PATH")]
    pub publish_token_file: Option<PathBuf>,

    /// Bearer token the processor must present on Delivery.Subscribe. Unset: anyone who reaches the gRPC port may take the event stream and store results.
    #[arg(
        long,
        env = "ACKFLOW_PROCESSOR_TOKEN",
        hide_env_values = true,
        conflicts_with = "processor_token_file"
    )]
    pub processor_token: Option<Token>,

    /// File holding --processor-token (one trailing newline is ignored).
    #[arg(long, env = "ACKFLOW_PROCESSOR_TOKEN_FILE", value_name = "PATH")]
    pub processor_token_file: Option<PathBuf>,

    /// Bearer token required on the Admin service (the monitor: watch, pause, resume, faults, requeue). Unset: anyone who reaches the gRPC port may use it.
    #[arg(
        long,
        env = "ACKFLOW_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<Token>,

    /// File holding --admin-token (one trailing newline is ignored).
    #[arg(long, env = "ACKFLOW_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,

    /// Serve on a non-loopback --http-addr or --grpc-addr even though a service there has no token, so anyone who reaches the port may use it (core warns at start). Without it core refuses to start and names the missing token flags. Tokens that are set are required either way.
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

    /// Breaks ordering on purpose: a partition moving to another processor
    /// sends its events there at once, while the previous processor may still
    /// be processing some of them. Exists only so the chaos checker can prove
    /// it detects keys processed out of order (a negative control).
    #[arg(long, hide = true)]
    pub unsafe_handoff_without_drain: bool,

    /// Breaks delivery on purpose: after a request refused in a group commit
    /// (an idempotency conflict), the events committed beside it are paired
    /// with the wrong seqs in memory, as ackflow once did, so the processor
    /// gets one event's seq with another's payload. Exists only so the
    /// chaos checker can prove it detects that (a negative control).
    #[arg(long, hide = true)]
    pub unsafe_pair_after_refusal: bool,

    /// Breaks leadership on purpose: this core never checks its epoch. Its
    /// writes are not fenced, and it neither renews its lease nor learns
    /// that another core took over, so what it commits after a takeover
    /// still lands (and is acknowledged). Exists only so the leadership
    /// tests can prove they detect that (a negative control).
    #[arg(long, hide = true)]
    pub unsafe_no_fence: bool,

    /// Breaks durability on purpose: SQLite writes go through sqlx's
    /// transaction bookkeeping and keep their connection after an error, as
    /// ackflow once did; a full disk then loses acknowledged events. Exists
    /// only so the storage-fault tests can prove they detect that loss.
    #[arg(long, hide = true)]
    pub unsafe_sqlx_transactions: bool,

    /// Log format on stderr: pretty (for people) or json (one object per line, for collectors). Filter with RUST_LOG. Built with the `otlp` feature, trace spans go to OTEL_EXPORTER_OTLP_ENDPOINT when it is set.
    #[arg(long, env = "ACKFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Longest time a graceful shutdown may take before core exits anyway, in seconds.
    #[arg(long, env = "ACKFLOW_SHUTDOWN_TIMEOUT_S", default_value_t = 10)]
    pub shutdown_timeout_s: u64,

    /// PostgreSQL: this core's name among the cores sharing the database (one leads, the others stand by). Must differ between cores; a core restarted under the same name takes its lease back at once instead of waiting for it to lapse. Unset: <hostname>:<port of --http-addr>.
    #[arg(long, env = "ACKFLOW_CORE_ID")]
    pub core_id: Option<String>,

    /// PostgreSQL: the leader's lease, in milliseconds. The leader renews it four times per lease; when it lapses (the leader died or froze), a standby takes over. Shorter fails over sooner. A leader whose renewals fail for this long stops sending events until one gets through; it exits once another core has taken over.
    #[arg(long, env = "ACKFLOW_LEASE_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(200..=600_000))]
    pub lease_ms: u64,

    /// The REST URL a standby names when it sends clients to this core once it leads. Unset: http(s)://<--http-addr> (with the hostname for an unspecified address such as 0.0.0.0).
    #[arg(long, env = "ACKFLOW_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,

    /// The gRPC URL a standby names when it sends processors, services and the monitor to this core once it leads. Unset: http(s)://<--grpc-addr>, as for --advertise-http.
    #[arg(long, env = "ACKFLOW_ADVERTISE_GRPC")]
    pub advertise_grpc: Option<String>,
}

/// True for 127.0.0.0/8 and ::1 (also written as an IPv4-mapped IPv6
/// address): only this machine can connect.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
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

impl Config {
    /// A core for this machine only: every default, listening on loopback
    /// ports the OS chooses. What the demo and the tests start from.
    pub fn local(database_url: Option<String>, data_dir: PathBuf) -> Self {
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

    /// Replaces each `--*-token-file` by the token read from it, so the
    /// rest of core sees only tokens. Errors name the flag and the file.
    pub fn load_token_files(&mut self) -> Result<(), String> {
        for (flag, token, file) in [
            (
                "--publish-token",
                &mut self.publish_token,
                &mut self.publish_token_file,
            ),
            (
                "--processor-token",
                &mut self.processor_token,
                &mut self.processor_token_file,
            ),
            (
                "--admin-token",
                &mut self.admin_token,
                &mut self.admin_token_file,
            ),
        ] {
            let Some(path) = file.take() else { continue };
            if token.is_some() {
                return Err(format!(
                    "{flag} and {flag}-file exclude each other: set one"
                ));
            }
            *token = token::from_flag_or_file(flag, None, Some(&path))?;
        }
        Ok(())
    }

    /// Each listener on a non-loopback address whose services lack a
    /// token, with the token flags they lack: REST serves publishers; gRPC
    /// serves publishers (Ingest), the processor (Delivery) and the monitor
    /// (Admin).
    pub fn unguarded(&self) -> Vec<String> {
        let has = |token: &Option<Token>, file: &Option<PathBuf>| token.is_some() || file.is_some();
        let publish = (
            "--publish-token",
            has(&self.publish_token, &self.publish_token_file),
        );
        let processor = (
            "--processor-token",
            has(&self.processor_token, &self.processor_token_file),
        );
        let admin = (
            "--admin-token",
            has(&self.admin_token, &self.admin_token_file),
        );
        let mut unguarded = Vec::new();
        for (flag, addr, roles) in [
            ("--http-addr", self.http_addr, &[publish][..]),
            (
                "--grpc-addr",
                self.grpc_addr,
                &[publish, processor, admin][..],
            ),
        ] {
            if is_loopback(addr.ip()) {
                continue;
            }
            let missing: Vec<&str> = roles
                .iter()
                .filter(|(_, set)| !set)
                .map(|(flag, _)| *flag)
                .collect();
            if !missing.is_empty() {
                unguarded.push(format!("{flag} {addr} needs {}", missing.join(", ")));
            }
        }
        unguarded
    }

    /// Checks combinations clap cannot.
    pub fn check(&self) -> Result<(), String> {
        let unguarded = self.unguarded();
        if !self.insecure && !unguarded.is_empty() {
            return Err(format!(
                "refusing to serve a service without a token on a non-loopback address: {}. \
                 Set these tokens (or their -file forms), listen on a loopback address, or \
                 start with --insecure to let anyone who reaches the port use those services",
                unguarded.join("; ")
            ));
        }
        if self.ingest_queue_bytes < self.max_request_bytes {
            return Err(format!(
                "--ingest-queue-bytes ({}) is below --max-request-bytes ({}): one largest \
                 request would never fit in the ingest queue; raise --ingest-queue-bytes",
                self.ingest_queue_bytes, self.max_request_bytes
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together: set both or neither".into());
        }
        for (flag, token) in [
            ("--publish-token", &self.publish_token),
            ("--processor-token", &self.processor_token),
            ("--admin-token", &self.admin_token),
        ] {
            let Some(token) = token else { continue };
            if let Some(why) = token.defect() {
                return Err(format!("{flag} {why}"));
            }
            if token.expose().len() < 16 {
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
            queue_bytes: self.ingest_queue_bytes as usize,
            unsafe_pair_after_refusal: self.unsafe_pair_after_refusal,
        }
    }

    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.http_max_connections as usize,
            header_timeout: Duration::from_secs(self.http_header_timeout_s),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.max_request_bytes as usize,
            max_batch_events: self.max_batch_events as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["ackflow-core"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("valid flags")
    }

    #[test]
    fn the_ingest_queue_holds_at_least_one_largest_request() {
        assert!(config(&["--ingest-queue-bytes", "1048576"]).check().is_ok());
        let err = config(&["--ingest-queue-bytes", "1048575"])
            .check()
            .unwrap_err();
        assert!(
            err.contains("--ingest-queue-bytes (1048575) is below --max-request-bytes (1048576)"),
            "{err}"
        );
        assert!(
            config(&[
                "--ingest-queue-bytes",
                "2048",
                "--max-request-bytes",
                "2048"
            ])
            .check()
            .is_ok()
        );
    }

    #[test]
    fn beyond_loopback_every_role_there_needs_a_token() {
        let token = "a-token-of-sixteen-chars";
        // Loopback (127.0.0.0/8, ::1) needs none.
        assert!(config(&[]).check().is_ok());
        assert!(
            config(&["--http-addr", "127.1.2.3:1", "--grpc-addr", "[::1]:2"])
                .check()
                .is_ok()
        );
        // REST serves publishers only.
        let err = config(&["--http-addr", "0.0.0.0:8080"])
            .check()
            .unwrap_err();
        assert!(
            err.contains("--http-addr 0.0.0.0:8080 needs --publish-token.")
                && !err.contains("--grpc-addr"),
            "{err}"
        );
        // gRPC serves all three roles; only the missing ones are named.
        let err = config(&["--grpc-addr", "[::]:50051", "--admin-token", token])
            .check()
            .unwrap_err();
        assert!(
            err.contains("--grpc-addr [::]:50051 needs --publish-token, --processor-token.")
                && err.contains("--insecure"),
            "{err}"
        );
        let everything = [
            "--http-addr",
            "0.0.0.0:8080",
            "--grpc-addr",
            "0.0.0.0:50051",
            "--publish-token",
            "publish-token-0123456789",
            "--processor-token",
            "processor-token-0123456789",
            "--admin-token-file",
            "/run/secrets/admin",
        ];
        assert!(config(&everything).check().is_ok());
        // --insecure is the explicit override; unguarded() still tells.
        let insecure = config(&["--http-addr", "10.0.0.1:8080", "--insecure"]);
        assert!(insecure.check().is_ok());
        assert_eq!(insecure.unguarded().len(), 1);
    }

    #[test]
    fn tokens_are_checked_without_being_quoted() {
        let err = config(&["--publish-token", "short"]).check().unwrap_err();
        assert_eq!(err, "--publish-token must be at least 16 characters");
        let err = config(&["--admin-token", "with a space in it, long"])
            .check()
            .unwrap_err();
        assert!(
            err.starts_with("--admin-token must be visible ASCII"),
            "{err}"
        );
        assert!(!err.contains("space in it"), "{err}");
        // A flag and its -file form exclude each other.
        assert!(
            Config::try_parse_from([
                "ackflow-core",
                "--processor-token",
                "processor-token-0123456789",
                "--processor-token-file",
                "/x",
            ])
            .is_err()
        );
    }

    #[test]
    fn token_files_replace_their_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("publish");
        std::fs::write(&file, "publish-token-0123456789\n").unwrap();
        let mut config = config(&["--publish-token-file", file.to_str().unwrap()]);
        config.load_token_files().unwrap();
        assert_eq!(
            config.publish_token.as_ref().map(Token::expose),
            Some("publish-token-0123456789")
        );
        assert!(config.publish_token_file.is_none());
        std::fs::write(&file, "\n").unwrap();
        let mut config = self::config(&["--publish-token-file", file.to_str().unwrap()]);
        let err = config.load_token_files().unwrap_err();
        assert!(err.starts_with("--publish-token-file: "), "{err}");
        assert!(err.contains("no token"), "{err}");
    }
}
