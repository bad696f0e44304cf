-- What each idempotency key stands for: a SHA-256 over the event's kind,
-- key and payload (`NewEvent::fingerprint`). A publish that reuses a key
-- replays only with the same fingerprint; with another it is refused (422 /
-- FAILED_PRECONDITION). Rows stored before this migration have none and
-- replay as they always did. Adding a nullable column without a default
-- rewrites nothing, whatever the table holds.
ALTER TABLE events ADD COLUMN idempotency_fingerprint BLOB;
