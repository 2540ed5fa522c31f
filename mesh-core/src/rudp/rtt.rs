//! Round-trip time estimation (RFC 6298 smoothing, as RFC 9002 uses it).

use std::time::Duration;

/// Smoothed RTT, its variation and the minimum seen.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
    initial: Duration,
}

impl RttEstimator {
    /// A new estimator assuming `initial` until the first sample.
    pub(crate) fn new(initial: Duration) -> Self {
        RttEstimator {
            latest: initial,
            smoothed: None,
            var: initial / 2,
            min: initial,
            initial,
        }
    }

    /// Feeds one sample: `rtt` measured, `ack_delay` reported by the peer.
    pub(crate) fn update(&mut self, rtt: Duration, ack_delay: Duration) {
        self.latest = rtt;
        match self.smoothed {
            None => {
                self.min = rtt;
                self.smoothed = Some(rtt);
                self.var = rtt / 2;
            }
            Some(srtt) => {
                self.min = self.min.min(rtt);
                // Subtract the peer's ack delay when that does not go below the minimum.
                let adjusted = if rtt >= self.min + ack_delay {
                    rtt - ack_delay
                } else {
                    rtt
                };
                // In nanoseconds (u64 covers 584 years): cheaper than Duration arithmetic.
                let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                let (s, a, v) = (ns(srtt), ns(adjusted), ns(self.var));
                let diff = s.abs_diff(a);
                self.var = Duration::from_nanos(v.saturating_mul(3).saturating_add(diff) / 4);
                self.smoothed = Some(Duration::from_nanos(
                    s.saturating_mul(7).saturating_add(a) / 8,
                ));
            }
        }
    }

    /// The smoothed RTT (the initial guess before any sample).
    pub(crate) fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(self.initial)
    }

    /// The latest sample.
    pub(crate) fn latest(&self) -> Duration {
        self.latest
    }

    /// The retransmission timeout before backoff: `srtt + max(4 * rttvar, granularity) +
    /// max_ack_delay`, at least `min_rto`.
    pub(crate) fn pto(
        &self,
        granularity: Duration,
        max_ack_delay: Duration,
        min_rto: Duration,
    ) -> Duration {
        // In nanoseconds: cheaper than Duration arithmetic (it runs for every timer query).
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let pto = ns(self.smoothed())
            .saturating_add(ns(self.var).saturating_mul(4).max(ns(granularity)))
            .saturating_add(ns(max_ack_delay));
        Duration::from_nanos(pto.max(ns(min_rto)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_and_bounds() {
        let mut r = RttEstimator::new(Duration::from_millis(1));
        for _ in 0..50 {
            r.update(Duration::from_micros(100), Duration::ZERO);
        }
        assert!(r.smoothed() < Duration::from_micros(110));
        let pto = r.pto(
            Duration::from_millis(1),
            Duration::from_millis(1),
            Duration::from_millis(3),
        );
        assert_eq!(pto, Duration::from_millis(3));
    }
}
