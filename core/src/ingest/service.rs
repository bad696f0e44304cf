//! The `Ingest` gRPC service: unary `Publish` and bidi `PublishStream`, with
//! the same validation and limits as REST.
//!
//! An idempotency key reused for a different request is
//! `FAILED_PRECONDITION`, with the key and the original seq in the message
//! (and the seq in the `ackflow-original-seq` trailer). Each message of a
//! stream is a request of its own: a conflict ends the stream after the
//! replies to the messages before it; messages after it in the same group
//! may have been stored, unanswered (resend them with their keys to learn
//! their seqs).

use std::pin::Pin;

use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::{Ingest, IngestError, PendingReply, outcome};
use crate::model::{Conflict, NewEvent, Original};
use crate::trace;
use crate::validate::{self, Invalid, Limits};

/// Most requests of one stream handed to the ingest writer as one group.
const STREAM_GROUP: usize = 256;
/// Groups a stream may have waiting for their commit (so at most
/// `STREAM_GROUP × STREAM_PENDING` events per stream).
const STREAM_PENDING: usize = 64;

/// Implements `ackflow.v1.Ingest`.
pub struct IngestService {
    pub ingest: Ingest,
    pub limits: Limits,
    pub cancel: CancellationToken,
}

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Full => Status::resource_exhausted(format!("{e} (retry in 1 s)")),
            IngestError::Unavailable(_) | IngestError::ShuttingDown => {
                Status::unavailable(e.to_string())
            }
            IngestError::Conflict(conflict) => conflict_status(&conflict, None),
        }
    }
}

/// `FAILED_PRECONDITION` for an idempotency key reused for a different
/// request; on a stream, `request_id` says which message it was.
fn conflict_status(conflict: &Conflict, request_id: Option<u64>) -> Status {
    let message = match request_id {
        Some(id) => format!("request_id {id}: {conflict}"),
        None => conflict.to_string(),
    };
    let mut status = Status::failed_precondition(message);
    if let Original::Stored { seq } = conflict.original {
        status
            .metadata_mut()
            .insert("ackflow-original-seq", seq.into());
    }
    status
}

impl From<Invalid> for Status {
    fn from(e: Invalid) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// The request's `traceparent` metadata.
fn traceparent<T>(request: &Request<T>) -> Result<Option<String>, Invalid> {
    let value = request.metadata().get(trace::TRACEPARENT);
    trace::from_header(value.map(|v| v.as_bytes()))
}

/// Converts and validates a request; `traceparent` is the request's
/// metadata, which the message's own field overrides.
fn to_event(
    req: pb::PublishRequest,
    limits: &Limits,
    traceparent: Option<&str>,
) -> Result<NewEvent, Invalid> {
    let traceparent = if req.traceparent.is_empty() {
        traceparent.map(str::to_owned)
    } else {
        Some(trace::traceparent(&req.traceparent)?)
    };
    let event = NewEvent {
        kind: req.kind,
        key: (!req.key.is_empty()).then_some(req.key),
        payload: req.payload,
        idempotency_key: (!req.idempotency_key.is_empty()).then_some(req.idempotency_key),
        traceparent,
    };
    validate::check(&event, limits)?;
    validate::check_json(&event.payload)?;
    Ok(event)
}

fn reply(appended: &crate::model::Appended, request_id: u64) -> pb::PublishResponse {
    pb::PublishResponse {
        seq: appended.seq,
        id: appended.id.clone(),
        replayed: appended.replayed,
        request_id,
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<pb::PublishResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    type PublishStreamStream = ReplyStream;

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let invalid = |_: &Invalid| self.ingest.metrics().reject("invalid");
        let traceparent = traceparent(&request).inspect_err(invalid)?;
        let req = request.into_inner();
        let request_id = req.request_id;
        let event = to_event(req, &self.limits, traceparent.as_deref()).inspect_err(invalid)?;
        let appended = self.ingest.publish(vec![event]).await?;
        let first = appended
            .first()
            .ok_or_else(|| Status::internal("commit returned no outcome"))?;
        Ok(Response::new(reply(first, request_id)))
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let traceparent =
            traceparent(&request).inspect_err(|_| self.ingest.metrics().reject("invalid"))?;
        let mut inbound = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::PublishResponse, Status>>(256);
        // Commit receipts in request order; bounded, so a client that
        // publishes faster than commits complete is pushed back.
        let (pending_tx, mut pending_rx) =
            mpsc::channel::<Result<(Vec<u64>, PendingReply), Status>>(STREAM_PENDING);
        let ingest = self.ingest.clone();
        let limits = self.limits;
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    next = inbound.message() => next,
                    _ = cancel.cancelled() => break,
                };
                let group = read_group(
                    first,
                    &mut inbound,
                    &limits,
                    traceparent.as_deref(),
                    &ingest,
                )
                .await;
                if !group.events.is_empty() {
                    let submitted = ingest.submit_each(group.events).await.map_err(Status::from);
                    let failed = submitted.is_err();
                    let item = submitted.map(|rx| (group.request_ids, rx));
                    if pending_tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
                // An error goes through the same queue, so the replies
                // already owed are sent first; then the stream ends with it.
                // An undecodable or oversized message ends up here too: the
                // client is told, not left with an OK that hides the
                // refusal. If the client is gone instead, nobody reads this
                // and nothing is lost.
                if let Some(status) = group.error {
                    let _ = pending_tx.send(Err(status)).await;
                    break;
                }
                if group.ended {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(item) = pending_rx.recv().await {
                let (request_ids, rx) = match item {
                    Ok(receipt) => receipt,
                    Err(status) => {
                        let _ = out_tx.send(Err(status)).await;
                        return;
                    }
                };
                // One outcome per message; the first refused one ends the
                // stream (`send` below stops at the first error).
                let replies = match outcome(rx).await {
                    Ok(outcomes) if outcomes.len() == request_ids.len() => outcomes
                        .iter()
                        .zip(request_ids)
                        .map(|(outcome, request_id)| match outcome {
                            Ok(appended) => match appended.first() {
                                Some(a) => Ok(reply(a, request_id)),
                                None => Err(Status::internal("commit returned no outcome")),
                            },
                            Err(conflict) => Err(conflict_status(conflict, Some(request_id))),
                        })
                        .collect(),
                    Ok(_) => vec![Err(Status::internal("commit returned no outcome"))],
                    Err(e) => vec![Err(Status::from(e))],
                };
                for msg in replies {
                    let failed = msg.is_err();
                    if out_tx.send(msg).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

/// Requests of a stream read in one go: the first, plus whatever has already
/// arrived, up to [`STREAM_GROUP`]. They are committed together, which costs
/// one queue operation per group instead of one per event.
struct Group {
    request_ids: Vec<u64>,
    events: Vec<NewEvent>,
    /// The request that ended the group was refused (or undecodable).
    error: Option<Status>,
    /// The client closed its side of the stream.
    ended: bool,
}

async fn read_group(
    first: Result<Option<pb::PublishRequest>, Status>,
    inbound: &mut Streaming<pb::PublishRequest>,
    limits: &Limits,
    traceparent: Option<&str>,
    ingest: &Ingest,
) -> Group {
    let mut group = Group {
        request_ids: Vec::new(),
        events: Vec::new(),
        error: None,
        ended: false,
    };
    let mut next = first;
    loop {
        match next {
            Ok(Some(req)) => {
                let request_id = req.request_id;
                match to_event(req, limits, traceparent) {
                    Ok(event) => {
                        group.request_ids.push(request_id);
                        group.events.push(event);
                    }
                    Err(invalid) => {
                        ingest.metrics().reject("invalid");
                        group.error = Some(Status::from(invalid));
                        return group;
                    }
                }
            }
            Ok(None) => {
                group.ended = true;
                return group;
            }
            Err(status) => {
                group.error = Some(status);
                return group;
            }
        }
        if group.events.len() >= STREAM_GROUP {
            return group;
        }
        // Take the next request only if it has already arrived.
        next = tokio::select! {
            biased;
            next = inbound.message() => next,
            () = std::future::ready(()) => return group,
        };
    }
}
