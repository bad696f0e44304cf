//! The sections W1 is measured by (publish, w1, rest, open-loop,
//! backlog, sweep; the ceiling is `ceiling.rs`, W2 `w2.rs`), each on a
//! fresh core.

use super::*;

pub(super) async fn rest_single(core: &Core, args: &Args) -> anyhow::Result<Duration> {
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
pub(super) async fn rest_batches(core: &Core, args: &Args, total: u64) -> anyhow::Result<i64> {
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
pub(super) async fn drain(env: &Env, core: Core, last: u64) -> anyhow::Result<(f64, Peaks)> {
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

pub(super) async fn section_publish(env: &Env, args: &Args) -> anyhow::Result<()> {
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

pub(super) async fn section_w1(
    env: &Env,
    args: &Args,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let pair = Pair::start(env, args.window).await?;
    let rss = pair.sampler();
    let cpu = cpu::CpuMeter::start(pid(&pair.core.proc), pid(&pair.processor));
    let run = publish_stream(&pair.core, args.events, args.payload, None).await?;
    wait_drained(&pair.core, last_seq(&run)).await?;
    let cpu = cpu.per_event(args.events);
    let commits = Commits::read(&pair.core).await?;
    let peaks = pair.peaks(&rss);
    pair.stop().await?;
    let Figures {
        rate: e2e, latency, ..
    } = stream_figures(env, &run).await?;
    let accepted = per_sec(args.events, run.took);
    line(
        &format!("W1 end to end ({} events, closed burst)", args.events),
        rate(e2e),
    );
    line("W1 publish accepted", rate(accepted));
    line("W1 publish→result latency", latency);
    line("W1 peak RSS", peaks);
    line("W1 CPU per event (user + system)", cpu);
    line("W1 core's commits", commits);
    summary.w1_rate = Some(e2e);
    summary.w1_cpu = Some(cpu);
    summary.w1_accepted = Some(accepted);
    summary.w1_latency = Some(latency);
    summary.w1_processor_mb = Some(peaks.processor_mb);
    Ok(())
}

pub(super) async fn section_rest(
    env: &Env,
    args: &Args,
    summary: &mut Summary,
) -> anyhow::Result<()> {
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

/// One open-loop run (`run` of `--open-loop-runs`).
pub(super) async fn section_open_loop(
    env: &Env,
    args: &Args,
    run_no: u64,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let target = args
        .rate
        .map(|r| r as f64)
        .or(summary.w1_rate.map(|r| (r / 2.0).round()))
        .unwrap_or(20_000.0);
    let n = (target * args.open_loop_secs as f64) as u64;
    let log = env.dir().join("processed.log");
    let log_arg = log.display().to_string();
    let flags: &[&str] = if args.open_loop_split {
        &["--processed-log", &log_arg]
    } else {
        &[]
    };
    let pair = Pair::with_processor_flags(env, env.core(args.window).await?, flags).await?;
    let rss = pair.sampler();
    let db_before = DbActivity::read(&env.store_url()).await?;
    let run = publish_stream(&pair.core, n, args.payload, Some(target)).await?;
    wait_drained(&pair.core, last_seq(&run)).await?;
    let db = db_before.since(DbActivity::read(&env.store_url()).await?);
    let commits = Commits::read(&pair.core).await?;
    let peaks = pair.peaks(&rss);
    pair.stop().await?;
    let figures = stream_figures(env, &run).await?;
    let latency = figures.latency;
    line(
        &format!(
            "open loop {run_no} of {}, at {target:.0} events/s for {} s ({n} events)",
            args.open_loop_runs, args.open_loop_secs
        ),
        format!("published at {}", rate(per_sec(n, run.took))),
    );
    line("open-loop publish→result latency", latency);
    line("  of which: sent → its commit's start", figures.to_commit);
    line(
        "  and: commit's start → result stored",
        figures.commit_to_result,
    );
    if args.open_loop_split {
        let (to_start, start_to_stored) = stalls::split_at_start(&log, &figures.times)?;
        line(
            "  split at the processor's start: commit's start → it",
            to_start,
        );
        line(
            "  and: the processor's start → result stored",
            start_to_stored,
        );
    }
    line("open-loop core's commits", commits);
    line(
        "open-loop slowest events, by send time",
        Stalls::of(figures.times, 10.0),
    );
    line("open-loop database, during the run", db);
    line("open-loop peak RSS", peaks);
    summary
        .open_loop
        .get_or_insert_with(|| (target, Vec::new()))
        .1
        .push(latency);
    Ok(())
}

pub(super) async fn section_backlog(
    env: &Env,
    args: &Args,
    summary: &mut Summary,
) -> anyhow::Result<()> {
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

pub(super) async fn section_sweep(backend: Backend, args: &Args) -> anyhow::Result<()> {
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
        let Figures {
            rate: e2e, latency, ..
        } = stream_figures(&env, &run).await?;
        println!(
            "  | {window} | {e2e:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
            latency.p50, latency.p99, peaks.core_mb, peaks.processor_mb
        );
        env.finish().await?;
    }
    Ok(())
}
