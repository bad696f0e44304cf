//! The `ackflow-processor` binary's entry point, shared with the test harness.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat};

/// Parses the command line and runs until SIGINT/SIGTERM.
pub fn main() -> ExitCode {
    let config = Config::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Dropped before the runtime: the last spans go out through it.
    let _telemetry = {
        let _runtime = runtime.enter();
        init_telemetry(config.log_format)
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

/// Logs on stderr as `--log-format` says, filtered by `RUST_LOG`, and with
/// the `otlp` feature the trace export (see `ackflow_proto::telemetry`).
/// Call inside the runtime; hold the value until the processor stopped.
pub fn init_telemetry(format: LogFormat) -> ackflow_proto::telemetry::Telemetry {
    ackflow_proto::telemetry::init("ackflow-processor", format == LogFormat::Json)
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
