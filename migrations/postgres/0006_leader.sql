-- Leadership among the cores that share this database (core's
-- `leadership.rs`). One row: the leader's epoch, who it is, where clients
-- reach it, and until when its lease runs, in the database's clock (so the
-- cores' clocks never matter).
--
-- Fencing: every write transaction of the leader first calls
-- `ackflow_fence`, which takes the transaction-level advisory lock below in
-- shared mode and then checks the epoch. A takeover takes the same lock
-- exclusively before it changes the epoch, so it waits for the deposed
-- leader's transactions in flight, and after it commits no transaction of
-- the old epoch passes the fence. (A shared advisory lock costs no tuple
-- write, unlike a row lock taken by several writers at once.) The lock is
-- this database's advisory key 4242424242 (sqlx's migrator uses another).
CREATE TABLE leader (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    epoch      BIGINT NOT NULL,
    holder     TEXT NOT NULL,
    http_url   TEXT NOT NULL,
    grpc_url   TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
INSERT INTO leader (epoch, holder, http_url, grpc_url, expires_at)
VALUES (0, '', '', '', '-infinity');

-- The first statement of every write transaction of a leader: fails with
-- SQLSTATE AF001 unless `expected` is still the leader's epoch, and holds a
-- lock that a takeover waits for until this transaction ends. A leader
-- frozen inside a transaction would hold that lock for ever, so the
-- transaction may sit idle for at most `idle_ms` (the lease) before
-- PostgreSQL ends it. (A volatile function reads each statement with a new
-- snapshot: the check sees a takeover that committed while it waited.)
CREATE FUNCTION ackflow_fence(expected BIGINT, idle_ms INT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('idle_in_transaction_session_timeout', idle_ms::text, true);
    PERFORM pg_advisory_xact_lock_shared(4242424242);
    IF NOT EXISTS (SELECT 1 FROM leader WHERE epoch = expected) THEN
        RAISE EXCEPTION 'deposed: epoch % no longer leads this database', expected
            USING ERRCODE = 'AF001';
    END IF;
END
$$;
