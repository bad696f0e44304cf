//! The cores of a run: one, or (with [`ChaosConfig::standby`]) two on one
//! PostgreSQL database, `--core-id a` leading and `b` standing by, each
//! behind its own proxy. The processor is given both proxies and the
//! publishers both cores; each must find the leader by itself.
//!
//! With two cores, a core kill or pause hits whichever core leads then; a
//! killed core comes back (and stands by, unless the other has not taken
//! over yet), and a paused one that was replaced exits when it thaws
//! (deposed) and is started again, so the run always has two.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::Core;
use crate::chaos_store::RunStore;
use crate::proxy::Proxy;
use crate::wait_for;

/// The lease of the two cores: short, so a run fails over many times.
const LEASE_MS: &str = "1000";

/// The cores of a run, and a proxy in front of each for the processor.
pub(super) struct Cores {
    pub cores: Vec<Core>,
    pub proxies: Vec<Proxy>,
}

impl Cores {
    /// Starts the first core (and the standby), each with `args`.
    pub(super) async fn start(
        store: &RunStore,
        dir: &Path,
        args: &[String],
        standby: bool,
        half_open_hold: Duration,
    ) -> anyhow::Result<Self> {
        let with = |id: &str| {
            let mut all = args.to_vec();
            if standby {
                all.extend([
                    "--core-id".into(),
                    id.into(),
                    "--lease-ms".into(),
                    LEASE_MS.into(),
                ]);
            }
            all
        };
        let mut cores = vec![store.start_core(dir, &with("a")).await?];
        if standby {
            cores.push(store.start_standby(dir, &with("b"), "core-b.log").await?);
        }
        let mut proxies = Vec::new();
        for core in &cores {
            proxies.push(Proxy::start(core.grpc, half_open_hold).await?);
        }
        Ok(Self { cores, proxies })
    }

    /// What the processor is given: every proxy.
    pub(super) fn processor_url(&self) -> String {
        let urls: Vec<String> = self.proxies.iter().map(Proxy::url).collect();
        urls.join(",")
    }

    /// What the publishers are given: each core's gRPC and REST address.
    pub(super) fn addresses(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.cores.iter().map(|c| (c.grpc, c.http)).collect()
    }

    /// The core that leads (waits up to 60 s for one).
    pub(super) async fn leader(&self) -> anyhow::Result<&Core> {
        if self.cores.len() == 1 {
            return Ok(&self.cores[0]);
        }
        let i = wait_for("a core to lead", Duration::from_secs(60), || async {
            for (i, core) in self.cores.iter().enumerate() {
                if core.is_ready().await {
                    return Some(i);
                }
            }
            None
        })
        .await?;
        Ok(&self.cores[i])
    }

    async fn leader_index(&self) -> anyhow::Result<usize> {
        let leader = self.leader().await?.http;
        Ok(self
            .cores
            .iter()
            .position(|c| c.http == leader)
            .expect("a core of the run"))
    }

    /// SIGKILL of the leading core, then a restart on the same ports.
    pub(super) async fn kill_leader(&mut self) -> anyhow::Result<()> {
        let i = self.leader_index().await?;
        let alone = self.cores.len() == 1;
        let core = &mut self.cores[i];
        core.proc.kill().await;
        if alone {
            return core.restart().await.context("restarting core");
        }
        core.restart_either().await.context("restarting a core")
    }

    /// SIGSTOP of the leading core for `duration`, then SIGCONT. With a
    /// standby, a core that was replaced meanwhile exits when it thaws; it
    /// is started again.
    pub(super) async fn pause_leader(&mut self, duration: Duration) -> anyhow::Result<()> {
        let i = self.leader_index().await?;
        let alone = self.cores.len() == 1;
        let core = &mut self.cores[i];
        core.proc.freeze().await?;
        tokio::time::sleep(duration).await;
        core.proc.signal("-CONT")?;
        if alone {
            return Ok(());
        }
        // Either it still leads (nobody took over), or it steps down.
        let exited = tokio::time::timeout(Duration::from_secs(30), core.proc.wait()).await;
        match exited {
            Ok(_) => core
                .restart_either()
                .await
                .context("restarting a deposed core"),
            Err(_) if core.is_ready().await => Ok(()),
            Err(_) => anyhow::bail!(
                "a paused core neither leads nor exited:\n{}",
                core.proc.log_tail(30)
            ),
        }
    }

    /// SIGTERM to every core.
    pub(super) async fn stop(&mut self) -> anyhow::Result<()> {
        for core in &mut self.cores {
            core.proc.terminate().await.context("stopping core")?;
        }
        Ok(())
    }
}
