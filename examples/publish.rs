//! Publishing from Rust over gRPC, as a service next to ackflow would: one
//! event, stored durably before the answer, with an idempotency key so a
//! retry after a timeout or a lost connection never stores it twice, and the
//! caller's trace context so the event can be followed to its result.
//!
//! ```sh
//! cargo run -p ackflow-tests --example publish -- --core http://127.0.0.1:50051 \
//!     --kind sum --payload '[1,2,3]' --idempotency-key order-17
//! # seq 1 (id 0f3c…)
//! ```
//!
//! With several cores on one database (`--core http://a:50051,http://b:50051`)
//! it publishes to the one that leads: a standby answers `UNAVAILABLE` with
//! the leader's URL in the `ackflow-leader` metadata, and stored nothing, so
//! going there is safe even without an idempotency key.
//!
//! The client is `ackflow_proto::v1::ingest_client::IngestClient`, generated
//! from `proto/ackflow/v1/ingest.proto`; any gRPC stack can do the same.

use std::time::Duration;

use ackflow_proto::client::leader;
use ackflow_proto::v1 as pb;
use clap::Parser;
use tonic::Code;

#[derive(Parser)]
#[command(about = "Publish one event to ackflow core over gRPC")]
struct Args {
    /// Core's gRPC address; several, comma-separated, for cores sharing one
    /// database (the leader is found and used).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    core: String,
    /// The event's kind: chooses the algorithm that processes it.
    #[arg(long)]
    kind: String,
    /// The event's payload, a JSON document.
    #[arg(long)]
    payload: String,
    /// Business key: events of one key are processed one at a time, in order.
    #[arg(long)]
    key: Option<String>,
    /// Makes the publish safe to retry: the same key and event store once.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// W3C trace context of the caller's span (as its tracing library gives
    /// it), sent as `traceparent` metadata.
    #[arg(long)]
    traceparent: Option<String>,
    /// The publish token, when core requires one.
    #[arg(long, env = "ACKFLOW_PUBLISH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cores = leader::urls(&args.core);
    let client = |url: &str| -> anyhow::Result<_> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        Ok(pb::ingest_client::IngestClient::new(channel))
    };
    let mut at = 0;
    let event = pb::PublishRequest {
        kind: args.kind.clone(),
        key: args.key.clone().unwrap_or_default(),
        payload: args.payload.clone().into_bytes(),
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        ..Default::default()
    };
    // Core answers only after the commit. UNAVAILABLE (core restarting, the
    // store down, a standby) and RESOURCE_EXHAUSTED (ingest queue full) are
    // worth a retry; with an idempotency key a retry never stores a second
    // copy.
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = client(&cores[at])?;
        let mut request = tonic::Request::new(event.clone());
        if let Some(traceparent) = &args.traceparent {
            request
                .metadata_mut()
                .insert("traceparent", traceparent.parse()?);
        }
        if let Some(token) = &args.token {
            let bearer = format!("Bearer {token}");
            request
                .metadata_mut()
                .insert("authorization", bearer.parse()?);
        }
        match client.publish(request).await {
            Ok(response) => {
                let stored = response.into_inner();
                let replayed = if stored.replayed { ", a replay" } else { "" };
                println!("seq {} (id {}{replayed})", stored.seq, stored.id);
                return Ok(());
            }
            // A standby: it stored nothing, and may name the leader.
            Err(status) if leader::is_standby(&status) && attempt < 10 => {
                let leader = status
                    .metadata()
                    .get(leader::LEADER_METADATA)
                    .and_then(|v| v.to_str().ok());
                at = match leader {
                    Some(leader) => cores.iter().position(|c| c == leader).unwrap_or_else(|| {
                        cores.push(leader.to_string());
                        cores.len() - 1
                    }),
                    None => (at + 1) % cores.len(),
                };
                eprintln!(
                    "attempt {attempt}: {}; trying {}",
                    status.message(),
                    cores[at]
                );
                if leader.is_none() {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
            Err(status)
                if matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
                    && args.idempotency_key.is_some()
                    && attempt < 5 =>
            {
                eprintln!("attempt {attempt}: {}; retrying", status.message());
                tokio::time::sleep(delay).await;
                delay *= 2;
                at = (at + 1) % cores.len();
            }
            // INVALID_ARGUMENT names the field; FAILED_PRECONDITION is an
            // idempotency key already used for another event.
            Err(status) => anyhow::bail!("{:?}: {}", status.code(), status.message()),
        }
    }
}
