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
//!   publish→result latency, and CPU per event of core, the processor, the
//!   PostgreSQL server and the publisher (`bench/cpu.rs`).
//! * `rest`: W1 published with REST batches instead.
//! * `open-loop`: a fixed publish rate (half the W1 rate by default) and the
//!   latency it gets.
//! * `ceiling`: the store alone taking the same event and result rows in
//!   large batched transactions, through ackflow's own store code, with no
//!   service and no network hop in between: on one connection, and
//!   pipelined on two as core runs them; W1 is quoted as a ratio of each.
//!   See `bench/ceiling.rs`.
//! * `backlog`: a 1,000,000-event backlog built with no processor (core's
//!   RSS), then its drain.
//! * `sweep`: W1 (shorter) for several window sizes.
//! * `w2`: keyed parallel processing — sleep events over many keys with
//!   default flags, against the ideal (concurrency ÷ handler time); `w2-control`
//!   the same over one key (strict order). See `bench/w2.rs`.
//! * `crash`: the active processor lost with the window full of W2 events,
//!   three ways: killed (SIGKILL) and restarted at once; killed with two hot
//!   standbys waiting (`--partitions 1`); frozen (SIGSTOP) with two standbys
//!   waiting. Time until
//!   another life is connected, its first result, its crash suspects
//!   resolved, and the results rate back at 90 % of the rate before. See
//!   `bench/crash.rs`.
//! * `group`: processors sharing the keys: W2 with 1, 2 and 3 processors
//!   (events/s, CPU per event per process), one of three killed or frozen
//!   with the window full (until its keys' next result elsewhere), and two
//!   joining one that runs a full window (how long moved keys pause). See
//!   `bench/group.rs`.
//! * `fair`: 1,000 sha256 events alone, then interleaved with 1,000 events
//!   of a webhook that takes 3 s per call: time to the last sha256 result
//!   (a slow endpoint must hold back its own kind only). See `bench/fair.rs`.
//! * `failover`: two cores on one PostgreSQL database, the leader killed
//!   (`kill -9`) or frozen (`SIGSTOP`): time until the standby leads,
//!   accepts a publish and stores its result. See `bench/failover.rs`.
//! * `skew`: runs A–G over skewed keys — keyed webhook events over skewed keys, some
//!   slow, refused, busy once or hanging, some delivered at most once: drain
//!   time, retransmits, RTT and RTO, results by status. See `bench/skew.rs`.
//!   It takes minutes, so it runs only when named (`--only skew`).
//! * `overload`: one `PublishStream` offered 200,000 events/s for 10 s
//!   with a processor connected: what core accepts, the drain, and second
//!   by second the backlog against the in-memory tail. Only when named.
//!   See `bench/overload.rs`.
//!
//! Latency is measured from the moment the producer hands a request to its
//! stream to the result's `stored_at_us` (the start of the commit that
//! stored it), both wall-clock microseconds on this machine.

// The allocator core runs with: the ceiling runs core's store code in this
// process, and must run it as core does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

#[path = "bench/args.rs"]
mod args;
#[path = "bench/ceiling.rs"]
mod ceiling;
#[path = "bench/cpu.rs"]
mod cpu;
#[path = "bench/crash.rs"]
mod crash;
#[path = "bench/failover.rs"]
mod failover;
#[path = "bench/fair.rs"]
mod fair;
#[path = "bench/group.rs"]
mod group;
#[path = "bench/measure.rs"]
mod measure;
#[path = "bench/overload.rs"]
mod overload;
#[path = "bench/sections.rs"]
mod sections;
#[path = "bench/skew.rs"]
mod skew;
#[path = "bench/stalls.rs"]
mod stalls;
#[path = "bench/w2.rs"]
mod w2;

use self::args::*;
use self::measure::*;
use self::sections::*;
use self::stalls::{DbActivity, Stalls};

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
    w1_cpu: Option<cpu::CpuPerEvent>,
    w1_accepted: Option<f64>,
    w1_latency: Option<Latency>,
    w1_processor_mb: Option<f64>,
    rest_rate: Option<f64>,
    /// The target rate and each run's latency.
    open_loop: Option<(f64, Vec<Latency>)>,
    ceiling: Option<f64>,
    ceiling_pipelined: Option<f64>,
    backlog_core_mb: Option<f64>,
    backlog_drain: Option<f64>,
    backlog_processor_mb: Option<f64>,
    w2: Option<w2::W2>,
    w2_control: Option<w2::W2>,
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
/// seq, read back from the store in one query over the two tables' primary
/// keys (no payload, no page round trips: 2,000,000 rows in seconds, where
/// reading them through the store's event pages took minutes). With
/// `--retention` short enough to prune during the run, pruned events are
/// simply absent (never the highest seq, which retention keeps); the latency
/// figures then cover the survivors. Every event left must have its result.
async fn stored_times(
    env: &Env,
    first: u64,
    last: u64,
) -> anyhow::Result<HashMap<u64, (i64, i64)>> {
    use sqlx::Connection;
    const SQL: &str = "SELECT e.seq, e.published_at_us, r.stored_at_us FROM events e \
                       LEFT JOIN results r ON r.seq = e.seq WHERE e.seq BETWEEN $1 AND $2";
    let started = Instant::now();
    let url = env.store_url();
    let (first, last) = (first as i64, last as i64);
    let rows: Vec<(i64, i64, Option<i64>)> = if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&url).await?;
        sqlx::query_as(SQL)
            .bind(first)
            .bind(last)
            .fetch_all(&mut conn)
            .await?
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        sqlx::query_as(SQL)
            .bind(first)
            .bind(last)
            .fetch_all(&mut conn)
            .await?
    };
    let mut times = HashMap::with_capacity(rows.len());
    for (seq, published, stored) in rows {
        let stored = stored.ok_or_else(|| anyhow::anyhow!("seq {seq} has no result"))?;
        times.insert(seq as u64, (published, stored));
    }
    println!(
        "  (read back {} events' times in {} ms)",
        times.len(),
        started.elapsed().as_millis()
    );
    Ok(times)
}

/// What a stream run's stored times say.
struct Figures {
    /// End to end: from the first request sent to the last result stored.
    rate: f64,
    /// Publish (request handed to the stream) → result stored.
    latency: Latency,
    /// The same in two parts: request sent → the start of the commit that
    /// stored the event (the ingest queue and the group commit's wait), and
    /// that commit's start → its result stored (the commit, delivery,
    /// processing, the ack and the result writer's wait).
    to_commit: Latency,
    commit_to_result: Latency,
    /// Every event's times, for `stalls::Stalls`.
    times: Vec<stalls::Times>,
}

/// End-to-end rate and latency of a stream run whose events are all stored.
async fn stream_figures(env: &Env, run: &Published) -> anyhow::Result<Figures> {
    let first = *run.seqs.iter().min().unwrap_or(&1);
    let last = *run.seqs.iter().max().unwrap_or(&0);
    let times = stored_times(env, first, last).await?;
    let mut latencies = Vec::with_capacity(run.seqs.len());
    let mut to_commit = Vec::with_capacity(run.seqs.len());
    let mut commit_to_result = Vec::with_capacity(run.seqs.len());
    let mut all = Vec::with_capacity(run.seqs.len());
    let mut last_stored = i64::MIN;
    for (seq, sent) in run.seqs.iter().zip(&run.sent_us) {
        let Some((published, stored)) = times.get(seq) else {
            continue; // pruned by a short --retention
        };
        last_stored = last_stored.max(*stored);
        latencies.push(stored - sent);
        to_commit.push(published - sent);
        commit_to_result.push(stored - published);
        all.push(stalls::Times {
            seq: *seq,
            sent: *sent,
            published: *published,
            stored: *stored,
        });
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
    Ok(Figures {
        rate: per_sec(run.seqs.len() as u64, span),
        latency: Latency::of(latencies),
        to_commit: Latency::of(to_commit),
        commit_to_result: Latency::of(commit_to_result),
        times: all,
    })
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
        Self::with_processor_flags(env, core, &[]).await
    }

    /// `core` with a processor given `flags`.
    async fn with_processor_flags(env: &Env, core: Core, flags: &[&str]) -> anyhow::Result<Self> {
        let processor = start_processor(env.dir(), &core.grpc_url(), flags)?;
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
        Section::Crash,
        Section::Group,
    ] {
        if !runs(section) {
            continue;
        }
        if section == Section::OpenLoop {
            for run in 1..=args.open_loop_runs {
                let env = Env::new(backend, args.core_flags()).await?;
                section_open_loop(&env, args, run, &mut summary).await?;
                env.finish().await?;
                // The store alone at the same rate, after the same set-up
                // (a checkpoint, a new database), so the two compare.
                let env = Env::new(backend, args.core_flags()).await?;
                let rate = summary.open_loop.as_ref().map_or(20_000.0, |(r, _)| *r);
                let floor =
                    ceiling::open_loop_floor(&env, rate, args.open_loop_secs, args.payload).await?;
                line(
                    "the store alone at this rate, arrival → result's commit",
                    floor,
                );
                env.finish().await?;
            }
            continue;
        }
        let env = Env::new(backend, args.core_flags()).await?;
        match section {
            Section::Publish => section_publish(&env, args).await?,
            Section::W1 => section_w1(&env, args, &mut summary).await?,
            Section::Rest => section_rest(&env, args, &mut summary).await?,
            Section::Ceiling => ceiling::section_ceiling(&env, args, &mut summary).await?,
            Section::Backlog => section_backlog(&env, args, &mut summary).await?,
            Section::W2 => w2::section_w2(&env, args, &mut summary).await?,
            Section::W2Control => w2::section_w2_control(&env, args, &mut summary).await?,
            Section::Crash => crash::section_crash(&env, args).await?,
            Section::Group => group::section_group(&env, args).await?,
            Section::OpenLoop
            | Section::Sweep
            | Section::Skew
            | Section::Fair
            | Section::Failover
            | Section::Overload => {
                unreachable!("not in this list: run below")
            }
        }
        env.finish().await?;
    }
    if runs(Section::Sweep) {
        section_sweep(backend, args).await?;
    }
    // Minutes per store, most of it waiting out retries: only when asked.
    if runs(Section::Fair) {
        fair::section_fair(backend, args).await?;
    }
    if runs(Section::Failover) {
        failover::section_failover(backend, args).await?;
    }
    if args.only.contains(&Section::Skew) {
        skew::section_skew(backend, args).await?;
    }
    if args.only.contains(&Section::Overload) {
        let env = Env::new(backend, args.core_flags()).await?;
        overload::section_overload(&env, args).await?;
        env.finish().await?;
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
    row(
        "W1 CPU per event, µs: core / processor / PostgreSQL / publisher",
        &|s| {
            cell(s.w1_cpu.map(|c| {
                format!(
                    "{:.1} / {:.1} / {:.1} / {:.1}",
                    c.core, c.processor, c.postgres, c.bench
                )
            }))
        },
    );
    row("open-loop target rate, events/s", &|s| {
        events(s.open_loop.as_ref().map(|(r, _)| *r))
    });
    row(
        "open-loop latency p50 / p99 / max, ms, each run",
        &|s| match &s.open_loop {
            Some((_, runs)) => runs
                .iter()
                .map(|l| lat(Some(*l)))
                .collect::<Vec<_>>()
                .join(" · "),
            None => lat(None),
        },
    );
    row("REST batches end to end, events/s", &|s| {
        events(s.rest_rate)
    });
    row("ceiling (store alone), one connection, events/s", &|s| {
        events(s.ceiling)
    });
    row("ceiling (store alone), pipelined, events/s", &|s| {
        events(s.ceiling_pipelined)
    });
    let ratio = |w: Option<f64>, c: Option<f64>| match (w, c) {
        (Some(w), Some(c)) => format!("{:.2}", w / c),
        _ => "—".into(),
    };
    row("ratio W1 / ceiling, one connection", &|s| {
        ratio(s.w1_rate, s.ceiling)
    });
    row("ratio W1 / ceiling, pipelined", &|s| {
        ratio(s.w1_rate, s.ceiling_pipelined)
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
