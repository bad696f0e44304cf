//! Section `w2`: keyed parallel processing. W2 events of kind `sleep` (each
//! waits `--w2-sleep-ms`) spread over `--w2-keys` keys, published as one
//! burst, with core and processor on their default flags (key ordering,
//! default window and concurrency). The rate is compared with the ideal:
//! the processor's concurrency divided by the mean handler time measured in
//! the same run (a 5 ms timer takes longer than 5 ms on a busy machine).
//! The control runs the same over one key: strict order, one call at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use ackflow_proto::v1 as pb;

use super::{Env, Pair, Summary, line, per_sec, rate, wait_drained};

/// What one W2 run measured.
#[derive(Debug, Clone, Copy)]
pub struct W2 {
    pub events: u64,
    pub keys: u64,
    /// First publish to the last result stored.
    pub rate: f64,
    /// Mean time the handler took, from the stored results.
    pub handler_ms: f64,
    /// The processor's concurrency, from its status.
    pub concurrency: u32,
    /// Highest number of calls seen running at once.
    pub peak_running: u32,
}

impl W2 {
    /// Concurrency ÷ mean handler time, capped by what one call per key
    /// allows.
    pub fn ideal(&self) -> f64 {
        let lanes = f64::from(self.concurrency).min(self.keys as f64);
        lanes * 1000.0 / self.handler_ms
    }
}

pub async fn section_w2(
    env: &Env,
    args: &super::Args,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let keyed = run(env, args.w2_events, args.w2_keys, args.w2_sleep_ms).await?;
    report(&keyed, "W2");
    summary.w2 = Some(keyed);
    Ok(())
}

pub async fn section_w2_control(
    env: &Env,
    args: &super::Args,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let one_key = run(env, args.w2_control_events, 1, args.w2_sleep_ms).await?;
    report(&one_key, "W2 control");
    summary.w2_control = Some(one_key);
    Ok(())
}

fn report(w2: &W2, label: &str) {
    line(
        &format!("{label}: {} sleep events over {} keys", w2.events, w2.keys),
        rate(w2.rate),
    );
    line(
        &format!("{label}: ideal (min(concurrency, keys) / handler time)"),
        format!(
            "{} ({} calls × 1000 / {:.2} ms); ratio {:.2}; peak running {}",
            rate(w2.ideal()),
            w2.concurrency.min(w2.keys as u32),
            w2.handler_ms,
            w2.rate / w2.ideal(),
            w2.peak_running
        ),
    );
}

async fn run(env: &Env, events: u64, keys: u64, sleep_ms: u64) -> anyhow::Result<W2> {
    let core = env.core_with(&[]).await?;
    let pair = Pair::with_core(env, core).await?;
    let peak = Arc::new(AtomicU32::new(0));
    let watch = tokio::spawn(watch_running(pair.core.admin().await?, peak.clone()));
    let started = Instant::now();
    let last = publish(pair.core.ingest().await?, events, keys, sleep_ms).await?;
    let snapshot = wait_drained(&pair.core, last).await?;
    let took = started.elapsed();
    watch.abort();
    let peak_running = peak.load(Ordering::Relaxed);
    let concurrency = snapshot.processor.map(|p| p.concurrency).unwrap_or(0);
    pair.stop().await?;
    let store = ackflow_core::store::open(&env.store_url()).await?;
    let (mut total_us, mut n, mut after) = (0u64, 0u64, 0);
    loop {
        let page = store.list_events(after, 1000, None).await?;
        let Some(end) = page.last() else { break };
        after = end.event.seq;
        for view in page {
            if let Some(result) = view.result {
                total_us += result.processing_us;
                n += 1;
            }
        }
    }
    anyhow::ensure!(n == events, "{n} results for {events} events");
    Ok(W2 {
        events,
        keys,
        rate: per_sec(events, took),
        handler_ms: total_us as f64 / n as f64 / 1000.0,
        concurrency,
        peak_running,
    })
}

/// Publishes `events` sleep events, keys drawn uniformly (seeded) from
/// `keys`, on one stream; returns the highest seq.
pub(super) async fn publish(
    mut client: pb::ingest_client::IngestClient<tonic::transport::Channel>,
    events: u64,
    keys: u64,
    sleep_ms: u64,
) -> anyhow::Result<u64> {
    let mut rng = fastrand::Rng::with_seed(2);
    let requests: Vec<pb::PublishRequest> = (0..events)
        .map(|i| pb::PublishRequest {
            kind: "sleep".into(),
            key: format!("k{}", rng.u64(..keys)),
            payload: sleep_ms.to_string().into_bytes(),
            request_id: i,
            ..Default::default()
        })
        .collect();
    let mut replies = client
        .publish_stream(tokio_stream::iter(requests))
        .await?
        .into_inner();
    let (mut last, mut got) = (0, 0);
    while let Some(reply) = replies.message().await? {
        last = last.max(reply.seq);
        got += 1;
    }
    anyhow::ensure!(got == events, "only {got} of {events} replies");
    Ok(last)
}

/// Keeps in `peak` the highest `running` the processor reports.
async fn watch_running(
    mut admin: pb::admin_client::AdminClient<tonic::transport::Channel>,
    peak: Arc<AtomicU32>,
) {
    let Ok(response) = admin.watch(pb::WatchRequest {}).await else {
        return;
    };
    let mut updates = response.into_inner();
    while let Ok(Some(update)) = updates.message().await {
        if let Some(pb::watch_response::Update::Snapshot(s)) = update.update {
            let running = s.processor.map(|p| p.running).unwrap_or(0);
            peak.fetch_max(running, Ordering::Relaxed);
        }
    }
}
