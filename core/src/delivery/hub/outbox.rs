//! A session's way out: the channel to its stream's writer, and the
//! messages the channel had no room for. The hub never waits for one
//! processor (a frozen link would stall every other): what the channel
//! cannot take now is queued, oldest first, and goes out as room frees
//! ([`Outbox::drain`], at the top of each turn of the hub's loop). A queue
//! that makes no progress for [`SEND_TIMEOUT`], or grows past [`MAX_QUEUED`]
//! messages, means the processor stopped reading: the session ends.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Outbound half of a processor stream.
pub type SessionTx = mpsc::Sender<Result<pb::CoreMessage, tonic::Status>>;

/// A processor whose channel takes no message for this long is cut off.
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages queued for one processor whose channel is full.
pub(super) const MAX_QUEUED: usize = 4096;

/// Why a session's way out failed: the session ends.
pub(super) type Cut = &'static str;

pub(super) struct Outbox {
    tx: SessionTx,
    /// Messages the channel had no room for, oldest first.
    queued: VecDeque<pb::CoreMessage>,
    /// When the queue last moved (`None`: empty).
    stuck_since: Option<Instant>,
    /// When a message last went into the channel (or the session started).
    pub(super) last_sent: Instant,
}

impl Outbox {
    pub(super) fn new(tx: SessionTx, now: Instant) -> Self {
        Self {
            tx,
            queued: VecDeque::new(),
            stuck_since: None,
            last_sent: now,
        }
    }

    /// Hands `msg` to the channel, or queues it behind the messages
    /// waiting for room. Err when the stream is closed, or the queue is
    /// full.
    pub(super) fn send(&mut self, msg: pb::CoreMessage, now: Instant) -> Result<(), Cut> {
        if self.queued.is_empty() {
            match self.tx.try_send(Ok(msg)) {
                Ok(()) => {
                    self.last_sent = now;
                    return Ok(());
                }
                Err(TrySendError::Full(Ok(msg))) => {
                    self.queued.push_back(msg);
                    self.stuck_since = Some(now);
                    return Ok(());
                }
                Err(_) => return Err("stream closed"),
            }
        }
        if self.queued.len() >= MAX_QUEUED {
            return Err("processor stopped reading");
        }
        self.queued.push_back(msg);
        Ok(())
    }

    /// Moves what the channel has room for out of the queue. Err when the
    /// stream is closed, or the queue made no progress for
    /// [`SEND_TIMEOUT`].
    pub(super) fn drain(&mut self, now: Instant) -> Result<(), Cut> {
        let mut moved = false;
        while let Some(msg) = self.queued.pop_front() {
            match self.tx.try_send(Ok(msg)) {
                Ok(()) => moved = true,
                Err(TrySendError::Full(Ok(msg))) => {
                    self.queued.push_front(msg);
                    break;
                }
                Err(_) => return Err("stream closed"),
            }
        }
        if moved {
            self.last_sent = now;
            self.stuck_since = Some(now);
        }
        if self.queued.is_empty() {
            self.stuck_since = None;
        }
        match self.stuck_since {
            Some(since) if now.duration_since(since) >= SEND_TIMEOUT => {
                Err("processor stopped reading")
            }
            _ => Ok(()),
        }
    }

    /// Whether messages wait for room in the channel.
    pub(super) fn backed_up(&self) -> bool {
        !self.queued.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u64) -> pb::CoreMessage {
        pb::CoreMessage {
            body: Some(pb::core_message::Body::Events(pb::EventBatch {
                events: Vec::new(),
                acked_floor: n,
            })),
        }
    }

    fn floor(got: Option<Result<pb::CoreMessage, tonic::Status>>) -> u64 {
        match got.expect("a message").expect("ok").body {
            Some(pb::core_message::Body::Events(batch)) => batch.acked_floor,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_the_channel_cannot_take_goes_out_in_order_as_room_frees() {
        let (tx, mut rx) = mpsc::channel(1);
        let t0 = Instant::now();
        let mut out = Outbox::new(tx, t0);
        for n in 1..=3 {
            out.send(msg(n), t0).unwrap();
        }
        assert!(out.backed_up());
        // No room yet: nothing moves, and that is not yet a cut.
        out.drain(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(floor(rx.try_recv().ok()), 1);
        let later = t0 + Duration::from_secs(2);
        out.drain(later).unwrap();
        assert_eq!(out.last_sent, later);
        // A message sent now goes behind the queue, not past it.
        out.send(msg(4), later).unwrap();
        for n in 2..=4 {
            assert_eq!(floor(rx.try_recv().ok()), n);
            out.drain(later).unwrap();
        }
        assert!(!out.backed_up());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_queue_that_stands_still_for_the_timeout_cuts_the_session() {
        let (tx, _rx) = mpsc::channel(1);
        let t0 = Instant::now();
        let mut out = Outbox::new(tx, t0);
        out.send(msg(1), t0).unwrap();
        out.send(msg(2), t0).unwrap();
        out.drain(t0 + SEND_TIMEOUT - Duration::from_millis(1))
            .unwrap();
        assert_eq!(
            out.drain(t0 + SEND_TIMEOUT),
            Err("processor stopped reading")
        );
    }

    #[test]
    fn progress_restarts_the_timeout() {
        let (tx, mut rx) = mpsc::channel(1);
        let t0 = Instant::now();
        let mut out = Outbox::new(tx, t0);
        for n in 1..=3 {
            out.send(msg(n), t0).unwrap();
        }
        let moved = t0 + SEND_TIMEOUT - Duration::from_secs(1);
        assert_eq!(floor(rx.try_recv().ok()), 1);
        out.drain(moved).unwrap();
        // Standing still since `moved`, not since `t0`.
        out.drain(moved + SEND_TIMEOUT - Duration::from_millis(1))
            .unwrap();
        assert!(out.drain(moved + SEND_TIMEOUT).is_err());
    }

    #[test]
    fn a_full_queue_or_a_closed_stream_cuts_the_session() {
        let (tx, rx) = mpsc::channel(1);
        let t0 = Instant::now();
        let mut out = Outbox::new(tx, t0);
        out.send(msg(0), t0).unwrap();
        for n in 0..MAX_QUEUED as u64 {
            out.send(msg(n), t0).unwrap();
        }
        assert_eq!(out.send(msg(0), t0), Err("processor stopped reading"));

        drop(rx);
        assert_eq!(out.drain(t0), Err("stream closed"));
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        assert_eq!(Outbox::new(tx, t0).send(msg(0), t0), Err("stream closed"));
    }
}
