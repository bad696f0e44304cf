//! Scrapes `/metrics` of core and of the processor after a short run and
//! checks that the numbers match what the run did.

use std::net::SocketAddr;
use std::time::Duration;

use ackflow_proto::v1 as pb;
use ackflow_tests::{Core, free_port, http_request, post_json, start_processor, wait_for};

/// The value of the sample `name` (with its labels, exactly as exported).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

async fn scrape(addr: SocketAddr) -> String {
    match http_request(addr, "GET", "/metrics", None).await {
        Ok((200, body)) => body,
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_match_the_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = Core::start(
        dir.path(),
        None,
        &["--rto-min-ms", "100", "--rto-initial-ms", "100"],
    )
    .await?;
    let processor_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let metrics_arg = processor_metrics.to_string();
    let mut processor = start_processor(
        dir.path(),
        &core.grpc_url(),
        &["--metrics-addr", &metrics_arg, "--processor-id", "m"],
    )?;
    let mut ingest = core.ingest().await?;
    for n in 0..100 {
        let kind = if n % 10 == 0 { "fail" } else { "sum" };
        ingest
            .publish(pb::PublishRequest {
                kind: kind.into(),
                payload: format!("[{n}]").into_bytes(),
                idempotency_key: if n == 1 { "m-1".into() } else { String::new() },
                ..Default::default()
            })
            .await?;
    }
    let (status, _) = post_json(core.http, "/v1/events", r#"{"kind":""}"#).await?;
    assert_eq!(status, 422);
    let (status, _) = post_json(core.http, "/v1/events", "{").await?;
    assert_eq!(status, 400);
    // An idempotency key reused with another payload: counted once, as a
    // conflict (by the ingest writer), not also as invalid.
    let (status, _) = post_json(
        core.http,
        "/v1/events",
        r#"{"kind":"sum","payload":[2],"idempotency_key":"m-1"}"#,
    )
    .await?;
    assert_eq!(status, 422);

    let text = wait_for(
        "metrics after 100 results",
        Duration::from_secs(30),
        || async {
            let text = scrape(core.http).await;
            (sample(&text, "ackflow_results_total{status=\"ok\"}") == Some(90.0)).then_some(text)
        },
    )
    .await?;
    assert_eq!(sample(&text, "ackflow_publish_accepted_total"), Some(100.0));
    assert_eq!(sample(&text, "ackflow_events_stored_total"), Some(100.0));
    assert_eq!(sample(&text, "ackflow_events_delivered_total"), Some(100.0));
    assert_eq!(sample(&text, "ackflow_acks_total"), Some(100.0));
    // The same per processor: one, so all of them.
    assert_eq!(
        sample(&text, "ackflow_acks_per_processor_total{processor=\"m\"}"),
        Some(100.0)
    );
    assert_eq!(
        sample(&text, "ackflow_in_flight_per_processor{processor=\"m\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "ackflow_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "ackflow_results_total{status=\"failed\"}"),
        Some(10.0)
    );
    assert_eq!(
        sample(&text, "ackflow_publish_rejected_total{reason=\"invalid\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "ackflow_publish_rejected_total{reason=\"malformed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "ackflow_publish_rejected_total{reason=\"conflict\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "ackflow_head_seq"), Some(100.0));
    assert_eq!(sample(&text, "ackflow_window"), Some(1024.0));
    assert_eq!(sample(&text, "ackflow_session_open"), Some(1.0));
    assert_eq!(
        sample(&text, "ackflow_publish_to_result_seconds_count"),
        Some(100.0)
    );
    assert!(
        sample(&text, "ackflow_store_commit_seconds_count{op=\"append\"}").unwrap_or(0.0) >= 1.0
    );
    assert!(text.contains("ackflow_rto_seconds"));

    let processor_text = wait_for("processor metrics", Duration::from_secs(30), || async {
        let text = scrape(processor_metrics).await;
        (sample(
            &text,
            "ackflow_processor_processed_total{algorithm=\"sum\",status=\"ok\"}",
        ) == Some(90.0))
        .then_some(text)
    })
    .await?;
    assert_eq!(
        sample(
            &processor_text,
            "ackflow_processor_processed_total{algorithm=\"fail\",status=\"failed\"}"
        ),
        Some(10.0)
    );

    // Paused: retransmits and duplicate drops must show up.
    let mut admin = core.admin().await?;
    admin.pause(pb::PauseRequest {}).await?;
    ingest
        .publish(pb::PublishRequest {
            kind: "sum".into(),
            payload: b"[1]".to_vec(),
            ..Default::default()
        })
        .await?;
    let text = wait_for(
        "retransmits while paused",
        Duration::from_secs(30),
        || async {
            let text = scrape(core.http).await;
            let retransmits = sample(&text, "ackflow_retransmits_total")?;
            let drops = sample(&text, "ackflow_duplicate_drops_total")?;
            (retransmits > 0.0 && drops > 0.0).then_some(text)
        },
    )
    .await?;
    assert_eq!(sample(&text, "ackflow_session_paused"), Some(1.0));
    assert_eq!(sample(&text, "ackflow_in_flight"), Some(1.0));
    wait_for(
        "processor duplicate drops",
        Duration::from_secs(30),
        || async {
            let text = scrape(processor_metrics).await;
            (sample(&text, "ackflow_processor_duplicate_drops_total")? > 0.0).then_some(())
        },
    )
    .await?;
    processor.terminate().await?;
    Ok(())
}
