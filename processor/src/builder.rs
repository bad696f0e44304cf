//! The processor as a library: run ackflow's processor with algorithms of
//! your own, inside your own binary.
//!
//! ```no_run
//! use ackflow_processor::{Algorithm, AlgorithmError, Config, Event, Outcome, Processor};
//! use clap::Parser;
//!
//! struct Uppercase;
//!
//! impl Algorithm for Uppercase {
//!     async fn process(&self, event: &Event) -> Outcome {
//!         let text: String = serde_json::from_slice(&event.payload)
//!             .map_err(|_| AlgorithmError::failed("uppercase expects a JSON string"))?;
//!         Ok(text.to_uppercase())
//!     }
//! }
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config = Config::parse(); // the stock processor's flags: --core, --token, ...
//! let cancel = ackflow_processor::cli::cancel_on_signal();
//! Processor::builder(config)
//!     .algorithm("uppercase", Uppercase)
//!     .run(cancel)
//!     .await
//! # }
//! ```
//!
//! Every guarantee holds for your algorithm as for the built-ins: events of
//! one key one at a time in seq order (or all in order, under core's
//! `--ordering global`), at most `--concurrency` calls at once, each event
//! at most once per processor life (once per copy it asked to retry),
//! at-least-once across lives — so make a side effect idempotent (the
//! event's `id` is a natural key for it). `Err(AlgorithmError::Failed)` is
//! stored as a failed result (not retried); `Err(AlgorithmError::RetryLater
//! {..})` has core send the event again later (see [`AlgorithmError`]); a
//! panic rejects the event, which core parks as dead.
//!
//! [`AlgorithmError`]: crate::AlgorithmError

use tokio_util::sync::CancellationToken;

use crate::algorithms::{Algorithm, Registry};
use crate::config::Config;

/// A processor being put together; see the module docs.
pub struct Processor {
    config: Config,
    registry: Registry,
}

impl Processor {
    /// A processor with `config` and the built-in algorithms (`sha256`,
    /// `wordcount`, `sum`, `sleep`, `fail`).
    pub fn builder(config: Config) -> Self {
        Self {
            config,
            registry: Registry::builtin(),
        }
    }

    /// Runs `algorithm` for events of `kind` (replacing a built-in of that
    /// name).
    pub fn algorithm(mut self, kind: &str, algorithm: impl Algorithm) -> Self {
        self.registry.register(kind, algorithm);
        self
    }

    /// Connects to core and processes events until `cancel`, reconnecting
    /// with backoff whenever the stream ends.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        crate::client::run_with(self.config, self.registry, cancel).await
    }
}
