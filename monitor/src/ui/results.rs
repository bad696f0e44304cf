//! The results panel: the latest results from the feed, newest first.

use ackflow_proto::v1 as pb;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::{DIM, effective_offset, panel, right, visible_rows};
use crate::app::{App, Focus};
use crate::fmt::fmt_ms;

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
