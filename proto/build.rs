//! Generates the Rust code for `ackflow/v1/*.proto` without a system `protoc`:
//! protox parses the files into a descriptor set, tonic-prost-build turns it
//! into messages, clients and servers. The clients and servers are compiled
//! only with the `grpc` feature (on by default); the messages and the
//! protocol's state machines need neither tonic nor a runtime.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "ackflow/v1/event.proto",
        "ackflow/v1/ingest.proto",
        "ackflow/v1/delivery.proto",
        "ackflow/v1/admin.proto",
    ];
    // protox does not print rerun-if-changed on its own.
    println!("cargo:rerun-if-changed=ackflow");
    let fds = protox::compile(files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The encoded descriptor set feeds gRPC reflection.
    std::fs::write(
        out_dir.join("ackflow_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .client_mod_attribute("ackflow.v1", "#[cfg(feature = \"grpc\")]")
        .server_mod_attribute("ackflow.v1", "#[cfg(feature = \"grpc\")]")
        .compile_fds(fds)?;
    Ok(())
}
