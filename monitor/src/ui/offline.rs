//! The screen while there is no live data: connecting to core, core
//! unreachable (with the retry countdown), or waiting for the first
//! snapshot, above the latest log lines.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Text};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::log::render_log;
use super::{DIM, centered};
use crate::app::{App, ConnState};
use crate::fmt::fmt_wait;

pub(super) fn render_offline(app: &App, frame: &mut Frame, area: Rect) {
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
