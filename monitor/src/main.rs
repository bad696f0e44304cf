use std::process::ExitCode;

fn main() -> ExitCode {
    ackflow_monitor::cli::main()
}
