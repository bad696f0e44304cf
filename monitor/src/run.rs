//! The dashboard's event loop.
//!
//! Every source of events feeds one channel: the admin watch task, the
//! keyboard thread, the tick task and finished commands. The loop hands
//! each event to [`App::handle`], carries out the returned command, and
//! redraws. Events that arrive together are handled together and drawn
//! once, and frames are at least `FRAME` apart, so a burst of thousands
//! of results costs a few frames, not thousands.

use std::time::Duration;

use ratatui::DefaultTerminal;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppEvent, Command, TICK};
use crate::client::{self, Core};
use crate::terminal::{self, TerminalGuard};
use crate::ui;

/// Shortest time between two frames.
const FRAME: Duration = Duration::from_millis(33);
/// Room in the app's channel. A full channel slows the watch task, and
/// core then skips feed events for this watcher and says so (`Lagged`).
const CHANNEL: usize = 1024;
/// Most events handled before a frame is drawn.
const MAX_BATCH: usize = 2048;

/// What the dashboard watches and how it can act.
pub struct Dashboard {
    /// The starting state.
    pub app: App,
    /// Core's admin service.
    pub core: Core,
    /// In the demo: where a changed traffic rate goes.
    pub rate_tx: Option<watch::Sender<u32>>,
}

/// Takes over the terminal and runs the dashboard until the user quits or
/// `shutdown` fires; the terminal is restored before this returns.
pub async fn in_terminal(dashboard: Dashboard, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut guard = TerminalGuard::enter()?;
    let result = event_loop(&mut guard.terminal, dashboard, shutdown).await;
    drop(guard);
    result
}

/// The local time zone's offset from UTC, for the event log's clock.
pub fn local_utc_offset_s() -> i32 {
    chrono::Local::now().offset().local_minus_utc()
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    dashboard: Dashboard,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Dashboard {
        mut app,
        core,
        rate_tx,
    } = dashboard;
    let (events_tx, mut events_rx) = mpsc::channel(CHANNEL);
    // Stops the watch and tick tasks when the loop ends, whatever the way.
    let tasks = shutdown.child_token();
    let _stop_tasks = tasks.clone().drop_guard();
    let watcher = tokio::spawn(client::watch(
        core.clone(),
        events_tx.clone(),
        tasks.clone(),
    ));
    tokio::spawn(ticks(events_tx.clone(), tasks.clone()));
    let commander = core.commander(events_tx.clone());
    terminal::spawn_input(events_tx.clone())?;
    drop(events_tx);

    terminal.draw(|frame| ui::render(&app, frame))?;
    let mut last_frame = Instant::now();
    let mut dirty = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(last_frame + FRAME), if dirty => {}
            first = events_rx.recv() => {
                let Some(first) = first else { break };
                let mut quit = false;
                let mut next = Some(first);
                let mut handled = 0;
                while let Some(event) = next.take() {
                    match app.handle(event) {
                        None => {}
                        Some(Command::Quit) => quit = true,
                        Some(Command::RateUp | Command::RateDown) => {
                            if let (Some(tx), Some(rate)) = (&rate_tx, app.demo_rate) {
                                tx.send_replace(rate);
                            }
                        }
                        Some(command) => commander.execute(command),
                    }
                    handled += 1;
                    if quit || handled >= MAX_BATCH {
                        break;
                    }
                    next = events_rx.try_recv().ok();
                }
                if quit {
                    break;
                }
                dirty = true;
            }
        }
        if dirty && last_frame.elapsed() >= FRAME {
            terminal.draw(|frame| ui::render(&app, frame))?;
            last_frame = Instant::now();
            dirty = false;
        }
    }
    tasks.cancel();
    // Closing the receiver tells the keyboard thread to end.
    drop(events_rx);
    let _ = watcher.await;
    Ok(())
}

async fn ticks(events_tx: mpsc::Sender<AppEvent>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        // A tick only refreshes the screen; when the channel is full there
        // is a redraw coming anyway.
        match events_tx.try_send(AppEvent::Tick) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP (the terminal went away). In raw
/// mode Ctrl-C arrives as a key, so SIGINT only comes from `kill`.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let wait = |kind: SignalKind| async move {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(SignalKind::interrupt()) => {},
            _ = wait(SignalKind::terminate()) => {},
            _ = wait(SignalKind::hangup()) => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
