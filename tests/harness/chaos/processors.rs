//! The processor lives of a chaos run: one, or several
//! ([`ChaosConfig::processor_standbys`](super::ChaosConfig)): hot standbys
//! under global ordering, processors sharing the keys under key ordering;
//! each life with its own `--processor-id` and processed log. Kills and
//! pauses hit the one core's snapshot names first (the active one), or
//! (one in three, drawn with the schedule) another.
//! What is done to each life is noted in the run's lives log (`stopped`
//! after a SIGSTOP, `gone` once killed or exited, with the time), which
//! the checker reads with the processed logs (`checker/across_lives.rs`).

use std::path::PathBuf;

use anyhow::Context;

use super::cores::Cores;
use super::faults::Target;
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

    fn lives_log(&self) -> PathBuf {
        self.dir.join("lives.log")
    }

    /// Notes in the lives log that `phase` happened to life `id` just now.
    fn note(&self, id: &str, phase: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.lives_log())?;
        writeln!(file, "{id} 0 0 {phase} {at}")?;
        Ok(())
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

    /// The life `target` names: the active one, or the oldest standby
    /// (the active one when none waits).
    async fn pick(&self, cores: &Cores, target: Target) -> Option<usize> {
        let active = self.active(cores).await?;
        match target {
            Target::Active => Some(active),
            Target::Standby => (0..self.running.len())
                .find(|i| *i != active)
                .or(Some(active)),
        }
    }

    /// SIGKILLs the life `target` names; returns its id.
    pub(super) async fn kill(
        &mut self,
        cores: &Cores,
        target: Target,
    ) -> anyhow::Result<Option<String>> {
        let Some(i) = self.pick(cores, target).await else {
            return Ok(None);
        };
        let (id, mut proc) = self.running.remove(i);
        proc.kill().await;
        self.note(&id, "gone")?;
        Ok(Some(id))
    }

    /// SIGSTOPs the life `target` names for `duration`, then SIGCONTs it;
    /// returns whether there was one.
    pub(super) async fn pause(
        &self,
        cores: &Cores,
        target: Target,
        duration: std::time::Duration,
    ) -> anyhow::Result<bool> {
        let Some(i) = self.pick(cores, target).await else {
            return Ok(false);
        };
        let (id, proc) = &self.running[i];
        proc.freeze().await?;
        self.note(id, "stopped")?;
        tokio::time::sleep(duration).await;
        proc.signal("-CONT")?;
        Ok(true)
    }

    /// SIGTERM to every running life, waiting for each to exit.
    pub(super) async fn stop(&mut self) -> anyhow::Result<()> {
        for (id, mut proc) in std::mem::take(&mut self.running) {
            proc.terminate()
                .await
                .with_context(|| format!("stopping processor {id}"))?;
            self.note(&id, "gone")?;
        }
        Ok(())
    }

    /// Every life's processed log, and the lives log.
    pub(super) fn logs(&self) -> Vec<PathBuf> {
        (0..self.lives)
            .map(|l| self.log(l))
            .chain([self.lives_log()])
            .collect()
    }
}
