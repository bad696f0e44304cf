//! A processor with an algorithm of its own: `uppercase` answers a JSON
//! string payload in capital letters. It takes the stock processor's flags
//! (`--core`, `--token`, `--concurrency`, ...):
//!
//! ```sh
//! cargo run -p ackflow-tests --example uppercase -- --core http://127.0.0.1:50051
//! curl -s localhost:8080/v1/events -H 'content-type: application/json' \
//!      -d '{"kind":"uppercase","key":"greetings","payload":"hello"}'
//! ```

use ackflow_processor::{Algorithm, AlgorithmError, Config, Event, Outcome, Processor};
use clap::Parser;

struct Uppercase;

impl Algorithm for Uppercase {
    async fn process(&self, event: &Event) -> Outcome {
        let text: String = serde_json::from_slice(&event.payload)
            .map_err(|_| AlgorithmError::failed("uppercase expects a JSON string"))?;
        Ok(text.to_uppercase())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = ackflow_processor::cli::init_telemetry(config.log_format);
    let cancel = ackflow_processor::cli::cancel_on_signal();
    Processor::builder(config)
        .algorithm("uppercase", Uppercase)
        .run(cancel)
        .await
}
