//! PostgreSQL store: batched writes with array binds (`UNNEST`), one round
//! trip per batch and statement, never per event. Every write is fenced
//! with the leader's epoch once this core leads (`lease.rs`): the hot
//! path's writes (append, resolve, sent marks) are one statement each, its
//! own transaction, with the fence inside it (`PgStore::fenced`,
//! `PgStore::write_one`); the others are transactions that start at
//! `PgStore::begin`, which fences them first.

use std::collections::HashMap;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

mod append;
mod lease;
pub(crate) mod pooler;

use super::idempotency;
use super::rows::{DeadRowDb, EventRow, VIEW_COLUMNS, VIEW_FROM, ViewRow, status_condition};
use super::{PageBudget, Store, StoreError, seq_from_db, seq_to_db, seqs};
use crate::model::{
    AppendBatch, DeadRow, DeadView, DeliveryCursor, EventView, RequestOutcome, ResultRow, Seq,
    StatusFilter, StoredEvent,
};
use append::{bind_events, insert_events_sql};
use lease::{FENCE, FENCED};

/// The production store.
pub struct PgStore {
    pool: PgPool,
    fence: lease::Fence,
    /// Behind a transaction-mode pooler (`pooler.rs`).
    pooled: bool,
}

/// Connections kept open even when idle, one per writer and reader that
/// runs at once, so no commit waits for a new backend (the open loop's
/// first events took 19–28 ms with connections opened on demand, 11 ms).
pub const WARM_CONNECTIONS: u32 = 4;

impl PgStore {
    /// Connects to `url`. A connection is established eagerly so that a wrong
    /// URL fails at start-up, not at the first publish.
    /// `pooler=transaction` in the URL: a transaction-mode pooler is in
    /// between (see `pooler.rs`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (url, pooled) = pooler::split(url)?;
        let options: PgConnectOptions = url.parse()?;
        Self::connect_pooled(options, pooled).await
    }

    /// Connects with explicit options (tests use a private `search_path`).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        Self::connect_pooled(options, false).await
    }

    /// [`PgStore::connect_with`], saying whether a transaction-mode pooler
    /// is in between.
    pub async fn connect_pooled(
        options: PgConnectOptions,
        pooled: bool,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(WARM_CONNECTIONS)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            fence: lease::Fence::default(),
            pooled,
        })
    }

    /// Whether statements are prepared under a name and cached (not behind
    /// a transaction-mode pooler: see `pooler.rs`).
    fn named(&self) -> bool {
        !self.pooled
    }

    /// A write transaction, fenced: it commits nothing once another core
    /// has taken over (see `lease.rs`).
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.fence.check(&mut tx, self.named()).await?;
        Ok(tx)
    }

    /// A connection for reads and single statements (see `pooler.rs`).
    async fn read(&self) -> Result<pooler::Conn, StoreError> {
        pooler::Conn::open(&self.pool, self.pooled).await
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn lease(&self) -> Option<&dyn super::lease::Lease> {
        Some(self)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        if self.pooled {
            return pooler::migrate(&self.pool, super::migrations::POSTGRES).await;
        }
        super::migrations::migrator(super::migrations::POSTGRES)
            .await?
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.read().await?;
        sqlx::query("SELECT 1")
            .persistent(self.named())
            .execute(&mut *conn)
            .await?;
        conn.done().await?;
        Ok(())
    }

    async fn durability_risks(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.read().await?;
        let (fsync, synchronous_commit, full_page_writes): (String, String, String) =
            sqlx::query_as(
                "SELECT current_setting('fsync'), current_setting('synchronous_commit'), \
                 current_setting('full_page_writes')",
            )
            .persistent(self.named())
            .fetch_one(&mut *conn)
            .await?;
        conn.done().await?;
        let mut risks = Vec::new();
        if fsync != "on" {
            risks.push(
                "PostgreSQL fsync is off: a crash of the machine can lose or corrupt committed data"
                    .to_string(),
            );
        }
        if synchronous_commit == "off" {
            risks.push(
                "PostgreSQL synchronous_commit is off: a commit is answered before its WAL \
                 is flushed, so a crash loses the last acknowledged publishes"
                    .to_string(),
            );
        }
        if full_page_writes != "on" {
            risks.push(
                "PostgreSQL full_page_writes is off: a crash during a page write can corrupt \
                 committed data"
                    .to_string(),
            );
        }
        Ok(risks)
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE delivery_cursor SET acked_floor = acked_floor WHERE id = 1")
            .persistent(self.named())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn next_seq(&self) -> Result<Seq, StoreError> {
        let mut conn = self.read().await?;
        let (max,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM events")
            .persistent(self.named())
            .fetch_one(&mut *conn)
            .await?;
        conn.done().await?;
        Ok(seq_from_db(max)? + 1)
    }

    async fn append(
        &self,
        first_seq: Seq,
        published_at_us: i64,
        batch: &AppendBatch,
    ) -> Result<Vec<RequestOutcome>, StoreError> {
        let events = batch.events();
        let keys: Vec<&str> = events
            .iter()
            .filter_map(|e| e.idempotency_key.as_deref())
            .collect();
        if keys.is_empty() {
            // Nothing to look up: one fenced statement.
            let plan = idempotency::plan(first_seq, batch, &HashMap::new());
            if !plan.insert.is_empty() {
                let sql = insert_events_sql();
                self.write_one(bind_events(
                    self.fenced(&sql),
                    first_seq,
                    batch,
                    &plan.insert,
                    published_at_us,
                ))
                .await?;
            }
            return Ok(plan.outcomes);
        }
        // The keys are read and the events written in one transaction;
        // the insert fences itself.
        let mut tx = self.pool.begin().await?;
        let rows: Vec<idempotency::KeyRow> = sqlx::query_as(
            "SELECT idempotency_key, seq, id, idempotency_fingerprint FROM events \
             WHERE idempotency_key = ANY($1)",
        )
        .bind(&keys)
        .persistent(self.named())
        .fetch_all(&mut *tx)
        .await?;
        let stored = idempotency::stored_keys(rows)?;
        let plan = idempotency::plan(first_seq, batch, &stored);
        if !plan.insert.is_empty() {
            let sql = insert_events_sql();
            bind_events(
                self.fenced(&sql),
                first_seq,
                batch,
                &plan.insert,
                published_at_us,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(plan.outcomes)
    }

    async fn events_from(
        &self,
        from: Seq,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut conn = self.read().await?;
        // One query: the running total of payload sizes cuts the page in
        // the database, so rows past the budget never reach this process.
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, id, kind, key, payload, published_at_us, traceparent FROM ( \
               SELECT seq, id, kind, key, payload, published_at_us, traceparent, \
                 row_number() OVER (ORDER BY seq) AS n, \
                 sum(octet_length(payload)::int8) OVER (ORDER BY seq) AS running \
               FROM events WHERE seq >= $1 ORDER BY seq LIMIT $2) page \
             WHERE n = 1 OR running <= $3 ORDER BY seq",
        )
        .bind(seq_to_db(from))
        .bind(i64::from(limit))
        .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
        .persistent(self.named())
        .fetch_all(&mut *conn)
        .await?;
        conn.done().await?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    async fn event(&self, seq: Seq) -> Result<Option<EventView>, StoreError> {
        let mut conn = self.read().await?;
        let row: Option<ViewRow> = sqlx::query_as(&format!(
            "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE e.seq = $1"
        ))
        .bind(seq_to_db(seq))
        .persistent(self.named())
        .fetch_optional(&mut *conn)
        .await?;
        conn.done().await?;
        row.map(ViewRow::into_view).transpose()
    }

    async fn list_events(
        &self,
        after: Seq,
        limit: u32,
        status: Option<StatusFilter>,
    ) -> Result<Vec<EventView>, StoreError> {
        self.list_page(after, limit, usize::MAX, status).await
    }

    async fn list_page(
        &self,
        after: Seq,
        limit: u32,
        max_bytes: usize,
        status: Option<StatusFilter>,
    ) -> Result<Vec<EventView>, StoreError> {
        let mut conn = self.read().await?;
        let condition = status_condition(status);
        // What `EventView::bytes` counts, without reading a payload.
        let sizes: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT e.seq, octet_length(e.payload)::int8 + octet_length(e.kind) + COALESCE(octet_length(e.key), 0) \
             + COALESCE(octet_length(r.output), 0) + COALESCE(octet_length(d.reason), 0) \
             FROM {VIEW_FROM} WHERE e.seq > $1 AND {condition} ORDER BY e.seq LIMIT $2"
        ))
        .bind(seq_to_db(after))
        .bind(i64::from(limit))
        .persistent(self.named())
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = PageBudget::new(max_bytes).last_seq(&sizes) else {
            return Ok(Vec::new());
        };
        let rows: Vec<ViewRow> = sqlx::query_as(&format!(
            "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} \
             WHERE e.seq > $1 AND e.seq <= $2 AND {condition} ORDER BY e.seq LIMIT $3"
        ))
        .bind(seq_to_db(after))
        .bind(last)
        .bind(i64::from(limit))
        .persistent(self.named())
        .fetch_all(&mut *conn)
        .await?;
        conn.done().await?;
        rows.into_iter().map(ViewRow::into_view).collect()
    }

    async fn resolve(
        &self,
        results: &[ResultRow],
        dead: &[DeadRow],
        acked_floor: Seq,
    ) -> Result<(), StoreError> {
        let seqs: Vec<i64> = results.iter().map(|r| seq_to_db(r.seq)).collect();
        let statuses: Vec<i16> = results.iter().map(|r| r.status.to_db()).collect();
        let outputs: Vec<&str> = results.iter().map(|r| r.output.as_str()).collect();
        let attempts: Vec<i32> = results
            .iter()
            .map(|r| i32::try_from(r.attempt).unwrap_or(i32::MAX))
            .collect();
        let processing: Vec<i64> = results
            .iter()
            .map(|r| i64::try_from(r.processing_us).unwrap_or(i64::MAX))
            .collect();
        let stored_at: Vec<i64> = results.iter().map(|r| r.stored_at_us).collect();
        let dead_seqs: Vec<i64> = dead.iter().map(|d| seq_to_db(d.seq)).collect();
        let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
        let dead_attempts: Vec<i32> = dead
            .iter()
            .map(|d| i32::try_from(d.attempts).unwrap_or(i32::MAX))
            .collect();
        let parked_at: Vec<i64> = dead.iter().map(|d| d.parked_at_us).collect();
        // Results, dead rows and the floor: one fenced statement, so one
        // transaction, as before.
        let sql = format!(
            "WITH {FENCE}, \
             stored AS (INSERT INTO results (seq, status, output, attempt, processing_us, stored_at_us) \
                 SELECT s, st, o, a, pu, sa FROM UNNEST($3::int8[], $4::int2[], $5::text[], \
                     $6::int4[], $7::int8[], $8::int8[]) AS t(s, st, o, a, pu, sa) \
                 CROSS JOIN {FENCED} \
                 ON CONFLICT (seq) DO NOTHING), \
             parked AS (INSERT INTO dead (seq, reason, attempts, parked_at_us) \
                 SELECT s, r, a, pa FROM UNNEST($9::int8[], $10::text[], $11::int4[], $12::int8[]) \
                     AS t(s, r, a, pa) \
                 CROSS JOIN {FENCED} \
                 ON CONFLICT (seq) DO NOTHING) \
             UPDATE delivery_cursor SET acked_floor = GREATEST(acked_floor, $13) \
             FROM {FENCED} WHERE id = 1"
        );
        let query = self
            .fenced(&sql)
            .bind(&seqs)
            .bind(&statuses)
            .bind(&outputs)
            .bind(&attempts)
            .bind(&processing)
            .bind(&stored_at)
            .bind(&dead_seqs)
            .bind(&reasons)
            .bind(&dead_attempts)
            .bind(&parked_at)
            .bind(seq_to_db(acked_floor));
        self.write_one(query).await?;
        Ok(())
    }

    async fn mark_sent(&self, seqs: &[Seq], sent_at_us: i64) -> Result<(), StoreError> {
        let seqs: Vec<i64> = seqs.iter().map(|s| seq_to_db(*s)).collect();
        let sql = format!(
            "WITH {FENCE} INSERT INTO sent (seq, sent_at_us) \
             SELECT s, $4 FROM UNNEST($3::int8[]) AS t(s) CROSS JOIN {FENCED} \
             ON CONFLICT (seq) DO NOTHING"
        );
        self.write_one(self.fenced(&sql).bind(&seqs).bind(sent_at_us))
            .await?;
        Ok(())
    }

    async fn delivery_cursor(&self) -> Result<DeliveryCursor, StoreError> {
        let mut conn = self.read().await?;
        let (floor,): (i64,) =
            sqlx::query_as("SELECT acked_floor FROM delivery_cursor WHERE id = 1")
                .persistent(self.named())
                .fetch_one(&mut *conn)
                .await?;
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT seq FROM results WHERE seq >= $1 UNION SELECT seq FROM dead WHERE seq >= $1 \
             ORDER BY seq",
        )
        .bind(floor)
        .persistent(self.named())
        .fetch_all(&mut *conn)
        .await?;
        let sent: Vec<(i64,)> = sqlx::query_as(
            "SELECT s.seq FROM sent s WHERE s.seq >= $1 \
               AND NOT EXISTS (SELECT 1 FROM results r WHERE r.seq = s.seq) \
               AND NOT EXISTS (SELECT 1 FROM dead d WHERE d.seq = s.seq) \
             ORDER BY s.seq",
        )
        .bind(floor)
        .persistent(self.named())
        .fetch_all(&mut *conn)
        .await?;
        conn.done().await?;
        Ok(DeliveryCursor {
            acked_floor: seq_from_db(floor)?,
            resolved_above: seqs(rows)?,
            sent_above: seqs(sent)?,
        })
    }

    async fn dead_events(&self, limit: u32) -> Result<Vec<DeadView>, StoreError> {
        let mut conn = self.read().await?;
        let rows: Vec<DeadRowDb> = sqlx::query_as(
            "SELECT d.seq, e.kind, d.reason, d.attempts, d.parked_at_us, d.requeued_as \
             FROM dead d JOIN events e ON e.seq = d.seq WHERE d.requeued_as IS NULL \
             ORDER BY d.seq DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .persistent(self.named())
        .fetch_all(&mut *conn)
        .await?;
        conn.done().await?;
        rows.into_iter().map(DeadRowDb::into_view).collect()
    }

    async fn mark_requeued(&self, seq: Seq, new_seq: Seq) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE dead SET requeued_as = $2 WHERE seq = $1 AND requeued_as IS NULL")
                .bind(seq_to_db(seq))
                .bind(seq_to_db(new_seq))
                .persistent(self.named())
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn prune(&self, published_before_us: i64, limit: u32) -> Result<u64, StoreError> {
        // One statement, so one transaction. `candidates` walks the primary
        // key of `results` upwards from the lowest seq (dead events have no
        // result, so they cost nothing) and probes `events` and `dead` by
        // their primary keys: at most `limit` rows of each, whatever the
        // tables hold. Every data-modifying CTE sees the same snapshot, so
        // the highest seq excluded here is the highest seq there is or ever
        // was (seqs only grow, and this is the only delete).
        let mut tx = self.begin().await?;
        let gone = sqlx::query(
            "WITH candidates AS ( \
                 SELECT r.seq, e.published_at_us FROM results r \
                 JOIN events e ON e.seq = r.seq \
                 WHERE r.seq < (SELECT acked_floor FROM delivery_cursor WHERE id = 1) \
                   AND r.seq < (SELECT MAX(seq) FROM events) \
                   AND NOT EXISTS (SELECT 1 FROM dead d WHERE d.seq = r.seq) \
                 ORDER BY r.seq LIMIT $2 \
             ), gone AS ( \
                 DELETE FROM results WHERE seq IN \
                     (SELECT seq FROM candidates WHERE published_at_us < $1) \
                 RETURNING seq \
             ), marks AS ( \
                 DELETE FROM sent WHERE seq IN (SELECT seq FROM gone) \
             ) \
             DELETE FROM events WHERE seq IN (SELECT seq FROM gone)",
        )
        .bind(published_before_us)
        .bind(i64::from(limit))
        .persistent(self.named())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(gone.rows_affected())
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let mut conn = self.read().await?;
        let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
            .persistent(self.named())
            .fetch_one(&mut *conn)
            .await?;
        conn.done().await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }
}
