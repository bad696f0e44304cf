//! The fault schedule and the faults: which faults a run injects, at
//! which point of the workload, and how each one is done to the processes,
//! the proxy and the store.

use std::time::Duration;

use anyhow::Context;

use super::cores::Cores;
use super::{ChaosConfig, Processors};
use crate::chaos_store::RunStore;
use crate::proxy::Proxy;
use crate::wait_for;

/// One injected fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// SIGKILL a processor, then start a new life after `restart_after`.
    KillProcessor {
        restart_after: Duration,
        target: Target,
    },
    /// SIGKILL core (the leading one), then restart it.
    KillCore,
    /// SIGSTOP the leading core, SIGCONT it after `duration`.
    PauseCore { duration: Duration },
    /// SIGSTOP a processor, SIGCONT it after `duration`.
    PauseProcessor { duration: Duration, target: Target },
    /// Reset every proxied connection.
    ProxyReset,
    /// Freeze every proxied connection without closing it.
    ProxyHalfOpen,
    /// Add `latency` to the proxy for `duration`.
    ProxyLatency {
        latency: Duration,
        duration: Duration,
    },
    /// Restart the PostgreSQL server.
    RestartPostgres,
    /// Fill the store's disk, give it room again after `duration`.
    FillDisk { duration: Duration },
}

/// Which processor a kill or a pause hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The active one, as core names it (a standby takes over).
    Active,
    /// A hot standby (the active one when none waits): nothing should
    /// change but who is there to take over.
    Standby,
}

/// A fault and the point of the workload where it fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Fires once this many publishes were acknowledged.
    pub at_acked: u64,
    /// What happens then.
    pub fault: Fault,
    /// Quiet time after the fault before the next one may fire, so that
    /// faults do not pile up back to back when publishing outruns them.
    pub then_wait: Duration,
}

/// The fault schedule for `config`, a pure function of its seed and counts.
pub fn schedule(config: &ChaosConfig) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let ms = |rng: &mut fastrand::Rng, lo: u64, hi: u64| {
        Duration::from_millis(if hi > lo { rng.u64(lo..=hi) } else { lo })
    };
    // With standbys, one kill or pause in three hits a standby. (Drawn
    // only then, so runs without standbys keep their schedules.)
    let target = |rng: &mut fastrand::Rng| match config.processor_standbys > 0
        && !config.active_only
        && rng.u32(0..3) == 0
    {
        true => Target::Standby,
        false => Target::Active,
    };
    let mut faults = Vec::new();
    for _ in 0..config.processor_kills {
        faults.push(Fault::KillProcessor {
            restart_after: ms(&mut rng, 0, 1_000),
            target: target(&mut rng),
        });
    }
    for _ in 0..config.core_kills {
        faults.push(Fault::KillCore);
    }
    for _ in 0..config.core_pauses {
        faults.push(Fault::PauseCore {
            duration: ms(&mut rng, config.core_pause_ms.0, config.core_pause_ms.1),
        });
    }
    for _ in 0..config.pauses {
        faults.push(Fault::PauseProcessor {
            duration: ms(&mut rng, config.pause_ms.0, config.pause_ms.1),
            target: target(&mut rng),
        });
    }
    for _ in 0..config.proxy_resets {
        faults.push(Fault::ProxyReset);
    }
    for _ in 0..config.half_opens {
        faults.push(Fault::ProxyHalfOpen);
    }
    for _ in 0..config.latency_windows {
        faults.push(Fault::ProxyLatency {
            latency: config.latency,
            duration: ms(&mut rng, 1_000, 3_000),
        });
    }
    for _ in 0..config.disk_fills {
        faults.push(Fault::FillDisk {
            duration: ms(&mut rng, config.disk_full_ms.0, config.disk_full_ms.1),
        });
    }
    rng.shuffle(&mut faults);
    let span = |rng: &mut fastrand::Rng, lo: f64, hi: f64| {
        (config.events as f64 * (lo + rng.f64() * (hi - lo))) as u64
    };
    let mut steps: Vec<Step> = faults
        .into_iter()
        .map(|fault| Step {
            at_acked: span(&mut rng, 0.03, 0.95),
            fault,
            then_wait: ms(&mut rng, 200, 1_500),
        })
        .collect();
    if config.pg_restart {
        steps.push(Step {
            at_acked: span(&mut rng, 0.3, 0.7),
            fault: Fault::RestartPostgres,
            then_wait: ms(&mut rng, 200, 1_500),
        });
    }
    steps.sort_by_key(|s| s.at_acked);
    steps
}

/// How many faults of each kind were injected.
#[derive(Debug, Default, Clone)]
pub struct FaultCounts {
    /// SIGKILLs of a processor.
    pub processor_kills: u32,
    /// Of those, and of the pauses, the ones that hit a standby.
    pub standby_hits: u32,
    /// SIGKILLs of core.
    pub core_kills: u32,
    /// SIGSTOP/SIGCONT pauses of core.
    pub core_pauses: u32,
    /// SIGSTOP/SIGCONT pauses of the processor.
    pub pauses: u32,
    /// Resets of every proxied connection.
    pub proxy_resets: u32,
    /// Half-open episodes.
    pub half_opens: u32,
    /// Windows of added latency.
    pub latency_windows: u32,
    /// PostgreSQL restarts.
    pub pg_restarts: u32,
    /// Times the store's disk filled up.
    pub disk_fills: u32,
}

/// Injects one fault.
pub(super) async fn inject(
    fault: &Fault,
    config: &ChaosConfig,
    cores: &mut Cores,
    processors: &mut Processors,
    store: &RunStore,
    counts: &mut FaultCounts,
) -> anyhow::Result<()> {
    match fault {
        Fault::KillProcessor {
            restart_after,
            target,
        } => {
            processors.kill(cores, *target).await?;
            counts.processor_kills += 1;
            counts.standby_hits += u32::from(*target == Target::Standby);
            // The gap between two lives is part of the workload.
            tokio::time::sleep(*restart_after).await;
            processors.start()?;
        }
        Fault::KillCore => {
            cores.kill_leader().await?;
            counts.core_kills += 1;
        }
        Fault::PauseCore { duration } => {
            cores.pause_leader(*duration).await?;
            counts.core_pauses += 1;
        }
        Fault::PauseProcessor { duration, target } => {
            // Longer than the ack timeout: core retransmits into a
            // stopped process; that is the fault.
            if processors.pause(cores, *target, *duration).await? {
                counts.pauses += 1;
                counts.standby_hits += u32::from(*target == Target::Standby);
            }
        }
        Fault::ProxyReset => {
            cores.proxies.iter().for_each(Proxy::reset_all);
            counts.proxy_resets += 1;
        }
        Fault::ProxyHalfOpen => {
            cores.proxies.iter().for_each(Proxy::freeze_all);
            counts.half_opens += 1;
        }
        Fault::ProxyLatency { latency, duration } => {
            cores.proxies.iter().for_each(|p| p.set_latency(*latency));
            tokio::time::sleep(*duration).await;
            cores
                .proxies
                .iter()
                .for_each(|p| p.set_latency(Duration::ZERO));
            counts.latency_windows += 1;
        }
        Fault::RestartPostgres => {
            restart_postgres(&config.pg_cluster.0, &config.pg_cluster.1).await?;
            counts.pg_restarts += 1;
        }
        Fault::FillDisk { duration } => {
            store.fill()?;
            // Publishing goes on against a full disk: 503s, retries.
            tokio::time::sleep(*duration).await;
            store.free()?;
            counts.disk_fills += 1;
        }
    }
    Ok(())
}

/// Restarts the PostgreSQL cluster and waits until it accepts connections.
async fn restart_postgres(version: &str, cluster: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, cluster, "restart"])
        .status()
        .await
        .context("running pg_ctlcluster")?;
    anyhow::ensure!(status.success(), "pg_ctlcluster restart failed: {status}");
    let server = crate::pg_server_url();
    wait_for(
        "PostgreSQL to accept connections",
        Duration::from_secs(60),
        || {
            let server = server.clone();
            async move {
                use sqlx::Connection;
                sqlx::PgConnection::connect(&server).await.ok().map(|_| ())
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let mut config = ChaosConfig::quiet(10_000, 42);
        config.processor_kills = 3;
        config.core_kills = 2;
        config.pauses = 2;
        config.proxy_resets = 4;
        config.pg_restart = true;
        let a = schedule(&config);
        assert_eq!(a, schedule(&config));
        assert_eq!(a.len(), 12);
        assert!(a.windows(2).all(|w| w[0].at_acked <= w[1].at_acked));
        config.seed = 43;
        assert_ne!(a, schedule(&config));
    }
}
