//! Helpers for the end-to-end tests: PostgreSQL databases per test, the real
//! binaries as child processes, clients, and waiting for conditions (never
//! for fixed sleeps).
//!
//! [`chaos`] is the chaos runner (behind the `ackflow-chaos` binary and
//! `tests/chaos.rs`), [`checker`] its total-queue checker, [`proxy`] the
//! fault-injecting TCP proxy it puts between the processor and core;
//! [`fake_processor`] a hand-made processor that acks or rejects as told.

pub mod chaos;
pub mod chaos_store;
pub mod checker;
pub mod fake_processor;
pub mod pgbouncer;
pub mod proxy;
pub mod small_fs;
pub mod throwaway_pg;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ackflow_proto::v1 as pb;
use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// PostgreSQL server the tests create their databases on:
/// `ACKFLOW_TEST_PG`, else `DATABASE_URL`, else the local default. There is
/// no fallback to SQLite: when PostgreSQL is unreachable the tests fail.
pub fn pg_server_url() -> String {
    std::env::var("ACKFLOW_TEST_PG")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A throw-away PostgreSQL database.
pub struct PgDb {
    pub url: String,
    pub name: String,
}

impl PgDb {
    /// Creates a database with a unique name.
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let server = pg_server_url();
        let mut conn = sqlx::PgConnection::connect(&server)
            .await
            .with_context(|| {
                format!("PostgreSQL at {server} is unreachable (start it, or set ACKFLOW_TEST_PG)")
            })?;
        let name = format!(
            "ackflow_{prefix}_{:012x}",
            fastrand::u64(..) & 0xffff_ffff_ffff
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// Drops the database (after the processes using it stopped).
    pub async fn drop_db(self) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&pg_server_url()).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

/// Path of a binary built by this package (`e2e-core`, `e2e-processor`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    // A binary of this package sits beside the benchmark, and one level up
    // from a test (target/<profile>/deps/<test>).
    let beside = dir.join(name);
    if beside.exists() {
        return beside;
    }
    dir.parent().map(|d| d.join(name)).unwrap_or(beside)
}

/// Whether every thread of process `pid` is stopped (state `T` in
/// `/proc/<pid>/task/<tid>/stat`).
fn all_threads_stopped(pid: u32) -> anyhow::Result<bool> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = match std::fs::read_to_string(task?.path().join("stat")) {
            Ok(stat) => stat,
            // A thread that exited meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        // `pid (comm) S …`: the state follows the last ')'.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('T' | 't')) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Serves `app` on a free loopback port until `cancel`; returns its
/// address. For the endpoints the tests and the bench stand up themselves
/// (webhooks that answer as a run asks).
pub async fn serve_router(
    app: axum::Router,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
    });
    Ok(addr)
}

/// An unused loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 25 ms until it returns `Some`, or fails after
/// `timeout` with `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A child process whose output goes to a log file.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        // `ACKFLOW_TEST_LOG` (a `RUST_LOG` filter) turns on more logging in
        // every process a test starts, for a post-mortem.
        let filter = std::env::var("ACKFLOW_TEST_LOG").unwrap_or_else(|_| "info".into());
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        Ok(Self { child, log })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the process to exit by itself; returns the exit code
    /// (`None`: killed by a signal).
    pub async fn wait(&mut self) -> anyhow::Result<Option<i32>> {
        Ok(self.child.wait().await?.code())
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub async fn terminate(&mut self) -> anyhow::Result<Option<i32>> {
        self.signal("-TERM")?;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("process did not exit within 30 s of SIGTERM")??;
        Ok(status.code())
    }

    /// SIGSTOP, returning once every thread of the process is stopped.
    /// The kernel wakes one thread to begin a group stop, and that one
    /// stops the others; on a loaded machine it may wait milliseconds for
    /// a CPU, and the other threads run on meanwhile (a core "frozen" that
    /// way once committed and acknowledged a publish sent after the
    /// signal). Tests that freeze a process to see what it does not do
    /// must not act before it is frozen.
    pub async fn freeze(&self) -> anyhow::Result<()> {
        self.signal("-STOP")?;
        let pid = self.child.id().context("process already exited")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid)? {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "process {pid} not stopped 10 s after SIGSTOP"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Sends a signal by name (`-STOP`, `-CONT`, `-TERM`).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("process already exited")?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
        Ok(())
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A core process with fixed ports, so it can be restarted at the same
/// address.
pub struct Core {
    pub proc: Proc,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    args: Vec<String>,
}

impl Core {
    /// Starts core with `database_url` (or SQLite in `dir`) and `extra`
    /// flags, and waits until it is ready.
    pub async fn start(
        dir: &Path,
        database_url: Option<&str>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_env(dir, database_url, extra, &[]).await
    }

    /// [`Core::start`] with extra environment variables.
    pub async fn start_with_env(
        dir: &Path,
        database_url: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let core = Self::spawn(dir, database_url, extra, env, "core.log")?;
        core.wait_ready().await?;
        Ok(core)
    }

    /// Starts a second core on the database of a running one and waits
    /// until it answers as a standby (`/readyz` 503 naming a leader); it
    /// logs to `log` in `dir`.
    pub async fn start_standby(
        dir: &Path,
        database_url: &str,
        extra: &[&str],
        log: &str,
    ) -> anyhow::Result<Self> {
        let core = Self::spawn(dir, Some(database_url), extra, &[], log)?;
        let http = core.http;
        wait_for("core to stand by", Duration::from_secs(60), || async move {
            matches!(
                http_request(http, "GET", "/readyz", None).await,
                Ok((503, body)) if body.contains("leader_http")
            )
            .then_some(())
        })
        .await
        .with_context(|| format!("core log:\n{}", core.proc.log_tail(30)))?;
        Ok(core)
    }

    fn spawn(
        dir: &Path,
        database_url: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
        log: &str,
    ) -> anyhow::Result<Self> {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut args = vec![
            "--http-addr".to_string(),
            http.to_string(),
            "--grpc-addr".to_string(),
            grpc.to_string(),
        ];
        if !extra.contains(&"--data-dir") {
            args.push("--data-dir".into());
            args.push(dir.join("data").display().to_string());
        }
        if let Some(url) = database_url {
            args.push("--database-url".into());
            args.push(url.into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(&bin("e2e-core"), &args, env, dir.join(log))?;
        Ok(Self {
            proc,
            http,
            grpc,
            args,
        })
    }

    /// A handle for clients only (no process), for tasks that publish to a
    /// core owned elsewhere.
    pub fn attach(grpc: SocketAddr, http: SocketAddr) -> Client {
        Client { grpc, http }
    }

    /// Starts a new process with the same flags (after a kill).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let log = self.proc.log.clone();
        self.proc = Proc::spawn(&bin("e2e-core"), &self.args, &[], log)?;
        self.wait_ready().await
    }

    /// Starts a new process with the same flags (after a kill) and waits
    /// until it leads or stands by, whichever it does.
    pub async fn restart_either(&mut self) -> anyhow::Result<()> {
        let log = self.proc.log.clone();
        self.proc = Proc::spawn(&bin("e2e-core"), &self.args, &[], log)?;
        let http = self.http;
        wait_for(
            "core to lead or stand by",
            Duration::from_secs(60),
            || async move {
                match http_request(http, "GET", "/readyz", None).await {
                    Ok((200, _)) => Some(()),
                    Ok((503, body)) if body.contains("standby") => Some(()),
                    _ => None,
                }
            },
        )
        .await
        .with_context(|| format!("core log:\n{}", self.proc.log_tail(30)))
    }

    /// Whether `/readyz` answers 200 now: this core leads (or is the only one).
    pub async fn is_ready(&self) -> bool {
        matches!(
            http_request(self.http, "GET", "/readyz", None).await,
            Ok((200, _))
        )
    }

    /// Waits (at most 60 s) until `/readyz` answers 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = self.http;
        wait_for("core to be ready", Duration::from_secs(60), || async move {
            matches!(
                http_request(http, "GET", "/readyz", None).await,
                Ok((200, _))
            )
            .then_some(())
        })
        .await
        .with_context(|| format!("core log:\n{}", self.proc.log_tail(30)))
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn ingest(&self) -> anyhow::Result<pb::ingest_client::IngestClient<Channel>> {
        Ok(pb::ingest_client::IngestClient::new(
            channel(self.grpc).await?,
        ))
    }

    pub async fn admin(&self) -> anyhow::Result<pb::admin_client::AdminClient<Channel>> {
        Ok(pb::admin_client::AdminClient::new(
            channel(self.grpc).await?,
        ))
    }

    /// An admin snapshot taken after this call began. Bounded (10 s):
    /// callers poll it inside [`wait_for`], whose own timeout is checked
    /// only between polls.
    ///
    /// A watch starts with the hub's latest snapshot, up to one period
    /// (200 ms) old: it may predate publishes the caller already saw
    /// acknowledged, so "every event resolved" read from it (floor past
    /// head) could speak of an older head. It is skipped.
    pub async fn snapshot(&self) -> anyhow::Result<pb::Snapshot> {
        let asked_at_us = ackflow_core::model::now_us();
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut stream = self
                .admin()
                .await?
                .watch(pb::WatchRequest {})
                .await?
                .into_inner();
            while let Some(update) = stream.message().await? {
                if let Some(pb::watch_response::Update::Snapshot(s)) = update.update
                    && s.taken_at_us >= asked_at_us
                {
                    return Ok(s);
                }
            }
            bail!("watch ended without a snapshot")
        })
        .await
        .context("no admin snapshot within 10 s")?
    }

    /// Waits (at most `timeout`) until every seq up to `head` is resolved:
    /// the acked floor is past it.
    pub async fn wait_resolved(&self, head: u64, timeout: Duration) -> anyhow::Result<()> {
        wait_for(
            &format!("every seq up to {head} resolved"),
            timeout,
            || async move {
                let s = self.snapshot().await.ok()?;
                (s.acked_floor > head).then_some(())
            },
        )
        .await
    }
}

/// Addresses of a core, for client tasks.
#[derive(Clone, Copy)]
pub struct Client {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Client {
    pub async fn ingest(&self) -> anyhow::Result<pb::ingest_client::IngestClient<Channel>> {
        Ok(pb::ingest_client::IngestClient::new(
            channel(self.grpc).await?,
        ))
    }

    pub async fn admin(&self) -> anyhow::Result<pb::admin_client::AdminClient<Channel>> {
        Ok(pb::admin_client::AdminClient::new(
            channel(self.grpc).await?,
        ))
    }
}

/// Starts a processor against `core_url` with extra flags.
pub fn start_processor(dir: &Path, core_url: &str, extra: &[&str]) -> anyhow::Result<Proc> {
    let mut args = vec!["--core".to_string(), core_url.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(&bin("e2e-processor"), &args, &[], dir.join("processor.log"))
}

/// [`start_processor`] with extra environment variables.
pub fn start_processor_with_env(
    dir: &Path,
    core_url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    let mut args = vec!["--core".to_string(), core_url.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(&bin("e2e-processor"), &args, env, dir.join("processor.log"))
}

/// Starts the example `name` (a processor built from the library, see
/// `examples/`) against `core_url` with extra flags.
pub fn start_example(
    dir: &Path,
    name: &str,
    core_url: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let mut args = vec!["--core".to_string(), core_url.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let program = bin("examples").join(name);
    Proc::spawn(&program, &args, &[], dir.join(format!("{name}.log")))
}

/// A gRPC channel to `addr`.
pub async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?,
    )
}

/// A minimal HTTP/1.1 client (one request per connection) so the tests
/// need no HTTP client library. Returns status and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<(u16, String)> {
    let response = http_exchange(addr, method, path, body).await?;
    Ok((response.status, response.body))
}

/// An HTTP response as [`http_exchange`] reads it.
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Like [`http_request`], with the response headers.
pub async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((content_type, bytes)) = body {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    if let Some((_, bytes)) = body {
        stream.write_all(bytes).await?;
    }
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

/// POST JSON to core's REST API.
pub async fn post_json(addr: SocketAddr, path: &str, json: &str) -> anyhow::Result<(u16, String)> {
    http_request(
        addr,
        "POST",
        path,
        Some(("application/json", json.as_bytes())),
    )
    .await
}

/// Reads every event with its state from a store, in seq order.
pub async fn all_events(database_url: &str) -> anyhow::Result<Vec<ackflow_core::model::EventView>> {
    let store = ackflow_core::store::open(database_url).await?;
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_events(after, 1000, None).await?;
        let Some(last) = page.last() else { break };
        after = last.event.seq;
        out.extend(page);
    }
    Ok(out)
}
