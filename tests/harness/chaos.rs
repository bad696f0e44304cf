//! The chaos runner: the real core and processor on a fresh PostgreSQL
//! database, publishers that log every acknowledged publish, and a seeded
//! schedule of faults. At the end the [`checker`](crate::checker) compares
//! the publishers' log, the store and the processors' processed logs.
//!
//! The workload ([`workload`]) is keyed: ordering keys from a skewed
//! distribution (a few hot keys, a long tail) and some events without a
//! key, with short `sleep` events among them so that calls of different
//! keys overlap. Core runs with `--ordering key` or `global`
//! ([`ChaosConfig::ordering`]) and the processor with `--concurrency`; the
//! checker then holds each processor life to that ordering's lanes.
//!
//! ```text
//!  publishers ──gRPC streams / REST──▶ core ◀──proxy (latency, resets, half-open)──▶ processor
//!   (idempotency keys,                  │                                            (--drop-acks, --duplicate,
//!    log of acks)                       ▼                                             --processed-log per life)
//!                                   PostgreSQL (restarted once with --pg-restart)
//! ```
//!
//! Faults: SIGKILL of the processor and of core at random points (a new
//! processor life, or core restarted on the same ports), SIGSTOP/SIGCONT of
//! the processor for longer than the ack timeout, proxy resets, half-open
//! proxy connections, proxy latency, in-process ack loss and duplication,
//! one PostgreSQL restart, and disks that fill up and get room again
//! (`chaos_store.rs`; the store then sits on a tmpfs of its own, SQLite or
//! a throwaway PostgreSQL cluster). Each fault fires when the number of
//! acknowledged publishes passes a threshold drawn from the seed, so the
//! schedule (which faults, in which order, at which point of the workload,
//! with which durations) is reproducible from the seed; the exact
//! interleaving with the processes' own timing is not.

mod faults;
mod publishers;
pub mod webhook;
pub mod workload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ackflow_core::model::Seq;
use ackflow_proto::v1 as pb;
use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::chaos_store::{ChaosStore, RunStore};
use crate::checker::{self, History, Report};
use crate::proxy::Proxy;
use crate::{Proc, all_events, start_processor, wait_for};
use faults::inject;
pub use faults::{Fault, FaultCounts, Step, schedule};
use publishers::{Publishing, rest_publisher, stream_publisher};
use workload::Workload;

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
    /// SIGKILLs of core (each followed by a restart on the same ports).
    pub core_kills: u32,
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
    /// A small, fault-free configuration to build on.
    pub fn quiet(events: u64, seed: u64) -> Self {
        Self {
            events,
            seed,
            rate: 2_000,
            publishers: 4,
            rest_fraction: 0.02,
            ordering: checker::Ordering::Key,
            concurrency: 256,
            keys: 300,
            key_skew: 1.0,
            unkeyed: 0.1,
            sleep_fraction: 0.05,
            sleep_ms: (1, 5),
            processor_kills: 0,
            core_kills: 0,
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

/// What a run did and what the checker found.
#[derive(Debug)]
pub struct ChaosOutcome {
    /// The checker's verdict.
    pub report: Report,
    /// The faults actually injected.
    pub faults: FaultCounts,
    /// True when every committed event was resolved before the drain timeout.
    pub drained: bool,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
    /// Wall-clock time from the first publish to the last acknowledgement.
    pub publish_elapsed: Duration,
    /// The last core's totals (they restart at each core restart).
    pub last_core_totals: pb::Totals,
    /// Proxy counters: connections, resets, frozen, bytes.
    pub proxy: (u64, u64, u64, u64),
    /// The webhook endpoint's answers: ok, 503, hung (when it ran).
    pub webhook: Option<(u64, u64, u64)>,
    /// Where the logs are (kept when the run is invalid or `keep` is set).
    pub dir: Option<PathBuf>,
}

impl ChaosOutcome {
    /// A human-readable summary, with the checker's report.
    pub fn summary(&self, config: &ChaosConfig) -> String {
        let f = &self.faults;
        let t = &self.last_core_totals;
        let (conns, resets, frozen, bytes) = self.proxy;
        let mut s = format!(
            "ackflow chaos run, seed {seed}\n\
             workload: {events} publishes at ~{rate}/s ({publishers} gRPC streams, {rest:.0} % REST), ack loss {ack:.0} %, duplication {dup:.0} %, event drop {drop:.0} %\n\
             ordering: {ordering}, processor concurrency {concurrency}; {keys} keys (skew {skew}), {unkeyed:.0} % without a key, {sleep:.0} % sleep events of {sleep_lo}-{sleep_hi} ms\n\
             faults injected: {pk} processor kills, {ck} core kills, {pa} processor pauses, {pr} proxy resets, {ho} half-open episodes, {lw} latency windows, {pg} PostgreSQL restarts, {df} disk fills\n\
             proxy: {conns} connections, {resets} closed by reset, {frozen} frozen, {mib:.1} MiB forwarded\n\
             last core life: {retx} retransmits, {dd} duplicate drops, {da} duplicate acks\n\
             time: publishing {pub_s:.1} s, whole run {all_s:.1} s; drained: {drained}\n",
            seed = config.seed,
            events = config.events,
            rate = config.rate,
            publishers = config.publishers,
            rest = config.rest_fraction * 100.0,
            ack = config.ack_loss * 100.0,
            dup = config.duplicate * 100.0,
            drop = config.drop_events * 100.0,
            ordering = config.ordering,
            concurrency = config.concurrency,
            keys = config.keys,
            skew = config.key_skew,
            unkeyed = config.unkeyed * 100.0,
            sleep = config.sleep_fraction * 100.0,
            sleep_lo = config.sleep_ms.0,
            sleep_hi = config.sleep_ms.1,
            pk = f.processor_kills,
            ck = f.core_kills,
            pa = f.pauses,
            pr = f.proxy_resets,
            ho = f.half_opens,
            lw = f.latency_windows,
            pg = f.pg_restarts,
            df = f.disk_fills,
            mib = bytes as f64 / (1024.0 * 1024.0),
            retx = t.retransmits,
            dd = t.duplicate_drops,
            da = t.duplicate_acks,
            pub_s = self.publish_elapsed.as_secs_f64(),
            all_s = self.elapsed.as_secs_f64(),
            drained = self.drained,
        );
        if !config.at_most_once.is_empty() {
            s.push_str(&format!(
                "at most once: {}{}\n",
                config.at_most_once.join(", "),
                if config.at_most_once_unenforced {
                    " (checker only: core not told, a negative control)"
                } else {
                    ""
                }
            ));
        }
        if let Some((ok, errors, hangs)) = self.webhook {
            s.push_str(&format!(
                "webhook ({:.0} % of events): {ok} calls answered, {errors} answered 503, {hangs} hung past {} ms\n",
                config.webhooks * 100.0,
                webhook::TIMEOUT_MS
            ));
        }
        s.push_str(&self.report.to_string());
        if let Some(dir) = &self.dir {
            s.push_str(&format!("\nlogs kept in {}", dir.display()));
        }
        s
    }
}

/// The processor lives of a run.
struct Processors {
    dir: PathBuf,
    core_url: String,
    args: Vec<String>,
    current: Option<Proc>,
    lives: u32,
}

impl Processors {
    fn log(&self, life: u32) -> PathBuf {
        self.dir.join(format!("processed-{life}.log"))
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let life = self.lives;
        self.lives += 1;
        let mut args = vec![
            "--processor-id".to_string(),
            format!("life-{life}"),
            "--processed-log".to_string(),
            self.log(life).display().to_string(),
        ];
        args.extend(self.args.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.current = Some(start_processor(&self.dir, &self.core_url, &refs)?);
        Ok(())
    }

    fn logs(&self) -> Vec<PathBuf> {
        (0..self.lives).map(|l| self.log(l)).collect()
    }
}

/// Runs the workload under the configured faults and checks the outcome.
pub async fn run(config: &ChaosConfig) -> anyhow::Result<ChaosOutcome> {
    let started = Instant::now();
    let steps = schedule(config);
    let say = |line: String| {
        if config.verbose {
            println!("[{:7.1} s] {line}", started.elapsed().as_secs_f64());
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("ackflow-chaos-")
        .tempdir()?;
    let store = RunStore::create(config.store, config.disk_fills > 0, dir.path()).await?;
    anyhow::ensure!(
        !config.pg_restart || store.is_shared_postgres(),
        "--pg-restart restarts the shared PostgreSQL server: not with SQLite or disk fills"
    );
    say(format!(
        "seed {}; {}; logs in {}",
        config.seed,
        store.describe(),
        dir.path().display()
    ));
    let mut core_args = vec!["--ordering".to_string(), config.ordering.as_flag().into()];
    if !config.at_most_once_unenforced {
        for kind in &config.at_most_once {
            core_args.extend(["--at-most-once".to_string(), kind.clone()]);
        }
    }
    core_args.extend(config.core_args.iter().cloned());
    let mut core = store.start_core(dir.path(), &core_args).await?;
    let proxy = Proxy::start(core.grpc, config.half_open_hold).await?;

    let mut processor_args = vec![
        "--drop-acks".to_string(),
        config.ack_loss.to_string(),
        "--duplicate".to_string(),
        config.duplicate.to_string(),
        "--drop-events".to_string(),
        config.drop_events.to_string(),
        "--concurrency".to_string(),
        config.concurrency.to_string(),
    ];
    processor_args.extend(config.processor_args.iter().cloned());
    let endpoint_cancel = CancellationToken::new();
    let _stop_endpoint = endpoint_cancel.clone().drop_guard();
    let webhook_counts = if config.webhooks > 0.0 {
        let (addr, counts) = webhook::start(
            config.seed,
            config.webhook_errors,
            config.webhook_hangs,
            endpoint_cancel.clone(),
        )
        .await?;
        processor_args.extend([
            "--webhook".to_string(),
            format!("hook=http://{addr}/hook"),
            "--webhook-timeout-ms".to_string(),
            webhook::TIMEOUT_MS.to_string(),
        ]);
        Some(counts)
    } else {
        None
    };
    let mut processors = Processors {
        dir: dir.path().to_path_buf(),
        core_url: proxy.url(),
        args: processor_args,
        current: None,
        lives: 0,
    };
    processors.start()?;

    // The publishers: publishes are split between the REST publisher
    // (every `stride`-th) and the gRPC stream publishers (the rest).
    let workload = Arc::new(Workload::new(config));
    let acked = Arc::new(AtomicU64::new(0));
    let resolved = Arc::new(AtomicU64::new(0));
    // Publishing may run this far past a fault's threshold before the
    // fault fires (so that a few stuck publishes cannot hold the schedule
    // up).
    let margin = (config.events / 100).max(config.rate / 4).max(1);
    let gate_at = |i: usize| {
        steps
            .get(i)
            .map_or(u64::MAX, |s: &Step| s.at_acked.saturating_add(margin))
    };
    let (gate_tx, gate_rx) = watch::channel(gate_at(0));
    let publishing = Publishing {
        grpc: core.grpc,
        http: core.http,
        workload: workload.clone(),
        acked: acked.clone(),
        resolved: resolved.clone(),
        gate: gate_rx,
        deadline: tokio::time::Instant::now() + config.publish_timeout,
        max_attempts: 20,
    };
    let stride = if config.rest_fraction > 0.0 {
        (1.0 / config.rest_fraction).round().max(1.0) as u64
    } else {
        u64::MAX
    };
    let publishers = config.publishers.max(1);
    let mut grpc_numbers: Vec<Vec<u64>> = vec![Vec::new(); publishers];
    let mut rest_numbers = Vec::new();
    for n in 0..workload.len() {
        if stride != u64::MAX && n % stride == stride - 1 {
            rest_numbers.push(n);
        } else {
            grpc_numbers[(n % publishers as u64) as usize].push(n);
        }
    }
    let rate = config.rate.max(1) as f64;
    let total = config.events.max(1) as f64;
    let publish_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for numbers in grpc_numbers {
        let share = rate * numbers.len() as f64 / total;
        tasks.spawn(stream_publisher(publishing.clone(), numbers, share));
    }
    if !rest_numbers.is_empty() {
        let share = rate * rest_numbers.len() as f64 / total;
        tasks.spawn(rest_publisher(publishing.clone(), rest_numbers, share));
    }
    let publishers_done = CancellationToken::new();
    let done = publishers_done.clone();
    let collector = tokio::spawn(async move {
        let mut history = History::default();
        while let Some(h) = tasks.join_next().await {
            if let Ok(h) = h {
                history.merge(h);
            }
        }
        done.cancel();
        history
    });

    // The fault schedule.
    let mut counts = FaultCounts::default();
    for (i, step) in steps.iter().enumerate() {
        let target = step.at_acked;
        let resolved_now = resolved.clone();
        let done = publishers_done.clone();
        wait_for(
            &format!("{target} resolved publishes"),
            config.publish_timeout,
            || {
                let resolved_now = resolved_now.clone();
                let done = done.clone();
                async move {
                    (resolved_now.load(Ordering::Relaxed) >= target || done.is_cancelled())
                        .then_some(())
                }
            },
        )
        .await?;
        // Publishing goes on during the fault, up to the next one.
        gate_tx.send_replace(gate_at(i + 1));
        say(format!(
            "{} acked: {:?}",
            acked.load(Ordering::Relaxed),
            step.fault
        ));
        inject(
            &step.fault,
            config,
            &mut core,
            &mut processors,
            &proxy,
            &store,
            &mut counts,
        )
        .await?;
        // The gap between faults is part of the workload, not a wait for
        // a condition.
        tokio::time::sleep(step.then_wait).await;
    }
    let mut history = collector.await.context("the publishers failed")?;
    let publish_elapsed = publish_started.elapsed();
    history.unknown.retain(|k| !history.acked.contains_key(k));
    say(format!(
        "publishing done: {} acknowledged, {} unknown",
        history.acked.len(),
        history.unknown.len()
    ));

    // Drain: every committed event resolved. `Core::snapshot` is taken
    // after publishing ended (an older one once ended the drain with the
    // last event unresolved), and the floor must also be beyond every
    // acknowledged seq.
    proxy.set_latency(Duration::ZERO);
    let highest_acked = history.acked.values().copied().max().unwrap_or(0);
    let drained = wait_for(
        "every committed event to be resolved",
        config.drain_timeout,
        || async {
            let s = core.snapshot().await.ok()?;
            (s.acked_floor > s.head && s.acked_floor > highest_acked).then_some(s)
        },
    )
    .await;
    let (drained, last_core_totals) = match drained {
        Ok(s) => (true, s.totals.unwrap_or_default()),
        Err(e) => {
            println!("{e}");
            let s = core.snapshot().await.ok();
            if let Some(s) = &s {
                // Where delivery stands, for the post-mortem.
                println!(
                    "not drained: head {}, floor {}, next to send {}, window used {}, suspects {}, floor holder {:?}, processor {:?}, first in flight {:?}",
                    s.head,
                    s.acked_floor,
                    s.next_to_send,
                    s.window_used,
                    s.suspects,
                    s.floor_holder,
                    s.processor,
                    s.in_flight.iter().take(5).collect::<Vec<_>>()
                );
            }
            (false, s.and_then(|s| s.totals).unwrap_or_default())
        }
    };
    say(format!("drained: {drained}"));
    if let Some(mut processor) = processors.current.take() {
        processor
            .terminate()
            .await
            .context("stopping the processor")?;
    }
    core.proc.terminate().await.context("stopping core")?;

    let stored = read_store(store.url(), &config.at_most_once).await?;
    let (processed, torn) = checker::read_processed(&processors.logs())?;
    // Lives of the negative controls that bypass the lanes (no dedup,
    // ignoring order) are not held to the cap.
    let bypass = ["--no-dedup", "--unsafe-ignore-order"];
    let cap = (!config
        .processor_args
        .iter()
        .any(|a| bypass.contains(&a.as_str())))
    .then_some(u64::from(config.concurrency));
    let mut report = checker::check(&history, &stored, &processed, config.ordering, cap);
    report.processing.torn_lines = torn;
    write_publish_log(dir.path(), &history)?;

    let keep = config.keep || (config.keep_invalid && (!report.is_valid() || !drained));
    let dir = if keep { Some(dir.keep()) } else { None };
    store.finish(keep).await?;
    let stats = &proxy.stats;
    Ok(ChaosOutcome {
        report,
        faults: counts,
        drained,
        elapsed: started.elapsed(),
        publish_elapsed,
        last_core_totals,
        proxy: (
            stats.connections.load(Ordering::Relaxed),
            stats.resets.load(Ordering::Relaxed),
            stats.frozen.load(Ordering::Relaxed),
            stats.bytes.load(Ordering::Relaxed),
        ),
        webhook: webhook_counts.map(|c| {
            (
                c.ok.load(Ordering::Relaxed),
                c.errors.load(Ordering::Relaxed),
                c.hangs.load(Ordering::Relaxed),
            )
        }),
        dir,
    })
}

/// Every stored event with its state, ordering key and idempotency key.
/// The state and key come through core's store code (`list_events`); the
/// idempotency key, which no API returns, straight from the events table.
async fn read_store(url: &str, at_most_once: &[String]) -> anyhow::Result<Vec<checker::Stored>> {
    use sqlx::Connection;
    let query = "SELECT seq, idempotency_key FROM events";
    let rows: Vec<(i64, Option<String>)> = if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        sqlx::query_as(query).fetch_all(&mut conn).await?
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::query_as(query).fetch_all(&mut conn).await?
    };
    let mut idempotency_keys: HashMap<Seq, String> = HashMap::with_capacity(rows.len());
    for (seq, ik) in rows {
        if let (Ok(seq), Some(ik)) = (Seq::try_from(seq), ik) {
            idempotency_keys.insert(seq, ik);
        }
    }
    Ok(all_events(url)
        .await?
        .into_iter()
        .map(|view| checker::Stored {
            seq: view.event.seq,
            idempotency_key: idempotency_keys.remove(&view.event.seq),
            key: view.event.key,
            state: view.state,
            at_most_once: at_most_once.contains(&view.event.kind),
        })
        .collect())
}

/// Writes the publishers' log (`ack IDEMPOTENCY_KEY SEQ KEY` with `-` for
/// no key / `unknown IDEMPOTENCY_KEY KEY`) for a post-mortem.
fn write_publish_log(dir: &Path, history: &History) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("publishes.log"))?);
    let key_of = |ik: &str| {
        history
            .attempted
            .get(ik)
            .cloned()
            .flatten()
            .unwrap_or_else(|| "-".into())
    };
    let mut acked: Vec<(&String, &u64)> = history.acked.iter().collect();
    acked.sort_by_key(|(_, seq)| **seq);
    for (ik, seq) in acked {
        writeln!(out, "ack {ik} {seq} {}", key_of(ik))?;
    }
    let mut unknown: Vec<&String> = history.unknown.iter().collect();
    unknown.sort();
    for ik in unknown {
        writeln!(out, "unknown {ik} {}", key_of(ik))?;
    }
    out.flush()?;
    Ok(())
}
