//! Drawing the dashboard. [`render`] is a pure function of the [`App`]
//! state: it reads no clock and keeps no state of its own, so a snapshot
//! test can draw any screen from events alone.
//!
//! This module owns the screen's layout and what the panels share (the
//! focus border, line fitting, scrolling arithmetic); each panel or line is
//! drawn by its own submodule, named after it.
//!
//! Two layouts share the same panels: a wide one (at least
//! [`WIDE_MIN_WIDTH`]×[`WIDE_MIN_HEIGHT`]) with a counters panel holding
//! tall sparklines and the in-flight gauge inside the in-flight panel, and a
//! compact one for small terminals (down to 80×24) where the gauge and the
//! counters share one line and the panels are narrower. Lines that do not
//! fit drop their least important items first (see `fit`).

mod counters;
mod dead;
mod header;
mod help;
mod in_flight;
mod lanes;
mod log;
mod offline;
mod results;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell};

use self::counters::{render_counter_line, render_counters};
use self::dead::render_dead;
use self::header::{footer_line, rates_line, sequence_strip, status_line};
use self::help::render_help;
use self::in_flight::render_in_flight;
use self::lanes::lanes_line;
use self::log::render_log;
use self::offline::render_offline;
use self::results::render_results;
use crate::app::App;
use crate::fmt::fmt_key;

/// Narrowest terminal that gets the wide layout.
pub const WIDE_MIN_WIDTH: u16 = 110;
/// Shortest terminal that gets the wide layout.
pub const WIDE_MIN_HEIGHT: u16 = 30;

const DIM: Style = Style::new().fg(Color::DarkGray);
const FOCUSED: Color = Color::Cyan;
/// Widest key column (in-flight and results); longer keys are cut with `…`.
const KEY_MAX_WIDTH: u16 = 16;
/// A key column narrower than this says too little to be worth its room.
const KEY_MIN_WIDTH: u16 = 4;

/// Draws the whole dashboard for `app` into `frame`.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let live = app.is_connected() && app.snapshot.is_some();
    if live {
        let [status, rates, strip, lanes, body, footer] = Layout::vertical([
            Constraint::Length(1),
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
        frame.render_widget(lanes_line(app, lanes.width), lanes);
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
// Lines that drop what does not fit.

/// One item of a status line, shortened and then dropped when the line is
/// too narrow.
struct Item {
    /// 0 is never dropped; higher numbers go first.
    drop_rank: u8,
    spans: Vec<Span<'static>>,
    /// What it says when short of room, before it is dropped.
    short: Option<Vec<Span<'static>>>,
}

fn item(drop_rank: u8, spans: Vec<Span<'static>>) -> Item {
    Item {
        drop_rank,
        spans,
        short: None,
    }
}

/// An item with a shorter form, used when the line is too narrow for it.
fn item_or_short(drop_rank: u8, spans: Vec<Span<'static>>, short: Vec<Span<'static>>) -> Item {
    Item {
        drop_rank,
        spans,
        short: Some(short),
    }
}

/// Joins `items` with `separator` into a line of at most `width` cells:
/// while it is too wide, the items with the highest `drop_rank` that have
/// a short form take it (all of that rank at once, so that alike items
/// read alike), and then the items with the highest `drop_rank` are
/// dropped (the last of them first).
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
        let shorten = items
            .iter()
            .filter(|i| i.short.is_some())
            .map(|i| i.drop_rank)
            .max();
        if let Some(rank) = shorten {
            for i in items.iter_mut().filter(|i| i.drop_rank == rank) {
                if let Some(short) = i.short.take() {
                    i.spans = short;
                }
            }
            continue;
        }
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
    // The in-flight table needs about 64 columns with a full key; the rest
    // goes to the counters, where a wider sparkline shows a longer history.
    let [in_flight, counters] =
        Layout::horizontal([Constraint::Length(66), Constraint::Fill(1)]).areas(top);
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
        Layout::horizontal([Constraint::Length(42), Constraint::Fill(1)]).areas(top);
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

/// A right-aligned cell, for numbers.
fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).alignment(Alignment::Right))
}

/// Cells the longest of `keys` takes once cut to [`KEY_MAX_WIDTH`], at
/// least the header's; `None` when no row has a key, so the table leaves
/// the column out.
fn key_width_wanted<'a>(keys: impl Iterator<Item = &'a str>) -> Option<u16> {
    keys.filter(|k| !k.is_empty())
        .map(|k| Span::raw(fmt_key(k, usize::from(KEY_MAX_WIDTH))).width() as u16)
        .max()
        .map(|w| w.max("key".len() as u16))
}

/// An event's key in a column `width` cells wide: cut, with control
/// characters replaced (see [`fmt_key`]); a dim `–` when it has none.
fn key_cell(key: &str, width: u16) -> Cell<'static> {
    let text = fmt_key(key, usize::from(width));
    if key.is_empty() {
        Cell::from(Span::styled(text, DIM))
    } else {
        Cell::from(text)
    }
}

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
}
