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
//!
//! A run does not wait for ever: a claim core cannot answer yet (an event
//! this processor holds from an earlier core, beyond what the core now
//! running has sent) would hold its run's slot while the event core needs
//! next waits for one. After [`CLAIM_PATIENCE`] the run gives its events
//! back to their lane and frees the slot; the claim stays, and an answer
//! that comes meanwhile is kept for the run that claims the event again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

/// How long a run waits for core's answer to a claim before it gives its
/// events back (see the module docs).
pub const CLAIM_PATIENCE: Duration = Duration::from_secs(1);

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
    /// Answers that came after their run gave up waiting (true: granted),
    /// for the next claim of the event.
    answered: BTreeMap<u64, bool>,
}

impl Permits {
    /// Claims `seq` and waits up to `patience` for core's answer:
    /// `Some(true)` when granted (run it), `Some(false)` when refused (core
    /// resolved it without this processor: skip it, without a result),
    /// `None` when no answer came (give the run back; see the module docs).
    pub async fn claim(&self, seq: u64, patience: Duration) -> Option<bool> {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.inner.lock().expect("permits lock");
            if let Some(answer) = inner.answered.remove(&seq) {
                return Some(answer);
            }
            let repeated = inner.waiting.insert(seq, tx).is_some();
            if !repeated {
                inner.unsent.push(seq);
            }
        }
        self.fresh.notify_one();
        match tokio::time::timeout(patience, rx).await {
            Ok(answer) => Some(answer.unwrap_or(false)),
            // A dropped sender means the processor is stopping: run nothing.
            Err(_) => None,
        }
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
                if let Some(run) = inner.waiting.remove(seq)
                    && run.send(verdict).is_err()
                {
                    // Its run gave up waiting: kept for the next claim.
                    inner.answered.insert(*seq, verdict);
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
        let long = Duration::from_secs(3600);
        let granted = tokio::spawn({
            let p = permits.clone();
            async move { p.claim(7, long).await }
        });
        let refused = tokio::spawn({
            let p = permits.clone();
            async move { p.claim(9, long).await }
        });
        while permits.waiting().len() < 2 {
            permits.fresh().await;
        }
        assert!(permits.take_fresh().is_empty(), "waiting() took them");
        assert_eq!(permits.waiting(), vec![7, 9], "repeated until answered");
        permits.answer(&[7, 8], &[]);
        assert_eq!(granted.await.unwrap(), Some(true));
        assert_eq!(permits.waiting(), vec![9]);
        permits.answer(&[], &[9]);
        assert_eq!(refused.await.unwrap(), Some(false));
        assert!(permits.waiting().is_empty());
    }

    #[tokio::test]
    async fn a_claim_not_answered_in_time_gives_up_and_its_late_answer_is_kept() {
        let permits = Permits::default();
        let short = Duration::from_millis(5);
        assert_eq!(permits.claim(5, short).await, None, "no answer");
        assert_eq!(permits.waiting(), vec![5], "still claimed");
        permits.answer(&[5], &[]);
        assert!(permits.waiting().is_empty());
        assert_eq!(
            permits.claim(5, short).await,
            Some(true),
            "the grant that came meanwhile"
        );
        assert_eq!(permits.claim(5, short).await, None, "used once");
    }
}
