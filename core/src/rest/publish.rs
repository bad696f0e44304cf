//! `POST /v1/events` and `POST /v1/events/batch`: the body read within its
//! size and time limits, validated, handed to the ingest writer; the answer
//! only once the commit is durable.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Problem, RestState};
use crate::model::{Appended, NewEvent, Seq};
use crate::trace;
use crate::validate::{self, Invalid, Limits};

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
    /// Overrides the request's `traceparent` header for this event.
    #[serde(default)]
    traceparent: Option<String>,
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

fn to_event(
    body: EventBody,
    limits: &Limits,
    traceparent: Option<&str>,
) -> Result<NewEvent, Invalid> {
    validate::check_depth(body.payload.get())?;
    let traceparent = match body.traceparent {
        Some(own) => Some(trace::traceparent(&own)?),
        None => traceparent.map(str::to_owned),
    };
    let event = NewEvent {
        kind: body.kind,
        key: body.key,
        payload: body.payload.get().as_bytes().to_vec(),
        idempotency_key: body.idempotency_key,
        traceparent,
    };
    validate::check(&event, limits)?;
    Ok(event)
}

pub(super) async fn publish(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let traceparent = trace::from_header(headers.get(trace::TRACEPARENT).map(|v| v.as_bytes()))?;
    let parsed: EventBody = read_json(&state, &headers, body).await?;
    let mut event = to_event(parsed, &state.limits, traceparent.as_deref())?;
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

pub(super) async fn publish_batch(
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
    let traceparent = trace::from_header(headers.get(trace::TRACEPARENT).map(|v| v.as_bytes()))?;
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
        let event = to_event(body, &state.limits, traceparent.as_deref()).map_err(|e| {
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
