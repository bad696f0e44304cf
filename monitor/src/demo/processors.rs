//! The demo's processors: two, `demo-a` and `demo-b`, each kept running by
//! a supervisor of its own, as systemd or Kubernetes would. Core orders per
//! key, so both are active and share the keys, each owning some of the
//! partitions (the status line lists them with their shares).
//!
//! Every `--crash-every` seconds the traffic publishes one event of kind
//! [`CRASH_KIND`] on key [`CRASH_KEY`]. The processor that owns that key
//! runs it and crashes: its supervisor aborts it mid-event, as a killed
//! process stops, and restarts it [`RESTART_AFTER`] later. After core's
//! return grace its partitions and its unacknowledged events move to the
//! other processor (crash suspects, sent at once); there the crash event
//! runs again and succeeds. When the crashed processor comes back, it
//! takes its partitions back, each once the other holds none of its
//! events. So the dashboard shows a failover and a rebalance live: the
//! event log tells who left and whose keys moved, the session changes, and
//! the crash event's result names both processors.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackflow_processor::{Algorithm, Config, Event, Outcome, Processor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The kind of the demo's crashing events.
pub const CRASH_KIND: &str = "crash";
/// Their key.
pub const CRASH_KEY: &str = "crash";
/// The two processors' `--processor-id`s.
const NAMES: [&str; 2] = ["demo-a", "demo-b"];
/// How long a crashed processor stays down before its supervisor restarts it.
const RESTART_AFTER: Duration = Duration::from_secs(3);

/// Seqs of the crash events that have crashed a processor: each crashes
/// the first processor that runs it, and only that one.
#[derive(Clone, Default)]
struct Crashed(Arc<Mutex<HashSet<u64>>>);

impl Crashed {
    /// True the first time `seq` is seen.
    fn first(&self, seq: u64) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(seq)
    }
}

/// The `crash` algorithm of one processor life.
struct CrashOnce {
    name: &'static str,
    crashed: Crashed,
    /// Tells the supervisor to crash this life.
    crash_tx: mpsc::UnboundedSender<u64>,
    /// Cancelled once this life is aborted.
    life: CancellationToken,
}

impl Algorithm for CrashOnce {
    async fn process(&self, event: &Event) -> Outcome {
        if !self.crashed.first(event.seq) {
            return Ok(format!(
                "ran on {} after crashing the processor before it",
                self.name
            ));
        }
        let _ = self.crash_tx.send(event.seq);
        // Aborted before it finishes; the ack it would send has no stream
        // left to go to.
        self.life.cancelled().await;
        Err(ackflow_processor::AlgorithmError::failed(
            "the processor crashed",
        ))
    }
}

/// Runs both supervised processors against `core_url` until `stop`.
pub async fn run(core_url: String, stop: CancellationToken) {
    let crashed = Crashed::default();
    let supervisors: Vec<_> = NAMES
        .iter()
        .map(|name| {
            tokio::spawn(supervise(
                name,
                core_url.clone(),
                crashed.clone(),
                stop.clone(),
            ))
        })
        .collect();
    for supervisor in supervisors {
        if let Err(e) = supervisor.await {
            tracing::error!(error = %e, "a demo processor's supervisor failed");
        }
    }
}

/// Runs processor `name`, restarting it [`RESTART_AFTER`] after each
/// crash, until `stop`.
async fn supervise(
    name: &'static str,
    core_url: String,
    crashed: Crashed,
    stop: CancellationToken,
) {
    loop {
        let (crash_tx, mut crash_rx) = mpsc::unbounded_channel();
        let life = CancellationToken::new();
        let mut config = Config::for_core(core_url.clone());
        config.processor_id = Some(name.to_string());
        let processor = Processor::builder(config).algorithm(
            CRASH_KIND,
            CrashOnce {
                name,
                crashed: crashed.clone(),
                crash_tx,
                life: life.clone(),
            },
        );
        let mut task = tokio::spawn(processor.run(stop.clone()));
        tokio::select! {
            ended = &mut task => {
                match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(processor = name, error = %format!("{e:#}"), "a demo processor failed"),
                    Err(e) => tracing::error!(processor = name, error = %e, "a demo processor's task failed"),
                }
                return;
            }
            Some(seq) = crash_rx.recv() => {
                task.abort();
                life.cancel();
                tracing::warn!(
                    processor = name,
                    seq,
                    restart_in_s = RESTART_AFTER.as_secs(),
                    "demo: a crash event crashed this processor on purpose"
                );
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RESTART_AFTER) => {}
        }
    }
}
