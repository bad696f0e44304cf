//! The backlog reader: a task that feeds the hub every committed event in seq
//! order, from the in-memory tail when it has them and from the store in
//! pages otherwise.
//!
//! Its output is bounded in events and in bytes, so memory does not depend on
//! the backlog: with a million events waiting, at most one page (of at most
//! [`PAGE`] events and [`READ_AHEAD_BYTES`] of payload) plus the channel
//! (as many again) is in memory, however large the events.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::model::{Seq, SharedEvent};
use crate::store::SharedStore;
use crate::tail::Tail;

/// Events read from the store per query.
pub const PAGE: u32 = 1024;

/// Payload bytes read from the store per query, and waiting in the channel.
pub const READ_AHEAD_BYTES: usize = 16 << 20;

/// An event on its way to the hub. It holds its payload's share of the
/// channel's byte budget until the hub drops it.
pub struct ReadAhead {
    pub event: SharedEvent,
    _bytes: OwnedSemaphorePermit,
}

/// The sending half: the channel and its byte budget.
pub struct ReadAheadTx {
    tx: mpsc::Sender<ReadAhead>,
    budget: Arc<Semaphore>,
}

/// A channel of at most `2 × PAGE` events and [`READ_AHEAD_BYTES`] of
/// payload (an event larger than that goes alone).
pub fn channel() -> (ReadAheadTx, mpsc::Receiver<ReadAhead>) {
    let (tx, rx) = mpsc::channel(2 * PAGE as usize);
    let budget = Arc::new(Semaphore::new(READ_AHEAD_BYTES));
    (ReadAheadTx { tx, budget }, rx)
}

impl ReadAheadTx {
    /// Waits for room, then sends; false when the hub is gone.
    async fn send(&self, event: SharedEvent) -> bool {
        let cost = event.payload.len().clamp(1, READ_AHEAD_BYTES) as u32;
        let Ok(bytes) = self.budget.clone().acquire_many_owned(cost).await else {
            return false;
        };
        self.tx
            .send(ReadAhead {
                event,
                _bytes: bytes,
            })
            .await
            .is_ok()
    }
}

/// Streams events `from..` into `events_tx` until cancelled or the receiver
/// goes away.
pub async fn run(
    from: Seq,
    store: SharedStore,
    tail: Arc<Tail>,
    mut head_rx: watch::Receiver<Seq>,
    events_tx: ReadAheadTx,
    cancel: CancellationToken,
) {
    let mut next = from;
    let mut store_errors = 0u32;
    // After a gap in the tail (which `Tail::push` never makes), the store
    // is read instead until a page from it comes whole.
    let mut distrust_tail = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let head = *head_rx.borrow_and_update();
        if next > head {
            tokio::select! {
                changed = head_rx.changed() => if changed.is_err() { return },
                _ = cancel.cancelled() => return,
            }
            continue;
        }
        let from_tail = match tail.read(next, PAGE as usize) {
            Some(events) if !events.is_empty() && !distrust_tail => Some(events),
            _ => None,
        };
        let tail_read = from_tail.is_some();
        let batch = match from_tail {
            Some(events) => events,
            None => match store.events_from(next, PAGE, READ_AHEAD_BYTES).await {
                Ok(events) => events.into_iter().map(Arc::new).collect(),
                Err(e) => {
                    store_errors += 1;
                    let wait = backoff(store_errors);
                    tracing::warn!(error = %e, from = next, retry_in_ms = wait.as_millis() as u64, "backlog read failed");
                    if !pause(wait, &cancel).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let mut whole = true;
        for event in &batch {
            if event.seq != next {
                whole = false;
                break;
            }
            next += 1;
            tokio::select! {
                sent = events_tx.send(event.clone()) => if !sent { return },
                _ = cancel.cancelled() => return,
            }
        }
        if whole && !batch.is_empty() {
            if !tail_read {
                store_errors = 0;
                distrust_tail = false;
            }
            continue;
        }
        if tail_read {
            tracing::warn!(
                expected = next,
                "the in-memory tail is out of sequence; reading the store"
            );
            distrust_tail = true;
            continue;
        }
        // Committed (at or below the head) but not in the store: it lost
        // an event it had acknowledged (a restore, a hand's delete). Order
        // forbids going past it; say so, and look again, without hammering
        // the store.
        store_errors += 1;
        let wait = backoff(store_errors);
        tracing::error!(
            missing = next,
            head,
            retry_in_ms = wait.as_millis() as u64,
            "the store is missing a committed event; delivery waits for it"
        );
        if !pause(wait, &cancel).await {
            return;
        }
    }
}

/// The wait before the `failures`-th read again: 100 ms more each time, up
/// to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100 * u64::from(failures.min(50)))
}

/// Waits `wait`; false when cancelled meanwhile.
async fn pause(wait: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = cancel.cancelled() => false,
    }
}
