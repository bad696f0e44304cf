//! The ingest writer: the only place where seqs are assigned.
//!
//! Publishers (REST and gRPC handlers) put requests on a bounded queue and
//! wait. One writer task takes them off in groups (a batch closes at
//! `max_batch` events or `linger` after its first request, whichever comes
//! first; while a commit is running, new requests pile up and form the next
//! batch), commits each group in one transaction with consecutive seqs, and
//! only then answers every caller in it.
//!
//! Architecture invariant: seq order is commit order. There is one writer,
//! it assigns seqs itself, and it advances its counter only after a commit
//! succeeded, so seqs have no gaps and no committed seq is ever reused. After
//! a failed commit (whose outcome may be unknown) it re-reads the highest
//! stored seq before the next batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::CoreMetrics;
use crate::model::{Appended, NewEvent, Seq, StoredEvent, now_us};
use crate::store::SharedStore;
use crate::tail::Tail;

/// Group-commit and queue settings.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Most events in one commit.
    pub max_batch: usize,
    /// How long a batch stays open for more requests after its first one.
    /// Zero: take what is queued and commit at once.
    pub linger: Duration,
    /// Requests that may wait for the writer; beyond that, publishers are
    /// told to retry later.
    pub queue: usize,
}

/// Why a publish was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest queue is full; retry shortly")]
    Full,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("core is shutting down")]
    ShuttingDown,
}

type Reply = oneshot::Sender<Result<Vec<Appended>, IngestError>>;

/// One publish request: one event, or a batch that commits atomically.
struct Pending {
    events: Vec<NewEvent>,
    reply: Reply,
}

/// Handle used by the APIs to publish. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    queue_tx: mpsc::Sender<Pending>,
    head_rx: watch::Receiver<Seq>,
    published: Arc<AtomicU64>,
    metrics: Arc<CoreMetrics>,
}

/// A publish waiting for its commit.
pub type PendingReply = oneshot::Receiver<Result<Vec<Appended>, IngestError>>;

impl Ingest {
    /// Starts the writer. `next_seq` is the store's highest seq + 1.
    pub fn start(
        store: SharedStore,
        tail: Arc<Tail>,
        config: IngestConfig,
        next_seq: Seq,
        metrics: Arc<CoreMetrics>,
        cancel: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Self {
        let (queue_tx, queue_rx) = mpsc::channel(config.queue.max(1));
        let (head_tx, head_rx) = watch::channel(next_seq - 1);
        let published = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            store,
            tail,
            config,
            next_seq,
            reload_seq: false,
            head_tx,
            published: published.clone(),
            metrics: metrics.clone(),
        };
        tracker.spawn(writer.run(queue_rx, cancel));
        Self {
            queue_tx,
            head_rx,
            published,
            metrics,
        }
    }

    /// Queues `events` (committed together) without waiting for room: a full
    /// queue is an immediate [`IngestError::Full`]. Await the returned
    /// receiver for the outcome.
    pub fn try_submit(&self, events: Vec<NewEvent>) -> Result<PendingReply, IngestError> {
        let (reply, rx) = oneshot::channel();
        let count = events.len() as u64;
        self.queue_tx
            .try_send(Pending { events, reply })
            .map_err(|e| {
                let (reason, err) = match e {
                    mpsc::error::TrySendError::Full(_) => ("queue_full", IngestError::Full),
                    mpsc::error::TrySendError::Closed(_) => {
                        ("unavailable", IngestError::ShuttingDown)
                    }
                };
                self.metrics
                    .publish_rejected
                    .with_label_values(&[reason])
                    .inc_by(count);
                err
            })?;
        Ok(rx)
    }

    /// Queues `events`, waiting for room (streams use this: HTTP/2 flow
    /// control then pushes back on the client).
    pub async fn submit(&self, events: Vec<NewEvent>) -> Result<PendingReply, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.queue_tx
            .send(Pending { events, reply })
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        Ok(rx)
    }

    /// Publishes and waits for the commit.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, IngestError> {
        let rx = self.try_submit(events)?;
        rx.await.unwrap_or(Err(IngestError::ShuttingDown))
    }

    /// Highest committed seq (0 when empty); changes after every commit.
    pub fn head(&self) -> watch::Receiver<Seq> {
        self.head_rx.clone()
    }

    /// Events stored since start (replays excluded).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Core's metrics, for the APIs to count refused publishes.
    pub fn metrics(&self) -> &Arc<CoreMetrics> {
        &self.metrics
    }
}

/// Wait for a publish's outcome.
pub async fn outcome(rx: PendingReply) -> Result<Vec<Appended>, IngestError> {
    rx.await.unwrap_or(Err(IngestError::ShuttingDown))
}

struct Writer {
    store: SharedStore,
    tail: Arc<Tail>,
    config: IngestConfig,
    /// Seq of the next new event; advanced only after a successful commit.
    next_seq: Seq,
    /// Set after a failed commit: the commit may have happened, so the next
    /// batch first re-reads the highest stored seq.
    reload_seq: bool,
    head_tx: watch::Sender<Seq>,
    published: Arc<AtomicU64>,
    metrics: Arc<CoreMetrics>,
}

impl Writer {
    async fn run(mut self, mut queue_rx: mpsc::Receiver<Pending>, cancel: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                p = queue_rx.recv() => p,
                _ = cancel.cancelled() => None,
            };
            let Some(first) = first else { break };
            let batch = self.gather(first, &mut queue_rx).await;
            self.commit(batch).await;
        }
        // Shutdown: refuse new requests, but commit (or fail) every request
        // already queued, so no caller is left without an answer.
        queue_rx.close();
        while let Some(first) = queue_rx.recv().await {
            let batch = self.gather(first, &mut queue_rx).await;
            self.commit(batch).await;
        }
        tracing::info!(head = self.next_seq - 1, "ingest writer stopped");
    }

    async fn gather(&self, first: Pending, queue_rx: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
        let deadline = Instant::now() + self.config.linger;
        let mut count = first.events.len();
        let mut batch = vec![first];
        while count < self.config.max_batch {
            let next = match queue_rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if self.config.linger.is_zero() {
                        None
                    } else {
                        tokio::time::timeout_at(deadline, queue_rx.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                }
            };
            let Some(p) = next else { break };
            count += p.events.len();
            batch.push(p);
        }
        batch
    }

    async fn commit(&mut self, batch: Vec<Pending>) {
        if self.reload_seq {
            match self.store.next_seq().await {
                Ok(seq) => {
                    self.next_seq = seq;
                    self.reload_seq = false;
                }
                Err(e) => {
                    fail_all(batch, IngestError::Unavailable(e.to_string()));
                    return;
                }
            }
        }
        let mut sizes = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        for p in batch {
            sizes.push(p.events.len());
            replies.push(p.reply);
            events.extend(p.events);
        }
        let published_at_us = now_us();
        let ids: Vec<String> = events.iter().map(|_| new_id(published_at_us)).collect();
        let started = std::time::Instant::now();
        match self
            .store
            .append(self.next_seq, published_at_us, &ids, &events)
            .await
        {
            Ok(outcomes) => {
                let mut stored = Vec::new();
                for ((event, id), outcome) in events.into_iter().zip(ids).zip(&outcomes) {
                    if !outcome.replayed {
                        stored.push(Arc::new(StoredEvent {
                            seq: outcome.seq,
                            id,
                            kind: event.kind,
                            key: event.key,
                            payload: event.payload,
                            published_at_us,
                        }));
                    }
                }
                self.next_seq += stored.len() as u64;
                let took = started.elapsed().as_secs_f64();
                let m = &self.metrics;
                m.events_stored.inc_by(stored.len() as u64);
                m.publish_accepted.inc_by(outcomes.len() as u64);
                m.store_commit_seconds
                    .with_label_values(&["append"])
                    .observe(took);
                m.store_batch_events
                    .with_label_values(&["append"])
                    .observe(outcomes.len() as f64);
                self.published
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
                tracing::trace!(
                    events = outcomes.len(),
                    new = stored.len(),
                    took_us = started.elapsed().as_micros() as u64,
                    "committed batch"
                );
                if !stored.is_empty() {
                    self.tail.push(stored);
                    self.head_tx.send_replace(self.next_seq - 1);
                }
                let mut outcomes = outcomes.into_iter();
                for (size, reply) in sizes.into_iter().zip(replies) {
                    let mine: Vec<Appended> = outcomes.by_ref().take(size).collect();
                    // A caller that went away still had its event stored.
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "commit failed");
                self.reload_seq = true;
                self.metrics
                    .publish_rejected
                    .with_label_values(&["unavailable"])
                    .inc_by(events.len() as u64);
                let err = IngestError::Unavailable(e.to_string());
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

fn fail_all(batch: Vec<Pending>, err: IngestError) {
    for p in batch {
        let _ = p.reply.send(Err(err.clone()));
    }
}

/// A new event id: 12 hex digits of milliseconds then 20 random hex digits,
/// so ids sort roughly by time and never collide in practice.
fn new_id(now_us: i64) -> String {
    let ms = (now_us / 1000) as u64 & 0xffff_ffff_ffff;
    let random = fastrand::u128(..) & ((1u128 << 80) - 1);
    format!("{ms:012x}{random:020x}")
}
