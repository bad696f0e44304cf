//! A PgBouncer in transaction mode in front of the test PostgreSQL server:
//! Debian's `pgbouncer` package (`apt-get install pgbouncer`; `.ci/run`
//! installs it). Tests that need it fail, not skip, without it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;

use crate::{Proc, free_port, pg_server_url, wait_for};

const BINARY: &str = "/usr/sbin/pgbouncer";

/// A running PgBouncer; stopped when dropped.
pub struct PgBouncer {
    pub port: u16,
    user: String,
    _proc: Proc,
}

impl PgBouncer {
    /// Starts one in `dir` with `server_connections` server connections per
    /// database and user, fewer than a core's pool, so client connections
    /// share server connections as they would in production.
    pub async fn start(dir: &Path, server_connections: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: install Debian's pgbouncer package (apt-get install pgbouncer)"
        );
        let server: PgConnectOptions = pg_server_url().parse().context("the test server URL")?;
        let port = free_port();
        let dir = dir.join("pgbouncer");
        std::fs::create_dir_all(&dir)?;
        // PgBouncer refuses to run as root: it runs as postgres (-u), which
        // must read its files and write its log here.
        set_mode(&dir, 0o777)?;
        let user = server.get_username();
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n"))?;
        let ini = format!(
            "[databases]\n\
             * = host={host} port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {server_connections}\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\n",
            host = server.get_host(),
            pg_port = server.get_port(),
            dir = dir.display(),
        );
        let config = dir.join("pgbouncer.ini");
        std::fs::write(&config, ini)?;
        for file in ["userlist.txt", "pgbouncer.ini"] {
            set_mode(&dir.join(file), 0o644)?;
        }
        let mut args = Vec::new();
        if is_root() {
            args.extend(["-u".to_string(), "postgres".to_string()]);
        }
        args.push(config.display().to_string());
        let proc = Proc::spawn(Path::new(BINARY), &args, &[], dir.join("stderr.log"))?;
        wait_for(
            "PgBouncer to listen",
            Duration::from_secs(30),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await
        .with_context(|| std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default())?;
        Ok(Self {
            port,
            user: user.to_string(),
            _proc: proc,
        })
    }

    /// The URL of `database` through this PgBouncer.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{database}",
            self.user, self.port
        )
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `/proc/self` belongs to the process's effective user.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
