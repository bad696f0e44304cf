//! `ackflow-monitor`, built inside the test package so the tests can run it.
fn main() -> std::process::ExitCode {
    ackflow_monitor::cli::main()
}
