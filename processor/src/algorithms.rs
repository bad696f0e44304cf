//! Algorithms, chosen by an event's kind.
//!
//! Implement [`Algorithm`] to add one. An algorithm's error becomes a
//! *failed result* (stored like any other: the event is acknowledged, not
//! retried); only a panic makes the processor reject the event, which core
//! then parks as dead.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Why an algorithm could not produce an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AlgorithmError(pub String);

/// One way of processing events.
pub trait Algorithm: Send + Sync {
    /// Processes one payload (UTF-8 JSON text) into an output.
    fn process(&self, payload: &[u8]) -> Result<String, AlgorithmError>;
}

/// Hex SHA-256 of the payload bytes.
pub struct Sha256Hex;

impl Algorithm for Sha256Hex {
    fn process(&self, payload: &[u8]) -> Result<String, AlgorithmError> {
        let digest = Sha256::digest(payload);
        let mut hex = String::with_capacity(64);
        for byte in digest {
            let _ = write!(hex, "{byte:02x}");
        }
        Ok(hex)
    }
}

/// Number of whitespace-separated words in a JSON string payload.
pub struct WordCount;

impl Algorithm for WordCount {
    fn process(&self, payload: &[u8]) -> Result<String, AlgorithmError> {
        let text: String = serde_json::from_slice(payload)
            .map_err(|_| AlgorithmError("wordcount expects a JSON string".into()))?;
        Ok(text.split_whitespace().count().to_string())
    }
}

/// Sum of a JSON array of numbers.
pub struct Sum;

impl Algorithm for Sum {
    fn process(&self, payload: &[u8]) -> Result<String, AlgorithmError> {
        let numbers: Vec<f64> = serde_json::from_slice(payload)
            .map_err(|_| AlgorithmError("sum expects a JSON array of numbers".into()))?;
        let total: f64 = numbers.iter().sum();
        if !total.is_finite() {
            return Err(AlgorithmError("sum overflowed".into()));
        }
        Ok(total.to_string())
    }
}

/// Sleeps for the payload's number of milliseconds (at most a minute), to
/// simulate slow work.
pub struct Sleep;

/// Longest sleep accepted.
const MAX_SLEEP_MS: u64 = 60_000;

impl Algorithm for Sleep {
    fn process(&self, payload: &[u8]) -> Result<String, AlgorithmError> {
        let ms: u64 = serde_json::from_slice(payload)
            .map_err(|_| AlgorithmError("sleep expects a JSON number of milliseconds".into()))?;
        if ms > MAX_SLEEP_MS {
            return Err(AlgorithmError(format!(
                "sleep is limited to {MAX_SLEEP_MS} ms"
            )));
        }
        std::thread::sleep(Duration::from_millis(ms));
        Ok(format!("slept {ms} ms"))
    }
}

/// Always fails: shows how failed results look.
pub struct Fail;

impl Algorithm for Fail {
    fn process(&self, _payload: &[u8]) -> Result<String, AlgorithmError> {
        Err(AlgorithmError("this algorithm always fails".into()))
    }
}

/// Algorithms by kind.
#[derive(Clone, Default)]
pub struct Registry {
    by_kind: HashMap<String, Arc<dyn Algorithm>>,
}

impl Registry {
    /// The built-in algorithms: `sha256`, `wordcount`, `sum`, `sleep`, `fail`.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        r.register("sha256", Sha256Hex);
        r.register("wordcount", WordCount);
        r.register("sum", Sum);
        r.register("sleep", Sleep);
        r.register("fail", Fail);
        r
    }

    /// Adds (or replaces) the algorithm for `kind`.
    pub fn register(&mut self, kind: &str, algorithm: impl Algorithm + 'static) {
        self.by_kind.insert(kind.to_string(), Arc::new(algorithm));
    }

    /// Kinds with an algorithm, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.by_kind.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    /// Runs the algorithm for `kind`. An unknown kind is a failed result.
    pub fn process(&self, kind: &str, payload: &[u8]) -> Result<String, AlgorithmError> {
        match self.by_kind.get(kind) {
            Some(algorithm) => algorithm.process(payload),
            None => Err(AlgorithmError(format!("no algorithm for kind {kind:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins() {
        let r = Registry::builtin();
        assert_eq!(
            r.process("sha256", b"abc").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(r.process("wordcount", br#""a b  c""#).unwrap(), "3");
        assert_eq!(r.process("sum", b"[1, 2.5, -1]").unwrap(), "2.5");
        assert!(r.process("sum", b"{}").is_err());
        assert_eq!(r.process("sleep", b"1").unwrap(), "slept 1 ms");
        assert!(r.process("fail", b"1").is_err());
        assert!(r.process("nope", b"1").is_err());
    }
}
