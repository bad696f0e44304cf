//! The admin snapshot and the metrics, made from the hub's state every
//! [`SNAPSHOT_EVERY`](super::SNAPSHOT_EVERY): rates over the last second,
//! the window's entries with their keys, the event holding the floor, the
//! processor's last report, the dead list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;

use super::State;
use crate::model::now_us;
use ackflow_proto::protocol::sender::{Entry, Link};

/// Most in-flight entries in a snapshot (the lowest seqs): the window can
/// hold thousands, a dashboard shows a few dozen.
const IN_FLIGHT_SHOWN: usize = 512;

impl State {
    pub(super) fn publish_snapshot(&mut self, now: Instant) {
        // Standbys whose streams ended while they waited are forgotten
        // here, not only when one is next promoted, so that they are not
        // counted as connected.
        self.members.forget_closed();
        self.totals.published = self.ingest.published();
        self.history.push_back((now, self.totals));
        while self.history.len() > 2
            && now.duration_since(self.history[0].0) > Duration::from_secs(1)
        {
            self.history.pop_front();
        }
        let rates = match self.history.front() {
            Some((then, old)) if now > *then => {
                let secs = now.duration_since(*then).as_secs_f64();
                let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
                pb::Rates {
                    publish: rate(self.totals.published, old.published),
                    deliver: rate(self.totals.delivered, old.delivered),
                    ack: rate(self.totals.acks, old.acks),
                    retransmit: rate(self.totals.retransmits, old.retransmits),
                    duplicate_drop: rate(self.totals.duplicate_drops, old.duplicate_drops),
                }
            }
            _ => pb::Rates::default(),
        };
        let in_flight = self
            .sender
            .entries()
            .filter_map(|(seq, entry)| match entry {
                Entry::InFlight(f) => Some(pb::InFlightEntry {
                    seq,
                    attempt: f.attempt,
                    age_us: now.saturating_duration_since(f.first_sent).as_micros() as u64,
                    next_retransmit_us: f.deadline.saturating_duration_since(now).as_micros()
                        as u64,
                    backoff_us: f.backoff.as_micros() as u64,
                    storing: false,
                    key: self.key_of(seq),
                    retry: f.retry,
                    at_most_once: f.once.is_some(),
                }),
                Entry::Marking => Some(pb::InFlightEntry {
                    seq,
                    key: self.key_of(seq),
                    at_most_once: true,
                    ..Default::default()
                }),
                Entry::Storing => Some(pb::InFlightEntry {
                    seq,
                    storing: true,
                    key: self.key_of(seq),
                    ..Default::default()
                }),
                Entry::Resolved => None,
            })
            .take(IN_FLIGHT_SHOWN)
            .collect();
        let floor = self.sender.acked_floor();
        if self.floor_since.0 != floor {
            self.floor_since = (floor, now); // moved by a park or a skip
        }
        let floor_holder = match self.sender.entries().next() {
            Some((seq, entry)) if seq == floor => {
                let (since, attempt) = match entry {
                    Entry::InFlight(f) => (f.first_sent.max(self.floor_since.1), f.attempt),
                    _ => (self.floor_since.1, 0),
                };
                Some(pb::FloorHolder {
                    seq,
                    key: self.key_of(seq),
                    held_us: now.saturating_duration_since(since).as_micros() as u64,
                    attempt,
                })
            }
            _ => None,
        };
        let connection = match (self.members.active.is_some(), self.sender.link()) {
            (false, _) | (_, Link::Absent) => pb::ProcessorConnection::Disconnected,
            (true, Link::Paused) => pb::ProcessorConnection::Paused,
            (true, Link::Running) => pb::ProcessorConnection::Running,
        };
        let snapshot = pb::Snapshot {
            taken_at_us: now_us(),
            head: *self.ingest.head().borrow(),
            next_to_send: self.sender.next_to_send(),
            acked_floor: self.sender.acked_floor(),
            next_expected: self.status.next_expected,
            window: self.sender.window() as u32,
            window_used: self.sender.window_used() as u32,
            in_flight,
            rates: Some(rates),
            totals: Some(self.totals),
            processor: Some(pb::ProcessorState {
                connection: connection as i32,
                processor_id: self
                    .members
                    .active
                    .as_ref()
                    .map(|s| s.processor_id.clone())
                    .unwrap_or_default(),
                session: self
                    .members
                    .active
                    .as_ref()
                    .map(|s| s.id)
                    .unwrap_or_default(),
                buffered: self.status.buffered,
                running: self.status.running,
                concurrency: self.status.concurrency,
                lanes_active: self.status.lanes_active,
                webhooks: self.status.webhooks.clone(),
                // Ack batches carry it too, more often than status reports.
                processed_below: self
                    .status
                    .processed_below
                    .max(self.sender.progress().processed_below),
            }),
            faults: Some(self.faults),
            srtt_us: self
                .sender
                .rto()
                .srtt()
                .map(|d| d.as_micros() as u64)
                .unwrap_or_default(),
            rto_us: self.sender.rto().rto().as_micros() as u64,
            dead: self
                .dead
                .iter()
                .map(|d| pb::DeadEntry {
                    seq: d.seq,
                    kind: d.kind.clone(),
                    reason: d.reason.clone(),
                    attempts: d.attempts,
                })
                .collect(),
            ordering: self.ordering as i32,
            floor_holder,
            suspects: self.sender.suspects() as u32,
            standbys: self.members.standby_ids(),
        };
        if snapshot.suspects != self.last_snapshot_suspects {
            tracing::info!(
                suspects = snapshot.suspects,
                floor = snapshot.acked_floor,
                "crash suspects {}",
                if snapshot.suspects > 0 {
                    "isolating a possible poison event (bisection)"
                } else {
                    "cleared: the window is open again"
                }
            );
            self.last_snapshot_suspects = snapshot.suspects;
        }
        self.sync_metrics(&snapshot);
        self.snapshot_tx.send_replace(Arc::new(snapshot));
    }

    /// Copies the hub's counters and gauges into the Prometheus metrics.
    fn sync_metrics(&mut self, snapshot: &pb::Snapshot) {
        let m = &self.metrics;
        let (t, s) = (&self.totals, &self.synced);
        m.delivered.inc_by(t.delivered - s.delivered);
        m.acks.inc_by(t.acks - s.acks);
        m.retransmits.inc_by(t.retransmits - s.retransmits);
        m.duplicate_acks.inc_by(t.duplicate_acks - s.duplicate_acks);
        m.duplicate_drops
            .inc_by(t.duplicate_drops - s.duplicate_drops);
        m.dead.inc_by(t.dead - s.dead);
        m.requeued.inc_by(t.requeued - s.requeued);
        m.retries.inc_by(t.retries - s.retries);
        m.results
            .with_label_values(&["ok"])
            .inc_by(t.results_ok - s.results_ok);
        m.results
            .with_label_values(&["failed"])
            .inc_by(t.results_failed - s.results_failed);
        m.results
            .with_label_values(&["abandoned"])
            .inc_by(t.abandoned - s.abandoned);
        self.synced = self.totals;
        let in_flight = snapshot.in_flight.iter().filter(|e| !e.storing).count();
        m.in_flight.set(in_flight as i64);
        m.window.set(i64::from(snapshot.window));
        m.head.set(snapshot.head as i64);
        m.acked_floor.set(snapshot.acked_floor as i64);
        m.backlog
            .set((snapshot.head + 1).saturating_sub(snapshot.acked_floor) as i64);
        m.rtt_seconds.set(snapshot.srtt_us as f64 / 1e6);
        m.rto_seconds.set(snapshot.rto_us as f64 / 1e6);
        let connection = snapshot
            .processor
            .as_ref()
            .map(|p| p.connection)
            .unwrap_or_default();
        let connected = connection != pb::ProcessorConnection::Disconnected as i32;
        m.session_open.set(i64::from(connected));
        m.processors_connected.set(self.members.connected() as i64);
        m.session_paused.set(i64::from(
            connection == pb::ProcessorConnection::Paused as i32,
        ));
        self.sync_processor_metrics(in_flight as i64);
    }

    /// Each connected processor's in-flight gauge and ack counter; the
    /// labels of processors gone since the last snapshot are removed, so
    /// that processors restarted under new ids do not pile up.
    fn sync_processor_metrics(&mut self, in_flight: i64) {
        let m = self.metrics.clone();
        let mut present = std::collections::BTreeSet::new();
        if let Some(session) = &mut self.members.active {
            let id = session.processor_id.as_str();
            m.in_flight_per_processor
                .with_label_values(&[id])
                .set(in_flight);
            m.acks_per_processor
                .with_label_values(&[id])
                .inc_by(session.acks - session.acks_synced);
            session.acks_synced = session.acks;
            present.insert(id.to_string());
        }
        for id in self.members.standby_ids() {
            if present.insert(id.clone()) {
                m.in_flight_per_processor.with_label_values(&[&id]).set(0);
                m.acks_per_processor.with_label_values(&[&id]);
            }
        }
        for gone in self.labeled.difference(&present) {
            let _ = m.in_flight_per_processor.remove_label_values(&[gone]);
            let _ = m.acks_per_processor.remove_label_values(&[gone]);
        }
        self.labeled = present;
    }
}
