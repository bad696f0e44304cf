//! Several cores on one database: one leads, the others stand by and refuse
//! every call with `UNAVAILABLE`, naming the leader's gRPC URL in the
//! [`LEADER_METADATA`] metadata. A client given several cores ([`urls`])
//! tries them in turn ([`Rotation`]) and backs off only after a whole
//! round; a refusal by a standby ([`is_standby`]) stored nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The metadata key in which a standby names the leader's gRPC URL.
pub const LEADER_METADATA: &str = "ackflow-leader";

/// The URLs of a comma-separated `--core` list, trimmed, empty ones left out.
pub fn urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether `status` is a standby's refusal.
pub fn is_standby(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && (status.metadata().contains_key(LEADER_METADATA) || status.message().contains("standby"))
}

/// Which of `len` cores to try now, shared by the clones of one client.
#[derive(Debug, Clone)]
pub struct Rotation {
    len: usize,
    at: Arc<AtomicUsize>,
}

impl Rotation {
    /// Starts at the first of `len` cores (at least one).
    pub fn new(len: usize) -> Self {
        Self {
            len: len.max(1),
            at: Arc::default(),
        }
    }

    /// The index of the core to try now.
    pub fn current(&self) -> usize {
        self.at.load(Ordering::Relaxed) % self.len
    }

    /// Moves on to the next core; true when that starts a new round (time
    /// to back off).
    pub fn advance(&self) -> bool {
        let next = (self.current() + 1) % self.len;
        self.at.store(next, Ordering::Relaxed);
        next == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_goes_round_and_says_when_a_round_ends() {
        assert_eq!(
            urls(" http://a:1, ,http://b:2 "),
            ["http://a:1", "http://b:2"]
        );
        let rotation = Rotation::new(2);
        let shared = rotation.clone();
        assert_eq!(rotation.current(), 0);
        assert!(!rotation.advance());
        assert_eq!(shared.current(), 1, "clones share the choice");
        assert!(rotation.advance(), "a whole round");
        assert_eq!(rotation.current(), 0);
        let alone = Rotation::new(1);
        assert!(alone.advance(), "one core: every failure ends a round");
    }

    #[test]
    fn a_standby_refusal_is_recognised() {
        let mut named = tonic::Status::unavailable("this core is a standby");
        assert!(is_standby(&named));
        named
            .metadata_mut()
            .insert(LEADER_METADATA, "http://a:1".parse().unwrap());
        assert!(is_standby(&named));
        assert!(!is_standby(&tonic::Status::unavailable("store down")));
        assert!(!is_standby(&tonic::Status::internal("standby")));
    }
}
