//! The end-to-end tests: one test binary, one module per concern, so the
//! whole stack is compiled and linked once for all of them (and not once
//! per file). Select a module with a filter:
//! `cargo nextest run -p ackflow-tests -E 'test(/^storage_faults::/)'`.

mod at_most_once;
mod chaos;
mod chaos_controls;
mod configuration;
mod delivery_e2e;
mod durability_settings;
mod hostile_processor;
mod ingest_crash;
mod leadership;
mod limits;
mod metrics;
mod monitor_tmux;
mod poison;
mod pooler;
mod processor_standby;
mod sqlite_owner;
mod storage_faults;
mod tls_clients;
mod tokens;
mod traces;
mod webhooks;
