-- Events, in commit order. `seq` is assigned by core's single ingest writer,
-- never by a sequence: see ARCHITECTURE.md ("seq is commit order").
CREATE TABLE events (
    seq             BIGINT PRIMARY KEY,
    id              TEXT   NOT NULL,
    kind            TEXT   NOT NULL,
    key             TEXT,
    payload         BYTEA  NOT NULL,
    idempotency_key TEXT   UNIQUE,
    published_at_us BIGINT NOT NULL
);

-- Exactly one result per event: the primary key plus ON CONFLICT DO NOTHING.
CREATE TABLE results (
    seq           BIGINT   PRIMARY KEY REFERENCES events (seq),
    status        SMALLINT NOT NULL,
    output        TEXT     NOT NULL,
    attempt       INTEGER  NOT NULL,
    processing_us BIGINT   NOT NULL,
    stored_at_us  BIGINT   NOT NULL
);

-- Events parked after max_deliver attempts or a reject.
CREATE TABLE dead (
    seq          BIGINT  PRIMARY KEY REFERENCES events (seq),
    reason       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    parked_at_us BIGINT  NOT NULL,
    requeued_as  BIGINT
);

-- The persisted acked floor: every seq below it is resolved.
CREATE TABLE delivery_cursor (
    id          SMALLINT PRIMARY KEY CHECK (id = 1),
    acked_floor BIGINT   NOT NULL
);
INSERT INTO delivery_cursor (id, acked_floor) VALUES (1, 1);
