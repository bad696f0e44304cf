//! An event whose processing crashes the processor (the `crash` algorithm
//! aborts the process) must be parked after `--max-crashes` crashes, while
//! every other event — including those in flight beside it when it crashed
//! the processor, and those behind it on its key — is processed and gets a
//! result. A supervisor restarts the processor whenever it exits, as
//! systemd or Kubernetes would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ackflow_tests::{Core, http_request, post_json, start_processor, wait_for};

const EVENTS: u64 = 40;
const POISON: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_crashes_the_processor_is_parked_and_no_other() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--max-crashes", "3"]).await?;
    for seq in 1..=EVENTS {
        let kind = if seq == POISON { "crash" } else { "sha256" };
        let body = format!(
            r#"{{"kind":"{kind}","key":"k{}","payload":{seq}}}"#,
            seq % 4
        );
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish {seq}: {status} {text}");
        anyhow::ensure!(text.contains(&format!(r#""seq":{seq}"#)), "{text}");
    }

    let lives = Arc::new(AtomicU32::new(0));
    let supervisor = {
        let (dir, url, lives) = (dir.path().to_path_buf(), core.grpc_url(), lives.clone());
        tokio::spawn(async move {
            loop {
                let mut processor = start_processor(&dir, &url, &["--enable-crash"])?;
                lives.fetch_add(1, Ordering::SeqCst);
                processor.wait().await?;
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        })
    };

    let snapshot = wait_for("every event resolved", Duration::from_secs(60), || async {
        let s = core.snapshot().await.ok()?;
        (s.head == EVENTS && s.acked_floor > EVENTS).then_some(s)
    })
    .await;
    supervisor.abort(); // drops the running processor (killed on drop)
    let snapshot = snapshot?;

    assert_eq!(
        snapshot.dead.len(),
        1,
        "exactly one event parked: {:?}",
        snapshot.dead
    );
    let dead = &snapshot.dead[0];
    assert_eq!(dead.seq, POISON, "the parked event is the crashing one");
    assert!(
        dead.reason.starts_with("crashed the processor: 3 "),
        "reason names the crashes: {:?}",
        dead.reason
    );
    assert!(
        lives.load(Ordering::SeqCst) >= 4,
        "three crashes, then a life that drained the rest: {} lives",
        lives.load(Ordering::SeqCst)
    );
    assert_eq!(snapshot.suspects, 0, "isolation ended");
    for seq in (1..=EVENTS).filter(|s| *s != POISON) {
        let (status, body) =
            http_request(core.http, "GET", &format!("/v1/events/{seq}"), None).await?;
        assert_eq!(status, 200, "GET seq {seq}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(json["state"], "ok", "seq {seq} processed: {body}");
    }
    let (_, body) = http_request(core.http, "GET", &format!("/v1/events/{POISON}"), None).await?;
    let json: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(json["state"], "dead", "{body}");
    Ok(())
}
