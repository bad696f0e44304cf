//! ackflow processor: connects to core, receives the backlog and then live
//! events, runs the algorithm chosen by each event's kind — in seq order per
//! key (or globally, as core says), many keys at once — and acks with the
//! result.
//!
//! The protocol logic is the sans-I/O [`receiver::Receiver`] with its
//! [`lanes::Lanes`] (the ordering policy and the concurrency cap); [`client`]
//! is the thin loop around it and [`executor`] runs the algorithms.

pub mod algorithms;
pub mod cli;
pub mod client;
pub mod config;
pub mod executor;
pub mod lanes;
pub mod metrics;
pub mod processed_log;
pub mod receiver;
pub mod tls;
