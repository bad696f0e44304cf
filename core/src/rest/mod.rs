//! The REST API (axum). `app(state)` builds the router, so tests call it
//! with `oneshot` and no socket.
//!
//! Errors are `application/problem+json` (RFC 9457): 400 malformed JSON
//! (or an `Idempotency-Key` header on the batch route), 401 without the
//! publish token when one is set (`auth.rs`), 404 unknown event,
//! 413 over the size limit, 415 wrong content type, 422 an invalid field or
//! an idempotency key reused for a different request, 503 store unavailable
//! or queue full. A request that fails stores nothing.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ingest::{Ingest, IngestError};
use crate::model::{Appended, Conflict, EventView, NewEvent, Original, Seq, StatusFilter};
use crate::retention::StorageStatus;
use crate::store::SharedStore;
use crate::validate::{self, Invalid, Limits};

/// What the handlers share.
#[derive(Clone)]
pub struct RestState {
    pub ingest: Ingest,
    pub store: SharedStore,
    pub limits: Limits,
    /// Largest request body, in bytes.
    pub max_request_bytes: usize,
    /// Longest a client may take to send a body (`--http-body-timeout-s`).
    pub body_timeout: Duration,
    /// Warnings of the retention task (the disk running low), shown by
    /// `/readyz`.
    pub storage: StorageStatus,
}

/// Default of `--http-body-timeout-s`.
pub const DEFAULT_BODY_TIMEOUT_S: u64 = 30;

impl RestState {
    /// The state with the default body timeout and no storage warnings.
    pub fn new(
        ingest: Ingest,
        store: SharedStore,
        limits: Limits,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            ingest,
            store,
            limits,
            max_request_bytes,
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_S),
            storage: StorageStatus::default(),
        }
    }
}

/// The router.
pub fn app(state: RestState) -> Router {
    Router::new()
        .route("/v1/events", post(publish).get(list))
        .route("/v1/events/batch", post(publish_batch))
        .route("/v1/events/{seq}", get(get_event))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    retry_after: Option<u32>,
    /// Extension members (RFC 9457 §3.2), for what a client acts on: the
    /// reused key and the original seq of an idempotency conflict.
    extensions: serde_json::Map<String, serde_json::Value>,
    /// The ingest writer already counted this refusal in
    /// `ackflow_publish_rejected_total` (see [`CountedByWriter`]).
    counted: bool,
}

/// Marks a response whose refusal the ingest writer has counted already,
/// so the REST metrics layer does not count it again.
#[derive(Debug, Clone, Copy)]
pub struct CountedByWriter;

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            retry_after: None,
            extensions: serde_json::Map::new(),
            counted: false,
        }
    }

    /// A request without the publish token (see `auth::require_publish_token`,
    /// which adds the `WWW-Authenticate` challenge).
    pub(crate) fn unauthorized(detail: &'static str) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
    }

    /// An idempotency key reused for a different request: 422 with the key
    /// and what it stands for, as text and as members. `batch` prefixes the
    /// detail with the event's position (`events[i]`).
    fn conflict(conflict: &Conflict, batch: bool) -> Self {
        let key = &conflict.idempotency_key;
        let at = if batch {
            format!("events[{}].idempotency_key: ", conflict.index)
        } else {
            "idempotency_key: ".to_string()
        };
        let mut extensions = serde_json::Map::new();
        extensions.insert("idempotency_key".into(), key.as_str().into());
        if batch {
            extensions.insert("index".into(), conflict.index.into());
        }
        let detail = match conflict.original {
            Original::Stored { seq } => {
                extensions.insert("original_seq".into(), seq.into());
                format!(
                    "{at}{key:?} was already used by seq {seq} with a different kind, key or \
                     payload; nothing was stored (repeat the original request to get its seq, \
                     or use a new key)"
                )
            }
            Original::Earlier { index } => {
                extensions.insert("original_index".into(), index.into());
                format!(
                    "{at}{key:?} is also on events[{index}] with a different kind, key or \
                     payload; nothing was stored"
                )
            }
        };
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Idempotency key reused",
            detail,
        );
        p.extensions = extensions;
        p.counted = true;
        p
    }

    /// A refused publish, from the ingest writer: `batch` for the batch
    /// route, whose conflicts name the event's position.
    fn from_ingest(e: IngestError, batch: bool) -> Self {
        match e {
            IngestError::Conflict(conflict) => Problem::conflict(&conflict, batch),
            other => Problem::from(other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(members) = body.as_object_mut() {
            members.extend(self.extensions);
        }
        let mut response = (self.status, body.to_string()).into_response();
        if self.counted {
            response.extensions_mut().insert(CountedByWriter);
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<Invalid> for Problem {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::TooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
                e.to_string(),
            ),
            Invalid::Field { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid field",
                e.to_string(),
            ),
            // Too deep is refused like any nesting the parser refuses.
            Invalid::TooDeep { .. } => {
                Problem::new(StatusCode::BAD_REQUEST, "Malformed JSON", e.to_string())
            }
        }
    }
}

impl From<IngestError> for Problem {
    fn from(e: IngestError) -> Self {
        if let IngestError::Conflict(conflict) = &e {
            return Problem::conflict(conflict, false);
        }
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
            e.to_string(),
        );
        p.retry_after = Some(1);
        p
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        // The database's text goes to the log, never to the client.
        tracing::warn!(error = %e, kind = e.kind(), "store read failed");
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store unavailable",
            format!(
                "the store cannot answer right now ({}); retry later",
                e.kind()
            ),
        );
        p.retry_after = Some(1);
        p
    }
}

/// One event in a publish body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    kind: String,
    #[serde(default)]
    key: Option<String>,
    payload: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    events: Vec<EventBody>,
}

#[derive(Serialize)]
struct Accepted {
    id: String,
    seq: Seq,
    replayed: bool,
}

impl From<Appended> for Accepted {
    fn from(a: Appended) -> Self {
        Self {
            id: a.id,
            seq: a.seq,
            replayed: a.replayed,
        }
    }
}

/// Reads and parses a JSON body with the size, type and depth checks.
async fn read_json<T: serde::de::DeserializeOwned>(
    state: &RestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!("expected Content-Type: application/json, got {content_type:?}"),
        ));
    }
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            format!(
                "the body is over the limit of {} bytes",
                state.max_request_bytes
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_request_bytes) {
        return Err(too_large());
    }
    // A client that trickles its body holds a connection and up to
    // `max_request_bytes` of buffer: it gets `body_timeout` for all of it.
    let bytes: Bytes = match tokio::time::timeout(
        state.body_timeout,
        axum::body::to_bytes(body, state.max_request_bytes),
    )
    .await
    {
        Ok(read) => read.map_err(|_| too_large())?,
        Err(_) => {
            return Err(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout",
                format!(
                    "the body was not received within {} s (--http-body-timeout-s)",
                    state.body_timeout.as_secs()
                ),
            ));
        }
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "Malformed JSON",
            "the body is not valid UTF-8",
        )
    })?;
    // A cheap bound before the parser, so deep input never reaches its
    // recursion. The deepest valid body is a batch: an object, the events
    // array and the event object around a payload of the deepest allowed
    // nesting; the payload itself is checked exactly in `to_event`.
    if validate::json_depth(text) > validate::MAX_JSON_DEPTH + 3 {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Malformed JSON",
            format!("nested deeper than {} levels", validate::MAX_JSON_DEPTH),
        ));
    }
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid field",
            e.to_string(),
        ),
        _ => Problem::new(StatusCode::BAD_REQUEST, "Malformed JSON", e.to_string()),
    })
}

fn to_event(body: EventBody, limits: &Limits) -> Result<NewEvent, Invalid> {
    validate::check_depth(body.payload.get())?;
    let event = NewEvent {
        kind: body.kind,
        key: body.key,
        payload: body.payload.get().as_bytes().to_vec(),
        idempotency_key: body.idempotency_key,
    };
    validate::check(&event, limits)?;
    Ok(event)
}

async fn publish(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let parsed: EventBody = read_json(&state, &headers, body).await?;
    let mut event = to_event(parsed, &state.limits)?;
    if let Some(key) = headers.get("idempotency-key") {
        let key = key.to_str().map_err(|_| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid field",
                "Idempotency-Key header is not visible ASCII",
            )
        })?;
        event.idempotency_key = Some(key.to_string());
        validate::check(&event, &state.limits)?;
    }
    let mut appended = state
        .ingest
        .publish(vec![event])
        .await
        .map_err(|e| Problem::from_ingest(e, false))?;
    let first = appended.pop().ok_or_else(|| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "commit returned no outcome",
        )
    })?;
    Ok((StatusCode::ACCEPTED, axum::Json(Accepted::from(first))).into_response())
}

async fn publish_batch(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    // One key cannot stand for several events: refused rather than
    // ignored, so no client believes its batch is protected by it.
    if headers.contains_key("idempotency-key") {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key not allowed here",
            "the Idempotency-Key header names one event: on /v1/events/batch put an \
             idempotency_key on each event instead",
        ));
    }
    let parsed: BatchBody = read_json(&state, &headers, body).await?;
    if parsed.events.is_empty() || parsed.events.len() > state.limits.max_batch_events {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid field",
            format!(
                "events: must hold 1 to {} events, got {}",
                state.limits.max_batch_events,
                parsed.events.len()
            ),
        ));
    }
    let mut events = Vec::with_capacity(parsed.events.len());
    for (i, body) in parsed.events.into_iter().enumerate() {
        let event = to_event(body, &state.limits).map_err(|e| {
            let mut p = Problem::from(e);
            p.detail = format!("events[{i}].{}", p.detail);
            p
        })?;
        events.push(event);
    }
    let appended = state
        .ingest
        .publish(events)
        .await
        .map_err(|e| Problem::from_ingest(e, true))?;
    let accepted: Vec<Accepted> = appended.into_iter().map(Accepted::from).collect();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "events": accepted })),
    )
        .into_response())
}

/// Most bytes of events (payloads, keys, outputs, reasons) one
/// `GET /v1/events` page carries: the page stops before the next event
/// would pass it (it always holds at least one), and the client continues
/// from `next_after`. With the payloads written as stored, a page's
/// response is about this size whatever `limit` asks for.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// The fields of an event's JSON form but its payload.
#[derive(Serialize)]
struct ViewHead<'a> {
    seq: Seq,
    id: &'a str,
    kind: &'a str,
    key: Option<&'a str>,
    published_at: String,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<ResultJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead: Option<DeadJson<'a>>,
}

#[derive(Serialize)]
struct ResultJson<'a> {
    status: &'static str,
    output: &'a str,
    attempt: u32,
    processing_us: u64,
    stored_at: String,
}

#[derive(Serialize)]
struct DeadJson<'a> {
    reason: &'a str,
    attempts: u32,
    parked_at: String,
    requeued_as: Option<Seq>,
}

/// Writes the JSON form of an event with its delivery state. The payload
/// goes out as its stored bytes: every write path (REST, gRPC, requeue)
/// stores only a validated UTF-8 JSON text, so it is never parsed again
/// (a JSON tree of a 1 MiB array of numbers takes tens of MiB).
fn write_view(out: &mut Vec<u8>, view: &EventView) -> Result<(), Problem> {
    let event = &view.event;
    let head = ViewHead {
        seq: event.seq,
        id: &event.id,
        kind: &event.kind,
        key: event.key.as_deref(),
        published_at: rfc3339(event.published_at_us),
        state: view.state.as_str(),
        result: view.result.as_ref().map(|r| ResultJson {
            status: r.status.as_str(),
            output: &r.output,
            attempt: r.attempt,
            processing_us: r.processing_us,
            stored_at: rfc3339(r.stored_at_us),
        }),
        dead: view.dead.as_ref().map(|d| DeadJson {
            reason: &d.reason,
            attempts: d.attempts,
            parked_at: rfc3339(d.parked_at_us),
            requeued_as: d.requeued_as,
        }),
    };
    serde_json::to_writer(&mut *out, &head).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            format!("writing event {}: {e}", event.seq),
        )
    })?;
    // `{...}` becomes `{...,"payload":<stored bytes>}`.
    out.pop();
    out.extend_from_slice(b",\"payload\":");
    if event.payload.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        out.extend_from_slice(&event.payload);
    }
    out.push(b'}');
    Ok(())
}

/// A 200 response with a JSON body written by hand.
fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

async fn get_event(
    State(state): State<RestState>,
    Path(seq): Path<String>,
) -> Result<Response, Problem> {
    let seq: Seq = seq.parse().map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "Invalid seq",
            format!("{seq:?} is not a sequence number"),
        )
    })?;
    match state.store.event(seq).await? {
        Some(view) => {
            let mut body = Vec::with_capacity(view.bytes() + 512);
            write_view(&mut body, &view)?;
            Ok(json_response(body))
        }
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no event with seq {seq}"),
        )),
    }
}

async fn list(
    State(state): State<RestState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let bad = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "Invalid query", detail);
    let mut after: Seq = 0;
    let mut limit: u32 = 100;
    let mut status = None;
    for (name, value) in &params {
        match name.as_str() {
            "after" => {
                after = value
                    .parse()
                    .map_err(|_| bad(format!("after: {value:?} is not a sequence number")))?
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad(format!("limit: {value:?} is not between 1 and 1000")))?
            }
            "status" => {
                status = Some(
                    value
                        .parse::<StatusFilter>()
                        .map_err(|e| bad(format!("status: {e}")))?,
                )
            }
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
    }
    let views = state
        .store
        .list_page(after, limit, MAX_PAGE_BYTES, status)
        .await?;
    // `next_after` is the last seq of this page (null when it is empty):
    // a page cut by `MAX_PAGE_BYTES` holds fewer than `limit` events, and
    // the client continues from there until a page comes back empty.
    let next_after = views.last().map(|v| v.event.seq);
    let capacity = views.iter().map(|v| v.bytes() + 512).sum::<usize>() + 64;
    let mut body = Vec::with_capacity(capacity);
    body.extend_from_slice(b"{\"events\":[");
    for (i, view) in views.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write_view(&mut body, view)?;
    }
    body.extend_from_slice(b"],\"next_after\":");
    match next_after {
        Some(seq) => body.extend_from_slice(seq.to_string().as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    Ok(json_response(body))
}

/// Ready means the store answers *and* takes writes: a full disk still
/// answers reads, so the last write's outcome decides (see
/// [`crate::store::health`]).
async fn ready(State(state): State<RestState>) -> Response {
    if let Some(f) = state.ingest.store_health().failure() {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store not writable",
            // The error's text is in the log; the kind says enough here.
            format!(
                "store writes failing for {} s ({} in a row), kind {}",
                f.since.elapsed().as_secs(),
                f.failures,
                f.kind,
            ),
        );
        p.retry_after = Some(1);
        return p.into_response();
    }
    match state.store.ping().await {
        // Still ready, but say so before the disk is full.
        Ok(()) => match state.storage.warning() {
            Some(warning) => {
                (StatusCode::OK, format!("ready\nwarning: {warning}\n")).into_response()
            }
            None => (StatusCode::OK, "ready\n").into_response(),
        },
        Err(e) => Problem::from(e).into_response(),
    }
}
