//! ackflow-bench: throughput and latency of the real binaries.
//!
//! For each store it starts a fresh core (a new PostgreSQL database, or
//! SQLite in a temp dir) and measures:
//! 1. publish throughput with no processor connected: single REST requests
//!    (concurrent clients), REST batches, and one gRPC `PublishStream`;
//! 2. the drain rate of that backlog once a processor connects;
//! 3. workload W1 end to end: N events of `sha256` with 256-byte payloads
//!    published over `PublishStream` as fast as possible, from the first
//!    publish to the last stored result, with publish→result latency
//!    percentiles computed from the stored timestamps.

use std::path::Path;
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;
use ackflow_tests::{Core, PgDb, post_json, start_processor, wait_for};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Measures ackflow's publish throughput and end-to-end throughput and latency")]
struct Args {
    /// Stores to measure: postgres, sqlite or both.
    #[arg(long, default_value = "both")]
    store: String,
    /// Events in the end-to-end run (W1) and the PublishStream run.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Events published with single REST requests.
    #[arg(long, default_value_t = 10_000)]
    rest_events: u64,
    /// Concurrent REST clients.
    #[arg(long, default_value_t = 32)]
    clients: u64,
    /// Events per REST batch request.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Core's window.
    #[arg(long, default_value_t = 256)]
    window: u32,
}

fn payload(size: usize, n: u64) -> String {
    let prefix = format!("{n}:");
    format!(
        "\"{prefix}{}\"",
        "x".repeat(size.saturating_sub(prefix.len() + 2))
    )
}

fn rate(events: u64, took: Duration) -> String {
    format!("{:>9.0} events/s", events as f64 / took.as_secs_f64())
}

async fn rest_single(core: &Core, args: &Args) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_client = args.rest_events / args.clients;
    for c in 0..args.clients {
        let http = core.http;
        let size = args.payload;
        tasks.spawn(async move {
            for n in 0..per_client {
                let body = format!(
                    r#"{{"kind":"sha256","payload":{}}}"#,
                    payload(size, c * per_client + n)
                );
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

async fn rest_batches(core: &Core, args: &Args, total: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let clients = 8;
    let batches_per_client = total / args.batch / clients;
    for _ in 0..clients {
        let http = core.http;
        let (size, batch) = (args.payload, args.batch);
        tasks.spawn(async move {
            for b in 0..batches_per_client {
                let events: Vec<String> = (0..batch)
                    .map(|n| {
                        format!(
                            r#"{{"kind":"sha256","payload":{}}}"#,
                            payload(size, b * batch + n)
                        )
                    })
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
    Ok(started.elapsed())
}

/// Publishes `n` events on one stream; returns when the last reply arrived.
async fn stream(core: &Core, n: u64, size: usize) -> anyhow::Result<Duration> {
    let mut client = core.ingest().await?;
    let requests = tokio_stream::iter((0..n).map(move |i| pb::PublishRequest {
        kind: "sha256".into(),
        payload: payload(size, i).into_bytes(),
        request_id: i,
        ..Default::default()
    }));
    let started = Instant::now();
    let mut replies = client.publish_stream(requests).await?.into_inner();
    let mut got = 0;
    while let Some(_reply) = replies.message().await? {
        got += 1;
    }
    anyhow::ensure!(got == n, "only {got} of {n} replies");
    Ok(started.elapsed())
}

async fn wait_drained(core: &Core) -> anyhow::Result<pb::Snapshot> {
    wait_for(
        "every event resolved",
        Duration::from_secs(1800),
        || async {
            let s = core.snapshot().await.ok()?;
            (s.acked_floor > s.head).then_some(s)
        },
    )
    .await
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn measure(name: &str, url: Option<&str>, dir: &Path, args: &Args) -> anyhow::Result<()> {
    let window = args.window.to_string();
    let core = Core::start(dir, url, &["--window", &window]).await?;
    println!("\n== {name} (window {}) ==", args.window);

    let took = rest_single(&core, args).await?;
    println!(
        "publish, single REST requests ({} clients): {}",
        args.clients,
        rate(args.rest_events, took)
    );
    let batch_total = args.events.min(50_000);
    let took = rest_batches(&core, args, batch_total).await?;
    println!(
        "publish, REST batches of {}:              {}",
        args.batch,
        rate(batch_total, took)
    );
    let took = stream(&core, args.events, args.payload).await?;
    println!(
        "publish, one gRPC PublishStream:          {}",
        rate(args.events, took)
    );

    let backlog = core.snapshot().await?.head;
    let started = Instant::now();
    let mut processor = start_processor(dir, &core.grpc_url(), &[])?;
    wait_drained(&core).await?;
    println!(
        "drain of a {backlog}-event backlog:       {}",
        rate(backlog, started.elapsed())
    );

    // W1: burst of N events through PublishStream, end to end.
    let first_seq = core.snapshot().await?.head + 1;
    let started = Instant::now();
    stream(&core, args.events, args.payload).await?;
    let accepted = started.elapsed();
    wait_drained(&core).await?;
    let store_url = url
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqlite:{}", dir.join("data/ackflow.db").display()));
    let store = ackflow_core::store::open(&store_url).await?;
    let mut latencies = Vec::with_capacity(args.events as usize);
    let (mut first_publish, mut last_result) = (i64::MAX, i64::MIN);
    let mut after = first_seq - 1;
    loop {
        let page = store.list_events(after, 1000, None).await?;
        let Some(last) = page.last() else { break };
        after = last.event.seq;
        for view in page {
            let result = view
                .result
                .ok_or_else(|| anyhow::anyhow!("seq {} has no result", view.event.seq))?;
            first_publish = first_publish.min(view.event.published_at_us);
            last_result = last_result.max(result.stored_at_us);
            latencies.push(result.stored_at_us - view.event.published_at_us);
        }
    }
    latencies.sort_unstable();
    let span = Duration::from_micros((last_result - first_publish).max(1) as u64);
    println!(
        "W1 end to end ({} events):              {}",
        args.events,
        rate(args.events, span)
    );
    println!(
        "W1 publish accepted:                      {}",
        rate(args.events, accepted)
    );
    println!(
        "W1 publish→result latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    processor.terminate().await?;
    let mut core = core;
    core.proc.terminate().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "ackflow-bench: {} events, {}-byte payloads, {} cores",
        args.events,
        args.payload,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if args.store == "postgres" || args.store == "both" {
        let db = PgDb::create("bench").await?;
        let dir = tempfile::tempdir()?;
        measure("PostgreSQL", Some(&db.url), dir.path(), &args).await?;
        db.drop_db().await?;
    }
    if args.store == "sqlite" || args.store == "both" {
        let dir = tempfile::tempdir()?;
        measure("SQLite", None, dir.path(), &args).await?;
    }
    Ok(())
}
