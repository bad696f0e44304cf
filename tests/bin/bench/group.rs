//! Section `group`: processors sharing the keys (key ordering, core's
//! default `--partitions`), with fixed processor ids `p1`, `p2`, `p3`:
//!
//! * W2 (`sleep` events of `--w2-sleep-ms` over `--w2-keys` keys, one
//!   burst) with 1, 2 and 3 processors: events/s and CPU per event of core,
//!   of the processors together and of PostgreSQL;
//! * with three processors and the window full, `p1` killed (SIGKILL, not
//!   restarted), then in another run frozen (SIGSTOP, thawed after the
//!   drain): the time from the signal until the first result of a key `p1`
//!   owned (its partitions moved and their events processed elsewhere),
//!   and until the results rate is back at 90 % of the rate before;
//! * `p1` running a full window alone, then `p2` and `p3` joining: the time
//!   until no event waits for its partition to drain (each moved partition
//!   is paused only until the events `p1` holds of it are acknowledged),
//!   the longest any key that moved went without a result, and the
//!   results rate the second before and after.
//!
//! Results are timed from core's admin feed (each stored result with its
//! key), read as it comes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ackflow_proto::protocol::partitions::{DEFAULT_PARTITIONS, assign, partition_of};
use ackflow_proto::v1 as pb;
use ackflow_tests::{Core, Proc, start_processor, wait_for};

use super::cpu::CpuMeter;
use super::{Env, line, per_sec, rate, wait_drained};

const IDS: [&str; 3] = ["p1", "p2", "p3"];

pub async fn section_group(env: &Env, args: &super::Args) -> anyhow::Result<()> {
    for n in 1..=3 {
        w2(env, args, n).await?;
    }
    for signal in ["SIGKILL", "SIGSTOP"] {
        failover(env, args, signal).await?;
    }
    join(env, args).await
}

/// Processor `id` on default flags.
fn processor(env: &Env, core: &Core, id: &str) -> anyhow::Result<Proc> {
    start_processor(env.dir(), &core.grpc_url(), &["--processor-id", id])
}

/// Waits until core lists exactly `n` active processors.
async fn wait_active(core: &Core, n: usize) -> anyhow::Result<()> {
    wait_for(
        &format!("{n} processors active"),
        Duration::from_secs(60),
        || async {
            let s = core.snapshot().await.ok()?;
            (s.processors.len() == n).then_some(())
        },
    )
    .await
}

/// W2 with `n` processors.
async fn w2(env: &Env, args: &super::Args, n: usize) -> anyhow::Result<()> {
    let mut core = env.core_with(&[]).await?;
    let mut processors: Vec<Proc> = IDS[..n]
        .iter()
        .map(|id| processor(env, &core, id))
        .collect::<anyhow::Result<_>>()?;
    wait_active(&core, n).await?;
    let pids: Vec<u32> = processors.iter().filter_map(|p| p.pid()).collect();
    let cpu = CpuMeter::start_many(core.proc.pid().unwrap_or(0), &pids);
    let started = Instant::now();
    let events = args.w2_events;
    let last =
        super::w2::publish(core.ingest().await?, events, args.w2_keys, args.w2_sleep_ms).await?;
    wait_drained(&core, last).await?;
    let took = started.elapsed();
    let cpu = cpu.per_event(events);
    for p in &mut processors {
        p.terminate().await?;
    }
    core.proc.terminate().await?;
    line(
        &format!(
            "group: W2 with {n} processor{}, {events} sleep events over {} keys",
            if n == 1 { "" } else { "s" },
            args.w2_keys
        ),
        format!("{}; CPU per event: {cpu}", rate(per_sec(events, took))),
    );
    Ok(())
}

/// Stored results as the admin feed tells them: when each arrived here,
/// and its key.
#[derive(Clone, Default)]
struct Results(Arc<Mutex<Vec<(Instant, String)>>>);

impl Results {
    /// Reads core's feed until the task is aborted.
    fn follow(
        &self,
        mut admin: pb::admin_client::AdminClient<tonic::transport::Channel>,
    ) -> tokio::task::JoinHandle<()> {
        let results = self.clone();
        tokio::spawn(async move {
            let Ok(response) = admin.watch(pb::WatchRequest {}).await else {
                return;
            };
            let mut updates = response.into_inner();
            while let Ok(Some(update)) = updates.message().await {
                if let Some(pb::watch_response::Update::Feed(pb::FeedEvent {
                    kind: Some(pb::feed_event::Kind::Result(r)),
                    ..
                })) = update.update
                {
                    let mut all = results.0.lock().unwrap_or_else(|e| e.into_inner());
                    all.push((Instant::now(), r.key));
                }
            }
        })
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The keys `k0`.. of W2 that processor `id` owns among `members`.
fn keys_of(id: &str, members: &[&str], keys: u64) -> BTreeSet<String> {
    let owners = assign(DEFAULT_PARTITIONS, members);
    let me = members.iter().position(|m| *m == id).expect("a member");
    (0..keys)
        .map(|k| format!("k{k}"))
        .filter(|k| owners[partition_of(k, DEFAULT_PARTITIONS) as usize] == me)
        .collect()
}

/// Results per second in `[from, to)`.
fn rate_in(results: &[(Instant, String)], from: Instant, to: Instant) -> f64 {
    let n = results
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .count();
    n as f64 / to.duration_since(from).as_secs_f64().max(1e-9)
}

/// The first time from `since` on when the results rate over the 250 ms
/// before it is at least `target`.
fn back_to(results: &[(Instant, String)], since: Instant, target: f64) -> Option<Instant> {
    results
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at >= since + Duration::from_millis(250))
        .find(|at| rate_in(results, *at - Duration::from_millis(250), *at) >= target)
}

/// Waits until results have come for a second and hundreds of events are
/// in flight, with more to come.
async fn steady(core: &Core, results: &Results) -> anyhow::Result<()> {
    wait_for("a busy second", Duration::from_secs(120), || async {
        let s = core.snapshot().await.ok()?;
        let all = results.all();
        let first = all.first()?.0;
        (s.window_used >= 256 && first.elapsed() >= Duration::from_secs(1)).then_some(())
    })
    .await
}

async fn failover(env: &Env, args: &super::Args, signal: &str) -> anyhow::Result<()> {
    let mut core = env.core_with(&[]).await?;
    let mut processors: Vec<Proc> = IDS
        .iter()
        .map(|id| processor(env, &core, id))
        .collect::<anyhow::Result<_>>()?;
    wait_active(&core, 3).await?;
    let results = Results::default();
    let follow = results.follow(core.admin().await?);
    let events = args.crash_events;
    let keys = args.w2_keys;
    let publisher = super::crash::publish(&core, args, events);
    steady(&core, &results).await?;
    let snapshot = core.snapshot().await?;
    let in_flight = snapshot
        .processors
        .iter()
        .find(|p| p.processor_id == "p1")
        .map(|p| p.in_flight)
        .unwrap_or_default();
    let signalled = Instant::now();
    let rate_before = rate_in(
        &results.all(),
        signalled - Duration::from_secs(1),
        signalled,
    );
    match signal {
        "SIGKILL" => processors[0].kill().await,
        _ => processors[0].signal("-STOP")?,
    }
    let head = publisher.await??;
    wait_drained(&core, head).await?;
    let drained = signalled.elapsed();
    if signal == "SIGSTOP" {
        processors[0].signal("-CONT")?;
    }
    follow.abort();
    for p in &mut processors {
        p.kill().await;
    }
    core.proc.terminate().await?;

    let all = results.all();
    let theirs = keys_of("p1", &IDS, keys);
    // p1's keys' results after the signal: its acks already on the way
    // come first; then nothing until its events are processed elsewhere.
    // The longest stretch without one is the handover.
    let mut since = signalled;
    let mut gap: Option<(Instant, Instant)> = None;
    for (at, _) in all
        .iter()
        .filter(|(at, key)| *at > signalled && theirs.contains(key))
    {
        if gap.is_none_or(|(from, to)| at.duration_since(since) > to.duration_since(from)) {
            gap = Some((since, *at));
        }
        since = *at;
    }
    let full = back_to(&all, signalled, 0.9 * rate_before);
    let ms = |t: Option<Instant>| match t {
        Some(t) => format!("{} ms", t.duration_since(signalled).as_millis()),
        None => "never (drained first)".to_string(),
    };
    line(
        &format!("group ({signal} of p1 of 3): {events} sleep events over {keys} keys"),
        format!(
            "{} in flight, {in_flight} of them p1's ({} of the keys); results before it {}",
            snapshot.window_used,
            theirs.len(),
            rate(rate_before)
        ),
    );
    line(
        &format!("group ({signal} of p1 of 3): p1's keys without a result, longest"),
        match gap {
            Some((from, to)) => format!(
                "{} ms, from {} to {} ms after the signal",
                to.duration_since(from).as_millis(),
                from.duration_since(signalled).as_millis(),
                to.duration_since(signalled).as_millis()
            ),
            None => "no result of p1's keys after the signal".to_string(),
        },
    );
    line(
        &format!("group ({signal} of p1 of 3): signal → results at 90 % of the rate before"),
        ms(full),
    );
    line(
        &format!("group ({signal} of p1 of 3): signal → backlog drained"),
        format!("{} ms", drained.as_millis()),
    );
    Ok(())
}

async fn join(env: &Env, args: &super::Args) -> anyhow::Result<()> {
    let mut core = env.core_with(&[]).await?;
    let mut processors = vec![processor(env, &core, IDS[0])?];
    wait_active(&core, 1).await?;
    let results = Results::default();
    let follow = results.follow(core.admin().await?);
    // Four times the failover's events: the window is still full a second
    // after the join.
    let events = 4 * args.crash_events;
    let keys = args.w2_keys;
    let publisher = super::crash::publish(&core, args, events);
    steady(&core, &results).await?;
    let joined = Instant::now();
    for id in &IDS[1..] {
        processors.push(processor(env, &core, id)?);
    }
    wait_active(&core, 3).await?;
    let active = joined.elapsed();
    // Until nothing waits for a partition to drain.
    let mut peak_waiting = 0;
    let drained_moves = loop {
        let s = core.snapshot().await?;
        peak_waiting = peak_waiting.max(s.waiting);
        if s.waiting == 0 && s.processors.iter().all(|p| p.in_flight > 0) {
            break joined.elapsed();
        }
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(60),
            "moved partitions still waiting after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let head = publisher.await??;
    wait_drained(&core, head).await?;
    follow.abort();
    for p in &mut processors {
        p.terminate().await?;
    }
    core.proc.terminate().await?;

    let all = results.all();
    let stayed = keys_of("p1", &IDS, keys);
    // The longest a key that moved went without a result, from the join
    // until its first result elsewhere; and the same for the keys that
    // stayed, as the baseline.
    let mut last: BTreeMap<&str, Instant> = BTreeMap::new();
    let (mut moved_gap, mut stayed_gap) = (Duration::ZERO, Duration::ZERO);
    for (at, key) in &all {
        if *at >= joined {
            let since = last
                .get(key.as_str())
                .copied()
                .unwrap_or(joined)
                .max(joined);
            let gap = at.duration_since(since);
            match stayed.contains(key) {
                true => stayed_gap = stayed_gap.max(gap),
                false => moved_gap = moved_gap.max(gap),
            }
            if at.duration_since(joined) > Duration::from_secs(2) {
                break;
            }
        }
        last.insert(key, *at);
    }
    line(
        "group (join): p2 and p3 join p1 running a full window",
        format!(
            "active {} ms after their start; moved partitions drained (nothing waiting) {} ms after it; at most {peak_waiting} events waiting",
            active.as_millis(),
            drained_moves.as_millis()
        ),
    );
    line(
        "group (join): longest a key went without a result after the join, moved / stayed",
        format!("{} / {} ms", moved_gap.as_millis(), stayed_gap.as_millis()),
    );
    line(
        "group (join): results, the second before / the second after",
        format!(
            "{} / {}",
            rate(rate_in(&all, joined - Duration::from_secs(1), joined)),
            rate(rate_in(&all, joined, joined + Duration::from_secs(1)))
        ),
    );
    Ok(())
}
