//! The processor's I/O: connect (with backoff), say hello, feed the
//! [`Receiver`] from the stream, run algorithms on a worker thread in the
//! order the receiver hands events out, and send acks back in batches.
//!
//! The receiver and the result cache live as long as the process (one
//! "processor life"), across reconnections: a duplicate that arrives after a
//! reconnection is still recognised and re-acked.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;
use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::algorithms::Registry;
use crate::config::Config;
use crate::metrics::ProcessorMetrics;
use crate::receiver::{Action, Receiver};

/// How often the processor reports its state to core.
const STATUS_EVERY: Duration = Duration::from_millis(200);
/// Most acks in one message.
const MAX_ACKS_PER_MESSAGE: usize = 1024;
/// Reconnect backoff bounds.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Runs the processor until `cancel`.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    run_with(config, Registry::builtin(), cancel).await
}

/// Runs the processor with a custom set of algorithms.
pub async fn run_with(
    config: Config,
    registry: Registry,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let endpoint = Endpoint::from_shared(config.core.clone())
        .with_context(|| format!("--core {:?} is not a valid URL", config.core))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Without keepalive a half-open connection could go unnoticed for
        // hours; with it, a dead core is detected within seconds.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let endpoint = config
        .tls(endpoint)
        .context("configuring TLS towards core")?;
    let processor_id = config
        .processor_id
        .clone()
        .unwrap_or_else(|| format!("p-{:016x}", fastrand::u64(..)));
    tracing::info!(%processor_id, core = %config.core, algorithms = ?registry.kinds(), "processor starting");

    let processed_log = match &config.processed_log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening --processed-log {}", path.display()))?,
        ),
        None => None,
    };
    let metrics = Arc::new(ProcessorMetrics::new());
    if let Some(addr) = config.metrics_addr {
        crate::metrics::serve(addr, metrics.clone(), cancel.clone())
            .await
            .with_context(|| format!("binding --metrics-addr {addr}"))?;
    }
    let (work_tx, work_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let worker_registry = registry.clone();
    let worker_id = processor_id.clone();
    let worker_metrics = metrics.clone();
    std::thread::Builder::new()
        .name("ackflow-worker".into())
        .spawn(move || {
            worker(
                worker_registry,
                work_rx,
                done_tx,
                processed_log,
                worker_id,
                &worker_metrics,
            )
        })
        .context("starting the worker thread")?;

    let mut life = Life {
        config: config.clone(),
        processor_id,
        algorithms: registry.kinds(),
        receiver: Receiver::new(config.window as usize, !config.no_dedup),
        faults: config.faults(),
        work_tx,
        done_rx,
        rng: fastrand::Rng::new(),
        metrics,
        synced: Default::default(),
    };
    let mut backoff = RECONNECT_MIN;
    while !cancel.is_cancelled() {
        let started = Instant::now();
        let reason = match endpoint.connect().await {
            Ok(channel) => life.session(channel, &cancel).await,
            Err(e) => format!("cannot connect: {e}"),
        };
        if cancel.is_cancelled() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = RECONNECT_MIN;
        }
        let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        tracing::warn!(%reason, retry_in_ms = wait.as_millis() as u64, "stream to core ended");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
    tracing::info!("processor stopped");
    Ok(())
}

/// State that lives as long as the process.
struct Life {
    config: Config,
    processor_id: String,
    algorithms: Vec<String>,
    receiver: Receiver,
    faults: pb::Faults,
    /// Events to process, in order, one batch per message from core.
    work_tx: mpsc::UnboundedSender<Vec<pb::Event>>,
    /// Acks from the worker, in processing order.
    done_rx: mpsc::UnboundedReceiver<Vec<pb::Ack>>,
    rng: fastrand::Rng,
    metrics: Arc<ProcessorMetrics>,
    /// Receiver counters as last copied into the metrics.
    synced: crate::receiver::Counters,
}

impl Life {
    /// One stream; returns why it ended.
    async fn session(&mut self, channel: Channel, cancel: &CancellationToken) -> String {
        let token = self.config.token.clone();
        let mut client = pb::delivery_client::DeliveryClient::with_interceptor(
            channel,
            move |mut request: tonic::Request<()>| {
                if let Some(token) = &token {
                    let value = format!("Bearer {token}")
                        .parse()
                        .map_err(|_| tonic::Status::invalid_argument("token is not ASCII"))?;
                    request.metadata_mut().insert("authorization", value);
                }
                Ok(request)
            },
        )
        .max_decoding_message_size(256 << 20);
        let (out_tx, out_rx) = mpsc::channel(256);
        let hello = pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Hello(pb::Hello {
                processor_id: self.processor_id.clone(),
                window: self.config.window,
                algorithms: self.algorithms.clone(),
            })),
        };
        if out_tx.send(hello).await.is_err() {
            return "outbound closed".into();
        }
        let mut inbound = match client.subscribe(ReceiverStream::new(out_rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return format!("subscribe refused: {}", status.message()),
        };
        tracing::info!("connected to core");
        self.metrics.connected.set(1);
        let reason = self.stream(&mut inbound, out_tx, cancel).await;
        self.metrics.connected.set(0);
        reason
    }

    /// Runs one connected stream until it ends; returns why.
    async fn stream(
        &mut self,
        inbound: &mut tonic::Streaming<pb::CoreMessage>,
        out_tx: mpsc::Sender<pb::ProcessorMessage>,
        cancel: &CancellationToken,
    ) -> String {
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        let cut_after = match self.faults.cut_every_s {
            0 => None,
            s => Some(tokio::time::Instant::now() + Duration::from_secs(u64::from(s))),
        };
        let mut acks: Vec<pb::Ack> = Vec::new();
        loop {
            let reason = tokio::select! {
                _ = cancel.cancelled() => Some("shutting down".to_string()),
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => { self.on_message(msg, &mut acks).await; None }
                    Ok(None) => Some("core closed the stream".to_string()),
                    Err(status) => Some(format!("stream error: {}", status.message())),
                },
                Some(done) = self.done_rx.recv() => {
                    self.on_done(done, &mut acks);
                    while acks.len() < MAX_ACKS_PER_MESSAGE {
                        match self.done_rx.try_recv() {
                            Ok(done) => self.on_done(done, &mut acks),
                            Err(_) => break,
                        }
                    }
                    None
                }
                _ = status_tick.tick() => {
                    let status = self.status();
                    if out_tx.send(status).await.is_err() { Some("outbound closed".to_string()) } else { None }
                }
                _ = sleep_until(cut_after) => Some("fault injection: stream cut".to_string()),
            };
            if let Some(reason) = reason {
                return reason;
            }
            if !acks.is_empty() && !self.flush(&out_tx, &mut acks).await {
                return "outbound closed".into();
            }
        }
    }

    async fn on_message(&mut self, msg: pb::CoreMessage, acks: &mut Vec<pb::Ack>) {
        let actions = match msg.body {
            Some(pb::core_message::Body::Welcome(welcome)) => {
                tracing::info!(
                    session = welcome.session,
                    acked_floor = welcome.acked_floor,
                    window = welcome.window,
                    paused = welcome.paused,
                    "welcome"
                );
                self.receiver
                    .on_welcome(welcome.acked_floor, welcome.window, welcome.paused)
            }
            Some(pb::core_message::Body::Events(batch)) => {
                if self.faults.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(self.faults.delay_ms)))
                        .await;
                }
                let mut actions = self.receiver.on_floor(batch.acked_floor);
                for event in batch.events {
                    if self.rng.f64() < self.faults.drop_events {
                        continue;
                    }
                    if self.rng.f64() < self.faults.duplicate {
                        actions.extend(self.receiver.on_event(event.clone()));
                    }
                    actions.extend(self.receiver.on_event(event));
                }
                actions
            }
            Some(pb::core_message::Body::Control(control)) => match control.command {
                Some(pb::control::Command::Pause(_)) => {
                    tracing::info!("paused by core");
                    self.receiver.set_paused(true)
                }
                Some(pb::control::Command::Resume(_)) => {
                    tracing::info!("resumed by core");
                    self.receiver.set_paused(false)
                }
                Some(pb::control::Command::Faults(faults)) => {
                    tracing::info!(?faults, "fault settings changed");
                    self.faults = faults;
                    Vec::new()
                }
                None => Vec::new(),
            },
            Some(pb::core_message::Body::Heartbeat(hb)) => self.receiver.on_floor(hb.acked_floor),
            None => Vec::new(),
        };
        let mut work = Vec::new();
        for action in actions {
            match action {
                Action::Process(event) => work.push(event),
                Action::Ack(ack) => acks.push(ack),
            }
        }
        if !work.is_empty() {
            // The worker outlives every stream; it only stops when the
            // process does.
            let _ = self.work_tx.send(work);
        }
    }

    fn on_done(&mut self, done: Vec<pb::Ack>, acks: &mut Vec<pb::Ack>) {
        for ack in done {
            if let Action::Ack(ack) = self.receiver.on_processed(ack) {
                acks.push(ack);
            }
        }
    }

    async fn flush(
        &mut self,
        out_tx: &mpsc::Sender<pb::ProcessorMessage>,
        acks: &mut Vec<pb::Ack>,
    ) -> bool {
        let mut batch = std::mem::take(acks);
        if self.faults.drop_acks > 0.0 {
            let rate = self.faults.drop_acks;
            batch.retain(|_| self.rng.f64() >= rate);
        }
        if batch.is_empty() {
            return true;
        }
        let msg = pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Acks(pb::AckBatch {
                acks: batch,
            })),
        };
        out_tx.send(msg).await.is_ok()
    }

    fn status(&mut self) -> pb::ProcessorMessage {
        let c = self.receiver.counters();
        let m = &self.metrics;
        m.duplicate_drops.inc_by(
            c.duplicate_drops
                .saturating_sub(self.synced.duplicate_drops),
        );
        m.acks_resent
            .inc_by(c.acks_resent.saturating_sub(self.synced.acks_resent));
        self.synced = c;
        m.paused.set(i64::from(self.receiver.is_paused()));
        m.buffered.set(self.receiver.buffered() as i64);
        m.next_expected.set(self.receiver.next_expected() as i64);
        pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Status(pb::ProcessorStatus {
                next_expected: self.receiver.next_expected(),
                paused: self.receiver.is_paused(),
                duplicate_drops: c.duplicate_drops,
                acks_resent: c.acks_resent,
                buffered: self.receiver.buffered() as u32,
                processed: c.processed,
                faults: Some(self.faults),
            })),
        }
    }
}

/// Acks that waited this long are handed back even if the batch is not
/// finished, so that a slow algorithm does not hold the acks of the events
/// before it (core would time them out).
const ACK_HOLD: Duration = Duration::from_millis(1);

/// Runs algorithms, one event at a time, in the order handed out. Events
/// arrive and acks leave in batches, so that a fast algorithm costs one
/// channel operation per batch rather than per event.
fn worker(
    registry: Registry,
    mut work_rx: mpsc::UnboundedReceiver<Vec<pb::Event>>,
    done_tx: mpsc::UnboundedSender<Vec<pb::Ack>>,
    processed_log: Option<std::fs::File>,
    processor_id: String,
    metrics: &ProcessorMetrics,
) {
    let mut handles = AlgorithmMetrics::new(registry.kinds(), metrics);
    let mut log = ProcessedLog {
        file: processed_log,
        buf: String::new(),
        processor_id,
    };
    // The log is written before the acks leave, so the checker never sees a
    // result whose processing is missing from the log.
    let release = |done: Vec<pb::Ack>, log: &mut ProcessedLog| {
        log.flush();
        done_tx.send(done).is_ok()
    };
    while let Some(batch) = work_rx.blocking_recv() {
        let mut done = Vec::with_capacity(batch.len());
        let mut held_since = Instant::now();
        for event in batch {
            let started = Instant::now();
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                registry.process(&event.kind, &event.payload)
            }));
            let elapsed = started.elapsed();
            let processing_us = elapsed.as_micros() as u64;
            let (status, output, reject) = match outcome {
                Ok(Ok(output)) => (pb::ResultStatus::Ok, output, false),
                Ok(Err(e)) => (pb::ResultStatus::Failed, e.0, false),
                Err(_) => (
                    pb::ResultStatus::Failed,
                    format!("the {:?} algorithm panicked", event.kind),
                    true,
                ),
            };
            handles.observe(&event.kind, status, reject, elapsed);
            log.record(event.seq, event.attempt);
            if done.is_empty() {
                held_since = Instant::now();
            }
            done.push(pb::Ack {
                seq: event.seq,
                attempt: event.attempt,
                status: status as i32,
                output,
                processing_us,
                reject,
            });
            if held_since.elapsed() >= ACK_HOLD && !release(std::mem::take(&mut done), &mut log) {
                return;
            }
        }
        if !done.is_empty() && !release(done, &mut log) {
            return;
        }
    }
}

/// `--processed-log`: one line per event handed to an algorithm, buffered
/// and written in chunks.
struct ProcessedLog {
    file: Option<std::fs::File>,
    buf: String,
    processor_id: String,
}

impl ProcessedLog {
    fn record(&mut self, seq: u64, attempt: u32) {
        if self.file.is_none() {
            return;
        }
        use std::fmt::Write as _;
        let _ = writeln!(self.buf, "{} {seq} {attempt}", self.processor_id);
        if self.buf.len() > 64 * 1024 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Some(file) = self.file.as_mut()
            && !self.buf.is_empty()
        {
            let _ = file.write_all(self.buf.as_bytes());
            self.buf.clear();
        }
    }
}

/// The worker's handles on the per-algorithm metrics, looked up once per
/// algorithm instead of once per event.
struct AlgorithmMetrics<'m> {
    known: Vec<String>,
    metrics: &'m ProcessorMetrics,
    by_algorithm: std::collections::HashMap<String, Handles>,
}

struct Handles {
    ok: prometheus::IntCounter,
    failed: prometheus::IntCounter,
    rejected: prometheus::IntCounter,
    seconds: prometheus::Histogram,
}

impl<'m> AlgorithmMetrics<'m> {
    fn new(known: Vec<String>, metrics: &'m ProcessorMetrics) -> Self {
        Self {
            known,
            metrics,
            by_algorithm: Default::default(),
        }
    }

    fn observe(&mut self, kind: &str, status: pb::ResultStatus, reject: bool, took: Duration) {
        // Label by algorithm, not by the raw kind, so that arbitrary kinds
        // cannot grow the label set without bound.
        let algorithm = if self.known.iter().any(|k| k == kind) {
            kind
        } else {
            "unknown"
        };
        if !self.by_algorithm.contains_key(algorithm) {
            let m = self.metrics;
            let counter = |status| m.processed.with_label_values(&[algorithm, status]);
            let handles = Handles {
                ok: counter("ok"),
                failed: counter("failed"),
                rejected: counter("rejected"),
                seconds: m.processing_seconds.with_label_values(&[algorithm]),
            };
            self.by_algorithm.insert(algorithm.to_string(), handles);
        }
        let h = &self.by_algorithm[algorithm];
        match (reject, status) {
            (true, _) => h.rejected.inc(),
            (false, pb::ResultStatus::Ok) => h.ok.inc(),
            (false, _) => h.failed.inc(),
        }
        h.seconds.observe(took.as_secs_f64());
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
