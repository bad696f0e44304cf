//! Retention: keeps the store's disk use bounded by time, and says so before
//! the disk fills.
//!
//! Without it every event, result and idempotency key is kept forever and a
//! busy core fills any disk. This module owns three things:
//!
//! - **What goes.** A resolved event (one with a result, below the persisted
//!   acked floor) published more than `--retention` ago is deleted with its
//!   result ([`Store::prune`]). Unresolved and dead events are never deleted,
//!   nor is the highest stored seq: the ingest writer derives the next seq
//!   from it, and deleting it would hand a seq out twice. An idempotency key
//!   lives in its event's row, so it is honoured for as long as the event is
//!   kept, that is for the retention window; a publish with the key of a
//!   pruned event stores a new event with a new seq.
//! - **When.** A task of its own prunes every [`PRUNE_EVERY`] in batches of
//!   [`PRUNE_BATCH`], pausing [`BATCH_PAUSE`] between batches and stopping a
//!   round after [`MAX_BATCHES_PER_ROUND`] (the next round then comes after
//!   [`CATCH_UP_EVERY`]). It is off the hot path: nothing waits for it, its
//!   transactions are small and short so the ingest writer and the result
//!   writer (which share SQLite's single writer connection and PostgreSQL's
//!   pool with it) are never held up for long, and a failed round only logs
//!   a warning and tries again later.
//! - **Disk gauges.** Each round sets `ackflow_store_bytes` and, for SQLite,
//!   `ackflow_disk_free_bytes`; when the SQLite filesystem runs low (below
//!   [`LOW_DISK_FRACTION`] of its size or [`LOW_DISK_BYTES`]) it warns once
//!   per crossing and puts a line into [`StorageStatus`], which `/readyz`
//!   shows. Running low is a warning, not unreadiness: writes still succeed
//!   (a failing write makes `/readyz` answer 503 by itself).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::CoreMetrics;
use crate::model::now_us;
use crate::store::{SharedStore, Store, StoreError};

/// Time between two rounds.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Time to the next round when the last one stopped at its batch cap (a
/// backlog of old events to catch up on).
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(1);
/// Events deleted per transaction.
pub const PRUNE_BATCH: u32 = 1000;
/// Pause between two batches, so the writers get the store in between.
pub const BATCH_PAUSE: Duration = Duration::from_millis(10);
/// Most batches in one round.
pub const MAX_BATCHES_PER_ROUND: u32 = 100;
/// Free space below this fraction of the filesystem counts as low.
pub const LOW_DISK_FRACTION: f64 = 0.10;
/// Free space below this many bytes counts as low, whatever the fraction.
pub const LOW_DISK_BYTES: u64 = 256 << 20;

/// How long resolved events are kept (`--retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(Option<Duration>);

impl Retention {
    /// Keep everything.
    pub const FOREVER: Retention = Retention(None);

    /// Keep resolved events for `d` (a zero duration keeps them forever).
    pub fn keep_for(d: Duration) -> Self {
        if d.is_zero() {
            Self::FOREVER
        } else {
            Self(Some(d))
        }
    }

    /// The window, or `None` for forever.
    pub fn window(&self) -> Option<Duration> {
        self.0
    }

    /// Parses `0`, `forever`, or a whole number with a unit `s`, `m`, `h`
    /// or `d` (`90s`, `30m`, `24h`, `7d`). Any zero keeps forever. The
    /// error says what is accepted (clap prints it after the flag's name).
    pub fn parse(text: &str) -> Result<Self, String> {
        const ACCEPTED: &str =
            "use a whole number with a unit s, m, h or d (e.g. 7d, 24h, 30m), or 0 / forever";
        let text = text.trim();
        if text == "0" || text.eq_ignore_ascii_case("forever") {
            return Ok(Self::FOREVER);
        }
        let Some(split) = text.find(|c: char| !c.is_ascii_digit()) else {
            return Err(if text.is_empty() {
                format!("empty: {ACCEPTED}")
            } else {
                format!("no unit: {ACCEPTED}")
            });
        };
        let (number, unit) = text.split_at(split);
        let seconds_per_unit: u64 = match unit {
            _ if number.is_empty() => return Err(format!("not a whole number: {ACCEPTED}")),
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ if unit.chars().count() == 1 => {
                return Err(format!("unknown unit {unit:?}: {ACCEPTED}"));
            }
            _ => return Err(format!("not a whole number with one unit: {ACCEPTED}")),
        };
        let seconds = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(seconds_per_unit))
            // Beyond this the cutoff (microseconds since 1970) would overflow.
            .filter(|s| *s <= i64::MAX as u64 / 1_000_000 / 2)
            .ok_or_else(|| format!("too long: {ACCEPTED}"))?;
        Ok(Self::keep_for(Duration::from_secs(seconds)))
    }

    /// The `published_before_us` to prune with at `now_us`, or `None` for
    /// forever.
    pub fn cutoff_us(&self, now_us: i64) -> Option<i64> {
        let window = i64::try_from(self.0?.as_micros()).unwrap_or(i64::MAX);
        Some(now_us.saturating_sub(window))
    }
}

impl std::str::FromStr for Retention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("forever"),
            Some(d) => {
                let s = d.as_secs();
                match s {
                    s if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
                    s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
                    s if s % 60 == 0 => write!(f, "{}m", s / 60),
                    s => write!(f, "{s}s"),
                }
            }
        }
    }
}

/// Storage warnings shared with `/readyz` (cheap to clone: one `Arc`):
/// the disk running low (kept current by the retention task), and store
/// settings that can lose acknowledged publishes (set once at start, when
/// `--allow-unsafe-durability` let core start anyway).
#[derive(Debug, Clone, Default)]
pub struct StorageStatus {
    /// The current warning (`disk 95% full (120 MiB free)`), if any.
    warning: Arc<Mutex<Option<String>>>,
    /// Why an acknowledged publish could be lost on a crash, if it could.
    durability: Arc<Mutex<Option<String>>>,
}

impl StorageStatus {
    /// The current warnings, one per line, if any.
    pub fn warning(&self) -> Option<String> {
        let disk = self
            .warning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let durability = self
            .durability
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match (disk, durability) {
            (Some(d), Some(u)) => Some(format!("{d}\nwarning: {u}")),
            (d, u) => d.or(u),
        }
    }

    /// Records that the store's settings can lose acknowledged publishes.
    pub fn set_unsafe_durability(&self, why: String) {
        *self.durability.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Records a measurement: keeps the warning current while the disk is
    /// low, and says when it crossed the threshold either way (so the log
    /// gets one line per crossing, not one per round).
    pub fn observe(&self, space: &DiskSpace) -> Option<Crossing> {
        let mut warning = self.warning.lock().unwrap_or_else(|p| p.into_inner());
        let was_low = warning.is_some();
        *warning = space.is_low().then(|| space.describe());
        match (was_low, warning.is_some()) {
            (false, true) => Some(Crossing::Low),
            (true, false) => Some(Crossing::Recovered),
            _ => None,
        }
    }
}

/// A change of the low-disk state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// Free space fell below the threshold.
    Low,
    /// Free space is above the threshold again.
    Recovered,
}

/// What one round of pruning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Round {
    /// Events deleted (with their results).
    pub pruned: u64,
    /// True when the round stopped at [`MAX_BATCHES_PER_ROUND`] with more
    /// possibly left: the next round comes sooner.
    pub hit_limit: bool,
}

/// Deletes resolved events published before `published_before_us`, in
/// batches of [`PRUNE_BATCH`], until a batch comes back short, `cancel`
/// fires or [`MAX_BATCHES_PER_ROUND`] batches ran. Counts every deleted
/// event in `ackflow_pruned_events_total` as it goes, so a round that fails
/// half-way still counts what it deleted.
pub async fn prune_round(
    store: &dyn Store,
    published_before_us: i64,
    metrics: &CoreMetrics,
    cancel: &CancellationToken,
) -> Result<Round, StoreError> {
    let mut round = Round::default();
    for batch in 0..MAX_BATCHES_PER_ROUND {
        if batch > 0 {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(round),
                _ = tokio::time::sleep(BATCH_PAUSE) => {}
            }
        }
        let pruned = store.prune(published_before_us, PRUNE_BATCH).await?;
        metrics.pruned_events.inc_by(pruned);
        round.pruned += pruned;
        if pruned < u64::from(PRUNE_BATCH) {
            return Ok(round);
        }
    }
    round.hit_limit = true;
    Ok(round)
}

/// What the retention task needs.
pub struct RetentionParts {
    pub store: SharedStore,
    pub retention: Retention,
    pub metrics: Arc<CoreMetrics>,
    /// The directory holding the SQLite database, whose filesystem's free
    /// space is watched; `None` for PostgreSQL (its disk is the server's).
    pub disk_dir: Option<PathBuf>,
    pub status: StorageStatus,
    pub cancel: CancellationToken,
}

/// Starts the retention task on `tracker`; it ends when `cancel` fires.
pub fn spawn(parts: RetentionParts, tracker: &TaskTracker) {
    if parts.disk_dir.is_some() {
        parts.metrics.register_disk_free();
    }
    match parts.retention.window() {
        Some(_) => {
            tracing::info!(retention = %parts.retention, "retention: resolved events older than this are pruned")
        }
        None => tracing::info!("retention: forever (nothing is pruned)"),
    }
    tracker.spawn(
        Task {
            parts,
            failing: false,
        }
        .run(),
    );
}

/// The task's state between rounds.
struct Task {
    parts: RetentionParts,
    /// True while prune fails: only the first failure in a row is a warning.
    failing: bool,
}

impl Task {
    async fn run(mut self) {
        let cancel = self.parts.cancel.clone();
        loop {
            let wait = if self.round().await {
                CATCH_UP_EVERY
            } else {
                PRUNE_EVERY
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: gauges, then pruning. Returns true when pruning stopped
    /// at its cap.
    async fn round(&mut self) -> bool {
        self.measure().await;
        let Some(cutoff) = self.parts.retention.cutoff_us(now_us()) else {
            return false;
        };
        let p = &self.parts;
        match prune_round(&*p.store, cutoff, &p.metrics, &p.cancel).await {
            Ok(round) => {
                if self.failing {
                    tracing::info!("retention: pruning works again");
                    self.failing = false;
                }
                if round.pruned > 0 {
                    tracing::info!(
                        pruned = round.pruned,
                        more = round.hit_limit,
                        "retention: pruned resolved events"
                    );
                } else {
                    tracing::debug!("retention: nothing to prune");
                }
                round.hit_limit
            }
            Err(e) => {
                p.metrics
                    .store_errors
                    .with_label_values(&["prune", e.kind()])
                    .inc();
                if self.failing {
                    tracing::debug!(error = %e, "retention: pruning still fails");
                } else {
                    tracing::warn!(error = %e, kind = e.kind(), "retention: pruning failed; retrying next round");
                    self.failing = true;
                }
                false
            }
        }
    }

    /// Updates the size gauges and the low-disk warning.
    async fn measure(&mut self) {
        let p = &self.parts;
        match p.store.size_bytes().await {
            Ok(bytes) => p
                .metrics
                .store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX)),
            Err(e) => tracing::debug!(error = %e, "retention: reading the store size failed"),
        }
        let Some(dir) = &p.disk_dir else {
            return;
        };
        let Some(space) = DiskSpace::of(dir) else {
            tracing::debug!(dir = %dir.display(), "retention: reading free disk space failed");
            return;
        };
        p.metrics
            .disk_free_bytes
            .set(i64::try_from(space.free).unwrap_or(i64::MAX));
        match p.status.observe(&space) {
            Some(Crossing::Low) => tracing::warn!(
                dir = %dir.display(),
                free_bytes = space.free,
                total_bytes = space.total,
                "{}: the store's disk is running low (lower --retention or add space)",
                space.describe()
            ),
            Some(Crossing::Recovered) => tracing::info!(
                dir = %dir.display(),
                free_bytes = space.free,
                "the store's disk has room again"
            ),
            None => {}
        }
    }
}

/// Free and total bytes of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer can still use.
    pub free: u64,
    /// Size of the filesystem.
    pub total: u64,
}

impl DiskSpace {
    /// The filesystem holding `dir`, or `None` when it cannot be read.
    #[cfg(unix)]
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::useless_conversion)]
    pub fn of(dir: &Path) -> Option<Self> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a NUL-terminated string that outlives the call,
        // and `stat` points to writable memory of the right type, which
        // statvfs fills completely when it returns 0.
        let stat = unsafe {
            if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
                return None;
            }
            stat.assume_init()
        };
        let block = u64::from(stat.f_frsize);
        Some(Self {
            free: u64::from(stat.f_bavail).saturating_mul(block),
            total: u64::from(stat.f_blocks).saturating_mul(block),
        })
    }

    /// Not measured off Unix.
    #[cfg(not(unix))]
    pub fn of(_dir: &Path) -> Option<Self> {
        None
    }

    /// Below [`LOW_DISK_FRACTION`] of the filesystem or [`LOW_DISK_BYTES`].
    pub fn is_low(&self) -> bool {
        (self.free as f64) < self.total as f64 * LOW_DISK_FRACTION || self.free < LOW_DISK_BYTES
    }

    /// `disk 95% full (120 MiB free)`.
    pub fn describe(&self) -> String {
        // Rounded down, so a disk is never shown 100 % full while it has room.
        let used = match self.total {
            0 => 100,
            total => (total - self.free.min(total)) as u128 * 100 / total as u128,
        };
        format!("disk {used}% full ({} MiB free)", self.free >> 20)
    }
}

/// The directory of a SQLite database URL (`sqlite:path`, `sqlite://path`,
/// with or without `?options`), or `None` for other stores and in-memory
/// databases.
pub fn sqlite_dir(database_url: &str) -> Option<PathBuf> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    match Path::new(path).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => Some(parent.to_path_buf()),
        _ => Some(PathBuf::from(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_with_units() {
        let d = |s| Retention::parse(s).map(|r| r.window());
        assert_eq!(d("7d"), Ok(Some(Duration::from_secs(7 * 86_400))));
        assert_eq!(d("24h"), Ok(Some(Duration::from_secs(86_400))));
        assert_eq!(d("30m"), Ok(Some(Duration::from_secs(1800))));
        assert_eq!(d("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(d(" 1d "), Ok(Some(Duration::from_secs(86_400))));
    }

    #[test]
    fn zero_and_forever_keep_everything() {
        for text in ["0", "forever", "Forever", "0d", "0s"] {
            assert_eq!(Retention::parse(text), Ok(Retention::FOREVER), "{text}");
        }
        assert_eq!(Retention::FOREVER.cutoff_us(1_000), None);
    }

    #[test]
    fn bad_values_say_what_is_accepted() {
        for text in [
            "",
            "7",
            "10x",
            "d",
            "-1d",
            "1.5h",
            "7 d",
            "7D",
            "99999999999999999999d",
        ] {
            let err = Retention::parse(text).expect_err(text);
            assert!(err.contains("s, m, h or d"), "{text}: {err}");
        }
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        for text in ["7d", "36h", "90m", "61s", "forever"] {
            assert_eq!(Retention::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn cutoff_is_now_minus_the_window() {
        let r = Retention::parse("1m").unwrap();
        assert_eq!(r.cutoff_us(100_000_000), Some(40_000_000));
        assert_eq!(r.cutoff_us(i64::MIN), Some(i64::MIN));
    }

    #[test]
    fn low_disk_is_under_ten_percent_or_256_mib() {
        let gib = 1u64 << 30;
        let ok = DiskSpace {
            free: 20 * gib,
            total: 100 * gib,
        };
        assert!(!ok.is_low());
        let fraction = DiskSpace {
            free: 9 * gib,
            total: 100 * gib,
        };
        assert!(fraction.is_low());
        assert_eq!(fraction.describe(), "disk 91% full (9216 MiB free)");
        let small = DiskSpace {
            free: 120 << 20,
            total: gib,
        };
        assert!(small.is_low(), "below 256 MiB even at 12 % free");
        assert_eq!(small.describe(), "disk 88% full (120 MiB free)");
    }

    #[test]
    fn a_low_disk_warns_once_per_crossing() {
        let status = StorageStatus::default();
        let space = |free_mib: u64| DiskSpace {
            free: free_mib << 20,
            total: 10 << 30,
        };
        assert_eq!(status.observe(&space(5000)), None);
        assert_eq!(status.warning(), None);
        assert_eq!(status.observe(&space(200)), Some(Crossing::Low));
        assert_eq!(
            status.observe(&space(100)),
            None,
            "still low: no new warning"
        );
        assert_eq!(
            status.warning().as_deref(),
            Some("disk 99% full (100 MiB free)"),
            "but the figures stay current"
        );
        assert_eq!(status.observe(&space(5000)), Some(Crossing::Recovered));
        assert_eq!(status.warning(), None);
    }

    #[test]
    fn finds_the_sqlite_directory() {
        assert_eq!(
            sqlite_dir("sqlite:/var/lib/ackflow/ackflow.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/ackflow"))
        );
        assert_eq!(
            sqlite_dir("sqlite://data/a.db"),
            Some(PathBuf::from("data"))
        );
        assert_eq!(sqlite_dir("sqlite:a.db"), Some(PathBuf::from(".")));
        assert_eq!(sqlite_dir("sqlite::memory:"), None);
        assert_eq!(sqlite_dir("postgres://u@h/db"), None);
    }

    #[cfg(unix)]
    #[test]
    fn measures_a_real_filesystem() {
        let space = DiskSpace::of(Path::new(".")).expect("statvfs of .");
        assert!(space.total > 0 && space.free <= space.total);
        assert!(DiskSpace::of(Path::new("/no/such/dir")).is_none());
    }
}
