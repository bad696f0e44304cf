//! The results panel: the latest results from the feed with their events'
//! keys, newest first in the order core stored them (not seq order when
//! keys are processed side by side).

use ackflow_proto::v1 as pb;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::{
    DIM, KEY_MIN_WIDTH, effective_offset, key_cell, key_width_wanted, panel, right, visible_rows,
};
use crate::app::{App, Focus};
use crate::fmt::fmt_ms;

/// Width of the status column (`failed`), and with an abandoned result
/// shown (`abandoned`).
const STATUS_WIDTH: u16 = 6;
const STATUS_ABANDONED_WIDTH: u16 = 9;
/// Width of the latency column (`18.3`, `12345`).
const LATENCY_WIDTH: u16 = 5;
/// Width of the attempt column (its header).
const ATTEMPT_WIDTH: u16 = 7;
/// Kind column bounds: the header, the longest kind shown in full
/// (`unknown-kind`), and the width it is cut to when room is short (the
/// built-in kinds, `wordcount` the longest, still fit).
const KIND_MIN_WIDTH: u16 = 4;
const KIND_MAX_WIDTH: u16 = 12;
const KIND_NARROW_WIDTH: u16 = 9;
/// Width a key is cut to when room is short: the demo's keys (`user-12`,
/// `slow-1`) still fit.
const KEY_NARROW_WIDTH: u16 = 8;
/// An output column narrower than this is left out: a few characters of a
/// hash or a message say nothing.
const OUTPUT_MIN_WIDTH: u16 = 8;
/// Room the output keeps when the attempt column is shown: an attempt is
/// almost always 1, so it is worth less than the start of a message.
const OUTPUT_WITH_ATTEMPT_WIDTH: u16 = 24;

/// Which columns the table shows at a given width. The seq and the status
/// are always there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    /// Width of the status column.
    status: u16,
    /// Width of the key column; `None` leaves it out.
    key: Option<u16>,
    /// Width of the kind column; longer kinds are cut.
    kind: u16,
    /// Whether the latency (`ms`) column is shown.
    latency: bool,
    /// Whether the attempt column is shown.
    attempt: bool,
    /// Whether the output column (the rest of the row) is shown.
    output: bool,
}

impl Columns {
    /// Cells taken by every column but the output, with one space between
    /// columns.
    fn fixed_width(&self, seq_width: u16) -> u16 {
        let mut width = seq_width + 1 + self.kind + 1 + self.status;
        if let Some(key) = self.key {
            width += 1 + key;
        }
        if self.latency {
            width += 1 + LATENCY_WIDTH;
        }
        if self.attempt {
            width += 1 + ATTEMPT_WIDTH;
        }
        width
    }
}

/// The columns for a table `width` cells wide whose seqs take `seq_width`,
/// whose longest key would take `key_wanted` (`None`: no row has a key) and
/// whose longest kind takes `kind_wanted`. What goes first as the table
/// narrows: the attempt (almost always 1), then the full length of the kind
/// and of the key, then the output, then the latency, and last the key.
fn columns(
    width: u16,
    seq_width: u16,
    status: u16,
    key_wanted: Option<u16>,
    kind_wanted: u16,
) -> Columns {
    let kind_full = kind_wanted.clamp(KIND_MIN_WIDTH, KIND_MAX_WIDTH);
    let full = Columns {
        status,
        key: key_wanted,
        kind: kind_full,
        latency: true,
        attempt: true,
        output: true,
    };
    let no_attempt = Columns {
        attempt: false,
        ..full
    };
    let narrow_kind = Columns {
        kind: kind_full.min(KIND_NARROW_WIDTH),
        ..no_attempt
    };
    let narrow_key = Columns {
        key: key_wanted.map(|w| w.min(KEY_NARROW_WIDTH)),
        ..narrow_kind
    };
    for (cols, output) in [
        (full, OUTPUT_WITH_ATTEMPT_WIDTH),
        (no_attempt, OUTPUT_MIN_WIDTH),
        (narrow_kind, OUTPUT_MIN_WIDTH),
        (narrow_key, OUTPUT_MIN_WIDTH),
    ] {
        if cols.fixed_width(seq_width) + 1 + output <= width {
            return cols;
        }
    }
    let no_output = Columns {
        output: false,
        ..narrow_key
    };
    let no_latency = Columns {
        latency: false,
        ..no_output
    };
    for cols in [no_output, no_latency] {
        if cols.fixed_width(seq_width) <= width {
            return cols;
        }
    }
    // The key gets what is left, if that is enough to say something.
    let no_key = Columns {
        key: None,
        ..no_latency
    };
    let room = width.saturating_sub(no_key.fixed_width(seq_width) + 1);
    let key = narrow_key
        .key
        .map(|w| w.min(room))
        .filter(|&w| w >= KEY_MIN_WIDTH.min(narrow_key.key.unwrap_or(0)));
    Columns { key, ..no_key }
}

pub(super) fn render_results(app: &App, frame: &mut Frame, area: Rect) {
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
    if totals.abandoned > 0 {
        title.push(Span::styled(
            format!("abandoned {}", totals.abandoned),
            Style::new().fg(Color::Yellow),
        ));
        title.push(Span::raw(" "));
    }
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
    let kind_wanted = shown
        .iter()
        .map(|r| r.kind.chars().count())
        .max()
        .unwrap_or(0)
        .min(usize::from(KIND_MAX_WIDTH)) as u16;
    let key_wanted = key_width_wanted(shown.iter().map(|r| r.key.as_str()));
    let status_width = if shown
        .iter()
        .any(|r| r.status() == pb::ResultStatus::Abandoned)
    {
        STATUS_ABANDONED_WIDTH
    } else {
        STATUS_WIDTH
    };
    let cols = columns(
        block_inner.width,
        seq_width,
        status_width,
        key_wanted,
        kind_wanted,
    );
    let rows = shown.into_iter().map(|r| {
        let status = match r.status() {
            pb::ResultStatus::Ok => Span::styled("ok", Style::new().fg(Color::Green)),
            pb::ResultStatus::Failed => Span::styled("failed", Style::new().fg(Color::Red).bold()),
            pb::ResultStatus::Abandoned => {
                Span::styled("abandoned", Style::new().fg(Color::Yellow))
            }
            pb::ResultStatus::Unspecified => Span::styled("?", DIM),
        };
        let mut cells = vec![right(r.seq.to_string())];
        cells.extend(cols.key.map(|width| key_cell(&r.key, width)));
        cells.extend([Cell::from(r.kind.clone()), Cell::from(Line::from(status))]);
        if cols.latency {
            cells.push(right(fmt_ms(r.latency_us)));
        }
        if cols.attempt {
            cells.push(right(r.attempt.to_string()));
        }
        if cols.output {
            let output_style = if r.status() == pb::ResultStatus::Failed {
                Style::new().fg(Color::Red)
            } else {
                DIM
            };
            cells.push(Cell::from(Span::styled(r.output.clone(), output_style)));
        }
        Row::new(cells)
    });
    let mut widths = vec![Constraint::Length(seq_width)];
    let mut header = vec![right("seq".into())];
    if let Some(key) = cols.key {
        widths.push(Constraint::Length(key));
        header.push(Cell::from("key"));
    }
    widths.extend([
        Constraint::Length(cols.kind),
        Constraint::Length(cols.status),
    ]);
    header.extend([Cell::from("kind"), Cell::from("status")]);
    if cols.latency {
        widths.push(Constraint::Length(LATENCY_WIDTH));
        header.push(right("ms".into()));
    }
    if cols.attempt {
        widths.push(Constraint::Length(ATTEMPT_WIDTH));
        header.push(right("attempt".into()));
    }
    if cols.output {
        widths.push(Constraint::Fill(1));
        header.push(Cell::from("output"));
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(DIM.bold()))
        .column_spacing(1)
        .block(block);
    frame.render_widget(table, area);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(key: Option<u16>, kind: u16, latency: bool, attempt: bool, output: bool) -> Columns {
        Columns {
            status: STATUS_WIDTH,
            key,
            kind,
            latency,
            attempt,
            output,
        }
    }

    #[test]
    fn columns_give_way_as_the_panel_narrows() {
        // Wide: everything, key and kind at full length.
        assert_eq!(
            columns(80, 4, STATUS_WIDTH, Some(12), 12),
            cols(Some(12), 12, true, true, true)
        );
        // The wide layout at 120 columns (58 inside the panel): the attempt
        // goes first.
        assert_eq!(
            columns(58, 4, STATUS_WIDTH, Some(7), 12),
            cols(Some(7), 12, true, false, true)
        );
        // Then the kind and the key are cut, while the output keeps room.
        assert_eq!(
            columns(53, 4, STATUS_WIDTH, Some(16), 12),
            cols(Some(16), 9, true, false, true)
        );
        assert_eq!(
            columns(45, 4, STATUS_WIDTH, Some(16), 12),
            cols(Some(8), 9, true, false, true)
        );
        // The compact layout at 80 columns (36 inside): the output goes,
        // the demo's keys stay whole, even with five-digit seqs.
        assert_eq!(
            columns(36, 4, STATUS_WIDTH, Some(7), 9),
            cols(Some(7), 9, true, false, false)
        );
        assert_eq!(
            columns(36, 5, STATUS_WIDTH, Some(7), 9),
            cols(Some(7), 9, true, false, false)
        );
        // Narrower: the latency, then the key.
        assert_eq!(
            columns(30, 4, STATUS_WIDTH, Some(7), 9),
            cols(Some(7), 9, false, false, false)
        );
        assert_eq!(
            columns(27, 4, STATUS_WIDTH, Some(7), 9),
            cols(Some(5), 9, false, false, false)
        );
        assert_eq!(columns(24, 4, STATUS_WIDTH, Some(7), 9).key, None);
        // No keys: no key column, and its room goes to the output.
        assert_eq!(
            columns(36, 4, STATUS_WIDTH, None, 9),
            cols(None, 9, true, false, true)
        );
    }

    #[test]
    fn the_chosen_columns_fit() {
        for width in 20..=100 {
            for key in [None, Some(3), Some(7), Some(16)] {
                let c = columns(width, 5, STATUS_WIDTH, key, 12);
                let output = if c.output { 1 + OUTPUT_MIN_WIDTH } else { 0 };
                assert!(
                    c.fixed_width(5) + output <= width
                        || width < 5 + 1 + KIND_NARROW_WIDTH + 1 + STATUS_WIDTH,
                    "{width} {key:?}: {c:?}"
                );
            }
        }
    }
}
