//! Section `skew`: skewed keys, retrying handlers, crashes. Keyed webhook events over a
//! skewed key distribution, some of whose calls misbehave on purpose (slow,
//! refused, busy once, hanging past the timeout), some of a kind delivered at
//! most once: how long the burst takes to resolve, and what the delivery
//! protocol did meanwhile (retransmits, duplicate drops, the largest RTT and
//! RTO it reported).
//!
//! Every run publishes the same 3,000 events over REST in about 2 s. Their
//! ordering keys follow the chaos workload's Zipf-like law over 60 keys
//! (the hottest about 9 %, 10 % unkeyed); 30 % are of kind `hook_once`, the
//! rest `hook`, both posted by the processor (`--webhook KIND=URL`,
//! `--webhook-timeout-ms 400`) to an endpoint the bench serves on
//! 127.0.0.1. The payload says how the endpoint answers (see `skew_webhook.rs`);
//! the runs differ in which payloads misbehave and in whether core gets
//! `--at-most-once hook_once`. Without it `hook_once` is one more
//! at-least-once kind, so B and C, and D and F, differ by that flag alone:
//!
//! | run | misbehaving events | `--at-most-once hook_once` |
//! |---|---|---|
//! | A | 25 % slow (30–80 ms) | yes |
//! | B | 25 % answered 503 with `Retry-After: 0` on their first call | no |
//! | C | as B | yes |
//! | D | 10 % slow, 5 % answered 422, 10 % 503 once, 5 % hang 1.2 s once | no |
//! | E | as D, with four processor SIGKILLs and one of core while it drains | no |
//! | F | as D | yes |
//! | G | as E | yes |
//!
//! The kill runs are to be read against their calm twins (E against D, G
//! against F): the issue asks each to finish within 2× of its twin.
//!
//! A run stops once every event is resolved (a result, or parked as dead),
//! or `--skew-timeout-s` after its first publish; a run stopped by the limit
//! reports what was resolved by then. Each run has a fresh core, processor
//! and endpoint; the workload is drawn from `--seed`, so a run can be
//! repeated alone (`--skew-runs C`) and see the same events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ackflow_core::model::{ResultStatus, now_us};
use ackflow_tests::chaos::ChaosConfig;
use ackflow_tests::chaos::workload::Workload;
use ackflow_tests::{all_events, http_request, post_json, start_processor};

use super::measure::sample;
use tokio_util::sync::CancellationToken;

use super::{Args, Backend, Env, Pair, SkewRun};

#[path = "skew_webhook.rs"]
mod webhook;

/// Events per run.
const EVENTS: u64 = 3_000;
/// Distinct ordering keys.
const KEYS: u32 = 60;
/// Exponent of the keys' law: with 60 keys and 10 % unkeyed, the hottest
/// key takes about 9 % of the events.
const KEY_SKEW: f64 = 0.65;
/// Fraction of events without a key.
const UNKEYED: f64 = 0.1;
/// Fraction of events of kind `hook_once`.
const ONCE_FRACTION: f64 = 0.3;
/// How long publishing the burst takes (paced, not as fast as core takes it,
/// so that delivery starts while events still arrive).
const PUBLISH_OVER: Duration = Duration::from_secs(2);
/// Concurrent REST clients sharing the paced publishes.
const PUBLISHERS: u64 = 16;
/// The processor's `--webhook-timeout-ms`, as in the issue.
const WEBHOOK_TIMEOUT_MS: &str = "400";
/// How long a hanging call hangs: three times the webhook timeout.
const HANG_MS: u64 = 1_200;
/// How often core's `/metrics` is read while a run drains.
const POLL: Duration = Duration::from_millis(250);
/// The kills of runs E and G, after publishing ended: SIGKILL of the
/// processor (a new one started at once, as a supervisor would) or of core
/// (restarted on the same ports).
const KILLS: [(Duration, Kill); 5] = [
    (Duration::from_millis(250), Kill::Processor),
    (Duration::from_millis(1_000), Kill::Core),
    (Duration::from_millis(1_750), Kill::Processor),
    (Duration::from_millis(2_500), Kill::Processor),
    (Duration::from_millis(3_250), Kill::Processor),
];

#[derive(Clone, Copy, Debug)]
enum Kill {
    Processor,
    Core,
}

/// How the endpoint is asked to answer one event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200 after 1–8 ms.
    Normal,
    /// 200 after 30–80 ms.
    Slow,
    /// 422: a failed result, never retried.
    Refused,
    /// 503 with `Retry-After: 0` on the first call, then 200.
    BusyOnce,
    /// No answer within the processor's timeout on the first call (it
    /// answers after 1.2 s, the processor gave up at 0.4 s), then 200.
    Hang,
}

impl SkewRun {
    /// The share of events asked to misbehave, and how.
    fn mix(self) -> &'static [(f64, Answer)] {
        match self {
            SkewRun::A => &[(0.25, Answer::Slow)],
            SkewRun::B | SkewRun::C => &[(0.25, Answer::BusyOnce)],
            SkewRun::D | SkewRun::F | SkewRun::E | SkewRun::G => &[
                (0.10, Answer::Slow),
                (0.05, Answer::Refused),
                (0.10, Answer::BusyOnce),
                (0.05, Answer::Hang),
            ],
        }
    }

    fn at_most_once(self) -> bool {
        matches!(self, SkewRun::A | SkewRun::C | SkewRun::F | SkewRun::G)
    }

    /// Whether processes are killed while the run drains (see [`KILLS`]).
    fn kills(self) -> bool {
        matches!(self, SkewRun::E | SkewRun::G)
    }

    fn describe(self) -> &'static str {
        match self {
            SkewRun::A => "25 % slow; at-most-once",
            SkewRun::B => "25 % 503 once",
            SkewRun::C => "25 % 503 once; at-most-once",
            SkewRun::D => "mix (slow, 422, 503 once, hang)",
            SkewRun::F => "mix; at-most-once",
            SkewRun::E => "D with 4 processor kills, 1 core kill",
            SkewRun::G => "F with E's kills",
        }
    }
}

/// One event of the workload, before the run decides how it misbehaves.
struct Draw {
    key: Option<String>,
    once: bool,
    /// Picks the event's [`Answer`] from a run's mix: the same events
    /// misbehave in every run whose mix has room for them.
    pick: f64,
    normal_ms: u64,
    slow_ms: u64,
}

/// The seeded workload every run publishes.
fn draws(seed: u64) -> Vec<Draw> {
    let mut config = ChaosConfig::quiet(EVENTS, seed);
    config.keys = KEYS;
    config.key_skew = KEY_SKEW;
    config.unkeyed = UNKEYED;
    let keys = Workload::new(&config);
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x736b_6577);
    (0..EVENTS)
        .map(|n| Draw {
            key: keys.publish(n).key,
            once: rng.f64() < ONCE_FRACTION,
            pick: rng.f64(),
            normal_ms: rng.u64(1..=8),
            slow_ms: rng.u64(30..=80),
        })
        .collect()
}

/// The REST body of event `n` in `run`.
fn body(n: u64, draw: &Draw, run: SkewRun) -> String {
    let mut bound = 0.0;
    let answer = run
        .mix()
        .iter()
        .find(|(share, _)| {
            bound += share;
            draw.pick < bound
        })
        .map_or(Answer::Normal, |(_, answer)| *answer);
    let ms = draw.normal_ms;
    let payload = match answer {
        Answer::Normal => format!(r#"{{"n":{n},"ms":{ms}}}"#),
        Answer::Slow => format!(r#"{{"n":{n},"slow_ms":{}}}"#, draw.slow_ms),
        Answer::Refused => format!(r#"{{"n":{n},"ms":{ms},"status":422}}"#),
        Answer::BusyOnce => {
            format!(r#"{{"n":{n},"ms":{ms},"status":503,"retry_after":0,"times":1}}"#)
        }
        Answer::Hang => {
            format!(r#"{{"n":{n},"ms":{ms},"hang_ms":{HANG_MS},"times":1}}"#)
        }
    };
    let kind = if draw.once { "hook_once" } else { "hook" };
    match &draw.key {
        Some(key) => format!(r#"{{"kind":"{kind}","key":"{key}","payload":{payload}}}"#),
        None => format!(r#"{{"kind":"{kind}","payload":{payload}}}"#),
    }
}

pub(super) async fn section_skew(backend: Backend, args: &Args) -> anyhow::Result<()> {
    let draws = draws(args.seed);
    let mut per_key: HashMap<&str, u64> = HashMap::new();
    for key in draws.iter().filter_map(|d| d.key.as_deref()) {
        *per_key.entry(key).or_default() += 1;
    }
    let share = |n: u64| 100.0 * n as f64 / EVENTS as f64;
    let keyed: u64 = per_key.values().sum();
    println!(
        "  skew: {EVENTS} webhook events over {} keys (hottest {:.1} %, unkeyed {:.1} %), \
         {:.0} % hook_once, seed {}, limit {} s per run; core's default window, not --window",
        per_key.len(),
        share(per_key.values().copied().max().unwrap_or(0)),
        share(EVENTS - keyed),
        share(draws.iter().filter(|d| d.once).count() as u64),
        args.seed,
        args.skew_timeout_s,
    );
    println!(
        "  | run | what | resolved | drain s | retransmits (% events) | duplicate drops \
         | max RTT ms | max RTO ms | ok / failed / abandoned / dead | webhook calls |"
    );
    println!("  |---|---|---:|---:|---:|---:|---:|---:|---|---:|");
    let runs = if args.skew_runs.is_empty() {
        SkewRun::ALL.to_vec()
    } else {
        args.skew_runs.clone()
    };
    for run in runs {
        let env = Env::new(backend, args.core_flags()).await?;
        let outcome = run_one(&env, run, &draws, args).await?;
        env.finish().await?;
        outcome.print(run);
    }
    Ok(())
}

/// What one run measured.
struct Outcome {
    /// Events with a result or parked when the run stopped.
    resolved: u64,
    ok: u64,
    failed: u64,
    abandoned: u64,
    dead: u64,
    /// First publish to the last result stored (or event parked); `None`
    /// when the run stopped at the time limit.
    drain: Option<Duration>,
    /// From core's `/metrics` when the run stopped.
    retransmits: u64,
    duplicate_drops: u64,
    /// Highest values seen while polling.
    max_rtt: f64,
    max_rto: f64,
    calls: u64,
}

impl Outcome {
    fn print(&self, run: SkewRun) {
        let drain = self.drain.map_or_else(
            || "timed out".to_string(),
            |d| format!("{:.1}", d.as_secs_f64()),
        );
        println!(
            "  | {run:?} | {} | {}/{EVENTS} | {drain} | {} ({:.1} %) | {} | {:.1} | {:.1} | {} / {} / {} / {} | {} |",
            run.describe(),
            self.resolved,
            self.retransmits,
            100.0 * self.retransmits as f64 / EVENTS as f64,
            self.duplicate_drops,
            self.max_rtt * 1000.0,
            self.max_rto * 1000.0,
            self.ok,
            self.failed,
            self.abandoned,
            self.dead,
            self.calls,
        );
    }
}

async fn run_one(env: &Env, run: SkewRun, draws: &[Draw], args: &Args) -> anyhow::Result<Outcome> {
    let cancel = CancellationToken::new();
    let (endpoint, calls) = webhook::serve(cancel.clone()).await?;
    let core_flags: &[&str] = if run.at_most_once() {
        &["--at-most-once", "hook_once"]
    } else {
        &[]
    };
    let core = env.core_with(core_flags).await?;
    let hook = format!("hook=http://{endpoint}/hook");
    let hook_once = format!("hook_once=http://{endpoint}/hook");
    let processor_flags = [
        "--webhook",
        &hook,
        "--webhook",
        &hook_once,
        "--webhook-timeout-ms",
        WEBHOOK_TIMEOUT_MS,
    ];
    let mut pair = Pair::with_processor_flags(env, core, &processor_flags).await?;

    let first_publish_us = now_us();
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(args.skew_timeout_s);
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..EVENTS)
            .zip(draws)
            .map(|(n, draw)| body(n, draw, run))
            .collect(),
    );
    let mut publishers = tokio::task::JoinSet::new();
    for client in 0..PUBLISHERS {
        let (http, bodies) = (pair.core.http, bodies.clone());
        publishers.spawn(async move {
            for n in (client..EVENTS).step_by(PUBLISHERS as usize) {
                let due = started + PUBLISH_OVER.mul_f64(n as f64 / EVENTS as f64);
                tokio::time::sleep_until(due).await;
                let body = bodies.get(n as usize).map_or("", String::as_str);
                let (status, text) = post_json(http, "/v1/events", body).await?;
                anyhow::ensure!(status == 202, "publish failed: {status} {text}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(published) = publishers.join_next().await {
        published??;
    }

    // Core copies its counters to /metrics with every admin snapshot (every
    // 200 ms), so the end of the drain is read from the store afterwards.
    // The counters start again with each core life: `earlier` keeps those of
    // the lives killed.
    let mut last = Scrape::default();
    let mut earlier = Scrape::default();
    let (mut max_rtt, mut max_rto) = (0.0f64, 0.0f64);
    let published = tokio::time::Instant::now();
    let mut kills = if run.kills() { &KILLS[..] } else { &[] };
    loop {
        if let Some(scrape) = Scrape::read(pair.core.http).await {
            max_rtt = max_rtt.max(scrape.rtt);
            max_rto = max_rto.max(scrape.rto);
            last = scrape;
        }
        let floor = pair.core.snapshot().await.map_or(0, |s| s.acked_floor);
        if floor > EVENTS || tokio::time::Instant::now() >= deadline {
            break;
        }
        if let [(at, kill), rest @ ..] = kills
            && published.elapsed() >= *at
        {
            kills = rest;
            match kill {
                Kill::Processor => {
                    pair.processor.kill().await;
                    pair.processor =
                        start_processor(env.dir(), &pair.core.grpc_url(), &processor_flags)?;
                }
                Kill::Core => {
                    earlier.add(&last);
                    last = Scrape::default();
                    pair.core.proc.kill().await;
                    pair.core.restart().await?;
                }
            }
            continue;
        }
        tokio::time::sleep(POLL).await;
    }
    last.add(&earlier);
    // Stopping the processor ends its stream, and core then abandons an
    // at-most-once event still in flight: rows written from here on are
    // the shutdown's, not the run's.
    let stopped_us = now_us();
    pair.stop().await?;
    cancel.cancel();

    let mut outcome = Outcome {
        resolved: 0,
        ok: 0,
        failed: 0,
        abandoned: 0,
        dead: 0,
        drain: None,
        retransmits: last.retransmits as u64,
        duplicate_drops: last.duplicate_drops as u64,
        max_rtt,
        max_rto,
        calls: calls.load(Ordering::Relaxed),
    };
    let mut last_resolved_us = first_publish_us;
    for view in all_events(&env.store_url()).await? {
        if let Some(result) = view.result.filter(|r| r.stored_at_us <= stopped_us) {
            match result.status {
                ResultStatus::Ok => outcome.ok += 1,
                ResultStatus::Failed => outcome.failed += 1,
                ResultStatus::Abandoned => outcome.abandoned += 1,
            }
            last_resolved_us = last_resolved_us.max(result.stored_at_us);
        } else if let Some(dead) = view.dead.filter(|d| d.parked_at_us <= stopped_us) {
            outcome.dead += 1;
            last_resolved_us = last_resolved_us.max(dead.parked_at_us);
        }
    }
    outcome.resolved = outcome.ok + outcome.failed + outcome.abandoned + outcome.dead;
    if outcome.resolved >= EVENTS {
        let us = (last_resolved_us - first_publish_us).max(0) as u64;
        outcome.drain = Some(Duration::from_micros(us));
    }
    Ok(outcome)
}

/// The figures of core's `/metrics` a run follows.
#[derive(Default)]
struct Scrape {
    ok: f64,
    failed: f64,
    abandoned: f64,
    dead: f64,
    retransmits: f64,
    duplicate_drops: f64,
    rtt: f64,
    rto: f64,
}

impl Scrape {
    /// `None` when core did not answer (the poll is simply skipped).
    async fn read(http: SocketAddr) -> Option<Self> {
        let (status, page) = http_request(http, "GET", "/metrics", None).await.ok()?;
        if status != 200 {
            return None;
        }
        let sample = |name: &str| sample(&page, name);
        Some(Self {
            ok: sample(r#"ackflow_results_total{status="ok"}"#),
            failed: sample(r#"ackflow_results_total{status="failed"}"#),
            abandoned: sample(r#"ackflow_results_total{status="abandoned"}"#),
            dead: sample("ackflow_dead_total"),
            retransmits: sample("ackflow_retransmits_total"),
            duplicate_drops: sample("ackflow_duplicate_drops_total"),
            rtt: sample("ackflow_rtt_seconds"),
            rto: sample("ackflow_rto_seconds"),
        })
    }

    /// Adds the counters of an earlier core life (the gauges are left).
    fn add(&mut self, earlier: &Scrape) {
        self.ok += earlier.ok;
        self.failed += earlier.failed;
        self.abandoned += earlier.abandoned;
        self.dead += earlier.dead;
        self.retransmits += earlier.retransmits;
        self.duplicate_drops += earlier.duplicate_drops;
    }
}
