//! ackflow processor: connects to core, receives the backlog and then live
//! events, hands each to the algorithm chosen by its kind strictly in seq
//! order, and acks with the result.
//!
//! The protocol logic is the sans-I/O [`receiver::Receiver`]; [`client`] is
//! the thin loop around it.

pub mod algorithms;
pub mod cli;
pub mod client;
pub mod config;
pub mod metrics;
pub mod receiver;
pub mod tls;
