//! SQLite's one writer connection and its transactions (`WriteTx`).
//!
//! Architecture invariant: **a write that returns `Ok` is in the file.**
//! SQLite rolls a transaction back by itself on `SQLITE_FULL`, I/O errors and
//! a few others, while a client library may still believe it is open. sqlx's
//! transaction bookkeeping does not survive that: its `ROLLBACK` then fails,
//! its depth counter stays at one, the next `begin()` becomes a `SAVEPOINT`
//! and every later "commit" a `RELEASE` inside a transaction that is never
//! committed — until the next error rolls all of them back. That is how a
//! full disk once lost hundreds of acknowledged events. So the writer does
//! not use sqlx transactions: [`WriteTx`] issues `BEGIN IMMEDIATE` and
//! `COMMIT` itself on a connection of its own, and throws that connection
//! away after any error inside a transaction (closing it rolls back whatever
//! SQLite still holds). A plain `BEGIN` also fails loudly if a transaction
//! were somehow still open, instead of nesting silently.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteTransactionManager};
use sqlx::{ConnectOptions, TransactionManager};
use tokio::sync::{Mutex, MutexGuard};

use crate::store::StoreError;

/// The writer connection, opened on first use and discarded after any error
/// inside a transaction.
pub(super) struct Writer {
    pub(super) options: SqliteConnectOptions,
    /// `None` until the first write and after a discarded connection.
    pub(super) conn: Mutex<Option<SqliteConnection>>,
    /// Negative control only (`--unsafe-sqlx-transactions`): write through
    /// sqlx's transaction bookkeeping and keep the connection after errors,
    /// as ackflow once did, so the tests can show the checkers catching the
    /// loss it causes on a full disk.
    pub(super) unsafe_sqlx_transactions: bool,
}

/// An open write transaction; holds the writer. Dropping it without
/// [`WriteTx::commit`] (an error, a cancelled future) discards the
/// connection, which rolls back whatever SQLite still holds.
pub(super) struct WriteTx<'a> {
    guard: MutexGuard<'a, Option<SqliteConnection>>,
    /// True between a successful `BEGIN` and a successful `COMMIT`.
    open: bool,
    /// See [`Writer::unsafe_sqlx_transactions`].
    unsafe_sqlx_transactions: bool,
}

impl Writer {
    pub(super) async fn begin(&self) -> Result<WriteTx<'_>, StoreError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(self.options.connect().await?);
        }
        let mut tx = WriteTx {
            guard,
            open: true,
            unsafe_sqlx_transactions: self.unsafe_sqlx_transactions,
        };
        if tx.unsafe_sqlx_transactions {
            SqliteTransactionManager::begin(tx.conn(), None).await?;
            return Ok(tx);
        }
        // IMMEDIATE takes the write lock now, so a busy database fails here
        // (after busy_timeout) rather than half-way through the batch.
        sqlx::query("BEGIN IMMEDIATE").execute(tx.conn()).await?;
        Ok(tx)
    }
}

impl WriteTx<'_> {
    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        self.guard
            .as_mut()
            .expect("a WriteTx always holds a connection until dropped")
    }

    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        if self.unsafe_sqlx_transactions {
            SqliteTransactionManager::commit(self.conn()).await?;
        } else {
            sqlx::query("COMMIT").execute(self.conn()).await?;
        }
        self.open = false;
        Ok(())
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if self.open && self.unsafe_sqlx_transactions {
            // The old way: queue sqlx's rollback and keep the connection.
            if let Some(conn) = self.guard.as_mut() {
                SqliteTransactionManager::start_rollback(conn);
            }
            return;
        }
        if self.open && self.guard.take().is_some() {
            tracing::warn!("sqlite write failed inside a transaction; writer connection discarded");
        }
    }
}
