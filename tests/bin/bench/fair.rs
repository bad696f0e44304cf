//! `fair`: does a slow webhook hold back only its own kind? 1,000 `sha256`
//! events published over REST as fast as the publishers go, first alone,
//! then interleaved with 1,000 events of a webhook kind whose endpoint (the
//! bench's own) takes 3 s per call. Each event has a key of its own. The
//! figure is the time from the first publish until the last `sha256` result
//! is stored; the slow kind is left to finish after it. Default flags
//! otherwise (SQLite or PostgreSQL, core's window, the processor's
//! `--concurrency` and `--webhook-concurrency`).

use std::sync::Arc;
use std::time::Duration;

use ackflow_core::model::now_us;
use ackflow_tests::{all_events, post_json, serve_router};
use axum::Router;
use axum::routing::post;
use tokio_util::sync::CancellationToken;

use super::{Args, Backend, Env, Pair};

/// Events of each kind.
const EVENTS: u64 = 1_000;
/// The slow endpoint's time per call.
const SLOW: Duration = Duration::from_secs(3);
/// Concurrent REST publishers.
const PUBLISHERS: u64 = 8;
/// Longest a run may take until its last `sha256` result.
const LIMIT: Duration = Duration::from_secs(180);

pub(super) async fn section_fair(backend: Backend, args: &Args) -> anyhow::Result<()> {
    println!(
        "  fair: {EVENTS} sha256 events, alone, then interleaved with {EVENTS} events of a webhook that takes {} s per call; time to the last sha256 result",
        SLOW.as_secs()
    );
    let mut figures = Vec::new();
    for with_slow in [false, true] {
        // A store of its own per run.
        let env = Env::new(backend, args.core_flags()).await?;
        figures.push(run(&env, with_slow).await?);
        env.finish().await?;
    }
    let (alone, mixed) = (figures[0], figures[1]);
    let show = |d: Option<Duration>| match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => format!("not within {} s", LIMIT.as_secs()),
    };
    println!("  | run | last sha256 result |");
    println!("  |---|---:|");
    println!("  | sha256 alone | {} |", show(alone));
    println!("  | interleaved with the slow webhook | {} |", show(mixed));
    Ok(())
}

/// Time from the first publish to the last `sha256` result, if within
/// [`LIMIT`].
async fn run(env: &Env, with_slow: bool) -> anyhow::Result<Option<Duration>> {
    let cancel = CancellationToken::new();
    let slow = Router::new().route(
        "/slow",
        post(|| async {
            tokio::time::sleep(SLOW).await;
            "done"
        }),
    );
    let endpoint = serve_router(slow, cancel.clone()).await?;
    let hook = format!("slow=http://{endpoint}/slow");
    let core = env.core_with(&[]).await?;
    let pair = Pair::with_processor_flags(env, core, &["--webhook", &hook]).await?;
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..EVENTS)
            .flat_map(|n| {
                let sha = format!(r#"{{"kind":"sha256","key":"s{n}","payload":"event {n}"}}"#);
                let slow = format!(r#"{{"kind":"slow","key":"w{n}","payload":{n}}}"#);
                if with_slow {
                    vec![slow, sha]
                } else {
                    vec![sha]
                }
            })
            .collect(),
    );
    let first_publish_us = now_us();
    let mut publishers = tokio::task::JoinSet::new();
    for client in 0..PUBLISHERS {
        let (http, bodies) = (pair.core.http, bodies.clone());
        publishers.spawn(async move {
            for body in bodies
                .iter()
                .skip(client as usize)
                .step_by(PUBLISHERS as usize)
            {
                let (status, text) = post_json(http, "/v1/events", body).await?;
                anyhow::ensure!(status == 202, "publish failed: {status} {text}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(published) = publishers.join_next().await {
        published??;
    }
    let deadline = tokio::time::Instant::now() + LIMIT;
    let last = loop {
        let mut done = 0;
        let mut last_us = first_publish_us;
        for view in all_events(&env.store_url()).await? {
            if view.event.kind == "sha256"
                && let Some(result) = view.result
            {
                done += 1;
                last_us = last_us.max(result.stored_at_us);
            }
        }
        if done == EVENTS {
            break Some(Duration::from_micros(
                (last_us - first_publish_us).max(0) as u64
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    pair.stop().await?;
    cancel.cancel();
    Ok(last)
}
