//! The help overlay: every key, and what the numbers on the sequence
//! strip and the lanes line mean.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{DIM, FOCUSED, centered};
use crate::app::App;

/// Every key on the keyboard that does something.
const HELP: &[(&str, &str)] = &[
    ("p", "pause processing / resume it when paused"),
    ("", "  (every processor at once, standbys too;"),
    ("", "  to pause one, pause its process)"),
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
    "processed: every seq up to it was processed",
    "(n): events not sent yet / in flight",
    "running: algorithm calls now / most at once",
    "keys active: keys with an event running or waiting",
    "floor holder: the unresolved event at the acked",
    "  floor; it holds back the window (head-of-line)",
    "↻ (in flight): the processor asked to retry it later",
];

pub(super) fn render_help(app: &App, frame: &mut Frame, area: Rect) {
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
    // What the numbers on the sequence strip and the lanes line mean.
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
