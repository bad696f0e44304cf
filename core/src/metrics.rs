//! Prometheus metrics of core, served at `GET /metrics`.
//!
//! Names use the protocol's words (`delivered`, `acked`, `retransmits`,
//! `duplicate_drops`, `in_flight`, `acked_floor`) so that the dashboard, the
//! docs and a Grafana panel say the same thing. Counters that the hub keeps
//! anyway are copied here on every admin snapshot (every 200 ms), so the hot
//! path pays nothing for them; histograms are fixed buckets, so memory does
//! not grow between scrapes.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric core exports, registered in a registry of its own (so that
/// several cores in one process, as in tests and the demo, do not collide).
pub struct CoreMetrics {
    registry: Registry,
    pub publish_accepted: IntCounter,
    pub publish_rejected: IntCounterVec,
    pub events_stored: IntCounter,
    pub delivered: IntCounter,
    pub acks: IntCounter,
    pub retransmits: IntCounter,
    pub duplicate_acks: IntCounter,
    pub duplicate_drops: IntCounter,
    pub dead: IntCounter,
    pub requeued: IntCounter,
    pub retries: IntCounter,
    pub results: IntCounterVec,
    pub in_flight: IntGauge,
    pub window: IntGauge,
    pub backlog: IntGauge,
    pub head: IntGauge,
    pub acked_floor: IntGauge,
    pub rtt_seconds: Gauge,
    pub rto_seconds: Gauge,
    pub session_open: IntGauge,
    pub processors_connected: IntGauge,
    /// Per connected processor (label `processor`, its id; removed when it
    /// leaves): events in flight to it.
    pub in_flight_per_processor: IntGaugeVec,
    /// Per connected processor: acks accepted from it.
    pub acks_per_processor: IntCounterVec,
    pub session_paused: IntGauge,
    pub store_batch_events: HistogramVec,
    pub store_commit_seconds: HistogramVec,
    /// Failed store writes, by op and [`crate::store::StoreError::kind`].
    pub store_errors: IntCounterVec,
    /// 0 when the store's settings can lose acknowledged publishes (core
    /// started with `--allow-unsafe-durability`), else 1.
    pub store_durable: IntGauge,
    /// 1 while store writes succeed, 0 while they fail (see `/readyz`).
    pub store_writable: IntGauge,
    /// 1: this core leads (a standby serves `ackflow_leader 0` alone, see
    /// `server/standby.rs`).
    pub leader: IntGauge,
    /// The epoch this core leads under (`leadership.rs`); 0 without a
    /// lease (SQLite).
    pub leader_epoch: IntGauge,
    /// Resolved events deleted by retention (see `crate::retention`).
    pub pruned_events: IntCounter,
    /// What the store occupies on disk, updated by the retention task.
    pub store_bytes: IntGauge,
    /// Free space of the SQLite data directory's filesystem. Registered only
    /// by [`CoreMetrics::register_disk_free`] (SQLite), so a PostgreSQL core
    /// does not export a misleading 0.
    pub disk_free_bytes: IntGauge,
    pub publish_to_result_seconds: Histogram,
}

/// Buckets for latencies from 100 µs to 60 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Buckets for batch sizes.
const EVENTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];

impl CoreMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let float_gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram_vec = |name: &str, help: &str, buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["op"],
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let publish_to_result_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ackflow_publish_to_result_seconds",
                "Time from an event's commit to the commit of its result.",
            )
            .buckets(SECONDS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(publish_to_result_seconds.clone()))
            .expect("unique metric");
        // The usual `_build_info`: a constant 1 whose labels say what runs.
        let build_info = IntGaugeVec::new(
            Opts::new(
                "ackflow_build_info",
                "Always 1; the version label says which ackflow core is running.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(build_info))
            .expect("unique metric");
        Self {
            publish_accepted: counter(
                "ackflow_publish_accepted_total",
                "Publishes answered with success (replays of an idempotency key included).",
            ),
            publish_rejected: counter_vec(
                "ackflow_publish_rejected_total",
                "Publishes refused, by reason: malformed, invalid, too_large, unsupported_media_type, queue_full, unavailable, conflict (an idempotency key reused for a different request).",
                "reason",
            ),
            events_stored: counter(
                "ackflow_events_stored_total",
                "Events committed to the store.",
            ),
            delivered: counter(
                "ackflow_events_delivered_total",
                "Events sent to the processor for the first time.",
            ),
            acks: counter(
                "ackflow_acks_total",
                "Acks accepted from the processor, one per event (repeats: ackflow_duplicate_acks_total); the result is stored next.",
            ),
            retransmits: counter(
                "ackflow_retransmits_total",
                "Events sent again after their ack deadline passed.",
            ),
            duplicate_acks: counter(
                "ackflow_duplicate_acks_total",
                "Acks received for events already acknowledged.",
            ),
            duplicate_drops: counter(
                "ackflow_duplicate_drops_total",
                "Events the processor dropped as duplicates (as it reports them).",
            ),
            dead: counter("ackflow_dead_total", "Events parked as dead."),
            requeued: counter("ackflow_requeued_total", "Dead events published again."),
            retries: counter(
                "ackflow_retry_later_total",
                "Retry-later requests from the processor (each counts toward --max-deliver).",
            ),
            results: counter_vec(
                "ackflow_results_total",
                "Results stored, by status (ok, failed).",
                "status",
            ),
            in_flight: gauge("ackflow_in_flight", "Events sent and not yet acknowledged."),
            window: gauge("ackflow_window", "The in-flight window in force."),
            backlog: gauge(
                "ackflow_backlog",
                "Committed events not yet resolved (head − acked floor + 1).",
            ),
            head: gauge("ackflow_head_seq", "Highest committed seq."),
            acked_floor: gauge(
                "ackflow_acked_floor",
                "Every seq below it has a result or is dead.",
            ),
            rtt_seconds: float_gauge(
                "ackflow_rtt_seconds",
                "Smoothed round trip between core and the processor (heartbeat probe to echo).",
            ),
            rto_seconds: float_gauge("ackflow_rto_seconds", "Current retransmission timeout."),
            session_open: gauge(
                "ackflow_session_open",
                "1 while a processor's session (its delivery stream) is open. (The processor's own view is ackflow_processor_connected.)",
            ),
            processors_connected: gauge(
                "ackflow_processors_connected",
                "Processor streams connected: the active one and the hot standbys waiting behind it.",
            ),
            in_flight_per_processor: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "ackflow_in_flight_per_processor",
                        "Events sent to this processor and not yet acknowledged (0 for a hot standby); the label goes when the processor does.",
                    ),
                    &["processor"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(g.clone()))
                    .expect("unique metric");
                g
            },
            acks_per_processor: counter_vec(
                "ackflow_acks_per_processor_total",
                "Acks accepted from this processor while it is connected (its share of ackflow_acks_total); the label goes when the processor does.",
                "processor",
            ),
            session_paused: gauge(
                "ackflow_session_paused",
                "1 while the open session is paused.",
            ),
            store_batch_events: histogram_vec(
                "ackflow_store_batch_events",
                "Rows per store transaction, by op (append, resolve).",
                EVENTS,
            ),
            store_commit_seconds: histogram_vec(
                "ackflow_store_commit_seconds",
                "Duration of store transactions, by op (append, resolve).",
                SECONDS,
            ),
            store_errors: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "ackflow_store_errors_total",
                        "Failed store writes, by op (append, resolve, probe, prune) and kind \
                         (disk_full, io, busy, unavailable, corrupt, constraint, other).",
                    ),
                    &["op", "kind"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(c.clone()))
                    .expect("unique metric");
                c
            },
            store_durable: {
                let g = gauge(
                    "ackflow_store_durable",
                    "0 when the store's settings can lose acknowledged publishes \
                     (started with --allow-unsafe-durability), else 1.",
                );
                g.set(1);
                g
            },
            store_writable: gauge(
                "ackflow_store_writable",
                "1 while the last store write succeeded, 0 while writes fail.",
            ),
            leader: {
                let g = gauge(
                    "ackflow_leader",
                    "1 on the core that leads, 0 on a standby.",
                );
                g.set(1);
                g
            },
            leader_epoch: gauge(
                "ackflow_leader_epoch",
                "The epoch this core leads under (0: no lease, as on SQLite).",
            ),
            pruned_events: counter(
                "ackflow_pruned_events_total",
                "Resolved events (with their results) deleted by retention (--retention).",
            ),
            store_bytes: gauge(
                "ackflow_store_bytes",
                "Bytes the store occupies: the PostgreSQL database, or the SQLite file without its WAL.",
            ),
            disk_free_bytes: IntGauge::new(
                "ackflow_disk_free_bytes",
                "Free bytes (for unprivileged writers) on the filesystem of the SQLite database.",
            )
            .expect("valid metric"),
            publish_to_result_seconds,
            registry,
        }
    }

    /// Exports `ackflow_disk_free_bytes`: called once when the store is a
    /// local SQLite file, whose filesystem core can measure.
    pub fn register_disk_free(&self) {
        // A second registration fails harmlessly: the gauge is already there.
        let _ = self
            .registry
            .register(Box::new(self.disk_free_bytes.clone()));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Counts a refused publish.
    pub fn reject(&self, reason: &str) {
        self.publish_rejected.with_label_values(&[reason]).inc();
    }
}

impl Default for CoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}
