//! Rise/fall state of one backend, Sans-IO: results in, transitions out. A backend starts down (it must prove
//! itself `rise` times before it takes traffic), goes down after `fall` failures in a row and up after `rise`
//! successes in a row. Slow start ramps its weight linearly over a configured time after it comes up.

use std::time::Duration;

/// Health of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Passing.
    Up,
    /// Failing (or not yet proven).
    Down,
}

/// Rise/fall counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    health: Health,
    /// Consecutive results that disagree with `health`.
    streak: u32,
}

impl RiseFall {
    /// A backend that has not passed yet.
    pub fn new(rise: u32, fall: u32) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            health: Health::Down,
            streak: 0,
        }
    }

    /// The same counters, starting up (health carried over from a previous monitor).
    pub fn into_up(mut self) -> Self {
        self.health = Health::Up;
        self.streak = 0;
        self
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Records a result; returns the new health when it changed.
    pub fn record(&mut self, ok: bool) -> Option<Health> {
        match (self.health, ok) {
            (Health::Up, true) | (Health::Down, false) => {
                self.streak = 0;
                None
            }
            (Health::Down, true) => {
                self.streak += 1;
                if self.streak >= self.rise {
                    self.health = Health::Up;
                    self.streak = 0;
                    Some(Health::Up)
                } else {
                    None
                }
            }
            (Health::Up, false) => {
                self.streak += 1;
                if self.streak >= self.fall {
                    self.health = Health::Down;
                    self.streak = 0;
                    Some(Health::Down)
                } else {
                    None
                }
            }
        }
    }
}

/// The weight of a backend `since_up` after it came up, ramping from 1 to `weight` over `slow_start`.
pub fn slow_start_weight(weight: u32, since_up: Duration, slow_start: Option<Duration>) -> u32 {
    match slow_start {
        Some(s) if !s.is_zero() && since_up < s && weight > 0 => {
            let w = (u128::from(weight) * since_up.as_millis() / s.as_millis()) as u32;
            w.clamp(1, weight)
        }
        _ => weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_are_exact() {
        let mut r = RiseFall::new(2, 3);
        assert_eq!(r.record(true), None);
        assert_eq!(r.record(true), Some(Health::Up));
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(true), None, "a success resets the failure streak");
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), Some(Health::Down));
        assert_eq!(r.record(true), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.health(), Health::Down);
    }

    #[test]
    fn slow_start_ramps_linearly() {
        let s = Some(Duration::from_secs(10));
        assert_eq!(slow_start_weight(100, Duration::ZERO, s), 1);
        assert_eq!(slow_start_weight(100, Duration::from_secs(5), s), 50);
        assert_eq!(slow_start_weight(100, Duration::from_secs(10), s), 100);
        assert_eq!(slow_start_weight(100, Duration::from_secs(3), None), 100);
    }
}
