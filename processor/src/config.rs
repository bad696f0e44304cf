//! Processor configuration: flags with environment fallbacks and defaults.

use clap::Parser;

/// ackflow processor: receives events from core in order, runs the
/// algorithm chosen by each event's kind, and acks with the result.
#[derive(Debug, Clone, Parser)]
#[command(name = "ackflow-processor", version, about, long_about = None)]
pub struct Config {
    /// Core's gRPC address.
    #[arg(long, env = "ACKFLOW_CORE", default_value = "http://127.0.0.1:50051")]
    pub core: String,

    /// Bearer token for Delivery.Subscribe (core's --processor-token).
    #[arg(long, env = "ACKFLOW_PROCESSOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Largest window this processor accepts (reorder buffer bound).
    #[arg(long, env = "ACKFLOW_PROCESSOR_WINDOW", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub window: u32,

    /// Identifies this processor life in core's logs and the monitor (default: random).
    #[arg(long, env = "ACKFLOW_PROCESSOR_ID")]
    pub processor_id: Option<String>,

    /// Fault injection: fraction [0, 1] of incoming events dropped.
    #[arg(long, env = "ACKFLOW_FAULT_DROP_EVENTS", default_value_t = 0.0, value_parser = fraction)]
    pub drop_events: f64,

    /// Fault injection: fraction [0, 1] of outgoing acks dropped.
    #[arg(long, env = "ACKFLOW_FAULT_DROP_ACKS", default_value_t = 0.0, value_parser = fraction)]
    pub drop_acks: f64,

    /// Fault injection: fraction [0, 1] of incoming events handled twice.
    #[arg(long, env = "ACKFLOW_FAULT_DUPLICATE", default_value_t = 0.0, value_parser = fraction)]
    pub duplicate: f64,

    /// Fault injection: delay before each incoming batch is handled, in milliseconds.
    #[arg(long, env = "ACKFLOW_FAULT_DELAY_MS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub delay_ms: u32,

    /// Fault injection: cut the stream every this many seconds (0 = never).
    #[arg(long, env = "ACKFLOW_FAULT_CUT_EVERY_S", default_value_t = 0)]
    pub cut_every_s: u32,

    /// Append one line per processed event (`life seq attempt`) to this file;
    /// used by the end-to-end tests to check processing order.
    #[arg(long, env = "ACKFLOW_PROCESSED_LOG")]
    pub processed_log: Option<std::path::PathBuf>,

    /// Disable duplicate detection (negative control for the checker only).
    #[arg(long, hide = true)]
    pub no_dedup: bool,
}

fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a fraction between 0 and 1"))
    }
}

impl Config {
    /// Defaults, pointed at `core`.
    pub fn for_core(core: String) -> Self {
        let mut config = Config::parse_from(["ackflow-processor"]);
        config.core = core;
        config
    }

    /// Fault settings from the flags.
    pub fn faults(&self) -> ackflow_proto::v1::Faults {
        ackflow_proto::v1::Faults {
            drop_events: self.drop_events,
            drop_acks: self.drop_acks,
            duplicate: self.duplicate,
            delay_ms: self.delay_ms,
            cut_every_s: self.cut_every_s,
        }
    }
}
