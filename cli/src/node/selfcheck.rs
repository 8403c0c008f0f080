//! The dataplane self-check: whether every worker still runs, judged from its heartbeat (the runtime time
//! it last published, advancing about every millisecond) as the control loop samples it twice a second.
//!
//! A worker is stalled when its heartbeat has not moved for `stall` of the control loop's own time. The
//! control thread can itself be paused (SIGSTOP, a VM pause, an overloaded host): a sample that comes much
//! later than the sampling interval proves nothing about the workers, which were paused too, so it only
//! restarts the count (a pause is never judged by wall-clock ages taken across it).

use std::time::{Duration, Instant};

/// The self-check's memory between samples.
#[derive(Debug)]
pub struct SelfCheck {
    interval: Duration,
    stall: Duration,
    last: Option<(Instant, Vec<u64>)>,
    /// Per worker: control-loop time since its heartbeat last moved.
    still: Vec<Duration>,
}

impl SelfCheck {
    /// A check sampled every `interval` that declares a worker stalled after `stall` without progress.
    pub fn new(interval: Duration, stall: Duration) -> SelfCheck {
        SelfCheck {
            interval,
            stall,
            last: None,
            still: Vec::new(),
        }
    }

    /// A sample at `now` of the workers' heartbeats: `Some(forwarding)` when it can judge, `None` when this
    /// sample only starts a count (the first one, or one that came late because the control loop was paused).
    pub fn observe(&mut self, now: Instant, beats: &[u64]) -> Option<bool> {
        let previous = self.last.replace((now, beats.to_vec()));
        let (then, old) = previous?;
        let gap = now.saturating_duration_since(then);
        if gap > self.interval * 2 || old.len() != beats.len() {
            self.still = vec![Duration::ZERO; beats.len()];
            return None;
        }
        self.still.resize(beats.len(), Duration::ZERO);
        for ((still, new), old) in self.still.iter_mut().zip(beats).zip(&old) {
            *still = if new == old { *still + gap } else { Duration::ZERO };
        }
        Some(self.still.iter().all(|s| *s < self.stall))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(500);

    fn check() -> SelfCheck {
        SelfCheck::new(TICK, Duration::from_secs(1))
    }

    #[test]
    fn running_workers_pass() {
        let (mut c, t0) = (check(), Instant::now());
        assert_eq!(c.observe(t0, &[10, 10]), None);
        assert_eq!(c.observe(t0 + TICK, &[510, 505]), Some(true));
        assert_eq!(c.observe(t0 + TICK * 2, &[1010, 1003]), Some(true));
    }

    #[test]
    fn a_worker_whose_heartbeat_stops_for_a_second_fails() {
        let (mut c, t0) = (check(), Instant::now());
        c.observe(t0, &[10, 10]);
        assert_eq!(c.observe(t0 + TICK, &[510, 10]), Some(true));
        assert_eq!(c.observe(t0 + TICK * 2, &[1010, 10]), Some(false));
        // It runs again: forwarding again at the next sample.
        assert_eq!(c.observe(t0 + TICK * 3, &[1510, 1500]), Some(true));
    }

    #[test]
    fn a_pause_of_the_whole_process_is_not_a_stall() {
        // SIGSTOP for 3 s: the first sample after SIGCONT comes late and sees old heartbeats (the workers
        // have not published yet). It judges nothing; the workers publish before the next sample.
        let (mut c, t0) = (check(), Instant::now());
        c.observe(t0, &[10]);
        c.observe(t0 + TICK, &[510]);
        let resumed = t0 + TICK + Duration::from_secs(3);
        assert_eq!(c.observe(resumed, &[510]), None);
        assert_eq!(c.observe(resumed + TICK, &[4010]), Some(true));
    }

    #[test]
    fn a_worker_stuck_across_a_pause_is_still_caught() {
        let (mut c, t0) = (check(), Instant::now());
        c.observe(t0, &[10]);
        let resumed = t0 + Duration::from_secs(3);
        assert_eq!(c.observe(resumed, &[10]), None);
        assert_eq!(c.observe(resumed + TICK, &[10]), Some(true));
        assert_eq!(c.observe(resumed + TICK * 2, &[10]), Some(false));
    }
}
