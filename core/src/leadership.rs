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
//!   database grants: its [`Tenure`]. Past it, the hub sends processors no
//!   event (a leader frozen through a takeover wakes up and delivers
//!   nothing), until a renewal succeeds again: a renewal that finds the
//!   epoch unchanged proves no other core took over (a database restart or
//!   a stall costs a pause, not the leadership). A renewal that finds another
//!   epoch deposes the leader: it stops and exits.
//! - **Fencing** (`store/lease.rs`): correctness does not rest on the
//!   clocks. Every write the leader makes checks its epoch in the write's
//!   own transaction, so once a successor exists nothing it does commits,
//!   and it never answers 2xx for it.
//! - A store with one core by construction (SQLite) has no lease: its core
//!   leads at once, under no epoch.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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

/// Until when this core may act as the leader by its own clock (see the
/// module documentation); without a lease, for ever. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tenure(Option<Arc<Mutex<Instant>>>);

impl Tenure {
    /// A tenure of `lease` from now, renewed by [`keep`].
    pub fn leased(lease: Duration) -> Self {
        Self(Some(Arc::new(Mutex::new(Instant::now() + lease))))
    }

    /// Whether this core still leads by its own clock.
    pub fn holds(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|until| Instant::now() < *until.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn extend_to(&self, until: Instant) {
        if let Some(current) = &self.0 {
            *current.lock().unwrap_or_else(|e| e.into_inner()) = until;
        }
    }
}

/// Renews the lease of `epoch` until `cancel`, extending `tenure` with each
/// renewal; cancels `deposed` (and returns) when another core took over.
/// Failed renewals are retried: the tenure runs out meanwhile, so the hub
/// stops sending, but the lease is not given up until a renewal shows that
/// another core has it.
pub fn keep(
    store: SharedStore,
    epoch: u64,
    lease: Duration,
    tenure: Tenure,
    deposed: CancellationToken,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        let Some(lease_store) = store.lease() else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(lease / 4) => {}
                _ = cancel.cancelled() => return,
            }
            let sent = Instant::now();
            let late = !tenure.holds();
            match lease_store.renew(epoch, lease).await {
                Ok(true) => {
                    if late {
                        tracing::warn!(
                            epoch,
                            "the lease ran out while this core was stalled or cut off; no other core took over, so it leads on"
                        );
                    }
                    tenure.extend_to(sent + lease);
                }
                Ok(false) => {
                    tracing::error!(epoch, "deposed: another core took over; stopping");
                    deposed.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, kind = e.kind(), epoch, late, "renewing the lease failed; retrying (no events go out while the lease is unconfirmed)");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenure_holds_until_its_lease_runs_out_unless_renewed() {
        assert!(Tenure::default().holds(), "no lease: for ever");
        let tenure = Tenure::leased(Duration::ZERO);
        assert!(!tenure.holds(), "a lease of zero ran out at once");
        let shared = tenure.clone();
        tenure.extend_to(Instant::now() + Duration::from_secs(60));
        assert!(shared.holds(), "a renewal extends every clone");
        tenure.extend_to(Instant::now());
        assert!(!shared.holds());
    }

    #[test]
    fn a_candidate_advertises_what_it_binds_unless_told_otherwise() {
        let mut config = Config::local(None, "data".into());
        let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let grpc: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let me = candidate(&config, http, grpc);
        assert_eq!(me.http_url, "http://127.0.0.1:8080");
        assert_eq!(me.grpc_url, format!("http://{}:50051", hostname()));
        assert_eq!(me.holder, format!("{}:8080", hostname()));
        config.core_id = Some("core-a".into());
        config.advertise_grpc = Some("https://a.example:443".into());
        let me = candidate(&config, http, grpc);
        assert_eq!(me.holder, "core-a");
        assert_eq!(me.grpc_url, "https://a.example:443");
    }
}
