//! The result writer: stores acknowledged results and dead entries in
//! batches, then reports which seqs are durable so the floor can move.
//!
//! A failed write is retried with backoff, never dropped: an ack the
//! processor sent must either become a stored result or be re-earned by a
//! retransmission after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::CoreMetrics;
use crate::model::{DeadRow, ResultRow, Seq};
use crate::store::SharedStore;
use crate::store::health::StoreHealth;

/// Rows to store, sent by the hub.
#[derive(Debug, Default)]
pub struct Resolution {
    pub results: Vec<ResultRow>,
    pub dead: Vec<DeadRow>,
}

/// Most rows in one transaction.
const MAX_ROWS: usize = 8192;

/// Runs until `rows_rx` closes; drains what is queued before returning, so a
/// graceful shutdown stores every ack received.
pub async fn run(
    store: SharedStore,
    mut rows_rx: mpsc::UnboundedReceiver<Resolution>,
    stored_tx: mpsc::UnboundedSender<Vec<Seq>>,
    acked_floor: Arc<AtomicU64>,
    metrics: Arc<CoreMetrics>,
    health: Arc<StoreHealth>,
    cancel: CancellationToken,
) {
    while let Some(first) = rows_rx.recv().await {
        let mut batch = first;
        while batch.results.len() + batch.dead.len() < MAX_ROWS {
            match rows_rx.try_recv() {
                Ok(more) => {
                    batch.results.extend(more.results);
                    batch.dead.extend(more.dead);
                }
                Err(_) => break,
            }
        }
        // stored_at is the commit's start, so publish→result latency includes
        // the time the ack waited for this batch.
        let now = crate::model::now_us();
        for row in &mut batch.results {
            row.stored_at_us = now;
        }
        let mut failures = 0u32;
        loop {
            let floor = acked_floor.load(Ordering::Acquire);
            let started = std::time::Instant::now();
            match store.resolve(&batch.results, &batch.dead, floor).await {
                Ok(()) => {
                    health.write_ok("resolve");
                    metrics
                        .store_commit_seconds
                        .with_label_values(&["resolve"])
                        .observe(started.elapsed().as_secs_f64());
                    metrics
                        .store_batch_events
                        .with_label_values(&["resolve"])
                        .observe((batch.results.len() + batch.dead.len()) as f64);
                    break;
                }
                Err(e) => {
                    health.write_failed("resolve", &e);
                    failures += 1;
                    let wait = Duration::from_millis(50 * u64::from(failures.min(100)));
                    tracing::warn!(error = %e, rows = batch.results.len() + batch.dead.len(), retry_in_ms = wait.as_millis() as u64, "storing results failed");
                    if cancel.is_cancelled() && failures > 3 {
                        // Shutting down and the store is gone: these acks
                        // are lost, their events will be delivered again.
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let seqs: Vec<Seq> = batch
            .results
            .iter()
            .map(|r| r.seq)
            .chain(batch.dead.iter().map(|d| d.seq))
            .collect();
        if stored_tx.send(seqs).is_err() {
            // The hub stopped; keep draining so queued rows are stored.
            continue;
        }
    }
}
