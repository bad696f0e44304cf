fn main() -> std::process::ExitCode {
    ackflow_core::cli::main()
}
