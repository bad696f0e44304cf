//! Drives `ackflow-monitor demo` in tmux like a person would: waits for
//! results, sees keyed ordering and one of the demo's slow keys holding the
//! floor for over a second, presses `p`, sees PAUSED with retransmits and
//! duplicate drops rising, presses `p` again, sees results resume (each seq
//! once), presses `q`, and checks the exit code. It waits for text on the
//! screen, never for a fixed time.

use std::process::Command;
use std::time::Duration;

use ackflow_tests::{bin, wait_for};

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(command: &str) -> anyhow::Result<Self> {
        let session = format!("ackflow-test-{:08x}", fastrand::u32(..));
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "120",
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

/// The number after `label` on the screen, e.g. `retransmits 12`.
fn number_after(screen: &str, label: &str) -> Option<u64> {
    let rest = &screen[screen.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Seqs of the visible rows of the results table, top to bottom.
fn result_seqs(screen: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut in_results = false;
    for line in screen.lines() {
        if line.contains("┌ Results") {
            in_results = true;
            continue;
        }
        if in_results {
            if line.contains('└') {
                break;
            }
            // The results panel is the left half of its row.
            let cell = line.trim_start_matches('│').split('│').next().unwrap_or("");
            if let Some(seq) = cell.split_whitespace().next().and_then(|s| s.parse().ok()) {
                seqs.push(seq);
            }
        }
    }
    seqs
}

/// The floor holder on the lanes line (`floor holder seq 1223 key slow-1
/// held 2.4s attempt 1`): its key and how long it has held the floor, in
/// milliseconds.
fn floor_holder(screen: &str) -> Option<(String, u64)> {
    let rest = &screen[screen.find("floor holder seq ")?..];
    let words: Vec<&str> = rest.split_whitespace().collect();
    // floor holder seq N key K held D ...
    let (key, held) = match words.get(4..8)? {
        ["key", key, "held", held] => (key.to_string(), *held),
        _ => return None,
    };
    let held_ms = if let Some(ms) = held.strip_suffix("ms") {
        ms.parse().ok()?
    } else if let Some(us) = held.strip_suffix("µs") {
        us.parse::<u64>().ok()? / 1000
    } else {
        let s: f64 = held.strip_suffix('s')?.parse().ok()?;
        (s * 1000.0) as u64
    };
    Some((key, held_ms))
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
        "{} demo --rate 50 --log-file {}; echo $? > {}; sleep 60",
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
            && key.starts_with("slow-")
            && held_ms > 1000)
            .then_some(())
    })
    .await?;

    tmux.keys("p")?;
    let (retransmits, drops) = tmux
        .wait("PAUSED with retransmits and duplicate drops", |s| {
            let r = number_after(s, "retransmits")?;
            let d = number_after(s, "duplicate drops")?;
            (s.contains("PAUSED") && r > 0 && d > 0).then_some((r, d))
        })
        .await?;
    tmux.wait("the retransmit and duplicate-drop counters rising", |s| {
        let r = number_after(s, "retransmits")?;
        let d = number_after(s, "duplicate drops")?;
        (r > retransmits && d > drops).then_some(())
    })
    .await?;
    let paused_total = results_total(&tmux.screen()).unwrap_or(before_pause);

    tmux.keys("p")?;
    tmux.wait("RUNNING and results resuming", |s| {
        let total = results_total(s)?;
        (s.contains("RUNNING") && total > paused_total + 20).then_some(())
    })
    .await?;
    let seqs = result_seqs(&tmux.screen());
    assert!(
        seqs.len() >= 5,
        "results table rows: {seqs:?}\n{}",
        tmux.screen()
    );
    // Keys are processed side by side, so results arrive out of seq order
    // across keys; each event still has exactly one result.
    let mut distinct = seqs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        seqs.len(),
        "a seq listed twice in the results: {seqs:?}"
    );

    tmux.keys("q")?;
    let code = wait_for("the monitor to exit", Duration::from_secs(60), || {
        let code = std::fs::read_to_string(&exit_file).ok();
        async move { code.map(|c| c.trim().to_string()).filter(|c| !c.is_empty()) }
    })
    .await?;
    assert_eq!(code, "0", "exit code");
    Ok(())
}
