//! The payloads of the events in the window: kept from their first send
//! until their results are stored, for retransmits, and counted in bytes so
//! that large events cannot fill memory before the window in events does
//! (`--window-bytes`).

use std::collections::BTreeMap;

use crate::model::{Seq, SharedEvent};

#[derive(Debug)]
pub(super) struct Payloads {
    events: BTreeMap<Seq, SharedEvent>,
    bytes: usize,
    max_bytes: usize,
}

impl Payloads {
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            events: BTreeMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Whether another event may be sent: fewer than `max_bytes` are held,
    /// or none (so an event larger than the budget still goes, alone).
    pub(super) fn has_room(&self) -> bool {
        self.events.is_empty() || self.bytes < self.max_bytes
    }

    pub(super) fn insert(&mut self, event: SharedEvent) {
        self.bytes += event.payload.len();
        if let Some(old) = self.events.insert(event.seq, event) {
            self.bytes -= old.payload.len();
        }
    }

    pub(super) fn remove(&mut self, seq: &Seq) -> Option<SharedEvent> {
        let event = self.events.remove(seq)?;
        self.bytes -= event.payload.len();
        Some(event)
    }

    pub(super) fn get(&self, seq: &Seq) -> Option<&SharedEvent> {
        self.events.get(seq)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::StoredEvent;

    fn event(seq: Seq, bytes: usize) -> SharedEvent {
        Arc::new(StoredEvent {
            seq,
            id: String::new(),
            kind: "k".into(),
            key: None,
            payload: vec![b'1'; bytes],
            published_at_us: 0,
            traceparent: None,
        })
    }

    #[test]
    fn room_is_counted_in_payload_bytes() {
        let mut p = Payloads::new(100);
        assert!(p.has_room());
        p.insert(event(1, 300));
        assert!(!p.has_room(), "one event over the budget fills it");
        assert!(p.remove(&1).is_some());
        assert!(p.has_room());
        p.insert(event(2, 60));
        assert!(p.has_room());
        p.insert(event(3, 60));
        assert!(!p.has_room());
        assert!(p.remove(&9).is_none());
        p.remove(&2);
        assert!(p.has_room(), "60 of 100 bytes");
    }
}
