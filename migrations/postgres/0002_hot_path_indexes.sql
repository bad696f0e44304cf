-- The hot path writes one event row and one result row per event; this
-- migration removes the two per-row costs that were not needed for that.

-- Result rows are written only by core's result writer, for seqs it read
-- from `events`, and are never deleted. The foreign key's per-row check (an
-- index probe plus a KEY SHARE lock that rewrites the event's tuple header)
-- cost more than the insert itself: see docs/PERFORMANCE.md.
ALTER TABLE results DROP CONSTRAINT results_seq_fkey;

-- Most events carry no idempotency key: index only those that do. Lookups
-- use `idempotency_key = ANY(...)`, which this partial index serves.
ALTER TABLE events DROP CONSTRAINT events_idempotency_key_key;
CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
