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
//! the processor for longer than the ack timeout (with hot standby
//! processors, these hit the active one: `processors.rs`), proxy resets, half-open
//! proxy connections, proxy latency, in-process ack loss and duplication,
//! one PostgreSQL restart, and disks that fill up and get room again
//! (`chaos_store.rs`; the store then sits on a tmpfs of its own, SQLite or
//! a throwaway PostgreSQL cluster). Each fault fires when the number of
//! acknowledged publishes passes a threshold drawn from the seed, so the
//! schedule (which faults, in which order, at which point of the workload,
//! with which durations) is reproducible from the seed; the exact
//! interleaving with the processes' own timing is not.

mod config;
mod cores;
mod faults;
mod outcome;
mod processors;
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
use crate::{all_events, wait_for};
pub use config::ChaosConfig;
use cores::Cores;
use faults::inject;
pub use faults::{Fault, FaultCounts, Step, schedule};
pub use outcome::ChaosOutcome;
use processors::Processors;
use publishers::{Publishing, rest_publisher, stream_publisher};
use workload::Workload;

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
    let mut cores = Cores::start(
        &store,
        dir.path(),
        &core_args,
        config.standby,
        config.half_open_hold,
    )
    .await?;

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
    let mut processors = Processors::new(
        dir.path().to_path_buf(),
        cores.processor_url(),
        processor_args,
    );
    // One active, the rest hot standbys.
    for _ in 0..=config.processor_standbys {
        processors.start()?;
    }

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
        cores: Arc::new(cores.addresses()),
        current: Arc::default(),
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
            &mut cores,
            &mut processors,
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
    cores
        .proxies
        .iter()
        .for_each(|p| p.set_latency(Duration::ZERO));
    let highest_acked = history.acked.values().copied().max().unwrap_or(0);
    let drain_started = std::time::Instant::now();
    let drained = wait_for(
        "every committed event to be resolved",
        config.drain_timeout,
        || async {
            let s = cores.leader().await.ok()?.snapshot().await.ok()?;
            (s.acked_floor > s.head && s.acked_floor > highest_acked).then_some(s)
        },
    )
    .await;
    let (drained, last_core_totals) = match drained {
        Ok(s) => (true, s.totals.unwrap_or_default()),
        Err(e) => {
            println!("{e}");
            let s = match cores.leader().await {
                Ok(core) => core.snapshot().await.ok(),
                Err(_) => None,
            };
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
    let drain_elapsed = drain_started.elapsed();
    say(format!(
        "drained: {drained} ({:.1} s after publishing)",
        drain_elapsed.as_secs_f64()
    ));
    processors.stop().await?;
    cores.stop().await?;

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
    let stat = |f: fn(&crate::proxy::ProxyStats) -> &AtomicU64| {
        cores
            .proxies
            .iter()
            .map(|p| f(&p.stats).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    Ok(ChaosOutcome {
        report,
        faults: counts,
        drained,
        elapsed: started.elapsed(),
        publish_elapsed,
        drain_elapsed,
        last_core_totals,
        proxy: (
            stat(|s| &s.connections),
            stat(|s| &s.resets),
            stat(|s| &s.frozen),
            stat(|s| &s.bytes),
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
            misprocessed: misprocessed(&view),
            key: view.event.key,
            state: view.state,
            at_most_once: at_most_once.contains(&view.event.kind),
        })
        .collect())
}

/// Whether `view`'s result was computed from another payload than its own:
/// an ok `sha256` result must be the digest of the stored payload.
fn misprocessed(view: &ackflow_core::model::EventView) -> bool {
    use sha2::{Digest, Sha256};
    let Some(result) = &view.result else {
        return false;
    };
    if view.event.kind != "sha256" || result.status != ackflow_core::model::ResultStatus::Ok {
        return false;
    }
    let digest: String = Sha256::digest(&view.event.payload)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    result.output != digest
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
