//! Where a chaos run keeps its data, and the storage fault it can inject:
//! a disk that fills up and is given room again.
//!
//! Without disk fills the run uses a fresh database on the shared
//! PostgreSQL server, or SQLite in the run's directory. With disk fills the
//! store sits on a tmpfs of its own ([`SmallFs`]): SQLite's data directory,
//! or a throwaway PostgreSQL cluster ([`ThrowawayPg`]), so the shared
//! server's disk is never touched. Filling shrinks the tmpfs to what is
//! used plus [`FULL_SLACK_MIB`]; the workload fills the rest within moments.

use std::path::Path;

use anyhow::Context;

use crate::small_fs::SmallFs;
use crate::throwaway_pg::ThrowawayPg;
use crate::{Core, PgDb};

/// Size of the store's tmpfs while there is room (memory is used only for
/// what is written).
const ROOMY_MIB: u64 = 2048;
/// Free space left when the disk is "full", beyond rounding up to a MiB.
const FULL_SLACK_MIB: u64 = 0;

/// Which database a chaos run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosStore {
    Postgres,
    Sqlite,
}

/// The run's store, kept alive for the run.
pub struct RunStore {
    /// URL for core (`None`: SQLite in `--data-dir`) and for the checker.
    core_url: Option<String>,
    checker_url: String,
    /// Flags core needs for it (`--data-dir` on the tmpfs).
    core_args: Vec<String>,
    shared: Option<PgDb>,
    /// Declared before `fs`: the cluster stops before its disk goes.
    throwaway: Option<ThrowawayPg>,
    fs: Option<SmallFs>,
}

impl RunStore {
    /// Sets up `store` for a run in `dir`; on a tmpfs when `fillable`.
    pub async fn create(store: ChaosStore, fillable: bool, dir: &Path) -> anyhow::Result<Self> {
        let fs = if fillable {
            Some(
                SmallFs::mount("chaos disk fills", ROOMY_MIB)?
                    .context("disk fills need a tmpfs (ACKFLOW_TEST_NO_MOUNT is set)")?,
            )
        } else {
            None
        };
        let mut run = Self {
            core_url: None,
            checker_url: String::new(),
            core_args: Vec::new(),
            shared: None,
            throwaway: None,
            fs: None,
        };
        match (store, &fs) {
            (ChaosStore::Postgres, None) => {
                let db = PgDb::create("chaos").await?;
                run.core_url = Some(db.url.clone());
                run.checker_url = db.url.clone();
                run.shared = Some(db);
            }
            (ChaosStore::Postgres, Some(fs)) => {
                let pg = ThrowawayPg::start(fs.path(), &dir.join("postgres.log"))?;
                run.core_url = Some(pg.url());
                run.checker_url = pg.url();
                run.throwaway = Some(pg);
            }
            (ChaosStore::Sqlite, _) => {
                let data = fs
                    .as_ref()
                    .map_or_else(|| dir.join("data"), |fs| fs.path().join("data"));
                run.checker_url = format!("sqlite:{}", data.join("ackflow.db").display());
                run.core_args = vec!["--data-dir".into(), data.display().to_string()];
            }
        }
        run.fs = fs;
        Ok(run)
    }

    /// A name for the summary.
    pub fn describe(&self) -> String {
        match (&self.shared, &self.throwaway, &self.fs) {
            (Some(db), _, _) => format!("database {}", db.name),
            (_, Some(pg), _) => format!("throwaway PostgreSQL on port {} (tmpfs)", pg.port),
            (_, _, Some(_)) => "SQLite on a tmpfs".into(),
            _ => "SQLite".into(),
        }
    }

    /// Starts core on this store with `extra` flags.
    pub async fn start_core(&self, dir: &Path, extra: &[String]) -> anyhow::Result<Core> {
        Core::start(dir, self.core_url.as_deref(), &self.args(extra)).await
    }

    /// This store's core flags, then `extra`.
    fn args<'a>(&'a self, extra: &'a [String]) -> Vec<&'a str> {
        self.core_args
            .iter()
            .chain(extra)
            .map(String::as_str)
            .collect()
    }

    /// Starts a second core on this store, which stands by (PostgreSQL
    /// only: one core per SQLite file); it logs to `log` in `dir`.
    pub async fn start_standby(
        &self,
        dir: &Path,
        extra: &[String],
        log: &str,
    ) -> anyhow::Result<Core> {
        let url = self
            .core_url
            .as_deref()
            .context("a standby core needs PostgreSQL")?;
        Core::start_standby(dir, url, &self.args(extra), log).await
    }

    /// The URL the checker reads the store from.
    pub fn url(&self) -> &str {
        &self.checker_url
    }

    /// True when this store is the shared PostgreSQL server (the only one
    /// `--pg-restart` can restart).
    pub fn is_shared_postgres(&self) -> bool {
        self.shared.is_some()
    }

    /// Fills the disk: leaves [`FULL_SLACK_MIB`] free. The store keeps
    /// writing while this measures, and the kernel refuses a size below
    /// what is used, so a refused resize is measured and tried again with
    /// a MiB more each time.
    pub fn fill(&self) -> anyhow::Result<()> {
        let fs = self
            .fs
            .as_ref()
            .context("this store has no fillable disk")?;
        let mut refused = None;
        for extra in 0..8 {
            let used_mib = fs.used_bytes()?.div_ceil(1 << 20);
            match fs.resize(used_mib + FULL_SLACK_MIB + extra) {
                Ok(()) => return Ok(()),
                Err(e) => refused = Some(e),
            }
        }
        Err(refused.expect("eight tries"))
    }

    /// Gives the disk its room back.
    pub fn free(&self) -> anyhow::Result<()> {
        let fs = self
            .fs
            .as_ref()
            .context("this store has no fillable disk")?;
        fs.resize(ROOMY_MIB)
    }

    /// Drops the shared database (after core stopped), unless kept.
    pub async fn finish(mut self, keep: bool) -> anyhow::Result<()> {
        if let Some(db) = self.shared.take()
            && !keep
        {
            db.drop_db().await?;
        }
        Ok(())
    }
}
