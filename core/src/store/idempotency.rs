//! Which events of a group commit are stored, replayed or refused: the
//! idempotency rules, shared by both stores so they cannot disagree.
//!
//! A store reads the rows of every idempotency key in the batch (inside the
//! commit's transaction), then [`plan`] walks the requests in order:
//!
//! - a key not seen before is stored with the next seq, and from then on
//!   stands for that event — for later events of the same request and for
//!   later requests of the same commit too;
//! - a key seen before with the same fingerprint (or with none: rows stored
//!   before fingerprints existed) is a replay: the original seq and id,
//!   nothing stored;
//! - a key seen before with another fingerprint is a [`Conflict`]: the whole
//!   request is refused, its seqs are given back and the keys it introduced
//!   are forgotten, so a later request of the same commit is judged as if
//!   the refused one had never been sent.
//!
//! Only the ingest writer appends, one batch at a time, so a key cannot be
//! stored between the read and the insert; the unique index on
//! `idempotency_key` still makes a second event for one key impossible.

use std::collections::HashMap;

use super::StoreError;
use crate::model::{AppendBatch, Appended, Conflict, Original, RequestOutcome, Seq};

/// An idempotency key as the store holds it.
pub(crate) struct StoredKey {
    pub seq: Seq,
    pub id: String,
    /// `None` for rows stored before fingerprints existed.
    pub fingerprint: Option<Vec<u8>>,
}

/// A row of the stores' key lookup: key, seq, id, fingerprint.
pub(crate) type KeyRow = (String, i64, String, Option<Vec<u8>>);

/// The stored keys, by key, from the rows of the stores' key lookup.
pub(crate) fn stored_keys(rows: Vec<KeyRow>) -> Result<HashMap<String, StoredKey>, StoreError> {
    rows.into_iter()
        .map(|(key, seq, id, fingerprint)| {
            let seq = super::seq_from_db(seq)?;
            Ok((
                key,
                StoredKey {
                    seq,
                    id,
                    fingerprint,
                },
            ))
        })
        .collect()
}

/// What to do with a batch.
#[derive(Debug)]
pub(crate) struct Plan {
    /// One outcome per request, in order.
    pub outcomes: Vec<RequestOutcome>,
    /// Positions in the batch of the events to insert; the i-th gets
    /// `first_seq + i`.
    pub insert: Vec<usize>,
}

/// Where a key seen in this batch came from.
struct Seen<'a> {
    seq: Seq,
    id: &'a str,
    fingerprint: Option<&'a [u8]>,
    /// Request and position in it, for a key introduced by this batch.
    origin: Option<(usize, usize)>,
}

/// Decides every event of `batch`, given the stored rows of its keys.
pub(crate) fn plan(
    first_seq: Seq,
    batch: &AppendBatch,
    stored: &HashMap<String, StoredKey>,
) -> Plan {
    let events = batch.events();
    let ids = batch.ids();
    let fingerprints = batch.fingerprints();
    let mut seen: HashMap<&str, Seen<'_>> = stored
        .iter()
        .map(|(key, row)| {
            let seen = Seen {
                seq: row.seq,
                id: &row.id,
                fingerprint: row.fingerprint.as_deref(),
                origin: None,
            };
            (key.as_str(), seen)
        })
        .collect();
    let mut outcomes = Vec::with_capacity(batch.requests().len());
    let mut insert = Vec::with_capacity(events.len());
    let mut next = first_seq;
    let mut start = 0;
    for (request, &size) in batch.requests().iter().enumerate() {
        let range = start..start + size;
        start += size;
        let next_before = next;
        let inserts_before = insert.len();
        let mut introduced: Vec<&str> = Vec::new();
        let mut appended = Vec::with_capacity(size);
        let mut conflict = None;
        for (index, i) in range.enumerate() {
            let fingerprint = fingerprints[i].as_ref().map(|f| f.as_slice());
            if let Some(key) = events[i].idempotency_key.as_deref() {
                if let Some(first) = seen.get(key) {
                    let same = match (first.fingerprint, fingerprint) {
                        (Some(a), Some(b)) => a == b,
                        // A row from before fingerprints: replay, as before.
                        _ => true,
                    };
                    if same {
                        appended.push(Appended {
                            seq: first.seq,
                            id: first.id.to_string(),
                            replayed: true,
                        });
                        continue;
                    }
                    let original = match first.origin {
                        Some((r, earlier)) if r == request => Original::Earlier { index: earlier },
                        _ => Original::Stored { seq: first.seq },
                    };
                    conflict = Some(Conflict {
                        index,
                        idempotency_key: key.to_string(),
                        original,
                    });
                    break;
                }
                seen.insert(
                    key,
                    Seen {
                        seq: next,
                        id: &ids[i],
                        fingerprint,
                        origin: Some((request, index)),
                    },
                );
                introduced.push(key);
            }
            appended.push(Appended {
                seq: next,
                id: ids[i].clone(),
                replayed: false,
            });
            insert.push(i);
            next += 1;
        }
        match conflict {
            None => outcomes.push(Ok(appended)),
            Some(conflict) => {
                // Nothing of this request is stored: give its seqs back
                // and forget the keys it introduced.
                next = next_before;
                insert.truncate(inserts_before);
                for key in introduced {
                    seen.remove(key);
                }
                outcomes.push(Err(conflict));
            }
        }
    }
    Plan { outcomes, insert }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewEvent;

    fn event(payload: &str, key: Option<&str>) -> NewEvent {
        NewEvent {
            kind: "sum".into(),
            key: None,
            payload: payload.as_bytes().to_vec(),
            idempotency_key: key.map(str::to_string),
            traceparent: None,
        }
    }

    fn batch(requests: &[&[NewEvent]]) -> AppendBatch {
        let mut batch = AppendBatch::new();
        let mut n = 0;
        for events in requests {
            let ids = events
                .iter()
                .map(|_| {
                    n += 1;
                    format!("id{n}")
                })
                .collect();
            let fingerprints = events.iter().map(NewEvent::fingerprint).collect();
            batch.push(ids, events.to_vec(), fingerprints);
        }
        batch
    }

    fn stored(key: &str, seq: Seq, like: Option<&NewEvent>) -> HashMap<String, StoredKey> {
        HashMap::from([(
            key.to_string(),
            StoredKey {
                seq,
                id: format!("old{seq}"),
                fingerprint: like.and_then(NewEvent::fingerprint).map(|f| f.to_vec()),
            },
        )])
    }

    fn seqs(outcome: &RequestOutcome) -> Vec<(Seq, bool)> {
        outcome
            .as_ref()
            .expect("accepted")
            .iter()
            .map(|a| (a.seq, a.replayed))
            .collect()
    }

    #[test]
    fn the_fingerprint_covers_kind_key_and_payload() {
        let a = event("[1]", Some("k"));
        let fp = a.fingerprint().expect("keyed");
        let mut other_kind = a.clone();
        other_kind.kind = "sha256".into();
        let mut other_key = a.clone();
        other_key.key = Some("x".into());
        let mut empty_key = a.clone();
        empty_key.key = Some(String::new());
        let mut other_payload = a.clone();
        other_payload.payload = b"[2]".to_vec();
        let mut other_idempotency_key = a.clone();
        other_idempotency_key.idempotency_key = Some("j".into());
        for other in [&other_kind, &other_key, &empty_key, &other_payload] {
            assert_ne!(other.fingerprint(), Some(fp), "{other:?}");
        }
        // The idempotency key itself is what is looked up, not hashed.
        assert_eq!(other_idempotency_key.fingerprint(), Some(fp));
        assert_eq!(event("[1]", None).fingerprint(), None);
        // Length prefixes: moving a byte from kind to key changes the hash.
        let mut ab = a.clone();
        (ab.kind, ab.key) = ("ab".into(), Some("c".into()));
        let mut a_bc = a.clone();
        (a_bc.kind, a_bc.key) = ("a".into(), Some("bc".into()));
        assert_ne!(ab.fingerprint(), a_bc.fingerprint());
    }

    #[test]
    fn same_request_replays_and_a_different_one_conflicts() {
        let original = event("[1]", Some("k"));
        let keys = stored("k", 7, Some(&original));
        let plan = plan(
            10,
            &batch(&[std::slice::from_ref(&original), &[event("[2]", Some("k"))]]),
            &keys,
        );
        assert_eq!(seqs(&plan.outcomes[0]), vec![(7, true)]);
        assert_eq!(plan.outcomes[0].as_ref().unwrap()[0].id, "old7");
        assert_eq!(
            plan.outcomes[1],
            Err(Conflict {
                index: 0,
                idempotency_key: "k".into(),
                original: Original::Stored { seq: 7 },
            })
        );
        assert!(plan.insert.is_empty());
    }

    #[test]
    fn a_row_without_a_fingerprint_replays() {
        let plan = plan(
            10,
            &batch(&[&[event("[2]", Some("k"))]]),
            &stored("k", 7, None),
        );
        assert_eq!(seqs(&plan.outcomes[0]), vec![(7, true)]);
    }

    #[test]
    fn a_conflict_refuses_its_whole_request_and_only_it() {
        let keys = stored("k", 7, Some(&event("[1]", Some("k"))));
        let plan = plan(
            10,
            &batch(&[
                &[event("a", None)],
                &[
                    event("b", Some("new")),
                    event("[2]", Some("k")),
                    event("c", None),
                ],
                &[event("d", Some("new"))],
            ]),
            &keys,
        );
        assert_eq!(seqs(&plan.outcomes[0]), vec![(10, false)]);
        assert_eq!(
            plan.outcomes[1],
            Err(Conflict {
                index: 1,
                idempotency_key: "k".into(),
                original: Original::Stored { seq: 7 },
            })
        );
        // The refused request's key "new" is forgotten: the next request
        // stores it, with the seq the refused request gave back.
        assert_eq!(seqs(&plan.outcomes[2]), vec![(11, false)]);
        assert_eq!(plan.insert, vec![0, 4]);
    }

    #[test]
    fn one_key_twice_in_a_request() {
        let same = plan(
            1,
            &batch(&[&[
                event("[1]", Some("k")),
                event("x", None),
                event("[1]", Some("k")),
            ]]),
            &HashMap::new(),
        );
        assert_eq!(
            seqs(&same.outcomes[0]),
            vec![(1, false), (2, false), (1, true)]
        );
        assert_eq!(same.insert, vec![0, 1]);

        let different = plan(
            1,
            &batch(&[&[
                event("x", None),
                event("[1]", Some("k")),
                event("[2]", Some("k")),
            ]]),
            &HashMap::new(),
        );
        assert_eq!(
            different.outcomes[0],
            Err(Conflict {
                index: 2,
                idempotency_key: "k".into(),
                original: Original::Earlier { index: 1 },
            })
        );
        assert!(different.insert.is_empty());
    }

    #[test]
    fn requests_of_one_commit_see_each_other() {
        let plan = plan(
            5,
            &batch(&[
                &[event("[1]", Some("k"))],
                &[event("[1]", Some("k"))],
                &[event("[2]", Some("k"))],
            ]),
            &HashMap::new(),
        );
        assert_eq!(seqs(&plan.outcomes[0]), vec![(5, false)]);
        assert_eq!(seqs(&plan.outcomes[1]), vec![(5, true)]);
        assert_eq!(
            plan.outcomes[2],
            Err(Conflict {
                index: 0,
                idempotency_key: "k".into(),
                original: Original::Stored { seq: 5 },
            })
        );
        assert_eq!(plan.insert, vec![0]);
    }
}
