//! The result writer: stores acknowledged results and dead entries in
//! batches, then reports which seqs are durable so the floor can move. A
//! second one (the same code, its own channel) stores the sent marks of
//! at-most-once events (see `guarantee.rs`) and reports them, so the hub
//! sends those events once marked, without waiting behind results.
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
    /// At-most-once events about to go out: their sent marks.
    pub sent: Vec<Seq>,
}

impl Resolution {
    pub fn rows(&self) -> usize {
        self.results.len() + self.dead.len() + self.sent.len()
    }
}

/// What became durable, reported to the hub.
#[derive(Debug, Default)]
pub struct Stored {
    /// Results and dead entries.
    pub resolved: Vec<Seq>,
    /// Sent marks.
    pub marked: Vec<Seq>,
}

/// Most rows in one transaction.
const MAX_ROWS: usize = 8192;

/// Runs until `rows_rx` closes; drains what is queued before returning, so a
/// graceful shutdown stores every ack received.
pub async fn run(
    store: SharedStore,
    mut rows_rx: mpsc::UnboundedReceiver<Resolution>,
    stored_tx: mpsc::UnboundedSender<Stored>,
    acked_floor: Arc<AtomicU64>,
    metrics: Arc<CoreMetrics>,
    health: Arc<StoreHealth>,
    cancel: CancellationToken,
) {
    while let Some(first) = rows_rx.recv().await {
        let mut batch = first;
        while batch.rows() < MAX_ROWS {
            match rows_rx.try_recv() {
                Ok(more) => {
                    batch.results.extend(more.results);
                    batch.dead.extend(more.dead);
                    batch.sent.extend(more.sent);
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
        let writer = Writer {
            metrics: &metrics,
            health: &health,
            cancel: &cancel,
        };
        // Marks first: the events they hold back wait for nothing else.
        if !batch.sent.is_empty()
            && !writer
                .write("mark_sent", batch.sent.len(), || {
                    store.mark_sent(&batch.sent, now)
                })
                .await
        {
            return;
        }
        if (!batch.results.is_empty() || !batch.dead.is_empty())
            && !writer
                .write("resolve", batch.results.len() + batch.dead.len(), || {
                    let floor = acked_floor.load(Ordering::Acquire);
                    store.resolve(&batch.results, &batch.dead, floor)
                })
                .await
        {
            return;
        }
        let stored = Stored {
            resolved: batch
                .results
                .iter()
                .map(|r| r.seq)
                .chain(batch.dead.iter().map(|d| d.seq))
                .collect(),
            marked: batch.sent,
        };
        if stored_tx.send(stored).is_err() {
            // The hub stopped; keep draining so queued rows are stored.
            continue;
        }
    }
}

struct Writer<'a> {
    metrics: &'a CoreMetrics,
    health: &'a StoreHealth,
    cancel: &'a CancellationToken,
}

impl Writer<'_> {
    /// Runs `op` until it succeeds, with backoff. False when shutting down
    /// with the store gone: the rows are lost (acks: their events will be
    /// delivered again; marks: their events were never sent).
    async fn write<F, Fut>(&self, name: &'static str, rows: usize, op: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::store::StoreError>>,
    {
        let mut failures = 0u32;
        loop {
            let started = std::time::Instant::now();
            match op().await {
                Ok(()) => {
                    self.health.write_ok(name);
                    self.metrics
                        .store_commit_seconds
                        .with_label_values(&[name])
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics
                        .store_batch_events
                        .with_label_values(&[name])
                        .observe(rows as f64);
                    return true;
                }
                Err(e) => {
                    self.health.write_failed(name, &e);
                    failures += 1;
                    let wait = Duration::from_millis(50 * u64::from(failures.min(100)));
                    tracing::warn!(error = %e, op = name, rows, retry_in_ms = wait.as_millis() as u64, "store write failed; retrying");
                    if self.cancel.is_cancelled() && failures > 3 {
                        return false;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
