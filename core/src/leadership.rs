//! Which core leads: the policy. Cores sharing one PostgreSQL database elect
//! one leader through the store's lease (`store/lease.rs`); the others stand
//! by, answer clients with the leader's address (`server/standby.rs`), and
//! take over when the lease lapses.
//!
//! - **Electing** ([`elect`]): try to take the lease every quarter lease;
//!   a lease lapses after `--lease-ms` without renewal, measured by the
//!   database's clock.
//! - **Keeping** ([`keep`]): renew every quarter lease. The leader counts
//!   its lease from the moment it *sent* the last renewal that succeeded, by
//!   its own monotonic clock, so it believes it leads for no longer than the
//!   database grants. When the lease is gone (another core took over, or no
//!   renewal got through before it ran out), the leader is deposed: it stops
//!   and exits. Correctness does not rest on that: every write it makes is
//!   fenced by its epoch in the write's own transaction, so once a successor
//!   exists nothing it does commits, and it never answers 2xx for it.
//! - A store with one core by construction (SQLite) has no lease: its core
//!   leads at once, under no epoch.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::store::SharedStore;
use crate::store::lease::{Candidate, Term};

/// The leader as a standby knows it (`None`: no leader known yet).
pub type Known = watch::Sender<Option<Candidate>>;

/// Who this core is among the cores sharing the store: `--core-id` and
/// the advertised URLs, from the addresses actually bound.
pub fn candidate(config: &Config, http: SocketAddr, grpc: SocketAddr) -> Candidate {
    let scheme = if config.tls() { "https" } else { "http" };
    let host = hostname();
    let url = |addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            format!("{scheme}://{host}:{}", addr.port())
        } else {
            format!("{scheme}://{addr}")
        }
    };
    Candidate {
        holder: config
            .core_id
            .clone()
            .unwrap_or_else(|| format!("{host}:{}", http.port())),
        http_url: config.advertise_http.clone().unwrap_or_else(|| url(http)),
        grpc_url: config.advertise_grpc.clone().unwrap_or_else(|| url(grpc)),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Waits until this core leads and returns its epoch (`None`: the store
/// has no lease, so this core leads without one). Meanwhile `known` says
/// who leads, for the standby's answers. Store errors are logged and
/// retried: a standby outlives a database that is down.
pub async fn elect(
    store: &SharedStore,
    me: &Candidate,
    lease: Duration,
    known: &Known,
) -> Option<u64> {
    let lease_store = store.lease()?;
    let mut announced: Option<(u64, String)> = None;
    loop {
        match lease_store.try_lead(me, lease).await {
            Ok(Term::Leader { epoch }) => {
                tracing::info!(epoch, holder = %me.holder, "this core leads");
                return Some(epoch);
            }
            Ok(Term::Standby { leader, epoch }) => {
                let now = (epoch, leader.holder.clone());
                if announced.as_ref() != Some(&now) {
                    tracing::info!(
                        leader = %leader.holder,
                        leader_http = %leader.http_url,
                        leader_grpc = %leader.grpc_url,
                        epoch,
                        "standby: another core leads; taking over when its lease lapses"
                    );
                    announced = Some(now);
                }
                known.send_replace((!leader.holder.is_empty()).then_some(leader));
            }
            Err(e) => {
                tracing::warn!(error = %e, kind = e.kind(), "standby: cannot read the lease")
            }
        }
        tokio::time::sleep(lease / 4).await;
    }
}

/// Renews the lease of `epoch` until `cancel`; cancels `deposed` (and
/// returns) when the lease is lost.
pub fn keep(
    store: SharedStore,
    epoch: u64,
    lease: Duration,
    deposed: CancellationToken,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        let Some(lease_store) = store.lease() else {
            return;
        };
        let mut valid_until = Instant::now() + lease;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(lease / 4) => {}
                _ = cancel.cancelled() => return,
            }
            // Woken late (the process was frozen, or starved): the lease
            // may be another core's by now; step down before anything else.
            let sent = Instant::now();
            let lost = if sent >= valid_until {
                Some("the lease ran out before it could be renewed".to_string())
            } else {
                None
            };
            let lost = if lost.is_some() { lost } else { match lease_store.renew(epoch, lease).await {
                Ok(true) => {
                    valid_until = sent + lease;
                    None
                }
                Ok(false) => Some("another core took over".to_string()),
                Err(e) if Instant::now() >= valid_until => Some(format!(
                    "no renewal got through within the lease ({} ms): {e}",
                    lease.as_millis()
                )),
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.kind(), epoch, "renewing the lease failed; retrying");
                    None
                }
            } };
            if let Some(why) = lost.or_else(|| {
                (Instant::now() >= valid_until).then(|| "the lease ran out".to_string())
            }) {
                tracing::error!(epoch, %why, "deposed: this core no longer leads; stopping");
                deposed.cancel();
                return;
            }
        }
    });
}
