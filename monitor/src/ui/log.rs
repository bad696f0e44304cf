//! The event log panel: what happened (retransmits, retry-later requests, duplicate drops,
//! connections, pauses, dead events) and the monitor's own doings, newest
//! first, coloured by kind.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::{DIM, effective_offset, panel, visible_rows};
use crate::app::{App, Focus, LogKind};
use crate::fmt::fmt_clock;

fn log_style(kind: LogKind) -> Style {
    match kind {
        LogKind::Retransmit => Style::new().fg(Color::Yellow),
        LogKind::Retry => Style::new().fg(Color::LightBlue),
        LogKind::Duplicate => Style::new().fg(Color::Magenta),
        LogKind::Connection => Style::new().fg(Color::Cyan),
        LogKind::Pause => Style::new().fg(Color::Blue).bold(),
        LogKind::Dead => Style::new().fg(Color::LightRed).bold(),
        LogKind::Requeued => Style::new().fg(Color::Green),
        LogKind::FloorHeld => Style::new().fg(Color::LightYellow),
        LogKind::Lagged => Style::new().fg(Color::Red),
        LogKind::Monitor => Style::new(),
        LogKind::Error => Style::new().fg(Color::Red),
    }
}

pub(super) fn render_log(app: &App, frame: &mut Frame, area: Rect) {
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
