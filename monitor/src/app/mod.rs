//! The dashboard's state and how events change it.
//!
//! [`App::handle`] is the only place state changes. It does no I/O: it takes
//! one [`AppEvent`] (a key, an update from core's admin stream, a change of
//! the connection to core, a tick) and may return a [`Command`] that the I/O
//! side carries out. Rendering ([`crate::ui::render`]) only reads the state,
//! so tests can build any screen by feeding events and drawing it.
//!
//! `keys.rs` turns keys into state changes and commands; `admin.rs` turns
//! core's admin stream (snapshots, the feed) and the connection's changes
//! into state and log lines.
//!
//! Architecture invariant: nothing in this module reads a clock. Everything
//! time-related comes in through events (the snapshot's own fields, the
//! feed's `at_us`, the client's retry countdown), which keeps snapshot tests
//! deterministic.

use std::collections::VecDeque;
use std::time::Duration;

use ackflow_proto::v1 as pb;
use ratatui::crossterm::event::KeyEvent;

mod admin;
mod keys;

/// Interval of [`AppEvent::Tick`].
pub const TICK: Duration = Duration::from_millis(200);
/// Samples kept for each sparkline (one per snapshot, about 24 s at 200 ms).
pub const SPARKLINE_SAMPLES: usize = 120;
/// Results kept for the results table.
pub const MAX_RESULTS: usize = 500;
/// Lines kept in the event log.
pub const MAX_LOG_LINES: usize = 500;
/// Rows moved by PgUp / PgDn. The state does not know how tall a panel is
/// on screen, so a page is a fixed number of rows.
pub const PAGE_ROWS: usize = 10;
/// Slowest demo traffic rate, in events per second.
pub const MIN_DEMO_RATE: u32 = 1;
/// Fastest demo traffic rate, in events per second.
pub const MAX_DEMO_RATE: u32 = 5000;
/// A floor holder held longer than this, in microseconds, holds the window
/// back long enough to show: the lanes line highlights it and the event log
/// notes it when it lets go.
pub const FLOOR_HELD_LONG_US: u64 = 1_000_000;

/// State of the monitor's own connection to core's admin service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Waiting to dial core, or dialling. `attempt` counts tries since the
    /// watch stream was last up (1 for the first); `next_retry` is how long
    /// until the try starts (zero while it is under way).
    Connecting { attempt: u32, next_retry: Duration },
    /// The watch stream is open.
    Connected,
    /// The last try failed or the watch stream ended, for this reason.
    Unreachable { error: String },
}

/// Everything that can change the dashboard's state.
// Updates are by far the most frequent event, so keeping them inline (no
// box, no allocation per update) is worth the larger channel slots.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum AppEvent {
    /// The 200 ms heartbeat of the UI loop.
    Tick,
    /// A key press.
    Key(KeyEvent),
    /// An update from core's `Admin.Watch` stream.
    Admin(pb::watch_response::Update),
    /// The connection to core changed.
    Connection(ConnState),
    /// The terminal was resized (nothing to change; the loop redraws).
    Resize,
    /// A command sent to core finished; becomes a line in the event log.
    CommandDone(CommandOutcome),
}

/// How a [`Command`] sent to core ended, in words for the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// Whether core accepted the command.
    pub ok: bool,
    /// What happened, e.g. "pause relayed to the processor".
    pub text: String,
}

/// Work for the I/O side, returned by [`App::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `Admin.Pause`.
    Pause,
    /// `Admin.Resume`.
    Resume,
    /// `Admin.SetFaults`.
    SetFaults(pb::Faults),
    /// `Admin.Requeue` of this dead seq.
    Requeue(u64),
    /// Leave the dashboard.
    Quit,
    /// The demo traffic rate went up; the new rate is [`App::demo_rate`].
    RateUp,
    /// The demo traffic rate went down; the new rate is [`App::demo_rate`].
    RateDown,
}

/// The panel that scrolls with the arrow keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The in-flight table.
    InFlight,
    /// The results table.
    Results,
    /// The event log.
    Log,
    /// The dead list (only while it has entries); arrows move the selection.
    Dead,
}

/// A named fault-injection setting that `f` cycles through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultProfile {
    /// Shown on the dashboard.
    pub name: &'static str,
    /// Sent to core with `Admin.SetFaults`.
    pub faults: pb::Faults,
}

const NO_FAULTS: pb::Faults = pb::Faults {
    drop_events: 0.0,
    drop_acks: 0.0,
    duplicate: 0.0,
    delay_ms: 0,
    cut_every_s: 0,
};

/// The profiles `f` cycles through, in order.
pub const FAULT_PROFILES: [FaultProfile; 4] = [
    FaultProfile {
        name: "none",
        faults: NO_FAULTS,
    },
    FaultProfile {
        name: "lossy acks",
        faults: pb::Faults {
            drop_acks: 0.3,
            ..NO_FAULTS
        },
    },
    FaultProfile {
        name: "duplicates",
        faults: pb::Faults {
            duplicate: 0.3,
            ..NO_FAULTS
        },
    },
    FaultProfile {
        name: "flapping link",
        faults: pb::Faults {
            cut_every_s: 5,
            ..NO_FAULTS
        },
    },
];

/// What a line in the event log is about; decides its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// Core sent an event again after its ack deadline passed.
    Retransmit,
    /// The processor asked to process an event again later.
    Retry,
    /// The processor reported duplicate drops.
    Duplicate,
    /// The processor connected to or disconnected from core.
    Connection,
    /// The processor was paused or resumed.
    Pause,
    /// An event was parked as dead.
    Dead,
    /// A dead event was published again.
    Requeued,
    /// An event held the acked floor longer than [`FLOOR_HELD_LONG_US`]
    /// (head-of-line) and has now let go.
    FloorHeld,
    /// The monitor fell behind and core skipped feed events for it.
    Lagged,
    /// The monitor's own doings: its connection to core, command replies.
    Monitor,
    /// A command core refused or that could not be sent.
    Error,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When it happened, in microseconds since the Unix epoch: core's time
    /// for feed events; for the monitor's own lines, core's time at the
    /// latest update plus the ticks since (`None` before the first update).
    pub at_us: Option<i64>,
    /// What the line is about.
    pub kind: LogKind,
    /// The line itself, without the time.
    pub text: String,
}

/// Scroll offsets of the scrolling panels, in rows from their top.
///
/// Results and the log are shown newest first, so 0 means "follow the
/// newest"; the in-flight table is in seq order, so 0 shows the lowest seqs,
/// the ones holding the acked floor back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scroll {
    /// Rows of the in-flight table above the first one shown.
    pub in_flight: usize,
    /// Newer results above the first one shown.
    pub results: usize,
    /// Newer log lines above the first one shown.
    pub log: usize,
}

/// The dashboard's whole state.
#[derive(Debug, Clone)]
pub struct App {
    /// Core's admin address as the user gave it, for the header and errors.
    pub core_addr: String,
    /// The monitor's connection to core.
    pub conn: ConnState,
    /// Why the last connection try failed; kept while the client counts down
    /// to the next try so the screen can say both. Cleared on connect.
    pub last_error: Option<String>,
    /// The latest snapshot from core (kept while disconnected).
    pub snapshot: Option<pb::Snapshot>,
    /// Retransmits per snapshot interval, oldest first.
    pub retransmit_samples: VecDeque<u64>,
    /// Duplicate drops per snapshot interval, oldest first.
    pub duplicate_drop_samples: VecDeque<u64>,
    /// The latest results with their keys, oldest first, in the order core
    /// stored them (not seq order: keys are processed side by side).
    pub results: VecDeque<pb::ResultFeed>,
    /// The event log, oldest first.
    pub log: VecDeque<LogLine>,
    /// The panel the arrow keys act on.
    pub focus: Focus,
    /// How far each scrolling panel is scrolled.
    pub scroll: Scroll,
    /// Index into the snapshot's dead list of the entry `r` requeues.
    pub selected_dead: usize,
    /// Whether the key help overlay is shown.
    pub show_help: bool,
    /// Index into [`FAULT_PROFILES`] of the last profile chosen with `f`.
    pub fault_profile: usize,
    /// The demo's traffic rate in events per second; `None` outside the demo.
    pub demo_rate: Option<u32>,
    /// Ticks since the last update from core, to flag a stalled stream.
    pub ticks_since_update: u32,
    /// Core's clock at its latest update (snapshot or feed event), in
    /// microseconds since the Unix epoch. Together with
    /// `ticks_since_update` it dates the monitor's own log lines without
    /// reading a clock here.
    pub core_time_us: Option<i64>,
    /// The local time zone's offset from UTC in seconds, for the log's
    /// clock. Set once by the I/O side; 0 (UTC) in tests.
    pub utc_offset_s: i32,
}

impl App {
    /// A dashboard for core at `core_addr`, not connected yet. `demo_rate`
    /// is the starting traffic rate in demo mode.
    pub fn new(core_addr: impl Into<String>, demo_rate: Option<u32>) -> Self {
        Self {
            core_addr: core_addr.into(),
            conn: ConnState::Connecting {
                attempt: 1,
                next_retry: Duration::ZERO,
            },
            last_error: None,
            snapshot: None,
            retransmit_samples: VecDeque::with_capacity(SPARKLINE_SAMPLES),
            duplicate_drop_samples: VecDeque::with_capacity(SPARKLINE_SAMPLES),
            results: VecDeque::with_capacity(MAX_RESULTS),
            log: VecDeque::with_capacity(MAX_LOG_LINES),
            focus: Focus::InFlight,
            scroll: Scroll::default(),
            selected_dead: 0,
            show_help: false,
            fault_profile: 0,
            demo_rate: demo_rate.map(|r| r.clamp(MIN_DEMO_RATE, MAX_DEMO_RATE)),
            ticks_since_update: 0,
            core_time_us: None,
            utc_offset_s: 0,
        }
    }

    /// Applies one event and returns what the I/O side should do, if
    /// anything.
    pub fn handle(&mut self, event: AppEvent) -> Option<Command> {
        match event {
            AppEvent::Tick => {
                self.ticks_since_update = self.ticks_since_update.saturating_add(1);
                None
            }
            AppEvent::Key(key) => self.on_key(key),
            AppEvent::Admin(update) => {
                self.on_admin(update);
                None
            }
            AppEvent::Connection(state) => {
                self.on_connection(state);
                None
            }
            AppEvent::Resize => None,
            AppEvent::CommandDone(outcome) => {
                let kind = if outcome.ok {
                    LogKind::Monitor
                } else {
                    LogKind::Error
                };
                self.push_log(None, kind, outcome.text);
                None
            }
        }
    }

    /// The processor's connection as core last reported it.
    pub fn processor_connection(&self) -> pb::ProcessorConnection {
        self.snapshot
            .as_ref()
            .and_then(|s| s.processor.as_ref())
            .map(|p| p.connection())
            .unwrap_or(pb::ProcessorConnection::Unspecified)
    }

    /// Dead entries in the latest snapshot (newest first).
    pub fn dead(&self) -> &[pb::DeadEntry] {
        self.snapshot.as_ref().map_or(&[], |s| s.dead.as_slice())
    }

    /// In-flight entries in the latest snapshot, in seq order.
    pub fn in_flight(&self) -> &[pb::InFlightEntry] {
        self.snapshot
            .as_ref()
            .map_or(&[], |s| s.in_flight.as_slice())
    }

    /// Whether the dashboard shows live data (as opposed to the
    /// "unreachable" or "connecting" message).
    pub fn is_connected(&self) -> bool {
        self.conn == ConnState::Connected
    }

    fn push_log(&mut self, at_us: Option<i64>, kind: LogKind, text: String) {
        let tick_us = TICK.as_micros() as i64;
        let at_us = at_us.or_else(|| {
            self.core_time_us
                .map(|t| t + i64::from(self.ticks_since_update) * tick_us)
        });
        push_bounded(&mut self.log, LogLine { at_us, kind, text }, MAX_LOG_LINES);
        if self.scroll.log > 0 {
            self.scroll.log = (self.scroll.log + 1).min(self.log.len().saturating_sub(1));
        }
    }
}

/// Appends `item`, dropping the oldest beyond `max`.
fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, max: usize) {
    while queue.len() >= max {
        queue.pop_front();
    }
    queue.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::watch_response::Update;
    use ratatui::crossterm::event::{KeyCode, KeyModifiers};

    fn key(code: KeyCode) -> AppEvent {
        AppEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn snapshot_with(connection: pb::ProcessorConnection, dead: Vec<pb::DeadEntry>) -> AppEvent {
        AppEvent::Admin(Update::Snapshot(pb::Snapshot {
            processor: Some(pb::ProcessorState {
                connection: connection as i32,
                ..Default::default()
            }),
            dead,
            ..Default::default()
        }))
    }

    fn dead(seq: u64) -> pb::DeadEntry {
        pb::DeadEntry {
            seq,
            kind: "fail".into(),
            reason: "rejected".into(),
            attempts: 3,
        }
    }

    #[test]
    fn p_pauses_a_running_processor_and_resumes_a_paused_one() {
        let mut app = App::new("http://core", None);
        app.handle(AppEvent::Connection(ConnState::Connected));
        // Before any snapshot the processor's state is unknown: pausing is
        // the safe reading of "p".
        assert_eq!(app.handle(key(KeyCode::Char('p'))), Some(Command::Pause));
        app.handle(snapshot_with(pb::ProcessorConnection::Running, vec![]));
        assert_eq!(app.handle(key(KeyCode::Char('p'))), Some(Command::Pause));
        app.handle(snapshot_with(pb::ProcessorConnection::Paused, vec![]));
        assert_eq!(app.handle(key(KeyCode::Char('p'))), Some(Command::Resume));
        app.handle(snapshot_with(pb::ProcessorConnection::Disconnected, vec![]));
        assert_eq!(app.handle(key(KeyCode::Char('p'))), Some(Command::Pause));
    }

    #[test]
    fn f_cycles_the_fault_profiles() {
        let mut app = App::new("http://core", None);
        app.handle(AppEvent::Connection(ConnState::Connected));
        let mut seen = Vec::new();
        for _ in 0..5 {
            match app.handle(key(KeyCode::Char('f'))) {
                Some(Command::SetFaults(faults)) => seen.push(faults),
                other => panic!("expected SetFaults, got {other:?}"),
            }
        }
        assert_eq!(seen[0].drop_acks, 0.3);
        assert_eq!(seen[1].duplicate, 0.3);
        assert_eq!(seen[2].cut_every_s, 5);
        assert_eq!(seen[3], NO_FAULTS);
        assert_eq!(seen[4].drop_acks, 0.3);
        assert_eq!(FAULT_PROFILES[app.fault_profile].name, "lossy acks");
    }

    #[test]
    fn q_and_ctrl_c_quit() {
        let mut app = App::new("http://core", None);
        assert_eq!(app.handle(key(KeyCode::Char('q'))), Some(Command::Quit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.handle(AppEvent::Key(ctrl_c)), Some(Command::Quit));
        // A plain "c" is not a quit.
        assert_eq!(app.handle(key(KeyCode::Char('c'))), None);
    }

    #[test]
    fn tab_moves_focus_and_includes_dead_only_when_there_is_some() {
        let mut app = App::new("http://core", None);
        assert_eq!(app.focus, Focus::InFlight);
        for expected in [Focus::Results, Focus::Log, Focus::InFlight] {
            app.handle(key(KeyCode::Tab));
            assert_eq!(app.focus, expected);
        }
        app.handle(snapshot_with(
            pb::ProcessorConnection::Running,
            vec![dead(7)],
        ));
        for expected in [Focus::Results, Focus::Log, Focus::Dead, Focus::InFlight] {
            app.handle(key(KeyCode::Tab));
            assert_eq!(app.focus, expected);
        }
        app.handle(key(KeyCode::BackTab));
        assert_eq!(app.focus, Focus::Dead);
        // The dead list empties (requeued): focus leaves it.
        app.handle(snapshot_with(pb::ProcessorConnection::Running, vec![]));
        assert_eq!(app.focus, Focus::InFlight);
    }

    #[test]
    fn r_requeues_the_selected_dead_entry() {
        let mut app = App::new("http://core", None);
        app.handle(AppEvent::Connection(ConnState::Connected));
        assert_eq!(app.handle(key(KeyCode::Char('r'))), None);
        app.handle(snapshot_with(
            pb::ProcessorConnection::Running,
            vec![dead(9), dead(4), dead(2)],
        ));
        assert_eq!(
            app.handle(key(KeyCode::Char('r'))),
            Some(Command::Requeue(9))
        );
        app.handle(key(KeyCode::Tab));
        app.handle(key(KeyCode::Tab));
        app.handle(key(KeyCode::Tab));
        assert_eq!(app.focus, Focus::Dead);
        app.handle(key(KeyCode::Down));
        assert_eq!(
            app.handle(key(KeyCode::Char('r'))),
            Some(Command::Requeue(4))
        );
        app.handle(key(KeyCode::PageDown));
        assert_eq!(
            app.handle(key(KeyCode::Char('r'))),
            Some(Command::Requeue(2))
        );
        // The list shrinks under the selection: it stays on a real entry.
        app.handle(snapshot_with(
            pb::ProcessorConnection::Running,
            vec![dead(9)],
        ));
        assert_eq!(
            app.handle(key(KeyCode::Char('r'))),
            Some(Command::Requeue(9))
        );
    }

    #[test]
    fn commands_for_core_wait_for_a_connection() {
        let mut app = App::new("http://core", None);
        for c in ['p', 'f', 'r'] {
            assert_eq!(app.handle(key(KeyCode::Char(c))), None);
        }
        assert_eq!(app.fault_profile, 0);
        assert_eq!(app.log.len(), 3);
        assert_eq!(app.log[0].kind, LogKind::Error);
        // Quitting and local keys still work.
        app.handle(key(KeyCode::Tab));
        assert_eq!(app.focus, Focus::Results);
        assert_eq!(app.handle(key(KeyCode::Char('q'))), Some(Command::Quit));
    }

    #[test]
    fn help_toggles_and_swallows_other_keys() {
        let mut app = App::new("http://core", None);
        app.handle(key(KeyCode::Char('?')));
        assert!(app.show_help);
        assert_eq!(app.handle(key(KeyCode::Char('p'))), None);
        assert!(!app.show_help);
        app.handle(key(KeyCode::Char('?')));
        app.handle(key(KeyCode::Esc));
        assert!(!app.show_help);
        app.handle(key(KeyCode::Char('?')));
        assert_eq!(app.handle(key(KeyCode::Char('q'))), Some(Command::Quit));
    }

    #[test]
    fn rate_keys_work_only_in_the_demo_and_stay_in_bounds() {
        let mut app = App::new("http://core", None);
        assert_eq!(app.handle(key(KeyCode::Char('+'))), None);
        let mut demo = App::new("http://core", Some(20));
        assert_eq!(demo.handle(key(KeyCode::Char('+'))), Some(Command::RateUp));
        assert_eq!(demo.demo_rate, Some(40));
        assert_eq!(
            demo.handle(key(KeyCode::Char('-'))),
            Some(Command::RateDown)
        );
        assert_eq!(demo.demo_rate, Some(20));
        for _ in 0..20 {
            demo.handle(key(KeyCode::Char('+')));
        }
        assert_eq!(demo.demo_rate, Some(MAX_DEMO_RATE));
        assert_eq!(demo.handle(key(KeyCode::Char('+'))), None);
        for _ in 0..20 {
            demo.handle(key(KeyCode::Char('-')));
        }
        assert_eq!(demo.demo_rate, Some(MIN_DEMO_RATE));
    }

    #[test]
    fn buffers_are_bounded_and_a_scrolled_view_stays_put() {
        let mut app = App::new("http://core", None);
        for seq in 1..=(MAX_RESULTS as u64 + 10) {
            app.handle(AppEvent::Admin(Update::Feed(pb::FeedEvent {
                at_us: 0,
                kind: Some(pb::feed_event::Kind::Result(pb::ResultFeed {
                    seq,
                    ..Default::default()
                })),
            })));
        }
        assert_eq!(app.results.len(), MAX_RESULTS);
        assert_eq!(app.results.front().map(|r| r.seq), Some(11));
        app.handle(key(KeyCode::Tab));
        app.handle(key(KeyCode::Down));
        assert_eq!(app.scroll.results, 1);
        app.handle(AppEvent::Admin(Update::Feed(pb::FeedEvent {
            at_us: 0,
            kind: Some(pb::feed_event::Kind::Result(pb::ResultFeed::default())),
        })));
        assert_eq!(app.scroll.results, 2);
        for _ in 0..(MAX_LOG_LINES + 5) {
            app.handle(AppEvent::Admin(Update::Lagged(1)));
        }
        assert_eq!(app.log.len(), MAX_LOG_LINES);
    }

    #[test]
    fn results_keep_their_keys_in_the_order_they_arrived() {
        let mut app = App::new("http://core", None);
        for (seq, key) in [(5, "user-2"), (3, "user-1"), (6, ""), (4, "user-1")] {
            app.handle(AppEvent::Admin(Update::Feed(pb::FeedEvent {
                at_us: 0,
                kind: Some(pb::feed_event::Kind::Result(pb::ResultFeed {
                    seq,
                    key: key.into(),
                    ..Default::default()
                })),
            })));
        }
        let shown: Vec<(u64, &str)> = app
            .results
            .iter()
            .map(|r| (r.seq, r.key.as_str()))
            .collect();
        assert_eq!(
            shown,
            [(5, "user-2"), (3, "user-1"), (6, ""), (4, "user-1")]
        );
    }

    #[test]
    fn sparklines_sample_the_totals_per_snapshot() {
        let mut app = App::new("http://core", None);
        for (retransmits, duplicate_drops) in [(5, 1), (8, 1), (8, 4), (2, 0)] {
            app.handle(AppEvent::Admin(Update::Snapshot(pb::Snapshot {
                totals: Some(pb::Totals {
                    retransmits,
                    duplicate_drops,
                    ..Default::default()
                }),
                ..Default::default()
            })));
        }
        // The first snapshot has no predecessor; the last one saw a restart.
        assert_eq!(app.retransmit_samples, [0, 3, 0, 0]);
        assert_eq!(app.duplicate_drop_samples, [0, 0, 3, 0]);
    }

    #[test]
    fn a_floor_held_long_is_logged_when_it_lets_go() {
        let mut app = App::new("http://core", None);
        let holder = |seq, held_ms: u64| {
            AppEvent::Admin(Update::Snapshot(pb::Snapshot {
                floor_holder: Some(pb::FloorHolder {
                    seq,
                    key: "slow-1".into(),
                    held_us: held_ms * 1000,
                    attempt: 1,
                }),
                ..Default::default()
            }))
        };
        // Short holds, and a long one still holding: nothing to say.
        for event in [
            holder(5, 30),
            holder(6, 400),
            holder(7, 200),
            holder(7, 2_600),
        ] {
            app.handle(event);
        }
        assert!(app.log.is_empty(), "{:?}", app.log);
        // It lets go: one line.
        app.handle(holder(9, 10));
        app.handle(AppEvent::Admin(Update::Snapshot(pb::Snapshot::default())));
        assert_eq!(app.log.len(), 1, "{:?}", app.log);
        assert_eq!(app.log[0].kind, LogKind::FloorHeld);
        assert_eq!(app.log[0].text, "floor held 2.6s by seq 7 (key slow-1)");
    }

    #[test]
    fn repeated_connection_failures_log_once() {
        let mut app = App::new("http://core", None);
        for attempt in 1..4 {
            app.handle(AppEvent::Connection(ConnState::Unreachable {
                error: "connection refused".into(),
            }));
            app.handle(AppEvent::Connection(ConnState::Connecting {
                attempt: attempt + 1,
                next_retry: Duration::from_secs(1),
            }));
        }
        assert_eq!(app.log.len(), 1);
        assert_eq!(app.last_error.as_deref(), Some("connection refused"));
        app.handle(AppEvent::Connection(ConnState::Connected));
        assert_eq!(app.last_error, None);
        assert!(app.is_connected());
    }
}
