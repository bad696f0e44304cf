//! A PostgreSQL cluster of a test's own (`initdb` + `pg_ctl`), for faults
//! that must not touch the shared server: a full disk, a server that stops
//! mid-commit. It runs as the `postgres` user (PostgreSQL refuses root) on
//! a loopback port, and is stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Where Debian puts the server binaries.
fn pg_bin(name: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(root)
        .with_context(|| format!("no PostgreSQL server binaries under {}", root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    versions.sort();
    let bin = versions
        .last()
        .map(|v| v.join("bin").join(name))
        .context("no PostgreSQL version installed")?;
    anyhow::ensure!(bin.exists(), "{} is missing", bin.display());
    Ok(bin)
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

/// A running throwaway cluster.
pub struct ThrowawayPg {
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
}

impl ThrowawayPg {
    /// Initialises a cluster in `dir` (created, owned by `postgres`) and
    /// starts it. Small WAL segments keep it to ~30 MB.
    pub fn start(dir: &Path, log: &Path) -> anyhow::Result<Self> {
        let data = dir.join("pg");
        let out = as_postgres(&pg_bin("initdb")?)
            .arg("-D")
            .arg(&data)
            .args([
                "--wal-segsize=1",
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // The log goes where the test says (not onto a small disk).
        std::fs::write(log, b"")?;
        let _ = Command::new("chown").arg("postgres").arg(log).status();
        let pg = Self {
            data,
            log: log.to_path_buf(),
            port: crate::free_port(),
        };
        pg.restart()?;
        Ok(pg)
    }

    /// Starts the (stopped) server again on the same port.
    pub fn restart(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp \
             -c min_wal_size=2MB -c max_wal_size=4MB -c shared_buffers=16MB",
            self.port
        );
        let out = as_postgres(&pg_bin("pg_ctl")?)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Stops the server at once (`-m immediate`: no checkpoint, open
    /// transactions die mid-commit; recovery replays the WAL on restart).
    pub fn stop(&self) -> anyhow::Result<()> {
        let out = as_postgres(&pg_bin("pg_ctl")?)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Restarts the server accepting TLS connections only, as managed
    /// services do: `ssl = on` with `cert` and `key` (PEM), and a
    /// `pg_hba.conf` of `hostssl` lines (local socket connections stay open
    /// for `pg_ctl`).
    pub fn require_tls(&self, cert: &Path, key: &Path) -> anyhow::Result<()> {
        self.stop()?;
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let dest = self.data.join(to);
            std::fs::copy(from, &dest).with_context(|| format!("copying {}", from.display()))?;
            let _ = Command::new("chown").arg("postgres").arg(&dest).status();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))?;
        }
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str("\nssl = on\n");
        std::fs::write(&conf, text)?;
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )?;
        self.restart()
    }

    /// Whether the server is running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        pg_bin("pg_ctl")
            .ok()
            .and_then(|pg_ctl| {
                as_postgres(&pg_ctl)
                    .arg("-D")
                    .arg(&self.data)
                    .arg("status")
                    .output()
                    .ok()
            })
            .is_some_and(|out| out.status.success())
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        if let Ok(pg_ctl) = pg_bin("pg_ctl") {
            let _ = as_postgres(&pg_ctl)
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "stop"])
                .output();
        }
    }
}
