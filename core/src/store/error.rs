//! What a store error is, and its kind: one short, stable name per cause
//! for metrics, logs and `/readyz`, from SQLite's result codes and
//! PostgreSQL's SQLSTATE classes.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid stored data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A short, stable name for what went wrong, for metrics
    /// (`ackflow_store_errors_total{kind}`), logs and `/readyz`:
    /// `disk_full`, `io`, `busy`, `unavailable` (connection, pool, server
    /// shutting down), `corrupt`, `constraint`, `deposed` (another core
    /// leads now: see `lease.rs`) or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Migrate(_) => "other",
            StoreError::Database(e) => match e {
                sqlx::Error::Io(io) if io.raw_os_error() == Some(28) => "disk_full",
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => "unavailable",
                sqlx::Error::Database(db) => {
                    let code = db.code().unwrap_or_default();
                    if is_sqlite(db.as_ref()) {
                        // SQLite: an extended result code; its low byte is
                        // the primary code.
                        match code.parse::<i64>().unwrap_or(0) & 0xff {
                            13 => "disk_full",
                            10 | 14 | 8 => "io",
                            5 | 6 => "busy",
                            11 | 26 => "corrupt",
                            19 => "constraint",
                            _ => "other",
                        }
                    } else {
                        // PostgreSQL: SQLSTATE classes.
                        match code.as_ref() {
                            "AF001" => "deposed",
                            "53100" => "disk_full",
                            c if c.starts_with("58") => "io",
                            c if c.starts_with("08") || c.starts_with("57") => "unavailable",
                            c if c.starts_with("53") || c.starts_with("40") => "busy",
                            c if c.starts_with("23") => "constraint",
                            c if c.starts_with("XX") => "corrupt",
                            _ => "other",
                        }
                    }
                }
                _ => "other",
            },
        }
    }
}

/// True when a database error comes from SQLite (whose codes are numbers,
/// where PostgreSQL's are SQLSTATEs).
fn is_sqlite(error: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "sqlite")]
    {
        error
            .try_downcast_ref::<sqlx::sqlite::SqliteError>()
            .is_some()
    }
    #[cfg(not(feature = "sqlite"))]
    {
        let _ = error;
        false
    }
}
