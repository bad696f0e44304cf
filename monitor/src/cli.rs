//! The `ackflow-monitor` command line: parsing, logging to a file, the
//! runtime, and exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use ackflow_proto::token::{self, Token};
use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{App, MAX_DEMO_RATE, MIN_DEMO_RATE};
use crate::client::Core;
#[cfg(feature = "demo")]
use crate::demo;
use crate::run::{self, Dashboard};
use crate::terminal;

/// Exit code when stdout is not a terminal.
const EXIT_NOT_A_TERMINAL: u8 = 2;

/// ackflow monitor: a live terminal dashboard of the delivery protocol
/// (sequence numbers, in-flight window, retransmits, duplicate drops,
/// results), with keys to pause the processor and inject faults.
#[derive(Debug, Parser)]
#[command(name = "ackflow-monitor", version, about, long_about = None)]
pub struct Cli {
    /// Core's gRPC address (its Admin service). Several, comma-separated, for cores sharing one database: the monitor watches the one that leads.
    #[arg(long, env = "ACKFLOW_CORE", default_value = "http://127.0.0.1:50051")]
    pub core: String,

    /// Bearer token for core's Admin service (core's --admin-token). Sent only over TLS (an https:// --core) or to a loopback address.
    #[arg(
        long,
        env = "ACKFLOW_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<Token>,

    /// File holding --token (one trailing newline is ignored), so the token is in no process listing or environment.
    #[arg(long, env = "ACKFLOW_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// PEM certificate of the CA that signed core's TLS certificate (a private CA); needs an https:// --core. Without it an https:// core is verified against the system's trusted roots (SSL_CERT_FILE / SSL_CERT_DIR when set).
    #[arg(long, env = "ACKFLOW_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Name core's certificate must carry (default: the host of --core).
    #[arg(long, env = "ACKFLOW_TLS_DOMAIN")]
    pub tls_domain: Option<String>,

    /// File the monitor's logs are appended to (they never go to the screen); RUST_LOG sets the level.
    #[arg(long, env = "ACKFLOW_MONITOR_LOG_FILE", global = true, default_value_os_t = default_log_file())]
    pub log_file: PathBuf,

    #[command(subcommand)]
    pub command: Option<Mode>,
}

/// What to watch.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Run core (SQLite in a temporary directory), two processors (sharing
    /// the keys) and a traffic generator in this process, and watch them.
    Demo(DemoArgs),
}

/// Settings of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Events published per second at the start (`+` / `-` double or halve it).
    #[arg(long, env = "ACKFLOW_DEMO_RATE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_DEMO_RATE)..=i64::from(MAX_DEMO_RATE)))]
    pub rate: u32,

    /// Core's in-flight window: most seqs sent but not yet acknowledged.
    #[arg(long, env = "ACKFLOW_WINDOW", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub window: u32,

    /// Seconds between two crash events (0 = none): each crashes the processor that owns its key, so the other takes that processor's keys until it comes back 3 s later and takes them back.
    #[arg(long, env = "ACKFLOW_DEMO_CRASH_EVERY", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub crash_every: u64,
}

/// What the dashboard watches, once the flags are checked.
enum Watch {
    /// The demo's own core, processor and traffic.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// A core that runs elsewhere.
    Core(Box<Core>),
}

/// `ackflow-monitor.log` in the system's temporary directory.
fn default_log_file() -> PathBuf {
    std::env::temp_dir().join("ackflow-monitor.log")
}

/// Parses the command line and runs the dashboard (or the demo) until the
/// user quits. Exit codes: 0 after quitting, 1 on an error, 2 when stdout
/// is not a terminal.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A mistake in the flags is reported before anything needs a terminal.
    let watch = match cli.command {
        #[cfg(feature = "demo")]
        Some(Mode::Demo(args)) => Watch::Demo(args),
        #[cfg(not(feature = "demo"))]
        Some(Mode::Demo(_)) => {
            eprintln!(
                "error: this ackflow-monitor was built without the demo: build it with the \
                 `demo` feature (on by default)"
            );
            return ExitCode::FAILURE;
        }
        None => match core(&cli) {
            Ok(core) => Watch::Core(Box::new(core)),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Err(e) = terminal::ensure_terminal() {
        eprintln!("{e}");
        return ExitCode::from(EXIT_NOT_A_TERMINAL);
    }
    if let Err(e) = init_logging(&cli.log_file) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            run::shutdown_signal().await;
            tracing::info!("signal received; quitting");
            on_signal.cancel();
        });
        match watch {
            #[cfg(feature = "demo")]
            Watch::Demo(args) => demo::run(args, shutdown).await,
            Watch::Core(core) => watch_core(*core, shutdown).await,
        }
    });
    // Commands still in flight must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "monitor failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Core as the flags describe it: its URL, TLS, and the admin token (from
/// --token or --token-file), which goes in clear text to loopback only.
fn core(cli: &Cli) -> anyhow::Result<Core> {
    let token = token::from_flag_or_file("--token", cli.token.as_ref(), cli.token_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    Core::new(&cli.core, token.as_ref().map(Token::expose))?
        .with_tls(cli.tls_ca.as_deref(), cli.tls_domain.as_deref())
}

/// The dashboard against a core that runs elsewhere.
async fn watch_core(core: Core, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut app = App::new(core.url.clone(), None);
    app.utc_offset_s = run::local_utc_offset_s();
    run::in_terminal(
        Dashboard {
            app,
            core,
            rate_tx: None,
        },
        shutdown,
    )
    .await
}

/// Sends `tracing` output (level from `RUST_LOG`, default `info`) to the
/// end of `path`, and records panics there too: anything written to the
/// screen would tear the dashboard.
fn init_logging(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow::anyhow!("setting up logging: {e}"))?;
    // Installed before the terminal's hook (which wraps it), so a panic
    // first restores the terminal, then lands in the log and on stderr.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panic");
        previous(info);
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_and_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "ackflow-monitor",
            "--core",
            "http://10.0.0.1:50051",
            "--log-file",
            "/tmp/m.log",
        ])
        .expect("valid flags");
        assert_eq!(cli.core, "http://10.0.0.1:50051");
        assert_eq!(cli.log_file, PathBuf::from("/tmp/m.log"));
        assert!(cli.command.is_none());

        let cli =
            Cli::try_parse_from(["ackflow-monitor", "demo", "--rate", "100", "--window", "64"])
                .expect("valid demo flags");
        match cli.command {
            Some(Mode::Demo(args)) => {
                assert_eq!(args.rate, 100);
                assert_eq!(args.window, 64);
            }
            None => panic!("expected the demo"),
        }
        assert!(Cli::try_parse_from(["ackflow-monitor", "demo", "--rate", "0"]).is_err());
        assert!(Cli::try_parse_from(["ackflow-monitor", "demo", "--rate", "5001"]).is_err());
    }
}
