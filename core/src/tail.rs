//! The in-memory tail: the most recently committed events, so that a
//! processor that keeps up is fed without reading the store.
//!
//! Bounded by an event count and a byte budget; when either is exceeded the
//! oldest events are dropped (they stay in the store, where the backlog
//! reader finds them).

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::model::{Seq, SharedEvent};

/// Recent events, contiguous in seq.
pub struct Tail {
    inner: Mutex<Inner>,
    max_events: usize,
    max_bytes: usize,
}

struct Inner {
    events: VecDeque<SharedEvent>,
    /// Sum of payload sizes in `events`.
    bytes: usize,
}

impl Tail {
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                bytes: 0,
            }),
            max_events: max_events.max(1),
            max_bytes,
        }
    }

    /// Appends freshly committed events (contiguous, increasing seqs). A gap
    /// (which the ingest writer never produces) resets the tail rather than
    /// serving a wrong event.
    pub fn push(&self, batch: impl IntoIterator<Item = SharedEvent>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for event in batch {
            if let Some(last) = inner.events.back()
                && last.seq + 1 != event.seq
            {
                inner.events.clear();
                inner.bytes = 0;
            }
            inner.bytes += event.payload.len();
            inner.events.push_back(event);
            while inner.events.len() > self.max_events
                || (inner.bytes > self.max_bytes && inner.events.len() > 1)
            {
                if let Some(old) = inner.events.pop_front() {
                    inner.bytes -= old.payload.len();
                }
            }
        }
    }

    /// Up to `max` events from `from` on, or `None` when `from` is older than
    /// the tail (read the store instead). An empty vector means "not
    /// committed yet".
    pub fn read(&self, from: Seq, max: usize) -> Option<Vec<SharedEvent>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let first = match inner.events.front() {
            Some(e) => e.seq,
            None => return Some(Vec::new()),
        };
        if from < first {
            return None;
        }
        let start = (from - first) as usize;
        Some(inner.events.iter().skip(start).take(max).cloned().collect())
    }

    /// Forgets every event, so readers go to the store (after a failed
    /// write, when what was committed is known only to the store).
    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.events.clear();
        inner.bytes = 0;
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .len()
    }

    /// True when the tail holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StoredEvent;
    use std::sync::Arc;

    fn ev(seq: Seq, size: usize) -> SharedEvent {
        Arc::new(StoredEvent {
            seq,
            id: String::new(),
            kind: "k".into(),
            key: None,
            payload: vec![b'x'; size],
            published_at_us: 0,
            traceparent: None,
        })
    }

    #[test]
    fn bounded_by_count_and_bytes() {
        let tail = Tail::new(3, 100);
        tail.push((1..=5).map(|s| ev(s, 10)));
        assert_eq!(tail.len(), 3);
        assert!(tail.read(2, 10).is_none());
        let got: Vec<Seq> = tail.read(3, 10).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(got, vec![3, 4, 5]);
        tail.push([ev(6, 95)]);
        assert_eq!(tail.len(), 1);
        assert_eq!(tail.read(7, 10).unwrap().len(), 0);
    }
}
