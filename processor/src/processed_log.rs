//! `--processed-log`: two lines per event an algorithm processes, one when it
//! starts and one when it ends (`life seq attempt start|end`, or `retry`
//! instead of `end` when the algorithm asked to retry later), written in the
//! order they happen across all running calls. The end-to-end checker reads
//! it to prove order per key, that no key ran twice at once, and that no seq
//! was processed twice in one life (again only after a `retry`).
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

    /// `seq` starts. The start of an at-most-once event is written at once:
    /// if a kill follows, the checker must know it may have run (core then
    /// abandons it), not find its line lost with the buffer.
    pub fn start(&self, seq: u64, attempt: u32, at_most_once: bool) {
        self.record(seq, attempt, "start");
        if at_most_once {
            self.flush();
        }
    }

    pub fn end(&self, seq: u64, attempt: u32) {
        self.record(seq, attempt, "end");
    }

    /// The call ended asking to retry later: the event may start again.
    pub fn retry(&self, seq: u64, attempt: u32) {
        self.record(seq, attempt, "retry");
    }

    fn record(&self, seq: u64, attempt: u32, phase: &str) {
        let Some(inner) = &self.inner else { return };
        let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
        use std::fmt::Write as _;
        let Inner { buf, life, .. } = &mut *inner;
        let _ = writeln!(buf, "{life} {seq} {attempt} {phase}");
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

impl Inner {
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.file.write_all(self.buf.as_bytes());
            self.buf.clear();
        }
    }
}
