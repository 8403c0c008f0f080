//! The worker's neighbour table (ARP and IPv6 ND results) with a bounded hold queue per unresolved neighbour.
//!
//! Entries are never removed, only updated, so a connection may cache an entry's slot number. Learning is
//! limited to neighbours we asked about, neighbours that asked about us, and static entries, and the table has
//! a hard size, so a flood of spoofed ARP cannot grow it without bound.

use std::collections::VecDeque;

use crate::flow::{Addr, FastMap};
use crate::wire::ethernet::Mac;

/// Frames held per unresolved neighbour.
pub const HOLD_MAX: usize = 16;
/// Most entries per worker (a connection caches its slot in 16 bits, the last value meaning none).
pub const MAX_ENTRIES: usize = (1 << 16) - 1;
/// Least time between two solicitations for one neighbour.
pub const SOLICIT_INTERVAL_MS: u64 = 1000;

/// One neighbour.
#[derive(Debug)]
pub struct Entry<F> {
    /// Its address.
    pub addr: Addr,
    /// The port it is on.
    pub port: u16,
    /// Its MAC, once known.
    pub mac: Option<Mac>,
    /// Set from the topology; never overwritten by learning.
    pub is_static: bool,
    hold: VecDeque<F>,
    last_solicit_ms: Option<u64>,
}

impl<F> Entry<F> {
    /// Frames waiting for its resolution.
    pub fn held(&self) -> usize {
        self.hold.len()
    }
}

/// The table.
#[derive(Debug)]
pub struct Neighbors<F> {
    slots: Vec<Entry<F>>,
    by_key: FastMap<(u16, Addr), u32>,
}

impl<F> Default for Neighbors<F> {
    fn default() -> Self {
        Neighbors {
            slots: Vec::new(),
            by_key: FastMap::default(),
        }
    }
}

impl<F> Neighbors<F> {
    /// The slot of (port, addr), created unresolved if missing; `None` when the table is full.
    pub fn slot(&mut self, port: u16, addr: &Addr) -> Option<u32> {
        if let Some(&s) = self.by_key.get(&(port, *addr)) {
            return Some(s);
        }
        if self.slots.len() >= MAX_ENTRIES {
            return None;
        }
        let s = self.slots.len() as u32;
        self.slots.push(Entry {
            addr: *addr,
            port,
            mac: None,
            is_static: false,
            hold: VecDeque::new(),
            last_solicit_ms: None,
        });
        self.by_key.insert((port, *addr), s);
        Some(s)
    }

    /// The entry in `slot`.
    pub fn get(&self, slot: u32) -> Option<&Entry<F>> {
        self.slots.get(slot as usize)
    }

    /// The MAC of `slot`, if resolved.
    #[inline]
    pub fn mac(&self, slot: u32) -> Option<Mac> {
        self.slots.get(slot as usize).and_then(|e| e.mac)
    }

    /// The MAC of (port, addr), if known.
    pub fn mac_of(&self, port: u16, addr: &Addr) -> Option<Mac> {
        self.mac(*self.by_key.get(&(port, *addr))?)
    }

    /// Whether (port, addr) has an entry already.
    pub fn knows(&self, port: u16, addr: &Addr) -> bool {
        self.by_key.contains_key(&(port, *addr))
    }

    /// Records `mac` for (port, addr) when the entry exists or `create` is set; returns the slot and the
    /// frames that were waiting for it.
    pub fn learn(&mut self, port: u16, addr: &Addr, mac: Mac, create: bool) -> Option<(u32, Vec<F>)> {
        let slot = match self.by_key.get(&(port, *addr)) {
            Some(&s) => s,
            None if create => self.slot(port, addr)?,
            None => return None,
        };
        let e = &mut self.slots[slot as usize];
        if e.is_static {
            return None;
        }
        e.mac = Some(mac);
        e.last_solicit_ms = None;
        Some((slot, e.hold.drain(..).collect()))
    }

    /// Installs a static entry.
    pub fn set_static(&mut self, port: u16, addr: &Addr, mac: Mac) -> Option<(u32, Vec<F>)> {
        let slot = self.slot(port, addr)?;
        let e = &mut self.slots[slot as usize];
        e.mac = Some(mac);
        e.is_static = true;
        Some((slot, e.hold.drain(..).collect()))
    }

    /// Queues a frame until `slot` resolves; gives it back when the queue is full.
    pub fn hold(&mut self, slot: u32, frame: F) -> Result<(), F> {
        match self.slots.get_mut(slot as usize) {
            Some(e) if e.hold.len() < HOLD_MAX => {
                e.hold.push_back(frame);
                Ok(())
            }
            _ => Err(frame),
        }
    }

    /// Whether a solicitation for `slot` should go out now (at most one per interval), noting it if so.
    pub fn should_solicit(&mut self, slot: u32, now_ms: u64) -> bool {
        let Some(e) = self.slots.get_mut(slot as usize) else {
            return false;
        };
        match e.last_solicit_ms {
            Some(t) if now_ms.saturating_sub(t) < SOLICIT_INTERVAL_MS => false,
            _ => {
                e.last_solicit_ms = Some(now_ms);
                true
            }
        }
    }

    /// Every entry, for the CLI.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<F>> {
        self.slots.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::v4;
    use std::net::Ipv4Addr;

    #[test]
    fn held_frames_are_released_on_learning() {
        let mut n: Neighbors<u32> = Neighbors::default();
        let a = v4(Ipv4Addr::new(198, 51, 100, 101));
        let s = n.slot(0, &a).unwrap();
        for i in 0..HOLD_MAX as u32 {
            n.hold(s, i).unwrap();
        }
        assert_eq!(n.hold(s, 99), Err(99));
        let (slot, frames) = n.learn(0, &a, [2, 0, 0, 0, 0, 1], false).unwrap();
        assert_eq!(slot, s);
        assert_eq!(frames.len(), HOLD_MAX);
        assert_eq!(n.mac(s), Some([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn unknown_neighbours_are_not_learnt_unless_asked() {
        let mut n: Neighbors<u32> = Neighbors::default();
        let a = v4(Ipv4Addr::new(198, 51, 100, 9));
        assert!(n.learn(0, &a, [2; 6], false).is_none());
        assert!(!n.knows(0, &a));
        assert!(n.learn(0, &a, [2; 6], true).is_some());
    }

    #[test]
    fn static_entries_win_and_solicits_are_throttled() {
        let mut n: Neighbors<u32> = Neighbors::default();
        let a = v4(Ipv4Addr::new(192, 0, 2, 1));
        let (s, _) = n.set_static(0, &a, [1; 6]).unwrap();
        assert!(n.learn(0, &a, [9; 6], true).is_none());
        assert_eq!(n.mac(s), Some([1; 6]));
        let b = n.slot(0, &v4(Ipv4Addr::new(192, 0, 2, 2))).unwrap();
        assert!(n.should_solicit(b, 0));
        assert!(!n.should_solicit(b, 500));
        assert!(n.should_solicit(b, 1000));
    }
}
