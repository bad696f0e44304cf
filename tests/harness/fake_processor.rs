//! A hand-made processor over gRPC, for paths the real processor takes only
//! by accident: rejecting an event (the real one rejects only when an
//! algorithm panics, and no built-in panics), or acking exactly when a test
//! says so. It says hello, hands the test the events core sends, and sends
//! the acks the test writes.

use std::net::SocketAddr;
use std::time::Duration;

use ackflow_proto::v1 as pb;
use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// One stream to core's `Delivery.Subscribe`.
pub struct FakeProcessor {
    out_tx: mpsc::Sender<pb::ProcessorMessage>,
    inbound: tonic::Streaming<pb::CoreMessage>,
    /// The `Welcome` core answered the hello with.
    pub welcome: pb::Welcome,
}

impl FakeProcessor {
    /// Connects, says hello (`window`, `algorithms`) and waits (bounded) for
    /// the welcome.
    pub async fn connect(
        grpc: SocketAddr,
        processor_id: &str,
        window: u32,
        algorithms: &[&str],
    ) -> anyhow::Result<Self> {
        Self::say_hello(grpc, hello(processor_id, window, algorithms)).await
    }

    /// As [`connect`](Self::connect), for a processor that claims
    /// at-most-once events before starting them (`Hello.claims`).
    pub async fn connect_claiming(
        grpc: SocketAddr,
        processor_id: &str,
        window: u32,
        algorithms: &[&str],
    ) -> anyhow::Result<Self> {
        let hello = pb::Hello {
            claims: true,
            ..hello(processor_id, window, algorithms)
        };
        Self::say_hello(grpc, hello).await
    }

    async fn say_hello(grpc: SocketAddr, hello: pb::Hello) -> anyhow::Result<Self> {
        let (out_tx, out_rx) = mpsc::channel(64);
        out_tx
            .send(pb::ProcessorMessage {
                body: Some(pb::processor_message::Body::Hello(hello)),
            })
            .await?;
        let mut inbound = pb::delivery_client::DeliveryClient::new(crate::channel(grpc).await?)
            .subscribe(ReceiverStream::new(out_rx))
            .await?
            .into_inner();
        loop {
            match next(&mut inbound, Duration::from_secs(10)).await?.body {
                Some(pb::core_message::Body::Welcome(welcome)) => {
                    return Ok(Self {
                        out_tx,
                        inbound,
                        welcome,
                    });
                }
                _ => continue,
            }
        }
    }

    /// Waits for events until `want` says it has what it needs (it sees
    /// every event received so far, in order of arrival); fails after
    /// `timeout`. Heartbeats and controls are skipped.
    pub async fn events_until(
        &mut self,
        timeout: Duration,
        want: impl Fn(&[pb::Event]) -> bool,
    ) -> anyhow::Result<Vec<pb::Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = Vec::new();
        while !want(&events) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = next(&mut self.inbound, left).await.with_context(|| {
                let seqs: Vec<u64> = events.iter().map(|e: &pb::Event| e.seq).collect();
                format!("events received so far: {seqs:?}")
            })?;
            if let Some(pb::core_message::Body::Events(batch)) = message.body {
                events.extend(batch.events);
            }
        }
        Ok(events)
    }

    /// Waits until every seq of `seqs` arrived (at least once); returns the
    /// latest copy of each, in `seqs` order.
    pub async fn events(
        &mut self,
        seqs: &[u64],
        timeout: Duration,
    ) -> anyhow::Result<Vec<pb::Event>> {
        let all = self
            .events_until(timeout, |got| {
                seqs.iter().all(|s| got.iter().any(|e| e.seq == *s))
            })
            .await?;
        Ok(seqs
            .iter()
            .map(|s| {
                all.iter()
                    .rev()
                    .find(|e| e.seq == *s)
                    .cloned()
                    .expect("waited for it")
            })
            .collect())
    }

    /// Claims at-most-once events (`Claims`).
    pub async fn claim(&self, seqs: &[u64]) -> anyhow::Result<()> {
        self.out_tx
            .send(pb::ProcessorMessage {
                body: Some(pb::processor_message::Body::Claims(pb::Claims {
                    seqs: seqs.to_vec(),
                })),
            })
            .await
            .context("the stream to core is closed")
    }

    /// Waits for core's next `Permits`, skipping everything else.
    pub async fn permits(&mut self, timeout: Duration) -> anyhow::Result<pb::Permits> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some(pb::core_message::Body::Permits(permits)) =
                next(&mut self.inbound, left).await?.body
            {
                return Ok(permits);
            }
        }
    }

    /// Sends one ack batch.
    pub async fn ack(&self, acks: Vec<pb::Ack>) -> anyhow::Result<()> {
        self.out_tx
            .send(pb::ProcessorMessage {
                body: Some(pb::processor_message::Body::Acks(pb::AckBatch {
                    acks,
                    ..Default::default()
                })),
            })
            .await
            .context("the stream to core is closed")
    }
}

fn hello(processor_id: &str, window: u32, algorithms: &[&str]) -> pb::Hello {
    pb::Hello {
        processor_id: processor_id.into(),
        window,
        algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
        life: fastrand::u64(1..),
        ..Default::default()
    }
}

/// An OK ack for `event` with `output`.
pub fn ok(event: &pb::Event, output: &str) -> pb::Ack {
    pb::Ack {
        seq: event.seq,
        attempt: event.attempt,
        status: pb::ResultStatus::Ok as i32,
        output: output.into(),
        processing_us: 1,
        ..Default::default()
    }
}

/// A rejection of `event` (what the real processor sends when an algorithm
/// panics), with `reason`.
pub fn reject(event: &pb::Event, reason: &str) -> pb::Ack {
    pb::Ack {
        seq: event.seq,
        attempt: event.attempt,
        status: pb::ResultStatus::Failed as i32,
        output: reason.into(),
        processing_us: 1,
        reject: true,
        ..Default::default()
    }
}

/// The next message, within `timeout`.
async fn next(
    inbound: &mut tonic::Streaming<pb::CoreMessage>,
    timeout: Duration,
) -> anyhow::Result<pb::CoreMessage> {
    tokio::time::timeout(timeout, inbound.message())
        .await
        .with_context(|| format!("no message from core within {timeout:?}"))??
        .context("core ended the stream")
}
