//! The REST API (axum). `app(state)` builds the router, so tests call it
//! with `oneshot` and no socket.
//!
//! Errors are `application/problem+json` (RFC 9457): 400 malformed JSON
//! (or an `Idempotency-Key` header on the batch route), 401 without the
//! publish token when one is set (`auth.rs`), 404 unknown event,
//! 413 over the size limit, 415 wrong content type, 422 an invalid field or
//! an idempotency key reused for a different request, 503 store unavailable
//! or queue full. A request that fails stores nothing.
//!
//! `publish.rs` and `read.rs` hold the handlers, `problem.rs` the errors.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::ingest::Ingest;
use crate::retention::StorageStatus;
use crate::store::SharedStore;
use crate::validate::Limits;

pub(crate) mod problem;
mod publish;
mod read;

pub use self::problem::{CountedByWriter, Problem};
use self::publish::{publish, publish_batch};
pub use self::read::MAX_PAGE_BYTES;
use self::read::{get_event, list};

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
