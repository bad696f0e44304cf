//! `ackflow-monitor demo`: core, two processors (sharing the keys:
//! `processors.rs`), a traffic generator and the dashboard in one process,
//! with nothing to install.
//!
//! Core stores into SQLite in a temporary directory (or into `DATABASE_URL`
//! when set) and uses short retransmission timeouts so that pausing the
//! processor or injecting faults shows retransmits within a second. Core
//! keeps its default ordering (per key) and the processor its default
//! concurrency, so events of different keys run side by side.
//!
//! The traffic generator publishes a mix of kinds through core's ingest
//! writer, including a few that always fail and a few with no algorithm, so
//! the results table shows both outcomes, and a few that ask once to be
//! retried half a second later, so the in-flight panel and the event log
//! show retry-later at work. The traffic is keyed like real
//! traffic: a few hot keys carry half the events, many cold keys the rest,
//! and some events have no key. Every few seconds one slow event (a `sleep`
//! of one to three seconds) goes to one of two slow keys, so the dashboard
//! shows a slow key holding back its own later events, and the acked floor,
//! while the other keys go on. Every `--crash-every` seconds one event
//! crashes the processor that owns its key, and the other takes its keys
//! until it is back (see `processors.rs`).

mod processors;

use std::time::Duration;

use ackflow_core::ingest::{Ingest, IngestError};
use ackflow_core::model::NewEvent;
use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::cli::DemoArgs;
use crate::client::Core;
use crate::run::{self, Dashboard};

/// How often the traffic generator publishes a batch.
const TRAFFIC_TICK: Duration = Duration::from_millis(50);
/// Longest wait for the processors to stop after they are cancelled.
const PROCESSOR_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Lowest retransmission timeout in the demo, in milliseconds: low so that
/// retransmits show up quickly.
const DEMO_RTO_MIN_MS: u64 = 200;
/// Backoff cap in the demo, in milliseconds: a paused processor sees each
/// unacked event again at least this often.
const DEMO_MAX_BACKOFF_MS: u64 = 5000;
/// Hot keys (`user-1` to `user-4`): half of the events, so each of them
/// usually has a few events waiting.
const HOT_KEYS: u32 = 4;
/// Cold keys (`user-5` onwards): a third of the events, spread thin.
const COLD_KEYS: u32 = 60;
/// The keys that get the slow events (and a few ordinary ones, which wait
/// behind them).
const SLOW_KEYS: [&str; 2] = ["slow-1", "slow-2"];
/// How often a slow event is published, whatever the rate: its key is busy
/// for at most [`SLOW_MS`], so slow events never pile up on a key.
const SLOW_EVERY: Duration = Duration::from_secs(5);
/// How long a slow event sleeps, in milliseconds.
const SLOW_MS: std::ops::RangeInclusive<u32> = 1000..=3000;

/// Runs the demo until the user quits or `shutdown` fires, then stops the
/// processor, the traffic and core, in that order.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data_dir = tempfile::Builder::new()
        .prefix("ackflow-demo-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let database_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty());
    let mut config =
        ackflow_core::config::Config::local(database_url, data_dir.path().to_path_buf());
    config.rto_min_ms = DEMO_RTO_MIN_MS;
    config.max_backoff_ms = DEMO_MAX_BACKOFF_MS;
    config.window = args.window;
    // The demo's `f` key sets the processor's faults through core.
    config.allow_fault_injection = true;
    let running = ackflow_core::server::start(config)
        .await
        .context("starting core")?;
    let core_url = format!("http://{}", running.grpc_addr);
    tracing::info!(core = %core_url, rate = args.rate, window = args.window, "demo started");

    let stop = CancellationToken::new();
    let processors = tokio::spawn(processors::run(core_url.clone(), stop.clone()));
    let (rate_tx, rate_rx) = watch::channel(args.rate);
    let crash_every = (args.crash_every > 0).then(|| Duration::from_secs(args.crash_every));
    let traffic = tokio::spawn(traffic(
        running.ingest.clone(),
        rate_rx,
        crash_every,
        stop.clone(),
    ));

    let dashboard = match Core::new(&core_url, None) {
        Ok(core) => {
            let mut app = App::new(core.url.clone(), Some(args.rate));
            app.utc_offset_s = run::local_utc_offset_s();
            run::in_terminal(
                Dashboard {
                    app,
                    core,
                    rate_tx: Some(rate_tx),
                },
                shutdown,
            )
            .await
        }
        Err(e) => Err(e),
    };

    // The terminal is already restored here, so a slow shutdown leaves the
    // user at a normal prompt rather than a frozen dashboard.
    stop.cancel();
    match tokio::time::timeout(PROCESSOR_STOP_TIMEOUT, processors).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the demo processors' task failed"),
        Err(_) => tracing::warn!("the demo processors did not stop in time"),
    }
    if let Err(e) = traffic.await {
        tracing::error!(error = %e, "the traffic task failed");
    }
    running.stop().await;
    if let Err(e) = data_dir.close() {
        tracing::warn!(error = %e, "removing the demo's data directory failed");
    }
    dashboard
}

/// Publishes about `rate` events per second until `stop`, batching what
/// is due every [`TRAFFIC_TICK`]. Every [`SLOW_EVERY`] one of them is a
/// slow event, on the [`SLOW_KEYS`] in turn, and every `crash_every` (if
/// any) one is a crash event.
async fn traffic(
    ingest: Ingest,
    mut rate_rx: watch::Receiver<u32>,
    crash_every: Option<Duration>,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(TRAFFIC_TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut rng = fastrand::Rng::new();
    let mut due = 0.0_f64;
    let mut last = Instant::now();
    let mut n = 0_u64;
    let mut next_slow = last + SLOW_EVERY;
    let mut next_crash = last + crash_every.unwrap_or_default();
    let mut slow_published = 0_usize;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = Instant::now();
        let rate = f64::from(*rate_rx.borrow_and_update());
        // At most a second's worth piles up, so a slow commit is followed
        // by a catch-up batch, not by a flood.
        due = (due + rate * now.duration_since(last).as_secs_f64()).min(rate.max(1.0));
        last = now;
        let count = due.floor();
        if count < 1.0 {
            continue;
        }
        due -= count;
        // The slow and crash events take the places of ordinary ones, so
        // the rate stays what the user chose.
        let mut events = Vec::with_capacity(count as usize);
        if now >= next_slow {
            next_slow = now + SLOW_EVERY;
            slow_published += 1;
            let key = SLOW_KEYS[(slow_published - 1) % SLOW_KEYS.len()];
            events.push(slow_event(&mut rng, key));
        }
        if let Some(every) = crash_every
            && now >= next_crash
        {
            next_crash = now + every;
            events.push(crash_event());
        }
        while events.len() < count as usize {
            n += 1;
            events.push(random_event(&mut rng, n));
        }
        let published = tokio::select! {
            _ = stop.cancelled() => return,
            published = ingest.publish(events) => published,
        };
        match published {
            Ok(_) => {}
            Err(IngestError::ShuttingDown) => return,
            Err(e) => tracing::warn!(error = %e, "demo publish failed"),
        }
    }
}

const WORDS: &[&str] = &[
    "ack",
    "seq",
    "window",
    "retransmit",
    "floor",
    "event",
    "stream",
    "order",
    "duplicate",
    "backoff",
    "processor",
    "core",
    "monitor",
    "result",
    "once",
];

/// A key for an ordinary demo event: 10% none, 50% one of the hot keys,
/// 36% one of the cold ones, 4% one of the slow keys.
fn random_key(rng: &mut fastrand::Rng) -> Option<String> {
    match rng.u32(0..100) {
        0..10 => None,
        10..60 => Some(format!("user-{}", rng.u32(1..=HOT_KEYS))),
        60..96 => Some(format!(
            "user-{}",
            rng.u32(HOT_KEYS + 1..=HOT_KEYS + COLD_KEYS)
        )),
        _ => Some(SLOW_KEYS[rng.usize(..SLOW_KEYS.len())].to_string()),
    }
}

/// A slow event on `key`: a `sleep` of [`SLOW_MS`].
fn slow_event(rng: &mut fastrand::Rng, key: &str) -> NewEvent {
    NewEvent {
        kind: "sleep".to_string(),
        key: Some(key.to_string()),
        payload: rng.u32(SLOW_MS).to_string().into_bytes(),
        idempotency_key: None,
        traceparent: None,
    }
}

/// An event that crashes the first processor that runs it (see
/// `processors.rs`).
fn crash_event() -> NewEvent {
    NewEvent {
        kind: processors::CRASH_KIND.to_string(),
        key: Some(processors::CRASH_KEY.to_string()),
        payload: b"{}".to_vec(),
        idempotency_key: None,
        traceparent: None,
    }
}

/// The `n`th demo event: mostly `sha256`, `wordcount`, `sum` and `sleep`
/// (5 to 50 ms), about 3% `fail` (always a failed result), 1%
/// `unknown-kind` (no algorithm: also a failed result) and 1% `retry`
/// (asks once to be retried 500 ms later), keyed by
/// [`random_key`].
fn random_event(rng: &mut fastrand::Rng, n: u64) -> NewEvent {
    let roll = rng.u32(0..100);
    let (kind, payload): (&str, Value) = match roll {
        0 => ("unknown-kind", json!({ "n": n })),
        1..=3 => ("fail", json!({ "n": n })),
        4 => ("retry", json!({ "times": 1, "after_ms": 500 })),
        _ => match roll % 4 {
            0 => (
                "sha256",
                json!(format!("demo event {n} {:08x}", rng.u32(..))),
            ),
            1 => {
                let words: Vec<&str> = (0..rng.usize(1..12))
                    .map(|_| WORDS[rng.usize(..WORDS.len())])
                    .collect();
                ("wordcount", json!(words.join(" ")))
            }
            2 => {
                let numbers: Vec<i64> = (0..rng.usize(1..8)).map(|_| rng.i64(-100..1000)).collect();
                ("sum", json!(numbers))
            }
            _ => ("sleep", json!(rng.u32(5..=50))),
        },
    };
    NewEvent {
        kind: kind.to_string(),
        key: random_key(rng),
        // `Value`'s Display is compact JSON text.
        payload: payload.to_string().into_bytes(),
        idempotency_key: None,
        traceparent: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_events_are_valid_json_with_the_expected_mix() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut kinds = std::collections::BTreeMap::<String, u32>::new();
        for n in 0..10_000 {
            let event = random_event(&mut rng, n);
            let payload: Value = serde_json::from_slice(&event.payload).expect("JSON payload");
            match event.kind.as_str() {
                "sha256" | "wordcount" => assert!(payload.is_string()),
                "sum" => assert!(payload.is_array()),
                "sleep" => assert!((5..=50).contains(&payload.as_u64().unwrap_or(0))),
                "retry" => assert_eq!(payload["times"], 1),
                "fail" | "unknown-kind" => {}
                other => panic!("unexpected kind {other}"),
            }
            *kinds.entry(event.kind).or_default() += 1;
        }
        let share = |kind: &str| f64::from(kinds.get(kind).copied().unwrap_or(0)) / 10_000.0;
        assert!((0.02..0.04).contains(&share("fail")), "{kinds:?}");
        assert!((0.005..0.015).contains(&share("unknown-kind")), "{kinds:?}");
        assert!((0.005..0.015).contains(&share("retry")), "{kinds:?}");
        for kind in ["sha256", "wordcount", "sum", "sleep"] {
            assert!((0.2..0.28).contains(&share(kind)), "{kinds:?}");
        }
    }

    #[test]
    fn demo_keys_are_skewed_and_slow_events_sleep_a_second_or_more() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut keys = std::collections::BTreeMap::<Option<String>, u32>::new();
        for n in 0..10_000 {
            *keys.entry(random_event(&mut rng, n).key).or_default() += 1;
        }
        let share = |count: u32| f64::from(count) / 10_000.0;
        let hot = |key: &str| (1..=HOT_KEYS).any(|k| key == format!("user-{k}"));
        let no_key = share(keys.get(&None).copied().unwrap_or(0));
        let hot_share = share(
            keys.iter()
                .filter(|(k, _)| k.as_deref().is_some_and(hot))
                .map(|(_, c)| c)
                .sum(),
        );
        assert!((0.08..0.12).contains(&no_key), "{keys:?}");
        assert!((0.45..0.55).contains(&hot_share), "{keys:?}");
        // Each hot key is busier than any cold one: the set is skewed.
        let coldest_hot = (1..=HOT_KEYS)
            .map(|k| keys[&Some(format!("user-{k}"))])
            .min();
        let busiest_cold = keys
            .iter()
            .filter(|(k, _)| {
                k.as_deref()
                    .is_some_and(|k| k.starts_with("user-") && !hot(k))
            })
            .map(|(_, c)| *c)
            .max();
        assert!(coldest_hot > busiest_cold, "{keys:?}");
        for key in SLOW_KEYS {
            let slow = slow_event(&mut rng, key);
            assert_eq!(slow.kind, "sleep");
            assert_eq!(slow.key.as_deref(), Some(key));
            let ms: u32 = std::str::from_utf8(&slow.payload)
                .expect("UTF-8")
                .parse()
                .expect("a number of milliseconds");
            assert!(SLOW_MS.contains(&ms), "{ms}");
        }
    }

    #[tokio::test]
    async fn traffic_publishes_at_about_the_rate_and_follows_changes() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let running = ackflow_core::server::start(ackflow_core::config::Config::local(
            None,
            data_dir.path().to_path_buf(),
        ))
        .await
        .expect("core starts");
        let head = running.ingest.head();
        let (rate_tx, rate_rx) = watch::channel(200);
        let stop = CancellationToken::new();
        let task = tokio::spawn(traffic(running.ingest.clone(), rate_rx, None, stop.clone()));
        let wait_for = |target: u64| {
            let mut head = head.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), head.wait_for(|h| *h >= target))
                    .await
                    .expect("traffic reaches the target")
                    .map(|_| ())
                    .expect("ingest alive");
            }
        };
        wait_for(50).await;
        rate_tx.send_replace(2000);
        let at = *head.borrow();
        wait_for(at + 500).await;
        stop.cancel();
        task.await.expect("traffic task");
        running.stop().await;
    }
}
