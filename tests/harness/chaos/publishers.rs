//! The chaos publishers: several gRPC `PublishStream` clients and one REST
//! client, each paced to its share of the rate. Every publish carries its
//! idempotency key; a publish whose outcome is unknown (a reset stream, a
//! timeout, a 503) is retried with the same key, and given up (counted as
//! unknown, never as lost) after [`Publishing::max_attempts`] tries. Each
//! publisher logs what it was told in a [`History`]. With two cores (one
//! standing by), a failed attempt moves every publisher on to the next core,
//! so they find the leader as a client would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ackflow_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::workload::{Publish, Workload};
use crate::checker::History;
use crate::{channel, post_json};

/// Shared state of the publishers. Publishes are named by their number
/// `n` in the [`Workload`].
#[derive(Clone)]
pub(super) struct Publishing {
    /// Each core's gRPC and REST address.
    pub cores: Arc<Vec<(SocketAddr, SocketAddr)>>,
    /// The core publishes go to now.
    pub current: Arc<AtomicUsize>,
    /// What each publish sends.
    pub workload: Arc<Workload>,
    /// Acknowledged publishes so far (first acknowledgement of each).
    pub acked: Arc<AtomicU64>,
    /// Publishes resolved so far: acknowledged or given up.
    pub resolved: Arc<AtomicU64>,
    /// Only publishes below this number may be sent yet: the schedule
    /// moves it forward as faults fire, so publishing cannot outrun them.
    pub gate: watch::Receiver<u64>,
    /// Gives up everything still unacknowledged.
    pub deadline: tokio::time::Instant,
    /// Attempts with an unknown outcome before a publish is given up.
    pub max_attempts: u32,
}

impl Publishing {
    fn grpc(&self) -> SocketAddr {
        self.cores[self.current.load(Ordering::Relaxed) % self.cores.len()].0
    }

    fn http(&self) -> SocketAddr {
        self.cores[self.current.load(Ordering::Relaxed) % self.cores.len()].1
    }

    /// An attempt at `used` failed: the next core, unless another
    /// publisher moved on already.
    fn failed(&self, used: SocketAddr) {
        let now = self.current.load(Ordering::Relaxed);
        let at = now % self.cores.len();
        if self.cores[at].0 == used || self.cores[at].1 == used {
            let _ = self.current.compare_exchange(
                now,
                now.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

/// Most publishes one stream may have waiting for their reply.
const MAX_IN_FLIGHT: usize = 2_000;
/// A stream with publishes in flight and no reply for this long is abandoned.
const STALL: Duration = Duration::from_secs(10);

/// One gRPC `PublishStream` publisher: sends publishes `numbers` at `rate`
/// per second; after a failed stream it sends the unacknowledged ones again
/// (same idempotency keys, in order) on a new one.
pub(super) async fn stream_publisher(p: Publishing, numbers: Vec<u64>, rate: f64) -> History {
    let mut history = History::default();
    let mut fresh = numbers.into_iter().peekable();
    let mut retry: std::collections::VecDeque<u64> = Default::default();
    let mut attempts: std::collections::HashMap<u64, u32> = Default::default();
    // A token bucket: `rate` per second, bursts of at most 100 ms worth.
    let mut tokens = 0.0f64;
    let mut refilled = tokio::time::Instant::now();
    'streams: while fresh.peek().is_some() || !retry.is_empty() {
        if tokio::time::Instant::now() >= p.deadline {
            break;
        }
        let grpc = p.grpc();
        let Ok(Ok(channel)) = tokio::time::timeout(Duration::from_secs(3), channel(grpc)).await
        else {
            p.failed(grpc);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut client = pb::ingest_client::IngestClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::PublishRequest>(MAX_IN_FLIGHT);
        let call = tokio::time::timeout(
            Duration::from_secs(3),
            client.publish_stream(ReceiverStream::new(rx)),
        );
        let Ok(Ok(response)) = call.await else {
            p.failed(grpc);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut replies = response.into_inner();
        let mut in_flight: std::collections::VecDeque<u64> = Default::default();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut last_progress = tokio::time::Instant::now();
        let ended = loop {
            tokio::select! {
                reply = replies.message() => match reply {
                    Ok(Some(reply)) => {
                        last_progress = tokio::time::Instant::now();
                        let n = reply.request_id;
                        // Replies come in request order.
                        if in_flight.front() == Some(&n) {
                            in_flight.pop_front();
                        } else {
                            in_flight.retain(|&m| m != n);
                        }
                        let ik = Workload::idempotency_key(n);
                        if !history.acked.contains_key(&ik) {
                            p.acked.fetch_add(1, Ordering::Relaxed);
                            p.resolved.fetch_add(1, Ordering::Relaxed);
                        }
                        history.ack(&ik, reply.seq);
                        if in_flight.is_empty() && retry.is_empty() && fresh.peek().is_none() {
                            break false;
                        }
                    }
                    Ok(None) => break true,
                    Err(_) => break true,
                },
                _ = tick.tick() => {
                    let now = tokio::time::Instant::now();
                    if now >= p.deadline {
                        break true;
                    }
                    if !in_flight.is_empty() && now - last_progress > STALL {
                        break true;
                    }
                    if in_flight.is_empty() {
                        last_progress = now;
                    }
                    tokens = (tokens + rate * (now - refilled).as_secs_f64()).min(rate * 0.1 + 1.0);
                    refilled = now;
                    let gate = *p.gate.borrow();
                    while in_flight.len() < MAX_IN_FLIGHT {
                        let n = if let Some(n) = retry.pop_front() {
                            n
                        } else if tokens >= 1.0
                            && let Some(&n) = fresh.peek()
                            && n < gate
                        {
                            tokens -= 1.0;
                            fresh.next();
                            n
                        } else {
                            break;
                        };
                        let publish = p.workload.publish(n);
                        history.attempt(&publish.idempotency_key, publish.key.as_deref());
                        let request = pb::PublishRequest {
                            kind: publish.kind.into(),
                            key: publish.key.unwrap_or_default(),
                            payload: publish.payload.into_bytes(),
                            idempotency_key: publish.idempotency_key,
                            request_id: n,
                            ..Default::default()
                        };
                        if tx.try_send(request).is_err() {
                            // Not sent: the stream is going away.
                            retry.push_front(n);
                            break;
                        }
                        in_flight.push_back(n);
                    }
                }
            }
        };
        if !ended {
            break 'streams;
        }
        p.failed(grpc);
        // Every publish still in flight has an unknown outcome: retry it
        // with the same key, in order, unless it was tried often enough.
        let mut most_tries = 0;
        for n in in_flight.into_iter().rev() {
            history.unknown_attempts += 1;
            let tries = attempts.entry(n).or_default();
            *tries += 1;
            most_tries = most_tries.max(*tries);
            if *tries >= p.max_attempts {
                history.give_up(&Workload::idempotency_key(n));
                p.resolved.fetch_add(1, Ordering::Relaxed);
            } else {
                retry.push_front(n);
            }
        }
        // Backing off (0.1 s more per try, up to 1 s) lets a key outlast
        // a store that refuses writes for several seconds (a full disk).
        tokio::time::sleep(retry_pause(most_tries)).await;
    }
    for n in retry {
        history.give_up(&Workload::idempotency_key(n));
        p.resolved.fetch_add(1, Ordering::Relaxed);
    }
    history
}

/// The REST publisher: one `POST /v1/events` per publish, with its
/// `idempotency_key`; an error or timeout is retried with the same key.
pub(super) async fn rest_publisher(mut p: Publishing, numbers: Vec<u64>, rate: f64) -> History {
    let mut history = History::default();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut next_due = tokio::time::Instant::now();
    for n in numbers {
        // Pacing, then the schedule's gate.
        tokio::time::sleep_until(next_due).await;
        if p.gate.wait_for(|&gate| n < gate).await.is_err() {
            break;
        }
        next_due = tokio::time::Instant::now().max(next_due) + interval;
        let publish = p.workload.publish(n);
        let ik = publish.idempotency_key.clone();
        let body = rest_body(&publish);
        history.attempt(&ik, publish.key.as_deref());
        let mut tries = 0;
        loop {
            if tokio::time::Instant::now() >= p.deadline {
                history.give_up(&ik);
                p.resolved.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let http = p.http();
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                post_json(http, "/v1/events", &body),
            )
            .await;
            let seq = match &sent {
                Ok(Ok((202, text))) => serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|json| json["seq"].as_u64()),
                _ => None,
            };
            if let Some(seq) = seq {
                if !history.acked.contains_key(&ik) {
                    p.acked.fetch_add(1, Ordering::Relaxed);
                    p.resolved.fetch_add(1, Ordering::Relaxed);
                }
                history.ack(&ik, seq);
                if let Some(twin) = p.workload.twin(n) {
                    send_twin(&p, twin, &mut history).await;
                }
                break;
            }
            // A connection error, a timeout or a 503: the outcome is unknown.
            p.failed(http);
            history.unknown_attempts += 1;
            tries += 1;
            if tries >= p.max_attempts {
                history.give_up(&ik);
                p.resolved.fetch_add(1, Ordering::Relaxed);
                break;
            }
            tokio::time::sleep(retry_pause(tries)).await;
        }
    }
    history
}

/// Sends a conflicting twin once: a 422 is what core must answer; a seq is
/// a violation; anything else (a 503, a timeout) says nothing.
async fn send_twin(p: &Publishing, twin: Publish, history: &mut History) {
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        post_json(p.http(), "/v1/events", &rest_body(&twin)),
    )
    .await;
    match &sent {
        // Refused as a conflict, by the store, naming the original: not
        // refused by validation before the group commit.
        Ok(Ok((422, text))) if text.contains("original_seq") => history.conflicts_refused += 1,
        Ok(Ok((202, text))) => {
            let seq = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|json| json["seq"].as_u64())
                .unwrap_or(0);
            history.conflicts_accepted.push((twin.idempotency_key, seq));
        }
        _ => {}
    }
}

/// The JSON body of `POST /v1/events` for `publish`.
fn rest_body(publish: &Publish) -> String {
    let payload: serde_json::Value =
        serde_json::from_str(&publish.payload).expect("the workload's payloads are JSON");
    let mut body = serde_json::json!({
        "kind": publish.kind,
        "idempotency_key": publish.idempotency_key,
        "payload": payload,
    });
    if let Some(key) = &publish.key {
        body["key"] = key.as_str().into();
    }
    body.to_string()
}

/// Pause before retrying a publish tried `tries` times.
fn retry_pause(tries: u32) -> Duration {
    Duration::from_millis(100 * u64::from(tries.clamp(1, 10)))
}
