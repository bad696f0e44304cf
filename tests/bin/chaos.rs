//! ackflow-chaos: the real core and processor on a fresh PostgreSQL
//! database under a seeded schedule of faults, then a total-queue check of
//! what the publishers were told against the store and the processed logs,
//! and of each processor life's processing against core's `--ordering`
//! (per key, or global).
//!
//! Build the binaries it runs first (they sit beside it):
//!
//! ```sh
//! cargo build --release -p ackflow-tests --bins
//! target/release/ackflow-chaos --events 100000 --processor-kills 10 --core-kills 3 \
//!     --ack-loss 0.1 --proxy-resets 10 --pg-restart
//! ```
//!
//! Exit codes: 0 when the checker found no violation, 1 when it found one
//! (or the backlog did not drain), 2 when the run itself failed.

use std::process::ExitCode;
use std::time::Duration;

use ackflow_tests::chaos::{self, ChaosConfig};
use ackflow_tests::chaos_store::ChaosStore;
use ackflow_tests::checker::Ordering;
use clap::Parser;

/// Runs core and a processor under seeded faults and checks that no
/// acknowledged event was lost, duplicated, reordered within its key, or
/// processed twice at once.
#[derive(Debug, Parser)]
#[command(name = "ackflow-chaos", about, long_about = None)]
struct Args {
    /// Publishes to make, each with its own idempotency key.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Seed of the fault schedule (random when unset; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Target publish rate, events per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Concurrent gRPC PublishStream publishers.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Fraction of the publishes sent over REST instead.
    #[arg(long, default_value_t = 0.02, value_parser = fraction)]
    rest_fraction: f64,
    /// Fraction of the REST publishes followed by a conflicting twin (its idempotency key, another payload), which core must refuse without disturbing the publishes committed beside it.
    #[arg(long, default_value_t = 0.5, value_parser = fraction)]
    conflicts: f64,
    /// Core's --ordering: key (one lane per key, and one for events without a key) or global (one lane).
    #[arg(long, value_enum, default_value_t = OrderingArg::Key)]
    ordering: OrderingArg,
    /// The processor's --concurrency: most algorithm calls at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    concurrency: u32,
    /// Distinct ordering keys.
    #[arg(long, default_value_t = 300)]
    keys: u32,
    /// Skew of the keys: the key of rank r gets a share proportional to 1/r^skew (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    key_skew: f64,
    /// Fraction of the publishes without an ordering key.
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    unkeyed: f64,
    /// Fraction of the publishes that are sleep events (1 ms to --sleep-max-ms).
    #[arg(long, default_value_t = 0.05, value_parser = fraction)]
    sleep_fraction: f64,
    /// Longest sleep event, in milliseconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    sleep_max_ms: u64,
    /// Fraction of the publishes of kind `hook`, which the processor posts to a webhook endpoint the run serves and which fails on purpose (0: none).
    #[arg(long, default_value_t = 0.05, value_parser = fraction)]
    webhooks: f64,
    /// Fraction of the webhook calls answered 503 (retry later).
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    webhook_errors: f64,
    /// Fraction of the webhook calls that hang past the processor's --webhook-timeout-ms (retry later).
    #[arg(long, default_value_t = 0.02, value_parser = fraction)]
    webhook_hangs: f64,
    /// Kind core delivers at most once (repeatable; core's --at-most-once): the checker lets its events be abandoned and flags any run twice. The workload's kinds: sha256, wordcount, sum, fail, sleep, hook.
    #[arg(long = "at-most-once", value_name = "KIND")]
    at_most_once: Vec<String>,
    /// Negative control: do not pass --at-most-once to core, so it delivers those kinds at least once; the checker still holds them to at most once and must report events run twice after processor kills.
    #[arg(long, requires = "at_most_once")]
    at_most_once_unenforced: bool,
    /// SIGKILLs of the processor, each followed by a new processor life.
    #[arg(long, default_value_t = 10)]
    processor_kills: u32,
    /// Processors started beside the first, each a hot standby (another --processor-id): processor kills and pauses hit the active one, and a standby takes over (a pause longer than core's --processor-silence-ms, 3 s, hands over too); one time in three they hit a standby instead (see --active-only).
    #[arg(long, default_value_t = 0)]
    processor_standbys: u32,
    /// With --processor-standbys, processor kills and pauses hit the active processor only.
    #[arg(long)]
    active_only: bool,
    /// SIGKILLs of core, each followed by a restart (with --standby, of the core that leads then).
    #[arg(long, default_value_t = 3)]
    core_kills: u32,
    /// A second core on the same PostgreSQL database, standing by: core kills and pauses hit the leader, the other takes over (lease 1 s), and the processor and publishers must follow.
    #[arg(long)]
    standby: bool,
    /// SIGSTOP/SIGCONT pauses of the core that leads, of 1.5 to 3 s (longer than the standby's lease).
    #[arg(long, default_value_t = 0)]
    core_pauses: u32,
    /// SIGSTOP/SIGCONT pauses of the processor.
    #[arg(long, default_value_t = 4)]
    pauses: u32,
    /// Shortest pause, in milliseconds (above core's ack timeout).
    #[arg(long, default_value_t = 1_500)]
    pause_min_ms: u64,
    /// Longest pause, in milliseconds.
    #[arg(long, default_value_t = 4_000)]
    pause_max_ms: u64,
    /// Resets of every connection through the proxy.
    #[arg(long, default_value_t = 10)]
    proxy_resets: u32,
    /// Half-open episodes: proxied connections freeze without closing.
    #[arg(long, default_value_t = 2)]
    half_opens: u32,
    /// Seconds a frozen connection is held open before the proxy drops it.
    #[arg(long, default_value_t = 15)]
    half_open_hold_s: u64,
    /// Windows of added proxy latency (1 to 3 s each).
    #[arg(long, default_value_t = 3)]
    latency_windows: u32,
    /// Latency added in those windows, in milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Fraction of the processor's acks dropped.
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    ack_loss: f64,
    /// Fraction of incoming events the processor handles twice.
    #[arg(long, default_value_t = 0.02, value_parser = fraction)]
    duplicate: f64,
    /// Fraction of incoming events the processor drops.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    drop_events: f64,
    /// Restart PostgreSQL once (pg_ctlcluster; every database on the server sees it).
    #[arg(long)]
    pg_restart: bool,
    /// PostgreSQL cluster version for --pg-restart.
    #[arg(long, default_value = "15")]
    pg_version: String,
    /// PostgreSQL cluster name for --pg-restart.
    #[arg(long, default_value = "main")]
    pg_cluster: String,
    /// Store: postgres (a fresh database on the shared server, or a
    /// throwaway cluster with --disk-fills) or sqlite.
    #[arg(long, value_enum, default_value_t = StoreArg::Postgres)]
    store: StoreArg,
    /// Times the store's disk fills up (the store then lives on a tmpfs of its own; needs root).
    #[arg(long, default_value_t = 0)]
    disk_fills: u32,
    /// Extra bytes in every sha256 payload (bigger events fill a disk sooner).
    #[arg(long, default_value_t = 0)]
    pad_bytes: usize,
    /// Longest time the disk stays full, in milliseconds (shortest: a third of it).
    #[arg(long, default_value_t = 3_000)]
    disk_full_max_ms: u64,
    /// Negative control: SQLite writes through the old writer that lost acknowledged events on a full disk.
    #[arg(long)]
    unsafe_sqlx_transactions: bool,
    /// Negative control: run the processor with duplicate detection off.
    #[arg(long)]
    no_dedup: bool,
    /// Negative control: core moves the acked floor on send, without results.
    #[arg(long)]
    unsafe_floor_on_send: bool,
    /// Negative control: the processor ignores the ordering; events of one key run at once and out of order.
    #[arg(long)]
    unsafe_ignore_order: bool,
    /// Negative control: a partition moving to another processor sends its events there at once, without waiting for the previous processor to drain it (with --processor-standbys under key ordering).
    #[arg(long)]
    unsafe_handoff_without_drain: bool,
    /// Seconds to wait for the backlog to drain after the last publish.
    #[arg(long, default_value_t = 300)]
    drain_timeout_s: u64,
    /// Keep the working directory (logs, processed logs, publish log).
    #[arg(long)]
    keep: bool,
    /// Print only the summary.
    #[arg(long, short)]
    quiet: bool,
    /// First run the same workload (same seed) without faults, then this run, and print both drain times: what the faults cost in speed.
    #[arg(long)]
    calm_twin: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OrderingArg {
    Key,
    Global,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StoreArg {
    Postgres,
    Sqlite,
}

fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction between 0 and 1"))
    }
}

fn config(args: &Args) -> ChaosConfig {
    let mut c = ChaosConfig::quiet(args.events, args.seed.unwrap_or_else(|| fastrand::u64(..)));
    c.rate = args.rate;
    c.publishers = args.publishers;
    c.rest_fraction = args.rest_fraction;
    c.conflicts = args.conflicts;
    c.ordering = match args.ordering {
        OrderingArg::Key => Ordering::Key,
        OrderingArg::Global => Ordering::Global,
    };
    c.concurrency = args.concurrency;
    c.keys = args.keys;
    c.key_skew = args.key_skew.max(0.0);
    c.unkeyed = args.unkeyed;
    c.sleep_fraction = args.sleep_fraction;
    c.sleep_ms = (1, args.sleep_max_ms);
    c.webhooks = args.webhooks;
    c.webhook_errors = args.webhook_errors;
    c.webhook_hangs = args.webhook_hangs;
    c.at_most_once = args.at_most_once.clone();
    c.at_most_once_unenforced = args.at_most_once_unenforced;
    c.processor_kills = args.processor_kills;
    c.processor_standbys = args.processor_standbys;
    c.active_only = args.active_only;
    c.core_kills = args.core_kills;
    c.core_pauses = args.core_pauses;
    c.standby = args.standby;
    c.pauses = args.pauses;
    c.pause_ms = (args.pause_min_ms, args.pause_max_ms.max(args.pause_min_ms));
    c.proxy_resets = args.proxy_resets;
    c.half_opens = args.half_opens;
    c.half_open_hold = Duration::from_secs(args.half_open_hold_s);
    c.latency_windows = args.latency_windows;
    c.latency = Duration::from_millis(args.latency_ms);
    c.ack_loss = args.ack_loss;
    c.duplicate = args.duplicate;
    c.drop_events = args.drop_events;
    c.pg_restart = args.pg_restart;
    c.pg_cluster = (args.pg_version.clone(), args.pg_cluster.clone());
    if args.no_dedup {
        c.processor_args.push("--no-dedup".into());
    }
    if args.unsafe_floor_on_send {
        c.core_args.push("--unsafe-floor-on-send".into());
    }
    if args.unsafe_ignore_order {
        c.processor_args.push("--unsafe-ignore-order".into());
    }
    if args.unsafe_handoff_without_drain {
        c.core_args.push("--unsafe-handoff-without-drain".into());
    }
    c.store = match args.store {
        StoreArg::Postgres => ChaosStore::Postgres,
        StoreArg::Sqlite => ChaosStore::Sqlite,
    };
    c.disk_fills = args.disk_fills;
    c.pad = args.pad_bytes;
    c.disk_full_ms = (args.disk_full_max_ms / 3, args.disk_full_max_ms);
    if args.unsafe_sqlx_transactions {
        c.core_args.push("--unsafe-sqlx-transactions".into());
    }
    c.drain_timeout = Duration::from_secs(args.drain_timeout_s);
    c.keep = args.keep;
    c.verbose = !args.quiet;
    c
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = config(&args);
    for binary in ["e2e-core", "e2e-processor"] {
        if !ackflow_tests::bin(binary).exists() {
            eprintln!(
                "error: {} is missing: build the binaries with `cargo build -p ackflow-tests --bins` (add --release for the release profile)",
                ackflow_tests::bin(binary).display()
            );
            return ExitCode::from(2);
        }
    }
    if args.unsafe_floor_on_send && config.core_kills > 0 {
        eprintln!(
            "note: --unsafe-floor-on-send keeps its floor in memory only; core kills hide the loss it causes"
        );
    }
    println!("seed {} (rerun with --seed {})", config.seed, config.seed);
    for step in chaos::schedule(&config) {
        if !args.quiet {
            println!(
                "  at {:>7} acked: {:?}, then {:?}",
                step.at_acked, step.fault, step.then_wait
            );
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let calm = if args.calm_twin {
        println!("the calm twin: the same workload without faults");
        match runtime.block_on(chaos::run(&config.calm())) {
            Ok(outcome) => {
                println!("{}", outcome.summary(&config.calm()));
                Some(outcome)
            }
            Err(e) => {
                eprintln!("error: the calm twin: {e:#}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    match runtime.block_on(chaos::run(&config)) {
        Ok(outcome) => {
            println!("{}", outcome.summary(&config));
            if let Some(calm) = &calm {
                let (c, f) = (
                    calm.drain_elapsed.as_secs_f64(),
                    outcome.drain_elapsed.as_secs_f64(),
                );
                println!(
                    "drain after publishing: calm twin {c:.1} s, with faults {f:.1} s ({:.1}x); whole run {:.1} s and {:.1} s",
                    f / c.max(0.001),
                    calm.elapsed.as_secs_f64(),
                    outcome.elapsed.as_secs_f64()
                );
            }
            let calm_ok = calm
                .as_ref()
                .is_none_or(|c| c.report.is_valid() && c.drained);
            if outcome.report.is_valid() && outcome.drained && calm_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
