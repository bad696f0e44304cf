//! Drawing the dashboard. [`render`] is a pure function of the [`App`]
//! state: it reads no clock and keeps no state of its own, so a snapshot
//! test can draw any screen from events alone.
//!
//! Two layouts share the same panels: a wide one (at least
//! [`WIDE_MIN_WIDTH`]×[`WIDE_MIN_HEIGHT`]) with a counters panel holding
//! tall sparklines and the in-flight gauge inside the in-flight panel, and a
//! compact one for small terminals (down to 80×24) where the gauge and the
//! counters share one line and the panels are narrower. Lines that do not
//! fit drop their least important items first (see `fit`).

use ackflow_proto::v1 as pb;
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Cell, Clear, Gauge, Paragraph, RenderDirection, Row, Sparkline, Table, Wrap,
};

use crate::app::{App, ConnState, FAULT_PROFILES, Focus, LogKind, TICK};
use crate::fmt::{fmt_clock, fmt_ms, fmt_rate, fmt_us, fmt_wait};

/// Narrowest terminal that gets the wide layout.
pub const WIDE_MIN_WIDTH: u16 = 110;
/// Shortest terminal that gets the wide layout.
pub const WIDE_MIN_HEIGHT: u16 = 30;
/// Ticks (200 ms each) without an update before the header flags the
/// stream as stalled. Core sends a snapshot about every 200 ms.
const STALE_AFTER_TICKS: u32 = 10;
/// Cells of the countdown bar in the in-flight table.
const COUNTDOWN_CELLS: usize = 8;

const DIM: Style = Style::new().fg(Color::DarkGray);
const FOCUSED: Color = Color::Cyan;

/// Draws the whole dashboard for `app` into `frame`.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let live = app.is_connected() && app.snapshot.is_some();
    if live {
        let [status, rates, strip, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        frame.render_widget(status_line(app, status.width), status);
        frame.render_widget(rates_line(app, rates.width), rates);
        frame.render_widget(sequence_strip(app, strip.width), strip);
        if body.width >= WIDE_MIN_WIDTH && area.height >= WIDE_MIN_HEIGHT {
            render_wide_body(app, frame, body);
        } else {
            render_compact_body(app, frame, body);
        }
        frame.render_widget(footer_line(app, footer.width), footer);
    } else {
        let [status, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        frame.render_widget(status_line(app, status.width), status);
        render_offline(app, frame, body);
        frame.render_widget(footer_line(app, footer.width), footer);
    }
    if app.show_help {
        render_help(app, frame, area);
    }
}

// ---------------------------------------------------------------------------
// Header, sequence strip and footer.

/// One item of a status line, dropped when the line is too narrow.
struct Item {
    /// 0 is never dropped; higher numbers go first.
    drop_rank: u8,
    spans: Vec<Span<'static>>,
}

fn item(drop_rank: u8, spans: Vec<Span<'static>>) -> Item {
    Item { drop_rank, spans }
}

/// Joins `items` with `separator` into a line of at most `width` cells,
/// dropping the items with the highest `drop_rank` (the last of them
/// first) until it fits.
fn fit(mut items: Vec<Item>, separator: &'static str, width: u16) -> Line<'static> {
    let total = |items: &[Item]| -> usize {
        let content: usize = items
            .iter()
            .flat_map(|i| i.spans.iter())
            .map(Span::width)
            .sum();
        content + separator.chars().count() * items.len().saturating_sub(1)
    };
    while total(&items) > usize::from(width) {
        let Some((at, _)) = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.drop_rank > 0)
            .max_by_key(|(at, i)| (i.drop_rank, *at))
        else {
            break;
        };
        items.remove(at);
    }
    let mut spans = Vec::new();
    for (n, item) in items.into_iter().enumerate() {
        if n > 0 {
            spans.push(Span::styled(separator, DIM));
        }
        spans.extend(item.spans);
    }
    Line::from(spans)
}

/// The processor's state as a coloured badge: RUNNING, PAUSED or
/// DISCONNECTED.
fn processor_badge(connection: pb::ProcessorConnection) -> Span<'static> {
    match connection {
        pb::ProcessorConnection::Running => Span::styled(
            " RUNNING ",
            Style::new().fg(Color::Black).bg(Color::Green).bold(),
        ),
        pb::ProcessorConnection::Paused => Span::styled(
            " PAUSED ",
            Style::new().fg(Color::Black).bg(Color::Yellow).bold(),
        ),
        pb::ProcessorConnection::Disconnected => Span::styled(
            " DISCONNECTED ",
            Style::new().fg(Color::White).bg(Color::Red).bold(),
        ),
        pb::ProcessorConnection::Unspecified => Span::styled(" UNKNOWN ", DIM.reversed()),
    }
}

fn status_line(app: &App, width: u16) -> Paragraph<'static> {
    let mut items = vec![item(
        0,
        vec![Span::styled(
            " ackflow ",
            Style::new().fg(Color::Black).bg(FOCUSED).bold(),
        )],
    )];
    let live = app.is_connected() && app.snapshot.is_some();
    if let (true, Some(snapshot)) = (live, &app.snapshot) {
        let processor = snapshot.processor.clone().unwrap_or_default();
        items.push(item(
            0,
            vec![
                Span::raw("processor "),
                processor_badge(processor.connection()),
            ],
        ));
        if !processor.processor_id.is_empty() {
            items.push(item(
                4,
                vec![Span::styled(
                    format!("{} session {}", processor.processor_id, processor.session),
                    DIM,
                )],
            ));
        }
    }
    let conn = match (&app.conn, &app.last_error) {
        (ConnState::Connected, _) if app.ticks_since_update > STALE_AFTER_TICKS => Span::styled(
            format!(
                "● no update for {}",
                fmt_us(u64::from(app.ticks_since_update) * TICK.as_micros() as u64)
            ),
            Style::new().fg(Color::Yellow).bold(),
        ),
        (ConnState::Connected, _) => Span::styled("● connected", Style::new().fg(Color::Green)),
        (ConnState::Unreachable { .. }, _) | (ConnState::Connecting { .. }, Some(_)) => {
            Span::styled("✕ unreachable", Style::new().fg(Color::Red).bold())
        }
        (ConnState::Connecting { .. }, None) => {
            Span::styled("◌ connecting", Style::new().fg(Color::Yellow))
        }
    };
    items.push(item(
        0,
        vec![
            Span::raw("core "),
            Span::styled(app.core_addr.clone(), Style::new().bold()),
            Span::raw(" "),
            conn,
        ],
    ));
    if let Some(rate) = app.demo_rate {
        items.push(item(
            2,
            vec![
                Span::raw("demo traffic "),
                Span::styled(format!("{rate} ev/s"), Style::new().bold()),
            ],
        ));
    }
    Paragraph::new(fit(items, "  ", width))
}

/// Words for the fault settings in force, e.g. `lossy acks (drop acks 30%)`,
/// or just `lossy acks` when `short` and the settings are a known profile.
fn describe_faults(faults: &pb::Faults, short: bool) -> String {
    let mut parts = Vec::new();
    let percent = |v: f64| format!("{:.0}%", v * 100.0);
    if faults.drop_events > 0.0 {
        parts.push(format!("drop events {}", percent(faults.drop_events)));
    }
    if faults.drop_acks > 0.0 {
        parts.push(format!("drop acks {}", percent(faults.drop_acks)));
    }
    if faults.duplicate > 0.0 {
        parts.push(format!("duplicate {}", percent(faults.duplicate)));
    }
    if faults.delay_ms > 0 {
        parts.push(format!("delay {}ms", faults.delay_ms));
    }
    if faults.cut_every_s > 0 {
        parts.push(format!("cut every {}s", faults.cut_every_s));
    }
    if parts.is_empty() {
        return "none".to_string();
    }
    let details = parts.join(", ");
    match FAULT_PROFILES.iter().find(|p| p.faults == *faults) {
        Some(profile) if short => profile.name.to_string(),
        Some(profile) => format!("{} ({details})", profile.name),
        None => details,
    }
}

fn rates_line(app: &App, width: u16) -> Paragraph<'static> {
    let Some(snapshot) = &app.snapshot else {
        return Paragraph::default();
    };
    let rates = snapshot.rates.unwrap_or_default();
    let faults = snapshot.faults.unwrap_or_default();
    let labelled = |label: &'static str, value: String| {
        vec![
            Span::styled(label, DIM),
            Span::styled(value, Style::new().bold()),
        ]
    };
    let fault_style = if faults == pb::Faults::default() {
        Style::new().bold()
    } else {
        Style::new().fg(Color::Magenta).bold()
    };
    let items = vec![
        item(0, labelled(" publish ", fmt_rate(rates.publish))),
        item(0, labelled("deliver ", fmt_rate(rates.deliver))),
        item(0, labelled("ack ", fmt_rate(rates.ack))),
        item(
            3,
            labelled(
                "RTT ",
                if snapshot.srtt_us == 0 {
                    "–".to_string()
                } else {
                    fmt_us(snapshot.srtt_us)
                },
            ),
        ),
        item(2, labelled("RTO ", fmt_us(snapshot.rto_us))),
        item(
            1,
            vec![
                Span::styled("faults ", DIM),
                Span::styled(describe_faults(&faults, width < 100), fault_style),
            ],
        ),
    ];
    Paragraph::new(fit(items, "  ", width))
}

/// `head 1234 ─(12)─ sent 1222 ─(200)─ acked 1022 ─ processed 1100`.
///
/// Each number is the highest seq in that state: `head` is committed,
/// `sent` has been sent at least once (`next_to_send - 1`), `acked` is the
/// last seq below the acked floor (every seq up to it is resolved), and
/// `processed` is the processor's `next_expected - 1`. The gaps are the
/// events not sent yet and the events in flight.
fn sequence_strip(app: &App, width: u16) -> Paragraph<'static> {
    let Some(s) = &app.snapshot else {
        return Paragraph::default();
    };
    let sent = s.next_to_send.saturating_sub(1);
    let acked = s.acked_floor.saturating_sub(1);
    let processed = s.next_expected.saturating_sub(1);
    let unsent = s.head.saturating_sub(sent);
    let in_flight = sent.saturating_sub(acked);
    let paused = app.processor_connection() == pb::ProcessorConnection::Paused;
    let gap = |n: u64, colour: Color| {
        vec![
            Span::styled(" ─(", DIM),
            Span::styled(
                n.to_string(),
                if n == 0 { DIM } else { Style::new().fg(colour) },
            ),
            Span::styled(")─ ", DIM),
        ]
    };
    let mut strip = vec![
        Span::raw(" head "),
        Span::styled(s.head.to_string(), Style::new().bold()),
    ];
    strip.extend(gap(unsent, Color::Blue));
    strip.extend([
        Span::raw("sent "),
        Span::styled(sent.to_string(), Style::new().bold()),
    ]);
    strip.extend(gap(in_flight, Color::Yellow));
    strip.extend([
        Span::raw("acked "),
        Span::styled(acked.to_string(), Style::new().fg(Color::Green).bold()),
        Span::styled(" ─ ", DIM),
        Span::raw("processed "),
        Span::styled(
            processed.to_string(),
            if paused {
                Style::new().fg(Color::Yellow).bold()
            } else {
                Style::new().bold()
            },
        ),
    ]);
    let buffered = s.processor.as_ref().map_or(0, |p| p.buffered);
    let items = vec![
        item(0, strip),
        item(
            1,
            vec![
                Span::styled("buffered ", DIM),
                Span::styled(buffered.to_string(), Style::new().bold()),
            ],
        ),
    ];
    Paragraph::new(fit(items, "   ", width))
}

fn footer_line(app: &App, width: u16) -> Paragraph<'static> {
    let key = |k: &'static str, what: &'static str| {
        vec![
            Span::styled(k, Style::new().fg(FOCUSED).bold()),
            Span::raw(" "),
            Span::raw(what),
        ]
    };
    let pause = if app.processor_connection() == pb::ProcessorConnection::Paused {
        "resume"
    } else {
        "pause"
    };
    let mut items = Vec::new();
    // The commands need core; while it is away the keys do nothing.
    if app.is_connected() {
        items.push(item(0, key("p", pause)));
        items.push(item(0, key("f", "faults")));
        if !app.dead().is_empty() {
            items.push(item(1, key("r", "requeue")));
        }
    }
    items.push(item(2, key("Tab", "focus")));
    items.push(item(3, key("↑↓", "scroll")));
    if app.demo_rate.is_some() {
        items.push(item(1, key("+/-", "rate")));
    }
    items.push(item(0, key("?", "help")));
    items.push(item(0, key("q", "quit")));
    let mut line = fit(items, "  ", width.saturating_sub(1));
    line.spans.insert(0, Span::raw(" "));
    Paragraph::new(line)
}

// ---------------------------------------------------------------------------
// Body layouts.

fn render_wide_body(app: &App, frame: &mut Frame, area: Rect) {
    let dead_rows = app.dead().len().min(5) as u16;
    let dead_height = if dead_rows == 0 { 0 } else { dead_rows + 3 };
    let top_height = (area.height.saturating_sub(dead_height) * 9 / 20).max(14);
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(top_height),
        Constraint::Fill(1),
        Constraint::Length(dead_height),
    ])
    .areas(area);
    // The in-flight table needs about 50 columns; the rest goes to the
    // counters, where a wider sparkline shows a longer history.
    let [in_flight, counters] =
        Layout::horizontal([Constraint::Length(56), Constraint::Fill(1)]).areas(top);
    render_in_flight(app, frame, in_flight, true);
    render_counters(app, frame, counters);
    let [results, log] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(middle);
    render_results(app, frame, results);
    render_log(app, frame, log);
    if dead_height > 0 {
        render_dead(app, frame, bottom);
    }
}

fn render_compact_body(app: &App, frame: &mut Frame, area: Rect) {
    let [counters, top, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(55),
        Constraint::Fill(1),
    ])
    .areas(area);
    render_counter_line(app, frame, counters);
    let [in_flight, results] =
        Layout::horizontal([Constraint::Length(40), Constraint::Fill(1)]).areas(top);
    render_in_flight(app, frame, in_flight, false);
    render_results(app, frame, results);
    if app.dead().is_empty() {
        render_log(app, frame, bottom);
    } else {
        let [log, dead] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(36)]).areas(bottom);
        render_log(app, frame, log);
        render_dead(app, frame, dead);
    }
}

/// A bordered panel whose border shows whether it has the focus.
fn panel(title: Line<'static>, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(title);
    if focused {
        block
            .border_style(Style::new().fg(FOCUSED))
            .title_style(Style::new().fg(FOCUSED).bold())
    } else {
        block.border_style(DIM).title_style(Style::new().bold())
    }
}

/// Rows of a panel's table that fit below its header.
fn visible_rows(inner: Rect, header_rows: u16) -> usize {
    usize::from(inner.height.saturating_sub(header_rows))
}

/// The first row to show: the requested offset, but never so far down that
/// the panel shows fewer rows than it could.
fn effective_offset(offset: usize, len: usize, visible: usize) -> usize {
    offset.min(len.saturating_sub(visible))
}

fn window_gauge(snapshot: &pb::Snapshot) -> Gauge<'static> {
    let window = snapshot.window.max(1);
    let ratio = (f64::from(snapshot.window_used) / f64::from(window)).clamp(0.0, 1.0);
    let colour = if ratio >= 0.9 {
        Color::Red
    } else if ratio >= 0.5 {
        Color::Yellow
    } else {
        Color::Green
    };
    Gauge::default()
        .ratio(ratio)
        .use_unicode(true)
        .label(Span::styled(
            format!("in flight {}/{}", snapshot.window_used, snapshot.window),
            Style::new().fg(Color::White).bold(),
        ))
        .gauge_style(Style::new().fg(colour).bg(Color::Black))
}

/// `█████░░░ 0.8s`: time left until the next retransmit, as a share of the
/// backoff armed at the last send.
fn countdown(entry: &pb::InFlightEntry) -> String {
    let left = if entry.backoff_us == 0 {
        0.0
    } else {
        (entry.next_retransmit_us as f64 / entry.backoff_us as f64).clamp(0.0, 1.0)
    };
    let filled = (left * COUNTDOWN_CELLS as f64).round() as usize;
    format!(
        "{}{} {}",
        "█".repeat(filled),
        "░".repeat(COUNTDOWN_CELLS - filled),
        if entry.next_retransmit_us == 0 {
            "due".to_string()
        } else {
            fmt_us(entry.next_retransmit_us)
        }
    )
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).alignment(Alignment::Right))
}

fn render_in_flight(app: &App, frame: &mut Frame, area: Rect, with_gauge: bool) {
    let entries = app.in_flight();
    let inner = Block::bordered().inner(area);
    let table_area = if with_gauge {
        let [gauge, rest] =
            Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
        if let Some(snapshot) = &app.snapshot {
            frame.render_widget(window_gauge(snapshot), gauge);
        }
        rest
    } else {
        inner
    };
    let visible = visible_rows(table_area, 1);
    let offset = effective_offset(app.scroll.in_flight, entries.len(), visible);
    let retrying = entries.iter().filter(|e| !e.acked && e.attempt > 1).count();
    let mut title = vec![Span::raw(" In flight ")];
    if retrying > 0 {
        title.push(Span::styled(
            format!("{retrying} retrying "),
            Style::new().fg(Color::Yellow).bold(),
        ));
    }
    if offset > 0 {
        title.push(Span::styled(format!("↑{offset} "), DIM));
    }
    let below = entries.len().saturating_sub(offset + visible);
    if below > 0 {
        title.push(Span::styled(format!("↓{below} more "), DIM));
    }
    frame.render_widget(panel(Line::from(title), app.focus == Focus::InFlight), area);
    if entries.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled("nothing in flight", DIM)),
            table_area,
        );
        return;
    }
    let seq_width = entries
        .iter()
        .map(|e| e.seq.to_string().len())
        .max()
        .unwrap_or(3)
        .max(3) as u16;
    let with_backoff = table_area.width >= seq_width + 7 + 6 + 15 + 7 + 4;
    let rows = entries.iter().skip(offset).take(visible).map(|e| {
        if e.acked {
            return Row::new(vec![
                right(e.seq.to_string()),
                Cell::from(""),
                Cell::from(""),
                Cell::from("acked, storing"),
            ])
            .style(Style::new().fg(Color::Green).add_modifier(Modifier::DIM));
        }
        let style = match e.attempt {
            0 | 1 => Style::new(),
            2..=4 => Style::new().fg(Color::Yellow),
            _ => Style::new().fg(Color::LightRed).bold(),
        };
        let mut cells = vec![
            right(e.seq.to_string()),
            right(e.attempt.to_string()),
            right(fmt_us(e.age_us)),
            Cell::from(countdown(e)),
        ];
        if with_backoff {
            cells.push(right(fmt_us(e.backoff_us)));
        }
        Row::new(cells).style(style)
    });
    let mut widths = vec![
        Constraint::Length(seq_width),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(15),
    ];
    let mut header = vec![
        right("seq".into()),
        right("attempt".into()),
        right("age".into()),
        Cell::from("next retransmit"),
    ];
    if with_backoff {
        widths.push(Constraint::Length(7));
        header.push(right("backoff".into()));
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(DIM.bold()))
        .column_spacing(1);
    frame.render_widget(table, table_area);
}

fn spark(samples: &std::collections::VecDeque<u64>, colour: Color) -> Sparkline<'static> {
    // Newest first, drawn from the right edge, so a narrow panel shows the
    // most recent samples.
    Sparkline::default()
        .data(samples.iter().rev().copied().collect::<Vec<u64>>())
        .direction(RenderDirection::RightToLeft)
        .style(Style::new().fg(colour))
}

fn render_counters(app: &App, frame: &mut Frame, area: Rect) {
    let block = panel(Line::from(" Retransmits · duplicates "), false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(snapshot) = &app.snapshot else {
        return;
    };
    let totals = snapshot.totals.unwrap_or_default();
    let rates = snapshot.rates.unwrap_or_default();
    let spark_height = (inner.height.saturating_sub(5) / 2).clamp(1, 4);
    let [r_label, r_spark, d_label, d_spark, acks, results, dead] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(spark_height),
        Constraint::Length(1),
        Constraint::Length(spark_height),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(inner);
    let counter = |label: &'static str, total: u64, rate: f64, colour: Color| {
        Line::from(vec![
            Span::raw(label),
            Span::styled(total.to_string(), Style::new().fg(colour).bold()),
            Span::styled(format!("  {}", fmt_rate(rate)), DIM),
        ])
    };
    frame.render_widget(
        Paragraph::new(counter(
            "retransmits ",
            totals.retransmits,
            rates.retransmit,
            Color::Yellow,
        )),
        r_label,
    );
    frame.render_widget(spark(&app.retransmit_samples, Color::Yellow), r_spark);
    frame.render_widget(
        Paragraph::new(counter(
            "duplicate drops ",
            totals.duplicate_drops,
            rates.duplicate_drop,
            Color::Magenta,
        )),
        d_label,
    );
    frame.render_widget(spark(&app.duplicate_drop_samples, Color::Magenta), d_spark);
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw("duplicate acks "),
            Span::styled(totals.duplicate_acks.to_string(), Style::new().bold()),
        ])),
        acks,
    );
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw("results ok "),
            Span::styled(
                totals.results_ok.to_string(),
                Style::new().fg(Color::Green).bold(),
            ),
            Span::raw("  failed "),
            Span::styled(
                totals.results_failed.to_string(),
                Style::new().fg(Color::Red).bold(),
            ),
        ])),
        results,
    );
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw("dead "),
            Span::styled(
                totals.dead.to_string(),
                Style::new().fg(Color::LightRed).bold(),
            ),
            Span::raw("  requeued "),
            Span::styled(totals.requeued.to_string(), Style::new().bold()),
        ])),
        dead,
    );
}

/// The compact layout's one line: window gauge, then the retransmit and
/// duplicate drop totals with short sparklines.
fn render_counter_line(app: &App, frame: &mut Frame, area: Rect) {
    let Some(snapshot) = &app.snapshot else {
        return;
    };
    let totals = snapshot.totals.unwrap_or_default();
    let retransmits = Line::from(vec![
        Span::raw(" retransmits "),
        Span::styled(
            totals.retransmits.to_string(),
            Style::new().fg(Color::Yellow).bold(),
        ),
        Span::raw(" "),
    ]);
    let duplicates = Line::from(vec![
        Span::raw(" duplicate drops "),
        Span::styled(
            totals.duplicate_drops.to_string(),
            Style::new().fg(Color::Magenta).bold(),
        ),
        Span::raw(" "),
    ]);
    let spark_width = 8;
    let [gauge, r_label, r_spark, d_label, d_spark] = Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Length(retransmits.width() as u16),
        Constraint::Length(spark_width),
        Constraint::Length(duplicates.width() as u16),
        Constraint::Length(spark_width),
    ])
    .areas(area);
    frame.render_widget(window_gauge(snapshot), gauge);
    frame.render_widget(Paragraph::new(retransmits), r_label);
    frame.render_widget(spark(&app.retransmit_samples, Color::Yellow), r_spark);
    frame.render_widget(Paragraph::new(duplicates), d_label);
    frame.render_widget(spark(&app.duplicate_drop_samples, Color::Magenta), d_spark);
}

fn render_results(app: &App, frame: &mut Frame, area: Rect) {
    let totals = app
        .snapshot
        .as_ref()
        .and_then(|s| s.totals)
        .unwrap_or_default();
    let mut title = vec![
        Span::raw(" Results "),
        Span::styled(
            format!("ok {}", totals.results_ok),
            Style::new().fg(Color::Green),
        ),
        Span::raw(" "),
        Span::styled(
            format!("failed {}", totals.results_failed),
            Style::new().fg(Color::Red),
        ),
        Span::raw(" "),
    ];
    let block_inner = Block::bordered().inner(area);
    let visible = visible_rows(block_inner, 1);
    let offset = effective_offset(app.scroll.results, app.results.len(), visible);
    if offset > 0 {
        title.push(Span::styled(format!("↑{offset} newer "), DIM));
    }
    let block = panel(Line::from(title), app.focus == Focus::Results);
    if app.results.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled("no results yet", DIM)).block(block),
            area,
        );
        return;
    }
    let shown: Vec<&pb::ResultFeed> = app
        .results
        .iter()
        .rev()
        .skip(offset)
        .take(visible)
        .collect();
    let seq_width = shown
        .iter()
        .map(|r| r.seq.to_string().len())
        .max()
        .unwrap_or(3)
        .max(3) as u16;
    let with_attempt = block_inner.width >= 70;
    let kind_width = shown
        .iter()
        .map(|r| r.kind.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, if with_attempt { 12 } else { 9 }) as u16;
    let rows = shown.into_iter().map(|r| {
        let status = match r.status() {
            pb::ResultStatus::Ok => Span::styled("ok", Style::new().fg(Color::Green)),
            pb::ResultStatus::Failed => Span::styled("failed", Style::new().fg(Color::Red).bold()),
            pb::ResultStatus::Unspecified => Span::styled("?", DIM),
        };
        let mut cells = vec![
            right(r.seq.to_string()),
            Cell::from(r.kind.clone()),
            Cell::from(Line::from(status)),
            right(fmt_ms(r.latency_us)),
        ];
        if with_attempt {
            cells.push(right(r.attempt.to_string()));
        }
        let output_style = if r.status() == pb::ResultStatus::Failed {
            Style::new().fg(Color::Red)
        } else {
            DIM
        };
        cells.push(Cell::from(Span::styled(r.output.clone(), output_style)));
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(seq_width),
        Constraint::Length(kind_width),
        Constraint::Length(6),
        Constraint::Length(5),
    ];
    let mut header = vec![
        right("seq".into()),
        Cell::from("kind"),
        Cell::from("status"),
        right("ms".into()),
    ];
    if with_attempt {
        widths.push(Constraint::Length(7));
        header.push(right("attempt".into()));
    }
    widths.push(Constraint::Fill(1));
    header.push(Cell::from("output"));
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(DIM.bold()))
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

fn log_style(kind: LogKind) -> Style {
    match kind {
        LogKind::Retransmit => Style::new().fg(Color::Yellow),
        LogKind::Duplicate => Style::new().fg(Color::Magenta),
        LogKind::Connection => Style::new().fg(Color::Cyan),
        LogKind::Pause => Style::new().fg(Color::Blue).bold(),
        LogKind::Dead => Style::new().fg(Color::LightRed).bold(),
        LogKind::Requeued => Style::new().fg(Color::Green),
        LogKind::Lagged => Style::new().fg(Color::Red),
        LogKind::Monitor => Style::new(),
        LogKind::Error => Style::new().fg(Color::Red),
    }
}

fn render_log(app: &App, frame: &mut Frame, area: Rect) {
    let inner = Block::bordered().inner(area);
    let visible = visible_rows(inner, 0);
    let offset = effective_offset(app.scroll.log, app.log.len(), visible);
    let mut title = vec![Span::raw(" Event log ")];
    if offset > 0 {
        title.push(Span::styled(format!("↑{offset} newer "), DIM));
    }
    let block = panel(Line::from(title), app.focus == Focus::Log);
    let lines: Vec<Line> = if app.log.is_empty() {
        vec![Line::styled("quiet so far", DIM)]
    } else {
        app.log
            .iter()
            .rev()
            .skip(offset)
            .take(visible)
            .map(|l| {
                let clock = match l.at_us {
                    Some(at) => fmt_clock(at, app.utc_offset_s),
                    None => "--:--:--".to_string(),
                };
                Line::from(vec![
                    Span::styled(clock, DIM),
                    Span::raw(" "),
                    Span::styled(l.text.clone(), log_style(l.kind)),
                ])
            })
            .collect()
    };
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn render_dead(app: &App, frame: &mut Frame, area: Rect) {
    let dead = app.dead();
    let focused = app.focus == Focus::Dead;
    let block = panel(
        Line::from(vec![
            Span::raw(" Dead "),
            Span::styled(format!("{} ", dead.len()), Style::new().fg(Color::LightRed)),
            Span::styled("(r requeues) ", DIM),
        ]),
        focused,
    );
    let inner = block.inner(area);
    let visible = visible_rows(inner, 1).max(1);
    let selected = app.selected_dead.min(dead.len().saturating_sub(1));
    // Keep the selected entry on screen.
    let offset = selected.saturating_sub(visible - 1);
    let seq_width = dead
        .iter()
        .map(|d| d.seq.to_string().len())
        .max()
        .unwrap_or(3)
        .max(3) as u16;
    let kind_width = dead
        .iter()
        .map(|d| d.kind.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 12) as u16;
    let with_attempts = inner.width >= 50;
    let rows = dead
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(at, d)| {
            let marker = if at == selected { "▶" } else { " " };
            let mut cells = vec![
                Cell::from(marker),
                right(d.seq.to_string()),
                Cell::from(d.kind.clone()),
            ];
            if with_attempts {
                cells.push(right(d.attempts.to_string()));
            }
            cells.push(Cell::from(d.reason.clone()));
            let row = Row::new(cells);
            if at == selected && focused {
                row.style(Style::new().fg(Color::Black).bg(Color::LightRed))
            } else if at == selected {
                row.style(Style::new().fg(Color::LightRed).bold())
            } else {
                row.style(Style::new().fg(Color::LightRed))
            }
        });
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(seq_width),
        Constraint::Length(kind_width),
    ];
    let mut header = vec![Cell::from(""), right("seq".into()), Cell::from("kind")];
    if with_attempts {
        widths.push(Constraint::Length(8));
        header.push(right("attempts".into()));
    }
    widths.push(Constraint::Fill(1));
    header.push(Cell::from("reason"));
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(DIM.bold()))
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

// ---------------------------------------------------------------------------
// Not connected, and the help overlay.

/// A `width`×`height` rectangle in the middle of `area` (clipped to it).
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [rect] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    rect
}

fn render_offline(app: &App, frame: &mut Frame, area: Rect) {
    // The latest log lines stay visible below the message: they say what
    // happened before core went away and why a key did nothing.
    let log_height = if app.log.is_empty() || area.height < 16 {
        0
    } else {
        (app.log.len() as u16 + 2).min(area.height / 3)
    };
    let [area, log] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(log_height)]).areas(area);
    if log_height > 0 {
        render_log(app, frame, log);
    }
    let addr = &app.core_addr;
    let (title, colour, message) = match (&app.conn, &app.last_error) {
        (ConnState::Connected, _) => (
            " connected ",
            Color::Green,
            format!("connected to core at {addr}; waiting for the first snapshot…"),
        ),
        (ConnState::Connecting { next_retry, .. }, Some(error)) => (
            " core unreachable ",
            Color::Red,
            format!(
                "core unreachable at {addr}: {error} — retrying {}",
                fmt_wait(*next_retry)
            ),
        ),
        (ConnState::Unreachable { error }, _) => (
            " core unreachable ",
            Color::Red,
            format!("core unreachable at {addr}: {error} — retrying shortly"),
        ),
        (ConnState::Connecting { .. }, None) => (
            " connecting ",
            Color::Yellow,
            format!("connecting to core at {addr}…"),
        ),
    };
    let attempt = match &app.conn {
        ConnState::Connecting { attempt, .. } if *attempt > 1 => format!("attempt {attempt} · "),
        _ => String::new(),
    };
    let hint = format!("{attempt}reconnects by itself · q quits");
    let width = area.width.saturating_sub(4).min(96);
    let text_width = usize::from(width.saturating_sub(6)).max(1);
    let wrapped_lines = |s: &str| s.chars().count().div_ceil(text_width).max(1);
    let height = (wrapped_lines(&message) + wrapped_lines(&hint) + 1 + 4) as u16;
    let rect = centered(area, width, height);
    let text = Text::from(vec![
        Line::styled(message, Style::new().fg(colour).bold()),
        Line::default(),
        Line::styled(hint, DIM),
    ]);
    let block = Block::bordered()
        .title(title)
        .border_style(Style::new().fg(colour))
        .title_style(Style::new().fg(colour).bold())
        .padding(ratatui::widgets::Padding::new(2, 2, 1, 0));
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: true }).block(block),
        rect,
    );
}

/// Every key, and what the numbers on the sequence strip mean.
const HELP: &[(&str, &str)] = &[
    ("p", "pause the processor / resume it when paused"),
    ("f", "next fault profile: none, lossy acks,"),
    ("", "  duplicates, flapping link"),
    ("r", "requeue the selected dead event"),
    ("Tab S-Tab", "move the focus between panels"),
    ("↑ ↓  k j", "scroll the focused panel (dead: select)"),
    ("PgUp PgDn", "scroll by a page"),
    ("Home End", "jump to the top / the bottom"),
    ("+ -", "demo only: double / halve the traffic rate"),
    ("?  Esc", "close this help"),
    ("q  Ctrl-C", "quit"),
];

const LEGEND: &[&str] = &[
    "head: highest committed seq · sent: highest seq sent",
    "acked: every seq up to it has a result (acked floor)",
    "processed: the processor's next_expected − 1",
    "(n): events not sent yet / in flight",
];

fn render_help(app: &App, frame: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = HELP
        .iter()
        .filter(|(k, _)| app.demo_rate.is_some() || *k != "+ -")
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>10}"), Style::new().fg(FOCUSED).bold()),
                Span::raw("  "),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::default());
    lines.extend(LEGEND.iter().map(|l| Line::styled(format!(" {l}"), DIM)));
    let height = lines.len() as u16 + 2;
    let rect = centered(area, 58, height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" Keys ")
                .title_bottom(Line::from(" any key closes ").right_aligned())
                .border_style(Style::new().fg(FOCUSED))
                .title_style(Style::new().fg(FOCUSED).bold()),
        ),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &Line) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn fit_drops_the_least_important_items_first() {
        let items = || {
            vec![
                item(0, vec![Span::raw("aaaa")]),
                item(2, vec![Span::raw("bbbb")]),
                item(1, vec![Span::raw("cccc")]),
                item(2, vec![Span::raw("dddd")]),
            ]
        };
        assert_eq!(text(&fit(items(), " ", 40)), "aaaa bbbb cccc dddd");
        assert_eq!(text(&fit(items(), " ", 14)), "aaaa bbbb cccc");
        assert_eq!(text(&fit(items(), " ", 10)), "aaaa cccc");
        assert_eq!(text(&fit(items(), " ", 2)), "aaaa");
    }

    #[test]
    fn countdown_shows_the_share_of_the_backoff_left() {
        let entry = |left, backoff| pb::InFlightEntry {
            next_retransmit_us: left,
            backoff_us: backoff,
            ..Default::default()
        };
        assert_eq!(countdown(&entry(800_000, 1_600_000)), "████░░░░ 800ms");
        assert_eq!(countdown(&entry(0, 1_600_000)), "░░░░░░░░ due");
        assert_eq!(countdown(&entry(5, 0)), "░░░░░░░░ 5µs");
    }

    #[test]
    fn faults_are_named_after_their_profile() {
        assert_eq!(describe_faults(&pb::Faults::default(), false), "none");
        assert_eq!(
            describe_faults(&FAULT_PROFILES[1].faults, false),
            "lossy acks (drop acks 30%)"
        );
        assert_eq!(
            describe_faults(&FAULT_PROFILES[1].faults, true),
            "lossy acks"
        );
        let custom = pb::Faults {
            drop_events: 0.1,
            delay_ms: 20,
            ..Default::default()
        };
        assert_eq!(
            describe_faults(&custom, true),
            "drop events 10%, delay 20ms"
        );
    }
}
