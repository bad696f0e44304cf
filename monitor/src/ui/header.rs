//! The lines above the panels and the one below: the status line (the
//! processors' state, each one's partitions, in-flight events and ack
//! rate when several share the keys, the standbys, core's address, the
//! monitor's connection), the rates
//! line, the sequence strip (head, sent, acked, processed) and the footer
//! with the keys.

use ackflow_proto::v1 as pb;
use ratatui::style::{Color, Style};
use ratatui::text::Span;
use ratatui::widgets::Paragraph;

use super::{DIM, FOCUSED, fit, item, item_or_short};
use crate::app::{App, ConnState, FAULT_PROFILES, TICK};
use crate::fmt::{fmt_rate, fmt_us};

/// Ticks (200 ms each) without an update before the header flags the
/// stream as stalled. Core sends a snapshot about every 200 ms.
const STALE_AFTER_TICKS: u32 = 10;

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

pub(super) fn status_line(app: &App, width: u16) -> Paragraph<'static> {
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
        if snapshot.processors.len() > 1 {
            // Several share the keys: each with its share and its pace (or
            // its share alone, short of room).
            for p in &snapshot.processors {
                let share = format!(
                    "{} session {}: {} partitions",
                    p.processor_id, p.session, p.partitions
                );
                let pace = format!(", {} in flight, {}", p.in_flight, fmt_rate(p.ack_rate));
                items.push(item_or_short(
                    4,
                    vec![Span::styled(share.clone() + &pace, DIM)],
                    vec![Span::styled(share, DIM)],
                ));
            }
        } else if !processor.processor_id.is_empty() {
            items.push(item(
                4,
                vec![Span::styled(
                    format!("{} session {}", processor.processor_id, processor.session),
                    DIM,
                )],
            ));
        }
        if !snapshot.standbys.is_empty() {
            // Dropped before the active processor's name when short of room.
            items.push(item(
                5,
                vec![Span::styled(
                    format!("standing by: {}", snapshot.standbys.join(", ")),
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
        // The rates line's publish rate says as much, once it runs.
        items.push(item(
            5,
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

pub(super) fn rates_line(app: &App, width: u16) -> Paragraph<'static> {
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
/// `processed` is the last seq below the processor's `processed_below`
/// (every seq up to it was processed; with keys processed side by side,
/// seqs above it may be done too). The gaps are the events not sent yet
/// and the events in flight.
pub(super) fn sequence_strip(app: &App, width: u16) -> Paragraph<'static> {
    let Some(s) = &app.snapshot else {
        return Paragraph::default();
    };
    let sent = s.next_to_send.saturating_sub(1);
    let acked = s.acked_floor.saturating_sub(1);
    let processor = s.processor.clone().unwrap_or_default();
    // A processor that predates `processed_below` reports 0; it processes
    // in seq order, so the seq before its next expected one is processed.
    let processed = if processor.processed_below > 0 {
        processor.processed_below - 1
    } else {
        s.next_expected.saturating_sub(1)
    };
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
    let buffered = processor.buffered;
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

pub(super) fn footer_line(app: &App, width: u16) -> Paragraph<'static> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
