//! The in-flight panel: the window's unresolved events in seq order (the
//! lowest first, as they hold the acked floor back), each with its key, its
//! attempt, its age and a countdown to its next retransmit (for an event
//! the processor asked to retry later, marked `↻` and blue: to its next
//! send); and the window
//! gauge, drawn inside the panel in the wide layout and on the counter line
//! in the compact one.

use ackflow_proto::v1 as pb;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Table};

use super::{
    DIM, KEY_MAX_WIDTH, KEY_MIN_WIDTH, effective_offset, key_cell, key_width_wanted, panel, right,
    visible_rows,
};
use crate::app::{App, Focus};
use crate::fmt::fmt_us;

/// An event the processor asked to retry later (as in the event log).
const RETRY_LATER: Style = Style::new().fg(Color::LightBlue);

/// Cells of the countdown bar when the panel is wide enough, and when not.
const COUNTDOWN_CELLS: usize = 8;
const COUNTDOWN_CELLS_NARROW: usize = 4;
/// Most in-flight entries in a snapshot (core sends the lowest 512 seqs of
/// its window, see `Snapshot.in_flight`): a full list may not be all.
const IN_FLIGHT_SHOWN_MAX: usize = 512;

pub(super) fn window_gauge(snapshot: &pb::Snapshot) -> Gauge<'static> {
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
/// backoff armed at the last send, on a bar of `cells` cells.
fn countdown(entry: &pb::InFlightEntry, cells: usize) -> String {
    let left = if entry.backoff_us == 0 {
        0.0
    } else {
        (entry.next_retransmit_us as f64 / entry.backoff_us as f64).clamp(0.0, 1.0)
    };
    let filled = (left * cells as f64).round() as usize;
    format!(
        "{}{} {}",
        "█".repeat(filled),
        "░".repeat(cells - filled),
        if entry.next_retransmit_us == 0 {
            "due".to_string()
        } else {
            fmt_us(entry.next_retransmit_us)
        }
    )
}

/// Which columns the table shows at a given width.
#[derive(Debug, PartialEq, Eq)]
struct Columns {
    /// Cells of the countdown bar.
    countdown_cells: usize,
    /// Width of the key column; `None` leaves it out.
    key: Option<u16>,
    /// Whether the backoff column is shown.
    backoff: bool,
}

impl Columns {
    /// Width of the countdown column: the bar, a space and up to five
    /// characters of time, or the header when wider.
    fn countdown_width(&self) -> u16 {
        if self.countdown_cells == COUNTDOWN_CELLS {
            "next retransmit".len() as u16
        } else {
            "retransmit".len() as u16
        }
    }
}

/// The columns for a table `width` cells wide whose seqs take `seq_width`
/// and whose longest key would take `key_wanted` (`None`: no entry has a
/// key). What goes first as the table narrows: the backoff, then the key's
/// full length, then half the countdown bar, then the key column.
fn columns(width: u16, seq_width: u16, key_wanted: Option<u16>) -> Columns {
    // seq, attempt (7) and age (6), one space between columns.
    let base = seq_width + 1 + 7 + 1 + 6;
    let full = Columns {
        countdown_cells: COUNTDOWN_CELLS,
        key: None,
        backoff: true,
    };
    // Room left for a key column (after its space) with these columns.
    let room = |c: &Columns| {
        let backoff = if c.backoff { 1 + 7 } else { 0 };
        width.saturating_sub(base + 1 + c.countdown_width() + backoff + 1)
    };
    let Some(wanted) = key_wanted.map(|w| w.clamp("key".len() as u16, KEY_MAX_WIDTH)) else {
        let backoff = width >= base + 1 + full.countdown_width() + 1 + 7;
        return Columns { backoff, ..full };
    };
    if room(&full) >= wanted {
        return Columns {
            key: Some(wanted),
            ..full
        };
    }
    let no_backoff = Columns {
        backoff: false,
        ..full
    };
    let narrow_wanted = wanted.min(2 * KEY_MIN_WIDTH);
    if room(&no_backoff) >= narrow_wanted {
        return Columns {
            key: Some(wanted.min(room(&no_backoff))),
            ..no_backoff
        };
    }
    let narrow = Columns {
        countdown_cells: COUNTDOWN_CELLS_NARROW,
        ..no_backoff
    };
    let key = wanted.min(room(&narrow));
    Columns {
        key: (key >= KEY_MIN_WIDTH.min(wanted)).then_some(key),
        ..narrow
    }
}

pub(super) fn render_in_flight(app: &App, frame: &mut Frame, area: Rect, with_gauge: bool) {
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
    let retrying = entries
        .iter()
        .filter(|e| !e.storing && !e.retry && e.attempt > 1)
        .count();
    let retry_later = entries.iter().filter(|e| !e.storing && e.retry).count();
    let mut title = vec![Span::raw(" In flight ")];
    if retrying > 0 {
        title.push(Span::styled(
            format!("{retrying} retrying "),
            Style::new().fg(Color::Yellow).bold(),
        ));
    }
    if retry_later > 0 {
        title.push(Span::styled(
            format!("{retry_later} retry later "),
            RETRY_LATER.bold(),
        ));
    }
    if offset > 0 {
        title.push(Span::styled(format!("↑{offset} "), DIM));
    }
    let below = entries.len().saturating_sub(offset + visible);
    if below > 0 {
        // Core sends only the lowest entries of a large window.
        let plus = if entries.len() >= IN_FLIGHT_SHOWN_MAX {
            "+"
        } else {
            ""
        };
        title.push(Span::styled(format!("↓{below}{plus} more "), DIM));
    }
    frame.render_widget(panel(Line::from(title), app.focus == Focus::InFlight), area);
    if entries.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled("nothing in flight", DIM)),
            table_area,
        );
        return;
    }
    let shown = &entries[offset.min(entries.len())..(offset + visible).min(entries.len())];
    let seq_width = shown
        .iter()
        .map(|e| e.seq.to_string().len())
        .max()
        .unwrap_or(3)
        .max(3) as u16;
    let key_wanted = key_width_wanted(shown.iter().map(|e| e.key.as_str()));
    let cols = columns(table_area.width, seq_width, key_wanted);
    let rows = shown.iter().map(|e| {
        let mut cells = vec![right(e.seq.to_string())];
        cells.extend(cols.key.map(|width| key_cell(&e.key, width)));
        if e.storing {
            cells.extend([Cell::from(""), Cell::from(""), Cell::from("storing")]);
            return Row::new(cells)
                .style(Style::new().fg(Color::Green).add_modifier(Modifier::DIM));
        }
        let style = match e.attempt {
            _ if e.retry => RETRY_LATER,
            0 | 1 => Style::new(),
            2..=4 => Style::new().fg(Color::Yellow),
            _ => Style::new().fg(Color::LightRed).bold(),
        };
        let attempt = if e.retry {
            format!("↻ {}", e.attempt)
        } else {
            e.attempt.to_string()
        };
        cells.extend([
            right(attempt),
            right(fmt_us(e.age_us)),
            Cell::from(countdown(e, cols.countdown_cells)),
        ]);
        if cols.backoff {
            cells.push(right(fmt_us(e.backoff_us)));
        }
        Row::new(cells).style(style)
    });
    let mut widths = vec![Constraint::Length(seq_width)];
    let mut header = vec![right("seq".into())];
    if let Some(key) = cols.key {
        widths.push(Constraint::Length(key));
        header.push(Cell::from("key"));
    }
    widths.extend([
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(cols.countdown_width()),
    ]);
    header.extend([
        right("attempt".into()),
        right("age".into()),
        Cell::from(if cols.countdown_cells == COUNTDOWN_CELLS {
            "next retransmit"
        } else {
            "retransmit"
        }),
    ]);
    if cols.backoff {
        widths.push(Constraint::Length(7));
        header.push(right("backoff".into()));
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(DIM.bold()))
        .column_spacing(1);
    frame.render_widget(table, table_area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdown_shows_the_share_of_the_backoff_left() {
        let entry = |left, backoff| pb::InFlightEntry {
            next_retransmit_us: left,
            backoff_us: backoff,
            ..Default::default()
        };
        assert_eq!(countdown(&entry(800_000, 1_600_000), 8), "████░░░░ 800ms");
        assert_eq!(countdown(&entry(800_000, 1_600_000), 4), "██░░ 800ms");
        assert_eq!(countdown(&entry(0, 1_600_000), 8), "░░░░░░░░ due");
        assert_eq!(countdown(&entry(5, 0), 8), "░░░░░░░░ 5µs");
    }

    #[test]
    fn columns_give_way_as_the_panel_narrows() {
        // The wide layout: everything, the key at full length.
        assert_eq!(
            columns(64, 4, Some(16)),
            Columns {
                countdown_cells: 8,
                key: Some(16),
                backoff: true
            }
        );
        // Less room: the backoff goes before the key is cut.
        assert_eq!(
            columns(52, 4, Some(16)),
            Columns {
                countdown_cells: 8,
                key: Some(16),
                backoff: false
            }
        );
        // The compact layout: a shorter countdown bar makes room for a key.
        assert_eq!(
            columns(40, 4, Some(7)),
            Columns {
                countdown_cells: 4,
                key: Some(7),
                backoff: false
            }
        );
        // No keys: no key column, and the backoff where it fits.
        assert_eq!(
            columns(40, 4, None),
            Columns {
                countdown_cells: 8,
                key: None,
                backoff: false
            }
        );
        assert!(columns(50, 4, None).backoff);
        // Too narrow for a key at all.
        assert_eq!(columns(30, 4, Some(16)).key, None);
    }
}
