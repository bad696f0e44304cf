//! Kills core with SIGKILL while clients publish concurrently (gRPC unary,
//! gRPC stream and REST), restarts it, and checks on both stores that every
//! publish that got a 2xx/OK is stored exactly once, with seqs strictly
//! increasing and no gaps. The same with SIGTERM, which must also exit 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackflow_proto::v1 as pb;
use ackflow_tests::{Client, Core, PgDb, all_events, post_json, wait_for};

type Acked = Arc<Mutex<Vec<(u64, String)>>>;

fn payload(tag: &str) -> Vec<u8> {
    format!(r#"{{"tag":"{tag}"}}"#).into_bytes()
}

async fn unary_publisher(core: &Client, id: usize, acked: Acked) {
    let Ok(mut client) = core.ingest().await else {
        return;
    };
    for n in 0.. {
        let tag = format!("unary{id}-{n}");
        let request = pb::PublishRequest {
            kind: "sha256".into(),
            payload: payload(&tag),
            ..Default::default()
        };
        match client.publish(request).await {
            Ok(reply) => acked.lock().unwrap().push((reply.into_inner().seq, tag)),
            Err(_) => return,
        }
    }
}

async fn rest_publisher(core: &Client, id: usize, acked: Acked) {
    for n in 0.. {
        let tag = format!("rest{id}-{n}");
        let body = format!(r#"{{"kind":"sha256","payload":{{"tag":"{tag}"}}}}"#);
        match post_json(core.http, "/v1/events", &body).await {
            Ok((202, text)) => {
                let json: serde_json::Value =
                    serde_json::from_str(&text).expect("202 body is JSON");
                let seq = json["seq"].as_u64().expect("202 body has a seq");
                acked.lock().unwrap().push((seq, tag));
            }
            _ => return,
        }
    }
}

async fn stream_publisher(core: &Client, acked: Acked) {
    let Ok(mut client) = core.ingest().await else {
        return;
    };
    let requests = tokio_stream::iter((0u64..).map(|n| pb::PublishRequest {
        kind: "sha256".into(),
        payload: payload(&format!("stream-{n}")),
        request_id: n,
        ..Default::default()
    }));
    let Ok(response) = client.publish_stream(requests).await else {
        return;
    };
    let mut replies = response.into_inner();
    while let Ok(Some(reply)) = replies.message().await {
        acked
            .lock()
            .unwrap()
            .push((reply.seq, format!("stream-{}", reply.request_id)));
    }
}

async fn crash_and_check(database_url: Option<String>, graceful: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut core = Core::start(dir.path(), database_url.as_deref(), &[]).await?;
    let store_url = database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("data/ackflow.db").display()));
    let acked: Acked = Arc::default();

    let mut publishers = tokio::task::JoinSet::new();
    {
        // The tasks hold only addresses, so they survive the kill and fail
        // on their next request.
        let (grpc, http) = (core.grpc, core.http);
        for id in 0..3 {
            let acked = acked.clone();
            publishers.spawn(async move {
                let core = Core::attach(grpc, http);
                unary_publisher(&core, id, acked).await
            });
        }
        for id in 0..2 {
            let acked = acked.clone();
            publishers.spawn(async move {
                let core = Core::attach(grpc, http);
                rest_publisher(&core, id, acked).await
            });
        }
        let stream_acked = acked.clone();
        publishers.spawn(async move {
            let core = Core::attach(grpc, http);
            stream_publisher(&core, stream_acked).await
        });
    }

    wait_for(
        "2000 acknowledged publishes",
        Duration::from_secs(120),
        || {
            let acked = acked.clone();
            async move { (acked.lock().unwrap().len() >= 2000).then_some(()) }
        },
    )
    .await?;
    if graceful {
        // SIGTERM: stop accepting, answer every queued publish, exit 0.
        let code = core.proc.terminate().await?;
        assert_eq!(code, Some(0), "graceful shutdown exit code");
    } else {
        core.proc.kill().await;
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        while publishers.join_next().await.is_some() {}
    })
    .await?;
    let acked = acked.lock().unwrap().clone();
    core.restart().await?;

    let events = all_events(&store_url).await?;
    // Seqs are 1..=n: strictly increasing, no gaps.
    for (i, view) in events.iter().enumerate() {
        assert_eq!(view.event.seq, i as u64 + 1, "gap or disorder in seqs");
    }
    // Every stored event is stored once (tags are unique per publish).
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut by_seq: HashMap<u64, String> = HashMap::new();
    for view in &events {
        let json: serde_json::Value = serde_json::from_slice(&view.event.payload)?;
        let tag = json["tag"].as_str().unwrap_or_default().to_string();
        *count.entry(tag.clone()).or_default() += 1;
        by_seq.insert(view.event.seq, tag);
    }
    assert!(count.values().all(|c| *c == 1), "an event was stored twice");
    // Every acknowledged publish is stored, at the seq it was told.
    for (seq, tag) in &acked {
        assert_eq!(
            by_seq.get(seq),
            Some(tag),
            "acknowledged {tag} lost or moved"
        );
    }
    assert!(events.len() >= acked.len());

    // The restarted core continues the sequence.
    let mut client = core.ingest().await?;
    let next = client
        .publish(pb::PublishRequest {
            kind: "sha256".into(),
            payload: b"1".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(next.seq, events.len() as u64 + 1);
    println!(
        "acknowledged {} publishes before SIGKILL, {} stored",
        acked.len(),
        events.len()
    );
    core.proc.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_publish_sqlite() -> anyhow::Result<()> {
    crash_and_check(None, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_publish_postgres() -> anyhow::Result<()> {
    let db = PgDb::create("crash").await?;
    crash_and_check(Some(db.url.clone()), false).await?;
    db.drop_db().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_every_publish_and_exits_0() -> anyhow::Result<()> {
    crash_and_check(None, true).await
}
