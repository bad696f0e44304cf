//! The chaos run's webhook endpoint: the processor posts `hook` events to
//! it (`--webhook hook=URL`), and it fails on purpose. A seeded share of
//! calls is answered `503` (with `Retry-After: 0` on every other one), a
//! share hangs past the processor's `--webhook-timeout-ms`, the rest get
//! `200` with the payload's length. Every failed call must end as a retry
//! later, and every `hook` event as exactly one result, like any other.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio_util::sync::CancellationToken;

/// The processor's `--webhook-timeout-ms` in chaos runs.
pub const TIMEOUT_MS: u64 = 300;

/// How long a hanging call hangs: well past the timeout.
const HANG: Duration = Duration::from_millis(5 * TIMEOUT_MS);

/// What the endpoint answered, for the run's report.
#[derive(Debug, Default)]
pub struct Counts {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub hangs: AtomicU64,
}

struct Endpoint {
    rng: Mutex<fastrand::Rng>,
    errors: f64,
    hangs: f64,
    counts: Arc<Counts>,
}

/// Serves until `cancel`; returns its address and its counts.
pub async fn start(
    seed: u64,
    errors: f64,
    hangs: f64,
    cancel: CancellationToken,
) -> anyhow::Result<(SocketAddr, Arc<Counts>)> {
    let counts = Arc::new(Counts::default());
    let endpoint = Arc::new(Endpoint {
        rng: Mutex::new(fastrand::Rng::with_seed(seed ^ 0x686f_6f6b)),
        errors,
        hangs,
        counts: counts.clone(),
    });
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(endpoint);
    let addr = crate::serve_router(app, cancel).await?;
    Ok((addr, counts))
}

async fn hook(State(endpoint): State<Arc<Endpoint>>, body: String) -> Response {
    let draw = endpoint.rng.lock().unwrap().f64();
    if draw < endpoint.errors {
        let n = endpoint.counts.errors.fetch_add(1, Ordering::Relaxed);
        if n % 2 == 0 {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "0")],
                "busy",
            )
                .into_response();
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    if draw < endpoint.errors + endpoint.hangs {
        endpoint.counts.hangs.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(HANG).await;
        return (StatusCode::OK, "too late").into_response();
    }
    endpoint.counts.ok.fetch_add(1, Ordering::Relaxed);
    format!("{} bytes", body.len()).into_response()
}
