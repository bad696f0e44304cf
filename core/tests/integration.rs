//! Core's integration tests: one test binary, one module per concern, so
//! core is linked once for all of them. Select a module with a filter:
//! `cargo nextest run -p ackflow-core -E 'test(/^store::/)'`.

mod common;

mod auth;
mod bad_input_grpc;
mod bad_input_rest;
mod grpc;
mod hub;
mod idempotency;
mod lease;
mod rest;
mod store;
mod tls;
