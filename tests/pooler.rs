//! Core behind a transaction-mode PgBouncer (`pooler=transaction` in the
//! database URL): it migrates, leads, accepts, delivers and stores results
//! with fewer server connections than it has client connections, and a
//! second core behind the same PgBouncer stands by and takes over.

use std::time::Duration;

use ackflow_tests::pgbouncer::PgBouncer;
use ackflow_tests::{Core, PgDb, all_events, post_json, start_processor};

async fn publish(core: &Core, from: u64, to: u64) -> anyhow::Result<()> {
    for seq in from..=to {
        let body = format!(
            r#"{{"kind":"sum","key":"k{}","payload":[{seq}],"idempotency_key":"e{seq}"}}"#,
            seq % 4
        );
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(
            status == 202 && text.contains(&format!(r#""seq":{seq}"#)),
            "publish {seq}: {status} {text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn core_runs_and_fails_over_behind_a_transaction_mode_pgbouncer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = PgDb::create("pooler").await?;
    let bouncer = PgBouncer::start(dir.path(), 2).await?;
    let url = format!("{}?pooler=transaction", bouncer.url(&db.name));
    let flags = |id: &'static str| ["--core-id", id, "--lease-ms", "1000"];
    let mut a = Core::start(dir.path(), Some(&url), &flags("a")).await?;
    let b = Core::start_standby(dir.path(), &url, &flags("b"), "core-b.log").await?;
    let cores = format!("{},{}", a.grpc_url(), b.grpc_url());
    let _processor = start_processor(dir.path(), &cores, &[])?;

    publish(&a, 1, 40).await?;
    a.wait_resolved(40, Duration::from_secs(60)).await?;
    a.proc.kill().await;
    b.wait_ready().await?;
    publish(&b, 41, 80).await?;
    b.wait_resolved(80, Duration::from_secs(60)).await?;

    // Read directly, past PgBouncer: sqlx's own migrator runs first and
    // accepts what the pooled migration recorded.
    let events = all_events(&db.url).await?;
    assert_eq!(events.len(), 80);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event.seq, i as u64 + 1);
        let result = e.result.as_ref().expect("every event has its result");
        assert_eq!(result.output, format!("{}", i + 1), "seq {}", i + 1);
    }
    drop(b);
    db.drop_db().await?;
    Ok(())
}
