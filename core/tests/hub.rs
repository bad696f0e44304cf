//! The delivery hub of an in-process core, driven through its session
//! channel (`Hub::sessions_tx`, what the `Delivery` service hands it) with
//! hand-made processor streams, so that a stream can be gone before the hub
//! has even answered its hello.

use std::time::Duration;

use ackflow_core::config::{Config, Ordering};
use ackflow_core::delivery::hub::{Inbound, NewSession, SessionTx};
use ackflow_core::model::NewEvent;
use ackflow_core::server::{Running, start};
use ackflow_proto::v1 as pb;
use tokio::sync::mpsc;

/// A hand-made session: what the hub sends on it, and the sender of its
/// inbound messages (kept, or the hub sees the stream end).
struct Stream {
    out_rx: mpsc::Receiver<Result<pb::CoreMessage, tonic::Status>>,
    in_tx: mpsc::Sender<Inbound>,
}

/// Says hello as processor `id`, life `life`, on a new session; `out`
/// carries what the hub sends back.
async fn hello(
    running: &Running,
    id: &str,
    life: u64,
    out: (
        SessionTx,
        Option<mpsc::Receiver<Result<pb::CoreMessage, tonic::Status>>>,
    ),
) -> Option<Stream> {
    let (in_tx, in_rx) = mpsc::channel(16);
    running
        .hub
        .sessions_tx
        .send(NewSession {
            hello: pb::Hello {
                processor_id: id.into(),
                life,
                window: 64,
                algorithms: vec!["telemetry".into()],
                ..Default::default()
            },
            out_tx: out.0,
            in_rx,
        })
        .await
        .expect("the hub runs");
    out.1.map(|out_rx| Stream { out_rx, in_tx })
}

/// A new session of processor `id`, life `life`, that keeps what the hub
/// sends.
async fn connect(running: &Running, id: &str, life: u64) -> Stream {
    let (out_tx, out_rx) = mpsc::channel(64);
    hello(running, id, life, (out_tx, Some(out_rx)))
        .await
        .expect("a stream kept")
}

/// An event of the kind the hand-made processors name.
/// A hub under global ordering (one processor active, the others hot
/// standbys) with event 1 published, processor `a` (life 1) active with
/// that event in flight, and `b` (life `b_life`) connected after it.
async fn active_and_standby(mut config: Config, b_life: u64) -> (Running, Stream, Stream) {
    config.ordering = Ordering::Global;
    let running = start(config).await.unwrap();
    running.ingest.publish(vec![telemetry(b"1")]).await.unwrap();
    let mut active = connect(&running, "a", 1).await;
    assert!(welcomed(&mut active, Duration::from_secs(10)).await);
    assert_eq!(next_events(&mut active).await, [1]);
    let standby = connect(&running, "b", b_life).await;
    (running, active, standby)
}

fn telemetry(payload: &[u8]) -> NewEvent {
    NewEvent {
        kind: "telemetry".into(),
        key: None,
        payload: payload.to_vec(),
        idempotency_key: None,
        traceparent: None,
    }
}

/// The seqs of the next events message on `stream` (bounded wait).
async fn next_events(stream: &mut Stream) -> Vec<u64> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let msg = stream.out_rx.recv().await.expect("open").expect("ok");
            if let Some(pb::core_message::Body::Events(batch)) = msg.body {
                return batch.events.iter().map(|e| e.seq).collect();
            }
        }
    })
    .await
    .expect("events within 10 s")
}

/// A processor life whose stream is gone before the hub welcomes it still
/// makes the hub give up what the new life decides (here: an at-most-once
/// event that was in flight on the previous stream is abandoned). The hub
/// once returned as soon as the welcome failed, dropping that decision
/// while the event was already marked as storing: the floor stayed below
/// it until core restarted, and delivery stopped once the window filled.
#[tokio::test]
async fn a_session_gone_before_its_welcome_still_settles_what_the_new_life_gave_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    config.at_most_once = vec!["telemetry".into()];
    let running = start(config).await.unwrap();
    running.ingest.publish(vec![telemetry(b"1")]).await.unwrap();

    // Life 1 gets the event and never acks it.
    let mut first = connect(&running, "p", 1).await;
    assert_eq!(next_events(&mut first).await, [1]);

    // Life 2 of the same processor (it restarted): its stream is closed
    // before the hub answers its hello.
    let (out_tx, out_rx) = mpsc::channel(1);
    drop(out_rx);
    hello(&running, "p", 2, (out_tx, None)).await;

    let mut snapshots = running.hub.snapshot_rx.clone();
    let floor = tokio::time::timeout(
        Duration::from_secs(10),
        snapshots.wait_for(|s| s.acked_floor > 1),
    )
    .await
    .map(|s| s.map(|s| s.acked_floor));
    assert!(
        matches!(floor, Ok(Ok(2))),
        "the abandoned event is resolved and the floor passes it: {:?}",
        running.hub.snapshot_rx.borrow()
    );
    let view = running.store.event(1).await.unwrap().unwrap();
    assert_eq!(view.state.as_str(), "abandoned", "{view:?}");
    running.stop().await;
}

/// Whether a welcome comes on `stream` within `wait`.
async fn welcomed(stream: &mut Stream, wait: Duration) -> bool {
    tokio::time::timeout(wait, async {
        loop {
            match stream.out_rx.recv().await {
                Some(Ok(pb::CoreMessage {
                    body: Some(pb::core_message::Body::Welcome(_)),
                })) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A second processor waits as a hot standby instead of replacing the
/// active one (two processors used to take turns, each hello replacing the
/// other), and takes over, with the events in flight, when the active
/// one's stream ends.
#[tokio::test]
async fn another_processor_stands_by_and_takes_over_when_the_active_one_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    // The hand-made active processor never reports; here only its stream's
    // end hands over (the silence rule has a test of its own).
    config.processor_silence_ms = 600_000;
    let (running, mut active, mut standby) = active_and_standby(config, 1).await;
    running.ingest.publish(vec![telemetry(b"2")]).await.unwrap();
    assert_eq!(
        next_events(&mut active).await,
        [2],
        "the active one goes on"
    );
    assert!(
        !welcomed(&mut standby, Duration::from_millis(500)).await,
        "the standby was welcomed while the active one runs"
    );
    // Both are counted as connected; a third that leaves while it waits
    // is not counted once gone.
    assert_eq!(processors_connected(&running, 2).await, 2);
    let third = connect(&running, "c", 1).await;
    assert_eq!(processors_connected(&running, 3).await, 3);
    // Each with its own in-flight gauge: both events are a's.
    let in_flight = |id: &str| format!("ackflow_in_flight_per_processor{{processor=\"{id}\"}}");
    assert_eq!(metric(&running, &in_flight("a"), Some(2)).await, Some(2));
    assert_eq!(metric(&running, &in_flight("c"), Some(0)).await, Some(0));
    drop(third);
    assert_eq!(processors_connected(&running, 2).await, 2);
    assert_eq!(
        metric(&running, &in_flight("c"), None).await,
        None,
        "a processor's labels go with it"
    );

    // The active processor's stream ends: the standby takes over and gets
    // both events, which were in flight.
    drop(active);
    assert!(welcomed(&mut standby, Duration::from_secs(10)).await);
    assert_eq!(next_events(&mut standby).await, [1, 2]);
    assert_eq!(processors_connected(&running, 1).await, 1);
    assert_eq!(metric(&running, &in_flight("b"), Some(2)).await, Some(2));
    assert_eq!(metric(&running, &in_flight("a"), None).await, None);
    drop(standby);
    assert_eq!(processors_connected(&running, 0).await, 0);
    running.stop().await;
}

/// An active processor that goes silent (frozen, or its connection cut
/// without a reset) gives way to a waiting standby after
/// `--processor-silence-ms`, its stream ended, its events in flight resent to
/// the standby; while it talks, the standby waits however long.
#[tokio::test]
async fn a_standby_takes_over_from_a_silent_active_processor_and_not_from_a_talking_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    config.processor_silence_ms = 500;
    let (running, mut active, mut standby) = active_and_standby(config, 7).await;

    // Talking (an echo every 100 ms, as harmless as a status) for four
    // times the silence: the standby waits.
    let talk = {
        let in_tx = active.in_tx.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let echo = pb::ProcessorMessage {
                    body: Some(pb::processor_message::Body::Echo(pb::Echo { probe: 0 })),
                };
                if in_tx.send(Inbound::Message(echo)).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    assert!(
        !welcomed(&mut standby, Duration::from_secs(2)).await,
        "the standby took over from an active processor that talks"
    );
    talk.await.unwrap();

    // Silent now (its stream still open): the standby takes over, with the
    // event that was in flight, and the silent one's stream is ended.
    assert!(welcomed(&mut standby, Duration::from_secs(10)).await);
    assert_eq!(next_events(&mut standby).await, [1]);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while active.out_rx.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the silent processor's stream was not ended");
    // Frozen is not dead: the event in flight is no crash suspect.
    let mut snapshots = running.hub.snapshot_rx.clone();
    let snapshot = tokio::time::timeout(
        Duration::from_secs(10),
        snapshots.wait_for(|s| s.processor.as_ref().is_some_and(|p| p.processor_id == "b")),
    )
    .await
    .expect("a snapshot with b active")
    .expect("the hub runs")
    .clone();
    assert_eq!(snapshot.suspects, 0, "a silent processor taken for a crash");
    running.stop().await;
}

/// The active processor's stream ends and the same life comes back at once
/// (a reset connection): it stays active, with no crash suspects, and the
/// standby waits. Only when it does not come back does the standby take
/// over, and then the end counts as a crash (core cannot tell it from a
/// kill): the event in flight is a suspect.
#[tokio::test]
async fn a_standby_waits_for_the_active_processor_to_come_back_before_taking_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    // Long enough to see the hub take in the end before coming back.
    config.processor_return_grace_ms = 3_000;
    let (running, active, mut standby) = active_and_standby(config, 7).await;

    // Reset: the stream ends (the hub has seen it once only the standby
    // is counted), and the same life says hello again.
    assert_eq!(processors_connected(&running, 2).await, 2);
    drop(active);
    assert_eq!(processors_connected(&running, 1).await, 1);
    let mut back = connect(&running, "a", 1).await;
    assert!(
        welcomed(&mut back, Duration::from_secs(10)).await,
        "the processor that came back was not welcomed"
    );
    assert_eq!(next_events(&mut back).await, [1], "its event, sent again");
    let mut snapshots = running.hub.snapshot_rx.clone();
    let snapshot = tokio::time::timeout(
        Duration::from_secs(10),
        snapshots.wait_for(|s| s.processor.as_ref().is_some_and(|p| p.session == 2)),
    )
    .await
    .expect("a snapshot of the second session")
    .expect("the hub runs")
    .clone();
    assert_eq!(snapshot.suspects, 0, "a reset is not a crash");
    assert_eq!(snapshot.standbys, ["b"]);

    // Gone for good: after the grace the standby takes over.
    drop(back);
    assert!(welcomed(&mut standby, Duration::from_secs(10)).await);
    assert_eq!(next_events(&mut standby).await, [1]);
    let snapshot = tokio::time::timeout(
        Duration::from_secs(10),
        snapshots.wait_for(|s| s.processor.as_ref().is_some_and(|p| p.processor_id == "b")),
    )
    .await
    .expect("a snapshot with b active")
    .expect("the hub runs")
    .clone();
    assert_eq!(snapshot.suspects, 1, "taken for a crash");
    running.stop().await;
}

/// An event of key `key`.
fn keyed(key: &str) -> NewEvent {
    NewEvent {
        key: Some(key.into()),
        ..telemetry(key.as_bytes())
    }
}

/// The events (seq, key) of the next events message on `stream`.
async fn next_keyed(stream: &mut Stream) -> Vec<(u64, String)> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let msg = stream.out_rx.recv().await.expect("open").expect("ok");
            if let Some(pb::core_message::Body::Events(batch)) = msg.body {
                return batch.events.into_iter().map(|e| (e.seq, e.key)).collect();
            }
        }
    })
    .await
    .expect("events within 10 s")
}

/// Events from `a` and `b` until `n` in all (bounded wait).
async fn collect(
    a: &mut Stream,
    b: &mut Stream,
    n: usize,
) -> (Vec<(u64, String)>, Vec<(u64, String)>) {
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < n {
        tokio::select! {
            events = next_keyed(a) => got_a.extend(events),
            events = next_keyed(b) => got_b.extend(events),
        }
    }
    (got_a, got_b)
}

/// Acks `seqs` on `stream`, as processed.
async fn ack(stream: &Stream, seqs: &[u64]) {
    let acks = seqs
        .iter()
        .map(|seq| pb::Ack {
            seq: *seq,
            attempt: 1,
            status: pb::ResultStatus::Ok as i32,
            ..Default::default()
        })
        .collect();
    let msg = pb::ProcessorMessage {
        body: Some(pb::processor_message::Body::Acks(pb::AckBatch {
            acks,
            ..Default::default()
        })),
    };
    stream.in_tx.send(Inbound::Message(msg)).await.unwrap();
}

/// The keys of `events`.
fn keys(events: &[(u64, String)]) -> std::collections::BTreeSet<String> {
    events.iter().map(|(_, k)| k.clone()).collect()
}

/// The first snapshot (within 10 s) for which `pred` holds.
async fn snapshot_where(
    running: &Running,
    pred: impl Fn(&pb::Snapshot) -> bool,
) -> std::sync::Arc<pb::Snapshot> {
    let mut snapshots = running.hub.snapshot_rx.clone();
    tokio::time::timeout(Duration::from_secs(10), snapshots.wait_for(|s| pred(s)))
        .await
        .unwrap_or_else(|_| panic!("no such snapshot: {:?}", running.hub.snapshot_rx.borrow()))
        .expect("the hub runs")
        .clone()
}

/// Under key ordering a second processor is active beside the first, not a
/// standby: the keys are spread over both, each key at one of them, each
/// event sent once. A partition that moves to the newcomer while the first
/// processor holds some of its events waits for them to be acknowledged
/// (drain, then move), so that a key is never processed in two places.
#[tokio::test]
async fn two_processors_share_keyed_work_and_a_moved_partition_drains_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::local(None, dir.path().to_path_buf());
    let running = start(config).await.unwrap();
    let names: Vec<String> = (0..40).map(|k| format!("k{k}")).collect();

    // a alone: it gets all forty.
    let mut a = connect(&running, "a", 1).await;
    assert!(welcomed(&mut a, Duration::from_secs(10)).await);
    let events: Vec<NewEvent> = names.iter().map(|k| keyed(k)).collect();
    running.ingest.publish(events.clone()).await.unwrap();
    let mut first = Vec::new();
    while first.len() < 40 {
        first.extend(next_keyed(&mut a).await);
    }

    // b joins and is welcomed at once, beside a.
    let mut b = connect(&running, "b", 1).await;
    assert!(welcomed(&mut b, Duration::from_secs(10)).await);
    let snapshot = snapshot_where(&running, |s| s.processors.len() == 2).await;
    let owned: Vec<u32> = snapshot.processors.iter().map(|p| p.partitions).collect();
    assert_eq!(owned.iter().sum::<u32>(), 256, "{owned:?}");
    assert!(owned.iter().all(|n| *n > 0), "{owned:?}");

    // The same forty keys again: b's share waits for a's acks.
    running.ingest.publish(events).await.unwrap();
    let waiting = snapshot_where(&running, |s| s.next_to_send == 81)
        .await
        .waiting;
    assert!(waiting > 0, "b's keys wait while a holds their events");
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    while to_a.len() < 40 - waiting as usize {
        to_a.extend(next_keyed(&mut a).await);
    }
    assert!(
        to_a.iter().all(|(seq, _)| *seq > 40),
        "a gets its own keys' events at once"
    );
    ack(&a, &(1..=40).collect::<Vec<_>>()).await;
    while to_b.len() < waiting as usize {
        to_b.extend(next_keyed(&mut b).await);
    }
    assert_eq!(to_a.len() + to_b.len(), 40, "each event sent once");
    assert!(
        keys(&to_a).is_disjoint(&keys(&to_b)),
        "a key at one processor"
    );
    let snapshot = snapshot_where(&running, |s| s.waiting == 0 && s.acked_floor == 41).await;
    assert_eq!(snapshot.window_used, 40);
    running.stop().await;
}

/// A processor's stream ends and it does not come back within the grace:
/// its partitions and its unacknowledged events go to the other processor
/// at once. A processor that falls silent while another could take its work
/// gives it up without the grace, and that is not a crash.
#[tokio::test]
async fn a_gone_processor_s_keys_and_events_go_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    config.processor_return_grace_ms = 200;
    config.processor_silence_ms = 600_000;
    let running = start(config).await.unwrap();
    let mut a = connect(&running, "a", 1).await;
    assert!(welcomed(&mut a, Duration::from_secs(10)).await);
    let mut b = connect(&running, "b", 1).await;
    assert!(welcomed(&mut b, Duration::from_secs(10)).await);
    snapshot_where(&running, |s| s.processors.len() == 2).await;
    let names: Vec<String> = (0..40).map(|k| format!("k{k}")).collect();
    running
        .ingest
        .publish(names.iter().map(|k| keyed(k)).collect())
        .await
        .unwrap();
    let (to_a, to_b) = collect(&mut a, &mut b, 40).await;
    assert!(!to_a.is_empty() && !to_b.is_empty());

    // a is gone: after the grace b gets a's events, as sent again.
    drop(a);
    let mut moved = Vec::new();
    while moved.len() < to_a.len() {
        moved.extend(next_keyed(&mut b).await);
    }
    moved.sort();
    let mut expected = to_a.clone();
    expected.sort();
    assert_eq!(moved, expected, "exactly a's unacknowledged events");
    let snapshot = snapshot_where(&running, |s| {
        s.processors.len() == 1 && s.processors[0].partitions == 256
    })
    .await;
    assert_eq!(snapshot.processors[0].processor_id, "b");
    assert_eq!(snapshot.processors[0].in_flight, 40);
    assert_eq!(
        snapshot.suspects as usize,
        to_a.len(),
        "a's end counts as a crash: its events are suspects until resolved"
    );
    running.stop().await;
}

/// A processor that stops reading its stream (a frozen link: its channel
/// full) holds back no other: the hub queues what it cannot hand over and
/// never waits for it, and ends that session once its queue has not moved
/// for 10 s; then its keys and events go to the others. The hub used to
/// wait up to 10 s on such a send, and every processor waited with it (a
/// chaos run with a half-open proxy stalled 12 s).
#[tokio::test]
async fn a_processor_that_stops_reading_holds_back_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    // Only the stuck channel may end a's session here.
    config.processor_silence_ms = 600_000;
    config.processor_return_grace_ms = 0;
    let running = start(config).await.unwrap();
    // a's channel holds one message, and a never reads it.
    let (a_tx, a_rx) = mpsc::channel(1);
    let _a = hello(&running, "a", 1, (a_tx, Some(a_rx))).await;
    let mut b = connect(&running, "b", 1).await;
    assert!(
        welcomed(&mut b, Duration::from_secs(5)).await,
        "b waited behind a processor that does not read"
    );
    snapshot_where(&running, |s| s.processors.len() == 2).await;
    let names: Vec<String> = (0..40).map(|k| format!("k{k}")).collect();
    running
        .ingest
        .publish(names.iter().map(|k| keyed(k)).collect())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), next_keyed(&mut b))
        .await
        .expect("b's events while a is stuck");
    assert!(!first.is_empty());
    // a is cut once its queue stood still for 10 s; b gets everything.
    let mut got: Vec<(u64, String)> = first;
    while got
        .iter()
        .map(|(seq, _)| *seq)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        < 40
    {
        got.extend(next_keyed(&mut b).await);
    }
    let snapshot = snapshot_where(&running, |s| s.processors.len() == 1).await;
    assert_eq!(snapshot.processors[0].processor_id, "b");
    running.stop().await;
}

/// `ackflow_processors_connected` from core's `/metrics` once it reads
/// `expected`, or its last value after 10 s.
async fn processors_connected(running: &Running, expected: u64) -> u64 {
    metric(running, "ackflow_processors_connected", Some(expected))
        .await
        .unwrap_or(u64::MAX)
}

/// The sample `series` (a metric's name with its labels) from core's
/// `/metrics` once it reads `expected` (copied in with every snapshot,
/// each 200 ms), or its last value after 10 s (`None`: not on the page).
async fn metric(running: &Running, series: &str, expected: Option<u64>) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read = || async {
        let mut conn = tokio::net::TcpStream::connect(running.http_addr)
            .await
            .ok()?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: core\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut page = String::new();
        conn.read_to_string(&mut page).await.ok()?;
        Some(
            page.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<u64>().ok()),
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = read().await.flatten();
        if value == expected || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Committed events reach the processor in order, each once, whether the
/// hub reads them from the tail itself (keeping up) or from the backlog
/// reader's pages (behind the tail: at start, and when the window held it
/// back while the tail moved on), and across every change between the two.
#[tokio::test]
async fn events_come_in_order_from_the_tail_and_from_the_store_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::local(None, dir.path().to_path_buf());
    // A tail of 8 events: most of a burst is in the store only.
    config.tail_events = 8;
    let running = start(config).await.unwrap();
    let publish = |n: usize| {
        let events = (0..n).map(|_| telemetry(b"1")).collect::<Vec<_>>();
        running.ingest.publish(events)
    };
    // Before the processor: a backlog in the store.
    publish(100).await.unwrap();
    let mut p = connect(&running, "p", 1).await;
    assert!(welcomed(&mut p, Duration::from_secs(10)).await);

    let mut got: Vec<u64> = Vec::new();
    let receive_until = async |p: &mut Stream, got: &mut Vec<u64>, last: u64| {
        while got.last().copied().unwrap_or(0) < last {
            let seqs = next_events(p).await;
            ack(p, &seqs).await;
            got.extend(seqs);
        }
    };
    receive_until(&mut p, &mut got, 100).await;
    // Keeping up: one event at a time, each from the tail.
    for n in 101..=120 {
        publish(1).await.unwrap();
        receive_until(&mut p, &mut got, n).await;
    }
    // A burst beyond the window (64) and the tail: back to the store,
    // then to the tail again.
    publish(500).await.unwrap();
    receive_until(&mut p, &mut got, 620).await;
    publish(3).await.unwrap();
    receive_until(&mut p, &mut got, 623).await;

    assert_eq!(got, (1..=623).collect::<Vec<u64>>(), "in order, each once");
    let snapshot = snapshot_where(&running, |s| s.acked_floor == 624).await;
    assert_eq!(snapshot.window_used, 0);
    running.stop().await;
}
