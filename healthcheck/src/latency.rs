//! How long checks take: the last duration and a histogram with fixed bounds, per backend. Fixed bounds keep a
//! record to a few words and let every backend's histogram be summed or compared without resampling.

use std::time::Duration;

/// Upper bounds of the buckets, in seconds (the last bucket, +Inf, is implied).
pub const BOUNDS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A histogram of check durations.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[repr(C)]
pub struct Durations {
    /// Sum of all durations, in seconds (first, beside the buckets of fast checks: a check writes one
    /// cache line).
    pub sum_secs: f64,
    /// Checks per bucket, not cumulative: `counts[i]` took at most `BOUNDS[i]` and more than the bound
    /// before; the last entry counts those over every bound.
    pub counts: [u64; BOUNDS.len() + 1],
}

impl Durations {
    /// Adds one check.
    pub fn record(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BOUNDS.iter().position(|&b| s <= b).unwrap_or(BOUNDS.len());
        self.counts[i] += 1;
        self.sum_secs += s;
    }

    /// Number of checks.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_bucket_and_add_up() {
        let mut d = Durations::default();
        d.record(Duration::from_micros(300));
        d.record(Duration::from_millis(1));
        d.record(Duration::from_millis(40));
        d.record(Duration::from_secs(7));
        assert_eq!(d.count(), 4);
        assert_eq!(d.counts[0], 1);
        assert_eq!(d.counts[1], 1, "a duration on a bound belongs to that bound");
        assert_eq!(d.counts[6], 1);
        assert_eq!(d.counts[BOUNDS.len()], 1);
        assert!((d.sum_secs - 7.0413).abs() < 1e-9);
    }
}
