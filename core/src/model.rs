//! Domain types shared by the store, ingest, delivery and the APIs.

use std::sync::Arc;

/// Position of an event in the log. Assigned by the ingest writer in commit
/// order, starting at 1, with no gaps.
pub type Seq = u64;

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Current wall-clock time in microseconds since the Unix epoch.
pub fn now_us() -> Micros {
    chrono::Utc::now().timestamp_micros()
}

/// An event accepted by core but not yet committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: String,
    pub key: Option<String>,
    /// UTF-8 JSON text.
    pub payload: Vec<u8>,
    pub idempotency_key: Option<String>,
}

/// An event as committed to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: Seq,
    pub id: String,
    pub kind: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub published_at_us: Micros,
}

/// Events are shared between the tail, the backlog reader and the sender
/// without copying their payloads.
pub type SharedEvent = Arc<StoredEvent>;

/// What a publish resolved to once its batch committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: Seq,
    /// The event's id (the original one for a replay).
    pub id: String,
    /// True when the idempotency key matched an event stored earlier; nothing
    /// new was stored.
    pub replayed: bool,
}

/// How processing ended, as stored in `results.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    Ok,
    Failed,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Ok => "ok",
            ResultStatus::Failed => "failed",
        }
    }

    pub fn from_db(value: i16) -> Self {
        if value == 1 {
            ResultStatus::Ok
        } else {
            ResultStatus::Failed
        }
    }

    pub fn to_db(self) -> i16 {
        match self {
            ResultStatus::Ok => 1,
            ResultStatus::Failed => 2,
        }
    }
}

/// One result to store: the acknowledgement of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub seq: Seq,
    pub status: ResultStatus,
    pub output: String,
    /// Delivery attempt whose ack carried this result.
    pub attempt: u32,
    pub processing_us: u64,
    pub stored_at_us: Micros,
}

/// An event parked because it could not be delivered or processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRow {
    pub seq: Seq,
    pub reason: String,
    pub attempts: u32,
    pub parked_at_us: Micros,
}

/// Delivery state of one event as reported by the REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Committed, no result yet.
    Pending,
    /// Acknowledged with a result (ok or failed).
    Done(ResultStatus),
    /// Parked as dead.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Done(status) => status.as_str(),
            DeliveryState::Dead => "dead",
        }
    }
}

/// Filter of `GET /v1/events?status=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Pending,
    Ok,
    Failed,
    Dead,
}

impl std::str::FromStr for StatusFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(StatusFilter::Pending),
            "ok" => Ok(StatusFilter::Ok),
            "failed" => Ok(StatusFilter::Failed),
            "dead" => Ok(StatusFilter::Dead),
            other => Err(format!(
                "unknown status {other:?}: expected pending, ok, failed or dead"
            )),
        }
    }
}

/// An event with everything known about its delivery, for the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    pub event: StoredEvent,
    pub state: DeliveryState,
    pub result: Option<ResultRow>,
    pub dead: Option<DeadView>,
}

/// A dead (parked) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadView {
    pub seq: Seq,
    pub kind: String,
    pub reason: String,
    pub attempts: u32,
    pub parked_at_us: Micros,
    /// Seq of the copy published by a requeue, once requeued.
    pub requeued_as: Option<Seq>,
}

/// Delivery state loaded at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryCursor {
    /// Every seq below it is resolved (has a result or is dead).
    pub acked_floor: Seq,
    /// Resolved seqs at or above the floor (selective acks stored before a
    /// restart), in increasing order.
    pub resolved_above: Vec<Seq>,
}
