//! ackflow core: accepts events (REST and gRPC), stores each one durably
//! before answering, streams them to the processor with the delivery
//! protocol, stores exactly one result per event, and serves the admin
//! stream the monitor watches.
//!
//! Start with [`server::start`]; the protocol is explained in [`delivery`].

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod fd_limit;
pub mod http;
pub mod ingest;
pub mod leadership;
pub mod metrics;
pub mod model;
pub mod rest;
pub mod retention;
pub mod server;
pub mod store;
pub mod tail;
pub mod tls;
pub mod trace;
pub mod validate;
