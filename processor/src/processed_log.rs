//! `--processed-log`: two lines per event an algorithm processes, one when it
//! starts and one when it ends (`life seq attempt start|end at_us`, or
//! `retry` instead of `end` when the algorithm asked to retry later),
//! written in the order they happen across all running calls; and a line
//! `life 0 0 hold at_us` whenever this processor starts holding its starts
//! because core may deliver elsewhere (`hold.rs`). `at_us` is the wall
//! clock in microseconds since the Unix epoch, so lines of processes on one
//! machine compare. The end-to-end checker reads it to prove order per key,
//! that no key ran twice at once (in one life, or in two lives except
//! where the first one lost its place meanwhile), and that no seq was
//! processed twice in one life (again only after a `retry`).
//!
//! The start's time is read before the run checks whether starts are held,
//! and the hold's after they are: an event that started despite a hold
//! shows a start after that hold.
//!
//! Lines are buffered and written in chunks; the executor flushes before it
//! hands acks back, so the checker never sees a result whose processing is
//! missing from the log, and the start of an at-most-once event is written
//! before its algorithm runs, so an abandoned one without a start line never
//! started.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Shared by every running call; `None` inside when no log was asked for.
#[derive(Clone, Default)]
pub struct ProcessedLog {
    inner: Option<Arc<Mutex<Inner>>>,
}

struct Inner {
    file: std::fs::File,
    buf: String,
    life: String,
}

impl ProcessedLog {
    /// Appends to `path`, tagging every line with `life` (the processor id).
    pub fn open(path: &std::path::Path, life: String) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            inner: Some(Arc::new(Mutex::new(Inner {
                file,
                buf: String::new(),
                life,
            }))),
        })
    }

    /// `seq` started at `at` (read before the run checked the hold). The
    /// start of an at-most-once event is written at once: if a kill
    /// follows, the checker must know it may have run (core then abandons
    /// it), not find its line lost with the buffer.
    pub fn start(&self, seq: u64, attempt: u32, at_most_once: bool, at: u64) {
        self.record(seq, attempt, "start", at);
        if at_most_once {
            self.flush();
        }
    }

    pub fn end(&self, seq: u64, attempt: u32) {
        self.record(seq, attempt, "end", now_us());
    }

    /// The call ended asking to retry later: the event may start again.
    pub fn retry(&self, seq: u64, attempt: u32) {
        self.record(seq, attempt, "retry", now_us());
    }

    /// Starts are held from now on (read after the hold was set).
    pub fn hold(&self) {
        self.record(0, 0, "hold", now_us());
    }

    fn record(&self, seq: u64, attempt: u32, phase: &str, at: u64) {
        let Some(inner) = &self.inner else { return };
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        use std::fmt::Write as _;
        let Inner { buf, life, .. } = &mut *inner;
        let _ = writeln!(buf, "{life} {seq} {attempt} {phase} {at}");
        if inner.buf.len() > 64 * 1024 {
            inner.flush();
        }
    }

    /// Writes what is buffered.
    pub fn flush(&self) {
        if let Some(inner) = &self.inner {
            inner.lock().unwrap_or_else(|e| e.into_inner()).flush();
        }
    }
}

/// The wall clock in microseconds since the Unix epoch, as the log's lines
/// carry it.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Inner {
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.file.write_all(self.buf.as_bytes());
            self.buf.clear();
        }
    }
}
