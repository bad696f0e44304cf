//! What the chaos publishers publish: publish number `n` always sends the
//! same event for a given seed, so a run's workload is reproducible like its
//! fault schedule.
//!
//! * Every publish has its own idempotency key, `p<n>`; the checker traces
//!   stored events back to publishes by it.
//! * Ordering keys follow a Zipf-like law over [`ChaosConfig::keys`] keys
//!   (`key-1` is the hottest): the weight of the key of rank r is
//!   1 / r^[`key_skew`](ChaosConfig::key_skew), so with 300 keys and a skew
//!   of 1 the hottest key takes about 16 % of the events and the five
//!   hottest a third, while most keys see a handful. A fraction
//!   ([`ChaosConfig::unkeyed`]) carries no key: they form one lane of their
//!   own.
//! * Kinds: a fraction of `sleep` events of a few milliseconds
//!   ([`ChaosConfig::sleep_fraction`]), so calls of different keys really
//!   are in progress at the same time; of the rest mostly `sha256`, some
//!   `wordcount` and `sum`, and 1 % `fail` (a failed result is a result
//!   too); a fraction ([`ChaosConfig::webhooks`]) of `hook` events, which
//!   the processor posts to the run's failing webhook endpoint.
//! * A fraction of the REST publishes ([`ChaosConfig::conflicts`]) is
//!   followed, once acknowledged, by a *conflicting twin*: the same
//!   idempotency key with another payload, which core must refuse (422)
//!   and store nothing of, without disturbing the publishes committed
//!   beside it.

use super::ChaosConfig;

/// One publish, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub idempotency_key: String,
    /// The ordering key (`None`: no key).
    pub key: Option<String>,
    pub kind: &'static str,
    /// JSON text.
    pub payload: String,
}

/// The workload of a run: each publish's ordering key and sleep, drawn
/// once from the seed.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Rank of each publish's ordering key (1 = hottest), 0 for none.
    key_rank: Vec<u32>,
    /// Milliseconds each publish sleeps, 0 when it is no `sleep` event.
    sleep_ms: Vec<u16>,
    /// Whether each publish is a `hook` event.
    hook: Vec<bool>,
    /// Whether each publish, when sent over REST, is followed by a
    /// conflicting twin.
    twin: Vec<bool>,
    /// Appended to every `sha256` payload ([`ChaosConfig::pad`]).
    pad: String,
}

impl Workload {
    pub fn new(config: &ChaosConfig) -> Self {
        // A stream of its own, so that the workload does not move the
        // fault schedule's draws.
        let mut rng = fastrand::Rng::with_seed(config.seed ^ 0x776f_726b_6c6f_6164);
        let cumulative: Vec<f64> = (1..=config.keys)
            .scan(0.0, |total, rank| {
                *total += (rank as f64).powf(-config.key_skew);
                Some(*total)
            })
            .collect();
        let total = cumulative.last().copied().unwrap_or(0.0);
        let (lo, hi) = config.sleep_ms;
        let mut key_rank = Vec::with_capacity(config.events as usize);
        let mut sleep_ms = Vec::with_capacity(config.events as usize);
        // Drawn from a stream of their own, so that runs without webhooks
        // keep the workload they had.
        let mut hook_rng = fastrand::Rng::with_seed(config.seed ^ 0x686f_6f6b_7321);
        let mut hook = Vec::with_capacity(config.events as usize);
        let mut twin_rng = fastrand::Rng::with_seed(config.seed ^ 0x7477_696e_7321);
        let mut twin = Vec::with_capacity(config.events as usize);
        for _ in 0..config.events {
            let unkeyed = cumulative.is_empty() || rng.f64() < config.unkeyed;
            let draw = rng.f64() * total;
            key_rank.push(if unkeyed {
                0
            } else {
                (cumulative.partition_point(|&c| c < draw) + 1).min(cumulative.len()) as u32
            });
            let sleep = rng.f64() < config.sleep_fraction;
            let ms = if hi > lo { rng.u64(lo..=hi) } else { lo };
            sleep_ms.push(if sleep { ms.clamp(1, 60_000) as u16 } else { 0 });
            hook.push(config.webhooks > 0.0 && hook_rng.f64() < config.webhooks);
            twin.push(config.conflicts > 0.0 && twin_rng.f64() < config.conflicts);
        }
        Self {
            key_rank,
            sleep_ms,
            hook,
            twin,
            pad: " ".repeat(config.pad),
        }
    }

    /// Publishes in the workload.
    pub fn len(&self) -> u64 {
        self.key_rank.len() as u64
    }

    /// True when there is nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.key_rank.is_empty()
    }

    /// The idempotency key of publish `n`.
    pub fn idempotency_key(n: u64) -> String {
        format!("p{n}")
    }

    /// The conflicting twin of publish `n`, if it has one: its idempotency
    /// key with another payload.
    pub fn twin(&self, n: u64) -> Option<Publish> {
        if !self.twin.get(n as usize).copied().unwrap_or(false) {
            return None;
        }
        let mut twin = self.publish(n);
        twin.payload = format!(r#""conflicting twin of {n}""#);
        Some(twin)
    }

    /// What publish `n` sends.
    pub fn publish(&self, n: u64) -> Publish {
        let i = n as usize;
        let key = match self.key_rank.get(i).copied().unwrap_or(0) {
            0 => None,
            rank => Some(format!("key-{rank}")),
        };
        let sleep = self.sleep_ms.get(i).copied().unwrap_or(0);
        let pad = &self.pad;
        let hook = self.hook.get(i).copied().unwrap_or(false);
        let (kind, payload) = match (sleep, n % 100) {
            _ if hook => ("hook", format!(r#""chaos hook {n}""#)),
            (ms @ 1.., _) => ("sleep", ms.to_string()),
            (_, 0) => ("fail", "null".into()),
            (_, 1..=9) => ("wordcount", format!(r#""chaos event number {n}""#)),
            (_, 10..=19) => ("sum", format!("[{n}, 1, 2]")),
            _ => ("sha256", format!(r#""chaos event {n}{pad}""#)),
        };
        Publish {
            idempotency_key: Self::idempotency_key(n),
            key,
            kind,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_a_function_of_the_seed_with_a_few_hot_keys() {
        let config = ChaosConfig::quiet(20_000, 7);
        let a = Workload::new(&config);
        let b = Workload::new(&config);
        assert!((0..a.len()).all(|n| a.publish(n) == b.publish(n)));
        let mut per_key = std::collections::HashMap::new();
        let (mut unkeyed, mut sleeps) = (0, 0);
        for n in 0..a.len() {
            let p = a.publish(n);
            match p.key {
                Some(key) => *per_key.entry(key).or_insert(0u64) += 1,
                None => unkeyed += 1,
            }
            if p.kind == "sleep" {
                sleeps += 1;
                let ms: u64 = p.payload.parse().unwrap();
                assert!((config.sleep_ms.0..=config.sleep_ms.1).contains(&ms));
            }
        }
        let share = |n: u64| n as f64 / a.len() as f64;
        let hottest = per_key["key-1"];
        assert!(per_key.values().all(|&n| n <= hottest));
        assert!((0.1..0.25).contains(&share(hottest)), "{hottest}");
        assert!(per_key.len() > 250, "{} keys", per_key.len());
        assert!((0.07..0.13).contains(&share(unkeyed)), "{unkeyed}");
        assert!((0.03..0.07).contains(&share(sleeps)), "{sleeps}");
        let other = Workload::new(&ChaosConfig::quiet(20_000, 8));
        assert!((0..a.len()).any(|n| a.publish(n) != other.publish(n)));
    }
}
