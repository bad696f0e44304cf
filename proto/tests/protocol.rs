//! Property test of the delivery protocol: core's `Sender` and the
//! processor's `Receiver` (with its lanes), wired through a simulated stream
//! that loses, duplicates, reorders and delays messages, with
//! disconnections, processor restarts, core restarts (resuming from the
//! persisted floor, which lags), pauses, failed and rejected results,
//! retry-later requests, and parking after ack timeouts and requests; in
//! some cases every third seq is of an at-most-once kind.
//!
//! Every event says which seqs below it the processor may pass over
//! (`Event.after`, from `Sender::after`), as core's hub sends it.
//!
//! Each case picks an ordering (key or global), a concurrency, and windows
//! for core and the processor (the processor's may be smaller). Events get
//! keys from a small set, some none.
//!
//! Checked at every step: both window bounds; the reorder-buffer, lane and
//! cache bounds (nothing beyond the window, no cached ack evicted); at most
//! `concurrency` runs at once; per processor life, every seq processed at
//! most once, each lane processed in strictly increasing seq order, and never
//! two events of one lane at once (an event that asked to retry later may
//! run again, but nothing of its lane runs before it does); only a running
//! processor's event is parked after timeouts; with a poison event (processing it crashes the
//! processor, every time), only that event is parked for crashing; and the
//! store is never asked for a second result (or dead entry) for a seq; an
//! at-most-once event starts only once granted, is granted (or sent
//! granted, to a processor that does not claim) only after its sent mark is
//! durable and once in all (core restarts included), is started once in
//! all processor lives together, is abandoned only with its sent mark
//! durable (and, with a processor that claims, only if granted or after a
//! core restart), and only such an event is ever abandoned. Processors claim
//! at-most-once events (`Hello.claims`) in some cases, not in others, and
//! every other life in the rest. In some cases a kind has a pool of one run
//! at a time (`Lanes::cap_kind`): never two of its runs at once, and no run
//! mixes it with other kinds. Checked at the end, after the faults stop:
//! every published event has exactly one stored result or dead entry and
//! the floor is past the head.
//!
//! `ACKFLOW_PROPTEST_CASES` raises the number of cases for a longer soak.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ackflow_proto::protocol::DeliveryCursor;
use ackflow_proto::protocol::guarantee::Guarantee;
use ackflow_proto::protocol::lanes::Ordering;
use ackflow_proto::protocol::receiver::{self, Receiver};
use ackflow_proto::protocol::sender::{
    AckOutcome, Action, Offer, Progress, RetryOutcome, Sender, SenderConfig,
};
use ackflow_proto::v1 as pb;
use proptest::prelude::*;

mod common;

type Seq = u64;

/// Claims a waiting run makes before it gives its events back (the
/// processor's `CLAIM_PATIENCE`).
const CLAIM_TRIES: u32 = 3;

/// Indices into the messages in transit or the runs in progress; small, so
/// a failing case shrinks to something readable.
type Pick = u8;

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    DeliverEvent(Pick),
    DropEvent(Pick),
    DuplicateEvent(Pick),
    /// Process the next event of one run in progress, with this outcome.
    Work(Pick, Outcome),
    DeliverAck(Pick),
    DropAck(Pick),
    /// The processor's claims reach core (in any order with the rest).
    DeliverClaims(Pick),
    /// Core's permits reach the processor.
    DeliverPermits(Pick),
    /// The processor reports its progress (a status message).
    Status,
    /// Core tells the processor its floor (the hub's heartbeat).
    Heartbeat,
    Store,
    Tick(u16),
    Disconnect,
    Reconnect,
    RestartProcessor,
    RestartCore,
    Pause,
    Resume,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Failed,
    Reject,
    /// Retry later, asking for this many milliseconds.
    Retry(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        8 => Just(Outcome::Ok),
        1 => Just(Outcome::Failed),
        1 => Just(Outcome::Reject),
        1 => prop_oneof![Just(0u16), Just(700)].prop_map(Outcome::Retry),
    ];
    prop_oneof![
        4 => (1u8..20).prop_map(Op::Publish),
        8 => (0u8..32).prop_map(Op::DeliverEvent),
        2 => (0u8..32).prop_map(Op::DropEvent),
        2 => (0u8..32).prop_map(Op::DuplicateEvent),
        12 => ((0u8..8), outcome).prop_map(|(i, o)| Op::Work(i, o)),
        6 => (0u8..32).prop_map(Op::DeliverAck),
        2 => (0u8..32).prop_map(Op::DropAck),
        3 => (0u8..8).prop_map(Op::DeliverClaims),
        3 => (0u8..8).prop_map(Op::DeliverPermits),
        2 => Just(Op::Status),
        1 => Just(Op::Heartbeat),
        3 => Just(Op::Store),
        4 => (1u16..3000).prop_map(Op::Tick),
        1 => Just(Op::Disconnect),
        2 => Just(Op::Reconnect),
        1 => Just(Op::RestartProcessor),
        1 => Just(Op::RestartCore),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
    ]
}

/// The shape of one case.
#[derive(Debug, Clone, Copy)]
struct Setup {
    ordering: Ordering,
    core_window: u32,
    processor_window: u32,
    concurrency: usize,
    /// Distinct keys; events of seq % (keys + 1) == keys have none.
    keys: u64,
    max_deliver: u32,
    /// Processing this seq crashes the processor (a new life), every time.
    /// Random processor restarts are off then, so any event parked for
    /// crashing the processor must be this one.
    poison: Option<Seq>,
    /// Seqs divisible by it are of an at-most-once kind (0: none).
    once_every: u64,
    /// Which processor lives claim at-most-once events: 0 none, 1 all,
    /// 2 every other one.
    claims: u8,
    /// Seqs with `seq % 4 == 1` are of kind `hook`, which has a pool of one
    /// run at a time (`Lanes::cap_kind`).
    pool: bool,
    seed: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![3 => Just(Ordering::Key), 1 => Just(Ordering::Global)],
        prop_oneof![Just(1u32), Just(4), Just(16)],
        prop_oneof![Just(1u32), Just(4), Just(16)],
        prop_oneof![Just(1usize), Just(2), Just(8)],
        0u64..5,
        prop_oneof![Just(0u32), Just(3)],
        prop_oneof![3 => Just(None), 1 => (1u64..40).prop_map(Some)],
        prop_oneof![2 => Just(0u64), 1 => Just(3u64)],
        0u8..3,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                ordering,
                core_window,
                processor_window,
                concurrency,
                keys,
                max_deliver,
                poison,
                once_every,
                claims,
                pool,
                seed,
            )| {
                Setup {
                    ordering,
                    core_window,
                    processor_window,
                    concurrency,
                    keys,
                    max_deliver,
                    poison,
                    once_every,
                    claims,
                    pool,
                    seed,
                }
            },
        )
}

/// What a stored row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Result,
    Dead,
    /// An at-most-once event given up.
    Abandoned,
}

struct Sim {
    setup: Setup,
    t0: Instant,
    now: Duration,
    config: SenderConfig,
    sender: Sender,
    /// Durable results and dead entries (the store).
    stored: BTreeMap<Seq, Row>,
    /// Resolutions accepted by core whose row is not durable yet.
    pending_store: Vec<(Seq, Row)>,
    /// The floor persisted with the last store batch: it lags the sender's.
    persisted_floor: Seq,
    /// Highest published seq.
    head: Seq,
    /// Next seq the backlog reader offers.
    offered: Seq,
    connected: bool,
    paused: bool,
    /// Events in transit, each with the acked floor core sent along.
    to_processor: VecDeque<(pb::Event, Seq)>,
    /// Acks and status reports in transit, each with the processor's
    /// progress when it was sent.
    to_core: VecDeque<(Option<pb::Ack>, Progress)>,
    receiver: Receiver,
    life: u32,
    /// Runs in progress in this life: the events not processed yet.
    runs: Vec<VecDeque<pb::Event>>,
    /// Seqs processed in this life.
    processed: BTreeSet<Seq>,
    /// The highest floor this life was told.
    told_floor: Seq,
    /// Last seq processed per lane in this life.
    last_in_lane: HashMap<String, Seq>,
    /// At-most-once seqs waiting for their sent marks to be stored.
    pending_marks: Vec<Seq>,
    /// Durable sent marks.
    marked: BTreeSet<Seq>,
    /// At-most-once seqs core sent (in all its lives).
    sent_once: BTreeSet<Seq>,
    /// At-most-once seqs started by a processor (in all its lives).
    started_once: BTreeSet<Seq>,
    /// Claims in transit to core.
    claims: VecDeque<Vec<Seq>>,
    /// Permits in transit to the processor: granted, refused.
    permits: VecDeque<(Vec<Seq>, Vec<Seq>)>,
    /// Seqs core granted (in all its lives).
    granted: BTreeSet<Seq>,
    /// Seqs this processor life was granted.
    permitted: BTreeSet<Seq>,
    /// Claims made per seq since its run started waiting.
    claim_tries: HashMap<Seq, u32>,
}

impl Sim {
    fn new(setup: Setup) -> Self {
        let config = SenderConfig {
            window: setup.core_window,
            max_deliver: setup.max_deliver,
            rto_initial: Duration::from_millis(500),
            rto_min: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_crashes: if setup.poison.is_some() {
                3
            } else {
                setup.max_deliver
            },
        };
        Self {
            setup,
            t0: Instant::now(),
            now: Duration::ZERO,
            config,
            sender: Sender::new(config, DeliveryCursor::default(), setup.seed),
            stored: BTreeMap::new(),
            pending_store: Vec::new(),
            persisted_floor: 1,
            head: 0,
            offered: 1,
            connected: false,
            paused: false,
            to_processor: VecDeque::new(),
            to_core: VecDeque::new(),
            receiver: Self::receiver(setup),
            life: 0,
            runs: Vec::new(),
            processed: BTreeSet::new(),
            told_floor: 0,
            last_in_lane: HashMap::new(),
            pending_marks: Vec::new(),
            marked: BTreeSet::new(),
            sent_once: BTreeSet::new(),
            started_once: BTreeSet::new(),
            claims: VecDeque::new(),
            permits: VecDeque::new(),
            granted: BTreeSet::new(),
            permitted: BTreeSet::new(),
            claim_tries: HashMap::new(),
        }
    }

    /// Whether this processor life claims at-most-once events.
    fn life_claims(&self) -> bool {
        match self.setup.claims {
            0 => false,
            1 => true,
            _ => self.life.is_multiple_of(2),
        }
    }

    fn guarantee(&self, seq: Seq) -> Guarantee {
        match self.setup.once_every {
            n if n > 0 && seq.is_multiple_of(n) => Guarantee::AtMostOnce,
            _ => Guarantee::AtLeastOnce,
        }
    }

    /// Core puts `seq` on the stream (if one is open) as `attempt`.
    fn send(&mut self, seq: Seq, attempt: u32) {
        if !self.connected {
            return;
        }
        let event = self.event(seq, attempt);
        if event.claim {
            assert!(
                self.life_claims(),
                "seq {seq} sent to be claimed to a processor that does not claim"
            );
        } else if self.guarantee(seq) == Guarantee::AtMostOnce {
            assert!(
                self.marked.contains(&seq),
                "at-most-once seq {seq} sent before its mark was stored"
            );
            assert!(
                self.sent_once.insert(seq),
                "at-most-once seq {seq} sent twice"
            );
        }
        self.to_processor
            .push_back((event, self.sender.acked_floor()));
    }

    fn receiver(setup: Setup) -> Receiver {
        let mut receiver = Receiver::new(setup.processor_window as usize, setup.concurrency, true);
        if setup.pool {
            receiver.cap_kind("hook", 1);
        }
        receiver
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn key_of(&self, seq: Seq) -> String {
        let keys = self.setup.keys;
        match (seq.wrapping_mul(0x9e37_79b9) >> 3) % (keys + 1) {
            k if k == keys => String::new(),
            k => format!("k{k}"),
        }
    }

    /// The lane an event of `seq` belongs to under the case's ordering.
    fn lane_of(&self, seq: Seq) -> String {
        match self.setup.ordering {
            Ordering::Key => self.key_of(seq),
            _ => String::new(),
        }
    }

    fn event(&self, seq: Seq, attempt: u32) -> pb::Event {
        pb::Event {
            seq,
            attempt,
            kind: if self.setup.pool && seq % 4 == 1 {
                "hook"
            } else {
                "sha256"
            }
            .into(),
            key: self.key_of(seq),
            at_most_once: self.guarantee(seq) == Guarantee::AtMostOnce,
            claim: self.sender.needs_claim(seq),
            after: Some(self.sender.after(seq)),
            ..Default::default()
        }
    }

    fn pump(&mut self) {
        while self.sender.can_send() && self.offered <= self.head {
            let seq = self.offered;
            self.offered += 1;
            match self
                .sender
                .on_offer(seq, self.guarantee(seq), self.instant())
            {
                Offer::Send => self.send(seq, 1),
                Offer::Mark => self.pending_marks.push(seq),
                Offer::Abandon => {
                    // A restarted core found its sent mark: it may have run.
                    assert!(
                        self.marked.contains(&seq),
                        "seq {seq} abandoned without its mark"
                    );
                    self.resolve(seq, Row::Abandoned)
                }
                Offer::Skip | Offer::OutOfOrder => {}
            }
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { seq, attempt } | Action::Retransmit { seq, attempt, .. } => {
                    self.send(seq, attempt)
                }
                Action::Abandon { seq, .. } => {
                    assert!(
                        self.marked.contains(&seq),
                        "seq {seq} abandoned before its sent mark was durable"
                    );
                    if self.setup.claims == 1 {
                        // Only what may have run: granted, or found with its
                        // mark by a restarted core (which grants nothing).
                        assert!(
                            self.granted.contains(&seq) || self.sent_once.contains(&seq),
                            "seq {seq} abandoned, never granted"
                        );
                    }
                    self.resolve(seq, Row::Abandoned)
                }
                Action::Mark { seq } => self.pending_marks.push(seq),
                Action::Permit { seq } => {
                    assert!(
                        self.marked.contains(&seq),
                        "seq {seq} granted before its mark was durable"
                    );
                    assert!(self.granted.insert(seq), "seq {seq} granted twice");
                    assert!(
                        !self.sent_once.contains(&seq),
                        "seq {seq} granted after it went out granted"
                    );
                    if self.connected {
                        self.permits.push_back((vec![seq], Vec::new()));
                    }
                }
                Action::Park { seq, reason, .. } => {
                    if reason.starts_with("crashed") {
                        assert!(
                            self.setup.poison.is_none_or(|p| p == seq),
                            "seq {seq} parked for crashing the processor; only seq {:?} does",
                            self.setup.poison
                        );
                        self.resolve(seq, Row::Dead);
                        continue;
                    }
                    let rejected = reason.starts_with("rejected");
                    assert!(
                        rejected || self.setup.max_deliver > 0,
                        "seq {seq} parked with max_deliver = 0: {reason}"
                    );
                    // A retry-later request was made by a running
                    // processor, whatever happened since.
                    let asked = reason.starts_with("retry later");
                    assert!(
                        rejected || asked || (self.connected && !self.paused),
                        "seq {seq} parked after timeouts while the processor was {}",
                        if self.connected { "paused" } else { "absent" }
                    );
                    self.resolve(seq, Row::Dead);
                }
            }
        }
    }

    fn resolve(&mut self, seq: Seq, row: Row) {
        assert!(
            row != Row::Abandoned || self.guarantee(seq) == Guarantee::AtMostOnce,
            "at-least-once seq {seq} abandoned"
        );
        assert!(
            !self.stored.contains_key(&seq),
            "seq {seq} resolved again ({row:?}) after its {:?} row was stored",
            self.stored[&seq]
        );
        assert!(
            !self.pending_store.iter().any(|(s, _)| *s == seq),
            "seq {seq} resolved twice before its row was stored"
        );
        self.pending_store.push((seq, row));
    }

    fn receive(&mut self, actions: Vec<receiver::Action>) {
        for action in actions {
            match action {
                receiver::Action::Start(run) => self.start_run(run),
                receiver::Action::Ack(ack) => {
                    if self.connected {
                        self.to_core.push_back((Some(ack), self.progress()));
                    }
                }
            }
        }
    }

    fn progress(&self) -> Progress {
        Progress {
            processed_below: self.receiver.processed_below(),
            received_below: self.receiver.received_below(),
            awaiting: self.receiver.awaiting(),
        }
    }

    fn start_run(&mut self, run: Vec<pb::Event>) {
        assert!(!run.is_empty(), "an empty run was started");
        let lane = self.lane_of(run[0].seq);
        for event in &run {
            assert_eq!(
                self.lane_of(event.seq),
                lane,
                "life {}: run {:?} mixes lanes",
                self.life,
                run.iter().map(|e| e.seq).collect::<Vec<_>>()
            );
        }
        for other in &self.runs {
            if let Some(e) = other.front() {
                assert!(
                    self.lane_of(e.seq) != lane,
                    "life {}: lane {lane:?} started seq {} while seq {} of the same lane runs",
                    self.life,
                    run[0].seq,
                    e.seq
                );
            }
        }
        let kind = run[0].kind.clone();
        assert!(
            run.iter().all(|e| e.kind == kind) || !run.iter().any(|e| e.kind == "hook"),
            "life {}: run {:?} mixes the hook pool with other kinds",
            self.life,
            run.iter().map(|e| e.seq).collect::<Vec<_>>()
        );
        self.runs.push(run.into());
        let hooks = self
            .runs
            .iter()
            .filter(|r| r.front().is_some_and(|e| e.kind == "hook"))
            .count();
        assert!(
            hooks <= 1,
            "life {}: {hooks} runs of the hook pool at once",
            self.life
        );
        assert!(
            self.runs.len() <= self.setup.concurrency,
            "{} runs at once, concurrency {}",
            self.runs.len(),
            self.setup.concurrency
        );
    }

    fn disconnect(&mut self) {
        self.connected = false;
        self.sender.on_disconnect();
        self.to_processor.clear();
        self.to_core.clear();
        self.claims.clear();
        self.permits.clear();
    }

    fn reconnect(&mut self) {
        self.connect(false);
    }

    fn connect(&mut self, new_life: bool) {
        if self.connected {
            return;
        }
        self.connected = true;
        let actions = self.sender.on_connect(
            self.instant(),
            self.setup.processor_window,
            self.paused,
            new_life,
            self.life_claims(),
        );
        self.told_floor = self.told_floor.max(self.sender.acked_floor());
        let mut welcome = self.receiver.on_welcome(
            self.sender.acked_floor(),
            self.sender.window() as u32,
            self.paused,
            self.setup.ordering,
        );
        welcome.extend(self.receiver.pass_over(&self.sender.resolved_above(0)));
        self.receive(welcome);
        self.perform(actions);
    }

    fn store(&mut self) {
        // The floor persisted with a batch is the one before the batch.
        self.persisted_floor = self.sender.acked_floor();
        let rows = std::mem::take(&mut self.pending_store);
        for (seq, row) in &rows {
            assert!(
                self.stored.insert(*seq, *row).is_none(),
                "seq {seq}: the store was asked for a second row"
            );
        }
        self.sender.on_stored(rows.into_iter().map(|(s, _)| s));
        let marks = std::mem::take(&mut self.pending_marks);
        self.marked.extend(marks.iter().copied());
        let actions = self.sender.on_marked(marks, self.instant());
        self.perform(actions);
    }

    /// Whether run `i` waits for the permit of its next event; if so, it
    /// claims it (again). A run whose claim went unanswered
    /// [`CLAIM_TRIES`] times gives its events back to their lane, as the
    /// processor's does after its patience (`permits.rs`): core may not
    /// answer before an event that needs the run's slot is processed.
    fn claiming(&mut self, i: usize) -> bool {
        // (A run given back meanwhile may have shortened the list.)
        let Some(e) = self.runs.get(i).and_then(|r| r.front()) else {
            return true;
        };
        if !e.claim || self.permitted.contains(&e.seq) {
            return false;
        }
        let seq = e.seq;
        let tries = self.claim_tries.entry(seq).or_default();
        *tries += 1;
        if *tries > CLAIM_TRIES {
            self.claim_tries.remove(&seq);
            let run: Vec<pb::Event> = self.runs.swap_remove(i).into();
            let actions = self.receiver.on_returned(run);
            self.receive(actions);
            return true;
        }
        if self.connected {
            self.claims.push_back(vec![seq]);
        }
        true
    }

    /// Processes the next event of run `pick`.
    fn work(&mut self, pick: Pick, outcome: Outcome) {
        if self.runs.is_empty() {
            return;
        }
        let i = pick as usize % self.runs.len();
        if self.claiming(i) {
            return;
        }
        if let Some(e) = self.runs[i].front()
            && self.guarantee(e.seq) == Guarantee::AtMostOnce
        {
            assert!(
                !e.claim || self.granted.contains(&e.seq),
                "life {}: seq {} started without a permit",
                self.life,
                e.seq
            );
            assert!(
                self.started_once.insert(e.seq),
                "life {}: at-most-once seq {} started again",
                self.life,
                e.seq
            );
        }
        if self.setup.poison == self.runs[i].front().map(|e| e.seq) {
            self.restart_processor(); // the poison crashes it
            return;
        }
        let event = self.runs[i].pop_front().expect("runs are never empty");
        // A retry request ends the run: the rest goes back to the lane.
        let unprocessed: Vec<pb::Event> = match outcome {
            Outcome::Retry(_) => self.runs[i].drain(..).collect(),
            _ => Vec::new(),
        };
        if self.runs[i].is_empty() {
            self.runs.swap_remove(i);
        }
        assert!(
            !self.processed.contains(&event.seq),
            "life {}: seq {} processed twice",
            self.life,
            event.seq
        );
        let lane = self.lane_of(event.seq);
        if let Some(last) = self.last_in_lane.get(&lane) {
            assert!(
                event.seq > *last,
                "life {}: lane {lane:?} processed seq {} after seq {last}",
                self.life,
                event.seq
            );
        }
        if let Outcome::Retry(ms) = outcome {
            // Not processed: it may (and must) run again before its lane
            // goes on.
            let ack = pb::Ack {
                seq: event.seq,
                attempt: event.attempt,
                retry: true,
                retry_after_ms: u64::from(ms),
                ..Default::default()
            };
            let actions = self.receiver.on_retry_later(ack, unprocessed);
            self.receive(actions);
            return;
        }
        self.processed.insert(event.seq);
        self.last_in_lane.insert(lane, event.seq);
        let ack = pb::Ack {
            seq: event.seq,
            attempt: event.attempt,
            status: match outcome {
                Outcome::Ok => pb::ResultStatus::Ok,
                _ => pb::ResultStatus::Failed,
            } as i32,
            reject: matches!(outcome, Outcome::Reject),
            ..Default::default()
        };
        let actions = self.receiver.on_processed(ack);
        self.receive(actions);
    }

    /// The processor process ends (a kill or a crash) and starts again.
    fn restart_processor(&mut self) {
        self.disconnect();
        self.receiver = Self::receiver(self.setup);
        self.life += 1;
        self.runs.clear();
        self.processed.clear();
        self.told_floor = 0;
        self.last_in_lane.clear();
        self.permitted.clear();
        self.claim_tries.clear();
        self.connect(true);
    }

    /// Processes what may be, until every run left waits for a permit.
    fn work_all(&mut self) {
        loop {
            let Some(i) = (0..self.runs.len()).find(|&i| !self.claiming(i)) else {
                return;
            };
            self.work(i as Pick, Outcome::Ok);
        }
    }

    /// Core hears claims.
    fn deliver_claims(&mut self, seqs: Vec<Seq>) {
        let claimed = self.sender.on_claims(seqs);
        assert!(
            claimed.granted.is_empty(),
            "an at-least-once seq was claimed"
        );
        self.pending_marks.extend(claimed.mark);
        if !claimed.refused.is_empty() {
            self.permits.push_back((Vec::new(), claimed.refused));
        }
    }

    /// The processor hears permits: granted ones may start, refused ones
    /// are skipped by their runs.
    fn deliver_permits(&mut self, granted: Vec<Seq>, refused: Vec<Seq>) {
        self.permitted.extend(granted);
        for seq in refused {
            let Some(i) = self
                .runs
                .iter()
                .position(|r| r.front().map(|e| e.seq) == Some(seq))
            else {
                continue;
            };
            assert!(
                self.stored.contains_key(&seq) || self.pending_store.iter().any(|(s, _)| *s == seq),
                "seq {seq} refused but not resolved"
            );
            self.runs[i].pop_front();
            if self.runs[i].is_empty() {
                self.runs.swap_remove(i);
            }
            let actions = self.receiver.on_skipped(seq);
            self.receive(actions);
        }
    }

    fn deliver_event(&mut self, event: pb::Event, floor: Seq) {
        self.told_floor = self.told_floor.max(floor);
        let mut actions = self.receiver.on_floor(floor);
        actions.extend(self.receiver.on_event(event));
        self.receive(actions);
    }

    fn deliver(&mut self, ack: Option<pb::Ack>, progress: Progress) {
        let now = self.instant();
        let Some(ack) = ack else {
            let fast = self.sender.on_progress(now, progress);
            self.perform(fast);
            return;
        };
        if ack.retry {
            let after = Duration::from_millis(ack.retry_after_ms);
            if let RetryOutcome::End(end) = self.sender.on_retry(ack.seq, after, "busy", now) {
                self.perform(vec![end]);
            }
            let fast = self.sender.on_progress(now, progress);
            self.perform(fast);
            return;
        }
        let outcome = if ack.reject {
            match self.sender.on_reject(ack.seq, "panicked") {
                Some(park) => {
                    self.perform(vec![park]);
                    None
                }
                None => Some(AckOutcome::Duplicate),
            }
        } else {
            Some(self.sender.on_ack(ack.seq))
        };
        let fast = self.sender.on_progress(now, progress);
        self.perform(fast);
        if let Some(AckOutcome::Accepted { .. }) = outcome {
            self.resolve(ack.seq, Row::Result);
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Publish(n) => self.head += u64::from(n),
            Op::DeliverEvent(i) => {
                if !self.to_processor.is_empty() {
                    let i = i as usize % self.to_processor.len();
                    let (event, floor) = self.to_processor.remove(i).expect("index in range");
                    self.deliver_event(event, floor);
                }
            }
            Op::DropEvent(i) => {
                if !self.to_processor.is_empty() {
                    let i = i as usize % self.to_processor.len();
                    self.to_processor.remove(i);
                }
            }
            Op::DuplicateEvent(i) => {
                if !self.to_processor.is_empty() {
                    let i = i as usize % self.to_processor.len();
                    let copy = self.to_processor[i].clone();
                    self.to_processor.push_back(copy);
                }
            }
            Op::Work(i, outcome) => self.work(i, outcome),
            Op::DeliverAck(i) => {
                if !self.to_core.is_empty() {
                    let i = i as usize % self.to_core.len();
                    let (ack, progress) = self.to_core.remove(i).expect("index in range");
                    self.deliver(ack, progress);
                }
            }
            Op::DropAck(i) => {
                if !self.to_core.is_empty() {
                    let i = i as usize % self.to_core.len();
                    self.to_core.remove(i);
                }
            }
            Op::DeliverClaims(i) => {
                if !self.claims.is_empty() {
                    let i = i as usize % self.claims.len();
                    let seqs = self.claims.remove(i).expect("index in range");
                    self.deliver_claims(seqs);
                }
            }
            Op::DeliverPermits(i) => {
                if !self.permits.is_empty() {
                    let i = i as usize % self.permits.len();
                    let (granted, refused) = self.permits.remove(i).expect("index in range");
                    self.deliver_permits(granted, refused);
                }
            }
            Op::Status => {
                if self.connected {
                    self.to_core.push_back((None, self.progress()));
                }
            }
            Op::Heartbeat => {
                if self.connected {
                    // Its probe comes back at once: the path's round trip
                    // here is nil, so the RTO drops to its floor.
                    let now = self.instant();
                    if let Some(probe) = self.sender.probe(now) {
                        assert_eq!(self.sender.on_echo(probe, now), Some(Duration::ZERO));
                    }
                    let floor = self.sender.acked_floor();
                    self.told_floor = self.told_floor.max(floor);
                    let mut actions = self.receiver.on_floor(floor);
                    let from = self.sender.progress().received_below;
                    if from > 0 {
                        let resolved = self.sender.resolved_above(from);
                        actions.extend(self.receiver.pass_over(&resolved));
                    }
                    self.receive(actions);
                }
            }
            Op::Store => self.store(),
            Op::Tick(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                let actions = self.sender.on_tick(self.instant());
                self.perform(actions);
            }
            Op::Disconnect => self.disconnect(),
            Op::Reconnect => self.reconnect(),
            Op::RestartProcessor if self.setup.poison.is_some() => self.reconnect(),
            Op::RestartProcessor => self.restart_processor(),
            Op::RestartCore => {
                self.disconnect();
                self.pending_store.clear();
                self.pending_marks.clear();
                let floor = self.persisted_floor;
                self.sender = Sender::new(
                    self.config,
                    DeliveryCursor {
                        acked_floor: floor,
                        resolved_above: self.stored.range(floor..).map(|(s, _)| *s).collect(),
                        sent_above: self
                            .marked
                            .range(floor..)
                            .filter(|s| !self.stored.contains_key(s))
                            .copied()
                            .collect(),
                    },
                    self.setup.seed ^ u64::from(self.life) ^ self.now.as_millis() as u64,
                );
                self.offered = self.sender.next_to_send();
                self.reconnect();
            }
            Op::Pause | Op::Resume => {
                self.paused = matches!(op, Op::Pause);
                self.sender.set_paused(self.paused);
                if self.connected {
                    let actions = self.receiver.set_paused(self.paused);
                    self.receive(actions);
                }
            }
        }
        self.pump();
        self.check_bounds();
    }

    fn check_bounds(&self) {
        let window = self.sender.window();
        assert!(
            self.sender.window_used() <= window,
            "in-flight window: {} used of {window}",
            self.sender.window_used()
        );
        assert!(
            self.sender.span() <= 2 * window,
            "span above the floor: {} > 2 × {window}",
            self.sender.span()
        );
        let two_windows = 2 * self.setup.processor_window as usize;
        assert!(
            self.receiver.buffered() <= two_windows,
            "reorder buffer: {} > {two_windows}",
            self.receiver.buffered()
        );
        // Plus events of runs in progress that core parked meanwhile (after
        // timeouts): they finish in their own time, at most `concurrency`
        // runs of them; and events core resolved since the floor the
        // processor was last told (the next heartbeat or event batch tells
        // it).
        let floor = self.sender.acked_floor();
        let parked_running = self.runs.iter().flatten().filter(|e| e.seq < floor).count();
        let untold = floor.saturating_sub(self.told_floor.max(1)) as usize;
        assert!(
            self.receiver.unfinished() <= two_windows + parked_running + untold,
            "admitted, unfinished: {} > {two_windows} + {parked_running} parked while running + {untold} resolved, not told: {}",
            self.receiver.unfinished(),
            self.dump()
        );
        assert!(
            self.receiver.cached() <= self.receiver.cache_capacity(),
            "ack cache over capacity"
        );
        let counters = self.receiver.counters();
        assert_eq!(counters.beyond_window, 0, "core sent beyond the window");
        assert_eq!(counters.acks_evicted, 0, "the ack cache overflowed");
        assert!(
            self.sender.acked_floor() <= self.head + 1,
            "floor {} past the head {}",
            self.sender.acked_floor(),
            self.head
        );
    }

    /// Faults stop; everything must drain.
    fn heal(&mut self) {
        self.apply(Op::Resume);
        self.reconnect();
        let mut floor = (self.sender.acked_floor(), 0);
        for _ in 0..100_000 {
            if self.sender.acked_floor() == self.head + 1 {
                break;
            }
            // An at-most-once event whose one copy was lost on a stream
            // that stays open is never sent again: it waits for the stream
            // to end (then it is abandoned) or for --max-deliver. A real
            // stream loses nothing without ending, so end it here.
            if floor.0 == self.sender.acked_floor() {
                floor.1 += 1;
            } else {
                floor = (self.sender.acked_floor(), 0);
            }
            if self.setup.once_every > 0 && floor.1 == 20 {
                self.disconnect();
                self.reconnect();
            }
            self.pump();
            while let Some((event, floor)) = self.to_processor.pop_front() {
                self.deliver_event(event, floor);
            }
            self.work_all();
            while let Some(seqs) = self.claims.pop_front() {
                self.deliver_claims(seqs);
            }
            self.apply(Op::Status);
            while let Some((ack, progress)) = self.to_core.pop_front() {
                self.deliver(ack, progress);
            }
            self.store();
            while let Some((granted, refused)) = self.permits.pop_front() {
                self.deliver_permits(granted, refused);
            }
            // Nothing in transit and nothing more to send now (the window is
            // full, or everything was offered): let the retransmit timers fire.
            if self.to_processor.is_empty() && (!self.sender.can_send() || self.offered > self.head)
            {
                self.apply(Op::Tick(5000));
            }
        }
        assert_eq!(
            self.sender.acked_floor(),
            self.head + 1,
            "delivery did not complete: {}",
            self.dump()
        );
        let expected: BTreeSet<Seq> = (1..=self.head).collect();
        let stored: BTreeSet<Seq> = self.stored.keys().copied().collect();
        assert_eq!(stored, expected, "every event has exactly one row");
    }

    /// The state, for a drain that did not finish.
    fn dump(&self) -> String {
        format!(
            "{:?}; head {}, offered {}, floor {}, next_to_send {}, lowest_unacked {}, link {:?}; \
             receiver next_expected {}, processed_below {}, buffered {}, unfinished {}, running {}, \
             paused {}; runs {}; entries {:?}; run events {:?}; permitted {:?}; granted {:?}; claims {:?}",
            self.setup,
            self.head,
            self.offered,
            self.sender.acked_floor(),
            self.sender.next_to_send(),
            self.sender.lowest_unacked(),
            self.sender.link(),
            self.receiver.next_expected(),
            self.receiver.processed_below(),
            self.receiver.buffered(),
            self.receiver.unfinished(),
            self.receiver.running(),
            self.receiver.is_paused(),
            self.runs.len(),
            self.sender.entries().take(20).collect::<Vec<_>>(),
            self.runs
                .iter()
                .map(|r| r
                    .iter()
                    .map(|e| (e.seq, e.attempt, e.claim))
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            self.permitted,
            self.granted,
            self.claims,
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(), ..ProptestConfig::default() })]

    #[test]
    fn delivery_survives_any_schedule(
        setup in setup(),
        ops in proptest::collection::vec(op(), 1..600),
    ) {
        let mut sim = Sim::new(setup);
        sim.reconnect();
        for op in ops {
            sim.apply(op);
        }
        sim.heal();
    }
}
