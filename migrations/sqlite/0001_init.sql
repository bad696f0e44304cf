-- Events, in commit order. `seq` is assigned by core's single ingest writer,
-- never by a sequence: see ARCHITECTURE.md ("seq is commit order").
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY,
    id              TEXT   NOT NULL,
    kind            TEXT   NOT NULL,
    key             TEXT,
    payload         BLOB  NOT NULL,
    idempotency_key TEXT   UNIQUE,
    published_at_us INTEGER NOT NULL
);

-- Exactly one result per event: the primary key plus ON CONFLICT DO NOTHING.
CREATE TABLE results (
    seq           INTEGER   PRIMARY KEY REFERENCES events (seq),
    status        INTEGER NOT NULL,
    output        TEXT     NOT NULL,
    attempt       INTEGER  NOT NULL,
    processing_us INTEGER   NOT NULL,
    stored_at_us  INTEGER   NOT NULL
);

-- Events parked after max_deliver attempts or a reject.
CREATE TABLE dead (
    seq          INTEGER  PRIMARY KEY REFERENCES events (seq),
    reason       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    parked_at_us INTEGER  NOT NULL,
    requeued_as  INTEGER
);

-- The persisted acked floor: every seq below it is resolved.
CREATE TABLE delivery_cursor (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    acked_floor INTEGER   NOT NULL
);
INSERT INTO delivery_cursor (id, acked_floor) VALUES (1, 1);
