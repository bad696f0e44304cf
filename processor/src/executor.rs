//! The executor: runs what the receiver starts. Each run (the queued events
//! of one lane, see `ackflow_proto::protocol::lanes`) gets its own tokio task, which
//! processes its events one after the other and hands their acks back in
//! batches. Runs of different lanes proceed at the same time; the receiver
//! caps how many (`--concurrency`). An event whose algorithm asks to retry
//! later ends its run: the events after it are handed back unprocessed,
//! since they may not start before it; so does a run whose processor holds
//! its starts (`hold.rs`). An at-most-once event to be claimed
//! (`Event.claim`) starts only once core grants it (see `permits.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::algorithms::{AlgorithmError, Outcome, Registry};
use crate::hold::Held;
use crate::metrics::ProcessorMetrics;
use crate::permits::{CLAIM_PATIENCE, Permits};
use crate::processed_log::{self, ProcessedLog};

/// Acks that waited this long are handed back even if the run is not
/// finished, so that a slow event does not hold the acks of the events
/// before it (core would time them out).
const ACK_HOLD: Duration = Duration::from_millis(1);

/// What a run hands back: events core refused to grant (skipped, before
/// the acks), acks in seq order and, when the last one asks to retry later
/// or starts were held, the events of the run after it, not processed.
#[derive(Debug, Default)]
pub struct Done {
    pub skipped: Vec<u64>,
    pub acks: Vec<pb::Ack>,
    pub unprocessed: Vec<pb::Event>,
}

impl Done {
    fn acks(acks: Vec<pb::Ack>) -> Self {
        Self {
            acks,
            ..Self::default()
        }
    }
}

/// Starts runs; what they did comes back on the channel given to
/// [`new`](Self::new).
#[derive(Clone)]
pub struct Executor {
    registry: Registry,
    done_tx: mpsc::UnboundedSender<Done>,
    log: ProcessedLog,
    metrics: Arc<AlgorithmMetrics>,
    permits: Permits,
    held: Held,
}

impl Executor {
    pub fn new(
        registry: Registry,
        done_tx: mpsc::UnboundedSender<Done>,
        log: ProcessedLog,
        metrics: &ProcessorMetrics,
        permits: Permits,
        held: Held,
    ) -> Self {
        let metrics = Arc::new(AlgorithmMetrics::new(&registry.kinds(), metrics));
        Self {
            registry,
            done_tx,
            log,
            metrics,
            permits,
            held,
        }
    }

    /// Processes `run` in order on a task of its own.
    pub fn start(&self, run: Vec<pb::Event>) {
        let this = self.clone();
        tokio::spawn(async move { this.run(run).await });
    }

    async fn run(self, run: Vec<pb::Event>) {
        let mut done = Vec::with_capacity(run.len());
        let mut held_since = Instant::now();
        let stream = self.held.stream();
        let mut run = run.into_iter();
        while let Some(event) = run.next() {
            // Read before the hold is checked (see `processed_log.rs`).
            let mut started_at = processed_log::now_us();
            if self.held.stops(stream, Instant::now()) {
                // This processor may no longer be the one core delivers to
                // (see `hold.rs`): the rest of the run goes back unstarted.
                let mut unprocessed = vec![event];
                unprocessed.extend(run);
                self.release(Done {
                    acks: done,
                    unprocessed,
                    ..Done::default()
                });
                return;
            }
            if event.claim {
                // The claim's round trip: the acks so far go first.
                if !done.is_empty() && !self.release(Done::acks(std::mem::take(&mut done))) {
                    return;
                }
                match self.permits.claim(event.seq, CLAIM_PATIENCE).await {
                    Some(true) => {}
                    Some(false) => {
                        // Core resolved it without this processor.
                        let skipped = Done {
                            skipped: vec![event.seq],
                            ..Done::default()
                        };
                        if !self.release(skipped) {
                            return;
                        }
                        continue;
                    }
                    None => {
                        // No answer yet: the slot goes to whatever may run
                        // (the event core needs next may be waiting for
                        // one), and this run's events back to their lane.
                        let mut unprocessed = vec![event];
                        unprocessed.extend(run);
                        self.release(Done {
                            unprocessed,
                            ..Done::default()
                        });
                        return;
                    }
                }
                // Granted: this copy is the only one that may run.
                started_at = processed_log::now_us();
            }
            self.log
                .start(event.seq, event.attempt, event.at_most_once, started_at);
            // Whatever the algorithm logs carries the event and its
            // publisher's trace context (with ackflow_processor=debug); the
            // span is the trace's `process` (see ackflow_proto::telemetry).
            let span = tracing::debug_span!(
                "process",
                seq = event.seq,
                kind = %event.kind,
                attempt = event.attempt,
                traceparent = tracing::field::Empty,
                verdict = tracing::field::Empty,
            );
            if !event.traceparent.is_empty() {
                span.record("traceparent", tracing::field::display(&event.traceparent));
                ackflow_proto::telemetry::set_parent(&span, &event.traceparent);
            }
            let started = Instant::now();
            let outcome = CatchUnwind(Box::pin(
                self.registry.process(&event).instrument(span.clone()),
            ))
            .await;
            let elapsed = started.elapsed();
            let mut ack = pb::Ack {
                seq: event.seq,
                attempt: event.attempt,
                status: pb::ResultStatus::Failed as i32,
                processing_us: elapsed.as_micros() as u64,
                ..Default::default()
            };
            let verdict = match outcome {
                Ok(Ok(output)) => {
                    ack.status = pb::ResultStatus::Ok as i32;
                    ack.output = output;
                    Verdict::Ok
                }
                Ok(Err(AlgorithmError::Failed(reason))) => {
                    ack.output = reason;
                    Verdict::Failed
                }
                Ok(Err(AlgorithmError::RetryLater { reason, after })) => {
                    ack.retry = true;
                    ack.retry_after_ms = after.map_or(0, |a| a.as_millis() as u64);
                    ack.output = reason;
                    Verdict::Retry
                }
                Err(_) => {
                    ack.reject = true;
                    ack.output = format!("the {:?} algorithm panicked", event.kind);
                    tracing::warn!(
                        seq = event.seq,
                        kind = %event.kind,
                        traceparent = %event.traceparent,
                        "the algorithm panicked; the event is rejected and core parks it"
                    );
                    Verdict::Rejected
                }
            };
            span.record("verdict", verdict.as_str());
            tracing::debug!(
                parent: &span,
                verdict = verdict.as_str(),
                took_us = ack.processing_us,
                "processed"
            );
            self.metrics.observe(&event.kind, verdict, elapsed);
            if verdict == Verdict::Retry {
                self.log.retry(event.seq, event.attempt);
            } else {
                self.log.end(event.seq, event.attempt);
            }
            if done.is_empty() {
                held_since = Instant::now();
            }
            done.push(ack);
            if verdict == Verdict::Retry {
                // The rest of the run waits for this event's next copy.
                self.release(Done {
                    acks: done,
                    unprocessed: run.collect(),
                    ..Done::default()
                });
                return;
            }
            if held_since.elapsed() >= ACK_HOLD
                && !self.release(Done::acks(std::mem::take(&mut done)))
            {
                return;
            }
        }
        if !done.is_empty() {
            self.release(Done::acks(done));
        }
    }

    /// Hands acks back; false when the processor is stopping.
    fn release(&self, done: Done) -> bool {
        // The log is written before the acks leave.
        self.log.flush();
        self.done_tx.send(done).is_ok()
    }
}

/// Polls an algorithm's future and turns a panic into an error, so that one
/// panicking event is rejected instead of killing its run.
struct CatchUnwind<'a>(Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>);

impl Future for CatchUnwind<'_> {
    type Output = std::thread::Result<Outcome>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(outcome)) => Poll::Ready(Ok(outcome)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Handles on the per-algorithm metrics, looked up once at start. Labelled
/// by algorithm, not by the raw kind, so that arbitrary kinds cannot grow
/// the label set without bound.
struct AlgorithmMetrics {
    by_algorithm: HashMap<String, Handles>,
    unknown: Handles,
}

/// How one call ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Failed,
    Retry,
    Rejected,
}

impl Verdict {
    /// The word in logs and in the `status` label of the metrics.
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Failed => "failed",
            Verdict::Retry => "retry",
            Verdict::Rejected => "rejected",
        }
    }
}

struct Handles {
    ok: prometheus::IntCounter,
    failed: prometheus::IntCounter,
    retry: prometheus::IntCounter,
    rejected: prometheus::IntCounter,
    seconds: prometheus::Histogram,
}

impl Handles {
    fn new(metrics: &ProcessorMetrics, algorithm: &str) -> Self {
        let counter = |verdict: Verdict| {
            metrics
                .processed
                .with_label_values(&[algorithm, verdict.as_str()])
        };
        Self {
            ok: counter(Verdict::Ok),
            failed: counter(Verdict::Failed),
            retry: counter(Verdict::Retry),
            rejected: counter(Verdict::Rejected),
            seconds: metrics.processing_seconds.with_label_values(&[algorithm]),
        }
    }
}

impl AlgorithmMetrics {
    fn new(kinds: &[String], metrics: &ProcessorMetrics) -> Self {
        Self {
            by_algorithm: kinds
                .iter()
                .map(|k| (k.clone(), Handles::new(metrics, k)))
                .collect(),
            unknown: Handles::new(metrics, "unknown"),
        }
    }

    fn observe(&self, kind: &str, verdict: Verdict, took: Duration) {
        let h = self.by_algorithm.get(kind).unwrap_or(&self.unknown);
        match verdict {
            Verdict::Ok => h.ok.inc(),
            Verdict::Failed => h.failed.inc(),
            Verdict::Retry => h.retry.inc(),
            Verdict::Rejected => h.rejected.inc(),
        }
        h.seconds.observe(took.as_secs_f64());
    }
}
