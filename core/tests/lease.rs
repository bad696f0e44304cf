//! Leadership through PostgreSQL (`store/lease.rs`): one core leads, a
//! second stands by until the lease lapses or is released, and a deposed
//! leader commits nothing, not even a transaction it had started before it
//! froze.
//!
//! Each test uses a private schema on the test server
//! (`common::pg_schema`) and two stores on it: two cores. It fails, never
//! skips, when PostgreSQL is unreachable.

use std::time::{Duration, Instant};

use ackflow_core::model::{AppendBatch, NewEvent, ResultRow, ResultStatus};
use ackflow_core::store::lease::{Candidate, Term};
use ackflow_core::store::postgres::PgStore;
use ackflow_core::store::{Store, StoreError};
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;

/// A migrated private schema and a way to open stores on it.
struct Schema {
    server: String,
    name: String,
}

impl Schema {
    async fn create() -> Self {
        let (server, name) = crate::common::pg_schema("lease_test").await;
        let schema = Self { server, name };
        schema.store().await.migrate().await.expect("migrate");
        schema
    }

    fn options(&self) -> PgConnectOptions {
        let options: PgConnectOptions = self.server.parse().expect("url");
        options.options([("search_path", self.name.as_str())])
    }

    /// One core's store.
    async fn store(&self) -> PgStore {
        PgStore::connect_with(self.options())
            .await
            .expect("connect")
    }

    async fn drop(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.server).await {
            let _ = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
                .execute(&mut conn)
                .await;
        }
    }
}

fn core(name: &str) -> Candidate {
    Candidate {
        holder: name.to_string(),
        http_url: format!("http://{name}:8080"),
        grpc_url: format!("http://{name}:50051"),
    }
}

fn batch(payload: &str) -> AppendBatch {
    AppendBatch::one_request(
        vec![format!("id-{payload}")],
        vec![NewEvent {
            kind: "sha256".into(),
            key: None,
            payload: payload.as_bytes().to_vec(),
            idempotency_key: None,
            traceparent: None,
        }],
    )
}

async fn lead(store: &PgStore, me: &Candidate, lease: Duration) -> Term {
    store
        .lease()
        .expect("PostgreSQL has a lease")
        .try_lead(me, lease)
        .await
        .expect("try_lead")
}

/// Tries to lead every 20 ms until it does (or 30 s pass); returns the
/// epoch and how long it took.
async fn lead_when_lapsed(store: &PgStore, me: &Candidate, lease: Duration) -> (u64, Duration) {
    let started = Instant::now();
    loop {
        if let Term::Leader { epoch } = lead(store, me, lease).await {
            return (epoch, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no takeover within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deposed(outcome: Result<impl std::fmt::Debug, StoreError>, what: &str) {
    match outcome {
        Err(e) => assert_eq!(e.kind(), "deposed", "{what}: {e}"),
        Ok(v) => panic!("{what} of a deposed leader succeeded: {v:?}"),
    }
}

#[tokio::test]
async fn a_second_core_stands_by_until_the_lease_lapses_and_the_deposed_leader_commits_nothing() {
    let schema = Schema::create().await;
    let (a, b) = (schema.store().await, schema.store().await);
    let lease = Duration::from_millis(400);

    assert_eq!(lead(&a, &core("a"), lease).await, Term::Leader { epoch: 1 });
    a.append(1, 1, &batch("from a"))
        .await
        .expect("the leader writes");
    assert_eq!(
        lead(&b, &core("b"), lease).await,
        Term::Standby {
            leader: core("a"),
            epoch: 1
        },
        "b stands by and knows who leads"
    );
    let lease_a = a.lease().unwrap();
    assert!(lease_a.renew(1, lease).await.unwrap(), "the leader renews");

    // a stops renewing (frozen, or its network is gone): b takes over once
    // the lease lapses, not before.
    let (epoch, waited) = lead_when_lapsed(&b, &core("b"), lease).await;
    assert_eq!(epoch, 2);
    assert!(
        waited >= lease / 2,
        "took over after {waited:?}, within a lease that was just renewed"
    );
    assert_eq!(
        b.next_seq().await.unwrap(),
        2,
        "b continues after a's commit"
    );

    // Whatever a tries now is refused, and nothing of it is stored.
    assert!(!lease_a.renew(1, lease).await.unwrap(), "a's renewal fails");
    deposed(a.append(2, 2, &batch("late")).await, "a publish");
    let result = ResultRow {
        seq: 1,
        status: ResultStatus::Ok,
        output: "late".into(),
        attempt: 1,
        processing_us: 1,
        stored_at_us: 1,
    };
    deposed(a.resolve(&[result], &[], 2).await, "a result and the floor");
    deposed(a.mark_sent(&[1], 1).await, "a sent mark");
    deposed(a.probe_write().await, "a probe write");
    deposed(a.prune(i64::MAX, 10).await, "a prune");
    assert_eq!(b.next_seq().await.unwrap(), 2);
    assert_eq!(b.delivery_cursor().await.unwrap().acked_floor, 1);
    assert!(b.event(1).await.unwrap().unwrap().result.is_none());
    b.append(2, 2, &batch("from b"))
        .await
        .expect("the new leader writes");
    schema.drop().await;
}

#[tokio::test]
async fn a_leader_frozen_inside_a_transaction_is_cut_off_and_its_commit_fails() {
    let schema = Schema::create().await;
    let (a, b) = (schema.store().await, schema.store().await);
    let lease = Duration::from_millis(500);
    assert_eq!(lead(&a, &core("a"), lease).await, Term::Leader { epoch: 1 });

    // What a's writer does in every transaction, stopped half way: the
    // fence passed, the event written, the commit not yet sent.
    let mut frozen = sqlx::PgConnection::connect_with(&schema.options())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut frozen).await.unwrap();
    sqlx::query("SELECT ackflow_fence(1, 500)")
        .execute(&mut frozen)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (seq, id, kind, payload, published_at_us) \
         VALUES (1, 'frozen', 'sha256', '\\x00', 1)",
    )
    .execute(&mut frozen)
    .await
    .unwrap();

    // b gets through once the lease lapsed *and* PostgreSQL ended the
    // frozen transaction (it held the fence's lock).
    let (epoch, _) = lead_when_lapsed(&b, &core("b"), lease).await;
    assert_eq!(epoch, 2);

    // a thaws and commits: refused, and the event is not there.
    let commit = sqlx::query("COMMIT").execute(&mut frozen).await;
    assert!(commit.is_err(), "the frozen transaction committed");
    assert_eq!(
        b.next_seq().await.unwrap(),
        1,
        "the frozen insert is stored"
    );
    assert!(b.event(1).await.unwrap().is_none());
    schema.drop().await;
}

#[tokio::test]
async fn a_released_lease_or_a_restart_under_the_same_name_is_taken_at_once() {
    let schema = Schema::create().await;
    let (a, b) = (schema.store().await, schema.store().await);
    // Long enough that only a release or the same name explains a takeover.
    let lease = Duration::from_secs(60);
    assert_eq!(lead(&a, &core("a"), lease).await, Term::Leader { epoch: 1 });

    // a restarts (killed: nothing released) under its own name.
    let a_again = schema.store().await;
    assert_eq!(
        lead(&a_again, &core("a"), lease).await,
        Term::Leader { epoch: 2 }
    );
    deposed(a.append(1, 1, &batch("old life")).await, "the old life");
    assert!(matches!(
        lead(&b, &core("b"), lease).await,
        Term::Standby { epoch: 2, .. }
    ));

    // a stops gracefully: it releases, and b leads at once.
    a_again.lease().unwrap().release(2).await.unwrap();
    assert_eq!(lead(&b, &core("b"), lease).await, Term::Leader { epoch: 3 });
    schema.drop().await;
}
