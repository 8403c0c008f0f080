//! Local-address pools: the Full-NAT source addresses and ports of one worker.
//!
//! Every local address (LIP) has a port range; the range is split between workers by the low bits of the port
//! (`port & mask == worker`, with `mask` the worker count rounded up to a power of two, minus one), so whichever
//! worker receives a reply can tell from its destination port which worker owns the connection. Each worker keeps,
//! per LIP and protocol, a FIFO of its free ports: allocation and release are O(1), and a released port is
//! reused last, which keeps it out of the backend's TIME_WAIT for as long as possible.

use std::collections::VecDeque;

use crate::flow::{is_v4, Addr, FastMap};

/// One local address's free ports for TCP and UDP.
#[derive(Debug, Clone)]
struct Lip {
    addr: Addr,
    /// Ports of the range this worker owns.
    owned: usize,
    free: [VecDeque<u16>; 2],
}

/// One local address's ports on one worker (summed over workers for `anylb pools`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LipUsage {
    /// The local address.
    pub addr: Addr,
    /// Ports of its range owned by the worker (each usable once for TCP and once for UDP).
    pub ports: usize,
    /// TCP ports free.
    pub tcp_free: usize,
    /// UDP ports free.
    pub udp_free: usize,
}

/// The worker's pools, IPv4 and IPv6 addresses apart.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    lips: Vec<Lip>,
    by_addr: FastMap<Addr, usize>,
    v4: Vec<usize>,
    v6: Vec<usize>,
    ranges: FastMap<Addr, (u16, u16)>,
    cursor: [usize; 2],
    /// Allocations refused because every address of the family was out of ports, by [IPv4, IPv6] × [TCP, UDP].
    exhausted: [[u64; 2]; 2],
}

/// The worker that owns local port `port` when `mask` is the port-slice mask.
#[inline]
pub fn owner(port: u16, mask: u16) -> u16 {
    port & mask
}

/// The slice mask for `workers` workers.
pub fn slice_mask(workers: usize) -> u16 {
    (workers.max(1).next_power_of_two() - 1) as u16
}

fn proto_slot(proto: u8) -> usize {
    usize::from(proto == crate::wire::proto::UDP)
}

impl Pools {
    /// Pools of worker `worker` (with port-slice `mask`) over `lips`, each as (address, first port, last port).
    pub fn new(lips: &[(Addr, u16, u16)], worker: u16, mask: u16) -> Pools {
        let mut p = Pools::default();
        for &(addr, lo, hi) in lips {
            if p.by_addr.contains_key(&addr) {
                continue;
            }
            let ports: Vec<u16> = (lo..=hi)
                .filter(|&port| port != 0 && owner(port, mask) == worker)
                .collect();
            let i = p.lips.len();
            // A Vec clones with one copy; VecDeque::from(Vec) takes the buffer as it is.
            p.lips.push(Lip {
                addr,
                owned: ports.len(),
                free: [VecDeque::from(ports.clone()), VecDeque::from(ports)],
            });
            p.by_addr.insert(addr, i);
            p.ranges.insert(addr, (lo, hi));
            if is_v4(&addr) {
                p.v4.push(i);
            } else {
                p.v6.push(i);
            }
        }
        p
    }

    /// The pools for a new set of local addresses: addresses that remain keep their free lists (and so the
    /// ports their connections hold); new ones start full; removed ones are forgotten.
    pub fn update(&mut self, lips: &[(Addr, u16, u16)], worker: u16, mask: u16) {
        let mut next = Pools::new(&[], worker, mask);
        next.exhausted = self.exhausted;
        for &(addr, lo, hi) in lips {
            if next.by_addr.contains_key(&addr) {
                continue;
            }
            let i = next.lips.len();
            let kept = self.by_addr.get(&addr).map(|&j| self.lips[j].clone());
            let lip = match kept {
                Some(l) if self.ranges.get(&addr) == Some(&(lo, hi)) => l,
                _ => Pools::new(&[(addr, lo, hi)], worker, mask).lips.remove(0),
            };
            next.lips.push(lip);
            next.by_addr.insert(addr, i);
            next.ranges.insert(addr, (lo, hi));
            if is_v4(&addr) {
                next.v4.push(i);
            } else {
                next.v6.push(i);
            }
        }
        *self = next;
    }

    /// Whether there is an address of the family (`v6` or not).
    pub fn has_family(&self, v6: bool) -> bool {
        !(if v6 { &self.v6 } else { &self.v4 }).is_empty()
    }

    /// Takes a free (address, port) of the family for `proto`, trying each address once, round robin.
    pub fn alloc(&mut self, v6: bool, proto: u8) -> Option<(Addr, u16)> {
        let fam = usize::from(v6);
        let list = if v6 { &self.v6 } else { &self.v4 };
        let n = list.len();
        for k in 0..n {
            let i = list[(self.cursor[fam] + k) % n];
            if let Some(port) = self.lips[i].free[proto_slot(proto)].pop_front() {
                self.cursor[fam] = (self.cursor[fam] + k + 1) % n;
                return Some((self.lips[i].addr, port));
            }
        }
        self.exhausted[fam][proto_slot(proto)] += 1;
        None
    }

    /// Returns a port taken by [`alloc`](Self::alloc). Unknown addresses (a pool removed by a reload) are ignored.
    pub fn release(&mut self, addr: &Addr, proto: u8, port: u16) {
        if let Some(&i) = self.by_addr.get(addr) {
            self.lips[i].free[proto_slot(proto)].push_back(port);
        }
    }

    /// Each address's ports owned and free.
    pub fn usage(&self) -> Vec<LipUsage> {
        self.lips
            .iter()
            .map(|l| LipUsage {
                addr: l.addr,
                ports: l.owned,
                tcp_free: l.free[0].len(),
                udp_free: l.free[1].len(),
            })
            .collect()
    }

    /// Allocations refused for want of a free port, by [IPv4, IPv6] × [TCP, UDP].
    pub fn exhausted(&self) -> [[u64; 2]; 2] {
        self.exhausted
    }

    /// Free ports in total (for stats).
    pub fn free_ports(&self) -> usize {
        self.lips.iter().map(|l| l.free[0].len() + l.free[1].len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::v4;
    use std::net::Ipv4Addr;

    fn lips() -> Vec<(Addr, u16, u16)> {
        vec![
            (v4(Ipv4Addr::new(198, 51, 100, 16)), 1024, 1031),
            (v4(Ipv4Addr::new(198, 51, 100, 17)), 1024, 1031),
        ]
    }

    #[test]
    fn workers_own_disjoint_port_slices() {
        let mask = slice_mask(2);
        let mut a = Pools::new(&lips(), 0, mask);
        let mut b = Pools::new(&lips(), 1, mask);
        let mut seen = std::collections::HashSet::new();
        while let Some((addr, port)) = a.alloc(false, 6) {
            assert_eq!(owner(port, mask), 0);
            assert!(seen.insert((addr, port)));
        }
        while let Some((addr, port)) = b.alloc(false, 6) {
            assert_eq!(owner(port, mask), 1);
            assert!(seen.insert((addr, port)));
        }
        assert_eq!(seen.len(), 16);
    }

    #[test]
    fn exhaustion_then_release_reuses_ports_last() {
        let mut p = Pools::new(&lips()[..1], 0, 0);
        let taken: Vec<_> = (0..8).map(|_| p.alloc(false, 6).unwrap()).collect();
        assert_eq!(p.alloc(false, 6), None);
        assert!(p.alloc(false, 17).is_some(), "udp has its own ports");
        p.release(&taken[2].0, 6, taken[2].1);
        assert_eq!(p.alloc(false, 6), Some(taken[2]));
        assert!(!p.has_family(true));
        assert_eq!(p.alloc(true, 6), None);
    }

    #[test]
    fn addresses_are_used_round_robin() {
        let mut p = Pools::new(&lips(), 0, 0);
        let a = p.alloc(false, 6).unwrap().0;
        let b = p.alloc(false, 6).unwrap().0;
        assert_ne!(a, b);
    }

    #[test]
    fn update_keeps_the_state_of_remaining_addresses() {
        let mut p = Pools::new(&lips(), 0, 0);
        let (a, port) = p.alloc(false, 6).unwrap();
        let extra = (v4(Ipv4Addr::new(198, 51, 100, 18)), 1024, 1031);
        let kept: Vec<_> = lips().into_iter().filter(|l| l.0 == a).chain([extra]).collect();
        p.update(&kept, 0, 0);
        let all: Vec<_> = std::iter::from_fn(|| p.alloc(false, 6)).collect();
        assert_eq!(all.len(), 8 + 7, "the kept address still has one port out");
        assert!(!all.contains(&(a, port)));
    }

    #[test]
    fn usage_and_exhaustion_are_counted_per_address_and_protocol() {
        // Worker 1 of 2 owns the odd ports: 4 of 1024-1031 per address.
        let mut p = Pools::new(&lips(), 1, 1);
        for _ in 0..3 {
            p.alloc(false, crate::wire::proto::TCP);
        }
        let u = p.usage();
        assert_eq!(u.iter().map(|l| l.ports).collect::<Vec<_>>(), [4, 4]);
        assert_eq!(
            u.iter().map(|l| l.tcp_free).sum::<usize>(),
            5,
            "three of eight taken"
        );
        assert_eq!(u.iter().map(|l| l.udp_free).sum::<usize>(), 8);
        for _ in 0..6 {
            p.alloc(false, crate::wire::proto::TCP);
        }
        assert_eq!(
            p.exhausted(),
            [[1, 0], [0, 0]],
            "the ninth allocation found no port"
        );
        assert!(p.alloc(true, crate::wire::proto::UDP).is_none());
        assert_eq!(p.exhausted()[1][1], 1);
        // A reload keeps the counts.
        p.update(&lips(), 1, 1);
        assert_eq!(p.exhausted(), [[1, 0], [0, 1]]);
    }
}
