//! Property test of the delivery protocol: core's `Sender` and the
//! processor's `Receiver`, wired through a simulated stream that loses,
//! duplicates, reorders and delays messages, with disconnections, processor
//! restarts, core restarts (losing everything not stored) and pauses.
//!
//! Checked at every step: both window bounds, the reorder-buffer and cache
//! bounds (nothing beyond the window, no cached ack evicted), strictly increasing processing per processor life, and that the
//! store is never asked to insert a second result for a seq. Checked at the
//! end, after the faults stop: every published event has exactly one stored
//! result and the floor is past the head.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ackflow_core::delivery::sender::{AckOutcome, Action, Offer, Sender, SenderConfig};
use ackflow_core::model::DeliveryCursor;
use ackflow_processor::receiver::{self, Receiver};
use ackflow_proto::v1 as pb;
use proptest::prelude::*;

type Seq = u64;

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    DeliverEvent(usize),
    DropEvent(usize),
    DuplicateEvent(usize),
    Work(u8),
    DeliverAck(usize),
    DropAck(usize),
    Store,
    Tick(u16),
    Disconnect,
    Reconnect,
    RestartProcessor,
    RestartCore,
    Pause,
    Resume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..20).prop_map(Op::Publish),
        8 => any::<usize>().prop_map(Op::DeliverEvent),
        2 => any::<usize>().prop_map(Op::DropEvent),
        2 => any::<usize>().prop_map(Op::DuplicateEvent),
        6 => (1u8..10).prop_map(Op::Work),
        6 => any::<usize>().prop_map(Op::DeliverAck),
        2 => any::<usize>().prop_map(Op::DropAck),
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

struct Sim {
    t0: Instant,
    now: Duration,
    config: SenderConfig,
    sender: Sender,
    /// Durable results (the store).
    stored: BTreeSet<Seq>,
    /// Accepted acks whose result is not durable yet.
    pending_store: Vec<Seq>,
    /// Highest published seq.
    head: Seq,
    /// Next seq the backlog reader offers.
    offered: Seq,
    connected: bool,
    paused: bool,
    /// Events in transit, each with the acked floor core sent along.
    to_processor: VecDeque<(pb::Event, Seq)>,
    to_core: VecDeque<pb::Ack>,
    receiver: Receiver,
    life: u32,
    work_queue: VecDeque<pb::Event>,
    /// Last seq processed in the current life.
    last_processed: Option<Seq>,
    window: u32,
    seed: u64,
}

impl Sim {
    fn new(window: u32, seed: u64) -> Self {
        let config = SenderConfig {
            window,
            max_deliver: 0,
            rto_initial: Duration::from_millis(500),
            rto_min: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        };
        Self {
            t0: Instant::now(),
            now: Duration::ZERO,
            config,
            sender: Sender::new(config, DeliveryCursor::default(), seed),
            stored: BTreeSet::new(),
            pending_store: Vec::new(),
            head: 0,
            offered: 1,
            connected: false,
            paused: false,
            to_processor: VecDeque::new(),
            to_core: VecDeque::new(),
            receiver: Receiver::new(window as usize, true),
            life: 0,
            work_queue: VecDeque::new(),
            last_processed: None,
            window,
            seed,
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn event(seq: Seq, attempt: u32) -> pb::Event {
        pb::Event {
            seq,
            attempt,
            kind: "sha256".into(),
            ..Default::default()
        }
    }

    fn pump(&mut self) {
        while self.sender.can_send() && self.offered <= self.head {
            let seq = self.offered;
            self.offered += 1;
            if self.sender.on_offer(seq, self.instant()) == Offer::Send && self.connected {
                self.to_processor
                    .push_back((Self::event(seq, 1), self.sender.acked_floor()));
            }
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { seq, attempt } | Action::Retransmit { seq, attempt, .. } => {
                    if self.connected {
                        self.to_processor
                            .push_back((Self::event(seq, attempt), self.sender.acked_floor()));
                    }
                }
                Action::Park { seq, .. } => panic!("seq {seq} parked with max_deliver = 0"),
            }
        }
    }

    fn receive(&mut self, actions: Vec<receiver::Action>) {
        for action in actions {
            match action {
                receiver::Action::Process(event) => self.work_queue.push_back(event),
                receiver::Action::Ack(ack) => self.to_core.push_back(ack),
            }
        }
    }

    fn disconnect(&mut self) {
        self.connected = false;
        self.sender.on_disconnect();
        self.to_processor.clear();
        self.to_core.clear();
    }

    fn reconnect(&mut self) {
        if self.connected {
            return;
        }
        self.connected = true;
        let actions = self
            .sender
            .on_connect(self.instant(), self.window, self.paused);
        let welcome = self.receiver.on_welcome(
            self.sender.acked_floor(),
            self.sender.window() as u32,
            self.paused,
        );
        self.receive(welcome);
        self.perform(actions);
    }

    fn store(&mut self) {
        for seq in &self.pending_store {
            assert!(
                self.stored.insert(*seq),
                "seq {seq}: the store was asked for a second result"
            );
        }
        let seqs = std::mem::take(&mut self.pending_store);
        self.sender.on_stored(seqs);
    }

    fn work(&mut self, n: usize) {
        for _ in 0..n {
            let Some(event) = self.work_queue.pop_front() else {
                return;
            };
            if let Some(last) = self.last_processed {
                assert!(
                    event.seq > last,
                    "life {}: processed {} after {last}",
                    self.life,
                    event.seq
                );
            }
            self.last_processed = Some(event.seq);
            let ack = pb::Ack {
                seq: event.seq,
                attempt: event.attempt,
                status: pb::ResultStatus::Ok as i32,
                ..Default::default()
            };
            if let receiver::Action::Ack(ack) = self.receiver.on_processed(ack)
                && self.connected
            {
                self.to_core.push_back(ack);
            }
        }
    }

    fn deliver_event(&mut self, event: pb::Event, floor: Seq) {
        let mut actions = self.receiver.on_floor(floor);
        actions.extend(self.receiver.on_event(event));
        self.receive(actions);
    }

    fn deliver_ack(&mut self, ack: pb::Ack) {
        let outcome = self.sender.on_ack(ack.seq, ack.attempt, self.instant());
        let fast = self.sender.on_acks_received(self.instant());
        self.perform(fast);
        match outcome {
            AckOutcome::Accepted { .. } => {
                assert!(
                    !self.stored.contains(&ack.seq),
                    "seq {} accepted again after its result was stored",
                    ack.seq
                );
                self.pending_store.push(ack.seq);
            }
            AckOutcome::Duplicate | AckOutcome::Unknown => {}
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Publish(n) => self.head += u64::from(n),
            Op::DeliverEvent(i) => {
                if !self.to_processor.is_empty() {
                    let i = i % self.to_processor.len();
                    let (event, floor) = self.to_processor.remove(i).expect("index in range");
                    self.deliver_event(event, floor);
                }
            }
            Op::DropEvent(i) => {
                if !self.to_processor.is_empty() {
                    let i = i % self.to_processor.len();
                    self.to_processor.remove(i);
                }
            }
            Op::DuplicateEvent(i) => {
                if !self.to_processor.is_empty() {
                    let i = i % self.to_processor.len();
                    let copy = self.to_processor[i].clone();
                    self.to_processor.push_back(copy);
                }
            }
            Op::Work(n) => self.work(n as usize),
            Op::DeliverAck(i) => {
                if !self.to_core.is_empty() {
                    let i = i % self.to_core.len();
                    let ack = self.to_core.remove(i).expect("index in range");
                    self.deliver_ack(ack);
                }
            }
            Op::DropAck(i) => {
                if !self.to_core.is_empty() {
                    let i = i % self.to_core.len();
                    self.to_core.remove(i);
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
            Op::RestartProcessor => {
                self.disconnect();
                self.receiver = Receiver::new(self.window as usize, true);
                self.life += 1;
                self.work_queue.clear();
                self.last_processed = None;
                self.reconnect();
            }
            Op::RestartCore => {
                self.disconnect();
                self.pending_store.clear();
                let floor = self.sender.acked_floor();
                self.seed += 1;
                self.sender = Sender::new(
                    self.config,
                    DeliveryCursor {
                        acked_floor: floor,
                        resolved_above: self.stored.range(floor..).copied().collect(),
                    },
                    self.seed,
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
        let window = u64::from(self.window);
        assert!(self.sender.window_used() <= window);
        assert!(self.sender.span() <= 2 * window);
        assert!(self.receiver.buffered() <= 2 * self.window as usize);
        assert!(self.receiver.cached() <= self.receiver.cache_capacity());
        let counters = self.receiver.counters();
        assert_eq!(counters.beyond_window, 0, "core sent beyond the window");
        assert_eq!(counters.acks_evicted, 0, "the ack cache overflowed");
        assert!(self.sender.acked_floor() <= self.head + 1);
    }

    /// Faults stop; everything must drain.
    fn heal(&mut self) {
        self.apply(Op::Resume);
        self.reconnect();
        for _ in 0..100_000 {
            if self.sender.acked_floor() == self.head + 1 {
                break;
            }
            self.pump();
            while let Some((event, floor)) = self.to_processor.pop_front() {
                self.deliver_event(event, floor);
            }
            self.work(usize::MAX);
            while let Some(ack) = self.to_core.pop_front() {
                self.deliver_ack(ack);
            }
            self.store();
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
            "delivery did not complete"
        );
        let expected: BTreeSet<Seq> = (1..=self.head).collect();
        assert_eq!(self.stored, expected, "every event has exactly one result");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn delivery_survives_any_schedule(
        window in prop_oneof![Just(1u32), Just(4), Just(16)],
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..600),
    ) {
        let mut sim = Sim::new(window, seed);
        sim.reconnect();
        for op in ops {
            sim.apply(op);
        }
        sim.heal();
    }
}
