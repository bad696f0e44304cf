//! Acknowledged means durable, so core refuses to start on a store whose
//! settings could lose an acknowledged publish on a crash, and names the
//! setting; `--allow-unsafe-durability` starts it anyway, visibly.
//! (PostgreSQL's `synchronous_commit` is set per database here, so the
//! shared server's other databases are untouched.)

use std::process::Stdio;
use std::time::Duration;

use ackflow_tests::{Core, PgDb, bin, free_port, http_request};

async fn unsafe_database() -> anyhow::Result<PgDb> {
    use sqlx::Connection;
    let db = PgDb::create("durability").await?;
    let mut conn = sqlx::PgConnection::connect(&ackflow_tests::pg_server_url()).await?;
    sqlx::query(&format!(
        "ALTER DATABASE {} SET synchronous_commit = off",
        db.name
    ))
    .execute(&mut conn)
    .await?;
    Ok(db)
}

#[tokio::test]
async fn core_refuses_a_store_that_can_lose_acknowledged_publishes() -> anyhow::Result<()> {
    let db = unsafe_database().await?;
    let dir = tempfile::tempdir()?;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin("e2e-core"))
            .args(["--database-url", &db.url])
            .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("core started on an unsafe store instead of refusing"))??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "core exited 0:\n{stderr}");
    assert!(
        stderr.contains("synchronous_commit is off")
            && stderr.contains("--allow-unsafe-durability"),
        "the refusal does not name the setting and the flag:\n{stderr}"
    );
    db.drop_db().await
}

#[tokio::test]
async fn allowed_unsafe_durability_is_visible() -> anyhow::Result<()> {
    let db = unsafe_database().await?;
    let dir = tempfile::tempdir()?;
    let mut core = Core::start(dir.path(), Some(&db.url), &["--allow-unsafe-durability"]).await?;
    let (status, body) = http_request(core.http, "GET", "/readyz", None).await?;
    assert_eq!(status, 200);
    assert!(
        body.contains("warning: unsafe durability") && body.contains("synchronous_commit"),
        "/readyz does not warn: {body}"
    );
    let (_, metrics) = http_request(core.http, "GET", "/metrics", None).await?;
    assert!(
        metrics.lines().any(|l| l == "ackflow_store_durable 0"),
        "ackflow_store_durable is not 0"
    );
    core.proc.terminate().await?;
    db.drop_db().await
}
