//! Many rows in one `INSERT`: multi-row `VALUES` in chunks of a few fixed
//! sizes.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every
//! statement is a message to that thread and an answer back: two context
//! switches. One statement per row made those switches most of the CPU a
//! commit took (72 % of the samples of a process doing nothing but
//! appending and resolving). Event, result and dead rows are all inserted
//! this way. A batch is cut into chunks of
//! [`CHUNKS`] rows, largest first, so a handful of statements cover any
//! batch and the connection's statement cache holds a few of them.

use std::ops::Range;

/// Rows per statement, largest first; the last must be 1. 256 rows of the
/// widest table (9 columns) bind 2,304 values, far below SQLite's 32,766.
pub(super) const CHUNKS: [usize; 4] = [256, 32, 8, 1];

/// Bytes of row data one statement may carry. sqlx copies a statement's
/// arguments for the connection's thread, so a chunk of large events is
/// cut short rather than copied whole: a commit of 1 MiB events still goes
/// one row a statement, as they all did before.
pub(super) const CHUNK_BYTES: usize = 4 << 20;

/// The row ranges of a batch of `n` rows, in order: at each point the
/// largest chunk size that fits in the rows left and within
/// [`CHUNK_BYTES`] (`bytes(i)`: row `i`'s large values), else one row.
pub(super) fn chunks(n: usize, bytes: impl Fn(usize) -> usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let size = CHUNKS
            .iter()
            .copied()
            .find(|&size| {
                size == 1
                    || (size <= n - start
                        && (start..start + size).map(&bytes).sum::<usize>() <= CHUNK_BYTES)
            })
            .unwrap_or(1);
        out.push(start..start + size);
        start += size;
    }
    out
}

/// One statement per chunk size: `head` followed by `rows` groups of
/// `columns` placeholders, then `tail`.
pub(super) struct Insert {
    sql: Vec<String>,
}

impl Insert {
    pub(super) fn new(head: &str, columns: usize, tail: &str) -> Self {
        let row = format!("({})", vec!["?"; columns].join(", "));
        let sql = CHUNKS
            .iter()
            .map(|&rows| {
                format!(
                    "{head} VALUES {}{tail}",
                    vec![row.as_str(); rows].join(", ")
                )
            })
            .collect();
        Self { sql }
    }

    /// The statement for a chunk of `rows` rows (one of [`CHUNKS`]).
    pub(super) fn sql(&self, rows: usize) -> &str {
        let i = CHUNKS
            .iter()
            .position(|&c| c == rows)
            .expect("a chunk is one of CHUNKS");
        &self.sql[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once_in_order() {
        for n in [0, 1, 7, 8, 255, 256, 257, 300, 4096, 4097] {
            let chunks = chunks(n, |_| 100);
            let mut next = 0;
            for c in &chunks {
                assert_eq!(c.start, next);
                assert!(CHUNKS.contains(&c.len()), "{n}: a chunk of {}", c.len());
                next = c.end;
            }
            assert_eq!(next, n);
        }
        assert_eq!(chunks(300, |_| 100).len(), 1 + 1 + 1 + 4);
    }

    #[test]
    fn chunks_stay_within_their_bytes() {
        // 100 KB rows: 256 would be 25 MB, 32 are 3.2 MB.
        assert!(chunks(300, |_| 100_000).iter().all(|c| c.len() <= 32));
        // 1 MiB rows: one a statement.
        assert!(chunks(20, |_| 1 << 20).iter().all(|c| c.len() == 1));
        // One large row among small ones cuts only the chunks it is in.
        let sizes: Vec<usize> = chunks(300, |i| if i == 5 { 8 << 20 } else { 10 })
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 300);
        assert_eq!(&sizes[..6], &[1, 1, 1, 1, 1, 1]);
        assert!(sizes.contains(&256));
    }

    #[test]
    fn a_statement_has_a_placeholder_per_value() {
        let insert = Insert::new("INSERT INTO t (a, b)", 2, " ON CONFLICT DO NOTHING");
        assert_eq!(
            insert.sql(1),
            "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING"
        );
        assert_eq!(insert.sql(8).matches('?').count(), 16);
    }
}
