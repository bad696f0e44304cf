//! Which processors the hub delivers to, and who waits: the rules of a
//! processor group, apart from the stream's I/O (`session.rs`) and the
//! routing of events between streams (`ackflow_proto::protocol::group`).
//!
//! Under `key` ordering every processor that says hello is active, on a
//! stream of its own, and the keys' partitions are spread over them (see
//! `protocol/group/`). Under `global` ordering one processor is active at a
//! time: a hello from another one waits as a hot standby, its stream
//! open, and takes over as soon as the active one's stream ends (its
//! in-flight events are resent to it at once, as to any new life).
//! Either way, a hello from a processor that already has a stream (its
//! `processor_id`: a reconnection, or a restart with a stable
//! `--processor-id`) replaces its stale session.
//!
//! An active processor that has said nothing for `--processor-silence-ms`
//! (it reports every 200 ms) while another processor could take its work
//! (a standby, or another active one) is frozen or cut off: its stream is
//! ended so that the work moves, instead of waiting about 10 s for HTTP/2
//! keepalive to notice; that end is not taken for a crash. When a stream
//! ends otherwise, standbys (and, under `key` ordering, the other
//! processors) wait `--processor-return-grace-ms` for the same processor
//! to come back (a reset connection) before they take over and the end
//! counts as a crash.
//!
//! No I/O and no clock of its own: the hub passes `now` and does the
//! sends, logs and feed events these decisions call for.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ackflow_proto::protocol::group::StreamId;

use super::session::{NewSession, Session};

/// The active sessions, the standbys, and what the next takeover means.
pub(super) struct Membership {
    /// Every processor is active (`key` ordering).
    keyed: bool,
    /// The processor streams the hub serves, by the group's stream: one
    /// under `global` ordering.
    pub(super) active: BTreeMap<StreamId, Session>,
    /// Processors (other than the active one) waiting to take over, in the
    /// order they said hello (`global` ordering).
    standbys: VecDeque<NewSession>,
    /// Ids given to sessions so far.
    sessions: u64,
    /// The active processor whose stream just ended, and until when a
    /// standby waits for it to come back (`global` ordering).
    returning: Option<(String, Instant)>,
    /// `--processor-silence-ms`.
    silence: Duration,
    /// `--processor-return-grace-ms`.
    return_grace: Duration,
    /// Where `recv_any` starts looking next, so that no session is
    /// always read first.
    pub(super) turn: usize,
}

impl Membership {
    pub(super) fn new(keyed: bool, silence: Duration, return_grace: Duration) -> Self {
        Self {
            keyed,
            active: BTreeMap::new(),
            standbys: VecDeque::new(),
            sessions: 0,
            returning: None,
            silence,
            return_grace,
            turn: 0,
        }
    }

    pub(super) fn silence(&self) -> Duration {
        self.silence
    }

    /// Whom a hello from `processor_id` would wait behind (`None`: it is
    /// welcomed now: under `key` ordering always, under `global` as the
    /// only one or as the active one's own return).
    pub(super) fn ahead_of(&self, processor_id: &str) -> Option<String> {
        if self.keyed {
            return None;
        }
        let own = |other: &str| other == processor_id;
        match (self.active.values().next(), &self.returning) {
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
        if !self.active.is_empty() || self.returning.is_some() {
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
            .filter(|_| self.active.is_empty() && !self.standbys.is_empty())
            .map(|(_, until)| *until)
    }

    /// The grace is over: the next standby may take over.
    pub(super) fn grace_over(&mut self) {
        self.returning = None;
    }

    /// Welcomes `new` on `stream`: returns the session's id and the
    /// session it replaces (the same processor's stale stream).
    pub(super) fn begin(
        &mut self,
        new: NewSession,
        stream: StreamId,
        now: Instant,
    ) -> (u64, Option<Session>) {
        self.returning = None;
        self.sessions += 1;
        let session = Session::new(self.sessions, stream, new, now);
        (self.sessions, self.active.insert(stream, session))
    }

    /// The session on `stream` ended. Standbys wait a moment for it: a
    /// reset connection comes back as the same life, no crash. One taking
    /// over at once would count every such end as a crash (core cannot
    /// tell a reset from a kill), make every event in flight a crash
    /// suspect, and after two resets narrow delivery to the suspects
    /// alone. With none waiting, whoever says hello first is welcomed, as
    /// a restarted processor under a new id should be at once. (Under
    /// `key` ordering the group keeps the stream for the grace.)
    pub(super) fn end(&mut self, stream: StreamId, now: Instant) -> Option<Session> {
        let session = self.active.remove(&stream)?;
        if self.standby_waits() {
            self.returning = Some((session.processor_id.clone(), now + self.return_grace));
        }
        Some(session)
    }

    /// The active sessions silent long enough for another processor to
    /// take their work, and for how long. Messages waiting in a session's
    /// channel were heard: the hub itself was busy (a slow store read),
    /// not the processor silent. With no one to take over, the stream is
    /// kept: a frozen processor may thaw.
    pub(super) fn silent(&self, now: Instant) -> Vec<(StreamId, Duration)> {
        let others = self.active.len() > 1 || self.standby_waits();
        if !others {
            return Vec::new();
        }
        let mut silent: Vec<(StreamId, Duration)> = self
            .active
            .iter()
            .map(|(stream, s)| (*stream, now.duration_since(s.last_heard), s))
            .filter(|(_, quiet, s)| *quiet >= self.silence && !s.has_waiting())
            .map(|(stream, quiet, _)| (stream, quiet))
            .collect();
        if silent.len() == self.active.len() && !self.standby_waits() {
            // All of them at once: the hub, not the processors, was stuck.
            silent.clear();
        }
        silent
    }

    /// A session was ended for its silence: frozen, it will not be back
    /// soon, so a standby takes over now.
    pub(super) fn after_silent_cut(&mut self) {
        self.returning = None;
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
        self.active.len() + self.standbys.len()
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
        let mut m = Membership::new(false, SILENCE, GRACE);
        let now = Instant::now();
        assert_eq!(m.ahead_of("a"), None);
        let (a, _a_rx) = hello("a", 1);
        let (id, replaced) = m.begin(a, 0, now);
        assert_eq!((id, replaced.is_none()), (1, true));
        assert_eq!(m.ahead_of("b").as_deref(), Some("a is active"));
        assert_eq!(m.ahead_of("a"), None);
        let (b, _b_rx) = hello("b", 7);
        assert_eq!(m.stand_by(b), 1);
        assert!(m.next_standby().is_none(), "a is active");
        // a reconnects: its stale stream replaced.
        let (a2, _a2_rx) = hello("a", 1);
        let (id, replaced) = m.begin(a2, 0, now);
        assert_eq!((id, replaced.map(|s| s.id)), (2, Some(1)));
        assert_eq!(m.standby_ids(), ["b"]);
        assert_eq!(m.connected(), 2);
    }

    #[test]
    fn under_key_ordering_every_processor_is_active() {
        let mut m = Membership::new(true, SILENCE, GRACE);
        let now = Instant::now();
        let (a, _a_rx) = hello("a", 1);
        m.begin(a, 0, now);
        assert_eq!(m.ahead_of("b"), None, "b is welcomed beside a");
        let (b, _b_rx) = hello("b", 2);
        let (_, replaced) = m.begin(b, 1, now);
        assert!(replaced.is_none());
        assert_eq!(m.connected(), 2);
        // One silent while another could take its work: cut; both silent:
        // the hub was stuck, nobody is cut.
        m.active.get_mut(&1).unwrap().last_heard = now + SILENCE;
        assert_eq!(m.silent(now + SILENCE), vec![(0, SILENCE)]);
        assert_eq!(m.silent(now + SILENCE * 2), vec![]);
        m.end(0, now);
        assert_eq!(
            m.silent(now + SILENCE * 3),
            vec![],
            "no one left to take it"
        );
    }

    #[test]
    fn standbys_wait_the_grace_for_an_ended_stream_and_then_take_over() {
        let mut m = Membership::new(false, SILENCE, GRACE);
        let now = Instant::now();
        let (a, _a_rx) = hello("a", 1);
        m.begin(a, 0, now);
        let (b, _b_rx) = hello("b", 2);
        m.stand_by(b);
        assert_eq!(m.end(0, now).map(|s| s.id), Some(1));
        assert_eq!(m.return_deadline(), Some(now + GRACE));
        assert!(m.next_standby().is_none(), "a may come back");
        assert_eq!(m.ahead_of("c").as_deref(), Some("a may come back"));
        assert_eq!(m.ahead_of("a"), None);
        m.grace_over();
        assert!(m.next_standby().is_some(), "b takes over");
    }

    #[test]
    fn with_no_open_standby_nobody_waits_for_an_ended_stream() {
        let mut m = Membership::new(false, SILENCE, GRACE);
        let now = Instant::now();
        let (a, _a_rx) = hello("a", 1);
        m.begin(a, 0, now);
        let (b, b_rx) = hello("b", 2);
        m.stand_by(b);
        drop(b_rx);
        m.end(0, now);
        assert_eq!(m.return_deadline(), None);
        assert!(m.next_standby().is_none(), "b's stream is closed");
        assert_eq!(m.ahead_of("c"), None, "c is welcomed at once");
    }

    #[test]
    fn a_silent_active_processor_gives_way_only_to_a_waiting_standby() {
        let mut m = Membership::new(false, SILENCE, GRACE);
        let now = Instant::now();
        let (a, _a_rx) = hello("a", 1);
        m.begin(a, 0, now);
        assert_eq!(m.silent(now + SILENCE), vec![], "no standby");
        let (b, _b_rx) = hello("b", 2);
        m.stand_by(b);
        assert_eq!(
            m.silent(now + SILENCE / 2),
            vec![],
            "not silent long enough"
        );
        assert_eq!(m.silent(now + SILENCE), vec![(0, SILENCE)]);
        m.end(0, now + SILENCE);
        m.after_silent_cut();
        assert!(m.next_standby().is_some(), "b takes over at once");
    }
}
