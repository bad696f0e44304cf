//! The `Admin` gRPC service: snapshots and the feed for the monitor, and
//! operator commands relayed to the processor by the hub.

use std::pin::Pin;
use std::sync::Arc;

use ackflow_proto::v1 as pb;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::delivery::hub::{Command, Hub};
use crate::ingest::{Ingest, IngestError};
use crate::model::NewEvent;
use crate::store::SharedStore;

/// Implements `ackflow.v1.Admin`.
pub struct AdminService {
    pub hub: Hub,
    pub store: SharedStore,
    pub ingest: Ingest,
    pub cancel: CancellationToken,
    /// One permit per open `Watch` stream (`--max-watchers`): each holds a
    /// task and a snapshot copy every 200 ms, so their number is bounded.
    /// A stream's permit goes back when its task ends (the client left
    /// or core stops).
    pub watchers: Arc<Semaphore>,
    /// `--max-watchers`, for the refusal's message.
    pub max_watchers: u32,
    /// `--allow-fault-injection`: whether `SetFaults` may set faults.
    pub allow_fault_injection: bool,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

impl AdminService {
    async fn command(
        &self,
        make: impl FnOnce(oneshot::Sender<bool>) -> Command,
    ) -> Result<bool, Status> {
        let (tx, rx) = oneshot::channel();
        self.hub
            .commands_tx
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("core is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("core is shutting down"))
    }
}

fn check_fraction(name: &str, value: f64) -> Result<(), Status> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{name} must be a fraction between 0 and 1, got {value}"
        )))
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} Admin.Watch streams are open, the most core serves (--max-watchers); \
                 retry when one closes",
                self.max_watchers
            ))
        })?;
        let mut snapshot_rx = self.hub.snapshot_rx.clone();
        let mut feed_rx = self.hub.feed_tx.subscribe();
        let (tx, rx) = mpsc::channel(256);
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let first = snapshot_rx.borrow_and_update().clone();
            let mut next = Some(pb::watch_response::Update::Snapshot((*first).clone()));
            loop {
                if let Some(update) = next.take() {
                    let msg = pb::WatchResponse {
                        update: Some(update),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    // The client left: give the permit back now, not at
                    // the next snapshot.
                    _ = tx.closed() => return,
                    changed = snapshot_rx.changed() => match changed {
                        Ok(()) => Some(pb::watch_response::Update::Snapshot(
                            (**snapshot_rx.borrow_and_update()).clone(),
                        )),
                        Err(_) => return,
                    },
                    feed = feed_rx.recv() => match feed {
                        Ok(event) => Some(pb::watch_response::Update::Feed(event)),
                        // A slow watcher skips ahead and is told how much
                        // it missed; delivery never waits for it.
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            Some(pb::watch_response::Update::Lagged(n))
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn pause(
        &self,
        _request: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseResponse>, Status> {
        let relayed = self.command(Command::Pause).await?;
        Ok(Response::new(pb::PauseResponse { relayed }))
    }

    async fn resume(
        &self,
        _request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let relayed = self.command(Command::Resume).await?;
        Ok(Response::new(pb::ResumeResponse { relayed }))
    }

    async fn set_faults(
        &self,
        request: Request<pb::Faults>,
    ) -> Result<Response<pb::SetFaultsResponse>, Status> {
        let faults = request.into_inner();
        check_fraction("drop_events", faults.drop_events)?;
        check_fraction("drop_acks", faults.drop_acks)?;
        check_fraction("duplicate", faults.duplicate)?;
        if faults.delay_ms > 60_000 {
            return Err(Status::invalid_argument("delay_ms must be at most 60000"));
        }
        if !self.allow_fault_injection && faults != pb::Faults::default() {
            return Err(Status::failed_precondition(
                "fault injection is off: start core with --allow-fault-injection (demos and tests only)",
            ));
        }
        let relayed = self.command(|tx| Command::SetFaults(faults, tx)).await?;
        Ok(Response::new(pb::SetFaultsResponse { relayed }))
    }

    async fn requeue(
        &self,
        request: Request<pb::RequeueRequest>,
    ) -> Result<Response<pb::RequeueResponse>, Status> {
        let seq = request.into_inner().seq;
        let view = self
            .store
            .event(seq)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no event with seq {seq}")))?;
        let Some(dead) = view.dead else {
            return Err(Status::failed_precondition(format!(
                "event {seq} is not dead (it is {})",
                view.state.as_str()
            )));
        };
        if let Some(new_seq) = dead.requeued_as {
            return Ok(Response::new(pb::RequeueResponse { new_seq }));
        }
        // The idempotency key makes a repeated requeue return the same copy.
        let copy = NewEvent {
            kind: view.event.kind,
            key: view.event.key,
            payload: view.event.payload,
            idempotency_key: Some(format!("ackflow-requeue:{seq}")),
            // The copy stays in the publisher's trace.
            traceparent: view.event.traceparent,
        };
        let appended = self.ingest.publish(vec![copy]).await.map_err(|e| match e {
            IngestError::Full => Status::resource_exhausted(e.to_string()),
            // The copy's key names the dead seq and its fingerprint is the
            // dead event's own, so a repeated requeue replays; this would
            // take a stored copy whose content differs.
            IngestError::Conflict(_) => Status::failed_precondition(e.to_string()),
            other => Status::unavailable(other.to_string()),
        })?;
        let new_seq = appended.first().map(|a| a.seq).unwrap_or_default();
        let marked = self
            .store
            .mark_requeued(seq, new_seq)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // Requeues of one seq that raced past the check above all replay
        // the same copy; only the one that marked the entry counts it.
        if marked {
            let _ = self
                .hub
                .commands_tx
                .send(Command::Requeued { seq, new_seq })
                .await;
        }
        Ok(Response::new(pb::RequeueResponse { new_seq }))
    }
}
