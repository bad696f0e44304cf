//! One core per SQLite file: a second core started on the data directory of
//! a running one is refused at start, naming the first one's pid, and
//! changes nothing; once the first is gone (even killed), a core starts
//! there again.

use std::process::Stdio;
use std::time::Duration;

use ackflow_tests::{Core, bin, free_port, post_json};

/// Publishes one event; it must get `seq`.
async fn publish(core: &Core, payload: &str, seq: u64) -> anyhow::Result<()> {
    let body = format!(r#"{{"kind":"sha256","payload":"{payload}"}}"#);
    let (status, text) = post_json(core.http, "/v1/events", &body).await?;
    anyhow::ensure!(status == 202, "{status} {text}");
    anyhow::ensure!(text.contains(&format!(r#""seq":{seq}"#)), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_second_core_on_the_same_sqlite_file_is_refused_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut first = Core::start(dir.path(), None, &[]).await?;
    publish(&first, "a", 1).await?;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin("e2e-core"))
            .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the second core started instead of refusing"))??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the second core exited 0:\n{stderr}"
    );
    let pid = first.proc.pid().expect("running");
    assert!(
        stderr.contains("another core is running on")
            && stderr.contains(&format!("(pid {pid})"))
            && stderr.contains("one core per SQLite file"),
        "the refusal does not say who holds the file:\n{stderr}"
    );
    // The first one is untouched.
    publish(&first, "b", 2).await?;
    // Killed, it leaves the file free: the kernel drops its lock.
    first.proc.kill().await;
    first.restart().await?;
    publish(&first, "c", 3).await?;
    Ok(())
}
