//! Sampling and statistics: latency percentiles, rates, the RSS sampler
//! and its peaks, and the report's line format.

use super::*;

#[derive(Clone, Copy)]
pub(super) struct Latency {
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
}

impl Latency {
    /// From microsecond samples; figures in milliseconds.
    pub(super) fn of(mut samples: Vec<i64>) -> Self {
        samples.sort_unstable();
        let at = |p: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() - 1) as f64 * p).round() as usize;
            samples[i] as f64 / 1000.0
        };
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.p50, self.p99, self.max
        )
    }
}

pub(super) fn per_sec(events: u64, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(1e-9)
}

pub(super) fn line(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<64} {value}");
}

pub(super) fn rate(events_per_sec: f64) -> String {
    format!("{events_per_sec:.0} events/s")
}

pub(super) fn payload(size: usize, n: u64) -> String {
    let prefix = format!("{n}:");
    format!(
        "\"{prefix}{}\"",
        "x".repeat(size.saturating_sub(prefix.len() + 2))
    )
}

/// Peak resident set size of a set of processes, sampled every 100 ms.
pub(super) struct RssSampler {
    pub(super) peaks: Arc<std::sync::Mutex<HashMap<u32, u64>>>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub(super) fn start(pids: Vec<u32>) -> Self {
        let peaks = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let shared = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let mut peaks = shared.lock().expect("sampler lock");
                for pid in &pids {
                    if let Some(kb) = rss_kb(*pid) {
                        let peak = peaks.entry(*pid).or_insert(0);
                        *peak = (*peak).max(kb);
                    }
                }
            }
        });
        Self { peaks, task }
    }

    /// Peak RSS in MB of `pid` so far.
    pub(super) fn peak_mb(&self, pid: u32) -> f64 {
        let kb = rss_kb(pid).unwrap_or(0);
        let peak = self.peaks.lock().expect("sampler lock").get(&pid).copied();
        peak.unwrap_or(0).max(kb) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Current resident set size of `pid` in kB, from `/proc`.
pub(super) fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(super) fn pid(proc: &Proc) -> u32 {
    proc.pid().unwrap_or(0)
}

/// Peak resident set sizes of a core and its processor, in MB.
#[derive(Clone, Copy)]
pub(super) struct Peaks {
    pub(super) core_mb: f64,
    pub(super) processor_mb: f64,
}

impl std::fmt::Display for Peaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "core {:.1} MB, processor {:.1} MB",
            self.core_mb, self.processor_mb
        )
    }
}

/// The value of the sample `name` (labels included, exactly as exported);
/// 0 when absent, as a labelled counter is until its label is first used.
pub(super) fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Core's commits by op, from its `/metrics` histograms: how many, their
/// mean rows and mean duration, and how many took over 10 and 25 ms; and
/// the events it sent again (none in a calm run).
pub(super) struct Commits {
    /// Per op: commits, mean rows, mean ms, commits over 10 ms, over 25 ms.
    append: (f64, f64, f64, f64, f64),
    resolve: (f64, f64, f64, f64, f64),
    retransmits: f64,
}

impl Commits {
    pub(super) async fn read(core: &Core) -> anyhow::Result<Self> {
        let (status, page) =
            ackflow_tests::http_request(core.http, "GET", "/metrics", None).await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        let of = |op: &str| {
            let get =
                |series: &str| sample(&page, &format!("ackflow_store_{series}{{op=\"{op}\"}}"));
            let n = get("batch_events_count");
            let over = |le: &str| {
                n - sample(
                    &page,
                    &format!("ackflow_store_commit_seconds_bucket{{op=\"{op}\",le=\"{le}\"}}"),
                )
            };
            (
                n,
                get("batch_events_sum") / n.max(1.0),
                get("commit_seconds_sum") * 1e3 / n.max(1.0),
                over("0.01"),
                over("0.025"),
            )
        };
        Ok(Self {
            append: of("append"),
            resolve: of("resolve"),
            retransmits: sample(&page, "ackflow_retransmits_total"),
        })
    }
}

impl std::fmt::Display for Commits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, r) = (self.append, self.resolve);
        write!(
            f,
            "append {:.0} × {:.0} rows in {:.2} ms, resolve {:.0} × {:.0} rows in {:.2} ms (means); over 10 ms: {:.0} appends, {:.0} resolves; over 25 ms: {:.0}, {:.0}; events sent again: {:.0}",
            a.0, a.1, a.2, r.0, r.1, r.2, a.3, r.3, a.4, r.4, self.retransmits
        )
    }
}
