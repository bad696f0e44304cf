//! A size-limited filesystem (tmpfs) for storage-fault tests: mounted on a
//! fresh directory, grown or shrunk while in use, unmounted on drop.
//!
//! Mounting needs root (CAP_SYS_ADMIN), which the development machines and
//! CI have. Where it is missing the tests fail with that reason, unless
//! `ACKFLOW_TEST_NO_MOUNT=1` is set: then [`SmallFs::mount`] returns `None`
//! and the test prints that it was skipped, so a skip is never silent.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A mounted tmpfs.
pub struct SmallFs {
    /// Keeps the mount point's parent alive (and removes it after unmount).
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB. `Ok(None)` only when mounting is not
    /// possible and `ACKFLOW_TEST_NO_MOUNT=1` says to skip.
    pub fn mount(test: &str, mib: u64) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("fs");
        std::fs::create_dir(&path)?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0777"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if std::env::var("ACKFLOW_TEST_NO_MOUNT").as_deref() == Ok("1") {
                eprintln!("SKIPPED {test}: cannot mount a tmpfs ({why}); ACKFLOW_TEST_NO_MOUNT=1");
                return Ok(None);
            }
            bail!(
                "{test} needs a size-limited filesystem: `mount -t tmpfs` failed ({why}). \
                 Run as root, or set ACKFLOW_TEST_NO_MOUNT=1 to skip it knowingly."
            );
        }
        Ok(Some(Self { _dir: dir, path }))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the size while in use (the kernel refuses a size below what
    /// is used).
    pub fn resize(&self, mib: u64) -> anyhow::Result<()> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "resizing the tmpfs to {mib} MiB: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Bytes in use.
    pub fn used_bytes(&self) -> anyhow::Result<u64> {
        let out = Command::new("df")
            .args(["--output=used", "-B1"])
            .arg(&self.path)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .context("parsing df output")
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open must not keep the
        // mount (and the test's temp dir) alive.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
