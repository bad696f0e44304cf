//! Section `crash`: what losing the processor costs. W2's events (`sleep`
//! events of `--w2-sleep-ms` over `--w2-keys` keys, default flags) are
//! published as one burst; while the window is full, the active processor
//! is lost, three ways:
//!
//! * `restart`: killed with SIGKILL and a new one started at once (as a
//!   supervisor would);
//! * `standby, SIGKILL`: three processors connected, two of them hot
//!   standbys (`--partitions 1`: one processor owns every key, the others
//!   none; sharing the keys is `group.rs`); the active one is killed and
//!   nothing is restarted;
//! * `standby, SIGSTOP`: the same, but the active one is frozen, its
//!   connection left open (a hung host), and thawed only after the drain.
//!
//! Every event in flight then becomes a crash suspect (see
//! `proto/src/protocol/suspects.rs`). Printed per way: the in-flight events
//! at the signal, the results rate before it, and the time from the signal
//! until another life is connected, until its first result is stored (the
//! floor moves; the admin snapshot is refreshed every 200 ms, which bounds
//! the resolution), until its suspects are resolved, and until the results
//! rate is back to 90 % of its rate before.
//!
//! And `join`: two processors join as hot standbys while the active one
//! runs a full window; printed: the results rate the second before and
//! the second after, and the longest the floor stood still in each.

use std::time::{Duration, Instant};

use ackflow_proto::v1 as pb;
use ackflow_tests::{Core, Proc, http_request, start_processor, wait_for};

use super::{Env, line, measure::sample, rate};

/// How often the admin snapshot is read (core refreshes it every 200 ms).
const POLL: Duration = Duration::from_millis(50);

/// How the active processor is lost.
#[derive(Clone, Copy, PartialEq)]
enum Loss {
    /// SIGKILL, and a new processor started at once.
    Restart,
    /// SIGKILL, two hot standbys waiting.
    StandbyKill,
    /// SIGSTOP, two hot standbys waiting.
    StandbyStop,
}

impl Loss {
    fn name(self) -> &'static str {
        match self {
            Loss::Restart => "restart",
            Loss::StandbyKill => "standby, SIGKILL",
            Loss::StandbyStop => "standby, SIGSTOP",
        }
    }
}

/// One snapshot as the section sees it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    floor: u64,
    window_used: u32,
    suspects: u32,
    session: u64,
    connected: bool,
}

impl Sample {
    fn of(s: &pb::Snapshot) -> Self {
        let processor = s.processor.clone().unwrap_or_default();
        Self {
            at: Instant::now(),
            floor: s.acked_floor,
            window_used: s.window_used,
            suspects: s.suspects,
            session: processor.session,
            connected: processor.connection == pb::ProcessorConnection::Running as i32,
        }
    }
}

/// Results per second between two samples.
fn rate_between(a: &Sample, b: &Sample) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    b.floor.saturating_sub(a.floor) as f64 / secs
}

pub async fn section_crash(env: &Env, args: &super::Args) -> anyhow::Result<()> {
    for loss in [Loss::Restart, Loss::StandbyKill, Loss::StandbyStop] {
        run(env, args, loss).await?;
    }
    join(env, args).await
}

/// Waits for the steady state: a full window, and a second of results to
/// rate. Returns the last sample and the results rate over that second.
async fn steady_state(core: &Core, events: u64) -> anyhow::Result<(Sample, f64)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut samples: Vec<Sample> = Vec::new();
    let steady = loop {
        anyhow::ensure!(Instant::now() < deadline, "no full window within 120 s");
        let sample = Sample::of(&core.snapshot().await?);
        let a_second = samples
            .first()
            .is_some_and(|f| sample.at.duration_since(f.at) >= Duration::from_secs(1));
        samples.push(sample);
        if sample.window_used >= 1_000 && sample.floor > events / 5 && a_second {
            break sample;
        }
        tokio::time::sleep(POLL).await;
    };
    let before = samples
        .iter()
        .rev()
        .find(|s| steady.at.duration_since(s.at) >= Duration::from_secs(1))
        .copied()
        .unwrap_or(samples[0]);
    Ok((steady, rate_between(&before, &steady)))
}

/// The longest time in `samples` the floor stood still.
fn longest_stall(samples: &[Sample]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since = samples.first().map(|s| (s.floor, s.at));
    for s in samples {
        if let Some((floor, at)) = since {
            if s.floor > floor {
                since = Some((s.floor, s.at));
            } else {
                longest = longest.max(s.at.duration_since(at));
            }
        }
    }
    longest
}

/// Samples the snapshot for `span`.
async fn sample_for(core: &Core, span: Duration) -> anyhow::Result<Vec<Sample>> {
    let until = Instant::now() + span;
    let mut samples = Vec::new();
    while Instant::now() < until {
        samples.push(Sample::of(&core.snapshot().await?));
        tokio::time::sleep(POLL).await;
    }
    Ok(samples)
}

/// Two processors join as hot standbys (`--partitions 1`) while the active
/// one runs a full window: what they cost it (nothing moves to them: they
/// wait).
async fn join(env: &Env, args: &super::Args) -> anyhow::Result<()> {
    let mut core = env.core_with(&["--partitions", "1"]).await?;
    let mut active = start_processor(env.dir(), &core.grpc_url(), &[])?;
    super::wait_connected(&core).await?;
    // Four times the others' events: the window is still full a second
    // after the join (which comes a second after the steady state).
    let events = 4 * args.crash_events;
    let publisher = publish(&core, args, events);
    let (steady, _) = steady_state(&core, events / 4).await?;
    let before = sample_for(&core, Duration::from_secs(1)).await?;
    let joined = Instant::now();
    let mut joining: Vec<Proc> = (0..2)
        .map(|_| start_processor(env.dir(), &core.grpc_url(), &[]))
        .collect::<anyhow::Result<_>>()?;
    wait_processors(&core, 3).await?;
    let standing_by = joined.elapsed();
    let after = sample_for(&core, Duration::from_secs(1)).await?;
    let head = publisher.await??;
    let full = after
        .last()
        .is_some_and(|s| s.floor <= head && s.window_used >= 1_000);
    for p in joining.iter_mut().chain([&mut active]) {
        p.terminate().await?;
    }
    core.proc.terminate().await?;

    let span_rate = |s: &[Sample]| match (s.first(), s.last()) {
        (Some(a), Some(b)) => rate_between(a, b),
        _ => 0.0,
    };
    let same_session = after.iter().all(|s| s.session == steady.session);
    line(
        "crash (join): two processors join as standbys",
        format!(
            "{} in flight; standing by {} ms after their start; the active one kept its session: {same_session}; window still full a second later: {full}",
            steady.window_used,
            standing_by.as_millis()
        ),
    );
    line(
        "crash (join): results, the second before / the second after",
        format!(
            "{} / {} (the {} ms after the join included)",
            rate(span_rate(&before)),
            rate(span_rate(&after)),
            standing_by.as_millis()
        ),
    );
    line(
        "crash (join): longest the floor stood still, before / after",
        format!(
            "{} / {} ms (snapshots every 200 ms)",
            longest_stall(&before).as_millis(),
            longest_stall(&after).as_millis()
        ),
    );
    Ok(())
}

/// Publishes `events` of W2's events as one burst, on a task of its own;
/// it returns the head.
pub(super) fn publish(
    core: &Core,
    args: &super::Args,
    events: u64,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    let (grpc, http) = (core.grpc, core.http);
    let (keys, sleep_ms) = (args.w2_keys, args.w2_sleep_ms);
    tokio::spawn(async move {
        let client = Core::attach(grpc, http);
        super::w2::publish(client.ingest().await?, events, keys, sleep_ms).await
    })
}

/// Waits until core counts `n` processors (the active one and standbys).
async fn wait_processors(core: &Core, n: u64) -> anyhow::Result<()> {
    wait_for(
        &format!("{n} processors connected"),
        Duration::from_secs(60),
        || async {
            let (status, page) = http_request(core.http, "GET", "/metrics", None)
                .await
                .ok()?;
            (status == 200 && sample(&page, "ackflow_processors_connected") == n as f64)
                .then_some(())
        },
    )
    .await
}

async fn run(env: &Env, args: &super::Args, loss: Loss) -> anyhow::Result<()> {
    // One partition: the first processor owns every key, the others wait
    // as standbys (sharing the keys is `group.rs`).
    let flags: &[&str] = match loss {
        Loss::Restart => &[],
        _ => &["--partitions", "1"],
    };
    let mut core = env.core_with(flags).await?;
    let mut active = start_processor(env.dir(), &core.grpc_url(), &[])?;
    super::wait_connected(&core).await?;
    let mut standbys: Vec<Proc> = Vec::new();
    if loss != Loss::Restart {
        for _ in 0..2 {
            standbys.push(start_processor(env.dir(), &core.grpc_url(), &[])?);
        }
        wait_processors(&core, 3).await?;
    }
    let events = args.crash_events;
    let publisher = publish(&core, args, events);

    let (steady, rate_before) = steady_state(&core, events).await?;

    let signalled = Instant::now();
    match loss {
        Loss::Restart => {
            active.kill().await;
            active = start_processor(env.dir(), &core.grpc_url(), &[])?;
        }
        Loss::StandbyKill => active.kill().await,
        Loss::StandbyStop => active.signal("-STOP")?,
    }
    let head = publisher.await??;
    let (mut connected, mut first, mut clear, mut full) = (None, None, None, None);
    let mut floor_at_connect = 0;
    let mut after: Vec<Sample> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let drained = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not drained within 300 s of the signal"
        );
        let sample = Sample::of(&core.snapshot().await?);
        if sample.session > steady.session && sample.connected && connected.is_none() {
            connected = Some(sample.at);
            floor_at_connect = sample.floor;
        }
        if connected.is_some() && sample.floor > floor_at_connect && first.is_none() {
            first = Some(sample.at);
        }
        if connected.is_some() && sample.suspects == 0 && clear.is_none() {
            clear = Some(sample.at);
        }
        if let (Some(since), None) = (connected, full)
            && let Some(from) = after.iter().rev().find(|a| {
                a.at >= since && sample.at.duration_since(a.at) >= Duration::from_millis(250)
            })
            && rate_between(from, &sample) >= 0.9 * rate_before
        {
            full = Some(sample.at);
        }
        after.push(sample);
        if sample.floor > head {
            break sample;
        }
        tokio::time::sleep(POLL).await;
    };
    if loss == Loss::StandbyStop {
        active.signal("-CONT")?;
    }
    active.kill().await;
    for mut standby in standbys {
        standby.terminate().await?;
    }
    core.proc.terminate().await?;

    let ms = |t: Option<Instant>| match t {
        Some(t) => format!("{} ms", t.duration_since(signalled).as_millis()),
        None => "never (drained first)".to_string(),
    };
    let name = loss.name();
    let signal = if loss == Loss::StandbyStop {
        "SIGSTOP"
    } else {
        "SIGKILL"
    };
    line(
        &format!(
            "crash ({name}): {events} sleep events over {} keys",
            args.w2_keys
        ),
        format!(
            "{signal} with {} in flight; results before it {}",
            steady.window_used,
            rate(rate_before)
        ),
    );
    line(
        &format!("crash ({name}): signal → another life connected"),
        ms(connected),
    );
    line(
        &format!("crash ({name}): signal → its first result stored"),
        ms(first),
    );
    line(
        &format!("crash ({name}): signal → crash suspects resolved"),
        ms(clear),
    );
    line(
        &format!("crash ({name}): signal → results at 90 % of the rate before"),
        ms(full),
    );
    line(
        &format!("crash ({name}): signal → backlog drained"),
        format!("{} ms", drained.at.duration_since(signalled).as_millis()),
    );
    Ok(())
}
