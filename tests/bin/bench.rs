//! ackflow-bench: throughput, latency and memory of the real binaries, and
//! the ceiling they are compared with.
//!
//! Every section starts a fresh core (a new PostgreSQL database, or SQLite in
//! a temp dir) and, where it delivers, one processor. Sections:
//!
//! * `publish`: publish throughput with no processor (single REST requests,
//!   REST batches, one gRPC `PublishStream`), then the drain of that backlog.
//! * `w1`: workload W1 — N events of kind `sha256` with 256-byte payloads,
//!   one producer on one `PublishStream`, one processor — as a closed burst:
//!   end-to-end events/s from the first publish to the last stored result,
//!   and publish→result latency.
//! * `rest`: W1 published with REST batches instead.
//! * `open-loop`: a fixed publish rate (half the W1 rate by default) and the
//!   latency it gets.
//! * `ceiling`: the store alone taking the same event and result rows in
//!   large batched transactions, through ackflow's own store code, with no
//!   service and no network hop in between; W1 is quoted as a ratio of it.
//! * `backlog`: a 1,000,000-event backlog built with no processor (core's
//!   RSS), then its drain.
//! * `sweep`: W1 (shorter) for several window sizes.
//! * `w2`: keyed parallel processing — sleep events over many keys with
//!   default flags, against the ideal (concurrency ÷ handler time); `w2-control`
//!   the same over one key (strict order). See `bench/w2.rs`.
//!
//! Latency is measured from the moment the producer hands a request to its
//! stream to the result's `stored_at_us` (the start of the commit that
//! stored it), both wall-clock microseconds on this machine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ackflow_core::model::{AppendBatch, NewEvent, ResultRow, ResultStatus, now_us};
use ackflow_proto::v1 as pb;
use ackflow_tests::{Core, PgDb, Proc, post_json, start_processor, wait_for};
use clap::{Parser, ValueEnum};
use tokio_stream::StreamExt;

#[path = "bench/w2.rs"]
mod w2;

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
struct Args {
    /// Stores to measure.
    #[arg(long, value_enum, default_value = "both")]
    store: StoreChoice,
    /// Sections to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Events in W1 (closed burst), the REST variant, the ceiling and the
    /// PublishStream part of `publish` (its REST batches: at most 50,000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Core's window (`--window`) outside the sweep.
    #[arg(long, default_value_t = 256)]
    window: u32,
    /// Events published with single REST requests (section `publish`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    rest_events: u64,
    /// Concurrent clients for single REST requests.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// Events per REST batch request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Concurrent connections publishing REST batches.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    batch_clients: u64,
    /// Open-loop publish rate in events/s (default: half the W1 rate just
    /// measured, or 20,000 when W1 did not run).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Duration of the open-loop run in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    open_loop_secs: u64,
    /// Events in the backlog built with no processor connected.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    backlog: u64,
    /// Windows of the sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024")]
    sweep_windows: Vec<u32>,
    /// Core's `--retention` in every section (core's default: 7d, so a
    /// run this short prunes nothing; `1s` keeps the pruner busy throughout,
    /// to measure what pruning costs the hot path).
    #[arg(long)]
    retention: Option<String>,
    /// A flag for every core the bench starts (repeatable), e.g.
    /// `--core-arg=--at-most-once --core-arg=sha256` to measure W1 with its
    /// events delivered at most once.
    #[arg(long = "core-arg", allow_hyphen_values = true, value_name = "FLAG")]
    core_args: Vec<String>,
    /// Events per window in the sweep.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    sweep_events: u64,
    /// Events in W2 (sleep events over --w2-keys keys, default core and processor flags).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    w2_events: u64,
    /// Keys in W2, drawn uniformly.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    w2_keys: u64,
    /// Milliseconds each W2 event sleeps.
    #[arg(long, default_value_t = 5)]
    w2_sleep_ms: u64,
    /// Events in the W2 control (one key: strict order, one call at a time).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    w2_control_events: u64,
}

impl Args {
    /// Flags for every core: `--retention` when set, then `--core-arg`s.
    fn core_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(retention) = &self.retention {
            flags.extend(["--retention".to_string(), retention.clone()]);
        }
        flags.extend(self.core_args.iter().cloned());
        flags
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreChoice {
    /// PostgreSQL only.
    Postgres,
    /// SQLite only.
    Sqlite,
    /// PostgreSQL, then SQLite.
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Section {
    /// Publish throughput with no processor (single REST requests, REST
    /// batches, one PublishStream), then the drain of that backlog.
    Publish,
    /// W1 as a closed burst: end-to-end events/s, publish accepted, latency.
    W1,
    /// W1 published with REST batches: end-to-end events/s and latency.
    Rest,
    /// A fixed publish rate on one PublishStream and the latency it gets.
    OpenLoop,
    /// The store alone taking the same rows in large transactions; W1 as a
    /// ratio of it.
    Ceiling,
    /// A backlog built with no processor (core RSS), then its drain.
    Backlog,
    /// W1 (shorter) for each window of --sweep-windows.
    Sweep,
    /// W2: sleep events over many keys, default flags, against the ideal.
    W2,
    /// W2 over one key: strict order, one call at a time.
    W2Control,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }
}

/// A fresh store (database or directory) for one section.
struct Env {
    dir: tempfile::TempDir,
    db: Option<PgDb>,
    /// Flags for every core: `--retention` when set, then `--core-arg`s.
    core_args: Vec<String>,
}

impl Env {
    async fn new(backend: Backend, core_args: Vec<String>) -> anyhow::Result<Self> {
        let db = match backend {
            Backend::Postgres => {
                checkpoint().await?;
                Some(PgDb::create("bench").await?)
            }
            Backend::Sqlite => None,
        };
        Ok(Self {
            dir: tempfile::tempdir()?,
            db,
            core_args,
        })
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL core is given (`None`: SQLite in its data dir).
    fn core_url(&self) -> Option<&str> {
        self.db.as_ref().map(|db| db.url.as_str())
    }

    /// The URL to open the same store directly.
    fn store_url(&self) -> String {
        match &self.db {
            Some(db) => db.url.clone(),
            None => format!("sqlite:{}", self.dir().join("data/ackflow.db").display()),
        }
    }

    async fn core(&self, window: u32) -> anyhow::Result<Core> {
        let window = window.to_string();
        self.core_with(&["--window", &window]).await
    }

    /// A core with `extra` flags and the bench's own (`core_args`), else defaults.
    async fn core_with(&self, extra: &[&str]) -> anyhow::Result<Core> {
        let mut args = extra.to_vec();
        args.extend(self.core_args.iter().map(String::as_str));
        Core::start(self.dir(), self.core_url(), &args).await
    }

    async fn finish(self) -> anyhow::Result<()> {
        if let Some(db) = self.db {
            db.drop_db().await?;
        }
        Ok(())
    }
}

/// Starts every PostgreSQL section from a fresh checkpoint, so that one
/// section's WAL does not make the next pay for a checkpoint (and for the
/// full-page writes after it): the figures vary less from run to run.
async fn checkpoint() -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&ackflow_tests::pg_server_url()).await?;
    sqlx::query("CHECKPOINT").execute(&mut conn).await?;
    Ok(())
}

/// Figures kept for the summary table.
#[derive(Default)]
struct Summary {
    w1_rate: Option<f64>,
    w1_accepted: Option<f64>,
    w1_latency: Option<Latency>,
    w1_processor_mb: Option<f64>,
    rest_rate: Option<f64>,
    open_loop: Option<(f64, Latency)>,
    ceiling: Option<f64>,
    backlog_core_mb: Option<f64>,
    backlog_drain: Option<f64>,
    backlog_processor_mb: Option<f64>,
    w2: Option<w2::W2>,
    w2_control: Option<w2::W2>,
}

#[derive(Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    /// From microsecond samples; figures in milliseconds.
    fn of(mut samples: Vec<i64>) -> Self {
        samples.sort_unstable();
        let at = |p: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() - 1) as f64 * p).round() as usize;
            samples[i] as f64 / 1000.0
        };
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.p50, self.p99, self.max
        )
    }
}

fn per_sec(events: u64, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(1e-9)
}

fn line(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<64} {value}");
}

fn rate(events_per_sec: f64) -> String {
    format!("{events_per_sec:.0} events/s")
}

fn payload(size: usize, n: u64) -> String {
    let prefix = format!("{n}:");
    format!(
        "\"{prefix}{}\"",
        "x".repeat(size.saturating_sub(prefix.len() + 2))
    )
}

/// Peak resident set size of a set of processes, sampled every 100 ms.
struct RssSampler {
    peaks: Arc<std::sync::Mutex<HashMap<u32, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> Self {
        let peaks = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let shared = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let mut peaks = shared.lock().expect("sampler lock");
                for pid in &pids {
                    if let Some(kb) = rss_kb(*pid) {
                        let peak = peaks.entry(*pid).or_insert(0);
                        *peak = (*peak).max(kb);
                    }
                }
            }
        });
        Self { peaks, task }
    }

    /// Peak RSS in MB of `pid` so far.
    fn peak_mb(&self, pid: u32) -> f64 {
        let kb = rss_kb(pid).unwrap_or(0);
        let peak = self.peaks.lock().expect("sampler lock").get(&pid).copied();
        peak.unwrap_or(0).max(kb) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Current resident set size of `pid` in kB, from `/proc`.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn pid(proc: &Proc) -> u32 {
    proc.pid().unwrap_or(0)
}

/// Peak resident set sizes of a core and its processor, in MB.
#[derive(Clone, Copy)]
struct Peaks {
    core_mb: f64,
    processor_mb: f64,
}

impl std::fmt::Display for Peaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "core {:.1} MB, processor {:.1} MB",
            self.core_mb, self.processor_mb
        )
    }
}

/// What one `PublishStream` run produced: per request, when it was handed
/// to the stream and the seq it got.
struct Published {
    sent_us: Vec<i64>,
    seqs: Vec<u64>,
    /// From the first request to the last reply.
    took: Duration,
}

/// Publishes `n` events on one stream, as fast as the stream takes them
/// (`per_sec: None`) or at a fixed rate.
async fn publish_stream(
    core: &Core,
    n: u64,
    size: usize,
    per_sec: Option<f64>,
) -> anyhow::Result<Published> {
    let mut client = core.ingest().await?;
    let sent: Arc<Vec<AtomicI64>> = Arc::new((0..n).map(|_| AtomicI64::new(0)).collect());
    let request = move |i: u64| pb::PublishRequest {
        kind: "sha256".into(),
        payload: payload(size, i).into_bytes(),
        request_id: i,
        ..Default::default()
    };
    let started = Instant::now();
    let requests: std::pin::Pin<Box<dyn tokio_stream::Stream<Item = pb::PublishRequest> + Send>> =
        match per_sec {
            None => {
                let sent = sent.clone();
                Box::pin(tokio_stream::iter(0..n).map(move |i| {
                    sent[i as usize].store(now_us(), Ordering::Relaxed);
                    request(i)
                }))
            }
            Some(per_sec) => {
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                let sent = sent.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(1));
                    let mut next = 0u64;
                    while next < n {
                        tick.tick().await;
                        let due = ((started.elapsed().as_secs_f64() * per_sec) as u64).min(n);
                        while next < due {
                            sent[next as usize].store(now_us(), Ordering::Relaxed);
                            if tx.send(request(next)).await.is_err() {
                                return;
                            }
                            next += 1;
                        }
                    }
                });
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
            }
        };
    let mut replies = client.publish_stream(requests).await?.into_inner();
    let mut seqs = vec![0; n as usize];
    let mut got = 0;
    while let Some(reply) = replies.message().await? {
        seqs[reply.request_id as usize] = reply.seq;
        got += 1;
    }
    anyhow::ensure!(got == n, "only {got} of {n} replies");
    let took = started.elapsed();
    let sent_us = sent.iter().map(|t| t.load(Ordering::Relaxed)).collect();
    Ok(Published {
        sent_us,
        seqs,
        took,
    })
}

/// `(published_at_us, stored_at_us)` of every event in `first..=last`, by
/// seq, read back from the store. With `--retention` short enough to prune
/// during the run, pruned events are simply absent (never the highest seq,
/// which retention keeps); the latency figures then cover the survivors.
async fn stored_times(
    env: &Env,
    first: u64,
    last: u64,
) -> anyhow::Result<HashMap<u64, (i64, i64)>> {
    let store = ackflow_core::store::open(&env.store_url()).await?;
    let mut times = HashMap::with_capacity((last + 1 - first) as usize);
    let mut after = first - 1;
    while after < last {
        let page = store.list_events(after, 1000, None).await?;
        let Some(end) = page.last() else { break };
        after = end.event.seq;
        for view in page.into_iter().filter(|v| v.event.seq <= last) {
            let result = view
                .result
                .ok_or_else(|| anyhow::anyhow!("seq {} has no result", view.event.seq))?;
            times.insert(
                view.event.seq,
                (view.event.published_at_us, result.stored_at_us),
            );
        }
    }
    Ok(times)
}

/// End-to-end rate and latency of a stream run whose events are all stored.
async fn stream_figures(env: &Env, run: &Published) -> anyhow::Result<(f64, Latency)> {
    let first = *run.seqs.iter().min().unwrap_or(&1);
    let last = *run.seqs.iter().max().unwrap_or(&0);
    let times = stored_times(env, first, last).await?;
    let mut latencies = Vec::with_capacity(run.seqs.len());
    let mut last_stored = i64::MIN;
    for (seq, sent) in run.seqs.iter().zip(&run.sent_us) {
        let Some((_, stored)) = times.get(seq) else {
            continue; // pruned by a short --retention
        };
        last_stored = last_stored.max(*stored);
        latencies.push(stored - sent);
    }
    if latencies.len() < run.seqs.len() {
        println!(
            "  (latency over the {} of {} events not yet pruned)",
            latencies.len(),
            run.seqs.len()
        );
    }
    let first_sent = run.sent_us.iter().min().copied().unwrap_or(0);
    let span = Duration::from_micros((last_stored - first_sent).max(1) as u64);
    Ok((per_sec(run.seqs.len() as u64, span), Latency::of(latencies)))
}

/// Waits until every event up to `last` (the highest seq published) is
/// resolved. The snapshot is refreshed every 200 ms, so it is not enough
/// that the floor passed the head it shows.
async fn wait_drained(core: &Core, last: u64) -> anyhow::Result<pb::Snapshot> {
    wait_for(
        "every event resolved",
        Duration::from_secs(3600),
        || async {
            let s = core.snapshot().await.ok()?;
            (s.head >= last && s.acked_floor > s.head).then_some(s)
        },
    )
    .await
}

fn last_seq(run: &Published) -> u64 {
    run.seqs.iter().copied().max().unwrap_or(0)
}

async fn wait_connected(core: &Core) -> anyhow::Result<()> {
    wait_for(
        "the processor to connect",
        Duration::from_secs(60),
        || async {
            let s = core.snapshot().await.ok()?;
            let connection = s.processor?.connection;
            (connection == pb::ProcessorConnection::Running as i32).then_some(())
        },
    )
    .await
}

/// A core with a connected processor.
struct Pair {
    core: Core,
    processor: Proc,
}

impl Pair {
    async fn start(env: &Env, window: u32) -> anyhow::Result<Self> {
        Self::with_core(env, env.core(window).await?).await
    }

    /// `core` with a processor on default flags.
    async fn with_core(env: &Env, core: Core) -> anyhow::Result<Self> {
        let processor = start_processor(env.dir(), &core.grpc_url(), &[])?;
        wait_connected(&core).await?;
        Ok(Self { core, processor })
    }

    fn sampler(&self) -> RssSampler {
        RssSampler::start(vec![pid(&self.core.proc), pid(&self.processor)])
    }

    /// Peak RSS of both processes as seen by `rss` (from [`Pair::sampler`]).
    fn peaks(&self, rss: &RssSampler) -> Peaks {
        Peaks {
            core_mb: rss.peak_mb(pid(&self.core.proc)),
            processor_mb: rss.peak_mb(pid(&self.processor)),
        }
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.processor.terminate().await?;
        self.core.proc.terminate().await?;
        Ok(())
    }
}

async fn rest_single(core: &Core, args: &Args) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (total, clients) = (args.rest_events, args.clients);
    for client in 0..clients {
        let (http, size) = (core.http, args.payload);
        tasks.spawn(async move {
            for n in (client..total).step_by(clients as usize) {
                let body = format!(r#"{{"kind":"sha256","payload":{}}}"#, payload(size, n));
                let (status, text) = post_json(http, "/v1/events", &body).await?;
                anyhow::ensure!(status == 202, "publish failed: {status} {text}");
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}

/// Publishes `total` events as REST batches of `args.batch` (the last one
/// may be smaller), batch `b` on connection `b % args.batch_clients`;
/// returns the send time of the first batch.
async fn rest_batches(core: &Core, args: &Args, total: u64) -> anyhow::Result<i64> {
    let first_sent = now_us();
    let mut tasks = tokio::task::JoinSet::new();
    let (size, batch, clients) = (args.payload, args.batch, args.batch_clients);
    let batches = total.div_ceil(batch);
    for client in 0..clients {
        let http = core.http;
        tasks.spawn(async move {
            for b in (client..batches).step_by(clients as usize) {
                let events: Vec<String> = (b * batch..total.min((b + 1) * batch))
                    .map(|n| format!(r#"{{"kind":"sha256","payload":{}}}"#, payload(size, n)))
                    .collect();
                let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
                let (status, text) = post_json(http, "/v1/events/batch", &body).await?;
                anyhow::ensure!(status == 202, "batch failed: {status} {text}");
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(first_sent)
}

/// Starts a processor on `core`, whose backlog ends at seq `last`, waits
/// until every event is resolved and stops both: the drain rate (from the
/// processor's start) and the peak RSS during the drain.
async fn drain(env: &Env, core: Core, last: u64) -> anyhow::Result<(f64, Peaks)> {
    let started = Instant::now();
    let processor = start_processor(env.dir(), &core.grpc_url(), &[])?;
    let pair = Pair { core, processor };
    let rss = pair.sampler();
    wait_drained(&pair.core, last).await?;
    let drain = per_sec(last, started.elapsed());
    let peaks = pair.peaks(&rss);
    pair.stop().await?;
    Ok((drain, peaks))
}

async fn section_publish(env: &Env, args: &Args) -> anyhow::Result<()> {
    let core = env.core(args.window).await?;
    let core_pid = pid(&core.proc);
    let rss = RssSampler::start(vec![core_pid]);
    let took = rest_single(&core, args).await?;
    line(
        &format!("publish, single REST requests ({} clients)", args.clients),
        rate(per_sec(args.rest_events, took)),
    );
    let batch_total = args.events.min(50_000);
    let started = Instant::now();
    rest_batches(&core, args, batch_total).await?;
    line(
        &format!(
            "publish, REST batches of {} ({} connections)",
            args.batch, args.batch_clients
        ),
        rate(per_sec(batch_total, started.elapsed())),
    );
    let run = publish_stream(&core, args.events, args.payload, None).await?;
    line(
        "publish, one gRPC PublishStream",
        rate(per_sec(args.events, run.took)),
    );
    line(
        "core peak RSS while publishing",
        format!("{:.1} MB", rss.peak_mb(core_pid)),
    );
    drop(rss);
    let backlog = last_seq(&run);
    let (drain, peaks) = drain(env, core, backlog).await?;
    line(
        &format!("drain of that {backlog}-event backlog"),
        rate(drain),
    );
    line("peak RSS during the drain", peaks);
    Ok(())
}

async fn section_w1(env: &Env, args: &Args, summary: &mut Summary) -> anyhow::Result<()> {
    let pair = Pair::start(env, args.window).await?;
    let rss = pair.sampler();
    let run = publish_stream(&pair.core, args.events, args.payload, None).await?;
    wait_drained(&pair.core, last_seq(&run)).await?;
    let peaks = pair.peaks(&rss);
    pair.stop().await?;
    let (e2e, latency) = stream_figures(env, &run).await?;
    let accepted = per_sec(args.events, run.took);
    line(
        &format!("W1 end to end ({} events, closed burst)", args.events),
        rate(e2e),
    );
    line("W1 publish accepted", rate(accepted));
    line("W1 publish→result latency", latency);
    line("W1 peak RSS", peaks);
    summary.w1_rate = Some(e2e);
    summary.w1_accepted = Some(accepted);
    summary.w1_latency = Some(latency);
    summary.w1_processor_mb = Some(peaks.processor_mb);
    Ok(())
}

async fn section_rest(env: &Env, args: &Args, summary: &mut Summary) -> anyhow::Result<()> {
    let pair = Pair::start(env, args.window).await?;
    let rss = pair.sampler();
    let total = args.events;
    let first_sent = rest_batches(&pair.core, args, total).await?;
    // A fresh store: the events are seqs 1..=total.
    wait_drained(&pair.core, total).await?;
    let peaks = pair.peaks(&rss);
    pair.stop().await?;
    let times = stored_times(env, 1, total).await?;
    let last_stored = times.values().map(|(_, s)| *s).max().unwrap_or(first_sent);
    let e2e = per_sec(
        total,
        Duration::from_micros((last_stored - first_sent).max(1) as u64),
    );
    let latency = Latency::of(times.values().map(|(p, s)| s - p).collect());
    line(
        &format!(
            "REST end to end ({total} events, batches of {}, {} connections)",
            args.batch, args.batch_clients
        ),
        rate(e2e),
    );
    line(
        "REST latency, store's published_at → result stored",
        latency,
    );
    line("REST peak RSS", peaks);
    summary.rest_rate = Some(e2e);
    Ok(())
}

async fn section_open_loop(env: &Env, args: &Args, summary: &mut Summary) -> anyhow::Result<()> {
    let target = args
        .rate
        .map(|r| r as f64)
        .or(summary.w1_rate.map(|r| (r / 2.0).round()))
        .unwrap_or(20_000.0);
    let n = (target * args.open_loop_secs as f64) as u64;
    let pair = Pair::start(env, args.window).await?;
    let rss = pair.sampler();
    let run = publish_stream(&pair.core, n, args.payload, Some(target)).await?;
    wait_drained(&pair.core, last_seq(&run)).await?;
    let peaks = pair.peaks(&rss);
    pair.stop().await?;
    let (_, latency) = stream_figures(env, &run).await?;
    line(
        &format!(
            "open loop at {target:.0} events/s for {} s ({n} events)",
            args.open_loop_secs
        ),
        format!("published at {}", rate(per_sec(n, run.took))),
    );
    line("open-loop publish→result latency", latency);
    line("open-loop peak RSS", peaks);
    summary.open_loop = Some((target, latency));
    Ok(())
}

async fn section_ceiling(env: &Env, args: &Args, summary: &mut Summary) -> anyhow::Result<()> {
    const BATCH: u64 = 4096;
    std::fs::create_dir_all(env.dir().join("data"))?;
    let store = ackflow_core::store::open(&env.store_url()).await?;
    let output = "0".repeat(64);
    let started = Instant::now();
    let mut next = 1;
    while next <= args.events {
        let n = BATCH.min(args.events + 1 - next);
        let events: Vec<NewEvent> = (0..n)
            .map(|i| NewEvent {
                kind: "sha256".into(),
                key: None,
                payload: payload(args.payload, next + i).into_bytes(),
                idempotency_key: None,
            })
            .collect();
        let ids: Vec<String> = (0..n).map(|i| format!("{:032x}", next + i)).collect();
        let batch = AppendBatch::one_request(ids, events);
        store.append(next, now_us(), &batch).await?;
        let results: Vec<ResultRow> = (0..n)
            .map(|i| ResultRow {
                seq: next + i,
                status: ResultStatus::Ok,
                output: output.clone(),
                attempt: 1,
                processing_us: 1,
                stored_at_us: now_us(),
            })
            .collect();
        // As core's result writer does: the floor persisted with the batch.
        store.resolve(&results, &[], next + n).await?;
        next += n;
    }
    let ceiling = per_sec(args.events, started.elapsed());
    line(
        &format!(
            "ceiling: the store alone, {} events + results, batches of {BATCH}",
            args.events
        ),
        rate(ceiling),
    );
    if let Some(w1) = summary.w1_rate {
        line(
            "ratio W1 end to end / ceiling",
            format!("{:.2}", w1 / ceiling),
        );
    }
    summary.ceiling = Some(ceiling);
    Ok(())
}

async fn section_backlog(env: &Env, args: &Args, summary: &mut Summary) -> anyhow::Result<()> {
    let core = env.core(args.window).await?;
    let core_pid = pid(&core.proc);
    let rss = RssSampler::start(vec![core_pid]);
    let run = publish_stream(&core, args.backlog, args.payload, None).await?;
    let built_mb = rss.peak_mb(core_pid);
    let idle_mb = rss_kb(core_pid).unwrap_or(0) as f64 / 1024.0;
    line(
        &format!("backlog of {} events built, no processor", args.backlog),
        rate(per_sec(args.backlog, run.took)),
    );
    line(
        "core RSS while building / after",
        format!("peak {built_mb:.1} MB / {idle_mb:.1} MB"),
    );
    drop(rss);
    let (drain, peaks) = drain(env, core, last_seq(&run)).await?;
    line("drain of the backlog", rate(drain));
    line("peak RSS during the drain", peaks);
    if let Some(w1) = summary.w1_processor_mb {
        line(
            "processor peak RSS in W1, for comparison",
            format!("{w1:.1} MB"),
        );
    }
    summary.backlog_core_mb = Some(built_mb);
    summary.backlog_drain = Some(drain);
    summary.backlog_processor_mb = Some(peaks.processor_mb);
    Ok(())
}

async fn section_sweep(backend: Backend, args: &Args) -> anyhow::Result<()> {
    println!(
        "  window sweep, {} events each, closed burst:",
        args.sweep_events
    );
    println!("  | window | events/s | p50 ms | p99 ms | core MB | processor MB |");
    println!("  |---:|---:|---:|---:|---:|---:|");
    for &window in &args.sweep_windows {
        let env = Env::new(backend, args.core_flags()).await?;
        let pair = Pair::start(&env, window).await?;
        let rss = pair.sampler();
        let run = publish_stream(&pair.core, args.sweep_events, args.payload, None).await?;
        wait_drained(&pair.core, last_seq(&run)).await?;
        let peaks = pair.peaks(&rss);
        pair.stop().await?;
        let (e2e, latency) = stream_figures(&env, &run).await?;
        println!(
            "  | {window} | {e2e:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
            latency.p50, latency.p99, peaks.core_mb, peaks.processor_mb
        );
        env.finish().await?;
    }
    Ok(())
}

async fn measure(backend: Backend, args: &Args) -> anyhow::Result<Summary> {
    println!("\n== {} (window {}) ==", backend.name(), args.window);
    let runs = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut summary = Summary::default();
    for section in [
        Section::Publish,
        Section::W1,
        Section::Rest,
        Section::OpenLoop,
        Section::Ceiling,
        Section::Backlog,
        Section::W2,
        Section::W2Control,
    ] {
        if !runs(section) {
            continue;
        }
        let env = Env::new(backend, args.core_flags()).await?;
        match section {
            Section::Publish => section_publish(&env, args).await?,
            Section::W1 => section_w1(&env, args, &mut summary).await?,
            Section::Rest => section_rest(&env, args, &mut summary).await?,
            Section::OpenLoop => section_open_loop(&env, args, &mut summary).await?,
            Section::Ceiling => section_ceiling(&env, args, &mut summary).await?,
            Section::Backlog => section_backlog(&env, args, &mut summary).await?,
            Section::W2 => w2::section_w2(&env, args, &mut summary).await?,
            Section::W2Control => w2::section_w2_control(&env, args, &mut summary).await?,
            Section::Sweep => unreachable!("the sweep makes its own stores"),
        }
        env.finish().await?;
    }
    if runs(Section::Sweep) {
        section_sweep(backend, args).await?;
    }
    Ok(summary)
}

fn summary_table(results: &[(Backend, Summary)]) {
    let cell = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let events = |v: Option<f64>| cell(v.map(|v| format!("{v:.0}")));
    let mb = |v: Option<f64>| cell(v.map(|v| format!("{v:.1} MB")));
    let lat =
        |v: Option<Latency>| cell(v.map(|l| format!("{:.1} / {:.1} / {:.1}", l.p50, l.p99, l.max)));
    println!("\n== summary ==");
    print!("| figure |");
    for (backend, _) in results {
        print!(" {} |", backend.name());
    }
    println!();
    print!("|---|");
    for _ in results {
        print!("---:|");
    }
    println!();
    let row = |label: &str, value: &dyn Fn(&Summary) -> String| {
        print!("| {label} |");
        for (_, summary) in results {
            print!(" {} |", value(summary));
        }
        println!();
    };
    row("W1 end to end, events/s", &|s| events(s.w1_rate));
    row("W1 publish accepted, events/s", &|s| events(s.w1_accepted));
    row("W1 latency p50 / p99 / max, ms", &|s| lat(s.w1_latency));
    row("open-loop target rate, events/s", &|s| {
        events(s.open_loop.map(|(r, _)| r))
    });
    row("open-loop latency p50 / p99 / max, ms", &|s| {
        lat(s.open_loop.map(|(_, l)| l))
    });
    row("REST batches end to end, events/s", &|s| {
        events(s.rest_rate)
    });
    row("ceiling (store alone), events/s", &|s| events(s.ceiling));
    row("ratio W1 / ceiling", &|s| match (s.w1_rate, s.ceiling) {
        (Some(w), Some(c)) => format!("{:.2}", w / c),
        _ => "—".into(),
    });
    row("core peak RSS, backlog built", &|s| mb(s.backlog_core_mb));
    row("backlog drain, events/s", &|s| events(s.backlog_drain));
    row("processor peak RSS, W1 / backlog drain", &|s| {
        format!("{} / {}", mb(s.w1_processor_mb), mb(s.backlog_processor_mb))
    });
    let w2 = |v: Option<w2::W2>| {
        cell(v.map(|w| {
            format!(
                "{:.0} (ideal {:.0}, {:.2} ms/call)",
                w.rate,
                w.ideal(),
                w.handler_ms
            )
        }))
    };
    row("W2 keyed, events/s", &|s| w2(s.w2));
    row("W2 control (one key), events/s", &|s| w2(s.w2_control));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "ackflow-bench: {} events of {} bytes, window {}, {cores} cores; binaries from {}",
        args.events,
        args.payload,
        args.window,
        binaries_dir().display()
    );
    let mut results = Vec::new();
    if matches!(args.store, StoreChoice::Postgres | StoreChoice::Both) {
        results.push((Backend::Postgres, measure(Backend::Postgres, &args).await?));
    }
    if matches!(args.store, StoreChoice::Sqlite | StoreChoice::Both) {
        results.push((Backend::Sqlite, measure(Backend::Sqlite, &args).await?));
    }
    summary_table(&results);
    Ok(())
}

fn binaries_dir() -> PathBuf {
    ackflow_tests::bin("e2e-core")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
