//! `overload`: one `PublishStream` offered more than core can take
//! (`--overload-rate`, default 200,000 events/s, for `--overload-secs`,
//! default 10) with a processor connected. Printed: what core accepted,
//! when the last result was stored, and, second by second, how far the
//! head and the acked floor moved and how large the backlog was (the
//! events committed and not yet resolved). Core keeps the last
//! `--tail-events` (65,536 by default) committed events in memory; a
//! backlog larger than that is read from the store, and the table shows
//! what the drain does then.

use std::sync::{Arc, Mutex};

use ackflow_core::model::now_us;
use ackflow_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use super::*;

/// Core's default `--tail-events`, for the table's last column.
const TAIL_EVENTS: u64 = 65_536;

/// One admin snapshot's figures: when, the head, the acked floor.
type Sample = (i64, u64, u64);

pub(super) async fn section_overload(env: &Env, args: &Args) -> anyhow::Result<()> {
    let rate = args.overload_rate as f64;
    let n = args.overload_rate * args.overload_secs;
    let pair = Pair::start(env, args.window).await?;
    let rss = pair.sampler();
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch(
        pair.core.admin().await?,
        samples.clone(),
        cancel.clone(),
    ));
    let started_us = now_us();
    let run = publish_stream(&pair.core, n, args.payload, Some(rate)).await?;
    let published_us = now_us();
    wait_drained(&pair.core, last_seq(&run)).await?;
    let drained_us = now_us();
    cancel.cancel();
    watcher.await??;
    let peaks = pair.peaks(&rss);
    pair.stop().await?;
    let figures = stream_figures(env, &run).await?;

    line(
        &format!(
            "overload: offered {rate:.0} events/s for {} s ({n} events, one PublishStream)",
            args.overload_secs
        ),
        format!("accepted at {}", super::rate(per_sec(n, run.took))),
    );
    line(
        "overload: last result stored after the last publish",
        format!("{:.1} s", (drained_us - published_us) as f64 / 1e6),
    );
    line(
        "overload: end to end (first publish → last result)",
        super::rate(figures.rate),
    );
    line("overload: publish→result latency", figures.latency);
    line("overload: peak RSS", peaks);
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    print_seconds(&samples, started_us);
    Ok(())
}

/// Records every admin snapshot (one each 200 ms) until cancelled.
async fn watch(
    mut admin: pb::admin_client::AdminClient<tonic::transport::Channel>,
    samples: Arc<Mutex<Vec<Sample>>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut stream = admin.watch(pb::WatchRequest {}).await?.into_inner();
    loop {
        let update = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            update = stream.message() => update?,
        };
        let Some(update) = update else {
            return Ok(());
        };
        if let Some(pb::watch_response::Update::Snapshot(s)) = update.update {
            samples.lock().unwrap_or_else(|p| p.into_inner()).push((
                s.taken_at_us,
                s.head,
                s.acked_floor,
            ));
        }
    }
}

/// For the first snapshot after each whole second since `started_us`:
/// events committed and resolved since the row before, and the backlog
/// then, with whether it is larger than the tail.
fn print_seconds(samples: &[Sample], started_us: i64) {
    println!("  | second | committed | resolved | backlog then | beyond the tail |");
    println!("  |---:|---:|---:|---:|---|");
    let (mut head0, mut floor0, mut printed) = (0u64, 1u64, 0i64);
    for &(at, head, floor) in samples {
        let second = (at - started_us) / 1_000_000;
        if second <= printed {
            continue;
        }
        let backlog = (head + 1).saturating_sub(floor);
        println!(
            "  | {second} | {} | {} | {backlog} | {} |",
            head.saturating_sub(head0),
            floor.saturating_sub(floor0),
            if backlog > TAIL_EVENTS { "yes" } else { "no" }
        );
        (head0, floor0, printed) = (head, floor, second);
    }
}
