//! SQLite store, the zero-setup default: WAL, `synchronous=FULL` (an
//! acknowledged commit survives power loss), a busy timeout, one writer
//! connection and a small pool of readers.
//!
//! `writer.rs` is the writer connection and its transactions; it keeps
//! the invariant that **a write that returns `Ok` is in the file.**

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Mutex;

mod many;
pub mod owner;
mod writer;

use self::many::Insert;
use self::writer::Writer;
use crate::model::{
    AppendBatch, DeadRow, DeadView, DeliveryCursor, EventView, RequestOutcome, ResultRow, Seq,
    StatusFilter, StoredEvent,
};
use crate::store::idempotency;
use crate::store::migrations;
use crate::store::rows::{DeadRowDb, EventRow, VIEW_COLUMNS, VIEW_FROM, ViewRow, status_condition};
use crate::store::{PageBudget, Store, StoreError, seq_from_db, seq_to_db, seqs};

/// The event rows' insert, several rows a statement (see `many.rs`).
static EVENTS: LazyLock<Insert> = LazyLock::new(|| {
    Insert::new(
        "INSERT INTO events (seq, id, kind, key, payload, idempotency_key, \
             idempotency_fingerprint, traceparent, published_at_us)",
        9,
        "",
    )
});

/// The result rows' insert; a seq with a result keeps it.
static RESULTS: LazyLock<Insert> = LazyLock::new(|| {
    Insert::new(
        "INSERT INTO results (seq, status, output, attempt, processing_us, stored_at_us)",
        6,
        " ON CONFLICT (seq) DO NOTHING",
    )
});

/// The dead rows' insert; a seq parked already stays as it was.
static DEAD: LazyLock<Insert> = LazyLock::new(|| {
    Insert::new(
        "INSERT INTO dead (seq, reason, attempts, parked_at_us)",
        4,
        " ON CONFLICT (seq) DO NOTHING",
    )
});

/// The embedded store.
pub struct SqliteStore {
    /// Exactly one writer: SQLite allows one at a time, and a single
    /// connection turns lock contention into queueing.
    writer: Writer,
    /// Readers see committed data through WAL without blocking the writer.
    /// Every read goes here, so nothing ever reads the writer's uncommitted
    /// state.
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite:path`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, false).await
    }

    /// [`SqliteStore::open`], optionally with the negative control's unsafe
    /// writer (see [`Writer::unsafe_sqlx_transactions`]).
    pub async fn open_with(url: &str, unsafe_sqlx_transactions: bool) -> Result<Self, StoreError> {
        // busy_timeout is applied before journal_mode by sqlx, so switching to
        // WAL waits for a concurrent opener instead of failing.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        // The first connection creates the file and switches it to WAL
        // before the read-only pool opens it.
        let first = options.connect().await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await?;
        Ok(Self {
            writer: Writer {
                options,
                conn: Mutex::new(Some(first)),
                unsafe_sqlx_transactions,
            },
            readers,
        })
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // Migrations run their own sqlx transactions, so they get a
        // connection of their own (a pool of one), closed afterwards.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(self.writer.options.clone())
            .await?;
        let outcome = match migrations::migrator(migrations::SQLITE).await {
            Ok(migrator) => migrator.run(&pool).await,
            Err(e) => Err(e),
        };
        pool.close().await;
        outcome?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn durability_risks(&self) -> Result<Vec<String>, StoreError> {
        // What a new writer connection really runs with (a filesystem can
        // refuse WAL, for one).
        let mut conn = self.writer.options.connect().await?;
        let (synchronous,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&mut conn)
            .await?;
        let (journal,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await?;
        let mut risks = Vec::new();
        // 2 = FULL, 3 = EXTRA; below that a power cut can lose commits.
        if synchronous < 2 {
            risks.push(format!(
                "SQLite synchronous is {synchronous} (below FULL): a power cut can lose \
                 acknowledged publishes"
            ));
        }
        if !journal.eq_ignore_ascii_case("wal") {
            risks.push(format!(
                "SQLite journal_mode is {journal}, not WAL: readers and the writer block \
                 each other and crash recovery differs from what ackflow is tested with"
            ));
        }
        Ok(risks)
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("UPDATE delivery_cursor SET acked_floor = acked_floor WHERE id = 1")
            .execute(tx.conn())
            .await?;
        tx.commit().await
    }

    async fn next_seq(&self) -> Result<Seq, StoreError> {
        // Through the writer, inside a write transaction: exactly the state
        // the next append will see (after a failed commit, a reader's view
        // of the WAL can differ from the writer's).
        let mut tx = self.writer.begin().await?;
        let (max,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(seq_from_db(max)? + 1)
    }

    async fn append(
        &self,
        first_seq: Seq,
        published_at_us: i64,
        batch: &AppendBatch,
    ) -> Result<Vec<RequestOutcome>, StoreError> {
        let events = batch.events();
        let mut tx = self.writer.begin().await?;
        let keys: Vec<&str> = events
            .iter()
            .filter_map(|e| e.idempotency_key.as_deref())
            .collect();
        let stored = if keys.is_empty() {
            HashMap::new()
        } else {
            // One bound JSON array instead of a placeholder per key.
            let keys = serde_json::to_string(&keys)
                .map_err(|e| StoreError::Corrupt(format!("encoding idempotency keys: {e}")))?;
            let rows: Vec<idempotency::KeyRow> = sqlx::query_as(
                "SELECT idempotency_key, seq, id, idempotency_fingerprint FROM events \
                 WHERE idempotency_key IN (SELECT value FROM json_each(?))",
            )
            .bind(&keys)
            .fetch_all(tx.conn())
            .await?;
            idempotency::stored_keys(rows)?
        };
        let plan = idempotency::plan(first_seq, batch, &stored);
        let rows: Vec<(usize, Seq)> = plan.insert.iter().copied().zip(first_seq..).collect();
        for chunk in many::chunks(rows.len(), |k| events[rows[k].0].payload.len()) {
            let mut query = sqlx::query(EVENTS.sql(chunk.len()));
            for &(i, seq) in &rows[chunk] {
                let event = &events[i];
                query = query
                    .bind(seq_to_db(seq))
                    .bind(&batch.ids()[i])
                    .bind(&event.kind)
                    .bind(event.key.as_deref())
                    .bind(&event.payload)
                    .bind(event.idempotency_key.as_deref())
                    .bind(batch.fingerprints()[i].as_ref().map(|f| f.as_slice()))
                    .bind(event.traceparent.as_deref())
                    .bind(published_at_us);
            }
            query.execute(tx.conn()).await?;
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
        // One query: the running total of payload sizes cuts the page in
        // the database, so rows past the budget never reach this process.
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, id, kind, key, payload, published_at_us, traceparent FROM ( \
               SELECT seq, id, kind, key, payload, published_at_us, traceparent, \
                 row_number() OVER (ORDER BY seq) AS n, \
                 sum(length(payload)) OVER (ORDER BY seq) AS running \
               FROM events WHERE seq >= ? ORDER BY seq LIMIT ?) \
             WHERE n = 1 OR running <= ? ORDER BY seq",
        )
        .bind(seq_to_db(from))
        .bind(i64::from(limit))
        .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    async fn event(&self, seq: Seq) -> Result<Option<EventView>, StoreError> {
        let row: Option<ViewRow> = sqlx::query_as(&format!(
            "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE e.seq = ?"
        ))
        .bind(seq_to_db(seq))
        .fetch_optional(&self.readers)
        .await?;
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
        let condition = status_condition(status);
        // What `EventView::bytes` counts, without reading a payload.
        let sizes: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT e.seq, length(e.payload) + length(e.kind) + COALESCE(length(e.key), 0) \
             + COALESCE(length(r.output), 0) + COALESCE(length(d.reason), 0) \
             FROM {VIEW_FROM} WHERE e.seq > ? AND {condition} ORDER BY e.seq LIMIT ?"
        ))
        .bind(seq_to_db(after))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        let Some(last) = PageBudget::new(max_bytes).last_seq(&sizes) else {
            return Ok(Vec::new());
        };
        let rows: Vec<ViewRow> = sqlx::query_as(&format!(
            "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} \
             WHERE e.seq > ? AND e.seq <= ? AND {condition} ORDER BY e.seq LIMIT ?"
        ))
        .bind(seq_to_db(after))
        .bind(last)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(ViewRow::into_view).collect()
    }

    async fn resolve(
        &self,
        results: &[ResultRow],
        dead: &[DeadRow],
        acked_floor: Seq,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for chunk in many::chunks(results.len(), |k| results[k].output.len()) {
            let mut query = sqlx::query(RESULTS.sql(chunk.len()));
            for r in &results[chunk] {
                query = query
                    .bind(seq_to_db(r.seq))
                    .bind(r.status.to_db())
                    .bind(&r.output)
                    .bind(i64::from(r.attempt))
                    .bind(i64::try_from(r.processing_us).unwrap_or(i64::MAX))
                    .bind(r.stored_at_us);
            }
            query.execute(tx.conn()).await?;
        }
        for chunk in many::chunks(dead.len(), |k| dead[k].reason.len()) {
            let mut query = sqlx::query(DEAD.sql(chunk.len()));
            for row in &dead[chunk] {
                query = query
                    .bind(seq_to_db(row.seq))
                    .bind(&row.reason)
                    .bind(i64::from(row.attempts))
                    .bind(row.parked_at_us);
            }
            query.execute(tx.conn()).await?;
        }
        sqlx::query("UPDATE delivery_cursor SET acked_floor = MAX(acked_floor, ?) WHERE id = 1")
            .bind(seq_to_db(acked_floor))
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_sent(&self, seqs: &[Seq], sent_at_us: i64) -> Result<(), StoreError> {
        let seqs = serde_json::to_string(&seqs)
            .map_err(|e| StoreError::Corrupt(format!("encoding seqs to mark: {e}")))?;
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO sent (seq, sent_at_us) SELECT value, ?2 FROM json_each(?1) WHERE TRUE \
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(&seqs)
        .bind(sent_at_us)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_cursor(&self) -> Result<DeliveryCursor, StoreError> {
        let (floor,): (i64,) =
            sqlx::query_as("SELECT acked_floor FROM delivery_cursor WHERE id = 1")
                .fetch_one(&self.readers)
                .await?;
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT seq FROM results WHERE seq >= ?1 UNION SELECT seq FROM dead WHERE seq >= ?1 \
             ORDER BY seq",
        )
        .bind(floor)
        .fetch_all(&self.readers)
        .await?;
        let sent: Vec<(i64,)> = sqlx::query_as(
            "SELECT s.seq FROM sent s WHERE s.seq >= ?1 \
               AND NOT EXISTS (SELECT 1 FROM results r WHERE r.seq = s.seq) \
               AND NOT EXISTS (SELECT 1 FROM dead d WHERE d.seq = s.seq) \
             ORDER BY s.seq",
        )
        .bind(floor)
        .fetch_all(&self.readers)
        .await?;
        Ok(DeliveryCursor {
            acked_floor: seq_from_db(floor)?,
            resolved_above: seqs(rows)?,
            sent_above: seqs(sent)?,
        })
    }

    async fn dead_events(&self, limit: u32) -> Result<Vec<DeadView>, StoreError> {
        let rows: Vec<DeadRowDb> = sqlx::query_as(
            "SELECT d.seq, e.kind, d.reason, d.attempts, d.parked_at_us, d.requeued_as \
             FROM dead d JOIN events e ON e.seq = d.seq WHERE d.requeued_as IS NULL \
             ORDER BY d.seq DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(DeadRowDb::into_view).collect()
    }

    async fn mark_requeued(&self, seq: Seq, new_seq: Seq) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let done =
            sqlx::query("UPDATE dead SET requeued_as = ? WHERE seq = ? AND requeued_as IS NULL")
                .bind(seq_to_db(new_seq))
                .bind(seq_to_db(seq))
                .execute(tx.conn())
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn prune(&self, published_before_us: i64, limit: u32) -> Result<u64, StoreError> {
        // Everything inside the writer's transaction, so the floor, the
        // highest seq and the candidates cannot change under it. The scan
        // walks `results` by rowid from the lowest seq (dead events have no
        // result, so they cost nothing) and probes `events` and `dead` by
        // rowid: at most `limit` rows of each, whatever the tables hold.
        let mut tx = self.writer.begin().await?;
        let doomed: Vec<(i64,)> = sqlx::query_as(
            "SELECT seq FROM ( \
                 SELECT r.seq AS seq, e.published_at_us AS published_at_us FROM results r \
                 JOIN events e ON e.seq = r.seq \
                 WHERE r.seq < (SELECT acked_floor FROM delivery_cursor WHERE id = 1) \
                   AND r.seq < (SELECT MAX(seq) FROM events) \
                   AND NOT EXISTS (SELECT 1 FROM dead d WHERE d.seq = r.seq) \
                 ORDER BY r.seq LIMIT ?2 \
             ) WHERE published_at_us < ?1",
        )
        .bind(published_before_us)
        .bind(i64::from(limit))
        .fetch_all(tx.conn())
        .await?;
        let mut gone = 0;
        if !doomed.is_empty() {
            // One bound JSON array instead of `limit` placeholders; results
            // first, since they reference their events.
            let seqs = serde_json::to_string(&doomed.iter().map(|(s,)| *s).collect::<Vec<_>>())
                .map_err(|e| StoreError::Corrupt(format!("encoding seqs to prune: {e}")))?;
            sqlx::query("DELETE FROM results WHERE seq IN (SELECT value FROM json_each(?))")
                .bind(&seqs)
                .execute(tx.conn())
                .await?;
            sqlx::query("DELETE FROM sent WHERE seq IN (SELECT value FROM json_each(?))")
                .bind(&seqs)
                .execute(tx.conn())
                .await?;
            gone = sqlx::query("DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))")
                .bind(&seqs)
                .execute(tx.conn())
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let (bytes,): (i64,) = sqlx::query_as(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&self.readers)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }
}
