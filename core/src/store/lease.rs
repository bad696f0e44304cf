//! Leadership among the cores that share one store: the store's side.
//!
//! A store that several cores can open (PostgreSQL) implements [`Lease`]: a
//! lease row with an epoch, in the database's clock. Once [`Lease::try_lead`]
//! makes this core the leader, the store *fences* every write with that
//! epoch, in the write's own transaction: after a successor has taken over,
//! nothing this core writes commits, and the write fails with
//! [`StoreError::kind`] `deposed`. A store with one core by construction
//! (SQLite, whose file lock refuses a second core) has no lease: its core
//! leads.
//!
//! The policy (when to try, how often to renew, what a standby answers)
//! lives in `crate::leadership`.

use std::time::Duration;

use super::StoreError;

/// Who a core is, and where clients reach it, as a leader advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Stable across restarts of the same core (`--core-id`): a core that
    /// comes back under the same id takes over its own lease at once.
    pub holder: String,
    /// Where clients publish (REST).
    pub http_url: String,
    /// Where processors, services and the monitor connect (gRPC).
    pub grpc_url: String,
}

/// The outcome of one attempt to lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// This core leads under `epoch`; every write is fenced with it.
    Leader { epoch: u64 },
    /// Another core's lease runs (`leader.holder` is empty when no core
    /// ever led, or its lease lapsed a moment ago and the row is being
    /// taken over).
    Standby { leader: Candidate, epoch: u64 },
}

/// Leadership through the store (see the module documentation).
#[async_trait::async_trait]
pub trait Lease: Send + Sync {
    /// Takes the lease for `lease` if it lapsed (or `me.holder` holds it),
    /// with a new epoch, and fences this store's writes with that epoch.
    /// Waits at most about a second for the old leader's transactions in
    /// flight; if they still run, answers `Standby`.
    async fn try_lead(&self, me: &Candidate, lease: Duration) -> Result<Term, StoreError>;

    /// Extends the lease of `epoch` by `lease` from now (database time).
    /// `false`: another core took over.
    async fn renew(&self, epoch: u64, lease: Duration) -> Result<bool, StoreError>;

    /// Ends the lease of `epoch` at once (on a graceful shutdown), so a
    /// standby takes over without waiting for it to lapse.
    async fn release(&self, epoch: u64) -> Result<(), StoreError>;

    /// Negative control only (core's hidden `--unsafe-no-fence`): writes
    /// are no longer fenced, so a deposed leader's commits land, as they
    /// would without the epoch check. Exists so the tests can prove they
    /// notice.
    fn unsafe_unfence(&self);
}
