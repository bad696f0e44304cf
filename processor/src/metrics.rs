//! Prometheus metrics of the processor, served on `--metrics-addr` at
//! `GET /metrics`. The names match core's and the monitor's words.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Every metric the processor exports.
pub struct ProcessorMetrics {
    registry: Registry,
    pub duplicate_drops: IntCounter,
    pub acks_resent: IntCounter,
    pub handed_over: IntCounter,
    pub processed: IntCounterVec,
    pub processing_seconds: HistogramVec,
    pub connected: IntGauge,
    pub paused: IntGauge,
    pub buffered: IntGauge,
    pub next_expected: IntGauge,
    pub running: IntGauge,
    pub lanes_active: IntGauge,
    /// Webhook calls in progress, by webhook (its kind).
    pub webhook_calls: IntGaugeVec,
    /// Webhook answers by webhook and class (2xx, 3xx, 4xx, 5xx, timeout,
    /// error: no HTTP answer).
    pub webhook_answers: IntCounterVec,
}

impl ProcessorMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
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
        let processed = IntCounterVec::new(
            Opts::new(
                "ackflow_processor_processed_total",
                "Events processed, by algorithm and status (ok, failed, retry: asked to retry later, rejected).",
            ),
            &["algorithm", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(processed.clone()))
            .expect("unique metric");
        let processing_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ackflow_processor_processing_seconds",
                "Time an algorithm took per event.",
            )
            .buckets(vec![
                0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                30.0,
            ]),
            &["algorithm"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(processing_seconds.clone()))
            .expect("unique metric");
        let webhook_calls = IntGaugeVec::new(
            Opts::new(
                "ackflow_processor_webhook_calls",
                "Webhook calls in progress, by webhook (at most --webhook-concurrency each).",
            ),
            &["webhook"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(webhook_calls.clone()))
            .expect("unique metric");
        let webhook_answers = IntCounterVec::new(
            Opts::new(
                "ackflow_processor_webhook_answers_total",
                "Webhook answers by webhook and class: 2xx, 3xx, 4xx, 5xx, timeout (--webhook-timeout-ms), error (no HTTP answer: connection, TLS). Their latency is ackflow_processor_processing_seconds{algorithm=<webhook>}.",
            ),
            &["webhook", "class"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(webhook_answers.clone()))
            .expect("unique metric");
        Self {
            webhook_calls,
            webhook_answers,
            duplicate_drops: counter(
                "ackflow_processor_duplicate_drops_total",
                "Events dropped because they were already processed or buffered.",
            ),
            acks_resent: counter(
                "ackflow_processor_acks_resent_total",
                "Duplicates answered by sending their cached ack again.",
            ),
            handed_over: counter(
                "ackflow_processor_handed_over_total",
                "Events taken after core had said they were not this stream's (Event.after): their key moved here from another processor.",
            ),
            processed,
            processing_seconds,
            connected: gauge("ackflow_processor_connected", "1 while connected to core."),
            paused: gauge("ackflow_processor_paused", "1 while paused."),
            buffered: gauge(
                "ackflow_processor_buffered",
                "Events waiting in the reorder buffer.",
            ),
            next_expected: gauge(
                "ackflow_processor_next_expected",
                "Next seq to admit to the lanes (every seq below it was received).",
            ),
            running: gauge(
                "ackflow_processor_running",
                "Algorithm calls in progress (at most --concurrency, one per lane).",
            ),
            lanes_active: gauge(
                "ackflow_processor_lanes_active",
                "Lanes (keys under key ordering) with an event running or waiting.",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for ProcessorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics` on `addr` until `cancel`: a minimal HTTP/1.1
/// responder, one request per connection.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<ProcessorMetrics>,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "serving metrics");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = cancel.cancelled() => return,
            };
            let Ok((mut stream, _)) = accepted else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut request = Vec::with_capacity(1024);
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = if request.starts_with(b"GET /metrics ") {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "try GET /metrics\n".to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(local)
}
