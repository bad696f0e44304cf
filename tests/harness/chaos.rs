//! The chaos runner: the real core and processor on a fresh PostgreSQL
//! database, publishers that log every acknowledged publish, and a seeded
//! schedule of faults. At the end the [`checker`](crate::checker) compares
//! the publishers' log, the store and the processors' processed logs.
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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;
use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::chaos_store::{ChaosStore, RunStore};
use crate::checker::{self, History, Report};
use crate::proxy::Proxy;
use crate::{Core, Proc, all_events, channel, post_json, start_processor, wait_for};

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
    /// Fraction of the keys published over REST (one request each).
    pub rest_fraction: f64,
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
            pg_cluster: ("15".into(), "main".into()),
            core_args: Vec::new(),
            processor_args: Vec::new(),
            drain_timeout: Duration::from_secs(180),
            publish_timeout: Duration::from_secs(1800),
            keep: false,
            keep_invalid: true,
            verbose: false,
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// SIGKILL the processor, then start a new life after `restart_after`.
    KillProcessor { restart_after: Duration },
    /// SIGKILL core, then restart it.
    KillCore,
    /// SIGSTOP the processor, SIGCONT it after `duration`.
    PauseProcessor { duration: Duration },
    /// Reset every proxied connection.
    ProxyReset,
    /// Freeze every proxied connection without closing it.
    ProxyHalfOpen,
    /// Add `latency` to the proxy for `duration`.
    ProxyLatency {
        latency: Duration,
        duration: Duration,
    },
    /// Restart the PostgreSQL server.
    RestartPostgres,
    /// Fill the store's disk, give it room again after `duration`.
    FillDisk { duration: Duration },
}

/// A fault and the point of the workload where it fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Fires once this many publishes were acknowledged.
    pub at_acked: u64,
    /// What happens then.
    pub fault: Fault,
    /// Quiet time after the fault before the next one may fire, so that
    /// faults do not pile up back to back when publishing outruns them.
    pub then_wait: Duration,
}

/// The fault schedule for `config`, a pure function of its seed and counts.
pub fn schedule(config: &ChaosConfig) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let ms = |rng: &mut fastrand::Rng, lo: u64, hi: u64| {
        Duration::from_millis(if hi > lo { rng.u64(lo..=hi) } else { lo })
    };
    let mut faults = Vec::new();
    for _ in 0..config.processor_kills {
        faults.push(Fault::KillProcessor {
            restart_after: ms(&mut rng, 0, 1_000),
        });
    }
    for _ in 0..config.core_kills {
        faults.push(Fault::KillCore);
    }
    for _ in 0..config.pauses {
        faults.push(Fault::PauseProcessor {
            duration: ms(&mut rng, config.pause_ms.0, config.pause_ms.1),
        });
    }
    for _ in 0..config.proxy_resets {
        faults.push(Fault::ProxyReset);
    }
    for _ in 0..config.half_opens {
        faults.push(Fault::ProxyHalfOpen);
    }
    for _ in 0..config.latency_windows {
        faults.push(Fault::ProxyLatency {
            latency: config.latency,
            duration: ms(&mut rng, 1_000, 3_000),
        });
    }
    for _ in 0..config.disk_fills {
        faults.push(Fault::FillDisk {
            duration: ms(&mut rng, config.disk_full_ms.0, config.disk_full_ms.1),
        });
    }
    rng.shuffle(&mut faults);
    let span = |rng: &mut fastrand::Rng, lo: f64, hi: f64| {
        (config.events as f64 * (lo + rng.f64() * (hi - lo))) as u64
    };
    let mut steps: Vec<Step> = faults
        .into_iter()
        .map(|fault| Step {
            at_acked: span(&mut rng, 0.03, 0.95),
            fault,
            then_wait: ms(&mut rng, 200, 1_500),
        })
        .collect();
    if config.pg_restart {
        steps.push(Step {
            at_acked: span(&mut rng, 0.3, 0.7),
            fault: Fault::RestartPostgres,
            then_wait: ms(&mut rng, 200, 1_500),
        });
    }
    steps.sort_by_key(|s| s.at_acked);
    steps
}

/// How many faults of each kind were injected.
#[derive(Debug, Default, Clone)]
pub struct FaultCounts {
    /// SIGKILLs of the processor.
    pub processor_kills: u32,
    /// SIGKILLs of core.
    pub core_kills: u32,
    /// SIGSTOP/SIGCONT pauses of the processor.
    pub pauses: u32,
    /// Resets of every proxied connection.
    pub proxy_resets: u32,
    /// Half-open episodes.
    pub half_opens: u32,
    /// Windows of added latency.
    pub latency_windows: u32,
    /// PostgreSQL restarts.
    pub pg_restarts: u32,
    /// Times the store's disk filled up.
    pub disk_fills: u32,
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
        s.push_str(&self.report.to_string());
        if let Some(dir) = &self.dir {
            s.push_str(&format!("\nlogs kept in {}", dir.display()));
        }
        s
    }
}

/// The key of publish number `n`, used as idempotency key and business key.
fn key(n: u64) -> String {
    format!("k{n}")
}

/// Kind and JSON payload of publish number `n`: mostly `sha256`, some
/// `wordcount` and `sum`, and 1 % `fail` (a failed result is a result too).
fn workload(n: u64, pad: &str) -> (&'static str, String) {
    match n % 100 {
        0 => ("fail", "null".into()),
        1..=9 => ("wordcount", format!(r#""chaos event number {n}""#)),
        10..=19 => ("sum", format!("[{n}, 1, 2]")),
        _ => ("sha256", format!(r#""chaos event {n}{pad}""#)),
    }
}

/// Shared state of the publishers.
#[derive(Clone)]
struct Publishing {
    grpc: SocketAddr,
    http: SocketAddr,
    /// Acknowledged publishes so far (first acknowledgement of each key).
    acked: Arc<AtomicU64>,
    /// Keys resolved so far: acknowledged or given up.
    resolved: Arc<AtomicU64>,
    /// Only keys below this number may be published yet: the schedule
    /// moves it forward as faults fire, so publishing cannot outrun them.
    gate: watch::Receiver<u64>,
    /// Gives up everything still unacknowledged.
    deadline: tokio::time::Instant,
    /// Attempts with an unknown outcome before a key is given up.
    max_attempts: u32,
    /// Appended to every `sha256` payload ([`ChaosConfig::pad`]).
    pad: Arc<str>,
}

/// Most publishes one stream may have waiting for their reply.
const MAX_IN_FLIGHT: usize = 2_000;
/// A stream with publishes in flight and no reply for this long is abandoned.
const STALL: Duration = Duration::from_secs(10);

/// One gRPC `PublishStream` publisher: publishes `keys` at `rate` per
/// second; after a failed stream it publishes the unacknowledged ones again
/// (same keys) on a new one.
async fn stream_publisher(p: Publishing, keys: Vec<u64>, rate: f64) -> History {
    let mut history = History::default();
    let mut fresh = keys.into_iter().peekable();
    let mut retry: std::collections::VecDeque<u64> = Default::default();
    let mut attempts: std::collections::HashMap<u64, u32> = Default::default();
    // A token bucket: `rate` per second, bursts of at most 100 ms worth.
    let mut tokens = 0.0f64;
    let mut refilled = tokio::time::Instant::now();
    'streams: while fresh.peek().is_some() || !retry.is_empty() {
        if tokio::time::Instant::now() >= p.deadline {
            break;
        }
        let Ok(Ok(channel)) = tokio::time::timeout(Duration::from_secs(3), channel(p.grpc)).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut client = pb::ingest_client::IngestClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::PublishRequest>(MAX_IN_FLIGHT);
        let call = tokio::time::timeout(
            Duration::from_secs(3),
            client.publish_stream(ReceiverStream::new(rx)),
        );
        let Ok(Ok(response)) = call.await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut replies = response.into_inner();
        let mut in_flight: std::collections::VecDeque<u64> = Default::default();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut last_progress = tokio::time::Instant::now();
        let ended = loop {
            tokio::select! {
                reply = replies.message() => match reply {
                    Ok(Some(reply)) => {
                        last_progress = tokio::time::Instant::now();
                        let n = reply.request_id;
                        // Replies come in request order.
                        if in_flight.front() == Some(&n) {
                            in_flight.pop_front();
                        } else {
                            in_flight.retain(|&m| m != n);
                        }
                        let k = key(n);
                        if !history.acked.contains_key(&k) {
                            p.acked.fetch_add(1, Ordering::Relaxed);
                            p.resolved.fetch_add(1, Ordering::Relaxed);
                        }
                        history.ack(&k, reply.seq);
                        if in_flight.is_empty() && retry.is_empty() && fresh.peek().is_none() {
                            break false;
                        }
                    }
                    Ok(None) => break true,
                    Err(_) => break true,
                },
                _ = tick.tick() => {
                    let now = tokio::time::Instant::now();
                    if now >= p.deadline {
                        break true;
                    }
                    if !in_flight.is_empty() && now - last_progress > STALL {
                        break true;
                    }
                    if in_flight.is_empty() {
                        last_progress = now;
                    }
                    tokens = (tokens + rate * (now - refilled).as_secs_f64()).min(rate * 0.1 + 1.0);
                    refilled = now;
                    let gate = *p.gate.borrow();
                    while in_flight.len() < MAX_IN_FLIGHT {
                        let n = if let Some(n) = retry.pop_front() {
                            n
                        } else if tokens >= 1.0
                            && let Some(&n) = fresh.peek()
                            && n < gate
                        {
                            tokens -= 1.0;
                            fresh.next();
                            n
                        } else {
                            break;
                        };
                        let (kind, payload) = workload(n, &p.pad);
                        history.attempt(&key(n));
                        let request = pb::PublishRequest {
                            kind: kind.into(),
                            key: key(n),
                            payload: payload.into_bytes(),
                            idempotency_key: key(n),
                            request_id: n,
                        };
                        if tx.try_send(request).is_err() {
                            // Not sent: the stream is going away.
                            retry.push_front(n);
                            break;
                        }
                        in_flight.push_back(n);
                    }
                }
            }
        };
        if !ended {
            break 'streams;
        }
        // Every publish still in flight has an unknown outcome: retry it
        // with the same key, in order, unless it was tried often enough.
        let mut most_tries = 0;
        for n in in_flight.into_iter().rev() {
            history.unknown_attempts += 1;
            let tries = attempts.entry(n).or_default();
            *tries += 1;
            most_tries = most_tries.max(*tries);
            if *tries >= p.max_attempts {
                history.give_up(&key(n));
                p.resolved.fetch_add(1, Ordering::Relaxed);
            } else {
                retry.push_front(n);
            }
        }
        // Backing off (0.1 s more per try, up to 1 s) lets a key outlast
        // a store that refuses writes for several seconds (a full disk).
        tokio::time::sleep(retry_pause(most_tries)).await;
    }
    for n in retry {
        history.give_up(&key(n));
        p.resolved.fetch_add(1, Ordering::Relaxed);
    }
    history
}

/// The REST publisher: one `POST /v1/events` per key, with the key in
/// `idempotency_key`; an error or timeout is retried with the same key.
async fn rest_publisher(mut p: Publishing, keys: Vec<u64>, rate: f64) -> History {
    let mut history = History::default();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut next_due = tokio::time::Instant::now();
    for n in keys {
        // Pacing, then the schedule's gate.
        tokio::time::sleep_until(next_due).await;
        if p.gate.wait_for(|&gate| n < gate).await.is_err() {
            break;
        }
        next_due = tokio::time::Instant::now().max(next_due) + interval;
        let k = key(n);
        let (kind, payload) = workload(n, &p.pad);
        let body = format!(
            r#"{{"kind":"{kind}","key":"{k}","idempotency_key":"{k}","payload":{payload}}}"#
        );
        history.attempt(&k);
        let mut tries = 0;
        loop {
            if tokio::time::Instant::now() >= p.deadline {
                history.give_up(&k);
                p.resolved.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                post_json(p.http, "/v1/events", &body),
            )
            .await;
            let seq = match &sent {
                Ok(Ok((202, text))) => serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|json| json["seq"].as_u64()),
                _ => None,
            };
            if let Some(seq) = seq {
                if !history.acked.contains_key(&k) {
                    p.acked.fetch_add(1, Ordering::Relaxed);
                    p.resolved.fetch_add(1, Ordering::Relaxed);
                }
                history.ack(&k, seq);
                break;
            }
            // A connection error, a timeout or a 503: the outcome is unknown.
            history.unknown_attempts += 1;
            tries += 1;
            if tries >= p.max_attempts {
                history.give_up(&k);
                p.resolved.fetch_add(1, Ordering::Relaxed);
                break;
            }
            tokio::time::sleep(retry_pause(tries)).await;
        }
    }
    history
}

/// Pause before retrying a publish tried `tries` times.
fn retry_pause(tries: u32) -> Duration {
    Duration::from_millis(100 * u64::from(tries.clamp(1, 10)))
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
    let mut core = store.start_core(dir.path(), &config.core_args).await?;
    let proxy = Proxy::start(core.grpc, config.half_open_hold).await?;

    let mut processor_args = vec![
        "--drop-acks".to_string(),
        config.ack_loss.to_string(),
        "--duplicate".to_string(),
        config.duplicate.to_string(),
        "--drop-events".to_string(),
        config.drop_events.to_string(),
    ];
    processor_args.extend(config.processor_args.iter().cloned());
    let mut processors = Processors {
        dir: dir.path().to_path_buf(),
        core_url: proxy.url(),
        args: processor_args,
        current: None,
        lives: 0,
    };
    processors.start()?;

    // The publishers: keys are split between the REST publisher (every
    // `stride`-th key) and the gRPC stream publishers (the rest).
    let acked = Arc::new(AtomicU64::new(0));
    let resolved = Arc::new(AtomicU64::new(0));
    // Publishing may run this far past a fault's threshold before the
    // fault fires (so that a few stuck keys cannot hold the schedule up).
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
        acked: acked.clone(),
        resolved: resolved.clone(),
        gate: gate_rx,
        deadline: tokio::time::Instant::now() + config.publish_timeout,
        max_attempts: 20,
        pad: " ".repeat(config.pad).into(),
    };
    let stride = if config.rest_fraction > 0.0 {
        (1.0 / config.rest_fraction).round().max(1.0) as u64
    } else {
        u64::MAX
    };
    let publishers = config.publishers.max(1);
    let mut grpc_keys: Vec<Vec<u64>> = vec![Vec::new(); publishers];
    let mut rest_keys = Vec::new();
    for n in 0..config.events {
        if stride != u64::MAX && n % stride == stride - 1 {
            rest_keys.push(n);
        } else {
            grpc_keys[(n % publishers as u64) as usize].push(n);
        }
    }
    let rate = config.rate.max(1) as f64;
    let total = config.events.max(1) as f64;
    let publish_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for keys in grpc_keys {
        let share = rate * keys.len() as f64 / total;
        tasks.spawn(stream_publisher(publishing.clone(), keys, share));
    }
    if !rest_keys.is_empty() {
        let share = rate * rest_keys.len() as f64 / total;
        tasks.spawn(rest_publisher(publishing.clone(), rest_keys, share));
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

    // Drain: every committed event resolved.
    proxy.set_latency(Duration::ZERO);
    let drained = wait_for(
        "every committed event to be resolved",
        config.drain_timeout,
        || async {
            let s = core.snapshot().await.ok()?;
            (s.acked_floor > s.head).then_some(s)
        },
    )
    .await;
    let (drained, last_core_totals) = match drained {
        Ok(s) => (true, s.totals.unwrap_or_default()),
        Err(e) => {
            println!("{e}");
            (
                false,
                core.snapshot()
                    .await
                    .ok()
                    .and_then(|s| s.totals)
                    .unwrap_or_default(),
            )
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

    let stored = all_events(store.url()).await?;
    let (processed, torn) = checker::read_processed(&processors.logs())?;
    let mut report = checker::check(&history, &stored, &processed);
    report.torn_lines = torn;
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
        dir,
    })
}

/// Injects one fault.
async fn inject(
    fault: &Fault,
    config: &ChaosConfig,
    core: &mut Core,
    processors: &mut Processors,
    proxy: &Proxy,
    store: &RunStore,
    counts: &mut FaultCounts,
) -> anyhow::Result<()> {
    match fault {
        Fault::KillProcessor { restart_after } => {
            if let Some(mut processor) = processors.current.take() {
                processor.kill().await;
            }
            counts.processor_kills += 1;
            // The gap between two lives is part of the workload.
            tokio::time::sleep(*restart_after).await;
            processors.start()?;
        }
        Fault::KillCore => {
            core.proc.kill().await;
            counts.core_kills += 1;
            core.restart().await.context("restarting core")?;
        }
        Fault::PauseProcessor { duration } => {
            if let Some(processor) = &processors.current {
                processor.signal("-STOP")?;
                // Longer than the ack timeout: core retransmits into a
                // stopped process; that is the fault.
                tokio::time::sleep(*duration).await;
                processor.signal("-CONT")?;
                counts.pauses += 1;
            }
        }
        Fault::ProxyReset => {
            proxy.reset_all();
            counts.proxy_resets += 1;
        }
        Fault::ProxyHalfOpen => {
            proxy.freeze_all();
            counts.half_opens += 1;
        }
        Fault::ProxyLatency { latency, duration } => {
            proxy.set_latency(*latency);
            tokio::time::sleep(*duration).await;
            proxy.set_latency(Duration::ZERO);
            counts.latency_windows += 1;
        }
        Fault::RestartPostgres => {
            restart_postgres(&config.pg_cluster.0, &config.pg_cluster.1).await?;
            counts.pg_restarts += 1;
        }
        Fault::FillDisk { duration } => {
            store.fill()?;
            // Publishing goes on against a full disk: 503s, retries.
            tokio::time::sleep(*duration).await;
            store.free()?;
            counts.disk_fills += 1;
        }
    }
    Ok(())
}

/// Restarts the PostgreSQL cluster and waits until it accepts connections.
async fn restart_postgres(version: &str, cluster: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, cluster, "restart"])
        .status()
        .await
        .context("running pg_ctlcluster")?;
    anyhow::ensure!(status.success(), "pg_ctlcluster restart failed: {status}");
    let server = crate::pg_server_url();
    wait_for(
        "PostgreSQL to accept connections",
        Duration::from_secs(60),
        || {
            let server = server.clone();
            async move {
                use sqlx::Connection;
                sqlx::PgConnection::connect(&server).await.ok().map(|_| ())
            }
        },
    )
    .await
}

/// Writes the publishers' log (`ack KEY SEQ` / `unknown KEY`) for a
/// post-mortem.
fn write_publish_log(dir: &Path, history: &History) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("publishes.log"))?);
    let mut acked: Vec<(&String, &u64)> = history.acked.iter().collect();
    acked.sort_by_key(|(_, seq)| **seq);
    for (key, seq) in acked {
        writeln!(out, "ack {key} {seq}")?;
    }
    let mut unknown: Vec<&String> = history.unknown.iter().collect();
    unknown.sort();
    for key in unknown {
        writeln!(out, "unknown {key}")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let mut config = ChaosConfig::quiet(10_000, 42);
        config.processor_kills = 3;
        config.core_kills = 2;
        config.pauses = 2;
        config.proxy_resets = 4;
        config.pg_restart = true;
        let a = schedule(&config);
        assert_eq!(a, schedule(&config));
        assert_eq!(a.len(), 12);
        assert!(a.windows(2).all(|w| w[0].at_acked <= w[1].at_acked));
        config.seed = 43;
        assert_ne!(a, schedule(&config));
    }
}
