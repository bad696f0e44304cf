-- Sent marks: an event of an at-most-once kind (core's `--at-most-once`)
-- goes out only once its row here is durable, so after a restart core knows
-- which of them may have been sent and abandons them instead of sending a
-- second copy. Written by core's result writer, for seqs of `events`; the
-- retention task deletes a mark with its event.
CREATE TABLE sent (
    seq        INTEGER PRIMARY KEY,
    sent_at_us INTEGER NOT NULL
);
