//! `GET /v1/events/{seq}` and `GET /v1/events`: events with their results
//! or dead entries, written as stored (payloads never parsed), in pages
//! bounded in bytes.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{Problem, RestState};
use crate::model::{EventView, Seq, StatusFilter};

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
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
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
        traceparent: event.traceparent.as_deref(),
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

pub(super) async fn get_event(
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

pub(super) async fn list(
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
