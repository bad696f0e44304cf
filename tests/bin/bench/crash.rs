//! Section `crash`: what losing the processor costs. W2's events (`sleep`
//! events of `--w2-sleep-ms` over `--w2-keys` keys, default flags) are
//! published as one burst; while the window is full, the active processor
//! is lost, three ways:
//!
//! * `restart`: killed with SIGKILL and a new one started at once (as a
//!   supervisor would);
//! * `standby, SIGKILL`: three processors connected, two of them hot
//!   standbys; the active one is killed and nothing is restarted;
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
    Ok(())
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
    let mut core = env.core_with(&[]).await?;
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
    let publisher = {
        let (grpc, http) = (core.grpc, core.http);
        let (keys, sleep_ms) = (args.w2_keys, args.w2_sleep_ms);
        tokio::spawn(async move {
            let client = Core::attach(grpc, http);
            super::w2::publish(client.ingest().await?, events, keys, sleep_ms).await
        })
    };

    // Steady state: a full window, and a second of results to rate.
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
    let rate_before = rate_between(&before, &steady);

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
