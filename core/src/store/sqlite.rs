//! SQLite store, the zero-setup default: WAL, `synchronous=FULL` (an
//! acknowledged commit survives power loss), a busy timeout, one writer
//! connection and a small pool of readers.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::rows::{DeadRowDb, EventRow, VIEW_COLUMNS, VIEW_FROM, ViewRow, status_condition};
use super::{Store, StoreError, seq_from_db, seq_to_db};
use crate::model::{
    Appended, DeadRow, DeadView, DeliveryCursor, EventView, NewEvent, ResultRow, Seq, StatusFilter,
    StoredEvent,
};

/// The embedded store.
pub struct SqliteStore {
    /// Exactly one connection: SQLite allows one writer at a time, and a
    /// single connection turns lock contention into queueing.
    writer: SqlitePool,
    /// Readers see committed data through WAL without blocking the writer.
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite:path`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        // busy_timeout is applied before journal_mode by sqlx, so switching to
        // WAL waits for a concurrent opener instead of failing.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, readers })
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn next_seq(&self) -> Result<Seq, StoreError> {
        let (max,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.writer)
            .await?;
        Ok(seq_from_db(max)? + 1)
    }

    async fn append(
        &self,
        first_seq: Seq,
        published_at_us: i64,
        ids: &[String],
        events: &[NewEvent],
    ) -> Result<Vec<Appended>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut known: HashMap<&str, (Seq, String)> = HashMap::new();
        let mut outcomes = Vec::with_capacity(events.len());
        let mut next = first_seq;
        for (event, id) in events.iter().zip(ids) {
            if let Some(key) = event.idempotency_key.as_deref() {
                let seen = match known.get(key) {
                    Some(found) => Some(found.clone()),
                    None => {
                        let row: Option<(i64, String)> =
                            sqlx::query_as("SELECT seq, id FROM events WHERE idempotency_key = ?")
                                .bind(key)
                                .fetch_optional(&mut *tx)
                                .await?;
                        match row {
                            Some((s, id)) => Some((seq_from_db(s)?, id)),
                            None => None,
                        }
                    }
                };
                if let Some((seq, id)) = seen {
                    outcomes.push(Appended {
                        seq,
                        id,
                        replayed: true,
                    });
                    continue;
                }
                known.insert(key, (next, id.clone()));
            }
            // One prepared statement per row: SQLite has no network round
            // trip, and the whole batch is one transaction (one fsync).
            sqlx::query(
                "INSERT INTO events (seq, id, kind, key, payload, idempotency_key, published_at_us) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(seq_to_db(next))
            .bind(id)
            .bind(&event.kind)
            .bind(event.key.as_deref())
            .bind(&event.payload)
            .bind(event.idempotency_key.as_deref())
            .bind(published_at_us)
            .execute(&mut *tx)
            .await?;
            outcomes.push(Appended {
                seq: next,
                id: id.clone(),
                replayed: false,
            });
            next += 1;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn events_from(&self, from: Seq, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, id, kind, key, payload, published_at_us FROM events \
             WHERE seq >= ? ORDER BY seq LIMIT ?",
        )
        .bind(seq_to_db(from))
        .bind(i64::from(limit))
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
        let rows: Vec<ViewRow> = sqlx::query_as(&format!(
            "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE e.seq > ? AND {} \
             ORDER BY e.seq LIMIT ?",
            status_condition(status)
        ))
        .bind(seq_to_db(after))
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
        for r in results {
            sqlx::query(
                "INSERT INTO results (seq, status, output, attempt, processing_us, stored_at_us) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (seq) DO NOTHING",
            )
            .bind(seq_to_db(r.seq))
            .bind(r.status.to_db())
            .bind(&r.output)
            .bind(i64::from(r.attempt))
            .bind(i64::try_from(r.processing_us).unwrap_or(i64::MAX))
            .bind(r.stored_at_us)
            .execute(&mut *tx)
            .await?;
        }
        for row in dead {
            sqlx::query(
                "INSERT INTO dead (seq, reason, attempts, parked_at_us) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (seq) DO NOTHING",
            )
            .bind(seq_to_db(row.seq))
            .bind(&row.reason)
            .bind(i64::from(row.attempts))
            .bind(row.parked_at_us)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE delivery_cursor SET acked_floor = MAX(acked_floor, ?) WHERE id = 1")
            .bind(seq_to_db(acked_floor))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_cursor(&self) -> Result<DeliveryCursor, StoreError> {
        let (floor,): (i64,) =
            sqlx::query_as("SELECT acked_floor FROM delivery_cursor WHERE id = 1")
                .fetch_one(&self.writer)
                .await?;
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT seq FROM results WHERE seq >= ?1 UNION SELECT seq FROM dead WHERE seq >= ?1 \
             ORDER BY seq",
        )
        .bind(floor)
        .fetch_all(&self.writer)
        .await?;
        Ok(DeliveryCursor {
            acked_floor: seq_from_db(floor)?,
            resolved_above: rows
                .into_iter()
                .map(|(s,)| seq_from_db(s))
                .collect::<Result<_, _>>()?,
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
        let done =
            sqlx::query("UPDATE dead SET requeued_as = ? WHERE seq = ? AND requeued_as IS NULL")
                .bind(seq_to_db(new_seq))
                .bind(seq_to_db(seq))
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
