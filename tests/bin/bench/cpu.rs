//! Where the CPU goes: user + system time of core, the processor, every
//! PostgreSQL server process (backends, WAL writer, checkpointer: the
//! database's whole cost) and this bench (the publisher), from
//! `/proc/<pid>/stat`, over one section, per event.

use std::time::Duration;

/// CPU times at the start of a measurement.
pub(super) struct CpuMeter {
    core: u32,
    /// The processors, counted together.
    processors: Vec<u32>,
    start: Times,
}

#[derive(Clone, Copy, Default)]
struct Times {
    core: u64,
    processor: u64,
    postgres: u64,
    bench: u64,
}

/// CPU per event of each process, in microseconds.
#[derive(Clone, Copy, Debug)]
pub(super) struct CpuPerEvent {
    pub(super) core: f64,
    pub(super) processor: f64,
    pub(super) postgres: f64,
    pub(super) bench: f64,
}

impl std::fmt::Display for CpuPerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "core {:.1} µs, processor {:.1} µs, PostgreSQL {:.1} µs, publisher {:.1} µs",
            self.core, self.processor, self.postgres, self.bench
        )
    }
}

impl CpuMeter {
    pub(super) fn start(core: u32, processor: u32) -> Self {
        Self::start_many(core, &[processor])
    }

    /// The same with several processors, their CPU summed.
    pub(super) fn start_many(core: u32, processors: &[u32]) -> Self {
        let mut meter = Self {
            core,
            processors: processors.to_vec(),
            start: Times::default(),
        };
        meter.start = meter.now();
        meter
    }

    fn now(&self) -> Times {
        Times {
            core: ticks(self.core),
            processor: self.processors.iter().map(|p| ticks(*p)).sum(),
            postgres: postgres_ticks(),
            bench: ticks(std::process::id()),
        }
    }

    /// CPU per event since [`CpuMeter::start`], for `events` events.
    pub(super) fn per_event(&self, events: u64) -> CpuPerEvent {
        let end = self.now();
        let tick = tick();
        let us = |from: u64, to: u64| {
            (tick * to.saturating_sub(from) as u32).as_secs_f64() * 1e6 / events.max(1) as f64
        };
        CpuPerEvent {
            core: us(self.start.core, end.core),
            processor: us(self.start.processor, end.processor),
            postgres: us(self.start.postgres, end.postgres),
            bench: us(self.start.bench, end.bench),
        }
    }
}

/// utime + stime of `pid`, in clock ticks (0 when it is gone, or for pid 0:
/// no such process).
fn ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_ticks(&stat))
        .unwrap_or(0)
}

/// Fields 14 and 15 of `/proc/<pid>/stat`, counted after the command
/// name's closing parenthesis (the name may hold spaces).
fn parse_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time of every process named `postgres` on this machine.
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.contains("(postgres)").then(|| parse_ticks(&stat))?
    })
    .sum()
}

/// One clock tick (`getconf CLK_TCK`, 100 on Linux).
fn tick() -> Duration {
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100);
    Duration::from_secs(1) / hz
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_are_read_after_the_name() {
        let stat = "42 (tokio runtime) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0";
        assert_eq!(super::parse_ticks(stat), Some(280));
    }
}
