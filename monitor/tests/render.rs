//! Snapshot tests of the rendered dashboard.
//!
//! Each screen is built the way the running monitor builds it: by feeding
//! `AppEvent`s through `App::handle`. All times come from the events, so
//! the screens are the same on every run. Review changes with
//! `INSTA_UPDATE=always cargo test -p ackflow-monitor` and read the `.snap`
//! files under `tests/snapshots`.

use std::time::Duration;

use ackflow_monitor::app::{App, AppEvent, CommandOutcome, ConnState};
use ackflow_monitor::ui;
use ackflow_proto::v1 as pb;
use pb::feed_event::Kind;
use pb::watch_response::Update;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// 2024-01-01 12:34:56 UTC, in microseconds since the Unix epoch.
const T0: i64 = 1_704_112_496_000_000;
const CORE: &str = "http://127.0.0.1:50051";

fn draw(app: &App, width: u16, height: u16) -> TestBackend {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal
        .draw(|frame| ui::render(app, frame))
        .expect("render");
    terminal.backend().clone()
}

fn key(app: &mut App, code: KeyCode) {
    app.handle(AppEvent::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn feed(app: &mut App, at_ms: i64, kind: Kind) {
    app.handle(AppEvent::Admin(Update::Feed(pb::FeedEvent {
        at_us: T0 + at_ms * 1000,
        kind: Some(kind),
    })));
}

fn result(seq: u64, key: &str, kind: &str, ok: bool, latency_us: u64, output: &str) -> Kind {
    Kind::Result(pb::ResultFeed {
        seq,
        key: key.into(),
        kind: kind.into(),
        status: if ok {
            pb::ResultStatus::Ok
        } else {
            pb::ResultStatus::Failed
        } as i32,
        latency_us,
        output: output.into(),
        attempt: 1,
    })
}

fn entry(
    seq: u64,
    key: &str,
    attempt: u32,
    age_ms: u64,
    left_ms: u64,
    backoff_ms: u64,
) -> pb::InFlightEntry {
    pb::InFlightEntry {
        seq,
        attempt,
        age_us: age_ms * 1000,
        next_retransmit_us: left_ms * 1000,
        backoff_us: backoff_ms * 1000,
        storing: false,
        key: key.into(),
        retry: false,
        at_most_once: false,
    }
}

/// The fields of a snapshot that differ between the scenarios.
struct Shape {
    head: u64,
    next_to_send: u64,
    acked_floor: u64,
    next_expected: u64,
    in_flight: Vec<pb::InFlightEntry>,
    /// The processor's state; `processor_id`, `session` and `buffered`
    /// are filled in by `snapshots`.
    processor: pb::ProcessorState,
    faults: pb::Faults,
    dead: Vec<pb::DeadEntry>,
    ordering: pb::Ordering,
    /// The floor holder of the last snapshot; its `held_us` grows by 200 ms
    /// per snapshot before it.
    floor_holder: Option<pb::FloorHolder>,
}

/// Feeds 40 snapshots, 200 ms apart, whose retransmit and duplicate drop
/// totals grow in a fixed pattern; the last one has `shape`.
fn snapshots(app: &mut App, shape: &Shape, retransmit_every: u64, rates: pb::Rates) {
    let mut totals = pb::Totals::default();
    for i in 0..40_u64 {
        totals.published = shape.head;
        totals.delivered = shape.next_to_send - 1 + totals.retransmits;
        totals.acks = shape.acked_floor - 1;
        totals.retransmits += (i % retransmit_every == 0) as u64 * (1 + i % 3);
        totals.duplicate_drops += (i % 7 == 3) as u64 * 2;
        totals.duplicate_acks = totals.duplicate_drops / 2;
        totals.retries = i / 10;
        totals.results_ok = shape.acked_floor - 40;
        totals.results_failed = 39 - shape.dead.len() as u64;
        totals.dead = shape.dead.len() as u64;
        let snapshot = pb::Snapshot {
            taken_at_us: T0 + i as i64 * 200_000,
            head: shape.head,
            next_to_send: shape.next_to_send,
            acked_floor: shape.acked_floor,
            next_expected: shape.next_expected,
            window: 256,
            window_used: (shape.next_to_send - shape.acked_floor) as u32,
            in_flight: shape.in_flight.clone(),
            rates: Some(rates),
            totals: Some(totals),
            processor: Some(pb::ProcessorState {
                processor_id: "p-5eed".into(),
                session: 3,
                buffered: 2,
                ..shape.processor.clone()
            }),
            faults: Some(shape.faults),
            srtt_us: 1_800,
            rto_us: 200_000,
            dead: shape.dead.clone(),
            ordering: shape.ordering as i32,
            floor_holder: shape.floor_holder.clone().map(|h| pb::FloorHolder {
                held_us: h.held_us.saturating_sub((39 - i) * 200_000),
                ..h
            }),
            suspects: 0,
            standbys: vec![],
            processors: vec![],
            waiting: 0,
            partitions: 0,
        };
        app.handle(AppEvent::Admin(Update::Snapshot(snapshot)));
        app.handle(AppEvent::Tick);
    }
}

fn running_app() -> App {
    let mut app = App::new(CORE, None);
    app.handle(AppEvent::Connection(ConnState::Connecting {
        attempt: 1,
        next_retry: Duration::ZERO,
    }));
    app.handle(AppEvent::Connection(ConnState::Connected));
    let shape = Shape {
        head: 1234,
        next_to_send: 1229,
        acked_floor: 1223,
        next_expected: 1226,
        in_flight: vec![
            entry(1223, "user-3", 2, 640, 150, 400),
            pb::InFlightEntry {
                seq: 1224,
                storing: true,
                key: "user-1".into(),
                ..Default::default()
            },
            entry(1225, "", 1, 210, 0, 200),
            // Asked by the processor to retry it later.
            pb::InFlightEntry {
                retry: true,
                ..entry(1226, "user-12", 2, 900, 400, 500)
            },
            entry(1227, "user-3", 1, 60, 140, 200),
            entry(1228, "user-7", 1, 10, 190, 200),
        ],
        processor: pb::ProcessorState {
            connection: pb::ProcessorConnection::Running as i32,
            running: 3,
            concurrency: 256,
            lanes_active: 4,
            processed_below: 1223,
            ..Default::default()
        },
        faults: pb::Faults {
            drop_acks: 0.3,
            ..Default::default()
        },
        dead: vec![],
        ordering: pb::Ordering::Key,
        floor_holder: Some(pb::FloorHolder {
            seq: 1223,
            key: "user-3".into(),
            held_us: 640_000,
            attempt: 2,
        }),
    };
    feed(
        &mut app,
        0,
        Kind::Connection(pb::ConnectionFeed {
            connected: true,
            processor_id: "p-5eed".into(),
            session: 3,
            reason: String::new(),
        }),
    );
    key(&mut app, KeyCode::Char('f'));
    snapshots(
        &mut app,
        &shape,
        4,
        pb::Rates {
            publish: 20.0,
            deliver: 21.4,
            ack: 19.8,
            retransmit: 1.4,
            duplicate_drop: 0.0,
        },
    );
    let outputs = [
        (
            "sha256",
            true,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
        ("wordcount", true, "7"),
        ("sum", true, "1042"),
        ("sleep", true, "slept 23 ms"),
        ("fail", false, "this algorithm always fails"),
        (
            "sha256",
            true,
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
        ),
        (
            "unknown-kind",
            false,
            "no algorithm for kind \"unknown-kind\"",
        ),
        ("sum", true, "-3.5"),
        ("wordcount", true, "11"),
        ("sleep", true, "slept 5 ms"),
    ];
    // Keys are processed side by side, so results are stored in seq order
    // within a key but not across keys.
    let keys = [
        "user-1", "user-12", "", "user-1", "slow-1", "user-3", "", "user-12", "user-3", "user-7",
    ];
    let order = [1, 0, 2, 4, 3, 5, 7, 6, 9, 8];
    for (n, i) in order.into_iter().enumerate() {
        let (kind, ok, output) = outputs[i];
        let seq = 1213 + i as u64;
        feed(
            &mut app,
            8000 + n as i64 * 50,
            result(seq, keys[i], kind, ok, 3_000 + i as u64 * 1_700, output),
        );
    }
    feed(
        &mut app,
        8100,
        Kind::Retransmit(pb::RetransmitFeed {
            seq: 1223,
            attempt: 2,
            backoff_us: 400_000,
        }),
    );
    feed(
        &mut app,
        8300,
        Kind::Duplicate(pb::DuplicateFeed {
            count: 2,
            total: 12,
        }),
    );
    app.handle(AppEvent::CommandDone(CommandOutcome {
        ok: true,
        text: "set faults: relayed to the processor".into(),
    }));
    app
}

fn paused_app() -> App {
    let mut app = App::new(CORE, Some(20));
    app.handle(AppEvent::Connection(ConnState::Connected));
    let shape = Shape {
        head: 1412,
        next_to_send: 1413,
        acked_floor: 1157,
        next_expected: 1157,
        in_flight: (1157..1169)
            .map(|seq| {
                let attempt = 3 + (seq % 3) as u32;
                let backoff = 200 << (attempt - 1);
                let key = match seq % 4 {
                    1 => "customer-7f3a9c2e-4b1d-49aa-8c55-1e0f6d2b9a77".to_string(),
                    0 => String::new(),
                    _ => format!("user-{}", seq % 16),
                };
                entry(
                    seq,
                    &key,
                    attempt,
                    9_000 - (seq - 1157) * 40,
                    backoff / 3,
                    backoff,
                )
            })
            .collect(),
        processor: pb::ProcessorState {
            connection: pb::ProcessorConnection::Paused as i32,
            running: 0,
            concurrency: 256,
            lanes_active: 1,
            processed_below: 1157,
            ..Default::default()
        },
        faults: pb::Faults::default(),
        dead: vec![
            pb::DeadEntry {
                seq: 977,
                kind: "sleep".into(),
                reason: "the processor rejected it (algorithm panicked)".into(),
                attempts: 1,
            },
            pb::DeadEntry {
                seq: 512,
                kind: "sum".into(),
                reason: "not acked after 20 attempts".into(),
                attempts: 20,
            },
        ],
        ordering: pb::Ordering::Global,
        floor_holder: Some(pb::FloorHolder {
            seq: 1157,
            key: "customer-7f3a9c2e-4b1d-49aa-8c55-1e0f6d2b9a77".into(),
            held_us: 9_000_000,
            attempt: 5,
        }),
    };
    feed(&mut app, 0, Kind::Pause(pb::PauseFeed { paused: true }));
    snapshots(
        &mut app,
        &shape,
        1,
        pb::Rates {
            publish: 20.0,
            deliver: 0.0,
            ack: 0.0,
            retransmit: 48.0,
            duplicate_drop: 12.5,
        },
    );
    for i in 0..8_u64 {
        let seq = 1157 + i;
        let attempt = 3 + (seq % 3) as u32;
        feed(
            &mut app,
            8000 + i as i64 * 20,
            Kind::Retransmit(pb::RetransmitFeed {
                seq,
                attempt,
                backoff_us: (200_000 << (attempt - 1)).min(5_000_000),
            }),
        );
    }
    feed(
        &mut app,
        8200,
        Kind::Duplicate(pb::DuplicateFeed {
            count: 8,
            total: 96,
        }),
    );
    feed(
        &mut app,
        8300,
        Kind::Dead(pb::DeadFeed {
            seq: 977,
            reason: "the processor rejected it (algorithm panicked)".into(),
            attempts: 1,
        }),
    );
    for i in 0..6_u64 {
        feed(
            &mut app,
            7000 + i as i64 * 10,
            result(
                1151 + i,
                // The long key is cut, control characters are replaced.
                match i {
                    1 => "customer-7f3a9c2e-4b1d-49aa-8c55-1e0f6d2b9a77",
                    3 => "line\nbreak",
                    _ => "",
                },
                "sha256",
                true,
                2_400,
                "e3b0c44298fc1c149afbf4c8996fb924",
            ),
        );
    }
    app
}

#[test]
fn running() {
    let app = running_app();
    insta::assert_snapshot!("running", draw(&app, 120, 40));
}

#[test]
fn paused_with_retransmits() {
    let app = paused_app();
    insta::assert_snapshot!("paused_with_retransmits", draw(&app, 120, 40));
}

#[test]
fn disconnected() {
    let mut app = running_app();
    app.handle(AppEvent::Connection(ConnState::Unreachable {
        error: "transport error: tcp connect error: Connection refused (os error 111)".into(),
    }));
    app.handle(AppEvent::Connection(ConnState::Connecting {
        attempt: 4,
        next_retry: Duration::from_millis(2_500),
    }));
    insta::assert_snapshot!("disconnected", draw(&app, 120, 40));
}

#[test]
fn running_80x24() {
    let app = running_app();
    insta::assert_snapshot!("running_80x24", draw(&app, 80, 24));
}

#[test]
fn paused_80x24() {
    let app = paused_app();
    insta::assert_snapshot!("paused_80x24", draw(&app, 80, 24));
}

#[test]
fn disconnected_80x24() {
    let mut app = App::new(CORE, None);
    app.handle(AppEvent::Connection(ConnState::Unreachable {
        error: "transport error: tcp connect error: Connection refused (os error 111)".into(),
    }));
    app.handle(AppEvent::Connection(ConnState::Connecting {
        attempt: 2,
        next_retry: Duration::from_millis(400),
    }));
    insta::assert_snapshot!("disconnected_80x24", draw(&app, 80, 24));
}

#[test]
fn help_80x24() {
    let mut app = paused_app();
    key(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!("help_80x24", draw(&app, 80, 24));
}

/// The screen's text, one line per row.
fn screen(backend: &TestBackend) -> String {
    let buffer = backend.buffer();
    buffer
        .content()
        .chunks(usize::from(buffer.area.width))
        .map(|row| row.iter().map(|cell| cell.symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The background colour of the first cell of `text` on the screen.
fn background_of(backend: &TestBackend, text: &str) -> Option<ratatui::style::Color> {
    let buffer = backend.buffer();
    let width = usize::from(buffer.area.width);
    for (y, row) in buffer.content().chunks(width).enumerate() {
        let line: Vec<&str> = row.iter().map(|cell| cell.symbol()).collect();
        let wanted: Vec<String> = text.chars().map(String::from).collect();
        if let Some(x) = line
            .windows(wanted.len())
            .position(|w| w.iter().zip(&wanted).all(|(a, b)| *a == b))
        {
            return Some(buffer.content()[y * width + x].bg);
        }
    }
    None
}

#[test]
fn keyed_lanes_and_the_floor_holder_show_in_both_layouts() {
    let app = running_app();
    for (width, height, keys) in [(120, 40, "keys active 4"), (80, 24, "keys 4")] {
        let s = screen(&draw(&app, width, height));
        for wanted in [
            "ordering key",
            "running 3/256",
            keys,
            "held 640ms attempt 2",
            // processed_below − 1, not next_expected − 1.
            "processed 1222",
            // Keys in the in-flight table, and "–" for an event without one.
            "1223 user-3",
            "1226 user-12",
            "1225 –",
        ] {
            assert!(
                s.contains(wanted),
                "{width}x{height}: no {wanted:?} in\n{s}"
            );
        }
        // Held less than a second: not highlighted.
        let backend = draw(&app, width, height);
        assert_ne!(
            background_of(&backend, "held"),
            Some(ratatui::style::Color::Yellow)
        );
    }
}

#[test]
fn crash_suspects_show_in_both_layouts_only_while_there_are_any() {
    let mut app = running_app();
    for (width, height) in [(120, 40), (80, 24)] {
        let s = screen(&draw(&app, width, height));
        assert!(!s.contains("suspects"), "{width}x{height}: none yet\n{s}");
    }
    if let Some(snapshot) = app.snapshot.as_mut() {
        snapshot.suspects = 17;
    }
    for (width, height, wanted) in [(120, 40, "crash suspects 17"), (80, 24, "suspects 17")] {
        let s = screen(&draw(&app, width, height));
        assert!(
            s.contains(wanted),
            "{width}x{height}: no {wanted:?} in\n{s}"
        );
    }
}

#[test]
fn standby_processors_show_in_the_status_line_and_their_arrival_in_the_log() {
    let mut app = running_app();
    let s = screen(&draw(&app, 120, 40));
    assert!(!s.contains("standing by"), "none yet\n{s}");
    if let Some(snapshot) = app.snapshot.as_mut() {
        snapshot.standbys = vec!["p-b".into(), "p-c".into()];
    }
    let s = screen(&draw(&app, 120, 40));
    assert!(s.contains("standing by: p-b, p-c"), "no standbys in\n{s}");
    // A standby's arrival, in the event log: not a disconnection.
    feed(
        &mut app,
        9_000,
        Kind::Connection(pb::ConnectionFeed {
            connected: false,
            processor_id: "p-b".into(),
            session: 0,
            reason: "standing by while p-5eed is active".into(),
        }),
    );
    let s = screen(&draw(&app, 160, 40));
    assert!(
        s.contains("processor p-b standing by while p-5eed is active"),
        "no standby line in the log\n{s}"
    );
    assert!(!s.contains("p-b disconnected"), "{s}");
}

#[test]
fn processors_sharing_the_keys_each_show_their_share_and_a_move_in_the_log() {
    let mut app = running_app();
    if let Some(snapshot) = app.snapshot.as_mut() {
        let first = snapshot.processor.clone().unwrap_or_default();
        snapshot.processors = vec![
            pb::ProcessorState {
                partitions: 131,
                in_flight: 12,
                ack_rate: 40.0,
                ..first.clone()
            },
            pb::ProcessorState {
                processor_id: "p-b".into(),
                session: 4,
                partitions: 125,
                in_flight: 7,
                ack_rate: 35.0,
                ..first
            },
        ];
    }
    let s = screen(&draw(&app, 200, 40));
    assert!(
        s.contains("p-5eed session 3: 131 partitions, 12 in flight, 40.0/s"),
        "no first processor's share in\n{s}"
    );
    assert!(
        s.contains("p-b session 4: 125 partitions, 7 in flight, 35.0/s"),
        "no second processor's share in\n{s}"
    );
    // Short of room, each keeps its share and drops its pace, both alike.
    let s = screen(&draw(&app, 150, 40));
    let status = s.lines().next().unwrap_or_default();
    assert!(
        status.contains("p-5eed session 3: 131 partitions")
            && status.contains("p-b session 4: 125 partitions")
            && !status.contains("in flight"),
        "not both shares, short, in\n{status}"
    );
    // A processor gone for good: its keys moved, in the event log.
    feed(
        &mut app,
        9_000,
        Kind::Connection(pb::ConnectionFeed {
            connected: false,
            processor_id: "p-b".into(),
            session: 0,
            reason: "gone: its partitions moved".into(),
        }),
    );
    let s = screen(&draw(&app, 200, 40));
    assert!(
        s.contains("processor p-b gone: its partitions moved"),
        "no move in the log\n{s}"
    );
}

#[test]
fn webhooks_show_their_calls_against_their_caps_when_there_are_any() {
    let mut app = running_app();
    let s = screen(&draw(&app, 120, 40));
    assert!(!s.contains("webhooks"), "none configured\n{s}");
    if let Some(processor) = app.snapshot.as_mut().and_then(|s| s.processor.as_mut()) {
        processor.webhooks = vec![
            pb::WebhookStatus {
                kind: "shout".into(),
                calls: 3,
                cap: 32,
            },
            pb::WebhookStatus {
                kind: "resize".into(),
                calls: 32,
                cap: 32,
            },
        ];
    }
    let s = screen(&draw(&app, 160, 40));
    assert!(
        s.contains("webhooks shout 3/32 resize 32/32"),
        "no webhooks in\n{s}"
    );
}

#[test]
fn global_order_and_a_floor_held_long_show_in_both_layouts() {
    let app = paused_app();
    for (width, height) in [(120, 40), (80, 24)] {
        let backend = draw(&app, width, height);
        let s = screen(&backend);
        for wanted in [
            "ordering global",
            "lanes 1",
            "held 9.0s attempt 5",
            "custom",
        ] {
            assert!(
                s.contains(wanted),
                "{width}x{height}: no {wanted:?} in\n{s}"
            );
        }
        // The long key is cut, in the table and on the lanes line.
        assert!(
            !s.contains("1e0f6d2b9a77"),
            "{width}x{height}: uncut key in\n{s}"
        );
        assert!(s.contains('…'), "{width}x{height}: no cut key in\n{s}");
        assert_eq!(
            background_of(&backend, "held"),
            Some(ratatui::style::Color::Yellow),
            "{width}x{height}: the floor holder is highlighted"
        );
    }
}

#[test]
fn result_keys_show_in_both_layouts() {
    let running = running_app();
    let paused = paused_app();
    for (width, height) in [(120, 40), (80, 24)] {
        let s = screen(&draw(&running, width, height));
        // Seqs 1213..1222 are only in the results table ("–": no key).
        for wanted in [
            "seq key",
            "1221 user-3",
            "1219 –",
            "1220 user-12",
            "1217 slow-1",
        ] {
            assert!(
                s.contains(wanted),
                "{width}x{height}: no {wanted:?} in\n{s}"
            );
        }
        // A long key is cut and a control character replaced.
        let s = screen(&draw(&paused, width, height));
        for wanted in ["1152 custome", "1154 line\u{fffd}br"] {
            assert!(
                s.contains(wanted),
                "{width}x{height}: no {wanted:?} in\n{s}"
            );
        }
    }
}

#[test]
fn a_gone_processor_shows_no_stale_lanes() {
    let mut app = running_app();
    // Core keeps the last report of a processor that disconnected.
    app.handle(AppEvent::Admin(Update::Snapshot(pb::Snapshot {
        taken_at_us: T0 + 9_000_000,
        ordering: pb::Ordering::Key as i32,
        processor: Some(pb::ProcessorState {
            connection: pb::ProcessorConnection::Disconnected as i32,
            running: 3,
            concurrency: 256,
            lanes_active: 4,
            ..Default::default()
        }),
        ..Default::default()
    })));
    for (width, height, keys) in [(120, 40, "keys active –"), (80, 24, "keys –")] {
        let s = screen(&draw(&app, width, height));
        for wanted in ["running –", keys, "floor holder none"] {
            let wanted = if width < 100 && wanted == "floor holder none" {
                "floor none"
            } else {
                wanted
            };
            assert!(
                s.contains(wanted),
                "{width}x{height}: no {wanted:?} in\n{s}"
            );
        }
    }
}

#[test]
fn tiny_terminals_do_not_panic() {
    let app = paused_app();
    for (width, height) in [(1, 1), (20, 5), (40, 10), (79, 23), (200, 60)] {
        draw(&app, width, height);
    }
}

#[test]
fn abandoned_results_show_in_both_layouts() {
    let mut app = running_app();
    feed(
        &mut app,
        9_000,
        Kind::Result(pb::ResultFeed {
            seq: 1223,
            key: "meter-7".into(),
            kind: "telemetry".into(),
            status: pb::ResultStatus::Abandoned as i32,
            latency_us: 2_000,
            output: "abandoned: the processor's stream ended".into(),
            attempt: 1,
        }),
    );
    for (width, height) in [(120, 40), (80, 24)] {
        let s = screen(&draw(&app, width, height));
        assert!(
            s.contains("abandoned"),
            "{width}x{height}: no abandoned status in\n{s}"
        );
    }
}
