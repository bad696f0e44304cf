//! The `ackflow.v1` protocol: messages and gRPC services.
//!
//! Generated at build time from `proto/ackflow/v1/*.proto` (see `build.rs`).
//! [`token`] is the bearer token the services' `authorization` metadata
//! carries, shared by core and its clients.

/// Generated code for package `ackflow.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ackflow.v1");
}

pub mod token;

/// The encoded `FileDescriptorSet` of every ackflow proto file, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ackflow_descriptor.bin"));
