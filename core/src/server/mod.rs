//! Starting and stopping core: store, ingest writer, delivery hub, retention,
//! REST and gRPC servers, all on one cancellation token and one task tracker.
//!
//! Shutdown is signal → cancel → wait: the servers stop accepting, the ingest
//! writer commits (or fails) every queued publish, the hub closes the
//! processor stream, the result writer stores every ack it has, and the
//! whole thing is bounded by `--shutdown-timeout-s`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ackflow_proto::v1 as pb;
use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;

use crate::admin::AdminService;
use crate::auth::{bearer, require_publish_token};
use crate::config::{Config, is_loopback};
use crate::delivery::hub::{self, Hub, HubParts};
use crate::delivery::service::DeliveryService;
use crate::fd_limit;
use crate::ingest::Ingest;
use crate::ingest::service::IngestService;
use crate::metrics::CoreMetrics;
#[cfg(feature = "sqlite")]
use crate::store::sqlite::owner::Owner;
/// Without SQLite there is no file to own.
#[cfg(not(feature = "sqlite"))]
type Owner = ();
use crate::rest::{RestState, app};
use crate::retention::{self, RetentionParts, StorageStatus};
use crate::store::{self, SharedStore};
use crate::tail::Tail;
use crate::tls::TlsMaterial;
use ackflow_proto::protocol::guarantee::Guarantees;

mod grpc;
mod rest;
mod standby;

use self::grpc::{Services, serve_grpc};
use self::rest::serve_rest;
use self::standby::lead;
use crate::leadership;

/// A started core.
pub struct Running {
    /// Where the REST API listens (the real port when configured with 0).
    pub http_addr: SocketAddr,
    /// Where the gRPC services listen.
    pub grpc_addr: SocketAddr,
    pub store: SharedStore,
    pub ingest: Ingest,
    pub hub: Hub,
    cancel: CancellationToken,
    tracker: TaskTracker,
    shutdown_timeout: Duration,
    /// SQLite: the lock that keeps a second core off the file.
    _owner: Option<Owner>,
    /// PostgreSQL: the epoch this core leads under (see `leadership.rs`).
    pub epoch: Option<u64>,
    /// Cancelled when this core loses its lease.
    deposed: CancellationToken,
}

impl Running {
    /// Resolves when this core is deposed: another core took over its lease,
    /// or it could not renew the lease in time. It must then stop: nothing
    /// it writes commits any more.
    pub async fn deposed(&self) {
        self.deposed.cancelled().await
    }

    /// Stops core gracefully and waits (bounded) for every task; a leader
    /// then ends its lease, so a standby takes over at once.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.shutdown_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_s = self.shutdown_timeout.as_secs(),
                "shutdown timed out; exiting anyway"
            );
        } else {
            tracing::info!("core stopped");
        }
        if let (Some(epoch), Some(lease)) = (self.epoch, self.store.lease())
            && !self.deposed.is_cancelled()
            && let Err(e) = lease.release(epoch).await
        {
            tracing::warn!(error = %e, epoch, "could not end the lease; a standby takes over when it lapses");
        }
    }
}

/// Starts core and returns once it listens: checks the configuration,
/// opens the store, starts the core tasks (ingest writer, delivery hub,
/// retention), then the REST and gRPC listeners.
pub async fn start(mut config: Config) -> anyhow::Result<Running> {
    let tls = check(&mut config)?;
    let owner = claim_sqlite(&config)?;
    let (store, database_url, risks) = open_store(&config).await.map_err(pooler_hint)?;
    // Bound before leading: a second core on the same ports fails here.
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", config.http_addr))?;
    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding --grpc-addr {}", config.grpc_addr))?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let lease = Duration::from_millis(config.lease_ms);
    let epoch = lead(
        &config,
        &store,
        &http_listener,
        &grpc_listener,
        tls.as_ref(),
        lease,
    )
    .await?;
    if config.unsafe_no_fence
        && let Some(lease) = store.lease()
    {
        tracing::warn!(
            "--unsafe-no-fence: this core never checks its epoch; after a takeover its writes WILL land"
        );
        lease.unsafe_unfence();
    }
    // Read after taking the lease: every commit of an earlier leader is in.
    let next_seq = store.next_seq().await.context("reading the highest seq")?;
    tracing::info!(
        backend = store.backend(),
        head = next_seq - 1,
        "store ready"
    );

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let deposed = CancellationToken::new();
    // (`--unsafe-no-fence` also never renews, so it is never deposed.)
    let tenure = match epoch.filter(|_| !config.unsafe_no_fence) {
        Some(epoch) => {
            let tenure = leadership::Tenure::leased(lease);
            leadership::keep(
                store.clone(),
                epoch,
                lease,
                tenure.clone(),
                deposed.clone(),
                cancel.clone(),
                &tracker,
            );
            tenure
        }
        None => leadership::Tenure::default(),
    };
    let tail = Arc::new(Tail::new(config.tail_events, config.tail_bytes));
    let metrics = Arc::new(CoreMetrics::new());
    metrics
        .leader_epoch
        .set(epoch.map_or(0, |e| i64::try_from(e).unwrap_or(i64::MAX)));
    let ingest = Ingest::start(
        store.clone(),
        tail.clone(),
        config.ingest(),
        next_seq,
        metrics.clone(),
        cancel.clone(),
        &tracker,
    );
    let hub = hub::start(
        HubParts {
            config: config.sender(),
            store: store.clone(),
            tail,
            ingest: ingest.clone(),
            cancel: cancel.clone(),
            unsafe_floor_on_send: config.unsafe_floor_on_send,
            metrics: metrics.clone(),
            ordering: config.ordering.to_pb(),
            window_bytes: config.window_bytes as usize,
            guarantees: Guarantees::at_most_once(config.at_most_once.iter().cloned()),
            tenure,
            processor_silence: Duration::from_millis(config.processor_silence_ms),
            processor_return_grace: Duration::from_millis(config.processor_return_grace_ms),
            partitions: config.partitions,
            unsafe_handoff_without_drain: config.unsafe_handoff_without_drain,
        },
        &tracker,
    )
    .await
    .context("loading the delivery cursor")?;
    if config.unsafe_floor_on_send {
        tracing::warn!(
            "--unsafe-floor-on-send: the acked floor ignores results; events WILL be lost"
        );
    }
    let storage = StorageStatus::default();
    if !risks.is_empty() {
        let why = format!("unsafe durability: {}", risks.join("; "));
        tracing::warn!("--allow-unsafe-durability: {why}");
        metrics.store_durable.set(0);
        storage.set_unsafe_durability(why);
    }
    retention::spawn(
        RetentionParts {
            store: store.clone(),
            retention: config.retention,
            metrics: metrics.clone(),
            disk_dir: retention::sqlite_dir(&database_url),
            status: storage.clone(),
            cancel: cancel.clone(),
        },
        &tracker,
    );

    let rest = RestState {
        body_timeout: Duration::from_secs(config.http_body_timeout_s),
        storage,
        ..RestState::new(
            ingest.clone(),
            store.clone(),
            config.limits(),
            config.max_request_bytes as usize,
        )
    };
    serve_rest(
        &config,
        http_listener,
        tls.as_ref(),
        rest,
        metrics,
        &cancel,
        &tracker,
    )?;
    let services = Services {
        ingest: ingest.clone(),
        hub: hub.clone(),
        store: store.clone(),
    };
    serve_grpc(
        &config,
        grpc_listener,
        tls.as_ref(),
        services,
        &cancel,
        &tracker,
    )
    .await?;
    tracing::info!(
        %http_addr,
        %grpc_addr,
        tls = tls.is_some(),
        publish_token = config.publish_token.is_some(),
        processor_token = config.processor_token.is_some(),
        admin_token = config.admin_token.is_some(),
        window = config.window,
        ordering = ?config.ordering,
        "core listening"
    );
    Ok(Running {
        http_addr,
        grpc_addr,
        store,
        ingest,
        hub,
        cancel,
        tracker,
        shutdown_timeout: Duration::from_secs(config.shutdown_timeout_s),
        _owner: owner,
        epoch,
        deposed,
    })
}

/// Reads the token files and checks the configuration (a bad certificate
/// fails here, before anything starts); warns about what is allowed but
/// unwise. Returns the TLS material, if any.
fn check(config: &mut Config) -> anyhow::Result<Option<TlsMaterial>> {
    config.load_token_files().map_err(anyhow::Error::msg)?;
    config.check().map_err(anyhow::Error::msg)?;
    check_fd_limit(config);
    let unguarded = config.unguarded();
    if !unguarded.is_empty() {
        // Only reachable with --insecure: check() refuses this otherwise.
        tracing::warn!(
            "--insecure: anyone who reaches these ports may use their services: {}",
            unguarded.join("; ")
        );
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(TlsMaterial::load(cert, key).context("loading --tls-cert / --tls-key")?)
        }
        _ => None,
    };
    if tls.is_none() && (!is_loopback(config.http_addr.ip()) || !is_loopback(config.grpc_addr.ip()))
    {
        tracing::warn!(
            "listening beyond loopback without TLS: tokens and events travel in clear text (set --tls-cert and --tls-key)"
        );
    }
    Ok(tls)
}

/// One core per SQLite file: takes its lock before anything opens it (see
/// `store/sqlite/owner.rs`); `None` for PostgreSQL and in-memory SQLite.
fn claim_sqlite(config: &Config) -> anyhow::Result<Option<Owner>> {
    let url = config.effective_database_url();
    if !url.starts_with("sqlite:") {
        return Ok(None);
    }
    #[cfg(feature = "sqlite")]
    {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .with_context(|| format!("{} is not a SQLite URL", redact(&url)))?;
        let db = options.get_filename();
        if db.as_os_str().is_empty() || db.to_string_lossy().contains(":memory:") {
            return Ok(None);
        }
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
        }
        let owner = Owner::claim(db).map_err(anyhow::Error::msg)?;
        Ok(Some(owner))
    }
    #[cfg(not(feature = "sqlite"))]
    Ok(None)
}

/// Opens the store (creating SQLite's data directory) and reads its
/// durability settings: a store that can lose what it acknowledges is
/// refused unless `--allow-unsafe-durability`. Returns the store, its URL
/// and the risks accepted.
async fn open_store(config: &Config) -> anyhow::Result<(SharedStore, String, Vec<String>)> {
    let database_url = config.effective_database_url();
    if config.database_url.as_deref().unwrap_or("").is_empty() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        tracing::info!(path = %config.data_dir.join("ackflow.db").display(), "using the embedded SQLite store (set DATABASE_URL for PostgreSQL)");
    }
    if config.unsafe_sqlx_transactions {
        tracing::warn!(
            "--unsafe-sqlx-transactions: a full disk WILL lose acknowledged events on SQLite"
        );
    }
    let store = store::open_with(&database_url, config.unsafe_sqlx_transactions)
        .await
        .with_context(|| format!("opening the store ({})", redact(&database_url)))?;
    // Acknowledged means durable: refuse settings that break that, unless
    // the operator says so explicitly.
    let risks = store
        .durability_risks()
        .await
        .context("reading the store's durability settings")?;
    if !risks.is_empty() && !config.allow_unsafe_durability {
        anyhow::bail!(
            "the store can lose acknowledged publishes: {}. Fix the setting, or start with \
             --allow-unsafe-durability to accept the risk",
            risks.join("; ")
        );
    }
    Ok((store, database_url, risks))
}

/// A named prepared statement met another client's on a shared server
/// connection: core is behind a transaction-mode pooler without knowing it.
fn pooler_hint(e: anyhow::Error) -> anyhow::Error {
    if format!("{e:#}").contains("prepared statement \"sqlx_s_") {
        return e.context(
            "the database URL leads through a transaction-mode pooler (PgBouncer, Supavisor): \
             add pooler=transaction to it (README.md, \"Behind a pooler\")",
        );
    }
    e
}

/// Runs core until `shutdown` resolves, then stops it gracefully.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    // A standby waits in `start` until it leads; a signal ends the wait.
    let running = tokio::select! {
        running = start(config) => running?,
        _ = &mut shutdown => {
            tracing::info!("shutting down (standby)");
            return Ok(());
        }
    };
    let deposed = tokio::select! {
        _ = &mut shutdown => false,
        _ = running.deposed() => true,
    };
    tracing::info!("shutting down");
    running.stop().await;
    if deposed {
        anyhow::bail!(
            "deposed: another core leads this database now; restart this one to stand by"
        );
    }
    Ok(())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Raises the open-file limit and warns when it is too low for
/// `--http-max-connections` (see [`fd_limit`]).
fn check_fd_limit(config: &Config) {
    let Some(limit) = fd_limit::raise() else {
        return;
    };
    if limit.now > limit.was {
        tracing::debug!(was = limit.was, now = limit.now, "open-file limit raised");
    }
    if let Some(warning) = fd_limit::warning(limit, u64::from(config.http_max_connections)) {
        tracing::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite:x.db"), "sqlite:x.db");
    }
}
