//! `failover` (PostgreSQL only): two cores on one database, `--core-id a`
//! leading and `b` standing by, and a processor given both. The leader is
//! sent `kill -9`, then (in a second set of runs) `SIGSTOP`; each run times,
//! from the signal, until the other core answers `/readyz` 200, accepts a
//! publish, and has that event's result stored. The signalled core is then
//! brought back (a stopped one thaws and exits, deposed) and stands by, so
//! the runs alternate the leader. Default flags but the lease
//! (`--failover-lease-ms`).

use std::time::{Duration, Instant};

use ackflow_tests::{Core, http_request, post_json, start_processor, wait_for};

use super::{Args, Backend, Env};

/// Longest a run may take to reach each point.
const LIMIT: Duration = Duration::from_secs(60);

pub(super) async fn section_failover(backend: Backend, args: &Args) -> anyhow::Result<()> {
    if backend != Backend::Postgres {
        println!("  failover: PostgreSQL only (one core per SQLite file)");
        return Ok(());
    }
    let lease = args.failover_lease_ms.to_string();
    println!(
        "  failover: two cores, lease {lease} ms, a processor given both; {} runs per signal",
        args.failover_runs
    );
    let env = Env::new(backend, args.core_flags()).await?;
    let url = env.core_url().expect("PostgreSQL").to_string();
    let flags = |id: &'static str| {
        let mut flags = vec![
            "--core-id".to_string(),
            id.to_string(),
            "--lease-ms".into(),
            lease.clone(),
        ];
        flags.extend(env.core_args.iter().cloned());
        flags
    };
    let (a_flags, b_flags) = (flags("a"), flags("b"));
    let a_refs: Vec<&str> = a_flags.iter().map(String::as_str).collect();
    let b_refs: Vec<&str> = b_flags.iter().map(String::as_str).collect();
    let mut cores = [
        Core::start(env.dir(), Some(&url), &a_refs).await?,
        Core::start_standby(env.dir(), &url, &b_refs, "core-b.log").await?,
    ];
    let urls = format!("{},{}", cores[0].grpc_url(), cores[1].grpc_url());
    let mut processor = start_processor(env.dir(), &urls, &[])?;
    let mut leader = 0;
    let mut n = 0u64;
    for signal in ["-KILL", "-STOP"] {
        for run in 1..=args.failover_runs {
            n += 1;
            publish(&cores[leader], n).await?;
            cores[leader].wait_resolved(n, LIMIT).await?;
            let other = 1 - leader;
            cores[leader].proc.signal(signal)?;
            let signalled = Instant::now();
            cores[other].wait_ready().await?;
            let ready = signalled.elapsed();
            n += 1;
            let core = &cores[other];
            wait_for("a publish accepted", LIMIT, || async move {
                publish(core, n).await.ok()
            })
            .await?;
            let accepted = signalled.elapsed();
            wait_for("its result stored", LIMIT, || async move {
                let (status, body) =
                    http_request(core.http, "GET", &format!("/v1/events/{n}"), None)
                        .await
                        .ok()?;
                (status == 200 && body.contains(r#""result":{"#)).then_some(())
            })
            .await?;
            let stored = signalled.elapsed();
            println!(
                "    {} run {run}: ready {} ms, publish accepted {} ms, result stored {} ms",
                &signal[1..],
                ready.as_millis(),
                accepted.as_millis(),
                stored.as_millis()
            );
            let old = &mut cores[leader];
            if signal == "-STOP" {
                old.proc.signal("-CONT")?;
                tokio::time::timeout(LIMIT, old.proc.wait()).await??;
            }
            old.restart_either().await?;
            leader = other;
        }
    }
    processor.terminate().await?;
    for core in &mut cores {
        core.proc.terminate().await?;
    }
    env.finish().await
}

/// Publishes event `n` (its idempotency key is its number).
async fn publish(core: &Core, n: u64) -> anyhow::Result<()> {
    let body = format!(r#"{{"kind":"sum","payload":[{n}],"idempotency_key":"failover-{n}"}}"#);
    let (status, text) = post_json(core.http, "/v1/events", &body).await?;
    anyhow::ensure!(
        status == 202 && text.contains(&format!(r#""seq":{n}"#)),
        "publish {n}: {status} {text}"
    );
    Ok(())
}
