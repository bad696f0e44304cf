//! Permits for at-most-once events (`Event.claim`): a run about to start
//! one claims it and waits for core's answer before the algorithm runs, so
//! that a crash abandons only events that may have run (core grants an
//! event once its sent mark is durable, and never twice).
//!
//! The runs ([`Permits::claim`]) and the stream loop (which sends the
//! claims and hands out core's answers) share one [`Permits`]. A claim is
//! sent as soon as it is made and again with every status report until
//! answered (a new stream included: the answer to a claim sent on a stream
//! that ended never comes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};

/// Claims waiting for core's answer; cheap to clone.
#[derive(Clone, Default)]
pub struct Permits {
    inner: Arc<Mutex<Inner>>,
    /// Woken when a claim is made that the stream loop has not sent.
    fresh: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    /// Each claim's run, waiting for the answer (true: granted).
    waiting: BTreeMap<u64, oneshot::Sender<bool>>,
    /// Claims made since the stream loop last took them.
    unsent: Vec<u64>,
}

impl Permits {
    /// Claims `seq` and waits for core's answer: true when granted (run
    /// it), false when refused (core resolved it without this processor:
    /// skip it, without a result).
    pub async fn claim(&self, seq: u64) -> bool {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.inner.lock().expect("permits lock");
            inner.waiting.insert(seq, tx);
            inner.unsent.push(seq);
        }
        self.fresh.notify_one();
        // A dropped sender means the processor is stopping: run nothing.
        rx.await.unwrap_or(false)
    }

    /// Resolves when a claim was made that has not been taken.
    pub async fn fresh(&self) {
        self.fresh.notified().await
    }

    /// The claims made since the last call.
    pub fn take_fresh(&self) -> Vec<u64> {
        std::mem::take(&mut self.inner.lock().expect("permits lock").unsent)
    }

    /// Every claim still waiting for an answer, lowest first (sent again
    /// with status reports and on a new stream).
    pub fn waiting(&self) -> Vec<u64> {
        let mut inner = self.inner.lock().expect("permits lock");
        inner.unsent.clear();
        inner.waiting.keys().copied().collect()
    }

    /// Core's answer (`Permits`). Answers to no claim (repeated, or to a
    /// claim of an earlier stream already answered) change nothing.
    pub fn answer(&self, granted: &[u64], refused: &[u64]) {
        let mut inner = self.inner.lock().expect("permits lock");
        for (seqs, verdict) in [(granted, true), (refused, false)] {
            for seq in seqs {
                if let Some(run) = inner.waiting.remove(seq) {
                    let _ = run.send(verdict);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_claim_waits_for_its_answer_and_is_sent_again_until_answered() {
        let permits = Permits::default();
        let granted = tokio::spawn({
            let p = permits.clone();
            async move { p.claim(7).await }
        });
        let refused = tokio::spawn({
            let p = permits.clone();
            async move { p.claim(9).await }
        });
        while permits.waiting().len() < 2 {
            permits.fresh().await;
        }
        assert!(permits.take_fresh().is_empty(), "waiting() took them");
        assert_eq!(permits.waiting(), vec![7, 9], "repeated until answered");
        permits.answer(&[7, 8], &[]);
        assert!(granted.await.unwrap());
        assert_eq!(permits.waiting(), vec![9]);
        permits.answer(&[], &[9]);
        assert!(!refused.await.unwrap());
        assert!(permits.waiting().is_empty());
    }
}
