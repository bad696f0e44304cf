//! The open-file limit, checked at start. Every REST and gRPC connection,
//! every store connection and the SQLite files take a file descriptor; at
//! the limit `accept` fails and clients wait, whatever
//! `--http-max-connections` says.
//!
//! Core raises its soft limit to the hard limit (as Go's runtime does; the
//! soft limit is often 1,024 while the hard one is far higher) and warns
//! when even that leaves fewer than the REST connection cap plus
//! [`RESERVED`] for everything else.

/// Descriptors kept for what is not a REST connection: gRPC connections,
/// the store's pool, SQLite's files, logs.
pub const RESERVED: u64 = 256;

/// What [`raise`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit before.
    pub was: u64,
    /// The soft limit now.
    pub now: u64,
}

/// Raises the soft open-file limit to the hard limit. `None` where the
/// limit cannot be read.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
pub fn raise() -> Option<Limit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        let was = limit.rlim_cur as u64;
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        Some(Limit {
            was,
            now: limit.rlim_cur as u64,
        })
    }
}

#[cfg(not(unix))]
pub fn raise() -> Option<Limit> {
    None
}

/// The warning to log when `limit` leaves too few descriptors for
/// `max_connections` REST connections and the rest.
pub fn warning(limit: Limit, max_connections: u64) -> Option<String> {
    let needed = max_connections + RESERVED;
    (limit.now < needed).then(|| {
        format!(
            "the open-file limit is {} (hard limit; ulimit -n), below --http-max-connections \
             ({max_connections}) + {RESERVED} for gRPC, the store and files: at the limit new \
             connections wait in the kernel's queue; raise it (ulimit -Hn, systemd LimitNOFILE=) \
             or lower --http-max-connections",
            limit.now
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_below_the_cap_plus_the_reserve() {
        let limit = |now| Limit { was: 1024, now };
        assert_eq!(warning(limit(4096 + RESERVED), 4096), None);
        let text = warning(limit(4096), 4096).expect("a warning");
        assert!(
            text.contains("4096") && text.contains("--http-max-connections"),
            "{text}"
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise().expect("readable on unix");
        assert!(limit.now >= limit.was, "{limit:?}");
        // A second call finds it already raised.
        assert_eq!(raise().map(|l| l.was), Some(limit.now));
    }
}
