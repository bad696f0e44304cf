//! One core per SQLite file. Two cores on one file would each assign seqs
//! and deliver the same events to their own processors; SQLite's locks keep
//! the file consistent but cannot stop that. So core holds an exclusive
//! lock on `<file>.lock` (`flock`, released by the kernel however the
//! process ends) for as long as it runs, and a second core is refused at
//! start, naming the first one's pid. (Tools that only read the file, such
//! as the test harness and the bench, open it without the lock.)

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock, held while this value lives.
#[derive(Debug)]
pub struct Owner {
    _file: File,
    pub path: PathBuf,
}

impl Owner {
    /// Takes the lock of the database at `db`, or says which process holds
    /// it.
    pub fn claim(db: &Path) -> Result<Self, String> {
        let path = db.with_file_name(format!(
            "{}.lock",
            db.file_name()
                .map_or("ackflow.db".into(), |n| n.to_string_lossy())
        ));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                return Err(format!(
                    "another core is running on {}{holder}: one core per SQLite file. Stop it \
                     first, give this one another --data-dir, or use PostgreSQL (DATABASE_URL)",
                    db.display()
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("locking {}: {e}", path.display()));
            }
        }
        // Who holds it, for the next one's message.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(Self { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_first_ones_pid_until_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ackflow.db");
        let first = Owner::claim(&db).unwrap();
        assert_eq!(first.path, dir.path().join("ackflow.db.lock"));
        let refused = Owner::claim(&db).unwrap_err();
        assert!(refused.contains("another core is running"), "{refused}");
        assert!(
            refused.contains(&format!("(pid {})", std::process::id())),
            "{refused}"
        );
        drop(first);
        Owner::claim(&db).expect("free again");
    }
}
