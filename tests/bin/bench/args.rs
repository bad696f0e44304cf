//! The command line: stores, sections, sizes, and the core flags to pass.

use super::*;

#[derive(Parser)]
#[command(
    about = "Measures ackflow end to end (W1: throughput, latency, memory) against the store's own ceiling",
    long_about = "Measures ackflow end to end (W1: throughput, latency, memory) against the store's own ceiling.\n\n\
                  W1: N events of kind sha256 with 256-byte payloads, published by one producer on one gRPC \
                  PublishStream and delivered to one processor, measured from the first publish to the last \
                  stored result. Latency runs from the moment the producer hands a request to its stream to \
                  the result's stored_at_us read back from the store.\n\n\
                  Runs the real core and processor binaries of this build (build with --release first) on PostgreSQL \
                  (a new database per section on the server given by ACKFLOW_TEST_PG or DATABASE_URL, default \
                  postgres://postgres@127.0.0.1:5432/postgres) and on SQLite (a temp dir), a fresh core per \
                  section. Prints each section's figures, then a summary table per store."
)]
pub(super) struct Args {
    /// Stores to measure.
    #[arg(long, value_enum, default_value = "both")]
    pub(super) store: StoreChoice,
    /// Sections to run, comma-separated (default: all but `skew`, which
    /// takes minutes and runs only when named).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(super) only: Vec<Section>,
    /// Events in W1 (closed burst), the REST variant, the ceiling and the
    /// PublishStream part of `publish` (its REST batches: at most 50,000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) events: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    pub(super) payload: usize,
    /// Core's window (`--window`) outside the sweep; the default is core's.
    #[arg(long, default_value_t = 1024)]
    pub(super) window: u32,
    /// Events published with single REST requests (section `publish`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) rest_events: u64,
    /// Concurrent clients for single REST requests.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) clients: u64,
    /// Events per REST batch request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) batch: u64,
    /// Concurrent connections publishing REST batches.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) batch_clients: u64,
    /// Open-loop publish rate in events/s (default: half the W1 rate just
    /// measured, or 20,000 when W1 did not run).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) rate: Option<u64>,
    /// Duration of the open-loop run in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) open_loop_secs: u64,
    /// How many open-loop runs, one after the other, each with a fresh core,
    /// processor and database (every run is printed).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub(super) open_loop_runs: u64,
    /// The open loop's processor writes its processed log, so that the
    /// latency is also split at the processor's start of each event (the
    /// log costs a write per batch of acks: a diagnostic, off by default).
    #[arg(long)]
    pub(super) open_loop_split: bool,
    /// The `overload` section's offered rate, events/s on one PublishStream.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) overload_rate: u64,
    /// How long the `overload` section offers it, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) overload_secs: u64,
    /// Events in the backlog built with no processor connected.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) backlog: u64,
    /// Windows of the sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024")]
    pub(super) sweep_windows: Vec<u32>,
    /// Core's `--retention` in every section (core's default: 7d, so a
    /// run this short prunes nothing; `1s` keeps the pruner busy throughout,
    /// to measure what pruning costs the hot path).
    #[arg(long)]
    pub(super) retention: Option<String>,
    /// A flag for every core the bench starts (repeatable), e.g.
    /// `--core-arg=--at-most-once --core-arg=sha256` to measure W1 with its
    /// events delivered at most once.
    #[arg(long = "core-arg", allow_hyphen_values = true, value_name = "FLAG")]
    pub(super) core_args: Vec<String>,
    /// Events per window in the sweep.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) sweep_events: u64,
    /// Events in W2 (sleep events over --w2-keys keys, default core and processor flags).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) w2_events: u64,
    /// Keys in W2, drawn uniformly.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) w2_keys: u64,
    /// Milliseconds each W2 event sleeps.
    #[arg(long, default_value_t = 5)]
    pub(super) w2_sleep_ms: u64,
    /// Events in the W2 control (one key: strict order, one call at a time).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) w2_control_events: u64,
    /// Events in the `crash` section (W2's kind, keys and sleep).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(10_000..))]
    pub(super) crash_events: u64,
    /// Seed of the `skew` section's workload (keys, kinds, which events
    /// misbehave), printed with its figures.
    #[arg(long, default_value_t = 27)]
    pub(super) seed: u64,
    /// Runs of the `skew` section, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', ignore_case = true)]
    pub(super) skew_runs: Vec<SkewRun>,
    /// Longest a `skew` run may take from its first publish, in seconds;
    /// a run stopped by it reports what was resolved by then.
    #[arg(long, default_value_t = 240, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) skew_timeout_s: u64,
    /// Runs of the `failover` section per signal (kill -9, then SIGSTOP).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) failover_runs: u32,
    /// The cores' `--lease-ms` in the `failover` section.
    #[arg(long, default_value_t = 2_000)]
    pub(super) failover_lease_ms: u64,
}

impl Args {
    /// Flags for every core: `--retention` when set, then `--core-arg`s.
    pub(super) fn core_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(retention) = &self.retention {
            flags.extend(["--retention".to_string(), retention.clone()]);
        }
        flags.extend(self.core_args.iter().cloned());
        flags
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum StoreChoice {
    /// PostgreSQL only.
    Postgres,
    /// SQLite only.
    Sqlite,
    /// PostgreSQL, then SQLite.
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub(super) enum Section {
    /// Publish throughput with no processor (single REST requests, REST
    /// batches, one PublishStream), then the drain of that backlog.
    Publish,
    /// W1 as a closed burst: end-to-end events/s, publish accepted, latency.
    W1,
    /// W1 published with REST batches: end-to-end events/s and latency.
    Rest,
    /// A fixed publish rate on one PublishStream and the latency it gets.
    OpenLoop,
    /// The store alone taking the same rows in large transactions, on one
    /// connection and pipelined on two as core runs them; W1 as a ratio of
    /// each.
    Ceiling,
    /// A backlog built with no processor (core RSS), then its drain.
    Backlog,
    /// W1 (shorter) for each window of --sweep-windows.
    Sweep,
    /// W2: sleep events over many keys, default flags, against the ideal.
    W2,
    /// W2 over one key: strict order, one call at a time.
    W2Control,
    /// The active processor lost with the window full of W2 events (killed
    /// and restarted; killed or frozen with two hot standbys): how long until
    /// another life is back at full speed.
    Crash,
    /// Processors sharing the keys: W2 with 1, 2 and 3 processors, one of
    /// three killed or frozen with the window full, two joining one.
    Group,
    /// A slow webhook beside a fast kind: 1,000 sha256 events alone, then
    /// interleaved with 1,000 calls of 3 s; time to the last sha256 result.
    Fair,
    /// Two cores on one PostgreSQL database: kill -9 and SIGSTOP of the
    /// leader, time until the standby leads, accepts, and stores a result.
    Failover,
    /// Skewed keys: keyed webhook events over a Zipf-like law of keys, some
    /// misbehaving, some delivered at most once (runs: --skew-runs). Only
    /// when named: it takes minutes.
    Skew,
    /// One PublishStream offered more than core takes (--overload-rate for
    /// --overload-secs) with a processor connected: accepted rate, drain,
    /// and second by second the backlog against the in-memory tail. Only
    /// when named.
    Overload,
}

/// The runs of the `skew` section (see `bench/skew.rs`); the letters are
/// those of docs/PERFORMANCE.md ("Skewed keys, retrying handlers, crashes").
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub(super) enum SkewRun {
    /// 25 % of calls slow (30–80 ms); `hook_once` at most once.
    #[value(name = "A")]
    A,
    /// 25 % of events answered 503 (Retry-After: 0) on their first call.
    #[value(name = "B")]
    B,
    /// B with `hook_once` at most once.
    #[value(name = "C")]
    C,
    /// A mix: 10 % slow, 5 % refused (422), 10 % 503 once, 5 % hang.
    #[value(name = "D")]
    D,
    /// D with `hook_once` at most once.
    #[value(name = "F")]
    F,
    /// D with four processor SIGKILLs (each restarted at once) and one core
    /// SIGKILL (restarted) while it drains.
    #[value(name = "E")]
    E,
    /// F with E's kills.
    #[value(name = "G")]
    G,
}

impl SkewRun {
    pub(super) const ALL: [SkewRun; 7] = [
        SkewRun::A,
        SkewRun::B,
        SkewRun::C,
        SkewRun::D,
        SkewRun::E,
        SkewRun::F,
        SkewRun::G,
    ];
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub(super) fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }
}
