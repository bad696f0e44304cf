//! The `ackflow-core` binary's entry point, shared with the test harness.

use std::process::ExitCode;

use clap::Parser;

use crate::config::{Config, LogFormat};

/// Parses the command line, runs core until SIGINT/SIGTERM.
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
        ackflow_proto::telemetry::init("ackflow-core", config.log_format == LogFormat::Json)
    };
    match runtime.block_on(crate::server::run(
        config,
        ackflow_proto::rt::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
