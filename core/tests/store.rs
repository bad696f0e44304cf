//! One store suite, run against SQLite and PostgreSQL.
//!
//! The PostgreSQL half uses a private schema per test on the server named by
//! `ACKFLOW_TEST_PG` or `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).
//! It fails, never skips, when PostgreSQL is unreachable.

use std::sync::Arc;

use ackflow_core::metrics::CoreMetrics;
use ackflow_core::model::{
    AppendBatch, Appended, Conflict, DeadRow, DeliveryState, EventView, NewEvent, Original,
    ResultRow, ResultStatus, StatusFilter,
};
use ackflow_core::retention;
use ackflow_core::store::postgres::PgStore;
use ackflow_core::store::sqlite::SqliteStore;
use ackflow_core::store::{SharedStore, Store, StoreError};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

/// Keeps a test's database alive for the test's duration.
enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    /// The PostgreSQL server and the test's schema, dropped after the test.
    Schema(String, String),
}

impl Guard {
    /// Removes what the test created (a failed test leaves its schema for
    /// inspection).
    async fn cleanup(self) {
        if let Guard::Schema(server, schema) = self
            && let Ok(mut conn) = sqlx::PgConnection::connect(&server).await
        {
            let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await;
        }
    }
}

async fn sqlite() -> (SharedStore, Guard) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("test.db").display());
    let store = SqliteStore::open(&url).await.expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    (Arc::new(store), Guard::Dir(dir))
}

async fn postgres() -> (SharedStore, Guard) {
    let (server, schema) = crate::common::pg_schema("store_test").await;
    let options: sqlx::postgres::PgConnectOptions = server.parse().expect("url");
    let options = options.options([("search_path", schema.as_str())]);
    let store = PgStore::connect_with(options).await.expect("connect");
    store.migrate().await.expect("migrate postgres");
    (Arc::new(store), Guard::Schema(server, schema))
}

fn event(kind: &str, payload: &str, key: Option<&str>) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        key: Some("k".into()),
        payload: payload.as_bytes().to_vec(),
        idempotency_key: key.map(str::to_string),
        traceparent: None,
    }
}

/// Appends `events` as one request, which must not conflict.
async fn append(
    store: &SharedStore,
    first_seq: u64,
    at: i64,
    ids: &[String],
    events: &[NewEvent],
) -> Result<Vec<Appended>, StoreError> {
    let batch = AppendBatch::one_request(ids.to_vec(), events.to_vec());
    let mut outcomes = store.append(first_seq, at, &batch).await?;
    assert_eq!(outcomes.len(), 1, "one outcome per request");
    Ok(outcomes.pop().unwrap().expect("no idempotency conflict"))
}

fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("id{i:04}-{:x}", fastrand::u32(..)))
        .collect()
}

fn result(seq: u64, status: ResultStatus, output: &str) -> ResultRow {
    ResultRow {
        seq,
        status,
        output: output.into(),
        attempt: 1,
        processing_us: 5,
        stored_at_us: 1_000,
    }
}

async fn append_assigns_consecutive_seqs_and_replays_keys(store: SharedStore) {
    assert_eq!(store.next_seq().await.unwrap(), 1);
    let batch = vec![
        event("sha256", "1", None),
        event("sha256", "2", Some("a")),
        event("sha256", "2", Some("a")),
        event("sum", "[4]", None),
    ];
    let ids = ids(batch.len());
    let out = append(&store, 1, 42, &ids, &batch).await.unwrap();
    let seqs: Vec<(u64, bool)> = out.iter().map(|a| (a.seq, a.replayed)).collect();
    assert_eq!(seqs, vec![(1, false), (2, false), (2, true), (3, false)]);
    assert_eq!(out[2].id, ids[1], "a replay returns the original id");
    assert_eq!(store.next_seq().await.unwrap(), 4);

    let again = append(
        &store,
        4,
        43,
        &self::ids(2),
        &[event("sha256", "2", Some("a")), event("x", "6", Some("b"))],
    )
    .await
    .unwrap();
    assert_eq!((again[0].seq, again[0].replayed), (2, true));
    assert_eq!((again[1].seq, again[1].replayed), (4, false));

    let events = store.events_from(2, 10, usize::MAX).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    assert_eq!(events[0].payload, b"2");
    assert_eq!(events[0].published_at_us, 42);
    assert_eq!(store.events_from(1, 2, usize::MAX).await.unwrap().len(), 2);
}

async fn a_failed_batch_stores_nothing(store: SharedStore) {
    append(&store, 1, 1, &ids(1), &[event("k", "1", None)])
        .await
        .unwrap();
    // Seq 1 is taken: the whole batch must fail and leave nothing behind.
    let err = append(
        &store,
        0,
        1,
        &ids(3),
        &[
            event("k", "a", None),
            event("k", "b", None),
            event("k", "c", None),
        ],
    )
    .await
    .expect_err("a batch at a taken seq was stored");
    assert_eq!(err.kind(), "constraint", "not the taken seq: {err}");
    assert_eq!(store.next_seq().await.unwrap(), 2);
    assert_eq!(store.events_from(0, 10, usize::MAX).await.unwrap().len(), 1);
}

async fn results_are_stored_once_and_the_floor_only_moves_forward(store: SharedStore) {
    let batch: Vec<NewEvent> = (0..5).map(|i| event("k", &i.to_string(), None)).collect();
    append(&store, 1, 1, &ids(5), &batch).await.unwrap();
    store
        .resolve(
            &[
                result(1, ResultStatus::Ok, "first"),
                result(3, ResultStatus::Failed, "boom"),
            ],
            &[],
            2,
        )
        .await
        .unwrap();
    store
        .resolve(&[result(1, ResultStatus::Ok, "second")], &[], 1)
        .await
        .unwrap();
    let view = store.event(1).await.unwrap().unwrap();
    assert_eq!(
        view.result.unwrap().output,
        "first",
        "an existing result wins"
    );
    let cursor = store.delivery_cursor().await.unwrap();
    assert_eq!(cursor.acked_floor, 2, "the floor never moves back");
    assert_eq!(cursor.resolved_above, vec![3]);

    store
        .resolve(
            &[],
            &[DeadRow {
                seq: 4,
                reason: "poison".into(),
                attempts: 9,
                parked_at_us: 7,
            }],
            2,
        )
        .await
        .unwrap();
    let states: Vec<DeliveryState> = {
        let mut v = Vec::new();
        for seq in 1..=5 {
            v.push(store.event(seq).await.unwrap().unwrap().state);
        }
        v
    };
    assert_eq!(
        states,
        vec![
            DeliveryState::Done(ResultStatus::Ok),
            DeliveryState::Pending,
            DeliveryState::Done(ResultStatus::Failed),
            DeliveryState::Dead,
            DeliveryState::Pending
        ]
    );
    assert_eq!(
        store.delivery_cursor().await.unwrap().resolved_above,
        vec![3, 4]
    );
    let pending: Vec<u64> = store
        .list_events(0, 10, Some(StatusFilter::Pending))
        .await
        .unwrap()
        .iter()
        .map(|v| v.event.seq)
        .collect();
    assert_eq!(pending, vec![2, 5]);
    let failed = store
        .list_events(0, 10, Some(StatusFilter::Failed))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    let all = store.list_events(2, 2, None).await.unwrap();
    assert_eq!(
        all.iter().map(|v| v.event.seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(store.event(99).await.unwrap().is_none());
}

async fn dead_events_are_listed_and_requeued_once(store: SharedStore) {
    append(
        &store,
        1,
        1,
        &ids(2),
        &[event("fail", "1", None), event("fail", "2", None)],
    )
    .await
    .unwrap();
    store
        .resolve(
            &[],
            &[
                DeadRow {
                    seq: 1,
                    reason: "r1".into(),
                    attempts: 3,
                    parked_at_us: 1,
                },
                DeadRow {
                    seq: 2,
                    reason: "r2".into(),
                    attempts: 4,
                    parked_at_us: 2,
                },
            ],
            3,
        )
        .await
        .unwrap();
    let dead = store.dead_events(10).await.unwrap();
    assert_eq!(
        dead.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![2, 1],
        "newest first"
    );
    assert_eq!(dead[0].kind, "fail");
    assert!(store.mark_requeued(2, 3).await.unwrap());
    assert!(!store.mark_requeued(2, 4).await.unwrap(), "only once");
    assert!(!store.mark_requeued(9, 4).await.unwrap(), "not dead");
    assert_eq!(store.dead_events(10).await.unwrap().len(), 1);
    let view = store.event(2).await.unwrap().unwrap();
    assert_eq!(view.dead.unwrap().requeued_as, Some(3));
}

/// The seqs that have a result row, read past the store's API (a result
/// whose event is gone would be invisible through it).
async fn result_seqs(guard: &Guard) -> Vec<i64> {
    let sql = |table: &str| format!("SELECT seq FROM {table} ORDER BY seq");
    match guard {
        Guard::Dir(dir) => {
            let url = format!("sqlite:{}", dir.path().join("test.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
            sqlx::query_scalar(&sql("results"))
                .fetch_all(&mut conn)
                .await
                .expect("read results")
        }
        Guard::Schema(server, schema) => {
            let mut conn = sqlx::PgConnection::connect(server).await.expect("pg");
            sqlx::query_scalar(&sql(&format!("{schema}.results")))
                .fetch_all(&mut conn)
                .await
                .expect("read results")
        }
    }
}

fn dead(seq: u64) -> DeadRow {
    DeadRow {
        seq,
        reason: "poison".into(),
        attempts: 3,
        parked_at_us: 1,
    }
}

async fn seqs_stored(store: &SharedStore) -> Vec<u64> {
    store
        .events_from(0, 100, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// Retention deletes resolved events (with their results) below the floor
/// and published before the cutoff, and nothing else.
async fn prune_deletes_only_old_resolved_events_below_the_floor(store: SharedStore, guard: &Guard) {
    const OLD: i64 = 100;
    const NEW: i64 = 5_000;
    const CUTOFF: i64 = 1_000;
    // Seqs 1-6 old (seq 1 with an idempotency key), 7-8 new.
    let old: Vec<NewEvent> = (1..=6)
        .map(|i| event("k", &i.to_string(), (i == 1).then_some("key-1")))
        .collect();
    append(&store, 1, OLD, &ids(6), &old).await.unwrap();
    let new = [event("k", "7", None), event("k", "8", None)];
    append(&store, 7, NEW, &ids(2), &new).await.unwrap();
    // 1 ok, 2 dead, 3 failed, 4 ok | floor 5 | 5 unresolved, 6 and 7
    // resolved ahead of the floor, 8 unresolved.
    store
        .resolve(
            &[
                result(1, ResultStatus::Ok, "a"),
                result(3, ResultStatus::Failed, "b"),
                result(4, ResultStatus::Ok, "c"),
                result(6, ResultStatus::Ok, "d"),
                result(7, ResultStatus::Ok, "e"),
            ],
            &[dead(2)],
            5,
        )
        .await
        .unwrap();
    assert_eq!(store.prune(CUTOFF, 100).await.unwrap(), 3);
    assert_eq!(
        seqs_stored(&store).await,
        vec![2, 5, 6, 7, 8],
        "dead, unresolved and above-floor events stay"
    );
    assert_eq!(
        result_seqs(guard).await,
        vec![6, 7],
        "results go with their events"
    );
    assert!(store.event(1).await.unwrap().is_none());
    assert_eq!(
        store.prune(CUTOFF, 100).await.unwrap(),
        0,
        "nothing left to prune"
    );

    // Everything resolved now: 5 and 6 are old and go; 7 is too new; 8 is
    // the highest seq, which stays whatever its age.
    store
        .resolve(
            &[
                result(5, ResultStatus::Ok, "f"),
                result(8, ResultStatus::Ok, "g"),
            ],
            &[],
            9,
        )
        .await
        .unwrap();
    assert_eq!(store.prune(CUTOFF, 100).await.unwrap(), 2);
    assert_eq!(seqs_stored(&store).await, vec![2, 7, 8], "too new stays");
    // A limit of 1 deletes one event per call; the highest seq never goes.
    assert_eq!(store.prune(i64::MAX, 1).await.unwrap(), 1);
    assert_eq!(store.prune(i64::MAX, 1).await.unwrap(), 0);
    assert_eq!(seqs_stored(&store).await, vec![2, 8]);
    assert_eq!(result_seqs(guard).await, vec![8]);
    assert_eq!(
        store.event(2).await.unwrap().unwrap().state,
        DeliveryState::Dead
    );
    assert_eq!(
        store.next_seq().await.unwrap(),
        9,
        "the next seq is unchanged: no seq is handed out twice"
    );
    let cursor = store.delivery_cursor().await.unwrap();
    assert_eq!(cursor.acked_floor, 9);

    // An idempotency key is honoured as long as its event is kept: once
    // seq 1 is pruned, "key-1" is free and stores a new event.
    let again = append(
        &store,
        9,
        NEW,
        &ids(1),
        &[event("k", "1 again", Some("key-1"))],
    )
    .await
    .unwrap();
    assert_eq!((again[0].seq, again[0].replayed), (9, false));
    assert_eq!(store.next_seq().await.unwrap(), 10);
    assert!(store.size_bytes().await.unwrap() > 0);
}

/// The retention task's round prunes in batches until none is left, and
/// counts what it deleted.
async fn a_retention_round_prunes_in_batches(store: SharedStore, _guard: &Guard) {
    let n = u64::from(retention::PRUNE_BATCH) * 2 + 5;
    let batch: Vec<NewEvent> = (0..n).map(|i| event("k", &i.to_string(), None)).collect();
    append(&store, 1, 100, &ids(batch.len()), &batch)
        .await
        .unwrap();
    let results: Vec<ResultRow> = (1..=n).map(|s| result(s, ResultStatus::Ok, "x")).collect();
    store.resolve(&results, &[], n + 1).await.unwrap();
    let metrics = CoreMetrics::new();
    let round = retention::prune_round(&*store, 1_000, &metrics, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(round.pruned, n - 1, "all but the highest seq");
    assert!(!round.hit_limit);
    assert_eq!(metrics.pruned_events.get(), n - 1);
    assert_eq!(seqs_stored(&store).await, vec![n]);
    assert_eq!(store.next_seq().await.unwrap(), n + 1);
}

/// The stores as ackflow opens them lose nothing acknowledged (the shared
/// test server runs PostgreSQL's defaults).
async fn the_default_settings_are_durable(store: SharedStore) {
    assert_eq!(
        store.durability_risks().await.unwrap(),
        Vec::<String>::new()
    );
}

/// Adds `events` to `batch` as one request.
fn push(batch: &mut AppendBatch, events: Vec<NewEvent>) {
    let fingerprints = events.iter().map(NewEvent::fingerprint).collect();
    batch.push(ids(events.len()), events, fingerprints);
}

fn conflict(index: usize, key: &str, original: Original) -> Conflict {
    Conflict {
        index,
        idempotency_key: key.into(),
        original,
    }
}

/// A key reused with another kind, key or payload refuses its whole
/// request — and only it: the other requests of the same commit are stored
/// or replayed, with no gap in the seqs.
async fn a_reused_key_refuses_only_its_own_request(store: SharedStore) {
    let original = event("sum", "[1]", Some("a"));
    append(&store, 1, 1, &ids(1), std::slice::from_ref(&original))
        .await
        .unwrap();
    let mut batch = AppendBatch::new();
    // 0: an innocent neighbour.
    push(&mut batch, vec![event("sum", "[9]", None)]);
    // 1: "a" with another payload, behind a new key "b" and before an
    // unkeyed event: nothing of it may be stored.
    push(
        &mut batch,
        vec![
            event("sum", "[2]", Some("b")),
            event("sum", "[2]", Some("a")),
            event("sum", "[3]", None),
        ],
    );
    // 2: "b" again, now with a body of its own (request 1's "b" was
    // refused with it), and a replay of "a".
    push(
        &mut batch,
        vec![event("sum", "[4]", Some("b")), original.clone()],
    );
    // 3: one key twice in one request, with different payloads.
    push(
        &mut batch,
        vec![
            event("sum", "[5]", Some("c")),
            event("sum", "[6]", Some("c")),
        ],
    );
    // 4: "b" as request 2 stored it in this very commit, but another kind.
    push(&mut batch, vec![event("sha256", "[4]", Some("b"))]);
    let out = store.append(2, 2, &batch).await.unwrap();
    let seqs = |i: usize| -> Vec<(u64, bool)> {
        let appended = out[i].as_ref().expect("accepted");
        appended.iter().map(|a| (a.seq, a.replayed)).collect()
    };
    assert_eq!(out.len(), 5);
    assert_eq!(seqs(0), vec![(2, false)]);
    assert_eq!(out[1], Err(conflict(1, "a", Original::Stored { seq: 1 })));
    assert_eq!(seqs(2), vec![(3, false), (1, true)]);
    assert_eq!(
        out[3],
        Err(conflict(1, "c", Original::Earlier { index: 0 }))
    );
    assert_eq!(out[4], Err(conflict(0, "b", Original::Stored { seq: 3 })));
    assert_eq!(store.next_seq().await.unwrap(), 4);
    let stored: Vec<(u64, Vec<u8>)> = store
        .events_from(1, 10, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.payload))
        .collect();
    assert_eq!(
        stored,
        vec![
            (1, b"[1]".to_vec()),
            (2, b"[9]".to_vec()),
            (3, b"[4]".to_vec())
        ]
    );
    // Unchanged by the refusals: same key, same request still replays.
    let again = append(&store, 4, 3, &ids(1), &[event("sum", "[5]", Some("c"))])
        .await
        .unwrap();
    assert_eq!((again[0].seq, again[0].replayed), (4, false));
}

/// Each keyed row holds its fingerprint; a row stored before fingerprints
/// existed (NULL) replays whatever the request, as before the migration.
async fn a_row_without_a_fingerprint_replays(store: SharedStore, guard: &Guard) {
    let keyed = event("sum", "[1]", Some("old"));
    append(
        &store,
        1,
        1,
        &ids(2),
        &[keyed.clone(), event("sum", "[2]", None)],
    )
    .await
    .unwrap();
    let rows: Vec<(i64, Option<Vec<u8>>)> = raw_rows(
        guard,
        "SELECT seq, idempotency_fingerprint FROM events ORDER BY seq",
    )
    .await;
    let expected = keyed.fingerprint().expect("keyed").to_vec();
    assert_eq!(rows, vec![(1, Some(expected)), (2, None)]);

    raw_execute(guard, "UPDATE events SET idempotency_fingerprint = NULL").await;
    let replay = append(
        &store,
        3,
        2,
        &ids(1),
        &[event("sha256", "[7]", Some("old"))],
    )
    .await
    .unwrap();
    assert_eq!((replay[0].seq, replay[0].replayed), (1, true));
    assert_eq!(store.next_seq().await.unwrap(), 3);
}

/// Rows of a query, read past the store's API.
async fn raw_rows<T>(guard: &Guard, sql: &str) -> Vec<T>
where
    T: Send + Unpin,
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    match guard {
        Guard::Dir(dir) => {
            let url = format!("sqlite:{}", dir.path().join("test.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
            sqlx::query_as(sql)
                .fetch_all(&mut conn)
                .await
                .expect("query")
        }
        Guard::Schema(server, schema) => {
            let mut conn = sqlx::PgConnection::connect(server).await.expect("pg");
            sqlx::query(&format!("SET search_path TO {schema}"))
                .execute(&mut conn)
                .await
                .expect("search_path");
            sqlx::query_as(sql)
                .fetch_all(&mut conn)
                .await
                .expect("query")
        }
    }
}

/// Runs a statement past the store's API.
async fn raw_execute(guard: &Guard, sql: &str) {
    match guard {
        Guard::Dir(dir) => {
            let url = format!("sqlite:{}", dir.path().join("test.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .expect("statement");
        }
        Guard::Schema(server, schema) => {
            let mut conn = sqlx::PgConnection::connect(server).await.expect("pg");
            sqlx::query(&format!("SET search_path TO {schema}"))
                .execute(&mut conn)
                .await
                .expect("search_path");
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .expect("statement");
        }
    }
}

/// A page stops before its events' bytes pass the bound (always holding
/// one event), counts outputs too, and still honours `limit` and `status`.
async fn a_page_is_bounded_in_bytes(store: SharedStore) {
    let payload = |n: usize| format!("[{}]", vec!["0"; n].join(","));
    // Sizes (payload, kind and key): 2,001 + 2, then 1,001 + 2 each.
    let batch = vec![
        event("k", &payload(1000), None),
        event("k", &payload(500), None),
        event("k", &payload(500), None),
        event("k", &payload(500), None),
    ];
    append(&store, 1, 1, &ids(batch.len()), &batch)
        .await
        .unwrap();
    let seqs = |page: Vec<EventView>| page.iter().map(|v| v.event.seq).collect::<Vec<_>>();
    let page = |after, limit, max_bytes, status| {
        let store = store.clone();
        async move {
            store
                .list_page(after, limit, max_bytes, status)
                .await
                .unwrap()
        }
    };
    // The first event alone is over the bound: it still comes, alone.
    assert_eq!(seqs(page(0, 10, 100, None).await), vec![1]);
    assert_eq!(seqs(page(0, 10, 3004, None).await), vec![1]);
    assert_eq!(seqs(page(0, 10, 3006, None).await), vec![1, 2]);
    assert_eq!(seqs(page(1, 10, 2005, None).await), vec![2]);
    assert_eq!(seqs(page(1, 10, 2006, None).await), vec![2, 3]);
    assert_eq!(seqs(page(1, 2, usize::MAX, None).await), vec![2, 3]);
    assert_eq!(seqs(page(4, 10, 100, None).await), Vec::<u64>::new());
    // The delivery read counts payloads only (2,001, then 1,001 each) and
    // starts at its seq.
    let delivery = |from, limit, max_bytes| {
        let store = store.clone();
        async move {
            let events = store.events_from(from, limit, max_bytes).await.unwrap();
            events.iter().map(|e| e.seq).collect::<Vec<_>>()
        }
    };
    assert_eq!(delivery(1, 10, 100).await, vec![1], "the first alone");
    assert_eq!(delivery(1, 10, 3001).await, vec![1]);
    assert_eq!(delivery(1, 10, 3002).await, vec![1, 2]);
    assert_eq!(delivery(2, 10, 2002).await, vec![2, 3]);
    assert_eq!(delivery(2, 2, usize::MAX).await, vec![2, 3]);
    assert_eq!(delivery(5, 10, 100).await, Vec::<u64>::new());
    // An output counts: with 1,000 bytes of output, seq 2 fills the page.
    store
        .resolve(&[result(2, ResultStatus::Ok, &"x".repeat(1000))], &[], 0)
        .await
        .unwrap();
    assert_eq!(seqs(page(1, 10, 2006, None).await), vec![2]);
    let pending = page(1, 10, 2006, Some(StatusFilter::Pending)).await;
    assert_eq!(seqs(pending), vec![3, 4]);
    // Each event as stored.
    let first = page(0, 1, 100, None).await;
    assert_eq!(first[0].event.payload, payload(1000).as_bytes());
}

async fn sent_marks_name_the_unresolved_events_that_may_have_gone_out(store: SharedStore) {
    let batch: Vec<NewEvent> = (0..5).map(|i| event("k", &i.to_string(), None)).collect();
    append(&store, 1, 1, &ids(5), &batch).await.unwrap();
    store.mark_sent(&[2, 3, 4], 10).await.unwrap();
    store.mark_sent(&[3], 11).await.unwrap(); // marked twice: one row
    let abandoned = result(3, ResultStatus::Abandoned, "abandoned: its stream ended");
    store
        .resolve(&[result(2, ResultStatus::Ok, "done"), abandoned], &[], 1)
        .await
        .unwrap();
    let cursor = store.delivery_cursor().await.unwrap();
    assert_eq!(cursor.sent_above, vec![4], "2 and 3 are resolved");
    assert_eq!(cursor.resolved_above, vec![2, 3]);
    let view = store.event(3).await.unwrap().unwrap();
    assert_eq!(view.state, DeliveryState::Done(ResultStatus::Abandoned));
    assert_eq!(view.state.as_str(), "abandoned");
    let listed: Vec<u64> = store
        .list_events(0, 10, Some(StatusFilter::Abandoned))
        .await
        .unwrap()
        .iter()
        .map(|v| v.event.seq)
        .collect();
    assert_eq!(listed, vec![3]);
    // Marks below the floor are history: not reported.
    store.resolve(&[], &[], 5).await.unwrap();
    assert!(store.delivery_cursor().await.unwrap().sent_above.is_empty());
}

/// The trace context goes in and comes back on every read: the delivery
/// read, one event, a page; an event without one has none.
async fn an_events_trace_context_is_stored_with_it(store: SharedStore) {
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = NewEvent {
        traceparent: Some(TRACE.into()),
        ..event("k", "1", None)
    };
    let batch = vec![traced, event("k", "2", None)];
    append(&store, 1, 1, &ids(2), &batch).await.unwrap();
    let delivered = store.events_from(1, 10, usize::MAX).await.unwrap();
    let delivered: Vec<_> = delivered.into_iter().map(|e| e.traceparent).collect();
    assert_eq!(delivered, vec![Some(TRACE.to_string()), None]);
    let one = store.event(1).await.unwrap().unwrap();
    assert_eq!(one.event.traceparent.as_deref(), Some(TRACE));
    let page = store.list_page(0, 10, usize::MAX, None).await.unwrap();
    let listed: Vec<_> = page.into_iter().map(|v| v.event.traceparent).collect();
    assert_eq!(listed, vec![Some(TRACE.to_string()), None]);
}

/// A batch of every size the stores cut into several statements (SQLite:
/// chunks of 256, 32, 8 and 1 rows) stores each row as given: its seq, its
/// payload, its result or its dead row.
async fn a_large_batch_is_stored_row_for_row(store: SharedStore) {
    let n = 256 + 32 + 8 + 3;
    let batch: Vec<NewEvent> = (0..n)
        .map(|i| event("k", &format!("[{i}]"), None))
        .collect();
    append(&store, 1, 7, &ids(n), &batch).await.unwrap();
    let stored = store.events_from(1, 1_000, usize::MAX).await.unwrap();
    assert_eq!(stored.len(), n);
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.payload, format!("[{i}]").as_bytes());
    }
    // The last 41 are parked (chunks of 32, 8 and 1), the rest get results.
    let parked = n as u64 - 40;
    let results: Vec<ResultRow> = (1..parked)
        .map(|seq| result(seq, ResultStatus::Ok, &format!("out {seq}")))
        .collect();
    let dead: Vec<DeadRow> = (parked..=n as u64)
        .map(|seq| DeadRow {
            seq,
            reason: format!("poison {seq}"),
            attempts: 3,
            parked_at_us: 9,
        })
        .collect();
    store.resolve(&results, &dead, n as u64 + 1).await.unwrap();
    for seq in [1, 256, 257, parked - 1] {
        let view = store.event(seq).await.unwrap().expect("stored");
        assert_eq!(view.result.expect("a result").output, format!("out {seq}"));
    }
    let listed = store.dead_events(100).await.unwrap();
    assert_eq!(listed.len(), 41);
    for d in &listed {
        assert!(d.seq >= parked);
        assert_eq!(d.reason, format!("poison {}", d.seq));
    }
    assert_eq!(
        store.delivery_cursor().await.unwrap().acked_floor,
        n as u64 + 1
    );
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _guard) = super::sqlite().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, guard) = super::postgres().await;
                    super::$name(store).await;
                    guard.cleanup().await;
                }
            )*
        }
    };
}

/// Like `suite!`, for tests that also read the database directly.
macro_rules! suite_with_guard {
    ($($name:ident),* $(,)?) => {
        mod sqlite_raw {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, guard) = super::sqlite().await;
                    super::$name(store, &guard).await;
                }
            )*
        }
        mod postgres_raw {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, guard) = super::postgres().await;
                    super::$name(store, &guard).await;
                    guard.cleanup().await;
                }
            )*
        }
    };
}

suite_with_guard!(
    prune_deletes_only_old_resolved_events_below_the_floor,
    a_retention_round_prunes_in_batches,
    a_row_without_a_fingerprint_replays,
);

suite!(
    append_assigns_consecutive_seqs_and_replays_keys,
    a_large_batch_is_stored_row_for_row,
    a_page_is_bounded_in_bytes,
    a_failed_batch_stores_nothing,
    a_reused_key_refuses_only_its_own_request,
    results_are_stored_once_and_the_floor_only_moves_forward,
    dead_events_are_listed_and_requeued_once,
    the_default_settings_are_durable,
    sent_marks_name_the_unresolved_events_that_may_have_gone_out,
    an_events_trace_context_is_stored_with_it,
);

/// PostgreSQL keeps `WARM_CONNECTIONS` open from the start, before any
/// write needs them: the first commits after a start must not wait for new
/// backends (the open loop's worst events came from that).
#[tokio::test]
async fn postgres_keeps_its_writers_connections_open_from_the_start() {
    use ackflow_core::store::postgres::WARM_CONNECTIONS;
    let server = crate::common::pg_server();
    let name = format!("ackflow-warm-{:x}", fastrand::u64(..));
    let options: sqlx::postgres::PgConnectOptions = server.parse().expect("url");
    let store = PgStore::connect_with(options.application_name(&name))
        .await
        .expect("connect");
    let mut conn = sqlx::PgConnection::connect(&server).await.expect("connect");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let open = loop {
        let (open,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&name)
                .fetch_one(&mut conn)
                .await
                .expect("pg_stat_activity");
        if open >= i64::from(WARM_CONNECTIONS) || tokio::time::Instant::now() > deadline {
            break open;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        open,
        i64::from(WARM_CONNECTIONS),
        "connections open without any write having asked for them"
    );
    drop(store);
}
