//! Round-trip time estimation (RFC 6298 smoothing, as RFC 9002 uses it).

use std::time::Duration;

/// How many recent samples [`RttEstimator::p99`] reads.
pub(crate) const RECENT_SAMPLES: usize = 128;

/// Smoothed RTT, its variation, the minimum seen and the last [`RECENT_SAMPLES`] samples.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
    initial: Duration,
    /// The newest samples in microseconds (a ring; `recent_len` of them are filled).
    recent: [u32; RECENT_SAMPLES],
    recent_next: u8,
    recent_len: u8,
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
            recent: [0; RECENT_SAMPLES],
            recent_next: 0,
            recent_len: 0,
        }
    }

    /// Feeds one sample: `rtt` measured, `ack_delay` reported by the peer.
    pub(crate) fn update(&mut self, rtt: Duration, ack_delay: Duration) {
        self.latest = rtt;
        let us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        self.recent[usize::from(self.recent_next) % RECENT_SAMPLES] = us;
        self.recent_next = ((usize::from(self.recent_next) + 1) % RECENT_SAMPLES) as u8;
        self.recent_len = self.recent_len.saturating_add(1).min(RECENT_SAMPLES as u8);
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

    /// The 99th percentile of the last [`RECENT_SAMPLES`] samples (none before the first).
    /// Computed when asked: the per-ack cost is one store.
    pub(crate) fn p99(&self) -> Option<Duration> {
        let n = usize::from(self.recent_len);
        if n == 0 {
            return None;
        }
        let mut v = self.recent;
        let v = &mut v[..n];
        // Nearest rank: the smallest sample with at least 99% of the samples at or below it.
        let rank = (n * 99).div_ceil(100).max(1) - 1;
        let (_, p, _) = v.select_nth_unstable(rank);
        Some(Duration::from_micros(u64::from(*p)))
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

    #[test]
    fn p99_reads_the_recent_window() {
        let mut r = RttEstimator::new(Duration::from_millis(1));
        assert_eq!(r.p99(), None);
        r.update(Duration::from_micros(70), Duration::ZERO);
        assert_eq!(r.p99(), Some(Duration::from_micros(70)));
        // 100 samples 1..=100 us: the 99th percentile is 99 us.
        let mut r = RttEstimator::new(Duration::from_millis(1));
        for us in 1..=100 {
            r.update(Duration::from_micros(us), Duration::ZERO);
        }
        assert_eq!(r.p99(), Some(Duration::from_micros(99)));
        // Two slow samples in 128 are above the 99th percentile's rank; the first to leave
        // the window takes the percentile down with it.
        r.update(Duration::from_millis(50), Duration::ZERO);
        r.update(Duration::from_millis(50), Duration::ZERO);
        for _ in 0..RECENT_SAMPLES - 2 {
            r.update(Duration::from_micros(10), Duration::ZERO);
        }
        assert_eq!(r.p99(), Some(Duration::from_millis(50)));
        r.update(Duration::from_micros(10), Duration::ZERO);
        assert_eq!(r.p99(), Some(Duration::from_micros(10)));
    }
}
