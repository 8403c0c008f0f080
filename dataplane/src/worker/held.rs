//! The client segments a SYN-proxy holds while a connection's backend has not answered its SYN yet: bounded per
//! connection and per worker (the count is kept, not summed, so a hold costs the same however many are held),
//! given back in arrival order when the backend answers, and given up after a while.

use crate::flow::{Addr, FastMap};

/// A connection's client tuple: client, client port, VIP, VIP port.
pub(super) type HeldKey = (Addr, u16, Addr, u16);

/// Client segments held for one connection.
pub(super) const PER_CONN: usize = 8;
/// Client segments held by one worker in all.
pub(super) const PER_WORKER: usize = 4096;
/// Held segments of a connection pending this long after its last SYN are given up.
const MAX_MS: u64 = 10_000;

/// One pending connection's segments and when its SYN last went out.
#[derive(Debug)]
struct Pending<F> {
    frames: Vec<(u16, F)>,
    syn_ms: u64,
}

/// The held segments of one worker.
#[derive(Debug)]
pub(super) struct Held<F> {
    by_conn: FastMap<HeldKey, Pending<F>>,
    frames: usize,
}

impl<F> Default for Held<F> {
    fn default() -> Self {
        Held {
            by_conn: FastMap::default(),
            frames: 0,
        }
    }
}

impl<F> Held<F> {
    /// A connection starts pending: its SYN went out at `now_ms`.
    pub(super) fn open(&mut self, key: HeldKey, now_ms: u64) {
        if let Some(old) = self.by_conn.insert(
            key,
            Pending {
                frames: Vec::new(),
                syn_ms: now_ms,
            },
        ) {
            self.frames -= old.frames.len();
        }
    }

    /// Holds frame `f` (received on `port`) of pending connection `key`; hands it back when the connection is
    /// not pending here or a bound is reached.
    pub(super) fn push(&mut self, key: &HeldKey, port: u16, f: F) -> Result<(), F> {
        if self.frames >= PER_WORKER {
            return Err(f);
        }
        match self.by_conn.get_mut(key) {
            Some(p) if p.frames.len() < PER_CONN => {
                p.frames.push((port, f));
                self.frames += 1;
                Ok(())
            }
            _ => Err(f),
        }
    }

    /// The connection is no longer pending: its frames, in arrival order.
    pub(super) fn take(&mut self, key: &HeldKey) -> Vec<(u16, F)> {
        let frames = self.by_conn.remove(key).map(|p| p.frames).unwrap_or_default();
        self.frames -= frames.len();
        frames
    }

    /// The first frame held for `key`.
    pub(super) fn first(&self, key: &HeldKey) -> Option<&F> {
        self.by_conn.get(key)?.frames.first().map(|(_, f)| f)
    }

    /// Whether `key`'s SYN went out `ms` or more before `now_ms`.
    pub(super) fn syn_older(&self, key: &HeldKey, now_ms: u64, ms: u64) -> bool {
        self.by_conn
            .get(key)
            .is_some_and(|p| now_ms.saturating_sub(p.syn_ms) >= ms)
    }

    /// `key`'s SYN went out again at `now_ms`.
    pub(super) fn syn_sent(&mut self, key: &HeldKey, now_ms: u64) {
        if let Some(p) = self.by_conn.get_mut(key) {
            p.syn_ms = now_ms;
        }
    }

    /// Gives up what is held for connections whose SYN went out too long ago; how many frames.
    pub(super) fn sweep(&mut self, now_ms: u64) -> usize {
        let before = self.frames;
        let mut dropped = 0;
        self.by_conn.retain(|_, p| {
            let keep = now_ms.saturating_sub(p.syn_ms) < MAX_MS;
            if !keep {
                dropped += p.frames.len();
            }
            keep
        });
        self.frames = before - dropped;
        dropped
    }

    /// Nothing is pending.
    pub(super) fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }

    /// Frames held in all.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u16) -> HeldKey {
        ([0; 16], i, [1; 16], 80)
    }

    #[test]
    fn frames_are_held_in_order_and_counted() {
        let mut h: Held<u32> = Held::default();
        assert_eq!(h.push(&key(1), 0, 7), Err(7), "not pending");
        h.open(key(1), 0);
        for f in 0..PER_CONN as u32 {
            assert_eq!(h.push(&key(1), 0, f), Ok(()));
        }
        assert_eq!(h.push(&key(1), 0, 99), Err(99), "the connection's bound");
        assert_eq!(h.first(&key(1)), Some(&0));
        assert_eq!(h.len(), PER_CONN);
        let got: Vec<u32> = h.take(&key(1)).into_iter().map(|(_, f)| f).collect();
        assert_eq!(got, (0..PER_CONN as u32).collect::<Vec<_>>());
        assert_eq!((h.len(), h.is_empty()), (0, true));
    }

    #[test]
    fn the_worker_bound_holds_across_connections() {
        let mut h: Held<u32> = Held::default();
        for k in 0..(PER_WORKER / PER_CONN + 1) as u16 {
            h.open(key(k), 0);
            for _ in 0..PER_CONN {
                let _ = h.push(&key(k), 0, 1);
            }
        }
        assert_eq!(h.len(), PER_WORKER);
        h.take(&key(0));
        assert_eq!(h.len(), PER_WORKER - PER_CONN);
        h.open(key(1), 5);
        assert_eq!(
            h.len(),
            PER_WORKER - 2 * PER_CONN,
            "reopening drops what was held"
        );
    }

    #[test]
    fn old_pending_connections_are_given_up_and_syns_timed() {
        let mut h: Held<u32> = Held::default();
        h.open(key(1), 0);
        h.open(key(2), 9_000);
        let _ = h.push(&key(1), 0, 1);
        let _ = h.push(&key(2), 0, 2);
        assert!(h.syn_older(&key(1), 1_000, 1_000));
        assert!(!h.syn_older(&key(2), 9_500, 1_000));
        h.syn_sent(&key(1), 2_000);
        assert!(!h.syn_older(&key(1), 2_500, 1_000));
        assert_eq!(h.sweep(12_000), 1, "key 1's SYN went out at 2 s");
        assert_eq!((h.len(), h.first(&key(2))), (1, Some(&2)));
    }
}
