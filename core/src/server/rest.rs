//! The REST listener's service: the routes (`crate::rest`) and `/metrics`
//! behind the publish token, over TLS when configured, with refused
//! publishes counted by their status.

use super::*;

/// Serves REST (and `/metrics`) on `listener`, behind the publish token,
/// over TLS when configured.
pub(super) fn serve_rest(
    config: &Config,
    listener: TcpListener,
    tls: Option<&TlsMaterial>,
    state: RestState,
    metrics: Arc<CoreMetrics>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let rest = app(state).merge(metrics_route(metrics.clone()));
    let rest = require_publish_token(rest, config.publish_token.clone()).layer(
        axum::middleware::from_fn_with_state(metrics, count_rejections),
    );
    tracker.spawn(crate::http::serve(
        listener,
        rest_tls(tls)?,
        rest,
        config.http_limits(),
        cancel.clone(),
    ));
    Ok(())
}

/// The REST listener's TLS acceptor, when TLS is configured.
pub(super) fn rest_tls(
    tls: Option<&TlsMaterial>,
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    tls.map(|material| material.rest_acceptor().context("configuring TLS for REST"))
        .transpose()
}

/// `GET /metrics`: the Prometheus text format.
fn metrics_route(metrics: Arc<CoreMetrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                metrics.render(),
            )
        }),
    )
}

/// Counts refused REST publishes by the status they got.
async fn count_rejections(
    axum::extract::State(metrics): axum::extract::State<Arc<CoreMetrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let publish = request.method() == axum::http::Method::POST
        && request.uri().path().starts_with("/v1/events");
    let response = next.run(request).await;
    let counted = response
        .extensions()
        .get::<crate::rest::CountedByWriter>()
        .is_some();
    if publish && !counted {
        let reason = match response.status().as_u16() {
            400 => Some("malformed"),
            413 => Some("too_large"),
            415 => Some("unsupported_media_type"),
            422 => Some("invalid"),
            // 503s are counted by the ingest writer, which knows why.
            _ => None,
        };
        if let Some(reason) = reason {
            metrics.reject(reason);
        }
    }
    response
}
