//! Algorithms, chosen by an event's kind.
//!
//! Implement [`Algorithm`] to add one; `process` is async, so an algorithm
//! that waits (a timer, a network call) holds no thread while it waits.
//! Three outcomes:
//!
//! * `Ok(output)`: an *ok result*, stored.
//! * `Err(AlgorithmError::Failed(reason))`: a *failed result*, stored like
//!   any other (the event is acknowledged, never retried).
//! * `Err(AlgorithmError::RetryLater { .. })`: no result yet. Core sends the
//!   event again after its backoff or the wait asked for, whichever is
//!   longer; later events of its key wait for it. Each request counts
//!   toward core's `--max-deliver`, after which the event is parked as dead
//!   with the last reason.
//!
//! A panic makes the processor reject the event, which core parks as dead.
//!
//! CPU-bound work runs through [`cpu_bound`]: inline when the payload is
//! small (tens of microseconds, cheaper than a thread hand-off), on tokio's
//! blocking pool when it is not, so a large payload never stalls the runtime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ackflow_proto::v1 as pb;
use sha2::{Digest, Sha256};

/// Why an algorithm produced no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    /// The event cannot be processed: stored as its failed result with this
    /// reason, never retried.
    #[error("{0}")]
    Failed(String),
    /// Not now (a dependency is down, a rate limit was hit): process the
    /// event again later, at the earliest after `after` (core's backoff
    /// when longer or `None`). Later events of its key wait for it.
    #[error("retry later: {reason}")]
    RetryLater {
        reason: String,
        after: Option<Duration>,
    },
}

impl AlgorithmError {
    /// A failed result.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::Failed(reason.into())
    }

    /// Retry after core's backoff.
    pub fn retry_later(reason: impl Into<String>) -> Self {
        Self::RetryLater {
            reason: reason.into(),
            after: None,
        }
    }

    /// Retry after `after` at the earliest.
    pub fn retry_after(reason: impl Into<String>, after: Duration) -> Self {
        Self::RetryLater {
            reason: reason.into(),
            after: Some(after),
        }
    }
}

/// What an algorithm returns.
pub type Outcome = Result<String, AlgorithmError>;

/// One way of processing events.
pub trait Algorithm: Send + Sync + 'static {
    /// Processes one event (its `payload` is UTF-8 JSON text) into an
    /// output. Implement it as an `async fn`.
    fn process(&self, event: &pb::Event) -> impl Future<Output = Outcome> + Send;
}

/// Payloads up to this size are processed inline by the CPU-bound
/// built-ins; larger ones on the blocking pool.
pub const INLINE_PAYLOAD_BYTES: usize = 16 * 1024;

/// Runs `f` on the payload: inline when it is small, else on the blocking
/// pool.
pub async fn cpu_bound(event: &pb::Event, f: fn(&[u8]) -> Outcome) -> Outcome {
    if event.payload.len() <= INLINE_PAYLOAD_BYTES {
        return f(&event.payload);
    }
    let payload = event.payload.clone();
    match tokio::task::spawn_blocking(move || f(&payload)).await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Not processed: the event is sent again (to this or the next life).
        Err(_) => Err(AlgorithmError::retry_later(
            "the processor is shutting down",
        )),
    }
}

/// Hex SHA-256 of the payload bytes.
pub struct Sha256Hex;

impl Algorithm for Sha256Hex {
    async fn process(&self, event: &pb::Event) -> Outcome {
        cpu_bound(event, |payload| Ok(hex(&Sha256::digest(payload)))).await
    }
}

/// Lowercase hex, two digits a byte, by table: `write!` with `{:02x}` took
/// twice the processor's time of the digest itself (docs/PERFORMANCE.md).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Number of whitespace-separated words in a JSON string payload.
pub struct WordCount;

impl Algorithm for WordCount {
    async fn process(&self, event: &pb::Event) -> Outcome {
        cpu_bound(event, |payload| {
            let text: String = serde_json::from_slice(payload)
                .map_err(|_| AlgorithmError::failed("wordcount expects a JSON string"))?;
            Ok(text.split_whitespace().count().to_string())
        })
        .await
    }
}

/// Sum of a JSON array of numbers.
pub struct Sum;

impl Algorithm for Sum {
    async fn process(&self, event: &pb::Event) -> Outcome {
        cpu_bound(event, |payload| {
            let numbers: Vec<f64> = serde_json::from_slice(payload)
                .map_err(|_| AlgorithmError::failed("sum expects a JSON array of numbers"))?;
            let total: f64 = numbers.iter().sum();
            if !total.is_finite() {
                return Err(AlgorithmError::failed("sum overflowed"));
            }
            Ok(total.to_string())
        })
        .await
    }
}

/// Waits for the payload's number of milliseconds (at most a minute), to
/// simulate slow work such as a call to another service. Holds no thread.
pub struct Sleep;

/// Longest sleep accepted.
const MAX_SLEEP_MS: u64 = 60_000;

impl Algorithm for Sleep {
    async fn process(&self, event: &pb::Event) -> Outcome {
        let ms: u64 = serde_json::from_slice(&event.payload)
            .map_err(|_| AlgorithmError::failed("sleep expects a JSON number of milliseconds"))?;
        if ms > MAX_SLEEP_MS {
            return Err(AlgorithmError::failed(format!(
                "sleep is limited to {MAX_SLEEP_MS} ms"
            )));
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(format!("slept {ms} ms"))
    }
}

/// Always fails: shows how failed results look.
pub struct Fail;

impl Algorithm for Fail {
    async fn process(&self, _event: &pb::Event) -> Outcome {
        Err(AlgorithmError::failed("this algorithm always fails"))
    }
}

/// Asks to be retried later until its attempt number passes `times`, then
/// succeeds: shows retry-later at work. Payload `{"times": 2,
/// "after_ms": 500}` (`after_ms` optional: core's backoff).
pub struct RetryLater;

impl Algorithm for RetryLater {
    async fn process(&self, event: &pb::Event) -> Outcome {
        let bad = || AlgorithmError::failed(r#"retry expects {"times": N, "after_ms": M}"#);
        let p: serde_json::Value = serde_json::from_slice(&event.payload).map_err(|_| bad())?;
        let times = p["times"].as_u64().ok_or_else(bad)?;
        let after_ms = match &p["after_ms"] {
            serde_json::Value::Null => None,
            ms => Some(ms.as_u64().ok_or_else(bad)?),
        };
        if u64::from(event.attempt) > times {
            return Ok(format!("done at attempt {}", event.attempt));
        }
        let reason = format!(
            "attempt {} of the first {times} is asked to retry",
            event.attempt
        );
        Err(match after_ms {
            Some(ms) => AlgorithmError::retry_after(reason, Duration::from_millis(ms)),
            None => AlgorithmError::retry_later(reason),
        })
    }
}

/// Aborts the process: an event that crashes the processor, for tests and
/// the demo. Registered only with `--enable-crash`.
pub struct Crash;

impl Algorithm for Crash {
    async fn process(&self, event: &pb::Event) -> Outcome {
        eprintln!(
            "the crash algorithm aborts the processor (seq {}, --enable-crash)",
            event.seq
        );
        std::process::abort()
    }
}

type BoxOutcome<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// [`Algorithm`] with its future boxed, so that algorithms of different types
/// can sit in one registry.
trait DynAlgorithm: Send + Sync {
    fn process_boxed<'a>(&'a self, event: &'a pb::Event) -> BoxOutcome<'a>;
}

impl<A: Algorithm> DynAlgorithm for A {
    fn process_boxed<'a>(&'a self, event: &'a pb::Event) -> BoxOutcome<'a> {
        Box::pin(self.process(event))
    }
}

/// Algorithms by kind.
#[derive(Clone, Default)]
pub struct Registry {
    by_kind: HashMap<String, Arc<dyn DynAlgorithm>>,
}

impl Registry {
    /// The built-in algorithms: `sha256`, `wordcount`, `sum`, `sleep`,
    /// `fail`, `retry`.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        r.register("sha256", Sha256Hex);
        r.register("wordcount", WordCount);
        r.register("sum", Sum);
        r.register("sleep", Sleep);
        r.register("fail", Fail);
        r.register("retry", RetryLater);
        r
    }

    /// Adds (or replaces) the algorithm for `kind`.
    pub fn register(&mut self, kind: &str, algorithm: impl Algorithm) {
        self.by_kind.insert(kind.to_string(), Arc::new(algorithm));
    }

    /// Kinds with an algorithm, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.by_kind.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    /// Runs the algorithm for the event's kind. An unknown kind is a failed
    /// result.
    pub async fn process(&self, event: &pb::Event) -> Outcome {
        match self.by_kind.get(&event.kind) {
            Some(algorithm) => algorithm.process_boxed(event).await,
            None => Err(AlgorithmError::failed(format!(
                "no algorithm for kind {:?}",
                event.kind
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, payload: &[u8]) -> pb::Event {
        pb::Event {
            kind: kind.into(),
            payload: payload.to_vec(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn builtins() {
        let r = Registry::builtin();
        let run = |kind: &'static str, payload: &'static [u8]| {
            let r = r.clone();
            async move { r.process(&ev(kind, payload)).await }
        };
        assert_eq!(
            run("sha256", b"abc").await.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(run("wordcount", br#""a b  c""#).await.unwrap(), "3");
        assert_eq!(run("sum", b"[1, 2.5, -1]").await.unwrap(), "2.5");
        assert!(run("sum", b"{}").await.is_err());
        assert_eq!(run("sleep", b"1").await.unwrap(), "slept 1 ms");
        assert!(run("fail", b"1").await.is_err());
        assert!(run("nope", b"1").await.is_err());
    }

    #[tokio::test]
    async fn retry_asks_until_its_attempt_passes_times() {
        let r = Registry::builtin();
        let mut event = ev("retry", br#"{"times":2,"after_ms":300}"#);
        for attempt in 1..=2 {
            event.attempt = attempt;
            assert_eq!(
                r.process(&event).await,
                Err(AlgorithmError::RetryLater {
                    reason: format!("attempt {attempt} of the first 2 is asked to retry"),
                    after: Some(Duration::from_millis(300)),
                })
            );
        }
        event.attempt = 3;
        assert_eq!(r.process(&event).await.unwrap(), "done at attempt 3");
        assert!(matches!(
            r.process(&ev("retry", b"1")).await,
            Err(AlgorithmError::Failed(_))
        ));
    }

    #[tokio::test]
    async fn sha256_is_the_lowercase_hex_digest() {
        let r = Registry::builtin();
        // FIPS 180-2's test vectors.
        assert_eq!(
            r.process(&ev("sha256", b"")).await.unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            r.process(&ev("sha256", b"abc")).await.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xf0, 0xff, 0x5a]), "000ff0ff5a");
    }

    #[tokio::test]
    async fn a_large_payload_goes_to_the_blocking_pool_with_the_same_result() {
        let big = vec![b'a'; INLINE_PAYLOAD_BYTES + 1];
        let small = vec![b'a'; INLINE_PAYLOAD_BYTES];
        let r = Registry::builtin();
        let digest = |p: &[u8]| {
            Sha256::digest(p)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(r.process(&ev("sha256", &big)).await.unwrap(), digest(&big));
        assert_eq!(
            r.process(&ev("sha256", &small)).await.unwrap(),
            digest(&small)
        );
    }
}
