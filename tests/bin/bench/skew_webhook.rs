//! The `skew` section's webhook endpoint: `POST /hook` on 127.0.0.1,
//! answering each event as its payload asks (see [`hook`]), so that which
//! events misbehave is decided by the seeded workload, not by the endpoint.
//! It counts calls per event, for "on the first call only".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The run's webhook endpoint: calls seen per event, to answer "on the
/// first call only".
struct Endpoint {
    calls_per_event: Mutex<HashMap<String, u64>>,
    calls: Arc<AtomicU64>,
}

/// Serves `POST /hook` on 127.0.0.1 until `cancel`; returns its address
/// and the count of calls it received.
pub(super) async fn serve(
    cancel: CancellationToken,
) -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let calls = Arc::new(AtomicU64::new(0));
    let endpoint = Arc::new(Endpoint {
        calls_per_event: Mutex::new(HashMap::new()),
        calls: calls.clone(),
    });
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(endpoint);
    let addr = ackflow_tests::serve_router(app, cancel).await?;
    Ok((addr, calls))
}

/// Answers as the payload asks: `{"ms":3}` 200 after 3 ms; `{"slow_ms":50}`
/// 200 after 50 ms; `{"status":503,"retry_after":0}` that status (and
/// `Retry-After`); `{"hang_ms":1200}` 200 after 1.2 s, past the processor's
/// timeout. With `"times":1` a status or hang applies to the event's first
/// call only (calls counted by `idempotency-key`, else `ackflow-seq`), and
/// later calls get the plain 200 after `ms`.
async fn hook(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap, body: String) -> Response {
    endpoint.calls.fetch_add(1, Ordering::Relaxed);
    let Ok(ask) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a skew payload").into_response();
    };
    let id = ["idempotency-key", "ackflow-seq"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let call = {
        let mut calls = endpoint
            .calls_per_event
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = calls.entry(id).or_default();
        *n += 1;
        *n
    };
    let field = |name: &str| ask.get(name).and_then(Value::as_u64);
    let misbehave = field("times").is_none_or(|times| call <= times);
    if misbehave {
        if let Some(ms) = field("hang_ms") {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return (StatusCode::OK, "too late").into_response();
        }
        if let Some(status) = field("status") {
            let Some(status) = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
            else {
                return (StatusCode::BAD_REQUEST, "not a status").into_response();
            };
            return match field("retry_after") {
                Some(after) => {
                    (status, [("retry-after", after.to_string())], "as asked").into_response()
                }
                None => (status, "as asked").into_response(),
            };
        }
    }
    let ms = field("slow_ms").or(field("ms")).unwrap_or(1);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (StatusCode::OK, "ok").into_response()
}
