//! The `ackflow-processor` binary's entry point, shared with the test harness.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Parses the command line and runs until SIGINT/SIGTERM.
pub fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async { crate::client::run(config, cancel_on_signal()).await });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr as `--log-format` says, filtered by `RUST_LOG` (default
/// `info`). Does nothing if a subscriber is already set.
pub fn init_logging(format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or journald gets plain
        // text that grep and log shippers read.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        crate::config::LogFormat::Pretty => builder.try_init(),
        crate::config::LogFormat::Json => builder.json().try_init(),
    };
}

/// A token cancelled on SIGINT or SIGTERM (call inside a tokio runtime).
pub fn cancel_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        ackflow_proto::rt::shutdown_signal().await;
        tracing::info!("shutting down");
        signal_cancel.cancel();
    });
    cancel
}
