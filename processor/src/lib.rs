//! ackflow processor: connects to core, receives the backlog and then live
//! events, runs the algorithm chosen by each event's kind — in seq order per
//! key (or globally, as core says), many keys at once — and acks with the
//! result.
//!
//! The protocol logic is the sans-I/O
//! [`Receiver`](ackflow_proto::protocol::receiver::Receiver) with its
//! [`Lanes`](ackflow_proto::protocol::lanes::Lanes) (the ordering policy and
//! the concurrency cap), in `ackflow_proto::protocol`; [`client`] is the
//! thin loop around it and [`executor`] runs the algorithms.
//!
//! To run it with algorithms of your own, see [`Processor`] (and the
//! runnable `examples/uppercase.rs`).

pub mod algorithms;
pub mod builder;
pub mod cli;
pub mod client;
pub mod config;
pub mod executor;
pub mod hold;
pub mod metrics;
pub mod permits;
pub mod processed_log;
pub mod signing;
pub mod webhook;

pub use ackflow_proto::v1::Event;
pub use algorithms::{Algorithm, AlgorithmError, Outcome};
pub use builder::Processor;
pub use config::Config;
