//! The retransmit and duplicate-drop counters with their sparklines: a
//! panel of their own in the wide layout, one line (with the window gauge)
//! in the compact one.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, RenderDirection, Sparkline};

use super::in_flight::window_gauge;
use super::{DIM, panel};
use crate::app::App;
use crate::fmt::fmt_rate;

fn spark(samples: &std::collections::VecDeque<u64>, colour: Color) -> Sparkline<'static> {
    // Newest first, drawn from the right edge, so a narrow panel shows the
    // most recent samples.
    Sparkline::default()
        .data(samples.iter().rev().copied().collect::<Vec<u64>>())
        .direction(RenderDirection::RightToLeft)
        .style(Style::new().fg(colour))
}

pub(super) fn render_counters(app: &App, frame: &mut Frame, area: Rect) {
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
            Span::raw("  retry later "),
            Span::styled(
                totals.retries.to_string(),
                Style::new().fg(Color::LightBlue).bold(),
            ),
        ])),
        acks,
    );
    let mut result_spans = vec![
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
    ];
    if totals.abandoned > 0 {
        result_spans.extend([
            Span::raw("  abandoned "),
            Span::styled(
                totals.abandoned.to_string(),
                Style::new().fg(Color::Yellow).bold(),
            ),
        ]);
    }
    frame.render_widget(Paragraph::new(Line::from(result_spans)), results);
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
pub(super) fn render_counter_line(app: &App, frame: &mut Frame, area: Rect) {
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
