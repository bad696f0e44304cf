//! The ceiling W1 is quoted against: the store alone taking W1's event and
//! result rows through ackflow's own store code (the same statements,
//! fence aside), with no service and no network hop in between.
//!
//! Two forms, both printed, each with W1's ratio to it:
//! * **one connection**: append a batch, resolve it, next batch; one
//!   transaction at a time.
//! * **pipelined**: as core runs them, on two connections at once. One task
//!   appends batch after batch (the ingest writer's group commit); another
//!   resolves batch k as soon as batch k's events are committed (the result
//!   writer). The commits overlap, so the database's WAL flushes can take
//!   both at once. This is the strongest honest ceiling with the same
//!   durability: every commit still waits for its flush.
//!
//! The pipelined form runs with three batch sizes and the fastest is the
//! ceiling, so no batch size flatters W1. The rows are built before the
//! clock starts (core builds its next batch while a commit is in flight).

use super::*;

/// Rows per transaction of the one-connection form.
const BATCH: u64 = 4096;
/// Rows per transaction of the pipelined form's runs.
const PIPELINED_BATCHES: [u64; 3] = [256, 1000, 4096];

pub(super) async fn section_ceiling(
    env: &Env,
    args: &Args,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(env.dir().join("data"))?;
    let store = ackflow_core::store::open(&env.store_url()).await?;
    let output = "0".repeat(64);
    // Each run takes seqs of its own, above the last run's.
    let mut base = store.next_seq().await?;

    let rows = Rows::build(base, args.events, BATCH, args.payload, &output);
    let started = Instant::now();
    for (first, events, results) in rows.0 {
        store.append(first, now_us(), &events).await?;
        store
            .resolve(&results, &[], first + results.len() as u64)
            .await?;
    }
    let one = per_sec(args.events, started.elapsed());
    base += args.events;
    line(
        &format!(
            "ceiling, one connection: {} events + results, batches of {BATCH}",
            args.events
        ),
        rate(one),
    );

    let mut pipelined: f64 = 0.0;
    for batch in PIPELINED_BATCHES {
        // No core or processor here: the meter reads the database and
        // this bench, which runs the store code.
        let rows = Rows::build(base, args.events, batch, args.payload, &output);
        let cpu = cpu::CpuMeter::start(0, 0);
        let took = pipeline(&store, rows).await?;
        let cpu = cpu.per_event(args.events);
        base += args.events;
        let r = per_sec(args.events, took);
        line(
            &format!(
                "ceiling, pipelined on two connections: {} events + results, batches of {batch}",
                args.events
            ),
            format!(
                "{}; CPU per event: PostgreSQL {:.1} µs, the store code {:.1} µs",
                rate(r),
                cpu.postgres,
                cpu.bench
            ),
        );
        pipelined = pipelined.max(r);
    }
    if let Some(w1) = summary.w1_rate {
        line(
            "ratio W1 end to end / ceiling, one connection",
            format!("{:.2}", w1 / one),
        );
        line(
            "ratio W1 end to end / ceiling, pipelined (the fastest batch size)",
            format!("{:.2}", w1 / pipelined),
        );
    }
    summary.ceiling = Some(one);
    summary.ceiling_pipelined = Some(pipelined);
    Ok(())
}

/// W1's event rows and their result rows, batch by batch, built before the
/// clock starts: core receives the next requests and acks while a commit
/// is in flight, so building rows is not part of what the store must take.
struct Rows(Vec<(u64, AppendBatch, Vec<ResultRow>)>);

impl Rows {
    /// `total` events from seq `base` in batches of `batch`.
    fn build(base: u64, total: u64, batch: u64, size: usize, output: &str) -> Self {
        let batches = (0..total)
            .step_by(batch as usize)
            .map(|offset| {
                let first = base + offset;
                let seqs = first..first + batch.min(total - offset);
                let events = w1_events(seqs.clone(), size);
                let results = seqs.map(|seq| w1_result(seq, output, now_us())).collect();
                (first, events, results)
            })
            .collect();
        Self(batches)
    }
}

/// W1's event rows for `seqs`, as one request.
fn w1_events(seqs: impl Iterator<Item = u64> + Clone, size: usize) -> AppendBatch {
    let events = seqs
        .clone()
        .map(|seq| NewEvent {
            kind: "sha256".into(),
            key: None,
            payload: payload(size, seq).into_bytes(),
            idempotency_key: None,
            traceparent: None,
        })
        .collect();
    let ids = seqs.map(|seq| format!("{seq:032x}")).collect();
    AppendBatch::one_request(ids, events)
}

/// W1's result row for `seq`, as core's result writer stores it.
fn w1_result(seq: u64, output: &str, stored_at_us: i64) -> ResultRow {
    ResultRow {
        seq,
        status: ResultStatus::Ok,
        output: output.to_string(),
        attempt: 1,
        processing_us: 1,
        stored_at_us,
    }
}

/// Appends batch after batch while a second task resolves each batch
/// (its result rows, with the floor persisted in the same transaction, as
/// core's result writer does) once its append committed; the time from the
/// first append to the last resolve.
async fn pipeline(
    store: &ackflow_core::store::SharedStore,
    rows: Rows,
) -> anyhow::Result<Duration> {
    // A bounded queue, as core's result writer lags at most a window behind.
    let (committed, mut to_resolve) = tokio::sync::mpsc::channel::<(u64, Vec<ResultRow>)>(64);
    let resolver = {
        let store = store.clone();
        tokio::spawn(async move {
            while let Some((floor, results)) = to_resolve.recv().await {
                store.resolve(&results, &[], floor).await?;
            }
            anyhow::Ok(())
        })
    };
    let started = Instant::now();
    for (first, events, results) in rows.0 {
        store.append(first, now_us(), &events).await?;
        let floor = first + results.len() as u64;
        committed.send((floor, results)).await?;
    }
    drop(committed);
    resolver.await??;
    Ok(started.elapsed())
}

/// The open loop's floor: the store alone at the same rate. Events arrive
/// as the open loop publishes them (a tick a millisecond, every event due);
/// one task appends whatever has arrived in one commit at a time (core's
/// ingest writer), another resolves whatever has been appended the same
/// way (core's result writer). The latency is from an event's arrival to
/// the start of the commit that resolves it, as the open loop's is to its
/// result's `stored_at_us`. What is left of ackflow's latency above this
/// is the hops and the processing; this much is two group commits in a row.
pub(super) async fn open_loop_floor(
    env: &Env,
    rate: f64,
    secs: u64,
    size: usize,
) -> anyhow::Result<Floor> {
    type Arrived = Vec<(u64, i64)>;
    std::fs::create_dir_all(env.dir().join("data"))?;
    let store = ackflow_core::store::open(&env.store_url()).await?;
    let base = store.next_seq().await?;
    let n = (rate * secs as f64) as u64;
    let output = "0".repeat(64);
    let (arrive, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(u64, i64)>();
    let (appended, mut to_resolve) = tokio::sync::mpsc::unbounded_channel::<Arrived>();
    let producer = tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut next = 0u64;
        while next < n {
            tick.tick().await;
            let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(n);
            for seq in next..due {
                arrive.send((base + seq, now_us()))?;
            }
            next = due;
        }
        anyhow::Ok(())
    });
    let ingest = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut group = Vec::new();
            let mut took = Vec::new();
            while arrived.recv_many(&mut group, usize::MAX).await > 0 {
                let first = group[0].0;
                let events = w1_events(group.iter().map(|&(seq, _)| seq), size);
                let started = Instant::now();
                store.append(first, now_us(), &events).await?;
                took.push(started.elapsed().as_micros() as i64);
                appended.send(std::mem::take(&mut group))?;
            }
            anyhow::Ok(took)
        })
    };
    let mut latencies = Vec::with_capacity(n as usize);
    let mut groups: Vec<Arrived> = Vec::new();
    let mut resolves = Vec::new();
    while to_resolve.recv_many(&mut groups, usize::MAX).await > 0 {
        let stored = now_us();
        let events: Arrived = groups.drain(..).flatten().collect();
        let results: Vec<ResultRow> = events
            .iter()
            .map(|&(seq, _)| w1_result(seq, &output, stored))
            .collect();
        let floor = events.last().map_or(base, |(seq, _)| seq + 1);
        let started = Instant::now();
        store.resolve(&results, &[], floor).await?;
        resolves.push(started.elapsed().as_micros() as i64);
        latencies.extend(events.iter().map(|(_, at)| stored - at));
    }
    producer.await??;
    let appends = ingest.await??;
    anyhow::ensure!(
        latencies.len() as u64 == n,
        "{} of {n} resolved",
        latencies.len()
    );
    Ok(Floor {
        latency: Latency::of(latencies),
        appends: Latency::of(appends),
        resolves: Latency::of(resolves),
    })
}

/// What [`open_loop_floor`] measured.
pub(super) struct Floor {
    /// Arrival → the start of the commit that resolves it.
    pub(super) latency: Latency,
    /// How long each commit took.
    pub(super) appends: Latency,
    pub(super) resolves: Latency,
}

impl std::fmt::Display for Floor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; its appends {}, resolves {}",
            self.latency, self.appends, self.resolves
        )
    }
}
