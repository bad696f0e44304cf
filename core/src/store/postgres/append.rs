//! The event rows' insert, shared by both forms of `append` (one fenced
//! statement, or inside the transaction that reads idempotency keys).

use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

use super::lease::{FENCE, FENCED};
use crate::model::{AppendBatch, Seq};
use crate::store::seq_to_db;

/// The event rows' insert, fenced (`lease::FENCE`): `$3`… the columns,
/// `$11` the commit's time.
pub(super) fn insert_events_sql() -> String {
    format!(
        "WITH {FENCE} \
         INSERT INTO events (seq, id, kind, key, payload, idempotency_key, \
             idempotency_fingerprint, traceparent, published_at_us) \
         SELECT s, i, k, ky, p, ik, fp, tp, $11 \
         FROM UNNEST($3::int8[], $4::text[], $5::text[], $6::text[], $7::bytea[], \
                     $8::text[], $9::bytea[], $10::text[]) AS t(s, i, k, ky, p, ik, fp, tp) \
         CROSS JOIN {FENCED}"
    )
}

/// Binds the events of `batch` at `insert` (indexes into it, given seqs
/// from `first_seq` on) to [`insert_events_sql`].
pub(super) fn bind_events<'q>(
    query: Query<'q, Postgres, PgArguments>,
    first_seq: Seq,
    batch: &'q AppendBatch,
    insert: &[usize],
    published_at_us: i64,
) -> Query<'q, Postgres, PgArguments> {
    let events = batch.events();
    let n = insert.len();
    let mut seqs = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut keys: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut payloads: Vec<&[u8]> = Vec::with_capacity(n);
    let mut idem: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut fingerprints: Vec<Option<&[u8]>> = Vec::with_capacity(n);
    let mut traceparents: Vec<Option<&str>> = Vec::with_capacity(n);
    for (&i, seq) in insert.iter().zip(first_seq..) {
        let event = &events[i];
        seqs.push(seq_to_db(seq));
        ids.push(batch.ids()[i].as_str());
        kinds.push(event.kind.as_str());
        keys.push(event.key.as_deref());
        payloads.push(&event.payload[..]);
        idem.push(event.idempotency_key.as_deref());
        fingerprints.push(batch.fingerprints()[i].as_ref().map(|f| f.as_slice()));
        traceparents.push(event.traceparent.as_deref());
    }
    query
        .bind(seqs)
        .bind(ids)
        .bind(kinds)
        .bind(keys)
        .bind(payloads)
        .bind(idem)
        .bind(fingerprints)
        .bind(traceparents)
        .bind(published_at_us)
}
