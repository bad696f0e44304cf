//! The `ackflow-core` binary's entry point, shared with the test harness.

use std::process::ExitCode;

use clap::Parser;

use crate::config::Config;

/// Parses the command line, runs core until SIGINT/SIGTERM.
pub fn main() -> ExitCode {
    let config = Config::parse();
    config.log_format.init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
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
