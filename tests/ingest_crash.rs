//! Kills core with SIGKILL while clients publish concurrently (gRPC unary,
//! gRPC stream and REST), restarts it, and checks on both stores that every
//! publish that got a 2xx/OK is stored exactly once, with seqs strictly
//! increasing and no gaps. The same with SIGTERM, which must also exit 0;
//! and SIGTERM while a processor runs with acks waiting to be stored.

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

/// What one publisher saw: the seqs it was told, and how each refusal
/// looked.
#[derive(Default)]
struct Publisher {
    acked: Vec<(u64, String)>,
    /// Answers that were not a 2xx/OK (status codes, or transport errors).
    refusals: Vec<String>,
}

/// Publishes over gRPC unary until core refuses the connection itself;
/// an answered error (UNAVAILABLE while shutting down) does not stop it.
async fn persistent_grpc_publisher(core: Client, id: usize) -> Publisher {
    let mut seen = Publisher::default();
    let Ok(mut client) = core.ingest().await else {
        return seen;
    };
    for n in 0.. {
        let tag = format!("grpc{id}-{n}");
        let request = pb::PublishRequest {
            kind: "sha256".into(),
            payload: payload(&tag),
            idempotency_key: tag.clone(),
            ..Default::default()
        };
        match client.publish(request).await {
            Ok(reply) => seen.acked.push((reply.into_inner().seq, tag)),
            Err(status) => {
                seen.refusals
                    .push(format!("{:?}: {}", status.code(), status.message()));
                // A new connection: refused once core stopped listening.
                match core.ingest().await {
                    Ok(again) => client = again,
                    Err(e) => {
                        seen.refusals.push(format!("connect: {e}"));
                        return seen;
                    }
                }
            }
        }
    }
    seen
}

/// Publishes over REST until the connection is refused.
async fn persistent_rest_publisher(core: Client, id: usize) -> Publisher {
    let mut seen = Publisher::default();
    for n in 0.. {
        let tag = format!("rest{id}-{n}");
        let body = format!(r#"{{"kind":"sha256","payload":{{"tag":"{tag}"}}}}"#);
        match post_json(core.http, "/v1/events", &body).await {
            Ok((202, text)) => {
                let json: serde_json::Value =
                    serde_json::from_str(&text).expect("202 body is JSON");
                let seq = json["seq"].as_u64().expect("202 body has a seq");
                seen.acked.push((seq, tag));
            }
            Ok((status, _)) => seen.refusals.push(status.to_string()),
            Err(e) => {
                seen.refusals.push(format!("connect: {e}"));
                return seen;
            }
        }
    }
    seen
}

/// Waits (bounded) for `service`'s health watch to say `status`.
async fn health_says(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    status: tonic_health::pb::health_check_response::ServingStatus,
) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(reply) = watch.message().await? {
            if reply.status == status as i32 {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the health watch ended before {status:?}")
    })
    .await
    .map_err(|_| anyhow::anyhow!("health did not say {status:?} within 10 s"))?
}

/// SIGTERM while a processor runs and acks are in flight: core stops
/// accepting (its gRPC health turns NOT_SERVING), answers every publish,
/// stores every ack it received and exits 0; publishers that keep going
/// through errors are refused in the end, and every publish they were told
/// was stored is stored. To be sure acks are waiting to be stored at the
/// signal, the test holds a lock that blocks inserts into `results`, and
/// lets go only once core is shutting down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_acks_in_flight_stores_every_ack_received() -> anyhow::Result<()> {
    use sqlx::Connection;
    use tonic_health::pb::health_check_response::ServingStatus;

    let db = PgDb::create("sigterm").await?;
    let dir = tempfile::tempdir()?;
    let mut core = Core::start(dir.path(), Some(&db.url), &[]).await?;
    let mut processor = ackflow_tests::start_processor(dir.path(), &core.grpc_url(), &[])?;
    let client = Core::attach(core.grpc, core.http);
    let mut publishers = tokio::task::JoinSet::new();
    for id in 0..2 {
        publishers.spawn(persistent_grpc_publisher(client, id));
        publishers.spawn(persistent_rest_publisher(client, id));
    }
    let core_ref = &core;
    wait_for("results flowing", Duration::from_secs(60), || async move {
        let s = core_ref.snapshot().await.ok()?;
        (s.acked_floor > 200).then_some(())
    })
    .await?;

    // Hold inserts into results: acks pile up in core, accepted, unstored.
    let mut locker = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::query("BEGIN").execute(&mut locker).await?;
    sqlx::query("LOCK TABLE results IN SHARE MODE")
        .execute(&mut locker)
        .await?;
    let before = wait_for(
        "100 acks received and not stored",
        Duration::from_secs(60),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            let t = s.totals?;
            (t.acks >= t.results_ok + t.results_failed + 100).then_some(t)
        },
    )
    .await?;

    let mut health = tonic_health::pb::health_client::HealthClient::new(
        ackflow_tests::channel(core.grpc).await?,
    );
    // The server as a whole ("", what probes ask by default) and each
    // service.
    let names = [
        "",
        "ackflow.v1.Ingest",
        "ackflow.v1.Delivery",
        "ackflow.v1.Admin",
    ];
    let mut watches = Vec::new();
    for name in names {
        let mut watch = health
            .watch(tonic_health::pb::HealthCheckRequest {
                service: name.into(),
            })
            .await?
            .into_inner();
        health_says(&mut watch, ServingStatus::Serving).await?;
        watches.push(watch);
    }

    core.proc.signal("-TERM")?;
    for (name, watch) in names.iter().zip(watches.iter_mut()) {
        health_says(watch, ServingStatus::NotServing)
            .await
            .map_err(|e| anyhow::anyhow!("health of {name:?}: {e}"))?;
    }
    // Then every watch ends, so none holds the graceful shutdown (kept open
    // until core exits: the exit below must not wait for the timeout).
    for (name, watch) in names.iter().zip(watches.iter_mut()) {
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(_)) = watch.message().await {}
        })
        .await;
        anyhow::ensure!(end.is_ok(), "the health watch of {name:?} stays open");
    }
    sqlx::query("COMMIT").execute(&mut locker).await?;
    let code = tokio::time::timeout(Duration::from_secs(30), core.proc.wait())
        .await
        .map_err(|_| anyhow::anyhow!("core still runs 30 s after SIGTERM"))??;
    assert_eq!(code, Some(0), "graceful shutdown exit code");
    let log = std::fs::read_to_string(&core.proc.log)?;
    assert!(
        !log.contains("shutdown timed out"),
        "the shutdown waited for its timeout:\n{}",
        core.proc.log_tail(30)
    );

    let mut seen = Publisher::default();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(publisher) = publishers.join_next().await {
            let publisher = publisher.expect("publisher task");
            seen.acked.extend(publisher.acked);
            seen.refusals.extend(publisher.refusals);
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("publishers still run 30 s after core exited"))?;
    // Refusals a client can retry: core's UNAVAILABLE or 503 while it shuts
    // down, a request the client cancelled as the connection closed before
    // it went out, or no connection at all.
    for refusal in &seen.refusals {
        assert!(
            refusal.starts_with("connect:")
                || refusal.starts_with("Unavailable: ")
                || refusal == "Cancelled: operation was canceled"
                || refusal == "503",
            "a publish refused with {refusal} while core shut down"
        );
    }

    // Every ack core had received when the lock was taken is stored, and
    // the persisted floor is not ahead of the stored results.
    let store = ackflow_core::store::open(&db.url).await?;
    let events = all_events(&db.url).await?;
    let results = events.iter().filter(|v| v.result.is_some()).count() as u64;
    assert!(
        results >= before.acks,
        "core had received {} acks, {} results stored after SIGTERM",
        before.acks,
        results
    );
    let floor = store.delivery_cursor().await?.acked_floor;
    for view in events.iter().filter(|v| v.event.seq < floor) {
        assert!(
            view.result.is_some() || view.dead.is_some(),
            "seq {} is below the persisted floor {floor} but unresolved",
            view.event.seq
        );
    }
    // Every acknowledged publish is stored, at the seq it was told.
    let tags: HashMap<u64, String> = events
        .iter()
        .map(|v| {
            let json: serde_json::Value =
                serde_json::from_slice(&v.event.payload).unwrap_or_default();
            (
                v.event.seq,
                json["tag"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (seq, tag) in &seen.acked {
        assert_eq!(tags.get(seq), Some(tag), "acknowledged {tag} lost or moved");
    }
    println!(
        "{} publishes acknowledged, {} stored; {} acks received before the signal, {} results stored; {} refusals",
        seen.acked.len(),
        events.len(),
        before.acks,
        results,
        seen.refusals.len()
    );

    // The processor, still running, finishes the rest with the next core:
    // one result per event.
    core.restart().await?;
    let head = events.len() as u64;
    let core_ref = &core;
    wait_for(
        "every event resolved",
        Duration::from_secs(60),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            (s.acked_floor == head + 1).then_some(())
        },
    )
    .await?;
    let events = all_events(&db.url).await?;
    assert_eq!(
        events.len() as u64,
        head,
        "no event appeared after the restart"
    );
    assert!(
        events.iter().all(|v| v.result.is_some()),
        "every event has its result"
    );
    processor.terminate().await?;
    core.proc.terminate().await?;
    db.drop_db().await
}
