//! `ackflow-processor`, built inside the test package so the tests can run it.
fn main() -> std::process::ExitCode {
    ackflow_processor::cli::main()
}
