//! Longest-prefix-match route tables for IPv4 and IPv6 (one table over 16-byte addresses) with ECMP next hops
//! chosen by flow hash.
//!
//! Prefixes are kept in one hash map per prefix length, searched from the longest length in use; a FIB of an
//! anycast balancer holds a handful of lengths (connected subnets, a default route, some host routes), so a
//! lookup costs a few hash probes. Connections cache the result, so the lookup runs once per flow and direction.

use std::collections::HashMap;

use crate::flow::{is_v4, Addr, FastMap};

/// One way to reach a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// Gateway address; `None` for an on-link (connected) prefix, where the destination itself is the next hop.
    pub via: Option<Addr>,
    /// Port to send on.
    pub port: u16,
}

/// A route: its next hops (several = ECMP) and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Next hops.
    pub hops: Vec<NextHop>,
    /// Where it comes from.
    pub origin: Origin,
}

/// Where a route comes from (as FRR's route codes C, S, B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A subnet of one of the node's own addresses.
    Connected,
    /// A static route of the topology.
    Static,
    /// A fallback static route of the topology (received routes replace it).
    Fallback,
    /// Received over BGP.
    Bgp,
}

/// The route table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    by_len: HashMap<u8, FastMap<u128, Route>>,
    /// Lengths in use, longest first (in 128-bit terms: IPv4 /n is stored as /(96+n)).
    lengths: Vec<u8>,
}

fn key(addr: &Addr, len: u8) -> u128 {
    let a = u128::from_be_bytes(*addr);
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len)))
    }
}

/// Stored length of a prefix of `len` bits over `addr`'s family.
fn full_len(addr: &Addr, len: u8) -> u8 {
    if is_v4(addr) {
        96 + len.min(32)
    } else {
        len.min(128)
    }
}

impl Table {
    /// Adds (or replaces) a route for `addr/len` (`len` in the family's bits).
    pub fn insert(&mut self, addr: &Addr, len: u8, route: Route) {
        let l = full_len(addr, len);
        self.by_len.entry(l).or_default().insert(key(addr, l), route);
        if !self.lengths.contains(&l) {
            self.lengths.push(l);
            self.lengths.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    /// Adds next hops to the route for `addr/len`, making it ECMP.
    pub fn add_hops(&mut self, addr: &Addr, len: u8, hops: &[NextHop]) {
        let l = full_len(addr, len);
        let k = key(addr, l);
        if let Some(r) = self.by_len.get_mut(&l).and_then(|m| m.get_mut(&k)) {
            for h in hops {
                if !r.hops.contains(h) {
                    r.hops.push(*h);
                }
            }
            return;
        }
        self.insert(
            addr,
            len,
            Route {
                hops: hops.to_vec(),
                origin: Origin::Connected,
            },
        );
    }

    /// The longest-prefix route for `dst`. IPv4 routes never match IPv6 destinations and the other way round:
    /// an IPv4 default route is `::ffff:0.0.0.0/96`.
    pub fn lookup(&self, dst: &Addr) -> Option<&Route> {
        let v4 = is_v4(dst);
        // IPv4 prefixes are stored at lengths 96-128 under ::ffff:0:0/96, which no IPv6 destination outside that
        // range can match; IPv6 prefixes shorter than 96 bits would cover it, so IPv4 skips them.
        self.lengths
            .iter()
            .filter(|&&l| !v4 || l >= 96)
            .find_map(|&l| self.by_len.get(&l).and_then(|m| m.get(&key(dst, l))))
    }

    /// The next hop for `dst`, picking among ECMP hops by `flow_hash`.
    pub fn next_hop(&self, dst: &Addr, flow_hash: u64) -> Option<NextHop> {
        let r = self.lookup(dst)?;
        if r.hops.is_empty() {
            return None;
        }
        Some(r.hops[(flow_hash % r.hops.len() as u64) as usize])
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.by_len.values().map(FastMap::len).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every route as (stored length, key, route), for the CLI.
    pub fn routes(&self) -> impl Iterator<Item = (u8, Addr, &Route)> {
        self.by_len
            .iter()
            .flat_map(|(l, m)| m.iter().map(move |(k, r)| (*l, k.to_be_bytes(), r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{addr, v4};
    use std::net::Ipv4Addr;

    fn hop(port: u16, via: Option<&str>) -> NextHop {
        NextHop {
            via: via.map(|s| addr(s.parse().unwrap())),
            port,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = Table::default();
        t.insert(
            &v4(Ipv4Addr::UNSPECIFIED),
            0,
            Route {
                hops: vec![hop(0, Some("192.0.2.1"))],
                origin: Origin::Static,
            },
        );
        t.insert(
            &v4(Ipv4Addr::new(198, 51, 100, 0)),
            24,
            Route {
                hops: vec![hop(1, None)],
                origin: Origin::Static,
            },
        );
        t.insert(
            &v4(Ipv4Addr::new(198, 51, 100, 128)),
            25,
            Route {
                hops: vec![hop(2, None)],
                origin: Origin::Static,
            },
        );
        assert_eq!(
            t.next_hop(&v4(Ipv4Addr::new(198, 51, 100, 7)), 0),
            Some(hop(1, None))
        );
        assert_eq!(
            t.next_hop(&v4(Ipv4Addr::new(198, 51, 100, 200)), 0),
            Some(hop(2, None))
        );
        assert_eq!(
            t.next_hop(&v4(Ipv4Addr::new(203, 0, 113, 1)), 0),
            Some(hop(0, Some("192.0.2.1")))
        );
        assert_eq!(
            t.next_hop(&addr("2001:db8::1".parse().unwrap()), 0),
            None,
            "no IPv6 default"
        );
    }

    #[test]
    fn ipv6_routes_do_not_match_ipv4() {
        let mut t = Table::default();
        t.insert(
            &addr("::".parse().unwrap()),
            0,
            Route {
                hops: vec![hop(3, Some("2001:db8::1"))],
                origin: Origin::Static,
            },
        );
        assert_eq!(
            t.next_hop(&addr("2001:db8:5::1".parse().unwrap()), 0),
            Some(hop(3, Some("2001:db8::1")))
        );
        assert_eq!(t.next_hop(&v4(Ipv4Addr::new(203, 0, 113, 1)), 0), None);
    }

    #[test]
    fn ecmp_spreads_by_flow_hash() {
        let mut t = Table::default();
        let d = v4(Ipv4Addr::UNSPECIFIED);
        t.add_hops(&d, 0, &[hop(0, Some("192.0.2.1"))]);
        t.add_hops(&d, 0, &[hop(1, Some("192.0.2.17")), hop(0, Some("192.0.2.1"))]);
        assert_eq!(t.lookup(&d).unwrap().hops.len(), 2);
        let dst = v4(Ipv4Addr::new(203, 0, 113, 9));
        let ports: std::collections::HashSet<u16> =
            (0..16u64).map(|h| t.next_hop(&dst, h).unwrap().port).collect();
        assert_eq!(ports.len(), 2);
    }
}
