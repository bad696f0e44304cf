//! The ingest writer: the only place where seqs are assigned.
//!
//! Publishers (REST and gRPC handlers) put requests on a bounded queue and
//! wait. One writer task takes them off in groups (a batch closes at
//! `max_batch` events or `linger` after its first request, whichever comes
//! first; while a commit is running, new requests pile up and form the next
//! batch), commits each group in one transaction with consecutive seqs, and
//! only then answers every caller in it.
//!
//! Each request commits all or nothing, and the store answers one outcome
//! per request: a request refused because an idempotency key it carries
//! already stands for a different request (see `store/idempotency.rs`)
//! stores nothing and fails none of the requests committed with it.
//!
//! Architecture invariant: seq order is commit order. There is one writer,
//! it assigns seqs itself, and it advances its counter only after a commit
//! succeeded, so seqs have no gaps and no committed seq is ever reused.
//!
//! After a failed commit the writer trusts nothing it holds: the commit's
//! outcome may be unknown, and the store may have lost more than this batch
//! (SQLite rolls a whole transaction back by itself on a full disk). It
//! empties the in-memory tail (the backlog reader then reads the store),
//! and before the next batch it re-reads the highest stored seq and moves
//! the head to it. While writes fail it tries the store at most once a
//! second (with a waiting batch, or with a probe when idle) and refuses
//! other requests at once, so callers get their 503 without waiting on a
//! dead store, and `/readyz` turns ready again by itself when the fault
//! ends, even with no publisher retrying.
//!
//! `writer.rs` is the writer task; `service.rs` is the gRPC `Ingest`
//! service in front of it (REST is `crate::rest`).

pub mod service;
mod writer;

use self::writer::Writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::CoreMetrics;
use crate::model::{
    AppendBatch, Appended, Conflict, Fingerprint, NewEvent, Original, RequestOutcome, Seq,
    StoredEvent, now_us,
};
use crate::store::SharedStore;
use crate::store::health::StoreHealth;
use crate::tail::Tail;

/// How often a writer whose last write failed probes the store.
const PROBE_EVERY: Duration = Duration::from_secs(1);

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
    /// Bytes (payloads, keys and kinds) that queued and committing requests
    /// may hold together; a request that would pass it is refused like one
    /// finding the queue full. Its bytes are given back once it is answered.
    pub queue_bytes: usize,
    /// `--unsafe-pair-after-refusal` (a negative control only).
    pub unsafe_pair_after_refusal: bool,
}

/// Why a publish was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest queue is full; retry shortly")]
    Full,
    /// The store failed; the kind of failure ([`crate::store::StoreError::kind`]).
    /// The error's text goes to the log, never to the client.
    #[error("the store cannot take writes right now ({0}); retry later")]
    Unavailable(&'static str),
    #[error("core is shutting down")]
    ShuttingDown,
    /// An idempotency key of the request already stands for a different
    /// request; nothing of it was stored.
    #[error("{0}")]
    Conflict(Conflict),
}

type Reply = oneshot::Sender<Result<Vec<RequestOutcome>, IngestError>>;

/// Requests queued together: one publish (a single event, or a batch that
/// commits all or nothing), or the messages of a stream that arrived
/// together, each a request of its own.
struct Pending {
    events: Vec<NewEvent>,
    /// `events[i].fingerprint()`, computed by the publisher's task rather
    /// than the writer's.
    fingerprints: Vec<Option<Fingerprint>>,
    /// Number of events in each request, in order.
    requests: Vec<usize>,
    reply: Reply,
    /// The request's share of `--ingest-queue-bytes`, given back when this
    /// is dropped (after the reply was sent).
    bytes: OwnedSemaphorePermit,
    /// The `publish` spans of its traced events, by index in `events`
    /// (see `crate::trace`); empty for untraced ones.
    spans: Vec<(usize, tracing::Span)>,
}

/// What a request counts against `--ingest-queue-bytes`.
fn request_bytes(events: &[NewEvent]) -> usize {
    events
        .iter()
        .map(|e| {
            e.payload.len()
                + e.kind.len()
                + e.key.as_ref().map_or(0, String::len)
                + e.idempotency_key.as_ref().map_or(0, String::len)
        })
        .sum()
}

impl Pending {
    fn new(
        events: Vec<NewEvent>,
        each_alone: bool,
        reply: Reply,
        bytes: OwnedSemaphorePermit,
    ) -> Self {
        let fingerprints = events.iter().map(NewEvent::fingerprint).collect();
        let spans = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((i, crate::trace::publish_span(e)?)))
            .collect();
        let requests = if each_alone {
            vec![1; events.len()]
        } else {
            vec![events.len()]
        };
        Self {
            events,
            fingerprints,
            requests,
            reply,
            bytes,
            spans,
        }
    }
}

/// Handle used by the APIs to publish. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    queue_tx: mpsc::Sender<Pending>,
    /// One permit per byte of `--ingest-queue-bytes`.
    queue_bytes: Arc<Semaphore>,
    /// `queue_bytes`' capacity, in permits.
    queue_bytes_max: u32,
    head_rx: watch::Receiver<Seq>,
    published: Arc<AtomicU64>,
    metrics: Arc<CoreMetrics>,
    health: Arc<StoreHealth>,
}

/// Publishes waiting for their commit: one outcome per request.
pub type PendingReply = oneshot::Receiver<Result<Vec<RequestOutcome>, IngestError>>;

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
        let health = Arc::new(StoreHealth::new(
            metrics.store_writable.clone(),
            metrics.store_errors.clone(),
        ));
        let writer = Writer {
            store,
            tail,
            config,
            next_seq,
            retry_at: None,
            head_tx,
            published: published.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        tracker.spawn(writer.run(queue_rx, cancel));
        let queue_bytes_max = config
            .queue_bytes
            .clamp(1, u32::MAX as usize)
            .min(Semaphore::MAX_PERMITS) as u32;
        Self {
            queue_tx,
            queue_bytes: Arc::new(Semaphore::new(queue_bytes_max as usize)),
            queue_bytes_max,
            head_rx,
            published,
            metrics,
            health,
        }
    }

    /// Queues `events` as one request (committed all or nothing) without
    /// waiting for room: a full queue, or one whose queued bytes this
    /// request would take past `--ingest-queue-bytes`, is an immediate
    /// [`IngestError::Full`]. Await the returned receiver for the outcome.
    pub fn try_submit(&self, events: Vec<NewEvent>) -> Result<PendingReply, IngestError> {
        let (reply, rx) = oneshot::channel();
        let count = events.len() as u64;
        let Ok(bytes) = self
            .queue_bytes
            .clone()
            .try_acquire_many_owned(self.permits(&events))
        else {
            self.metrics
                .publish_rejected
                .with_label_values(&["queue_full"])
                .inc_by(count);
            return Err(IngestError::Full);
        };
        self.queue_tx
            .try_send(Pending::new(events, false, reply, bytes))
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

    /// Queues `events`, each a request of its own (one event's conflict
    /// refuses only that event), waiting for room (streams use this: HTTP/2
    /// flow control then pushes back on the client). One queue operation
    /// for all of them. Waits for room in `--ingest-queue-bytes` too (a
    /// group larger than the whole bound waits for all of it).
    pub async fn submit_each(&self, events: Vec<NewEvent>) -> Result<PendingReply, IngestError> {
        let (reply, rx) = oneshot::channel();
        let bytes = self
            .queue_bytes
            .clone()
            .acquire_many_owned(self.permits(&events))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        self.queue_tx
            .send(Pending::new(events, true, reply, bytes))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        Ok(rx)
    }

    /// Publishes `events` as one request (all or nothing) and waits for the
    /// commit: one outcome per event, or [`IngestError::Conflict`].
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, IngestError> {
        let rx = self.try_submit(events)?;
        let mut outcomes = outcome(rx).await?;
        match outcomes.pop() {
            Some(Ok(appended)) if outcomes.is_empty() => Ok(appended),
            Some(Err(conflict)) if outcomes.is_empty() => Err(IngestError::Conflict(conflict)),
            // One request in, one outcome out: anything else is a bug.
            _ => Err(IngestError::Unavailable("other")),
        }
    }

    /// Permits `events` take from `queue_bytes`: their bytes, at most the
    /// whole bound.
    fn permits(&self, events: &[NewEvent]) -> u32 {
        request_bytes(events).min(self.queue_bytes_max as usize) as u32
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

    /// Whether the store takes writes (the last write's outcome), shared
    /// with the result writer and `/readyz`.
    pub fn store_health(&self) -> &Arc<StoreHealth> {
        &self.health
    }
}

/// Wait for the outcome of submitted requests.
pub async fn outcome(rx: PendingReply) -> Result<Vec<RequestOutcome>, IngestError> {
    rx.await.unwrap_or(Err(IngestError::ShuttingDown))
}
