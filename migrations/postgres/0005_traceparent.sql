-- The publisher's W3C trace context (core/src/trace.rs), NULL when it sent
-- none. Nullable without a default: adding it rewrites no row.
ALTER TABLE events ADD COLUMN traceparent TEXT;
