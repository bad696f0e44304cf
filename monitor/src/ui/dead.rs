//! The dead panel: parked events not requeued yet, newest first, with the
//! selection that `r` requeues.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table};

use super::{DIM, panel, right, visible_rows};
use crate::app::{App, Focus};

pub(super) fn render_dead(app: &App, frame: &mut Frame, area: Rect) {
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
