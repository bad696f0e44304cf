//! The processor's I/O: connect (with backoff), say hello, feed the
//! [`Receiver`] from the stream, hand the runs it starts to the
//! [`Executor`], and send acks back in batches.
//!
//! The receiver and the result cache live as long as the process (one
//! "processor life"), across reconnections: a duplicate that arrives after a
//! reconnection is still recognised and re-acked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ackflow_proto::rt::sleep_until;
use ackflow_proto::v1 as pb;
use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::algorithms::Registry;
use crate::config::Config;
use crate::executor::{Done, Executor};
use crate::metrics::ProcessorMetrics;
use crate::permits::Permits;
use crate::processed_log::ProcessedLog;
use ackflow_proto::client::leader::{self, Rotation};
use ackflow_proto::client::{self, Bearer};
use ackflow_proto::protocol::lanes::Ordering;
use ackflow_proto::protocol::receiver::{Action, Receiver};

/// How often the processor reports its state to core.
const STATUS_EVERY: Duration = Duration::from_millis(200);
/// Most acks in one message.
const MAX_ACKS_PER_MESSAGE: usize = 1024;
/// Core sends something at least once a second on an active stream (a
/// heartbeat when idle); this long without a word, it is taken for frozen
/// (a stopped process, a dead link the kernel has not noticed) and the
/// processor moves on to the next core it knows. A processor waiting as a
/// standby hears nothing until it is welcomed, so this starts at welcome.
const CORE_SILENT: Duration = Duration::from_secs(3);
/// Reconnect backoff bounds.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Runs the processor until `cancel`.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut registry = Registry::builtin();
    if config.enable_crash {
        tracing::warn!("--enable-crash: events of kind \"crash\" abort this process");
        registry.register("crash", crate::algorithms::Crash);
    }
    run_with(config, registry, cancel).await
}

/// Runs the processor with a custom set of algorithms (and the webhooks
/// of `--webhook`, which replace an algorithm of the same kind).
pub async fn run_with(
    config: Config,
    mut registry: Registry,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(ProcessorMetrics::new());
    crate::webhook::register(&config, &mut registry, &metrics)?;
    let mut cores = Vec::new();
    for url in config.cores() {
        let endpoint =
            client::endpoint(&url).with_context(|| format!("--core {url:?} is not a valid URL"))?;
        let endpoint = config
            .tls(&url, endpoint)
            .with_context(|| format!("configuring TLS towards {url}"))?;
        cores.push((url, endpoint));
    }
    anyhow::ensure!(!cores.is_empty(), "--core names no URL");
    let bearer = Bearer::new(config.token()?.as_ref()).context("--token")?;
    let processor_id = config
        .processor_id
        .clone()
        .unwrap_or_else(|| format!("p-{:016x}", fastrand::u64(..)));
    tracing::info!(%processor_id, core = %config.core, algorithms = ?registry.kinds(), "processor starting");

    let processed_log = match &config.processed_log {
        Some(path) => ProcessedLog::open(path, processor_id.clone())
            .with_context(|| format!("opening --processed-log {}", path.display()))?,
        None => ProcessedLog::default(),
    };
    if let Some(addr) = config.metrics_addr {
        crate::metrics::serve(addr, metrics.clone(), cancel.clone())
            .await
            .with_context(|| format!("binding --metrics-addr {addr}"))?;
    }
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let permits = Permits::default();
    let executor = Executor::new(
        registry.clone(),
        done_tx,
        processed_log,
        &metrics,
        permits.clone(),
    );
    let mut receiver = Receiver::new(
        config.window as usize,
        config.concurrency as usize,
        !config.no_dedup,
    );
    for target in &config.webhooks {
        receiver.cap_kind(&target.kind, config.webhook_concurrency as usize);
    }
    if config.unsafe_ignore_order {
        tracing::warn!("--unsafe-ignore-order: events of one key may run at once and out of order");
        receiver = receiver.ignoring_order();
    }
    let mut life = Life {
        config: config.clone(),
        bearer,
        processor_id,
        life: fastrand::u64(1..),
        algorithms: registry.kinds(),
        receiver,
        faults: config.faults(),
        executor,
        done_rx,
        permits,
        rng: fastrand::Rng::new(),
        metrics,
        synced: Default::default(),
        reported: None,
    };
    let mut failures = 0u32;
    // Several cores: each is tried in turn; the backoff applies once all
    // were tried, and stays short while a standby says a leader exists.
    let rotation = Rotation::new(cores.len());
    let mut standby_seen = false;
    while !cancel.is_cancelled() {
        let started = Instant::now();
        let (url, endpoint) = &cores[rotation.current()];
        let ended = match endpoint.connect().await {
            Ok(channel) => life.session(channel, &cancel).await,
            Err(e) => Ended::failed(format!("cannot connect: {}", with_causes(&e))),
        };
        if cancel.is_cancelled() {
            break;
        }
        // A stream that lasted was a success: the backoff starts over.
        if started.elapsed() > Duration::from_secs(10) {
            failures = 0;
            standby_seen = false;
        }
        standby_seen |= ended.standby;
        let wait = if !rotation.advance() {
            Duration::ZERO
        } else if standby_seen {
            standby_seen = false;
            RECONNECT_MIN
        } else {
            failures += 1;
            client::reconnect_delay(failures, RECONNECT_MIN, RECONNECT_MAX)
        };
        let reason = ended.reason;
        tracing::warn!(core = %url, %reason, retry_in_ms = wait.as_millis() as u64, "stream to core ended");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => break,
        }
    }
    tracing::info!("processor stopped");
    Ok(())
}

/// Why a stream to core ended.
struct Ended {
    reason: String,
    /// The core is a standby: another one leads.
    standby: bool,
}

impl Ended {
    fn failed(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            standby: false,
        }
    }
}

/// State that lives as long as the process.
struct Life {
    config: Config,
    /// `Bearer <token>` for Delivery.Subscribe, checked at start (see
    /// [`Config::token`]).
    bearer: Bearer,
    processor_id: String,
    /// Drawn at start, sent in every `Hello`: tells core a restart from a
    /// reconnection.
    life: u64,
    algorithms: Vec<String>,
    receiver: Receiver,
    faults: pb::Faults,
    /// Runs the runs the receiver starts.
    executor: Executor,
    /// Acks from the executor's runs.
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// The runs' claims of at-most-once events, waiting for core.
    permits: Permits,
    rng: fastrand::Rng,
    metrics: Arc<ProcessorMetrics>,
    /// Receiver counters as last copied into the metrics.
    synced: ackflow_proto::protocol::receiver::Counters,
    /// `received_below` and `awaiting` as last reported on this stream:
    /// when events arrive, core hears at once that they need no copy,
    /// before their ack timeouts fire (`None`: nothing reported yet).
    reported: Option<(u64, Vec<u64>)>,
}

impl Life {
    /// One stream; returns why it ended.
    async fn session(&mut self, channel: Channel, cancel: &CancellationToken) -> Ended {
        let mut client =
            pb::delivery_client::DeliveryClient::with_interceptor(channel, self.bearer.clone())
                .max_decoding_message_size(256 << 20);
        let (out_tx, out_rx) = mpsc::channel(256);
        let hello = pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Hello(pb::Hello {
                processor_id: self.processor_id.clone(),
                window: self.config.window,
                algorithms: self.algorithms.clone(),
                concurrency: self.config.concurrency,
                life: self.life,
                claims: true,
            })),
        };
        if out_tx.send(hello).await.is_err() {
            return Ended::failed("outbound closed");
        }
        let mut inbound = match client.subscribe(ReceiverStream::new(out_rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return Ended {
                    reason: format!("subscribe refused: {}", status.message()),
                    standby: leader::is_standby(&status),
                };
            }
        };
        tracing::info!("connected to core");
        self.metrics.connected.set(1);
        let reason = self.stream(&mut inbound, out_tx, cancel).await;
        self.metrics.connected.set(0);
        Ended::failed(reason)
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
        self.reported = None;
        // Claims made on a stream that ended get their answer on this one.
        if !send_claims(&out_tx, self.permits.waiting()).await {
            return "outbound closed".into();
        }
        let mut last_heard: Option<Instant> = None;
        loop {
            let reason = tokio::select! {
                _ = cancel.cancelled() => Some("shutting down".to_string()),
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => {
                        if last_heard.is_some()
                            || matches!(msg.body, Some(pb::core_message::Body::Welcome(_)))
                        {
                            last_heard = Some(Instant::now());
                        }
                        // Answered before anything else: the round trip core
                        // measures is the path's, not this loop's work.
                        if let Some(pb::core_message::Body::Heartbeat(hb)) = &msg.body
                            && hb.probe != 0
                        {
                            let echo = pb::ProcessorMessage {
                                body: Some(pb::processor_message::Body::Echo(pb::Echo {
                                    probe: hb.probe,
                                })),
                            };
                            if out_tx.send(echo).await.is_err() {
                                return "outbound closed".into();
                            }
                        }
                        self.on_message(msg, &mut acks).await;
                        None
                    }
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
                _ = self.permits.fresh() => {
                    let fresh = self.permits.take_fresh();
                    (!send_claims(&out_tx, fresh).await).then(|| "outbound closed".to_string())
                }
                _ = status_tick.tick() => {
                    let status = self.status();
                    if last_heard.is_some_and(|at| at.elapsed() > CORE_SILENT) {
                        Some(format!("core silent for {} s", CORE_SILENT.as_secs()))
                    } else if out_tx.send(status).await.is_err()
                        || !send_claims(&out_tx, self.permits.waiting()).await
                    {
                        Some("outbound closed".to_string())
                    } else {
                        None
                    }
                }
                _ = sleep_until(cut_after) => Some("fault injection: stream cut".to_string()),
            };
            if let Some(reason) = reason {
                return reason;
            }
            if (!acks.is_empty() || self.progress_moved()) && !self.flush(&out_tx, &mut acks).await
            {
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
                    ordering = ?welcome.ordering(),
                    "welcome"
                );
                let mut actions = self.receiver.on_welcome(
                    welcome.acked_floor,
                    welcome.window,
                    welcome.paused,
                    Ordering::from_welcome(welcome.ordering),
                );
                actions.extend(self.receiver.pass_over(&welcome.resolved_above));
                actions
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
                    if event.attempt > 1 {
                        let (seq, attempt) = (event.seq, event.attempt);
                        let got = self.receiver.on_event(event);
                        tracing::debug!(
                            seq,
                            attempt,
                            next_expected = self.receiver.next_expected(),
                            received_below = self.receiver.received_below(),
                            started = got.iter().any(|a| matches!(a, Action::Start(_))),
                            "copy received"
                        );
                        actions.extend(got);
                        continue;
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
            Some(pb::core_message::Body::Heartbeat(hb)) => {
                let mut actions = self.receiver.on_floor(hb.acked_floor);
                actions.extend(self.receiver.pass_over(&hb.resolved_above));
                actions
            }
            Some(pb::core_message::Body::Permits(permits)) => {
                self.permits.answer(&permits.granted, &permits.refused);
                Vec::new()
            }
            None => Vec::new(),
        };
        self.perform(actions, acks);
    }

    /// Starts runs (they outlive the stream: their acks are cached and sent
    /// on whichever stream is up when they finish) and collects acks.
    fn perform(&mut self, actions: Vec<Action>, acks: &mut Vec<pb::Ack>) {
        for action in actions {
            match action {
                Action::Start(run) => self.executor.start(run),
                Action::Ack(ack) => acks.push(ack),
            }
        }
    }

    fn on_done(&mut self, done: Done, acks: &mut Vec<pb::Ack>) {
        for seq in done.skipped {
            let actions = self.receiver.on_skipped(seq);
            self.perform(actions, acks);
        }
        let mut unprocessed = Some(done.unprocessed);
        for ack in done.acks {
            let actions = if ack.retry {
                // Only the last ack of a run asks to retry.
                let rest = unprocessed.take().unwrap_or_default();
                self.receiver.on_retry_later(ack, rest)
            } else {
                self.receiver.on_processed(ack)
            };
            self.perform(actions, acks);
        }
    }

    /// Whether the receiver holds events (or awaits copies) that core has
    /// not heard of on this stream.
    fn progress_moved(&self) -> bool {
        match &self.reported {
            Some((below, awaiting)) => {
                *below != self.receiver.received_below() || *awaiting != self.receiver.awaiting()
            }
            None => self.receiver.received_below() != 0,
        }
    }

    /// Sends the acks collected (an empty batch when only the progress
    /// moved) with the receiver's progress.
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
        if batch.is_empty() && !self.progress_moved() {
            return true;
        }
        let (received_below, awaiting) = (self.receiver.received_below(), self.receiver.awaiting());
        self.reported = Some((received_below, awaiting.clone()));
        let msg = pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Acks(pb::AckBatch {
                acks: batch,
                processed_below: self.receiver.processed_below(),
                received_below,
                awaiting,
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
        m.running.set(self.receiver.running() as i64);
        m.lanes_active.set(self.receiver.lanes_active() as i64);
        pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Status(pb::ProcessorStatus {
                next_expected: self.receiver.next_expected(),
                paused: self.receiver.is_paused(),
                duplicate_drops: c.duplicate_drops,
                acks_resent: c.acks_resent,
                buffered: self.receiver.buffered() as u32,
                processed: c.processed,
                faults: Some(self.faults),
                running: self.receiver.running() as u32,
                concurrency: self.receiver.concurrency() as u32,
                lanes_active: self.receiver.lanes_active() as u32,
                processed_below: self.receiver.processed_below(),
                received_below: self.receiver.received_below(),
                awaiting: self.receiver.awaiting(),
                webhooks: self
                    .config
                    .webhooks
                    .iter()
                    .map(|t| pb::WebhookStatus {
                        kind: t.kind.clone(),
                        calls: self.receiver.running_of(&t.kind).unwrap_or_default() as u32,
                        cap: self.config.webhook_concurrency,
                    })
                    .collect(),
            })),
        }
    }
}

/// Sends claims (`Claims`), if any; false when the stream is gone.
async fn send_claims(out_tx: &mpsc::Sender<pb::ProcessorMessage>, seqs: Vec<u64>) -> bool {
    if seqs.is_empty() {
        return true;
    }
    let msg = pb::ProcessorMessage {
        body: Some(pb::processor_message::Body::Claims(pb::Claims { seqs })),
    };
    out_tx.send(msg).await.is_ok()
}

/// An error with its chain of causes ("transport error: tls handshake:
/// invalid peer certificate: UnknownIssuer"), so that a wrong CA or name
/// does not read like a core that is down.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn connection_errors_name_their_cause() {
        let e = Outer(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        ));
        assert_eq!(
            with_causes(&e),
            "transport error: invalid peer certificate: UnknownIssuer"
        );
    }
}
