//! Drives `ackflow-monitor demo` in tmux like a person would: waits for
//! results, sees keyed ordering and one of the demo's slow keys holding the
//! floor for over a second, presses `p`, sees PAUSED with nothing new sent
//! and the floor held for seconds, presses `p` again, sees results resume
//! (each seq once, in seq order within each key), presses `q`, and checks
//! the exit code. Another watches the demo's crash events move a crashed
//! processor's keys to the other one and back. Both wait for text on the
//! screen, never for a fixed time.

use std::process::Command;
use std::time::Duration;

use ackflow_tests::{bin, wait_for};

struct Tmux {
    session: String,
}

impl Tmux {
    /// `command` in a new session of 120×40 cells.
    fn start(command: &str) -> anyhow::Result<Self> {
        Self::start_wide(command, 120)
    }

    /// `command` in a new session `width` cells wide, 40 high.
    fn start_wide(command: &str, width: u16) -> anyhow::Result<Self> {
        let session = format!("ackflow-test-{:08x}", fastrand::u32(..));
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                &width.to_string(),
                "-y",
                "40",
                command,
            ])
            .env_remove("DATABASE_URL")
            .env_remove("TMUX")
            .status()?;
        anyhow::ensure!(
            status.success(),
            "tmux new-session failed (is tmux installed?)"
        );
        Ok(Self { session })
    }

    fn screen(&self) -> String {
        Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn keys(&self, keys: &str) -> anyhow::Result<()> {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.session, keys])
            .status()?;
        anyhow::ensure!(status.success(), "tmux send-keys failed");
        Ok(())
    }

    /// Waits until `check` finds what it wants on the screen.
    async fn wait<T>(&self, what: &str, check: impl Fn(&str) -> Option<T>) -> anyhow::Result<T> {
        wait_for(what, Duration::from_secs(60), || {
            let screen = self.screen();
            let found = check(&screen);
            async move { found }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}; screen:\n{}", self.screen()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

/// Presses `q` and checks the monitor exits 0 (its shell writes the code
/// to `exit_file`).
async fn quit(tmux: &Tmux, exit_file: &std::path::Path) -> anyhow::Result<()> {
    tmux.keys("q")?;
    let code = wait_for("the monitor to exit", Duration::from_secs(60), || {
        let code = std::fs::read_to_string(exit_file).ok();
        async move { code.map(|c| c.trim().to_string()).filter(|c| !c.is_empty()) }
    })
    .await?;
    assert_eq!(code, "0", "exit code");
    Ok(())
}

/// The number after `label` on the screen, e.g. `retransmits 12`.
fn number_after(screen: &str, label: &str) -> Option<u64> {
    let rest = &screen[screen.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// One visible row of the results table: its seq, and its key as shown
/// (`None`: no key, `–`, or the table has no key column).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResultRow {
    seq: u64,
    key: Option<String>,
}

/// The visible rows of the results table, top to bottom (newest first).
fn result_rows(screen: &str) -> Vec<ResultRow> {
    let mut rows = Vec::new();
    let mut lines = screen.lines();
    if lines.by_ref().find(|l| l.contains("┌ Results")).is_none() {
        return rows;
    }
    // The results panel is the left half of its row.
    let cell = |line: &str| -> Vec<String> {
        let cell = line.trim_start_matches('│').split('│').next().unwrap_or("");
        cell.split_whitespace().map(str::to_string).collect()
    };
    // The header names the columns; the key column comes and goes.
    let Some(header) = lines.next().map(cell) else {
        return rows;
    };
    let key_at = header.iter().position(|h| h == "key");
    for line in lines {
        if line.contains('└') {
            break;
        }
        let words = cell(line);
        let Some(seq) = words.first().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let key = key_at
            .and_then(|at| words.get(at))
            .filter(|k| k.as_str() != "–")
            .cloned();
        rows.push(ResultRow { seq, key });
    }
    rows
}

/// The rows whose key is shown whole (not cut with `…`), grouped by key,
/// each group's seqs top to bottom.
fn seqs_by_key(rows: &[ResultRow]) -> std::collections::BTreeMap<&str, Vec<u64>> {
    let mut by_key = std::collections::BTreeMap::<&str, Vec<u64>>::new();
    for row in rows {
        if let Some(key) = row.key.as_deref().filter(|k| !k.ends_with('…')) {
            by_key.entry(key).or_default().push(row.seq);
        }
    }
    by_key
}

/// The floor holder on the lanes line (`floor holder seq 1223 key slow-1
/// held 2.4s attempt 1`, or `… seq 1224 no key held …`): its key (`None`
/// for no key) and how long it has held the floor, in milliseconds.
fn floor_holder(screen: &str) -> Option<(Option<String>, u64)> {
    let rest = &screen[screen.find("floor holder seq ")?..];
    let words: Vec<&str> = rest.split_whitespace().collect();
    // floor holder seq N key K held D ... / floor holder seq N no key held D ...
    let (key, held) = match words.get(4..8)? {
        ["key", key, "held", held] => (Some(key.to_string()), *held),
        ["no", "key", "held", held] => (None, *held),
        _ => return None,
    };
    let held_ms = if let Some(ms) = held.strip_suffix("ms") {
        ms.parse().ok()?
    } else if let Some(us) = held.strip_suffix("µs") {
        us.parse::<u64>().ok()? / 1000
    } else if let Some((m, s)) = held.strip_suffix('s').and_then(|h| h.split_once('m')) {
        (m.parse::<u64>().ok()? * 60 + s.parse::<u64>().ok()?) * 1000
    } else {
        let s: f64 = held.strip_suffix('s')?.parse().ok()?;
        (s * 1000.0) as u64
    };
    Some((key, held_ms))
}

/// The window gauge (`in flight 256/256`): seqs in flight and the window.
fn window_use(screen: &str) -> Option<(u64, u64)> {
    let rest = &screen[screen.find("in flight ")? + "in flight ".len()..];
    let (used, window) = rest.split_whitespace().next()?.split_once('/')?;
    Some((used.parse().ok()?, window.parse().ok()?))
}

fn results_total(screen: &str) -> Option<u64> {
    let ok = number_after(screen, "Results ok")?;
    let failed = number_after(screen, "failed").unwrap_or(0);
    Some(ok + failed)
}

#[tokio::test]
async fn demo_pause_resume_quit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let exit_file = dir.path().join("exit");
    let command = format!(
        "{} demo --rate 50 --crash-every 0 --log-file {}; echo $? > {}; sleep 60",
        bin("e2e-monitor").display(),
        dir.path().join("monitor.log").display(),
        exit_file.display()
    );
    let tmux = Tmux::start(&command)?;

    let before_pause = tmux
        .wait("results while RUNNING", |s| {
            let total = results_total(s)?;
            (s.contains("RUNNING") && total >= 20).then_some(total)
        })
        .await?;

    // The demo's core orders per key, and every few seconds one of its slow
    // keys holds the floor (head-of-line) while the other keys go on.
    tmux.wait("a slow key holding the floor for over a second", |s| {
        let (key, held_ms) = floor_holder(s)?;
        (s.contains("RUNNING")
            && s.contains("ordering key")
            && s.contains("keys active")
            && key?.starts_with("slow-")
            && held_ms > 1000)
            .then_some(())
    })
    .await?;

    tmux.keys("p")?;
    // The paused processors keep every event core sent them (waiting in
    // their lanes): core sends as much as its bounds allow, then nothing
    // new, and the floor stays put while deadlines pass. (Core still sends
    // copies of what a paused processor holds, for the operator to watch
    // retransmits and duplicate drops: see `Sender::on_tick`.)
    tmux.wait(
        "PAUSED with nothing new sent and the floor held over 3 s",
        |s| {
            let (_, held_ms) = floor_holder(s)?;
            let (used, _) = window_use(s)?;
            (s.contains("PAUSED") && s.contains("deliver 0/s") && used > 0 && held_ms > 3000)
                .then_some(())
        },
    )
    .await?;
    let paused_total = results_total(&tmux.screen()).unwrap_or(before_pause);

    tmux.keys("p")?;
    tmux.wait("RUNNING and results resuming", |s| {
        let total = results_total(s)?;
        (s.contains("RUNNING") && total > paused_total + 20).then_some(())
    })
    .await?;
    // The monitor redraws up to 30 times a second and its frames reach
    // tmux in pieces, so a single capture can show a row half redrawn (the
    // seq of one result beside the key of another). Two captures in a row
    // with the same results table show a whole frame.
    let rows = tmux
        .wait("a settled results table with a key shown twice", |s| {
            let rows = result_rows(s);
            let settled = rows == result_rows(&tmux.screen());
            let repeated = seqs_by_key(&rows).values().any(|seqs| seqs.len() >= 2);
            (settled && rows.len() >= 5 && repeated).then_some(rows)
        })
        .await?;
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    // Each event has exactly one result.
    let mut distinct = seqs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        seqs.len(),
        "a seq listed twice in the results: {seqs:?}"
    );
    // Keys are processed side by side, so results arrive out of seq order
    // across keys; within a key they arrive in seq order (the processor
    // runs a key's events one after the other and acks them in that order,
    // and core stores and reports acks in the order they come; no faults
    // are injected here, and a lost ack could let a later result of the
    // key be stored first). The table lists them newest first.
    for (key, seqs) in seqs_by_key(&rows) {
        assert!(
            seqs.windows(2).all(|w| w[0] > w[1]),
            "results of key {key} out of seq order (newest first): {seqs:?}\nrows: {rows:?}"
        );
    }

    quit(&tmux, &exit_file).await
}

/// The processors on the status line with their sessions
/// (`demo-a session 2: 131 partitions, …  demo-b session 1: …`).
fn processors(screen: &str) -> Option<Vec<(String, u64)>> {
    let rest = &screen[screen.find("RUNNING")? + "RUNNING".len()..];
    let line = rest.lines().next()?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let found: Vec<(String, u64)> = words
        .windows(3)
        .filter(|w| w[1] == "session")
        .filter_map(|w| Some((w[0].to_string(), w[2].trim_end_matches(':').parse().ok()?)))
        .collect();
    (!found.is_empty()).then_some(found)
}

/// The demo runs two processors that share the keys, and a crash event
/// crashes one of them every few seconds: its keys move to the other (the
/// event log says so), it comes back in a later session and takes its
/// share back, and nothing is parked on the way.
#[tokio::test]
async fn demo_moves_a_crashed_processor_s_keys_to_the_other_and_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let exit_file = dir.path().join("exit");
    let command = format!(
        "{} demo --rate 20 --crash-every 6 --log-file {}; echo $? > {}; sleep 60",
        bin("e2e-monitor").display(),
        dir.path().join("monitor.log").display(),
        exit_file.display()
    );
    // Wide enough for the status line to list both processors beside
    // core's address.
    let tmux = Tmux::start_wide(&command, 200)?;

    let first = tmux
        .wait("two processors sharing the keys", |s| {
            processors(s).filter(|p| p.len() == 2)
        })
        .await?;
    tmux.wait("a crashed processor's keys moving to the other", |s| {
        s.contains("partitions moved").then_some(())
    })
    .await?;
    tmux.wait(
        "both processors again, one of them in a later session",
        |s| {
            let now = processors(s).filter(|p| p.len() == 2)?;
            now.iter()
                .any(|(id, session)| first.iter().any(|(i, s0)| i == id && session > s0))
                .then_some(())
        },
    )
    .await?;
    let screen = tmux.screen();
    assert_eq!(number_after(&screen, "dead"), Some(0), "{screen}");

    quit(&tmux, &exit_file).await
}

#[test]
fn results_table_is_read_with_its_keys() {
    let screen = "\
┌ Results ok 286 failed 18 ─────────────────┐┌ Event log ────────┐
│seq key     kind      status    ms output  ││06:49:40 paused     │
│307 user-1  sleep     ok      24.5 slept 19││                    │
│311 –       sum       ok       5.4 779     ││                    │
│306 user-1  sha256    ok      19.7 a553c16e││                    │
│305 custome… sum      ok      19.7 4       ││                    │
│                                           ││                    │
└───────────────────────────────────────────┘└────────────────────┘";
    let rows = result_rows(screen);
    let row = |seq, key: Option<&str>| ResultRow {
        seq,
        key: key.map(str::to_string),
    };
    assert_eq!(
        rows,
        [
            row(307, Some("user-1")),
            row(311, None),
            row(306, Some("user-1")),
            row(305, Some("custome…")),
        ]
    );
    // A key cut short may stand for several keys: left out.
    let by_key = seqs_by_key(&rows);
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key["user-1"], [307, 306]);
}
