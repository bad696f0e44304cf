//! PostgreSQL's [`Lease`]: the `leader` row, `ackflow_fence` and the
//! advisory lock they share, of `migrations/postgres/0006_leader.sql`; and
//! the fence every write passes, first thing in a transaction
//! ([`Fence::check`]) or inside a one-statement write
//! ([`PgStore::fenced`], [`PgStore::write_one`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, Transaction};

use super::PgStore;
use crate::store::StoreError;
use crate::store::lease::{Candidate, Lease, Term};

/// The epoch every write of this store is fenced with (0: none yet, so
/// writes are not fenced: a core that never led writes nothing that
/// matters).
#[derive(Debug, Default)]
pub(super) struct Fence {
    epoch: AtomicU64,
    /// Negative control: never check (see [`Lease::unsafe_unfence`]).
    disarmed: AtomicBool,
    /// The lease, in milliseconds: how long a fenced transaction may sit
    /// idle before PostgreSQL ends it.
    idle_ms: AtomicU32,
}

/// The fence inside a write statement of its own (one round trip, its own
/// transaction): `WITH {FENCE}, …` and, in each part that writes,
/// `CROSS JOIN` [`FENCED`]; the statement binds [`Fence::args`] as `$1` and
/// `$2`. The CTE is computed once; with epoch 0 (not leading) it calls
/// nothing. If the fence raises, the whole statement, and so its
/// transaction, fails; if it passes, it holds the fence's shared lock until
/// the statement's transaction ends, as [`Fence::check`] does.
pub(super) const FENCE: &str = "fence AS MATERIALIZED (SELECT ackflow_fence($1, $2) WHERE $1 > 0)";

/// What a writing part of a [`FENCE`]d statement joins, so that the fence
/// is computed before any of its rows: always one row.
pub(super) const FENCED: &str = "(SELECT count(*) FROM fence) AS fenced";

impl Fence {
    /// Checks the epoch inside `tx`, first thing (see `ackflow_fence`).
    /// (`named`: see [`PgStore::named`].)
    pub(super) async fn check(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        named: bool,
    ) -> Result<(), StoreError> {
        let (epoch, idle_ms) = self.args();
        if epoch == 0 {
            return Ok(());
        }
        sqlx::query("SELECT ackflow_fence($1, $2)")
            .bind(epoch)
            .bind(idle_ms)
            .persistent(named)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// `$1` and `$2` of a [`FENCE`]d statement: the epoch (0: unfenced,
    /// before this core leads or when disarmed) and the lease in ms.
    pub(super) fn args(&self) -> (i64, i32) {
        let epoch = self.epoch.load(Ordering::Acquire);
        if epoch == 0 || self.disarmed.load(Ordering::Relaxed) {
            return (0, 0);
        }
        (
            i64::try_from(epoch).unwrap_or(i64::MAX),
            i32::try_from(self.idle_ms.load(Ordering::Relaxed)).unwrap_or(i32::MAX),
        )
    }
}

impl PgStore {
    /// A write statement fenced inside itself (`lease::FENCE`), with the
    /// fence's arguments bound as `$1` and `$2`; the caller binds the rest.
    pub(super) fn fenced<'q>(&self, sql: &'q str) -> Query<'q, Postgres, PgArguments> {
        let (epoch, idle_ms) = self.fence.args();
        sqlx::query(sql)
            .bind(epoch)
            .bind(idle_ms)
            .persistent(self.named())
    }

    /// Runs a [`PgStore::fenced`] statement as a transaction of its own:
    /// one round trip, where BEGIN, the fence, the write and COMMIT took
    /// four. Behind a transaction-mode pooler it runs inside BEGIN/COMMIT
    /// (see `pooler.rs`).
    pub(super) async fn write_one(
        &self,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<u64, StoreError> {
        if self.pooled {
            let mut tx = self.pool.begin().await?;
            let done = query.execute(&mut *tx).await?;
            tx.commit().await?;
            return Ok(done.rows_affected());
        }
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    /// In `tx`: waits for every fenced transaction of the current epoch
    /// (the fence's lock, exclusively), then takes the lease if it lapsed
    /// or `me` holds it. Returns the new epoch.
    async fn take(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        me: &Candidate,
        lease: Duration,
    ) -> Result<Option<(i64,)>, sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock(4242424242)")
            .persistent(self.named())
            .execute(&mut **tx)
            .await?;
        sqlx::query_as(
            "UPDATE leader SET epoch = epoch + 1, holder = $1, http_url = $2, grpc_url = $3, \
                 expires_at = clock_timestamp() + make_interval(secs => $4 / 1000.0) \
             WHERE expires_at < clock_timestamp() OR holder = $1 \
             RETURNING epoch",
        )
        .bind(&me.holder)
        .bind(&me.http_url)
        .bind(&me.grpc_url)
        .bind(millis(lease) as f64)
        .persistent(self.named())
        .fetch_optional(&mut **tx)
        .await
    }
}

fn millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Lease for PgStore {
    async fn try_lead(&self, me: &Candidate, lease: Duration) -> Result<Term, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A deposed leader's transaction in flight holds the fence's lock;
        // wait for it a little, not for ever (a frozen one is ended by
        // its idle timeout, and the next attempt gets through).
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .persistent(self.named())
            .execute(&mut *tx)
            .await?;
        let taken = self.take(&mut tx, me, lease).await;
        let taken = match taken {
            Ok(taken) => taken,
            // 55P03 lock_not_available: the old leader is mid-commit.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => None,
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        if let Some((epoch,)) = taken {
            let epoch = u64::try_from(epoch)
                .map_err(|_| StoreError::Corrupt(format!("negative leader epoch {epoch}")))?;
            self.fence.idle_ms.store(
                u32::try_from(lease.as_millis()).unwrap_or(u32::MAX),
                Ordering::Relaxed,
            );
            self.fence.epoch.store(epoch, Ordering::Release);
            return Ok(Term::Leader { epoch });
        }
        let mut conn = self.read().await?;
        let (epoch, holder, http_url, grpc_url): (i64, String, String, String) =
            sqlx::query_as("SELECT epoch, holder, http_url, grpc_url FROM leader")
                .persistent(self.named())
                .fetch_one(&mut *conn)
                .await?;
        conn.done().await?;
        Ok(Term::Standby {
            leader: Candidate {
                holder,
                http_url,
                grpc_url,
            },
            epoch: u64::try_from(epoch).unwrap_or(0),
        })
    }

    async fn renew(&self, epoch: u64, lease: Duration) -> Result<bool, StoreError> {
        let mut conn = self.read().await?;
        let renewed = sqlx::query(
            "UPDATE leader SET expires_at = clock_timestamp() + make_interval(secs => $2 / 1000.0) \
             WHERE epoch = $1",
        )
        .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
        .bind(millis(lease) as f64)
        .persistent(self.named())
        .execute(&mut *conn)
        .await?;
        conn.done().await?;
        Ok(renewed.rows_affected() == 1)
    }

    fn unsafe_unfence(&self) {
        self.fence.disarmed.store(true, Ordering::Relaxed);
    }

    async fn release(&self, epoch: u64) -> Result<(), StoreError> {
        let mut conn = self.read().await?;
        sqlx::query("UPDATE leader SET expires_at = '-infinity' WHERE epoch = $1")
            .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
            .persistent(self.named())
            .execute(&mut *conn)
            .await?;
        conn.done().await?;
        Ok(())
    }
}
