//! The `deliver` and `result` spans of the traced events in the window
//! (published with a `traceparent`; see `crate::trace`). `deliver` runs
//! from the event's entry into the window until its result or dead row is
//! stored, its `attempts` counting the copies sent; `result`
//! runs inside it from the accepted ack (or the park, or the abandon)
//! until the row is stored. Held only while something records them, and
//! at most one of each per event in the window.

use std::collections::HashMap;

use tracing::Span;

use crate::model::{Seq, StoredEvent};
use crate::trace;

#[derive(Default)]
pub(super) struct Traces {
    spans: HashMap<Seq, Held>,
}

struct Held {
    deliver: Span,
    result: Option<Span>,
}

impl Traces {
    /// `event` entered the window.
    pub(super) fn begin(&mut self, event: &StoredEvent) {
        if let Some(deliver) = trace::deliver_span(event) {
            self.spans.insert(
                event.seq,
                Held {
                    deliver,
                    result: None,
                },
            );
        }
    }

    /// A copy of `seq` was sent again.
    pub(super) fn retransmit(&self, seq: Seq, attempt: u32) {
        if let Some(held) = self.spans.get(&seq) {
            held.deliver.record("attempts", attempt);
            tracing::debug!(parent: &held.deliver, attempt, "retransmit");
        }
    }

    /// `seq` is resolved (`status`: ok, failed, dead, abandoned); its row
    /// is being stored.
    pub(super) fn resolve(&mut self, seq: Seq, status: &str, attempt: u32) {
        if let Some(held) = self.spans.get_mut(&seq) {
            held.result = Some(trace::result_span(&held.deliver, seq, status, attempt));
        }
    }

    /// `seq`'s row is stored: its spans end.
    pub(super) fn end(&mut self, seq: &Seq) {
        if !self.spans.is_empty() {
            self.spans.remove(seq);
        }
    }
}
