//! A processor that sends outputs no store would take: a NUL (PostgreSQL's
//! TEXT refuses it) and an output far over the size limit. Core must store
//! both results (NUL as U+FFFD, the long one cut and marked) and move the
//! floor; before, one such output failed every retry of the result writer
//! and held the floor on PostgreSQL forever.

use std::time::Duration;

use ackflow_proto::v1 as pb;
use ackflow_tests::{Core, PgDb, all_events, channel, post_json, wait_for};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_outputs_are_stored_cut_and_the_floor_moves() -> anyhow::Result<()> {
    let db = PgDb::create("hostile").await?;
    let dir = tempfile::tempdir()?;
    let mut core = Core::start(dir.path(), Some(&db.url), &[]).await?;
    for n in 0..2 {
        let body = format!(r#"{{"kind":"sha256","payload":{n}}}"#);
        let (status, text) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish: {status} {text}");
    }

    // A hand-made processor: hello, then acks with hostile outputs.
    let (out_tx, out_rx) = mpsc::channel(8);
    out_tx
        .send(pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Hello(pb::Hello {
                processor_id: "hostile".into(),
                window: 256,
                algorithms: vec!["sha256".into()],
                ..Default::default()
            })),
        })
        .await?;
    let mut inbound = pb::delivery_client::DeliveryClient::new(channel(core.grpc).await?)
        .subscribe(ReceiverStream::new(out_rx))
        .await?
        .into_inner();
    let mut events = Vec::new();
    while events.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("core ended the stream"))?;
        if let Some(pb::core_message::Body::Events(batch)) = message.body {
            events.extend(batch.events);
        }
    }
    let long = "x".repeat(200_000);
    let outputs = ["a\0b".to_string(), long];
    let acks = events
        .iter()
        .zip(&outputs)
        .map(|(event, output)| pb::Ack {
            seq: event.seq,
            attempt: event.attempt,
            status: pb::ResultStatus::Ok as i32,
            output: output.clone(),
            processing_us: 1,
            ..Default::default()
        })
        .collect();
    out_tx
        .send(pb::ProcessorMessage {
            body: Some(pb::processor_message::Body::Acks(pb::AckBatch {
                acks,
                ..Default::default()
            })),
        })
        .await?;

    let url = db.url.clone();
    let stored = wait_for("both results stored", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let all = all_events(&url).await.ok()?;
            all.iter().all(|v| v.result.is_some()).then_some(all)
        }
    })
    .await?;
    let outputs: Vec<String> = stored
        .iter()
        .map(|v| {
            v.result
                .as_ref()
                .map(|r| r.output.clone())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(outputs[0], "a\u{fffd}b");
    assert!(
        outputs[1].len() <= 64 * 1024 && outputs[1].ends_with('…'),
        "the long output was stored with {} bytes",
        outputs[1].len()
    );
    let core_ref = &core;
    wait_for(
        "the floor to move past both",
        Duration::from_secs(10),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            (s.acked_floor == 3).then_some(())
        },
    )
    .await?;

    drop(out_tx);
    core.proc.terminate().await?;
    db.drop_db().await?;
    Ok(())
}
