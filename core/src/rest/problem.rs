//! Errors as RFC 9457 problems (`application/problem+json`), and how
//! every error the handlers meet (invalid input, ingest, store) becomes one.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ingest::IngestError;
use crate::model::{Conflict, Original};
use crate::validate::Invalid;

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    pub(super) status: StatusCode,
    pub(super) title: &'static str,
    pub(super) detail: String,
    pub(super) retry_after: Option<u32>,
    /// Extension members (RFC 9457 §3.2), for what a client acts on: the
    /// reused key and the original seq of an idempotency conflict.
    pub(super) extensions: serde_json::Map<String, serde_json::Value>,
    /// The ingest writer already counted this refusal in
    /// `ackflow_publish_rejected_total` (see [`CountedByWriter`]).
    pub(super) counted: bool,
}

/// Marks a response whose refusal the ingest writer has counted already,
/// so the REST metrics layer does not count it again.
#[derive(Debug, Clone, Copy)]
pub struct CountedByWriter;

impl Problem {
    pub(super) fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
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
    pub(super) fn conflict(conflict: &Conflict, batch: bool) -> Self {
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

    /// Any request to a standby core: 503 with `Retry-After`, naming the
    /// leader (members `leader`, `leader_http`, `leader_grpc`) when one is
    /// known, so a client or load balancer goes there.
    pub(crate) fn standby(leader: Option<&crate::store::lease::Candidate>) -> Self {
        let detail = match leader {
            Some(l) => format!(
                "this core is a standby; the leader is {} at {} (gRPC {})",
                l.holder, l.http_url, l.grpc_url
            ),
            None => "this core is a standby and knows no leader yet; retry shortly".to_string(),
        };
        let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Standby", detail);
        if let Some(l) = leader {
            p.extensions
                .insert("leader".into(), l.holder.as_str().into());
            p.extensions
                .insert("leader_http".into(), l.http_url.as_str().into());
            p.extensions
                .insert("leader_grpc".into(), l.grpc_url.as_str().into());
        }
        p.retry_after = Some(1);
        p
    }

    /// A refused publish, from the ingest writer: `batch` for the batch
    /// route, whose conflicts name the event's position.
    pub(super) fn from_ingest(e: IngestError, batch: bool) -> Self {
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
