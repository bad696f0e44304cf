//! `ackflow-processor`, built inside the test package so the tests can run it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ackflow_processor::cli::main()
}
