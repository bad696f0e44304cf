//! Durable storage of events, results, dead events and the acked floor.
//!
//! One trait, two implementations: [`postgres::PgStore`] for production and
//! [`sqlite::SqliteStore`] as the zero-setup default. Both run the same test
//! suite (`core/tests/store.rs`). Each is a cargo feature of this crate,
//! `postgres` and `sqlite`, both on by default; a build with one of them
//! links only that database's driver.
//!
//! Architecture invariant: only this module touches sqlx.
//!
//! Architecture invariant: the store never assigns seqs itself. The ingest
//! writer hands [`Store::append`] the first seq of each batch, so seq order
//! is commit order whatever the database does with concurrent transactions.

mod error;
pub mod health;
mod idempotency;
pub mod lease;
pub mod migrations;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("ackflow-core needs a store: enable the `postgres` or `sqlite` feature (or both)");

use std::sync::Arc;

pub use self::error::StoreError;

use crate::model::{
    AppendBatch, DeadRow, DeadView, DeliveryCursor, EventView, RequestOutcome, ResultRow, Seq,
    StatusFilter, StoredEvent,
};

/// The byte bound of a read page (see [`Store::list_page`]).
pub(crate) struct PageBudget {
    max_bytes: usize,
    used: usize,
    events: usize,
}

impl PageBudget {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            used: 0,
            events: 0,
        }
    }

    /// Whether an event of `bytes` still fits (the first event always
    /// does), counting it if so.
    pub(crate) fn admits(&mut self, bytes: usize) -> bool {
        if self.events > 0 && self.used.saturating_add(bytes) > self.max_bytes {
            return false;
        }
        self.used = self.used.saturating_add(bytes);
        self.events += 1;
        true
    }

    /// The last seq of a page, given each candidate event's seq and size
    /// in store order (None: no event).
    pub(crate) fn last_seq(mut self, sizes: &[(i64, i64)]) -> Option<i64> {
        sizes
            .iter()
            .take_while(|(_, bytes)| self.admits(usize::try_from(*bytes).unwrap_or(usize::MAX)))
            .last()
            .map(|(seq, _)| *seq)
    }
}

/// A store failure. Every variant means "the operation did not happen"
/// except where a commit's outcome is unknown, which callers treat alike:
/// the client is told the store is unavailable and may retry (with an
/// idempotency key to stay exactly-once).
/// The storage operations core needs. Every write is one transaction.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Name of the backend, for logs (`postgres` or `sqlite`).
    fn backend(&self) -> &'static str;

    /// Leadership among the cores sharing this store; `None` when the store
    /// has one core by construction, which leads (see `lease.rs`).
    fn lease(&self) -> Option<&dyn lease::Lease> {
        None
    }

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Settings of the store under which an acknowledged (committed) write
    /// could be lost on a crash or power cut, each described in a sentence;
    /// empty when there are none.
    async fn durability_risks(&self) -> Result<Vec<String>, StoreError>;

    /// A write transaction that changes nothing (the cursor row set to
    /// itself): proves the store takes writes again after a failure.
    async fn probe_write(&self) -> Result<(), StoreError>;

    /// The seq the next committed event gets: highest stored seq + 1.
    async fn next_seq(&self) -> Result<Seq, StoreError>;

    /// Commits a batch in one transaction and returns one outcome per
    /// request, in order. An event whose idempotency key is already stored
    /// (or used earlier in the batch) with the same fingerprint is a replay:
    /// it gets the original seq and stores nothing. A key used before with
    /// another fingerprint refuses its whole request with a
    /// [`crate::model::Conflict`], and only that request. Every stored event
    /// gets the next seq from `first_seq`, in batch order, with no gaps; see
    /// `idempotency.rs` for the rules.
    async fn append(
        &self,
        first_seq: Seq,
        published_at_us: i64,
        batch: &AppendBatch,
    ) -> Result<Vec<RequestOutcome>, StoreError>;

    /// Up to `limit` events with seq >= `from`, in seq order, stopping
    /// before their payloads would pass `max_bytes` (at least one event
    /// when one is there). The database cuts the page (a running total of
    /// payload sizes), so no event past it is loaded.
    async fn events_from(
        &self,
        from: Seq,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// One event with its delivery state.
    async fn event(&self, seq: Seq) -> Result<Option<EventView>, StoreError>;

    /// Events with seq > `after`, optionally filtered by delivery state.
    async fn list_events(
        &self,
        after: Seq,
        limit: u32,
        status: Option<StatusFilter>,
    ) -> Result<Vec<EventView>, StoreError>;

    /// Like [`Store::list_events`], but the page also stops before its
    /// events' bytes ([`EventView::bytes`]) would pass `max_bytes`; it
    /// always holds at least one event when one is there. The stores first
    /// read the candidates' seqs and sizes (the database reads no payload
    /// for that), then only the events of the page, so a read of many large
    /// events holds one page in memory, not `limit` events. (This default,
    /// for wrappers, reads `limit` events and cuts.)
    async fn list_page(
        &self,
        after: Seq,
        limit: u32,
        max_bytes: usize,
        status: Option<StatusFilter>,
    ) -> Result<Vec<EventView>, StoreError> {
        let mut views = self.list_events(after, limit, status).await?;
        let mut page = PageBudget::new(max_bytes);
        let keep = views.iter().take_while(|v| page.admits(v.bytes())).count();
        views.truncate(keep);
        Ok(views)
    }

    /// Stores results and dead events (idempotently: an existing row wins)
    /// and the acked floor, in one transaction. The floor never moves back.
    async fn resolve(
        &self,
        results: &[ResultRow],
        dead: &[DeadRow],
        acked_floor: Seq,
    ) -> Result<(), StoreError>;

    /// Stores sent marks for `seqs` (events of at-most-once kinds about to
    /// go out; idempotently), in one transaction. See [`DeliveryCursor::sent_above`].
    async fn mark_sent(&self, seqs: &[Seq], sent_at_us: i64) -> Result<(), StoreError>;

    /// The persisted floor, the resolved seqs at or above it, and the
    /// unresolved ones with a sent mark.
    async fn delivery_cursor(&self) -> Result<DeliveryCursor, StoreError>;

    /// Dead events not requeued yet, newest first.
    async fn dead_events(&self, limit: u32) -> Result<Vec<DeadView>, StoreError>;

    /// Records that dead event `seq` was published again as `new_seq`.
    /// Returns false when `seq` is not a dead event awaiting requeue.
    async fn mark_requeued(&self, seq: Seq, new_seq: Seq) -> Result<bool, StoreError>;

    /// Retention (see `crate::retention`): deletes, in one transaction, up
    /// to `limit` events published before `published_before_us` together
    /// with their results, lowest seqs first, and returns how many events
    /// went (with their sent marks). Only an event that has a result, lies below the persisted acked
    /// floor and is not the highest stored seq can go: unresolved and dead
    /// events are never deleted, and the highest seq stays because
    /// [`Store::next_seq`] is derived from it (deleting it would hand its
    /// seq out again). An idempotency key lives as long as its event: once
    /// the event is pruned, the key is free and a publish with it stores a
    /// new event.
    ///
    /// To cost the same whatever the table holds, only the `limit` lowest
    /// candidates are looked at, and those published before the cutoff go.
    /// Seqs follow commit order and `published_at_us` is the commit's time,
    /// so these are the oldest; a candidate that looks newer (the clock went
    /// back) holds the ones above it until it is old enough itself.
    async fn prune(&self, published_before_us: i64, limit: u32) -> Result<u64, StoreError>;

    /// Bytes the store occupies on disk: the database (PostgreSQL) or the
    /// database file without its WAL (SQLite; deleted rows leave free pages
    /// that later writes reuse, so the file does not shrink).
    async fn size_bytes(&self) -> Result<u64, StoreError>;
}

/// The store as shared by every task.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store for `database_url` (`postgres://…` or `sqlite:…`) and runs
/// the migrations.
pub async fn open(database_url: &str) -> Result<SharedStore, StoreError> {
    open_with(database_url, false).await
}

/// [`open`], with the negative control's hidden switch: on SQLite,
/// `unsafe_sqlx_transactions` brings back the writer that lost acknowledged
/// events on a full disk (see `sqlite.rs`). Never set it in production.
pub async fn open_with(
    database_url: &str,
    unsafe_sqlx_transactions: bool,
) -> Result<SharedStore, StoreError> {
    let store: SharedStore = if database_url.starts_with("postgres:")
        || database_url.starts_with("postgresql:")
    {
        #[cfg(feature = "postgres")]
        {
            Arc::new(postgres::PgStore::connect(database_url).await?)
        }
        #[cfg(not(feature = "postgres"))]
        return Err(not_built_in("PostgreSQL", "postgres"));
    } else if database_url.starts_with("sqlite:") {
        #[cfg(feature = "sqlite")]
        {
            Arc::new(sqlite::SqliteStore::open_with(database_url, unsafe_sqlx_transactions).await?)
        }
        #[cfg(not(feature = "sqlite"))]
        {
            let _ = unsafe_sqlx_transactions;
            return Err(not_built_in("SQLite", "sqlite"));
        }
    } else {
        return Err(StoreError::Corrupt(format!(
            "unsupported database URL {database_url:?}: use postgres://… or sqlite:…"
        )));
    };
    store.migrate().await?;
    Ok(store)
}

/// The refusal of a URL whose store this build left out.
#[cfg(not(all(feature = "postgres", feature = "sqlite")))]
fn not_built_in(database: &str, feature: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "this build of ackflow has no {database} store: build it with the `{feature}` \
         feature (on by default)"
    ))
}

/// Helper for both backends: converts a stored i64 to a seq.
pub(crate) fn seq_from_db(value: i64) -> Result<Seq, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative seq {value}")))
}

/// Seqs read as one-column rows.
pub(crate) fn seqs(rows: Vec<(i64,)>) -> Result<Vec<Seq>, StoreError> {
    rows.into_iter().map(|(s,)| seq_from_db(s)).collect()
}

/// Helper for both backends: converts a seq to its stored i64.
pub(crate) fn seq_to_db(seq: Seq) -> i64 {
    // Seqs are assigned from 1 upwards; 2^63 events are out of reach.
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Row shapes shared by both backends (same column names and types).
pub(crate) mod rows {
    use super::{StoreError, seq_from_db};
    use crate::model::{DeadView, DeliveryState, EventView, ResultRow, ResultStatus, StoredEvent};

    /// The columns of an event joined with its result and dead entry.
    pub const VIEW_COLUMNS: &str = "e.seq, e.id, e.kind, e.key, e.payload, e.published_at_us, e.traceparent, \
         r.status, r.output, r.attempt, r.processing_us, r.stored_at_us, \
         d.reason, d.attempts, d.parked_at_us, d.requeued_as";

    /// The joins that go with [`VIEW_COLUMNS`].
    pub const VIEW_FROM: &str =
        "events e LEFT JOIN results r ON r.seq = e.seq LEFT JOIN dead d ON d.seq = e.seq";

    /// `sqlx::FromRow` by column name for both backends, as sqlx's derive
    /// would write it: the derive needs sqlx's macros, which build sqlx and
    /// SQLite a second time (see `store/migrations.rs`).
    macro_rules! row {
        ($name:ident { $(#[flatten] $flat:ident: $fty:ty,)? $($field:ident: $ty:ty,)* }) => {
            pub struct $name {
                $(pub $flat: $fty,)?
                $(pub $field: $ty,)*
            }

            impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $name
            where
                &'r str: sqlx::ColumnIndex<R>,
                $($fty: sqlx::FromRow<'r, R>,)?
                $($ty: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,)*
            {
                fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
                    Ok(Self {
                        $($flat: <$fty as sqlx::FromRow<'r, R>>::from_row(row)?,)?
                        $($field: row.try_get(stringify!($field))?,)*
                    })
                }
            }
        };
    }

    row!(EventRow {
        seq: i64,
        id: String,
        kind: String,
        key: Option<String>,
        payload: Vec<u8>,
        published_at_us: i64,
        traceparent: Option<String>,
    });

    impl EventRow {
        pub fn into_event(self) -> Result<StoredEvent, StoreError> {
            Ok(StoredEvent {
                seq: seq_from_db(self.seq)?,
                id: self.id,
                kind: self.kind,
                key: self.key,
                payload: self.payload,
                published_at_us: self.published_at_us,
                traceparent: self.traceparent,
            })
        }
    }

    row!(ViewRow {
        #[flatten]
        event: EventRow,
        status: Option<i16>,
        output: Option<String>,
        attempt: Option<i32>,
        processing_us: Option<i64>,
        stored_at_us: Option<i64>,
        reason: Option<String>,
        attempts: Option<i32>,
        parked_at_us: Option<i64>,
        requeued_as: Option<i64>,
    });

    impl ViewRow {
        pub fn into_view(self) -> Result<EventView, StoreError> {
            let event = self.event.into_event()?;
            let result = match (self.status, self.output) {
                (Some(status), Some(output)) => Some(ResultRow {
                    seq: event.seq,
                    status: ResultStatus::from_db(status),
                    output,
                    attempt: self.attempt.unwrap_or(0).max(0) as u32,
                    processing_us: self.processing_us.unwrap_or(0).max(0) as u64,
                    stored_at_us: self.stored_at_us.unwrap_or(0),
                }),
                _ => None,
            };
            let dead = match self.reason {
                Some(reason) => Some(DeadView {
                    seq: event.seq,
                    kind: event.kind.clone(),
                    reason,
                    attempts: self.attempts.unwrap_or(0).max(0) as u32,
                    parked_at_us: self.parked_at_us.unwrap_or(0),
                    requeued_as: self.requeued_as.map(seq_from_db).transpose()?,
                }),
                None => None,
            };
            let state = match (&result, &dead) {
                (Some(r), _) => DeliveryState::Done(r.status),
                (None, Some(_)) => DeliveryState::Dead,
                (None, None) => DeliveryState::Pending,
            };
            Ok(EventView {
                event,
                state,
                result,
                dead,
            })
        }
    }

    row!(DeadRowDb {
        seq: i64,
        kind: String,
        reason: String,
        attempts: i32,
        parked_at_us: i64,
        requeued_as: Option<i64>,
    });

    impl DeadRowDb {
        pub fn into_view(self) -> Result<DeadView, StoreError> {
            Ok(DeadView {
                seq: seq_from_db(self.seq)?,
                kind: self.kind,
                reason: self.reason,
                attempts: self.attempts.max(0) as u32,
                parked_at_us: self.parked_at_us,
                requeued_as: self.requeued_as.map(seq_from_db).transpose()?,
            })
        }
    }

    /// SQL condition for a status filter, over the aliases of [`VIEW_FROM`].
    pub fn status_condition(status: Option<crate::model::StatusFilter>) -> &'static str {
        use crate::model::StatusFilter;
        match status {
            None => "TRUE",
            Some(StatusFilter::Pending) => "r.seq IS NULL AND d.seq IS NULL",
            Some(StatusFilter::Ok) => "r.status = 1",
            Some(StatusFilter::Failed) => "r.status = 2",
            Some(StatusFilter::Abandoned) => "r.status = 3",
            Some(StatusFilter::Dead) => "r.seq IS NULL AND d.seq IS NOT NULL",
        }
    }
}
