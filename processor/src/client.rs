//! The processor's I/O: connect (with backoff, through the cores it was
//! given), say hello, and run each stream (`client/stream.rs`: feed the
//! [`Receiver`], hand the runs it starts to the [`Executor`], send acks
//! back in batches, hold starts while another processor may have the
//! events).
//!
//! The receiver and the result cache live as long as the process (one
//! "processor life"), across reconnections: a duplicate that arrives after a
//! reconnection is still recognised and re-acked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;
use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::algorithms::Registry;
use crate::config::Config;
use crate::executor::{Done, Executor};
use crate::hold::Held;
use crate::metrics::ProcessorMetrics;
use crate::permits::Permits;
use crate::processed_log::ProcessedLog;
use ackflow_proto::client::leader::{self, Rotation};
use ackflow_proto::client::{self, Bearer};
use ackflow_proto::protocol::receiver::Receiver;

mod stream;

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
/// A stream core accepted and that stayed open this long served: its end
/// (a reset, a core restart, a cut for silence) starts the backoff over.
/// Before, only streams of 10 s did, so a run of resets a few seconds
/// apart kept a processor away for up to 5 s, past core's return grace:
/// a standby took its place and its events in flight became crash
/// suspects.
const STREAM_SERVED: Duration = Duration::from_secs(1);

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
    let held = if config.unsafe_no_hold {
        tracing::warn!(
            "--unsafe-no-hold: a processor that lost its place to a standby goes on starting events"
        );
        Held::never()
    } else {
        Held::default()
    };
    let executor = Executor::new(
        registry.clone(),
        done_tx,
        processed_log.clone(),
        &metrics,
        permits.clone(),
        held.clone(),
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
        held,
        log: processed_log,
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
        let (url, endpoint) = &cores[rotation.current()];
        let ended = match endpoint.connect().await {
            Ok(channel) => life.session(channel, &cancel).await,
            Err(e) => Ended::failed(format!("cannot connect: {}", with_causes(&e))),
        };
        if cancel.is_cancelled() {
            break;
        }
        // A stream that served was a success: the backoff starts over.
        if ended.served() {
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
    /// How long the stream was open, once core accepted it.
    open_for: Option<Duration>,
}

impl Ended {
    fn failed(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            standby: false,
            open_for: None,
        }
    }

    /// Whether core accepted the stream and it stayed open for
    /// [`STREAM_SERVED`].
    fn served(&self) -> bool {
        self.open_for.is_some_and(|d| d >= STREAM_SERVED)
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
    /// Whether starts are held (see `hold.rs`), shared with the executor.
    held: Held,
    /// `--processed-log`, for the lines saying starts are held.
    log: ProcessedLog,
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
                    open_for: None,
                };
            }
        };
        tracing::info!("connected to core");
        self.metrics.connected.set(1);
        let opened = Instant::now();
        let reason = self.stream(&mut inbound, out_tx, cancel).await;
        self.metrics.connected.set(0);
        Ended {
            open_for: Some(opened.elapsed()),
            ..Ended::failed(reason)
        }
    }
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
    fn only_a_stream_core_accepted_and_kept_open_starts_the_backoff_over() {
        let open = |d| Ended {
            open_for: d,
            ..Ended::failed("reset")
        };
        assert!(open(Some(STREAM_SERVED)).served());
        assert!(
            open(Some(Duration::from_secs(4))).served(),
            "reset after 4 s"
        );
        assert!(
            !open(Some(Duration::from_millis(200))).served(),
            "ended at once"
        );
        assert!(!open(None).served(), "never accepted");
        assert!(!Ended::failed("cannot connect").served());
    }

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
