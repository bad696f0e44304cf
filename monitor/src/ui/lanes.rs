//! The lanes line, under the sequence strip: how events are processed side
//! by side and what holds them back. It shows the ordering mode in force
//! (core's `--ordering`), the processor's algorithm calls running against
//! its `--concurrency`, its active lanes (keys, under key ordering) and the
//! floor holder: the unresolved event at the acked floor, which holds back
//! everything the window may send after it (head-of-line). A floor holder
//! held longer than [`FLOOR_HELD_LONG_US`] is highlighted, since that is
//! when one slow event starts to stall the others. While core isolates
//! crash suspects (events in flight when a processor life ended, sent one at
//! a time until each has a result), their count is shown in yellow. With
//! webhooks, each one's calls in progress against its own cap
//! (`--webhook-concurrency`), in yellow when full.

use ackflow_proto::v1 as pb;
use ratatui::style::{Color, Style};
use ratatui::text::Span;
use ratatui::widgets::Paragraph;

use super::{DIM, fit, item};
use crate::app::{App, FLOOR_HELD_LONG_US};
use crate::fmt::{fmt_key, fmt_us};

/// Lines narrower than this use the short labels.
const NARROW_BELOW: u16 = 100;
/// Longest key shown for the floor holder, in cells (wide and narrow).
const KEY_WIDTH: usize = 24;
const KEY_WIDTH_NARROW: usize = 10;

/// ` ordering key  running 12/256  keys active 37  floor holder seq 1223
/// key user-1 held 2.4s attempt 3`, shortened on narrow terminals.
pub(super) fn lanes_line(app: &App, width: u16) -> Paragraph<'static> {
    let Some(s) = &app.snapshot else {
        return Paragraph::default();
    };
    let narrow = width < NARROW_BELOW;
    let bold = Style::new().bold();
    // Cores that predate ordering modes send UNSPECIFIED: their processors
    // keep global order.
    let keyed = s.ordering() == pb::Ordering::Key;
    let processor = s.processor.clone().unwrap_or_default();
    // Core keeps the last report of a processor that went away, and a
    // processor that predates concurrency reports none: show neither.
    let reported = processor.connection() != pb::ProcessorConnection::Disconnected
        && processor.concurrency > 0;
    let value = |v: String| {
        if reported {
            Span::styled(v, bold)
        } else {
            Span::styled("–", DIM)
        }
    };
    let lanes_label = match (keyed, narrow) {
        (true, false) => "keys active ",
        (true, true) => "keys ",
        (false, _) => "lanes ",
    };
    let items = vec![
        item(
            0,
            vec![
                Span::styled(" ordering ", DIM),
                Span::styled(if keyed { "key" } else { "global" }, bold),
            ],
        ),
        item(
            2,
            vec![
                Span::styled("running ", DIM),
                value(format!("{}/{}", processor.running, processor.concurrency)),
            ],
        ),
        item(
            1,
            vec![
                Span::styled(lanes_label, DIM),
                value(processor.lanes_active.to_string()),
            ],
        ),
        item(0, floor_holder(s.floor_holder.as_ref(), narrow)),
    ];
    let mut items = items;
    if reported && !processor.webhooks.is_empty() {
        // Each webhook's calls against its own cap: a full one (yellow) holds
        // back its kind only.
        let mut spans = vec![Span::styled(if narrow { "hooks" } else { "webhooks" }, DIM)];
        for hook in &processor.webhooks {
            let full = hook.cap > 0 && hook.calls >= hook.cap;
            let style = if full {
                Style::new().fg(Color::Yellow).bold()
            } else {
                bold
            };
            spans.push(Span::styled(format!(" {} ", fmt_key(&hook.kind, 12)), DIM));
            spans.push(Span::styled(format!("{}/{}", hook.calls, hook.cap), style));
        }
        items.insert(items.len() - 1, item(3, spans));
    }
    if s.suspects > 0 {
        // After a processor life ended with events in flight, core
        // isolates an event that crashes the processor by bisection.
        items.insert(
            1,
            item(
                0,
                vec![
                    Span::styled(
                        if narrow {
                            "suspects "
                        } else {
                            "crash suspects "
                        },
                        Style::new().fg(Color::Yellow),
                    ),
                    Span::styled(
                        s.suspects.to_string(),
                        Style::new().fg(Color::Yellow).bold(),
                    ),
                ],
            ),
        );
    }
    Paragraph::new(fit(items, "  ", width))
}

/// `floor holder seq 1223 key user-1 held 2.4s attempt 3`, or narrow
/// `floor 1223 user-1 held 2.4s attempt 3`; on a yellow background when
/// held long.
fn floor_holder(holder: Option<&pb::FloorHolder>, narrow: bool) -> Vec<Span<'static>> {
    let Some(h) = holder else {
        let label = if narrow { "floor " } else { "floor holder " };
        return vec![Span::styled(label, DIM), Span::styled("none", DIM)];
    };
    let long = h.held_us > FLOOR_HELD_LONG_US;
    let (label, value) = if long {
        let badge = Style::new().fg(Color::Black).bg(Color::Yellow);
        (badge, badge.bold())
    } else {
        (DIM, Style::new().bold())
    };
    let key = if h.key.is_empty() {
        "no key".to_string()
    } else {
        fmt_key(&h.key, if narrow { KEY_WIDTH_NARROW } else { KEY_WIDTH })
    };
    // Attempt 0: the processor acked it and its result is being stored.
    let attempt = if h.attempt == 0 {
        "storing".to_string()
    } else {
        format!("attempt {}", h.attempt)
    };
    let mut spans = if narrow {
        vec![Span::styled("floor ", label)]
    } else {
        vec![Span::styled("floor holder seq ", label)]
    };
    spans.push(Span::styled(h.seq.to_string(), value));
    if !narrow && !h.key.is_empty() {
        spans.push(Span::styled(" key ", label));
    } else {
        spans.push(Span::styled(" ", label));
    }
    spans.extend([
        Span::styled(key, value),
        Span::styled(" held ", label),
        Span::styled(fmt_us(h.held_us), value),
        Span::styled(" ", label),
        Span::styled(attempt, label),
    ]);
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(spans: &[Span]) -> String {
        spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn the_floor_holder_reads_as_a_phrase() {
        let holder = pb::FloorHolder {
            seq: 1223,
            key: "user-1".into(),
            held_us: 2_400_000,
            attempt: 3,
        };
        assert_eq!(
            text(&floor_holder(Some(&holder), false)),
            "floor holder seq 1223 key user-1 held 2.4s attempt 3"
        );
        assert_eq!(
            text(&floor_holder(Some(&holder), true)),
            "floor 1223 user-1 held 2.4s attempt 3"
        );
        let storing = pb::FloorHolder {
            key: String::new(),
            held_us: 40_000,
            attempt: 0,
            ..holder
        };
        assert_eq!(
            text(&floor_holder(Some(&storing), false)),
            "floor holder seq 1223 no key held 40ms storing"
        );
        assert_eq!(text(&floor_holder(None, true)), "floor none");
    }

    #[test]
    fn a_floor_held_long_is_highlighted() {
        let holder = |held_us| pb::FloorHolder {
            seq: 7,
            key: "k".into(),
            held_us,
            attempt: 1,
        };
        let background = |held_us| floor_holder(Some(&holder(held_us)), false)[0].style.bg;
        assert_eq!(background(FLOOR_HELD_LONG_US), None);
        assert_eq!(background(FLOOR_HELD_LONG_US + 1), Some(Color::Yellow));
    }
}
