//! ackflow monitor: a terminal dashboard over core's `Admin.Watch` stream.
//!
//! It shows the delivery protocol as it runs: the sequence numbers (head,
//! sent, acked floor, what the processor has processed), the ordering mode
//! with the processor's running calls and active lanes (keys), the floor
//! holder that holds the window back, the in-flight window with each
//! entry's key, attempt and time to its next retransmit, retransmits and
//! duplicate drops, results, dead events and a log of what happened.
//! Keys pause and resume the processor, cycle fault profiles and requeue
//! dead events; core relays them, so the monitor needs only core's address.
//! `ackflow-monitor demo` runs core, two processors (one a hot standby) and
//! a traffic generator in the same process.
//!
//! The shape follows ratatui's event-driven template: [`app::App`] is the
//! state and [`app::App::handle`] the only way to change it (no I/O, no
//! clock); [`ui::render`] draws it and nothing else; [`run`] is the loop
//! that feeds it events from [`client`] (core), [`terminal`] (keys) and a
//! ticker, and carries out the commands it returns.

pub mod app;
pub mod cli;
pub mod client;
#[cfg(feature = "demo")]
pub mod demo;
pub mod fmt;
pub mod run;
pub mod terminal;
pub mod ui;
