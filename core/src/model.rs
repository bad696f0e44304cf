//! Domain types shared by the store, ingest, delivery and the APIs.

use std::sync::Arc;

pub use ackflow_proto::protocol::{DeliveryCursor, Seq};

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
    /// The publisher's W3C trace context, in the form
    /// [`crate::trace::traceparent`] returns.
    pub traceparent: Option<String>,
}

/// What an idempotency key stands for: a SHA-256 over the event's kind, key
/// and payload bytes (see [`NewEvent::fingerprint`]). A publish that reuses
/// a key replays only when its fingerprint matches the stored one.
pub type Fingerprint = [u8; 32];

impl NewEvent {
    /// The fingerprint of this event when it carries an idempotency key
    /// (`None` without one).
    ///
    /// Each field is length-prefixed (u64, big-endian) after a version tag,
    /// so no two different (kind, key, payload) encode alike; the key's
    /// absence and an empty key differ. The payload is hashed as the bytes
    /// that were sent: the same JSON written with other spacing or key
    /// order is another request.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        use sha2::{Digest, Sha256};
        self.idempotency_key.as_ref()?;
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        field(b"ackflow fingerprint v1");
        field(self.kind.as_bytes());
        match &self.key {
            None => field(b""),
            Some(key) => {
                field(b"k");
                field(key.as_bytes());
            }
        }
        field(&self.payload);
        Some(hash.finalize().into())
    }
}

/// The events of one group commit, as [`crate::store::Store::append`] takes
/// them: the publish requests the ingest writer gathered, in order. Each
/// request is committed all or nothing (a single publish, a REST batch, one
/// message of a `PublishStream`), so one request's conflict never refuses
/// another's events.
#[derive(Debug, Clone, Default)]
pub struct AppendBatch {
    ids: Vec<String>,
    events: Vec<NewEvent>,
    fingerprints: Vec<Option<Fingerprint>>,
    /// Number of events in each request, in order.
    requests: Vec<usize>,
}

impl AppendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch of one request, computing the fingerprints here (tests and
    /// tools; the ingest writer gets them computed by the publishers).
    pub fn one_request(ids: Vec<String>, events: Vec<NewEvent>) -> Self {
        let fingerprints = events.iter().map(NewEvent::fingerprint).collect();
        let mut batch = Self::new();
        batch.push(ids, events, fingerprints);
        batch
    }

    /// Adds one request, committed all or nothing. `fingerprints[i]` must be
    /// `events[i].fingerprint()`; `ids` has one id per event.
    pub fn push(
        &mut self,
        ids: Vec<String>,
        events: Vec<NewEvent>,
        fingerprints: Vec<Option<Fingerprint>>,
    ) {
        assert!(
            ids.len() == events.len() && fingerprints.len() == events.len(),
            "one id and one fingerprint per event"
        );
        self.requests.push(events.len());
        self.ids.extend(ids);
        self.events.extend(events);
        self.fingerprints.extend(fingerprints);
    }

    /// Every event, in order.
    pub fn events(&self) -> &[NewEvent] {
        &self.events
    }

    /// The id of each event.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The fingerprint of each event (`None` without an idempotency key).
    pub fn fingerprints(&self) -> &[Option<Fingerprint>] {
        &self.fingerprints
    }

    /// The number of events in each request, in order.
    pub fn requests(&self) -> &[usize] {
        &self.requests
    }

    /// Takes the events and their ids back (to keep what was stored
    /// without copying payloads).
    pub fn into_parts(self) -> (Vec<String>, Vec<NewEvent>) {
        (self.ids, self.events)
    }
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
    /// The publisher's W3C trace context, when it sent one.
    pub traceparent: Option<String>,
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

/// Why a publish request was refused at commit, storing nothing: one of
/// its idempotency keys already stands for a different request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Position of the event in its request (0 for a single publish).
    pub index: usize,
    /// The reused idempotency key.
    pub idempotency_key: String,
    /// What the key already stands for.
    pub original: Original,
}

/// The first use of a reused idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Original {
    /// A stored event (possibly stored by an earlier request of the same
    /// group commit).
    Stored { seq: Seq },
    /// An earlier event of the same request, at this position.
    Earlier { index: usize },
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = &self.idempotency_key;
        match self.original {
            Original::Stored { seq } => write!(
                f,
                "idempotency key {key:?} was already used by seq {seq} with a different kind, \
                 key or payload; nothing was stored (repeat the original request to get \
                 its seq, or use a new key)"
            ),
            Original::Earlier { index } => write!(
                f,
                "idempotency key {key:?} is also on event {index} of this request with a \
                 different kind, key or payload; nothing was stored"
            ),
        }
    }
}

/// What one publish request resolved to at commit: one outcome per event,
/// or the conflict that refused the whole request.
pub type RequestOutcome = Result<Vec<Appended>, Conflict>;

/// How processing ended, as stored in `results.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    Ok,
    Failed,
    /// Core gave up on an event of an at-most-once kind whose one copy went
    /// out but whose result never came (see `ackflow_proto::protocol::guarantee`). Written
    /// by core only: a processor's ack is ok or failed.
    Abandoned,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Ok => "ok",
            ResultStatus::Failed => "failed",
            ResultStatus::Abandoned => "abandoned",
        }
    }

    pub fn from_db(value: i16) -> Self {
        match value {
            1 => ResultStatus::Ok,
            3 => ResultStatus::Abandoned,
            _ => ResultStatus::Failed,
        }
    }

    pub fn to_db(self) -> i16 {
        match self {
            ResultStatus::Ok => 1,
            ResultStatus::Failed => 2,
            ResultStatus::Abandoned => 3,
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
    /// Resolved with a result: ok, failed, or abandoned (at-most-once kinds).
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
    Abandoned,
    Dead,
}

impl std::str::FromStr for StatusFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(StatusFilter::Pending),
            "ok" => Ok(StatusFilter::Ok),
            "failed" => Ok(StatusFilter::Failed),
            "abandoned" => Ok(StatusFilter::Abandoned),
            "dead" => Ok(StatusFilter::Dead),
            other => Err(format!(
                "unknown status {other:?}: expected pending, ok, failed, abandoned or dead"
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

impl EventView {
    /// The variable-size bytes this view carries (payload, kind, key,
    /// output, reason): what a read page is bounded by.
    pub fn bytes(&self) -> usize {
        let event = &self.event;
        event.payload.len()
            + event.kind.len()
            + event.key.as_ref().map_or(0, String::len)
            + self.result.as_ref().map_or(0, |r| r.output.len())
            + self.dead.as_ref().map_or(0, |d| d.reason.len())
    }
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
