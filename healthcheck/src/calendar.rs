//! The SYN scheduler's calendar: backends filed under the grid point their next check is due at.
//!
//! Checks start only on the monitor's grid (a point every few milliseconds), so the backends due at one point
//! can share one entry: filing a backend is a lookup among the few hundred points of the coming intervals and
//! a push, and the due ones are taken a point at a time. A binary heap of 10,000 backends instead walked
//! fourteen levels of a quarter-megabyte array at every check, most of the scheduler's time in a profile.
//!
//! ```text
//!   point  1000: [17, 4203, 9, ...]      ← taken when the grid reaches 1000
//!   point  1001: [388, 12, ...]
//!   ...
//!   point  1250: [5, ...]                ← a 1 s interval is 250 points of 4 ms ahead
//! ```

use std::collections::BTreeMap;

/// Backends (by their index in the scheduler) filed by grid point (a count of grid steps from the origin).
#[derive(Default)]
pub struct Calendar {
    points: BTreeMap<u64, Vec<usize>>,
    /// Emptied lists, reused so that filing allocates nothing once the calendar has run a while.
    spare: Vec<Vec<usize>>,
}

impl Calendar {
    /// Files backend `job` under grid point `point`.
    pub fn file(&mut self, point: u64, job: usize) {
        let spare = &mut self.spare;
        self.points
            .entry(point)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(job);
    }

    /// The earliest point anything is filed under.
    pub fn next(&self) -> Option<u64> {
        self.points.keys().next().copied()
    }

    /// Moves every backend filed under a point up to and including `now` to `into`, earliest point first.
    pub fn take_due(&mut self, now: u64, into: &mut Vec<usize>) {
        while let Some(e) = self.points.first_entry() {
            if *e.key() > now {
                break;
            }
            let mut jobs = e.remove();
            into.append(&mut jobs);
            self.spare.push(jobs);
        }
    }

    /// How many backends are filed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.points.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `take_due(now)` moves out of `c`.
    fn taken(c: &mut Calendar, now: u64) -> Vec<usize> {
        let mut due = Vec::new();
        c.take_due(now, &mut due);
        due
    }

    #[test]
    fn due_backends_come_out_earliest_point_first() {
        let mut c = Calendar::default();
        for (point, job) in [(7, 70), (3, 30), (5, 50), (3, 31)] {
            c.file(point, job);
        }
        assert_eq!(taken(&mut c, 5), [30, 31, 50]);
        assert_eq!(c.next(), Some(7));
    }

    #[test]
    fn a_point_after_now_is_not_taken() {
        let mut c = Calendar::default();
        c.file(10, 1);
        assert!(taken(&mut c, 9).is_empty());
        assert_eq!(c.len(), 1);
        assert_eq!(taken(&mut c, 10), [1]);
        assert_eq!((c.len(), c.next()), (0, None));
    }

    #[test]
    fn a_backend_filed_again_after_being_taken_is_due_at_its_new_point() {
        let mut c = Calendar::default();
        c.file(2, 4);
        assert_eq!(taken(&mut c, 2), [4]);
        c.file(252, 4);
        assert!(taken(&mut c, 251).is_empty());
        assert_eq!(taken(&mut c, 252), [4]);
    }

    #[test]
    fn emptied_lists_are_reused() {
        let mut c = Calendar::default();
        for round in 0..100u64 {
            for job in 0..40 {
                c.file(round, job);
            }
            assert_eq!(taken(&mut c, round).len(), 40);
        }
        // One list went round the whole time: no more than one spare was ever needed.
        assert_eq!(c.spare.len(), 1);
    }
}
