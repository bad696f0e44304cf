fn main() -> std::process::ExitCode {
    ackflow_processor::cli::main()
}
