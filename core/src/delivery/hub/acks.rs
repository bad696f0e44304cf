//! Acks into results: each ack batch from the processor becomes result
//! rows, dead entries (rejections, retry requests past `--max-deliver`),
//! abandoned results (at-most-once events asked to be retried) and retry
//! schedules in the `Sender`; the rows go to the results writer, and
//! once they are durable the floor moves and the feed and metrics hear of
//! them. The processor's status reports land here too.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;

use super::State;
use crate::delivery::results::Resolution;
use crate::model::{DeadRow, DeadView, ResultRow, ResultStatus, Seq, now_us};
use crate::validate::{MAX_OUTPUT_BYTES, MAX_REASON_BYTES, storable_text};
use ackflow_proto::protocol::group::StreamId;
use ackflow_proto::protocol::sender::{AckOutcome, Action, RetryOutcome};

impl State {
    /// Acks from `stream`'s processor: only its `Sender` takes them, so an
    /// ack for an event that moved to another stream is a duplicate.
    pub(super) fn on_acks(&mut self, stream: StreamId, batch: pb::AckBatch) {
        let now = Instant::now();
        if self.group.sender(stream).is_none() {
            return;
        }
        let stored_at_us = now_us();
        let mut resolution = Resolution::default();
        for ack in batch.acks {
            if ack.reject {
                if let Some(Action::Park {
                    seq,
                    attempts,
                    reason,
                }) = self
                    .sender_of(stream)
                    .on_reject(ack.seq, &storable_text(ack.output, MAX_REASON_BYTES))
                {
                    resolution.dead.push(self.park(seq, attempts, reason));
                }
                continue;
            }
            if ack.retry {
                let reason = storable_text(ack.output, MAX_REASON_BYTES);
                let after = Duration::from_millis(ack.retry_after_ms);
                match self
                    .sender_of(stream)
                    .on_retry(ack.seq, after, &reason, now)
                {
                    RetryOutcome::Scheduled { wait } => {
                        self.totals.retries += 1;
                        tracing::debug!(seq = ack.seq, ?wait, %reason, "retry later");
                        let key = self.key_of(ack.seq);
                        self.feed(pb::feed_event::Kind::Retry(pb::RetryFeed {
                            seq: ack.seq,
                            attempt: ack.attempt,
                            after_us: wait.as_micros() as u64,
                            reason: short(&reason, 80),
                            key,
                        }));
                    }
                    RetryOutcome::End(Action::Park {
                        seq,
                        attempts,
                        reason,
                    }) => {
                        self.totals.retries += 1;
                        resolution.dead.push(self.park(seq, attempts, reason));
                    }
                    RetryOutcome::End(Action::Abandon {
                        seq,
                        attempts,
                        reason,
                    }) => {
                        self.totals.retries += 1;
                        resolution.results.push(self.abandon(seq, attempts, reason));
                    }
                    RetryOutcome::End(_) | RetryOutcome::Ignored => {}
                }
                continue;
            }
            match self.sender_of(stream).on_ack(ack.seq) {
                AckOutcome::Accepted { attempts } => {
                    self.totals.acks += 1;
                    let status = if ack.status == pb::ResultStatus::Ok as i32 {
                        ResultStatus::Ok
                    } else {
                        ResultStatus::Failed
                    };
                    self.traces.resolve(ack.seq, status.as_str(), attempts);
                    self.storing.insert(
                        ack.seq,
                        Storing {
                            status,
                            output: short(&ack.output, 80),
                            attempt: attempts,
                        },
                    );
                    resolution.results.push(ResultRow {
                        seq: ack.seq,
                        status,
                        output: storable_text(ack.output, MAX_OUTPUT_BYTES),
                        attempt: attempts,
                        processing_us: ack.processing_us,
                        stored_at_us,
                    });
                }
                AckOutcome::Duplicate => self.totals.duplicate_acks += 1,
                AckOutcome::Unknown => {
                    tracing::debug!(seq = ack.seq, "ack for a seq never sent ignored");
                }
            }
        }
        if !resolution.results.is_empty() || !resolution.dead.is_empty() {
            // The writer outlives the hub, so this only fails after a crash
            // of the writer, in which case the events are delivered again.
            let _ = self.rows_tx.send(resolution);
        }
    }

    /// `stream`'s sender (present: checked on entry to `on_acks`).
    fn sender_of(&mut self, stream: StreamId) -> &mut ackflow_proto::protocol::sender::Sender {
        self.group.sender_mut(stream).expect("checked in on_acks")
    }

    pub(super) fn on_status(&mut self, stream: StreamId, status: pb::ProcessorStatus) {
        let Some(session) = self.members.active.get_mut(&stream) else {
            return;
        };
        let more = status
            .duplicate_drops
            .saturating_sub(session.status.duplicate_drops);
        session.status = status;
        if more > 0 {
            self.totals.duplicate_drops += more;
            self.feed(pb::feed_event::Kind::Duplicate(pb::DuplicateFeed {
                count: more,
                total: self.totals.duplicate_drops,
            }));
        }
    }

    pub(super) fn park(&mut self, seq: Seq, attempts: u32, reason: String) -> DeadRow {
        tracing::warn!(seq, attempts, %reason, "event parked as dead");
        self.totals.dead += 1;
        self.traces.resolve(seq, "dead", attempts);
        self.feed(pb::feed_event::Kind::Dead(pb::DeadFeed {
            seq,
            reason: reason.clone(),
            attempts,
        }));
        let parked_at_us = now_us();
        let kind = self.payloads.get(&seq).map(|e| e.kind.clone());
        self.parking.insert(
            seq,
            DeadView {
                seq,
                kind: kind.unwrap_or_default(),
                reason: reason.clone(),
                attempts,
                parked_at_us,
                requeued_as: None,
            },
        );
        DeadRow {
            seq,
            reason,
            attempts,
            parked_at_us,
        }
    }

    /// Gives up an at-most-once event: its result, with status abandoned
    /// and `reason` as the output, to store.
    pub(super) fn abandon(&mut self, seq: Seq, attempts: u32, reason: String) -> ResultRow {
        tracing::info!(seq, attempts, %reason, "at-most-once event abandoned");
        self.traces
            .resolve(seq, ResultStatus::Abandoned.as_str(), attempts);
        self.storing.insert(
            seq,
            Storing {
                status: ResultStatus::Abandoned,
                output: short(&reason, 80),
                attempt: attempts,
            },
        );
        ResultRow {
            seq,
            status: ResultStatus::Abandoned,
            output: reason,
            attempt: attempts,
            processing_us: 0,
            stored_at_us: now_us(),
        }
    }

    pub(super) fn on_stored(&mut self, seqs: Vec<Seq>) {
        let feed = self.feed_tx.receiver_count() > 0;
        let now = now_us();
        for seq in &seqs {
            self.traces.end(seq);
            let event = self.payloads.remove(seq);
            let Some(storing) = self.storing.remove(seq) else {
                // A dead row, now durable: it joins the snapshot's list in
                // the step that lets the floor pass it (a snapshot past a
                // parked event always lists it; reading the list from the
                // store could race the write or fail).
                // (A re-read after a requeue may have listed it already.)
                if let Some(view) = self.parking.remove(seq)
                    && !self.dead.iter().any(|d| d.seq == *seq)
                {
                    self.dead.push(view);
                    self.dead.sort_by_key(|d| std::cmp::Reverse(d.seq));
                    self.dead.truncate(super::DEAD_SHOWN as usize);
                }
                continue;
            };
            match storing.status {
                ResultStatus::Ok => self.totals.results_ok += 1,
                ResultStatus::Failed => self.totals.results_failed += 1,
                ResultStatus::Abandoned => self.totals.abandoned += 1,
            }
            if let Some(event) = &event {
                let latency = (now - event.published_at_us).max(0) as f64 / 1e6;
                self.metrics.publish_to_result_seconds.observe(latency);
            }
            if let (true, Some(event)) = (feed, event) {
                let status = match storing.status {
                    ResultStatus::Ok => pb::ResultStatus::Ok,
                    ResultStatus::Failed => pb::ResultStatus::Failed,
                    ResultStatus::Abandoned => pb::ResultStatus::Abandoned,
                };
                self.feed(pb::feed_event::Kind::Result(pb::ResultFeed {
                    seq: *seq,
                    kind: event.kind.clone(),
                    status: status as i32,
                    latency_us: (now - event.published_at_us).max(0) as u64,
                    output: storing.output,
                    attempt: storing.attempt,
                    key: event.key.clone().unwrap_or_default(),
                }));
            }
        }
        if self.group.on_stored(seqs) {
            let floor = self.group.acked_floor();
            self.floor.store(floor, Ordering::Release);
            self.floor_since = (floor, Instant::now());
        }
    }
}

/// An ack accepted, waiting for its result row to be stored.
pub(super) struct Storing {
    status: ResultStatus,
    /// The output cut for the feed.
    output: String,
    attempt: u32,
}

/// `text` cut to at most `max` characters.
fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
