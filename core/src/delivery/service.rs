//! The `Delivery` gRPC service: accepts a processor stream, waits for its
//! hello and hands it to the hub.

use std::pin::Pin;
use std::time::Duration;

use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::hub::{Hub, Inbound, NewSession};

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Implements `ackflow.v1.Delivery`.
pub struct DeliveryService {
    pub hub: Hub,
    pub cancel: CancellationToken,
}

type CoreStream = Pin<Box<dyn Stream<Item = Result<pb::CoreMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::delivery_server::Delivery for DeliveryService {
    type SubscribeStream = CoreStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::ProcessorMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))??;
        let hello = match first.and_then(|m| m.body) {
            Some(pb::processor_message::Body::Hello(hello)) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        if hello.processor_id.is_empty() || hello.processor_id.len() > 128 {
            return Err(Status::invalid_argument(
                "hello.processor_id must be 1 to 128 bytes",
            ));
        }
        let (out_tx, out_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel(256);
        let cancel = self.cancel.clone();
        // The reader forwards the processor's messages to the hub. Every way
        // a peer can vanish (an error, the end of the stream, the hub
        // dropping the session) ends it.
        tokio::spawn(async move {
            let reason = loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = cancel.cancelled() => break "core is shutting down".to_string(),
                    _ = in_tx.closed() => return,
                };
                match next {
                    Ok(Some(msg)) => {
                        if in_tx.send(Inbound::Message(msg)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "processor closed the stream".to_string(),
                    Err(status) => break format!("stream error: {}", status.message()),
                }
            };
            let _ = in_tx.send(Inbound::Closed(reason)).await;
        });
        self.hub
            .sessions_tx
            .send(NewSession {
                hello,
                out_tx,
                in_rx,
            })
            .await
            .map_err(|_| Status::unavailable("core is shutting down"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}
