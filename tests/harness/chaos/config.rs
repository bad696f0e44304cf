//! What a chaos run does: the workload, the faults and their counts, the
//! ordering and guarantees, and its limits.

use super::*;

/// What to run and which faults to inject.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Publishes to make (each with its own idempotency key).
    pub events: u64,
    /// Seed of the fault schedule and of the workload's choices.
    pub seed: u64,
    /// Target publish rate, events per second, over all publishers.
    pub rate: u64,
    /// Concurrent gRPC `PublishStream` publishers.
    pub publishers: usize,
    /// Fraction of the publishes sent over REST (one request each).
    pub rest_fraction: f64,
    /// Fraction of the REST publishes followed by a conflicting twin (see
    /// `workload.rs`).
    pub conflicts: f64,
    /// Core's `--ordering`, which the checker holds processing to.
    pub ordering: checker::Ordering,
    /// The processor's `--concurrency`: most algorithm calls at once.
    pub concurrency: u32,
    /// Distinct ordering keys the publishes draw from.
    pub keys: u32,
    /// Exponent of the keys' Zipf-like law: the key of rank r gets a share
    /// proportional to 1 / r^skew (0: uniform).
    pub key_skew: f64,
    /// Fraction of the publishes without an ordering key.
    pub unkeyed: f64,
    /// Fraction of the publishes that are `sleep` events.
    pub sleep_fraction: f64,
    /// Shortest and longest sleep, in milliseconds.
    pub sleep_ms: (u64, u64),
    /// SIGKILLs of the processor (each followed by a new life).
    pub processor_kills: u32,
    /// Processors started beside the first, each a hot standby: kills and
    /// pauses hit the active one, and a standby takes over (a killed life's
    /// successor joins as a standby); or, one time in three, a standby
    /// (unless [`ChaosConfig::active_only`]).
    pub processor_standbys: u32,
    /// With standbys, processor kills and pauses hit the active one only.
    pub active_only: bool,
    /// SIGKILLs of core (each followed by a restart on the same ports); with
    /// [`ChaosConfig::standby`], of whichever core leads then.
    pub core_kills: u32,
    /// SIGSTOP/SIGCONT pauses of the leading core.
    pub core_pauses: u32,
    /// Shortest and longest core pause, in milliseconds.
    pub core_pause_ms: (u64, u64),
    /// A second core on the same PostgreSQL database, standing by (see
    /// `chaos/cores.rs`).
    pub standby: bool,
    /// SIGSTOP/SIGCONT pauses of the processor.
    pub pauses: u32,
    /// Shortest and longest pause, in milliseconds.
    pub pause_ms: (u64, u64),
    /// Resets of every proxied connection.
    pub proxy_resets: u32,
    /// Half-open episodes: every proxied connection freezes without closing.
    pub half_opens: u32,
    /// How long frozen connections are held before the proxy closes them.
    pub half_open_hold: Duration,
    /// Windows of added proxy latency.
    pub latency_windows: u32,
    /// Latency added in those windows.
    pub latency: Duration,
    /// Processor fault: fraction of acks dropped.
    pub ack_loss: f64,
    /// Processor fault: fraction of events handed to the receiver twice.
    pub duplicate: f64,
    /// Processor fault: fraction of incoming events dropped.
    pub drop_events: f64,
    /// Restart PostgreSQL once (`pg_ctlcluster`); affects every database
    /// on the server, so never in the shared test suite.
    pub pg_restart: bool,
    /// PostgreSQL cluster to restart: version and name.
    pub pg_cluster: (String, String),
    /// The store: PostgreSQL or SQLite.
    pub store: ChaosStore,
    /// Extra bytes in every `sha256` payload: bigger events fill a disk
    /// sooner (SQLite reuses its WAL file, so small ones may never need a
    /// new block while the disk is full).
    pub pad: usize,
    /// Times the store's disk fills up (it then sits on a tmpfs of its own).
    pub disk_fills: u32,
    /// Shortest and longest time the disk stays full, in milliseconds.
    pub disk_full_ms: (u64, u64),
    /// Fraction of events of kind `hook`, processed by the run's webhook
    /// endpoint (see `chaos/webhook.rs`); 0: no endpoint.
    pub webhooks: f64,
    /// Fraction of webhook calls answered 503.
    pub webhook_errors: f64,
    /// Fraction of webhook calls that hang past the timeout.
    pub webhook_hangs: f64,
    /// Kinds core delivers at most once (`--at-most-once`): the checker
    /// allows them to be abandoned and forbids them to run twice.
    pub at_most_once: Vec<String>,
    /// Negative control: core is not given `--at-most-once`, so it
    /// delivers those kinds at least once, and the checker, which still
    /// holds them to at most once, must see some run twice.
    pub at_most_once_unenforced: bool,
    /// Extra flags for core (e.g. the hidden `--unsafe-floor-on-send`).
    pub core_args: Vec<String>,
    /// Extra flags for every processor life (e.g. the hidden `--no-dedup`).
    pub processor_args: Vec<String>,
    /// Longest wait for the backlog to drain after the last publish.
    pub drain_timeout: Duration,
    /// Longest the whole publishing phase may take.
    pub publish_timeout: Duration,
    /// Keep the working directory (logs, processed logs, publish log) and
    /// the database even when the run is valid.
    pub keep: bool,
    /// Keep them when the run is invalid (off for the negative controls,
    /// which are invalid on purpose).
    pub keep_invalid: bool,
    /// Print each fault as it is injected.
    pub verbose: bool,
}

impl ChaosConfig {
    /// The same run without faults: the same seed, so the same workload
    /// (keys, kinds, and the same share of webhook 503s and hangs, which are
    /// part of the workload), with no kill, pause, network fault, injected
    /// loss, PostgreSQL restart or full disk. Its drain time is what the
    /// faults are measured against.
    pub fn calm(&self) -> Self {
        Self {
            processor_kills: 0,
            processor_standbys: 0,
            core_kills: 0,
            core_pauses: 0,
            pauses: 0,
            proxy_resets: 0,
            half_opens: 0,
            latency_windows: 0,
            ack_loss: 0.0,
            duplicate: 0.0,
            drop_events: 0.0,
            pg_restart: false,
            disk_fills: 0,
            ..self.clone()
        }
    }

    /// A small, fault-free configuration to build on.
    pub fn quiet(events: u64, seed: u64) -> Self {
        Self {
            events,
            seed,
            rate: 2_000,
            publishers: 4,
            rest_fraction: 0.02,
            conflicts: 0.5,
            ordering: checker::Ordering::Key,
            concurrency: 256,
            keys: 300,
            key_skew: 1.0,
            unkeyed: 0.1,
            sleep_fraction: 0.05,
            sleep_ms: (1, 5),
            processor_kills: 0,
            processor_standbys: 0,
            active_only: false,
            core_kills: 0,
            core_pauses: 0,
            core_pause_ms: (1_500, 3_000),
            standby: false,
            pauses: 0,
            pause_ms: (1_500, 4_000),
            proxy_resets: 0,
            half_opens: 0,
            half_open_hold: Duration::from_secs(15),
            latency_windows: 0,
            latency: Duration::from_millis(20),
            ack_loss: 0.0,
            duplicate: 0.0,
            drop_events: 0.0,
            pg_restart: false,
            store: ChaosStore::Postgres,
            pad: 0,
            disk_fills: 0,
            disk_full_ms: (1_000, 3_000),
            webhooks: 0.0,
            webhook_errors: 0.1,
            webhook_hangs: 0.02,
            pg_cluster: ("15".into(), "main".into()),
            at_most_once: Vec::new(),
            at_most_once_unenforced: false,
            core_args: Vec::new(),
            processor_args: Vec::new(),
            drain_timeout: Duration::from_secs(180),
            publish_timeout: Duration::from_secs(1800),
            keep: std::env::var_os("ACKFLOW_CHAOS_KEEP").is_some(),
            keep_invalid: true,
            verbose: false,
        }
    }
}
