//! Running behind a transaction-mode pooler (PgBouncer, Supavisor, a
//! managed database's "pooled" URL), where consecutive transactions of one
//! client connection may run on different server connections. Asked for
//! with `pooler=transaction` in the database URL.
//!
//! Two things then change, both here and in [`super::PgStore::named`]:
//! - **No named prepared statements.** A named statement lives on the
//!   server connection that prepared it, so another client could meet it
//!   ("prepared statement sqlx_s_1 already exists") and this one could miss
//!   it. Every statement is unnamed, and runs inside a transaction
//!   ([`Conn`]), which keeps its parse and its execution on one server
//!   connection. That costs one more round trip per statement.
//! - **Migrations without session state.** sqlx's migrator holds a session
//!   advisory lock and prepares named statements; [`migrate`] applies the
//!   same files in one transaction under a table lock, and keeps the same
//!   `_sqlx_migrations` records, so a core that later connects directly
//!   sees them applied.
//!
//! What the pooler itself needs is in README.md ("Behind a pooler").

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Executor, Postgres, Transaction};

use crate::store::StoreError;
use crate::store::migrations::{self, Files};

/// The URL option that says a transaction-mode pooler is in between.
const OPTION: &str = "pooler";

/// Takes `pooler=…` out of `url` (sqlx would warn about it) and says
/// whether it asks for transaction mode. `session` and `none` mean a
/// direct connection or a session-mode pooler, which need nothing.
pub(crate) fn split(url: &str) -> Result<(String, bool), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), false));
    };
    let mut pooled = false;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((OPTION, "transaction")) => pooled = true,
            Some((OPTION, "session" | "none")) => {}
            Some((OPTION, other)) => {
                return Err(StoreError::Database(sqlx::Error::Configuration(
                    format!("{OPTION}={other:?} in the database URL: expected transaction, session or none").into(),
                )));
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, pooled))
}

/// A connection for a read or a single statement: from the pool as it is,
/// or, behind a pooler, inside a transaction ([`Conn::done`] commits it).
pub(super) enum Conn {
    Direct(PoolConnection<Postgres>),
    Pinned(Transaction<'static, Postgres>),
}

impl Conn {
    pub(super) async fn open(pool: &PgPool, pooled: bool) -> Result<Self, StoreError> {
        Ok(if pooled {
            Conn::Pinned(pool.begin().await?)
        } else {
            Conn::Direct(pool.acquire().await?)
        })
    }

    /// Ends the transaction, if there is one.
    pub(super) async fn done(self) -> Result<(), StoreError> {
        if let Conn::Pinned(tx) = self {
            tx.commit().await?;
        }
        Ok(())
    }
}

impl Deref for Conn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Direct(c) => c,
            Conn::Pinned(tx) => tx,
        }
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Direct(c) => c,
            Conn::Pinned(tx) => tx,
        }
    }
}

/// Applies the migrations of `files` not yet applied, in one transaction,
/// without named statements or session locks; refuses a database whose
/// applied migrations differ from these files, as sqlx's migrator does.
pub(super) async fn migrate(pool: &PgPool, files: Files) -> Result<(), StoreError> {
    let migrator = migrations::migrator(files).await?;
    let mut tx = pool.begin().await?;
    // A statement without parameters goes out as a simple query: no
    // prepared statement, and several statements in one string.
    tx.execute(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations ( \
             version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, \
             checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL); \
         LOCK TABLE _sqlx_migrations IN SHARE ROW EXCLUSIVE MODE",
    )
    .await?;
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?;
    for migration in migrator.iter() {
        if let Some((_, checksum, success)) =
            applied.iter().find(|(v, _, _)| *v == migration.version)
        {
            if !success {
                return Err(sqlx::migrate::MigrateError::Dirty(migration.version).into());
            }
            if checksum.as_slice() != &*migration.checksum {
                return Err(sqlx::migrate::MigrateError::VersionMismatch(migration.version).into());
            }
            continue;
        }
        let started = std::time::Instant::now();
        let sql: &str = &migration.sql;
        tx.execute(sql).await?;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, $4)",
        )
        .bind(migration.version)
        .bind(&*migration.description)
        .bind(&*migration.checksum)
        .bind(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX))
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn the_pooler_option_is_taken_out_of_the_url() {
        let (url, pooled) = split("postgres://u@h:6432/db?pooler=transaction").unwrap();
        assert_eq!((url.as_str(), pooled), ("postgres://u@h:6432/db", true));
        let (url, pooled) =
            split("postgres://u@h/db?sslmode=require&pooler=transaction&application_name=a")
                .unwrap();
        assert_eq!(
            (url.as_str(), pooled),
            ("postgres://u@h/db?sslmode=require&application_name=a", true)
        );
        let (url, pooled) = split("postgres://u@h/db?pooler=session").unwrap();
        assert_eq!((url.as_str(), pooled), ("postgres://u@h/db", false));
        assert_eq!(
            split("postgres://u@h/db").unwrap(),
            ("postgres://u@h/db".into(), false)
        );
        let e = split("postgres://u@h/db?pooler=statement").unwrap_err();
        assert!(e.to_string().contains("expected transaction"), "{e}");
    }
}
