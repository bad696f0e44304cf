//! The delivery protocol, core's side: the I/O around the protocol's
//! [`Sender`](ackflow_proto::protocol::sender::Sender) (see
//! [`ackflow_proto::protocol`] for the guarantees, the window, time and
//! failures).
//!
//! * [`hub`] runs the sender: it reads committed events ([`backlog`]),
//!   speaks to the processor's stream ([`service`]), turns acks into result
//!   rows and moves the floor once [`results`] reports them durable.
//! * [`results`] is the result writer (and, a second instance, the writer
//!   of at-most-once events' sent marks).

pub mod backlog;
pub mod hub;
pub mod results;
pub mod service;
