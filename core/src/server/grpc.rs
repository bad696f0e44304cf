//! The gRPC listener: `Ingest`, `Delivery` and `Admin`, each behind its
//! token, with health and reflection; per-connection limits against
//! abusive peers; health turns NOT_SERVING while core drains.

use super::*;

/// gRPC: streams a peer may open and reset before core accepted them,
/// beyond which the connection gets GOAWAY (h2's default, set here so it is
/// documented and stays).
const GRPC_MAX_PENDING_RESETS: usize = 20;

/// gRPC: streams core may reset on one connection because of the peer's
/// errors before it sends GOAWAY (hyper's default).
const GRPC_MAX_LOCAL_RESETS: usize = 1024;

/// gRPC: largest header block (metadata) of one call.
const GRPC_MAX_HEADER_BYTES: u32 = 16 << 10;

/// What the gRPC services are built from.
pub(super) struct Services {
    pub(super) ingest: Ingest,
    pub(super) hub: Hub,
    pub(super) store: SharedStore,
}

/// Serves the gRPC services (`Ingest`, `Delivery`, `Admin`, each behind its
/// token, plus health and reflection) on `listener`, over TLS when
/// configured.
pub(super) async fn serve_grpc(
    config: &Config,
    listener: TcpListener,
    tls: Option<&TlsMaterial>,
    services: Services,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let Services { ingest, hub, store } = services;
    let max_message = config.max_request_bytes as usize + 64 * 1024;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::ingest_server::IngestServer<IngestService>>()
        .await;
    health_reporter
        .set_serving::<pb::delivery_server::DeliveryServer<DeliveryService>>()
        .await;
    health_reporter
        .set_serving::<pb::admin_server::AdminServer<AdminService>>()
        .await;
    // Reflection v1, and v1alpha for the tools that still ask for it.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ackflow_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the reflection service (v1alpha)")?;
    let reflection = reflection()
        .build_v1()
        .context("building the reflection service")?;
    let ingest_service = InterceptedService::new(
        pb::ingest_server::IngestServer::new(IngestService {
            ingest: ingest.clone(),
            limits: config.limits(),
            cancel: cancel.clone(),
        })
        .max_decoding_message_size(max_message),
        bearer(config.publish_token.clone()),
    );
    let delivery_service = pb::delivery_server::DeliveryServer::with_interceptor(
        DeliveryService {
            hub: hub.clone(),
            cancel: cancel.clone(),
        },
        bearer(config.processor_token.clone()),
    );
    let admin_service = pb::admin_server::AdminServer::with_interceptor(
        AdminService {
            hub: hub.clone(),
            store: store.clone(),
            ingest: ingest.clone(),
            cancel: cancel.clone(),
            watchers: Arc::new(tokio::sync::Semaphore::new(config.max_watchers as usize)),
            max_watchers: config.max_watchers,
            allow_fault_injection: config.allow_fault_injection,
        },
        bearer(config.admin_token.clone()),
    );
    // Nagle's algorithm with delayed acks would hold small stream messages
    // for up to 40 ms; every accepted connection gets TCP_NODELAY.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let grpc_cancel = cancel.clone();
    // Per connection: at most --grpc-max-streams calls at once (a client
    // opening more waits); a peer that keeps opening and resetting streams
    // (the HTTP/2 "rapid reset" flood) or makes core reset many of its
    // streams is sent GOAWAY; a peer that stops answering pings is dropped.
    let mut grpc_server = tonic::transport::Server::builder()
        .max_concurrent_streams(config.grpc_max_streams)
        .http2_max_pending_accept_reset_streams(Some(GRPC_MAX_PENDING_RESETS))
        .http2_max_local_error_reset_streams(Some(GRPC_MAX_LOCAL_RESETS))
        .http2_max_header_list_size(GRPC_MAX_HEADER_BYTES)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)));
    if let Some(material) = tls {
        grpc_server = grpc_server
            .tls_config(material.grpc())
            .context("configuring TLS for gRPC")?;
    }
    tracker.spawn(async move {
        let served = grpc_server
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(ingest_service)
            .add_service(delivery_service)
            .add_service(admin_service)
            .serve_with_incoming_shutdown(incoming, async move {
                grpc_cancel.cancelled().await;
                // Every name a health check may ask for, the server as a
                // whole ("") included, says NOT_SERVING while core drains;
                // then the names are dropped, which ends every open
                // Health.Watch stream after that last answer (a load
                // balancer's watch would otherwise hold the graceful
                // shutdown until --shutdown-timeout-s).
                let mut health_reporter = health_reporter;
                let names = [
                    "",
                    <pb::ingest_server::IngestServer<IngestService> as tonic::server::NamedService>::NAME,
                    <pb::delivery_server::DeliveryServer<DeliveryService> as tonic::server::NamedService>::NAME,
                    <pb::admin_server::AdminServer<AdminService> as tonic::server::NamedService>::NAME,
                ];
                for name in names {
                    health_reporter
                        .set_service_status(name, tonic_health::ServingStatus::NotServing)
                        .await;
                }
                for name in names {
                    health_reporter.clear_service_status(name).await;
                }
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok(())
}
