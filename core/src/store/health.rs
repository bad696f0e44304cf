//! Whether the store takes writes: the outcome of the last write, shared by
//! the writers (ingest, results) and read by `/readyz` and the metrics.
//!
//! A read that succeeds says little about a full disk (SQLite and PostgreSQL
//! both still answer `SELECT 1`), so readiness follows writes: the last
//! write failed → not ready, with the error's kind and since when; any
//! successful write → ready again.

use std::sync::Mutex;
use std::time::Instant;

use prometheus::{IntCounterVec, IntGauge};

use super::StoreError;

/// Why the store is not writable right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// [`StoreError::kind`] of the last failed write.
    pub kind: &'static str,
    /// When writes started failing (the first failure in a row).
    pub since: Instant,
    /// Failed writes in a row.
    pub failures: u64,
}

/// The last write's outcome, mirrored into the two metrics it is handed
/// (core's `ackflow_store_writable` and `ackflow_store_errors_total`): the
/// store knows nothing of the server's registry.
pub struct StoreHealth {
    failure: Mutex<Option<WriteFailure>>,
    /// 1 while writes succeed, 0 after a failed one.
    writable: IntGauge,
    /// Failed writes by operation and error kind.
    errors: IntCounterVec,
}

impl StoreHealth {
    pub fn new(writable: IntGauge, errors: IntCounterVec) -> Self {
        writable.set(1);
        Self {
            failure: Mutex::new(None),
            writable,
            errors,
        }
    }

    /// Records a successful write (`op`: append, resolve, probe).
    pub fn write_ok(&self, op: &str) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = failure.take() {
            self.writable.set(1);
            tracing::info!(
                op,
                failed_writes = f.failures,
                failing_for_ms = f.since.elapsed().as_millis() as u64,
                "the store takes writes again"
            );
        }
    }

    /// Records a failed write (`op`: append, resolve, probe). The first
    /// failure in a row is logged as an error, the rest at debug level, so a
    /// full disk does not flood the log.
    pub fn write_failed(&self, op: &str, error: &StoreError) {
        let kind = error.kind();
        self.errors.with_label_values(&[op, kind]).inc();
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match failure.as_mut() {
            Some(f) => {
                tracing::debug!(op, kind, error = %error, failures = f.failures + 1, "store write failed again");
                f.kind = kind;
                f.failures += 1;
            }
            None => {
                tracing::error!(op, kind, error = %error, "store write failed; publishes get 503 and /readyz says not ready until a write succeeds");
                self.writable.set(0);
                *failure = Some(WriteFailure {
                    kind,
                    since: Instant::now(),
                    failures: 1,
                });
            }
        }
    }

    /// `None` while writes succeed.
    pub fn failure(&self) -> Option<WriteFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_clears_a_run_of_failures() {
        // The store's own two metrics, as any registry would hand them.
        let writable = IntGauge::new("writable", "1 while writes succeed").unwrap();
        let errors = IntCounterVec::new(
            prometheus::Opts::new("errors", "failed writes"),
            &["op", "kind"],
        )
        .unwrap();
        let health = StoreHealth::new(writable.clone(), errors.clone());
        assert!(health.failure().is_none());
        assert_eq!(writable.get(), 1);
        let err = StoreError::Corrupt("x".into());
        health.write_failed("append", &err);
        health.write_failed("resolve", &err);
        let f = health.failure().expect("failing");
        assert_eq!((f.kind, f.failures), ("corrupt", 2));
        assert_eq!(writable.get(), 0);
        let count = |op| errors.with_label_values(&[op, "corrupt"]).get();
        assert_eq!((count("append"), count("resolve")), (1, 1));
        health.write_ok("append");
        assert!(health.failure().is_none());
        assert_eq!(writable.get(), 1);
    }
}
