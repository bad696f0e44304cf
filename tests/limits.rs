//! Resource limits against the real core binary: what a client can make
//! core hold in memory, and what it cannot keep others from (reads of
//! large events, Watch streams, idle and excess REST connections).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;
use ackflow_tests::{
    Core, PgDb, all_events, bin, free_port, http_exchange, http_request, post_json,
    start_processor, wait_for,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Events of about 1 MiB each (under the default --max-request-bytes of
/// 1 MiB with the JSON around them): 256, or `ACKFLOW_LARGE_EVENTS` (a
/// page holds four whatever their number; 1,000 takes minutes to publish).
fn large_events() -> usize {
    std::env::var("ACKFLOW_LARGE_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// Core's peak RSS may not pass this while four clients read every large
/// event at once.
const PEAK_BOUND_MIB: u64 = 512;

/// Nor after publishing them with no processor (measured: about 155 MiB:
/// the in-memory tail holds 64 MiB of them, the backlog reader 16 MiB
/// read ahead). Before the reader was bounded in bytes it held up to 3,072
/// events, whatever their size: 331 MiB for 256 events, 1.1 GiB for 1,000.
const PUBLISH_PEAK_BOUND_MIB: u64 = 256;

/// Nor may the reads add more than this to the peak (measured: about 45
/// MiB). Before payloads were written as stored, four such reads of 200
/// events took core from 265 MB to a 13.4 GB peak.
const READ_GROWTH_BOUND_MIB: u64 = 160;

/// Elements of each large event's payload.
const LARGE_ELEMENTS: usize = 500_000;

/// The payload of large event `i` (0-based): a JSON array of numbers (about
/// 1 MB), the shape that costs most as a JSON tree, led by `i` so pages can
/// be checked.
fn large_payload(i: usize) -> String {
    format!("[{i}{}]", ",0".repeat(LARGE_ELEMENTS - 1))
}

/// Peak resident set size of process `pid`, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))
}

/// Checks one event's JSON against what was published (`seq_of[i]` is the
/// seq of large event `i`); returns its seq. The payload is checked by its
/// length and its leading index (comparing every element would take longer
/// than the read in this unoptimised test).
fn check_event(event: &Value, seq_of: &[u64]) -> anyhow::Result<u64> {
    let seq = event["seq"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no seq"))?;
    anyhow::ensure!(event["kind"] == "large" && event["state"] == "pending");
    let payload = event["payload"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("seq {seq}: the payload is not an array"))?;
    let i = payload
        .first()
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| anyhow::anyhow!("seq {seq}: no leading index"))?;
    anyhow::ensure!(seq_of.get(i) == Some(&seq), "payload {i} at seq {seq}");
    anyhow::ensure!(
        payload.len() == LARGE_ELEMENTS && payload.last() == Some(&Value::from(0)),
        "payload of seq {seq}: {} elements, published {LARGE_ELEMENTS}",
        payload.len()
    );
    Ok(seq)
}

/// Reads every event page by page with `limit=1000`, checking each against
/// what was published; returns the number of pages.
async fn read_all(http: SocketAddr, seq_of: Arc<Vec<u64>>) -> anyhow::Result<usize> {
    let mut after = 0;
    let mut pages = 0;
    let mut next_seq = 1;
    loop {
        let path = format!("/v1/events?after={after}&limit=1000");
        let (status, body) = http_request(http, "GET", &path, None).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {body:.200}");
        // `FromStr` is compiled with serde_json's optimisation; a generic
        // `from_str::<T>` would be compiled here, unoptimised, and take a
        // minute over the gigabyte the four readers get.
        let page: Value = body.parse()?;
        let events = page["events"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no events array"))?;
        let Some(last) = page["next_after"].as_u64() else {
            anyhow::ensure!(
                events.is_empty() && page["next_after"].is_null(),
                "events without next_after"
            );
            break;
        };
        pages += 1;
        for event in events {
            let seq = check_event(event, &seq_of)?;
            anyhow::ensure!(seq == next_seq, "seq {seq} where {next_seq} was due");
            next_seq += 1;
        }
        anyhow::ensure!(
            last == next_seq - 1,
            "next_after {last} is not the page's last seq"
        );
        after = last;
    }
    anyhow::ensure!(
        next_seq == seq_of.len() as u64 + 1,
        "read up to seq {next_seq}, expected {} events",
        seq_of.len()
    );
    Ok(pages)
}

/// Four parallel `GET /v1/events?limit=1000` over 256 events of 1 MiB
/// (see [`large_events`])
/// each: pages are cut by bytes (the client continues from `next_after`),
/// every event comes back as published, and core's peak RSS stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_reads_of_large_events_keep_memory_bounded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &[]).await?;
    let pid = core
        .proc
        .pid()
        .ok_or_else(|| anyhow::anyhow!("core exited"))?;
    let http = core.http;
    let started = Instant::now();
    let large = large_events();

    // Four publishers, each its share of the events, in order.
    let mut publishers = Vec::new();
    for lane in 0..4 {
        publishers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in (lane..large).step_by(4) {
                let body = format!(r#"{{"kind":"large","payload":{}}}"#, large_payload(i));
                let (status, answer) = post_json(http, "/v1/events", &body).await?;
                anyhow::ensure!(status == 202, "publish {i}: {status} {answer}");
                let seq = serde_json::from_str::<serde_json::Value>(&answer)?["seq"]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("no seq in {answer}"))?;
                seqs.push((i, seq));
            }
            Ok(seqs)
        }));
    }
    let mut seq_of = vec![0; large];
    for publisher in publishers {
        for (i, seq) in publisher.await?? {
            seq_of[i] = seq;
        }
    }
    let seq_of = Arc::new(seq_of);
    let published = started.elapsed();
    let before = peak_rss_kib(pid)?;

    let mut readers = Vec::new();
    for _ in 0..4 {
        readers.push(tokio::spawn(read_all(http, seq_of.clone())));
    }
    let mut pages = Vec::new();
    for reader in readers {
        pages.push(reader.await??);
    }
    let after = peak_rss_kib(pid)?;
    eprintln!(
        "published {large} × 1 MB in {published:?}; read 4 × all in {:?} ({pages:?} pages); \
         core peak RSS {} MiB after publishing, {} MiB after the reads",
        started.elapsed() - published,
        before / 1024,
        after / 1024
    );
    // 1 MiB events at a 4 MiB page bound: at most four to a page.
    for &n in &pages {
        anyhow::ensure!(n >= large / 4, "{n} pages: not cut by bytes");
    }
    anyhow::ensure!(
        before / 1024 < PUBLISH_PEAK_BOUND_MIB,
        "publishing took core's peak RSS to {} MiB (bound {PUBLISH_PEAK_BOUND_MIB} MiB)",
        before / 1024
    );
    anyhow::ensure!(
        after / 1024 < PEAK_BOUND_MIB,
        "core's peak RSS reached {} MiB (bound {PEAK_BOUND_MIB} MiB)",
        after / 1024
    );
    anyhow::ensure!(
        (after - before) / 1024 < READ_GROWTH_BOUND_MIB,
        "the reads took core's peak RSS from {} to {} MiB (bound: +{READ_GROWTH_BOUND_MIB} MiB)",
        before / 1024,
        after / 1024
    );

    // One event by seq: the stored payload, as published.
    let (status, body) = http_request(http, "GET", "/v1/events/7", None).await?;
    anyhow::ensure!(status == 200, "GET /v1/events/7: {status}");
    let event: Value = body.parse()?;
    anyhow::ensure!(check_event(&event, &seq_of)? == 7);
    Ok(())
}

/// `--max-watchers 2`: a third `Admin.Watch` is refused with
/// RESOURCE_EXHAUSTED while two are open, and served once one of them
/// closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--max-watchers", "2"]).await?;
    let watch = || async {
        let mut admin = core.admin().await?;
        let mut stream = admin.watch(pb::WatchRequest {}).await?.into_inner();
        // Open means served: the first snapshot arrived.
        let first = tokio::time::timeout(Duration::from_secs(10), stream.message()).await??;
        anyhow::ensure!(first.is_some(), "the watch ended at once");
        Ok::<_, anyhow::Error>(stream)
    };
    let first = watch().await?;
    let _second = watch().await?;
    let mut admin = core.admin().await?;
    let refused = admin
        .watch(pb::WatchRequest {})
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a third watch was served"))?;
    anyhow::ensure!(
        refused.code() == tonic::Code::ResourceExhausted
            && refused.message().contains("--max-watchers"),
        "third watch: {refused:?}"
    );
    // A closed watch gives its place back.
    drop(first);
    let _third = wait_for(
        "a place for a third watch",
        Duration::from_secs(10),
        || async { watch().await.ok() },
    )
    .await?;
    Ok(())
}

/// `--http-header-timeout-s` in the idle-connection test: longer than
/// opening the 2,000 connections takes.
const HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// 2,000 connections that send nothing or half a request do not keep a
/// publish from being served at once, and core closes each of them once
/// `--http-header-timeout-s` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_block_a_publish() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let timeout_flag = HEADER_TIMEOUT.as_secs().to_string();
    let core = Core::start(
        dir.path(),
        None,
        &["--http-header-timeout-s", &timeout_flag],
    )
    .await?;
    let first_connect = Instant::now();
    // Opened 50 at a time; still, 2,000 connects to core take 5 to 8 s on
    // a loaded 2-core machine, hence the long header timeout.
    let mut idle = Vec::new();
    for chunk in 0..40 {
        let mut opening = tokio::task::JoinSet::new();
        for i in 0..50 {
            let http = core.http;
            opening.spawn(async move {
                let mut stream = TcpStream::connect(http).await?;
                if (chunk + i) % 2 == 1 {
                    stream
                        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: core\r\nContent-Ty")
                        .await?;
                }
                Ok::<_, std::io::Error>(stream)
            });
        }
        while let Some(stream) = opening.join_next().await {
            idle.push(stream??);
        }
    }
    let opened = first_connect.elapsed();
    let started = Instant::now();
    let (status, answer) = tokio::time::timeout(
        Duration::from_secs(2),
        post_json(core.http, "/v1/events", r#"{"kind":"x","payload":1}"#),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the publish got no answer within 2 s"))??;
    let took = started.elapsed();
    anyhow::ensure!(status == 202, "publish: {status} {answer}");
    // Only a publish answered while every idle connection was still open
    // shows anything.
    anyhow::ensure!(
        first_connect.elapsed() < HEADER_TIMEOUT,
        "opening the connections took {opened:?}, longer than the header timeout"
    );
    // Core closes each one (EOF or reset) after the header timeout.
    for (i, stream) in idle.iter_mut().enumerate() {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(HEADER_TIMEOUT * 2, stream.read_to_end(&mut rest)).await;
        anyhow::ensure!(
            closed.is_ok(),
            "connection {i} still open after {:?}",
            HEADER_TIMEOUT * 2
        );
    }
    eprintln!(
        "2000 idle connections opened in {opened:?}; a publish answered in {took:?}; \
         all closed by core {:?} after the first",
        first_connect.elapsed()
    );
    Ok(())
}

/// `--window-bytes 8 MiB` with 1 MB events and the processor paused: core
/// sends events until their payloads fill the budget (at most one event
/// past 8 MiB), not until the window of 1,024 events is full; on resume
/// every event is processed. Before the budget, all 40 were in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_bytes_in_flight_are_bounded() -> anyhow::Result<()> {
    const EVENTS: u64 = 40;
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--window-bytes", "8388608"]).await?;
    let mut processor = start_processor(dir.path(), &core.grpc_url(), &[])?;
    let core_ref = &core;
    wait_for(
        "the processor to connect",
        Duration::from_secs(30),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            let connected = s.processor?.connection == pb::ProcessorConnection::Running as i32;
            connected.then_some(())
        },
    )
    .await?;
    let mut admin = core.admin().await?;
    admin.pause(pb::PauseRequest {}).await?;
    for i in 0..EVENTS {
        // A JSON string of about 1 MB.
        let body = format!(
            r#"{{"kind":"sha256","payload":"{i} {}"}}"#,
            "x".repeat(1_000_000)
        );
        let (status, answer) = post_json(core.http, "/v1/events", &body).await?;
        anyhow::ensure!(status == 202, "publish {i}: {status} {answer}");
    }
    // Until core has retransmitted (the window has stood still for an RTO),
    // no snapshot may show more than 9 events above the floor.
    let most = Arc::new(AtomicU64::new(0));
    wait_for("a retransmit while paused", Duration::from_secs(60), || {
        let most = most.clone();
        async move {
            let s = core_ref.snapshot().await.ok()?;
            most.fetch_max(s.next_to_send - s.acked_floor, Ordering::Relaxed);
            (s.totals?.retransmits > 0).then_some(())
        }
    })
    .await?;
    let most = most.load(Ordering::Relaxed);
    anyhow::ensure!(
        (1..=9).contains(&most),
        "{most} events in flight with 8 MiB of 1 MB payloads"
    );
    admin.resume(pb::ResumeRequest {}).await?;
    wait_for(
        "every event processed",
        Duration::from_secs(60),
        || async move {
            let s = core_ref.snapshot().await.ok()?;
            (s.acked_floor > EVENTS).then_some(())
        },
    )
    .await?;
    processor.terminate().await?;
    Ok(())
}

/// `--http-body-timeout-s 1`: a client that sends a header and then only
/// part of the body it announced is answered 408 naming the flag, and
/// nothing is stored; a whole publish on another connection is served
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_is_answered_408() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--http-body-timeout-s", "1"]).await?;
    let body = br#"{"kind":"slow","payload":[1,2,3]}"#;
    let mut slow = TcpStream::connect(core.http).await?;
    slow.write_all(
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: core\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    slow.write_all(&body[..10]).await?;
    let (status, answer) =
        post_json(core.http, "/v1/events", r#"{"kind":"fast","payload":1}"#).await?;
    anyhow::ensure!(status == 202, "the whole publish: {status} {answer}");
    // Core answers once the body timeout has passed, and closes.
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut response))
        .await
        .map_err(|_| anyhow::anyhow!("no answer to the slow body within 20 s"))??;
    let response = String::from_utf8_lossy(&response);
    anyhow::ensure!(
        response.starts_with("HTTP/1.1 408 "),
        "the slow body: {response}"
    );
    anyhow::ensure!(
        response.contains("--http-body-timeout-s"),
        "the 408 names the flag: {response}"
    );
    let (status, page) = http_request(core.http, "GET", "/v1/events", None).await?;
    anyhow::ensure!(status == 200, "list: {status} {page}");
    let page: Value = serde_json::from_str(&page)?;
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no events array in {page}"))?
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    anyhow::ensure!(kinds == ["fast"], "stored: {kinds:?}");
    Ok(())
}

/// Under an open-file limit of 512 (soft and hard), below the default
/// `--http-max-connections` of 4096, core still starts and serves, and
/// says at start which limit to raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_is_reported_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let grpc = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("core.log");
    let mut core = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 512 && exec "$0" "$@""#)
        .arg(bin("e2e-core"))
        .args([
            "--http-addr",
            &http.to_string(),
            "--grpc-addr",
            &grpc,
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::OpenOptions::new().append(true).open(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    wait_for(
        "core to serve a publish",
        Duration::from_secs(60),
        || async {
            post_json(http, "/v1/events", r#"{"kind":"x","payload":1}"#)
                .await
                .ok()
                .filter(|(status, _)| *status == 202)
        },
    )
    .await?;
    core.start_kill()?;
    core.wait().await?;
    let text = std::fs::read_to_string(&log)?;
    let warning = text
        .lines()
        .find(|l| l.contains("open-file limit is 512"))
        .ok_or_else(|| anyhow::anyhow!("no open-file warning in the log:\n{text}"))?;
    anyhow::ensure!(
        warning.contains("WARN") && warning.contains("--http-max-connections (4096)"),
        "{warning}"
    );
    Ok(())
}

/// `--http-max-connections 8`: with eight connections open, the next one
/// is answered 503 with Retry-After; once they close, publishes are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(dir.path(), None, &["--http-max-connections", "8"]).await?;
    // Readiness polling used connections too: wait until a place is free,
    // then hold all eight.
    let publish = || post_json(core.http, "/v1/events", r#"{"kind":"x","payload":1}"#);
    wait_for("a free connection", Duration::from_secs(10), || async {
        matches!(publish().await, Ok((202, _))).then_some(())
    })
    .await?;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(core.http).await?);
    }
    // The eight are accepted in order; the ninth is over the cap. Core
    // answers it at once, without reading a request, and closes it: a
    // request sent first can meet the closed socket, whose reset then
    // discards the answer unread (this test failed that way under load), so
    // the ninth only listens. Under the cap core would wait for a request:
    // the read times out and the next try comes.
    let refused = wait_for("a 503 over the cap", Duration::from_secs(10), || async {
        let mut tcp = TcpStream::connect(core.http).await.ok()?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_millis(500), tcp.read_to_end(&mut answer))
            .await
            .ok()?
            .ok()?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        answer.starts_with("HTTP/1.1 503").then_some(answer)
    })
    .await?;
    anyhow::ensure!(
        refused.contains("Retry-After: 1\r\n") && refused.contains("--http-max-connections"),
        "503 without Retry-After or reason: {refused}"
    );
    drop(held);
    wait_for(
        "a publish after the connections closed",
        Duration::from_secs(10),
        || async { matches!(publish().await, Ok((202, _))).then_some(()) },
    )
    .await?;
    Ok(())
}

/// Payload of queued publish `i`: about 700 KB, so two fit in 2 MiB and a
/// third does not; led by `i` to tell them apart in the store.
fn queued_payload(i: usize) -> String {
    format!("[{i}{}]", ",0".repeat(350_000))
}

/// `--ingest-queue-bytes 2097152` with the events table locked: the first
/// ~700 KB publish commits (blocked on the lock), the second waits in the
/// queue, and publishes beyond the byte bound get 503 with Retry-After at
/// once, although the queue has room for 10,000 requests; nothing of them
/// is stored. Once the lock is released the held publishes commit and a new
/// one is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_bytes_are_bounded() -> anyhow::Result<()> {
    use sqlx::Connection;
    let dir = tempfile::tempdir()?;
    let db = PgDb::create("queue_bytes").await?;
    let core = Core::start(
        dir.path(),
        Some(&db.url),
        &["--ingest-queue-bytes", "2097152"],
    )
    .await?;
    let http = core.http;
    let publish = move |i: usize| async move {
        let body = format!(r#"{{"kind":"big","payload":{}}}"#, queued_payload(i));
        http_exchange(
            http,
            "POST",
            "/v1/events",
            Some(("application/json", body.as_bytes())),
        )
        .await
    };

    let mut locker = sqlx::PgConnection::connect(&db.url).await?;
    sqlx::query("BEGIN").execute(&mut locker).await?;
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await?;
    let mut publishes: Vec<_> = (0..4).map(|i| (i, tokio::spawn(publish(i)))).collect();
    // Two fit (one committing, one queued); the other two are refused.
    wait_for("two publishes answered", Duration::from_secs(60), || {
        let done = publishes.iter().filter(|(_, p)| p.is_finished()).count();
        async move { (done >= 2).then_some(()) }
    })
    .await?;
    let (refused, held): (Vec<_>, Vec<_>) = publishes.drain(..).partition(|(_, p)| p.is_finished());
    anyhow::ensure!(
        refused.len() == 2,
        "{} publishes answered while the store was locked (2 fit in the bound)",
        refused.len()
    );
    for (i, p) in refused {
        let answer = p.await??;
        anyhow::ensure!(
            answer.status == 503
                && answer.header("retry-after").is_some()
                && answer.header("content-type") == Some("application/problem+json"),
            "publish {i} over the byte bound: {} {:?} {}",
            answer.status,
            answer.headers,
            answer.body
        );
    }
    let (status, metrics) = http_request(http, "GET", "/metrics", None).await?;
    anyhow::ensure!(
        status == 200
            && metrics
                .lines()
                .any(|l| l.starts_with("ackflow_publish_rejected_total")
                    && l.contains(r#"reason="queue_full""#)
                    && l.ends_with(" 2")),
        "the refusals are not counted as queue_full"
    );

    sqlx::query("COMMIT").execute(&mut locker).await?;
    let mut accepted = Vec::new();
    for (i, p) in held {
        let answer = p.await??;
        anyhow::ensure!(
            answer.status == 202,
            "held publish {i}: {} {}",
            answer.status,
            answer.body
        );
        accepted.push(i);
    }
    wait_for(
        "a publish accepted after the lock was released",
        Duration::from_secs(30),
        || async { publish(4).await.ok().filter(|a| a.status == 202) },
    )
    .await?;
    accepted.push(4);

    let stored: Vec<usize> = all_events(&db.url)
        .await?
        .iter()
        .map(|v| {
            let text = std::str::from_utf8(&v.event.payload)?;
            let lead = text.trim_start_matches('[').split(',').next().unwrap_or("");
            Ok(lead.parse()?)
        })
        .collect::<anyhow::Result<_>>()?;
    accepted.sort_unstable();
    let mut sorted = stored.clone();
    sorted.sort_unstable();
    anyhow::ensure!(
        sorted == accepted,
        "stored {stored:?}, accepted {accepted:?}"
    );
    drop(core);
    db.drop_db().await
}
