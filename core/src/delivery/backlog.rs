//! The backlog reader: a task that feeds the hub every committed event in seq
//! order, from the in-memory tail when it has them and from the store in
//! pages otherwise.
//!
//! Its output channel is small and bounded, so memory does not depend on the
//! backlog: with a million events waiting, at most one page plus the channel
//! is in memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::model::{Seq, SharedEvent};
use crate::store::SharedStore;
use crate::tail::Tail;

/// Events read from the store per query.
pub const PAGE: u32 = 1024;

/// Streams events `from..` into `events_tx` until cancelled or the receiver
/// goes away.
pub async fn run(
    from: Seq,
    store: SharedStore,
    tail: Arc<Tail>,
    mut head_rx: watch::Receiver<Seq>,
    events_tx: mpsc::Sender<SharedEvent>,
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
            _ => match store.events_from(next, PAGE).await {
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
                sent = events_tx.send(event) => if sent.is_err() { return },
                _ = cancel.cancelled() => return,
            }
        }
    }
}
