//! Which processor gets which key when several share keyed work.
//!
//! A key belongs to one of a fixed number of partitions: a stable hash of
//! the key (64-bit FNV-1a, the same on every platform and in every
//! release, since it decides where a key's events go) modulo the count.
//! Events without a key share the empty key, so they are one partition, as
//! they are one lane.
//!
//! A partition goes to the processor whose id scores highest for it
//! (rendezvous hashing): a pure function of the ids present, so
//!
//! * a processor joining takes only the partitions it now scores highest
//!   for, about `1/n` of them, each from one other processor, and nothing
//!   else moves;
//! * a processor leaving gives up only its own, spread over the others;
//! * a processor coming back with the same id gets the same partitions
//!   back (static membership), with no state kept while it was away.
//!
//! The shares are even on average, not exactly: with 256 partitions and
//! two to four processors, each gets within a third of its even share (the
//! tests check the ids they use).

/// Partitions when core's `--partitions` is not given.
pub const DEFAULT_PARTITIONS: u32 = 256;

/// The partition of `key` among `partitions` (at least 1).
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    (fnv1a(key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// The member that owns `partition`: the index into `members` of the id
/// scoring highest for it (ties to the lower index); `None` without
/// members.
pub fn owner<S: AsRef<str>>(partition: u32, members: &[S]) -> Option<usize> {
    members
        .iter()
        .enumerate()
        .map(|(i, id)| (score(id.as_ref(), partition), std::cmp::Reverse(i)))
        .max()
        .map(|(_, std::cmp::Reverse(i))| i)
}

/// The owner of every partition, by partition (see [`owner`]); empty
/// without members.
pub fn assign<S: AsRef<str>>(partitions: u32, members: &[S]) -> Vec<usize> {
    if members.is_empty() {
        return Vec::new();
    }
    (0..partitions.max(1))
        .map(|p| owner(p, members).expect("members is not empty"))
        .collect()
}

/// How much `id` wants `partition`.
fn score(id: &str, partition: u32) -> u64 {
    splitmix64(fnv1a(id.as_bytes()) ^ u64::from(partition).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A finaliser that spreads close inputs over the whole range.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids as processors get them: `--processor-id`, or host and pid.
    const IDS: [&str; 5] = [
        "worker-a",
        "worker-b",
        "worker-c",
        "host-1:4121",
        "host-2:977",
    ];

    #[test]
    fn a_key_s_partition_never_changes() {
        // Fixed values: a change of hash would move every key.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(partition_of("order-17", 256), partition_of("order-17", 256));
        assert_eq!(
            partition_of("", 256),
            (0xcbf2_9ce4_8422_2325u64 % 256) as u32
        );
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0, "at least one partition");
    }

    #[test]
    fn keys_spread_over_the_partitions() {
        let mut counts = vec![0u32; 16];
        for i in 0..16_000 {
            counts[partition_of(&format!("customer-{i}"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn shares_are_within_a_third_of_even() {
        for n in 2..=4 {
            let owners = assign(DEFAULT_PARTITIONS, &IDS[..n]);
            let even = DEFAULT_PARTITIONS as usize / n;
            for m in 0..n {
                let share = owners.iter().filter(|o| **o == m).count();
                assert!(
                    share * 3 >= even * 2 && share * 3 <= even * 4,
                    "{n} members: member {m} owns {share}, even is {even}"
                );
            }
        }
    }

    #[test]
    fn a_join_moves_only_what_the_newcomer_takes() {
        let before = assign(DEFAULT_PARTITIONS, &IDS[..3]);
        let after = assign(DEFAULT_PARTITIONS, &IDS[..4]);
        let moved: Vec<usize> = (0..before.len())
            .filter(|p| before[*p] != after[*p])
            .collect();
        assert!(moved.iter().all(|p| after[*p] == 3), "only to the newcomer");
        assert!(
            moved.len() * 3 >= 64 * 2,
            "it takes about a quarter: {}",
            moved.len()
        );
    }

    #[test]
    fn a_leave_moves_only_the_leaver_s_and_a_return_gets_them_back() {
        let all = assign(DEFAULT_PARTITIONS, &IDS[..3]);
        // worker-b (index 1) leaves: the others keep theirs.
        let left = assign(DEFAULT_PARTITIONS, &[IDS[0], IDS[2]]);
        for p in 0..all.len() {
            match all[p] {
                0 => assert_eq!(left[p], 0),
                2 => assert_eq!(left[p], 1),
                _ => {}
            }
        }
        // It comes back, listed in another order: the same partitions.
        let back = assign(DEFAULT_PARTITIONS, &[IDS[2], IDS[1], IDS[0]]);
        for p in 0..all.len() {
            assert_eq!([2, 1, 0][back[p]], all[p], "partition {p}");
        }
    }

    #[test]
    fn no_members_own_nothing() {
        assert_eq!(owner::<&str>(3, &[]), None);
        assert!(assign::<&str>(8, &[]).is_empty());
        assert_eq!(assign(8, &["only"]), vec![0; 8]);
    }
}
