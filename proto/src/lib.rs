//! The `ackflow.v1` protocol: the wire ([`v1`], messages and gRPC
//! services) and the delivery protocol's state machines ([`protocol`]).
//!
//! [`v1`] is generated at build time from `proto/ackflow/v1/*.proto` (see
//! `build.rs`); its clients and servers come with the `grpc` feature (on by
//! default). [`protocol`] is sans-I/O: it needs the messages only, so
//! `cargo test -p ackflow-proto --no-default-features` tests both sides of
//! the protocol without tonic, a runtime, a store or either service.
//! [`token`] is the bearer token the services' `authorization` metadata
//! carries, shared by core and its clients; with `grpc`, [`client`] is what
//! every client of core shares (endpoint, TLS, bearer, reconnect backoff)
//! and [`rt`] the small tokio helpers of all three binaries; [`telemetry`]
//! sets up logs and trace export for core and the processor.

/// Generated code for package `ackflow.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/ackflow.v1.rs"));
}

pub mod protocol;

#[cfg(feature = "grpc")]
pub mod client;
#[cfg(feature = "grpc")]
pub mod rt;
#[cfg(feature = "grpc")]
pub mod telemetry;

pub mod token;

/// The encoded `FileDescriptorSet` of every ackflow proto file, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ackflow_descriptor.bin"));
