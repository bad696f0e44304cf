//! Which processor the hub delivers to, and who waits: the rules of a
//! processor group, apart from the stream's I/O (`session.rs`).
//!
//! One processor is active at a time. A hello from the same processor (its
//! `processor_id`: a reconnection, or a restart with a stable
//! `--processor-id`) replaces the active stream, which is stale. A hello
//! from another processor waits as a hot standby, its stream open, and
//! takes over as soon as the active one's stream ends (its in-flight events
//! are resent to it at once, as to any new life); before, each new
//! processor replaced the active one, and two processors took turns.
//!
//! An active processor that has said nothing for `--processor-silence-ms`
//! (it reports every 200 ms) while a standby waits is frozen or cut off:
//! its stream is ended so that the standby takes over, instead of waiting
//! about 10 s for HTTP/2 keepalive to notice; that end is not taken for a
//! crash. When the active stream ends otherwise, standbys wait
//! `--processor-return-grace-ms` for the same processor to come back (a
//! reset connection) before one takes over and the end counts as a crash.
//!
//! No I/O and no clock of its own: the hub passes `now` and does the
//! sends, logs and feed events these decisions call for.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::session::{NewSession, Session};

/// The active session, the standbys, and what the next takeover means.
pub(super) struct Membership {
    /// The processor stream the hub serves.
    pub(super) active: Option<Session>,
    /// Processors (other than the active one) waiting to take over, in the
    /// order they said hello.
    standbys: VecDeque<NewSession>,
    /// Ids given to sessions so far.
    sessions: u64,
    /// The active processor whose stream just ended, and until when a
    /// standby waits for it to come back.
    returning: Option<(String, Instant)>,
    /// The next takeover is not a crash: the active processor was cut off
    /// for its silence, frozen or unreachable but not known to be dead.
    silent_cut: bool,
    /// The life and id of the last processor welcomed.
    last_life: Option<(u64, String)>,
    /// `--processor-silence-ms`.
    silence: Duration,
    /// `--processor-return-grace-ms`.
    return_grace: Duration,
}

impl Membership {
    pub(super) fn new(silence: Duration, return_grace: Duration) -> Self {
        Self {
            active: None,
            standbys: VecDeque::new(),
            sessions: 0,
            returning: None,
            silent_cut: false,
            last_life: None,
            silence,
            return_grace,
        }
    }

    pub(super) fn silence(&self) -> Duration {
        self.silence
    }

    /// Whom a hello from `processor_id` would wait behind (`None`: it is
    /// welcomed now, as the only one or as the active one's own return).
    pub(super) fn ahead_of(&self, processor_id: &str) -> Option<String> {
        let own = |other: &str| other == processor_id;
        match (&self.active, &self.returning) {
            (Some(active), _) if !own(&active.processor_id) => {
                Some(format!("{} is active", active.processor_id))
            }
            (None, Some((id, _))) if !own(id) => Some(format!("{id} may come back")),
            _ => None,
        }
    }

    /// `new` waits its turn; returns how many wait now.
    pub(super) fn stand_by(&mut self, new: NewSession) -> usize {
        self.standbys.push_back(new);
        self.standbys.len()
    }

    /// The standby to take over now: none is active, none may come back,
    /// and this one's stream is still open (closed ones are dropped).
    pub(super) fn next_standby(&mut self) -> Option<NewSession> {
        if self.active.is_some() || self.returning.is_some() {
            return None;
        }
        while let Some(next) = self.standbys.pop_front() {
            if !next.out_tx.is_closed() {
                return Some(next);
            }
        }
        None
    }

    /// Until when standbys wait for the processor whose stream ended
    /// (`None`: nobody waits for it).
    pub(super) fn return_deadline(&self) -> Option<Instant> {
        self.returning
            .as_ref()
            .filter(|_| self.active.is_none() && !self.standbys.is_empty())
            .map(|(_, until)| *until)
    }

    /// The grace is over: the next standby may take over.
    pub(super) fn grace_over(&mut self) {
        self.returning = None;
    }

    /// Welcomes `new`: returns the session's id, the session it replaces
    /// (the same processor's stale stream), and whether `new` is a new
    /// life for the `Sender` (its in-flight events crash suspects).
    pub(super) fn begin(&mut self, new: NewSession, now: Instant) -> (u64, Option<Session>, bool) {
        self.returning = None;
        let replaced = self.active.take();
        self.sessions += 1;
        let hello = &new.hello;
        let new_life = match &self.last_life {
            // A standby taking over from a processor cut off for its
            // silence: that one was frozen or unreachable, not known dead.
            _ if std::mem::take(&mut self.silent_cut) => false,
            Some((last, id)) if hello.life == 0 => *id != hello.processor_id || *last != 0,
            Some((last, _)) => *last != hello.life,
            None => true,
        };
        self.last_life = Some((hello.life, hello.processor_id.clone()));
        self.active = Some(Session::new(self.sessions, new, now));
        (self.sessions, replaced, new_life)
    }

    /// The active stream ended. Standbys wait a moment for it: a reset
    /// connection comes back as the same life, no crash. One taking over
    /// at once would count every such end as a crash (core cannot tell a
    /// reset from a kill), make every event in flight a crash suspect, and
    /// after two resets narrow delivery to the suspects alone. With none
    /// waiting, whoever says hello first is welcomed, as a restarted
    /// processor under a new id should be at once.
    pub(super) fn end(&mut self, now: Instant) -> Option<Session> {
        let session = self.active.take()?;
        if self.standby_waits() {
            self.returning = Some((session.processor_id.clone(), now + self.return_grace));
        }
        Some(session)
    }

    /// How long the active processor has been silent, if that is long
    /// enough for a waiting standby to take its place. Messages waiting in
    /// its channel were heard: the hub itself was busy (a slow store
    /// read), not the processor silent. Without a standby the stream is
    /// kept: a frozen processor may thaw, and there is no one to hand to.
    pub(super) fn silent_for(&self, now: Instant) -> Option<Duration> {
        let session = self.active.as_ref()?;
        let silent = now.duration_since(session.last_heard);
        (silent >= self.silence && !session.has_waiting() && self.standby_waits()).then_some(silent)
    }

    /// The active session was ended for its silence: frozen, it will not
    /// be back soon, so the standby takes over now, and the events in
    /// flight are not crash suspects.
    pub(super) fn after_silent_cut(&mut self) {
        self.returning = None;
        self.silent_cut = true;
    }

    fn standby_waits(&self) -> bool {
        self.standbys.iter().any(|s| !s.out_tx.is_closed())
    }

    /// Forgets standbys whose streams ended first.
    pub(super) fn forget_closed(&mut self) {
        self.standbys.retain(|s| !s.out_tx.is_closed());
    }

    /// The standbys' processor ids, in the order they take over.
    pub(super) fn standby_ids(&self) -> Vec<String> {
        self.standbys
            .iter()
            .map(|s| s.hello.processor_id.clone())
            .collect()
    }

    /// Processors with an open stream here, active or standing by.
    pub(super) fn connected(&self) -> usize {
        usize::from(self.active.is_some()) + self.standbys.len()
    }
}

#[cfg(test)]
mod tests {
    use ackflow_proto::v1 as pb;
    use tokio::sync::mpsc;

    use super::*;

    const SILENCE: Duration = Duration::from_millis(3_000);
    const GRACE: Duration = Duration::from_millis(500);

    /// A hello from `id` in `life`, and the receiving end of its stream
    /// (dropped: the stream is closed).
    fn hello(
        id: &str,
        life: u64,
    ) -> (
        NewSession,
        mpsc::Receiver<Result<pb::CoreMessage, tonic::Status>>,
    ) {
        let (out_tx, out_rx) = mpsc::channel(1);
        let (_in_tx, in_rx) = mpsc::channel(1);
        let hello = pb::Hello {
            processor_id: id.into(),
            life,
            ..Default::default()
        };
        (
            NewSession {
                hello,
                out_tx,
                in_rx,
            },
            out_rx,
        )
    }

    #[test]
    fn another_processor_stands_by_and_the_same_one_replaces_its_stream() {
        let mut m = Membership::new(SILENCE, GRACE);
        let now = Instant::now();
        assert_eq!(m.ahead_of("a"), None);
        let (a, _a_rx) = hello("a", 1);
        let (id, replaced, new_life) = m.begin(a, now);
        assert_eq!((id, replaced.is_none(), new_life), (1, true, true));
        assert_eq!(m.ahead_of("b").as_deref(), Some("a is active"));
        assert_eq!(m.ahead_of("a"), None);
        let (b, _b_rx) = hello("b", 7);
        assert_eq!(m.stand_by(b), 1);
        assert!(m.next_standby().is_none(), "a is active");
        // a reconnects: same life, its stale stream replaced.
        let (a2, _a2_rx) = hello("a", 1);
        let (id, replaced, new_life) = m.begin(a2, now);
        assert_eq!((id, replaced.map(|s| s.id), new_life), (2, Some(1), false));
        assert_eq!(m.standby_ids(), ["b"]);
        assert_eq!(m.connected(), 2);
    }

    #[test]
    fn standbys_wait_the_grace_for_an_ended_stream_and_then_take_over_as_a_new_life() {
        let mut m = Membership::new(SILENCE, GRACE);
        let now = Instant::now();
        let (a, _a_rx) = hello("a", 1);
        m.begin(a, now);
        let (b, _b_rx) = hello("b", 2);
        m.stand_by(b);
        assert_eq!(m.end(now).map(|s| s.id), Some(1));
        assert_eq!(m.return_deadline(), Some(now + GRACE));
        assert!(m.next_standby().is_none(), "a may come back");
        assert_eq!(m.ahead_of("c").as_deref(), Some("a may come back"));
        assert_eq!(m.ahead_of("a"), None);
        m.grace_over();
        let b = m.next_standby().expect("b takes over");
        let (_, _, new_life) = m.begin(b, now);
        assert!(new_life, "a's end counts as a crash");
    }

    #[test]
    fn with_no_open_standby_nobody_waits_for_an_ended_stream() {
        let mut m = Membership::new(SILENCE, GRACE);
        let now = Instant::now();
        let (a, _a_rx) = hello("a", 1);
        m.begin(a, now);
        let (b, b_rx) = hello("b", 2);
        m.stand_by(b);
        drop(b_rx);
        m.end(now);
        assert_eq!(m.return_deadline(), None);
        assert!(m.next_standby().is_none(), "b's stream is closed");
        assert_eq!(m.ahead_of("c"), None, "c is welcomed at once");
    }

    #[test]
    fn a_silent_active_processor_gives_way_only_to_a_waiting_standby_and_not_as_a_crash() {
        let mut m = Membership::new(SILENCE, GRACE);
        let now = Instant::now();
        let (a, _a_rx) = hello("a", 1);
        m.begin(a, now);
        assert_eq!(m.silent_for(now + SILENCE), None, "no standby");
        let (b, _b_rx) = hello("b", 2);
        m.stand_by(b);
        assert_eq!(
            m.silent_for(now + SILENCE / 2),
            None,
            "not silent long enough"
        );
        assert_eq!(m.silent_for(now + SILENCE), Some(SILENCE));
        m.end(now + SILENCE);
        m.after_silent_cut();
        let b = m.next_standby().expect("b takes over at once");
        let (_, _, new_life) = m.begin(b, now + SILENCE);
        assert!(!new_life, "frozen is not dead");
    }
}
