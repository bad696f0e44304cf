//! What a standby core serves while another core leads (see
//! `leadership.rs`): on the REST port, `GET /healthz` 200 (the process is
//! fine), `GET /metrics` with `ackflow_leader 0`, and everything else
//! (`/readyz` and publishes included) 503 with `Retry-After` and the
//! leader's address; on the gRPC port, every call `UNAVAILABLE` with the
//! leader's gRPC URL in the message and in the `ackflow-leader` metadata. A load balancer's health check so routes to
//! the leader, and the processor and the monitor move on to the next core
//! they know.
//!
//! The listeners are the ones core serves on once it leads: the standby
//! serves a copy of each, and stops before core starts its own services
//! ([`lead`]).

use axum::response::IntoResponse;
use tokio::sync::watch;

use super::*;
use crate::rest::problem::Problem;
use crate::store::lease::Candidate;

/// All a standby reports: that it does not lead (the leader's metrics
/// have the same gauge at 1).
const STANDBY_METRICS: &str = "# HELP ackflow_leader 1 on the core that leads, 0 on a standby.\n\
# TYPE ackflow_leader gauge\nackflow_leader 0\n";

/// The standby's servers, until [`Standby::stop`].
pub(super) struct Standby {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Standby {
    /// Serves the standby answers on copies of both listeners.
    pub(super) fn serve(
        config: &Config,
        http: &TcpListener,
        grpc: &TcpListener,
        tls: Option<&TlsMaterial>,
        leader: watch::Receiver<Option<Candidate>>,
    ) -> anyhow::Result<Self> {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let rest_leader = leader.clone();
        let rest = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "standby\n" }))
            .route("/metrics", axum::routing::get(|| async { STANDBY_METRICS }))
            .fallback(move || {
                let leader = rest_leader.borrow().clone();
                async move { Problem::standby(leader.as_ref()).into_response() }
            });
        tracker.spawn(crate::http::serve(
            copy(http)?,
            super::rest::rest_tls(tls)?,
            rest,
            config.http_limits(),
            cancel.clone(),
        ));
        let grpc_routes = axum::Router::new().fallback(move || {
            let leader = leader.borrow().clone();
            async move { unavailable(leader.as_ref()).into_response() }
        });
        let mut server = tonic::transport::Server::builder()
            .max_concurrent_streams(config.grpc_max_streams)
            .http2_max_header_list_size(16 << 10);
        if let Some(material) = tls {
            server = server
                .tls_config(material.grpc())
                .context("configuring TLS for gRPC")?;
        }
        let incoming = TcpListenerStream::new(copy(grpc)?);
        let grpc_cancel = cancel.clone();
        tracker.spawn(async move {
            let served = server
                .add_routes(tonic::service::Routes::from(grpc_routes))
                .serve_with_incoming_shutdown(incoming, grpc_cancel.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "standby gRPC server failed");
            }
        });
        tracker.close();
        Ok(Self { cancel, tracker })
    }

    /// Stops accepting, lets the requests in progress finish, and returns
    /// once both copies of the listeners are closed.
    pub(super) async fn stop(self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Waits until this core leads (at once without a lease, as on SQLite),
/// serving the standby's answers on the listeners meanwhile; returns the
/// epoch it leads under.
pub(super) async fn lead(
    config: &Config,
    store: &SharedStore,
    http: &TcpListener,
    grpc: &TcpListener,
    tls: Option<&TlsMaterial>,
    lease: Duration,
) -> anyhow::Result<Option<u64>> {
    if store.lease().is_none() {
        return Ok(None);
    }
    let me = leadership::candidate(config, http.local_addr()?, grpc.local_addr()?);
    let (known, leader) = tokio::sync::watch::channel(None);
    let standby = Standby::serve(config, http, grpc, tls, leader)?;
    let epoch = leadership::elect(store, &me, lease, &known).await;
    standby.stop().await;
    Ok(epoch)
}

/// A second handle on the same listening socket.
fn copy(listener: &TcpListener) -> anyhow::Result<TcpListener> {
    use std::os::fd::AsFd;
    let std = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
    std.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std)?)
}

/// The gRPC answer of a standby.
fn unavailable(leader: Option<&Candidate>) -> axum::response::Response {
    let mut status = match leader {
        Some(l) => tonic::Status::unavailable(format!(
            "this core is a standby; the leader is {} at {}",
            l.holder, l.grpc_url
        )),
        None => tonic::Status::unavailable(
            "this core is a standby and knows no leader yet; retry shortly",
        ),
    };
    if let Some(value) = leader.and_then(|l| l.grpc_url.parse().ok()) {
        status
            .metadata_mut()
            .insert(ackflow_proto::client::leader::LEADER_METADATA, value);
    }
    status.into_http()
}
