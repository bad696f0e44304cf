//! Keys into state changes and commands: pause and resume, fault profiles,
//! requeue, focus and scrolling, the demo's rate, help, quit. Commands for
//! core wait for a connection.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::*;

impl App {
    pub(super) fn on_key(&mut self, key: KeyEvent) -> Option<Command> {
        // Some terminals report releases and repeats too; act on presses only.
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => return Some(Command::Quit),
            KeyCode::Char('q') => return Some(Command::Quit),
            KeyCode::Char('?') => {
                self.show_help = !self.show_help;
                return None;
            }
            KeyCode::Esc if self.show_help => {
                self.show_help = false;
                return None;
            }
            _ => {}
        }
        // While the help overlay is up, the other keys only close it, so a
        // stray key cannot pause the processor behind the user's back.
        if self.show_help {
            self.show_help = false;
            return None;
        }
        if matches!(key.code, KeyCode::Char('p' | 'f' | 'r')) && !self.is_connected() {
            // Core would not get the command, and the user should know now
            // rather than after a connect timeout.
            self.push_log(
                None,
                LogKind::Error,
                format!("not connected to core at {}; key ignored", self.core_addr),
            );
            return None;
        }
        match key.code {
            KeyCode::Char('p') => {
                if self.processor_connection() == pb::ProcessorConnection::Paused {
                    Some(Command::Resume)
                } else {
                    Some(Command::Pause)
                }
            }
            KeyCode::Char('f') => {
                self.fault_profile = (self.fault_profile + 1) % FAULT_PROFILES.len();
                Some(Command::SetFaults(
                    FAULT_PROFILES[self.fault_profile].faults,
                ))
            }
            KeyCode::Char('r') => self
                .dead()
                .get(self.selected_dead)
                .map(|d| Command::Requeue(d.seq)),
            KeyCode::Char('+') | KeyCode::Char('=') => self.change_rate(true),
            KeyCode::Char('-') | KeyCode::Char('_') => self.change_rate(false),
            KeyCode::Tab => {
                self.focus = self.next_focus(true);
                None
            }
            KeyCode::BackTab => {
                self.focus = self.next_focus(false);
                None
            }
            KeyCode::Up | KeyCode::Char('k') => self.scroll_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.scroll_by(1),
            KeyCode::PageUp => self.scroll_by(-(PAGE_ROWS as isize)),
            KeyCode::PageDown => self.scroll_by(PAGE_ROWS as isize),
            KeyCode::Home => self.scroll_by(isize::MIN),
            KeyCode::End => self.scroll_by(isize::MAX),
            _ => None,
        }
    }

    pub(super) fn change_rate(&mut self, up: bool) -> Option<Command> {
        let rate = self.demo_rate?;
        let new = if up {
            rate.saturating_mul(2).min(MAX_DEMO_RATE)
        } else {
            (rate / 2).max(MIN_DEMO_RATE)
        };
        if new == rate {
            return None;
        }
        self.demo_rate = Some(new);
        Some(if up {
            Command::RateUp
        } else {
            Command::RateDown
        })
    }

    /// The panel after (or before) the focused one; the dead list takes part
    /// only while it has entries.
    pub(super) fn next_focus(&self, forward: bool) -> Focus {
        let mut order = vec![Focus::InFlight, Focus::Results, Focus::Log];
        if !self.dead().is_empty() {
            order.push(Focus::Dead);
        }
        let at = order.iter().position(|f| *f == self.focus).unwrap_or(0);
        let next = if forward {
            (at + 1) % order.len()
        } else {
            (at + order.len() - 1) % order.len()
        };
        order[next]
    }

    /// Moves the focused panel by `delta` rows (the selection, in the dead
    /// list), staying within its rows.
    pub(super) fn scroll_by(&mut self, delta: isize) -> Option<Command> {
        let in_flight_len = self.in_flight().len();
        let dead_len = self.dead().len();
        let (offset, len) = match self.focus {
            Focus::InFlight => (&mut self.scroll.in_flight, in_flight_len),
            Focus::Results => (&mut self.scroll.results, self.results.len()),
            Focus::Log => (&mut self.scroll.log, self.log.len()),
            Focus::Dead => (&mut self.selected_dead, dead_len),
        };
        let max = len.saturating_sub(1);
        *offset = offset.saturating_add_signed(delta).min(max);
        None
    }
}
