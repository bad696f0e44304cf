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
        let batch = match tail.read(next, PAGE as usize) {
            Some(events) if !events.is_empty() => events,
            _ => match store.events_from(next, PAGE, READ_AHEAD_BYTES).await {
                Ok(events) => {
                    store_errors = 0;
                    events.into_iter().map(Arc::new).collect()
                }
                Err(e) => {
                    store_errors += 1;
                    let wait = Duration::from_millis(100 * u64::from(store_errors.min(50)));
                    tracing::warn!(error = %e, from = next, retry_in_ms = wait.as_millis() as u64, "backlog read failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return,
                    }
                    continue;
                }
            },
        };
        for event in batch {
            if event.seq != next {
                // A gap can only mean the store and the tail disagree;
                // re-read from the store rather than skip a seq.
                tracing::warn!(expected = next, got = event.seq, "backlog out of sequence");
                break;
            }
            next += 1;
            tokio::select! {
                sent = events_tx.send(event) => if !sent { return },
                _ = cancel.cancelled() => return,
            }
        }
    }
}
