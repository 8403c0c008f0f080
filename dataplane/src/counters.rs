//! The node's service, backend and local-address counters, merged over the workers: what `anylb services
//! --stats`, `anylb pools`, the API and `/metrics` show. Each worker keeps its own counters by backend uid
//! and local address ([`crate::worker`]); [`merge`] adds them up and names them through the snapshot the
//! workers forward with. Pure: no DPDK here.

use std::net::IpAddr;

use crate::flow::{to_ip, Addr};
use crate::pool::LipUsage;
use crate::snapshot::Snapshot;
use crate::stats::{BackendCounters, DropReason};
use crate::wire::proto;

/// New flows a service refused, by reason (the lists it was on, its rate, its backends' thresholds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// On the node's deny list.
    pub denied_node: u64,
    /// On the service's deny list.
    pub denied: u64,
    /// Not on the service's allow list.
    pub not_allowed: u64,
    /// Over the service's rate limit.
    pub rate_limited: u64,
    /// Every backend at its upper threshold.
    pub overloaded: u64,
}

impl Refused {
    /// Counts one refusal for `reason`; false when the reason is not a refusal of these.
    pub fn count(&mut self, reason: DropReason) -> bool {
        let slot = match reason {
            DropReason::DeniedNode => &mut self.denied_node,
            DropReason::Denied => &mut self.denied,
            DropReason::NotAllowed => &mut self.not_allowed,
            DropReason::RateLimited => &mut self.rate_limited,
            DropReason::Overloaded => &mut self.overloaded,
            _ => return false,
        };
        *slot += 1;
        true
    }

    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &Refused) {
        self.denied_node += o.denied_node;
        self.denied += o.denied;
        self.not_allowed += o.not_allowed;
        self.rate_limited += o.rate_limited;
        self.overloaded += o.overloaded;
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.denied_node + self.denied + self.not_allowed + self.rate_limited + self.overloaded
    }
}

/// A service as the workers key their refusal counters: VIP, protocol, port (stable across reloads).
pub type ServiceKey = (Addr, u8, u16);

/// One worker's counters, as it answers the control thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// By backend uid.
    pub backends: Vec<BackendCounters>,
    /// By local address.
    pub pools: Vec<LipUsage>,
    /// Allocations refused for want of a port, [IPv4, IPv6] × [TCP, UDP].
    pub exhausted: [[u64; 2]; 2],
    /// New flows refused, by service.
    pub refused: Vec<(ServiceKey, Refused)>,
}

/// A backend's counters, summed over the workers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    /// Address.
    pub address: IpAddr,
    /// Port (0: the client's destination port).
    pub port: u16,
    /// Counters.
    #[serde(flatten)]
    pub counters: BackendCounters,
}

/// A service's counters: the sum of its backends', and each backend's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStats {
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: IpAddr,
    /// Port (0: all).
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: &'static str,
    /// The sum over its backends.
    #[serde(flatten)]
    pub counters: BackendCounters,
    /// New flows it refused.
    pub refused: Refused,
    /// Its backends.
    pub backends: Vec<BackendStats>,
}

/// A local address's ports, summed over the workers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// The address.
    pub address: IpAddr,
    /// Ports of its range (each usable once per protocol).
    pub ports: usize,
    /// TCP ports in use.
    pub tcp_used: usize,
    /// UDP ports in use.
    pub udp_used: usize,
}

/// Allocations refused because a family's addresses were out of ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Exhausted {
    /// IPv4 local addresses, TCP.
    pub ipv4_tcp: u64,
    /// IPv4, UDP.
    pub ipv4_udp: u64,
    /// IPv6, TCP.
    pub ipv6_tcp: u64,
    /// IPv6, UDP.
    pub ipv6_udp: u64,
}

/// Everything merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeCounters {
    /// Services in topology order.
    pub services: Vec<ServiceStats>,
    /// Local addresses in topology order.
    pub pools: Vec<PoolStats>,
    /// Refused allocations.
    pub exhausted: Exhausted,
}

/// Sums the workers' counters and names them with `snap`.
pub fn merge(snap: &Snapshot, workers: &[WorkerCounters]) -> NodeCounters {
    let mut by_uid: Vec<BackendCounters> = Vec::new();
    let mut lips: Vec<(Addr, usize, usize, usize)> = Vec::new();
    let mut ex = [[0u64; 2]; 2];
    for w in workers {
        if by_uid.len() < w.backends.len() {
            by_uid.resize(w.backends.len(), BackendCounters::default());
        }
        for (sum, b) in by_uid.iter_mut().zip(&w.backends) {
            sum.add(b);
        }
        for u in &w.pools {
            match lips.iter_mut().find(|l| l.0 == u.addr) {
                Some(l) => {
                    l.1 += u.ports;
                    l.2 += u.ports - u.tcp_free.min(u.ports);
                    l.3 += u.ports - u.udp_free.min(u.ports);
                }
                None => lips.push((
                    u.addr,
                    u.ports,
                    u.ports - u.tcp_free.min(u.ports),
                    u.ports - u.udp_free.min(u.ports),
                )),
            }
        }
        for (f, row) in w.exhausted.iter().enumerate() {
            for (p, n) in row.iter().enumerate() {
                ex[f][p] += n;
            }
        }
    }
    let mut refused: Vec<(ServiceKey, Refused)> = Vec::new();
    for w in workers {
        for (k, r) in &w.refused {
            match refused.iter_mut().find(|(x, _)| x == k) {
                Some((_, sum)) => sum.add(r),
                None => refused.push((*k, *r)),
            }
        }
    }
    let services = snap
        .services
        .iter()
        .map(|s| {
            let backends: Vec<BackendStats> = s
                .backends
                .iter()
                .map(|b| BackendStats {
                    address: to_ip(&b.addr),
                    port: b.port,
                    counters: by_uid.get(b.uid as usize).copied().unwrap_or_default(),
                })
                .collect();
            let mut counters = BackendCounters::default();
            for b in &backends {
                counters.add(&b.counters);
            }
            let key = (s.vip, s.proto, s.port);
            ServiceStats {
                name: s.name.clone(),
                vip: to_ip(&s.vip),
                port: s.port,
                protocol: if s.proto == proto::UDP { "udp" } else { "tcp" },
                counters,
                refused: refused
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, r)| *r)
                    .unwrap_or_default(),
                backends,
            }
        })
        .collect();
    NodeCounters {
        services,
        pools: lips
            .into_iter()
            .map(|(a, ports, tcp_used, udp_used)| PoolStats {
                address: to_ip(&a),
                ports,
                tcp_used,
                udp_used,
            })
            .collect(),
        exhausted: Exhausted {
            ipv4_tcp: ex[0][0],
            ipv4_udp: ex[0][1],
            ipv6_tcp: ex[1][0],
            ipv6_udp: ex[1][1],
        },
    }
}
