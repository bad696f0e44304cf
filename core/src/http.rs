//! The REST listener: an accept loop that serves the axum router over
//! HTTP/1.1 with hyper, in clear text or TLS, within two limits.
//!
//! - **Connections** (`--http-max-connections`): each open connection
//!   holds a permit. One more is answered `503` with `Retry-After` (in
//!   clear text; over TLS it is closed) and closed at once, so a flood of
//!   connections costs core a bounded number of tasks and descriptors.
//! - **Header read timeout** (`--http-header-timeout-s`): a client must
//!   send a request's whole header within it (hyper's
//!   `header_read_timeout`), also on an idle keep-alive connection, or the
//!   connection is closed. A connection that sends nothing, or half a
//!   request, so holds its permit for that long at most. The body has its
//!   own limit, `--http-body-timeout-s`, applied where it is read
//!   (`rest::read_json`).
//!
//! On cancellation the loop stops accepting, lets every open connection
//! finish its request, and returns, like `axum::serve`.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tls::HANDSHAKE_TIMEOUT;

/// What one REST client may hold.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest a client may take to send a request's header.
    pub header_timeout: Duration,
}

/// The answer to a connection over the cap (clear text only).
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/problem+json\r\nRetry-After: 1\r\nConnection: close\r\n\
Content-Length: 141\r\n\r\n\
{\"type\":\"about:blank\",\"title\":\"Too many connections\",\"status\":503,\"detail\":\"too many open connections (--http-max-connections); retry later\"}";

/// Serves `app` on `listener` (over TLS with `tls`) until `cancel`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    limits: HttpLimits,
    cancel: CancellationToken,
) {
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = cancel.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: back off a little,
                // as axum::serve does.
                tracing::warn!(error = %e, "accepting a REST connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Into the socket's send buffer, without waiting: a client
            // that reads nothing cannot hold the accept loop.
            if tls.is_none() {
                let _ = tcp.try_write(OVER_CAPACITY);
            }
            tracing::debug!(
                max = limits.max_connections,
                "REST connection refused: --http-max-connections reached"
            );
            continue;
        };
        let tls = tls.clone();
        let app = app.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(tcp, app, limits, cancel).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, app, limits, cancel).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Serves one connection until the client closes it, a limit ends it, or
/// `cancel` (then after the request in progress).
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    limits: HttpLimits,
    cancel: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "REST connection ended with an error");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_over_capacity_answer_is_well_formed() {
        let text = std::str::from_utf8(super::OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 503);
    }
}
