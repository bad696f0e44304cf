-- Leadership among the cores that share this database (core's
-- `leadership.rs`). One row: the leader's epoch, who it is, where clients
-- reach it, and until when its lease runs, in the database's clock (so the
-- cores' clocks never matter).
--
-- `epoch` is the key on purpose: every write the leader makes first takes
-- `FOR KEY SHARE` on the row of its epoch (`ackflow_fence`), a takeover
-- changes the key, and the two conflict. So a takeover waits for the
-- deposed leader's transactions in flight, and after it commits no
-- transaction of the old epoch can pass the fence. A renewal changes only
-- `expires_at`, which conflicts with no fence.
CREATE TABLE leader (
    epoch      BIGINT PRIMARY KEY,
    singleton  BOOLEAN NOT NULL DEFAULT TRUE UNIQUE CHECK (singleton),
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
-- PostgreSQL ends it.
CREATE FUNCTION ackflow_fence(expected BIGINT, idle_ms INT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('idle_in_transaction_session_timeout', idle_ms::text, true);
    PERFORM 1 FROM leader WHERE epoch = expected FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'deposed: epoch % no longer leads this database', expected
            USING ERRCODE = 'AF001';
    END IF;
END
$$;
