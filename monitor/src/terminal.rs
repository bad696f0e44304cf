//! Owning the terminal: refusing to start without one, raw mode and the
//! alternate screen for exactly as long as the dashboard runs (restored on
//! every way out, panics included), and the thread that reads the keyboard.

use std::io::IsTerminal;
use std::time::Duration;

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event};
use tokio::sync::mpsc;

use crate::app::AppEvent;

/// How long the keyboard thread waits for input before checking whether
/// the dashboard is still there.
const INPUT_POLL: Duration = Duration::from_millis(100);

/// Standard output is not a terminal, so there is nothing to draw on.
#[derive(Debug, thiserror::Error)]
#[error("ackflow-monitor needs a terminal (stdout is not a TTY)")]
pub struct NotATerminal;

/// Fails with [`NotATerminal`] when stdout is redirected or piped.
pub fn ensure_terminal() -> Result<(), NotATerminal> {
    if std::io::stdout().is_terminal() {
        Ok(())
    } else {
        Err(NotATerminal)
    }
}

/// The terminal in raw mode on the alternate screen. Dropping it gives the
/// terminal back, so an early return or an error cannot leave it raw; a
/// panic is covered by the hook `ratatui::try_init` installs.
pub struct TerminalGuard {
    pub terminal: DefaultTerminal,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen.
    pub fn enter() -> anyhow::Result<Self> {
        ensure_terminal()?;
        match ratatui::try_init() {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                // Raw mode may be on even though a later step failed.
                ratatui::restore();
                Err(anyhow::Error::new(e).context("setting up the terminal"))
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Starts the thread that turns key presses and resizes into
/// [`AppEvent`]s. `crossterm::event::read` blocks, so it gets a thread of
/// its own rather than a runtime worker; the thread ends once the app's
/// receiver is gone.
pub fn spawn_input(
    events_tx: mpsc::Sender<AppEvent>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("keyboard".into())
        .spawn(move || {
            while !events_tx.is_closed() {
                match event::poll(INPUT_POLL) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "reading the terminal failed");
                        return;
                    }
                }
                let app_event = match event::read() {
                    Ok(Event::Key(key)) => AppEvent::Key(key),
                    Ok(Event::Resize(..)) => AppEvent::Resize,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the terminal failed");
                        return;
                    }
                };
                if events_tx.blocking_send(app_event).is_err() {
                    return;
                }
            }
        })
}
