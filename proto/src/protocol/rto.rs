//! Retransmission timeout estimation (RFC 6298) and backoff with jitter.
//!
//! The round trips measured are those of the heartbeat's probe and its echo
//! (see `Sender::on_echo`): the path between core and the processor, never
//! the time an event waits behind its key, for a retry or in its algorithm.
//! An estimate fed with acks counted those waits, and every wait made the
//! next timeout longer: under a hot key the RTO sat at its cap.

use std::time::Duration;

/// Estimates the retransmission timeout from round trips of the path.
#[derive(Debug, Clone)]
pub struct RtoEstimator {
    /// Smoothed round trip; `None` until the first sample.
    srtt: Option<Duration>,
    /// Round-trip variation.
    rttvar: Duration,
    /// Current timeout, within `[min, max]`.
    rto: Duration,
    min: Duration,
    max: Duration,
}

/// Clock granularity term of RFC 6298 (G).
const GRANULARITY: Duration = Duration::from_millis(1);

impl RtoEstimator {
    /// `initial` is used until the first sample.
    pub fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial.clamp(min, max),
            min,
            max,
        }
    }

    /// Feeds one round-trip measurement.
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = self.rttvar * 3 / 4 + delta / 4;
                self.srtt = Some(srtt * 7 / 8 + rtt / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto = (srtt + (self.rttvar * 4).max(GRANULARITY)).clamp(self.min, self.max);
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// The smoothed round trip, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Wait before retransmitting attempt `attempt` (2 = first retransmit):
    /// `rto · 2^(attempt−2)`, capped at `cap`, then scaled by a random factor
    /// in [0.8, 1.2) so that retransmits of a burst spread out. The cap is
    /// applied after the jitter: delivery never waits longer than `cap`.
    pub fn backoff(&self, attempt: u32, cap: Duration, rng: &mut fastrand::Rng) -> Duration {
        let doublings = attempt.saturating_sub(2).min(20);
        let base = self.rto.saturating_mul(1 << doublings).min(cap);
        let jitter = 0.8 + rng.f64() * 0.4;
        base.mul_f64(jitter).min(cap)
    }
}

/// The first wait before an event that asked to retry later (without a
/// wait of its own, or with 0) is sent again.
pub const RETRY_FIRST: Duration = Duration::from_millis(5);

/// Wait before sending again an event that asked to retry later for the
/// `request`-th time (1 = its first request): `RETRY_FIRST · 2^(request−1)`,
/// capped at `cap`, scaled by a random factor in [0.8, 1.2). A handler that
/// asks once gets its copy within milliseconds; one that keeps asking waits
/// longer each time. Unlike [`RtoEstimator::backoff`] it does not start at
/// the RTO: the event was received and run, so no timeout is being waited
/// out, only the handler's request.
pub fn retry_backoff(request: u32, cap: Duration, rng: &mut fastrand::Rng) -> Duration {
    let doublings = request.saturating_sub(1).min(20);
    let base = RETRY_FIRST.saturating_mul(1 << doublings).min(cap);
    let jitter = 0.8 + rng.f64() * 0.4;
    base.mul_f64(jitter).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn first_sample_then_smoothing() {
        let mut est = RtoEstimator::new(ms(1000), ms(200), ms(60_000));
        assert_eq!(est.rto(), ms(1000));
        est.sample(ms(100));
        // srtt 100, rttvar 50 -> 100 + 200 = 300
        assert_eq!(est.rto(), ms(300));
        for _ in 0..50 {
            est.sample(ms(100));
        }
        // Variation decays; the floor holds.
        assert_eq!(est.rto(), ms(200));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let est = RtoEstimator::new(ms(200), ms(200), ms(60_000));
        let mut rng = fastrand::Rng::with_seed(7);
        let mut last = Duration::ZERO;
        for attempt in 2..8 {
            let b = est.backoff(attempt, ms(5_000), &mut rng);
            assert!(b > last, "attempt {attempt}: {b:?} <= {last:?}");
            last = b;
        }
        for attempt in 8..40 {
            assert!(est.backoff(attempt, ms(5_000), &mut rng) <= ms(5_000));
        }
    }

    #[test]
    fn a_first_retry_waits_milliseconds_and_repeated_ones_wait_longer() {
        let mut rng = fastrand::Rng::with_seed(7);
        let first = retry_backoff(1, ms(30_000), &mut rng);
        assert!(first >= ms(4) && first <= ms(6), "{first:?}");
        let mut last = Duration::ZERO;
        for request in 1..14 {
            let b = retry_backoff(request, ms(30_000), &mut rng);
            assert!(b > last, "request {request}: {b:?} <= {last:?}");
            last = b;
        }
        for request in 14..60 {
            assert!(retry_backoff(request, ms(30_000), &mut rng) <= ms(30_000));
        }
    }
}
