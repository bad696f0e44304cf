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
        let mut in_flight: Vec<pb::InFlightEntry> = Vec::new();
        for (_, stream) in self.group.streams() {
            in_flight.extend(
                stream
                    .sender
                    .entries()
                    .filter_map(|(seq, entry)| self.in_flight_entry(seq, entry, now))
                    .take(IN_FLIGHT_SHOWN),
            );
        }
        in_flight.sort_unstable_by_key(|e| e.seq);
        in_flight.truncate(IN_FLIGHT_SHOWN);
        let floor = self.group.acked_floor();
        if self.floor_since.0 != floor {
            self.floor_since = (floor, now); // moved by a park or a skip
        }
        let at_floor = self.group.streams().find_map(|(_, s)| {
            s.sender
                .entries()
                .next()
                .filter(|(seq, e)| *seq == floor && !e.passed())
        });
        let floor_holder = match at_floor {
            Some((seq, entry)) => {
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
            None => None,
        };
        let owned = self.group.owned();
        let mut processors = Vec::new();
        for session in self.members.active.values_mut() {
            let Some(sender) = self.group.sender(session.stream) else {
                continue;
            };
            let connection = match sender.link() {
                Link::Absent => pb::ProcessorConnection::Disconnected,
                Link::Paused => pb::ProcessorConnection::Paused,
                Link::Running => pb::ProcessorConnection::Running,
            };
            let since = now.saturating_duration_since(session.ack_sample.0);
            if since >= Duration::from_secs(1) {
                session.ack_rate =
                    (session.acks - session.ack_sample.1) as f64 / since.as_secs_f64();
                session.ack_sample = (now, session.acks);
            }
            let status = &session.status;
            processors.push(pb::ProcessorState {
                connection: connection as i32,
                processor_id: session.processor_id.clone(),
                session: session.id,
                buffered: status.buffered,
                running: status.running,
                concurrency: status.concurrency,
                lanes_active: status.lanes_active,
                webhooks: status.webhooks.clone(),
                // Ack batches carry it too, more often than status reports.
                processed_below: status
                    .processed_below
                    .max(sender.progress().processed_below),
                partitions: owned.get(&session.stream).copied().unwrap_or_default(),
                in_flight: sender.window_used() as u32,
                ack_rate: session.ack_rate,
            });
        }
        let first = self
            .members
            .active
            .values()
            .next()
            .and_then(|s| self.group.sender(s.stream))
            .or_else(|| self.group.streams().next().map(|(_, s)| &s.sender));
        let (srtt_us, rto_us) = first
            .map(|s| {
                let srtt = s.rto().srtt().map(|d| d.as_micros() as u64);
                (srtt.unwrap_or_default(), s.rto().rto().as_micros() as u64)
            })
            .unwrap_or_default();
        let window: u64 = match self.members.active.is_empty() {
            true => first.map(|s| s.window()).unwrap_or_default(),
            false => self
                .members
                .active
                .values()
                .filter_map(|s| self.group.sender(s.stream))
                .map(|s| s.window())
                .sum(),
        };
        let snapshot = pb::Snapshot {
            taken_at_us: now_us(),
            head: *self.ingest.head().borrow(),
            next_to_send: self.group.next_to_offer(),
            acked_floor: floor,
            next_expected: self
                .members
                .active
                .values()
                .next()
                .map(|s| s.status.next_expected)
                .unwrap_or_default(),
            window: window.min(u64::from(u32::MAX)) as u32,
            window_used: self.group.window_used() as u32,
            in_flight,
            rates: Some(rates),
            totals: Some(self.totals),
            processor: Some(processors.first().cloned().unwrap_or(pb::ProcessorState {
                connection: pb::ProcessorConnection::Disconnected as i32,
                ..Default::default()
            })),
            faults: Some(self.faults),
            srtt_us,
            rto_us,
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
            suspects: self.group.suspects() as u32,
            standbys: self.members.standby_ids(),
            processors,
            waiting: self.group.waiting() as u32,
            partitions: self.group.partitions(),
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

    /// The snapshot's view of one window entry (none once passed).
    fn in_flight_entry(&self, seq: u64, entry: &Entry, now: Instant) -> Option<pb::InFlightEntry> {
        match entry {
            Entry::InFlight(f) => Some(pb::InFlightEntry {
                seq,
                attempt: f.attempt,
                age_us: now.saturating_duration_since(f.first_sent).as_micros() as u64,
                next_retransmit_us: f.deadline.saturating_duration_since(now).as_micros() as u64,
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
            Entry::Resolved | Entry::Elsewhere => None,
        }
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
        self.sync_processor_metrics(snapshot);
    }

    /// Each connected processor's in-flight gauge and ack counter; the
    /// labels of processors gone since the last snapshot are removed, so
    /// that processors restarted under new ids do not pile up.
    fn sync_processor_metrics(&mut self, snapshot: &pb::Snapshot) {
        let m = self.metrics.clone();
        let mut present = std::collections::BTreeSet::new();
        for session in self.members.active.values_mut() {
            let id = session.processor_id.as_str();
            let in_flight = snapshot
                .processors
                .iter()
                .find(|p| p.session == session.id)
                .map(|p| p.in_flight)
                .unwrap_or_default();
            m.in_flight_per_processor
                .with_label_values(&[id])
                .set(i64::from(in_flight));
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
