//! The processor lives of a chaos run: one, or one and hot standbys
//! ([`ChaosConfig::processor_standbys`](super::ChaosConfig)), each life
//! with its own `--processor-id` and processed log. Kills and pauses hit the
//! active one, as core's snapshot names it, so that a standby takes over.

use std::path::PathBuf;

use anyhow::Context;

use super::cores::Cores;
use crate::{Proc, start_processor};

pub(super) struct Processors {
    pub(super) dir: PathBuf,
    pub(super) core_url: String,
    pub(super) args: Vec<String>,
    /// The running lives, oldest first, with their `--processor-id`.
    running: Vec<(String, Proc)>,
    lives: u32,
}

impl Processors {
    pub(super) fn new(dir: PathBuf, core_url: String, args: Vec<String>) -> Self {
        Self {
            dir,
            core_url,
            args,
            running: Vec::new(),
            lives: 0,
        }
    }

    fn log(&self, life: u32) -> PathBuf {
        self.dir.join(format!("processed-{life}.log"))
    }

    /// Starts a new life (a standby if another one is active).
    pub(super) fn start(&mut self) -> anyhow::Result<()> {
        let life = self.lives;
        self.lives += 1;
        let id = format!("life-{life}");
        let mut args = vec![
            "--processor-id".to_string(),
            id.clone(),
            "--processed-log".to_string(),
            self.log(life).display().to_string(),
        ];
        args.extend(self.args.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.running
            .push((id, start_processor(&self.dir, &self.core_url, &refs)?));
        Ok(())
    }

    /// The active life as core's leader names it; the oldest running one
    /// when core names none (no processor connected, or no core reachable).
    async fn active(&self, cores: &Cores) -> Option<usize> {
        let named = match cores.leader().await {
            Ok(core) => core
                .snapshot()
                .await
                .ok()
                .and_then(|s| s.processor)
                .map(|p| p.processor_id),
            Err(_) => None,
        };
        named
            .and_then(|id| self.running.iter().position(|(i, _)| *i == id))
            .or((!self.running.is_empty()).then_some(0))
    }

    /// SIGKILLs the active life; returns its id.
    pub(super) async fn kill_active(&mut self, cores: &Cores) -> Option<String> {
        let i = self.active(cores).await?;
        let (id, mut proc) = self.running.remove(i);
        proc.kill().await;
        Some(id)
    }

    /// The active life, to signal (SIGSTOP and SIGCONT the same process).
    pub(super) async fn active_proc(&self, cores: &Cores) -> Option<&Proc> {
        let i = self.active(cores).await?;
        Some(&self.running[i].1)
    }

    /// SIGTERM to every running life, waiting for each to exit.
    pub(super) async fn stop(&mut self) -> anyhow::Result<()> {
        for (id, mut proc) in self.running.drain(..) {
            proc.terminate()
                .await
                .with_context(|| format!("stopping processor {id}"))?;
        }
        Ok(())
    }

    /// Every life's processed log.
    pub(super) fn logs(&self) -> Vec<PathBuf> {
        (0..self.lives).map(|l| self.log(l)).collect()
    }
}
