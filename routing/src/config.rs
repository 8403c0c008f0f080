//! The speaker's configuration: the speaker itself and each neighbour, the BFD sessions and what a node
//! announces, built from the topology here (`anylb run`) or from the command line (`anylb speak`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anylb_conf::{Family, NodeConfig};
use ipnet::IpNet;

use crate::bfd;

/// One neighbour's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NeighborConfig {
    /// Address.
    pub address: IpAddr,
    /// Remote AS.
    pub remote_asn: u32,
    /// Free text.
    pub description: Option<String>,
    /// Only accept connections.
    pub passive: bool,
    /// Hold time proposed.
    pub hold_time: Duration,
    /// Keepalive wanted.
    pub keepalive: Duration,
    /// First connect-retry delay.
    pub connect_retry: Duration,
    /// TTL of outgoing packets (multihop); 1 by default for eBGP.
    pub ttl: Option<u8>,
    /// Local address to bind.
    pub local_address: Option<IpAddr>,
    /// Carry IPv4 unicast.
    pub ipv4: bool,
    /// Carry IPv6 unicast.
    pub ipv6: bool,
    /// Next hop for IPv4 routes (default: the session's local address).
    pub next_hop: Option<Ipv4Addr>,
    /// Next hop for IPv6 routes (default: the session's local address when IPv6).
    pub ipv6_next_hop: Option<Ipv6Addr>,
    /// Communities added to every route sent.
    pub communities: Vec<u32>,
    /// Large communities added to every route sent.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// MED sent (an announcement's own MED wins).
    pub med: Option<u32>,
    /// LOCAL_PREF sent to iBGP neighbours.
    pub local_pref: Option<u32>,
    /// Extra prepends of the local AS.
    pub prepend: u8,
    /// Most prefixes accepted.
    pub max_prefix: Option<u32>,
    /// TCP-MD5 (RFC 2385) key for the session's segments.
    pub md5_key: Option<Md5Key>,
    /// GTSM (RFC 5082): the neighbour is at most this many hops away; packets are sent with TTL 255 and
    /// accepted only with a TTL of at least 256 − hops.
    pub gtsm_hops: Option<u8>,
}

/// Why a TCP-MD5 key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Md5KeyError {
    /// No bytes.
    #[error("the TCP-MD5 key is empty")]
    Empty,
    /// More than Linux takes.
    #[error("the TCP-MD5 key has {0} bytes; Linux takes at most {max}", max = os_sys::MD5_MAX_KEY)]
    TooLong(usize),
}

/// A TCP-MD5 key; its `Debug` output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Key(Vec<u8>);

impl Md5Key {
    /// A key of 1 to 80 bytes (the Linux limit).
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Md5Key, Md5KeyError> {
        let key = key.into();
        match key.len() {
            0 => Err(Md5KeyError::Empty),
            n if n > os_sys::MD5_MAX_KEY => Err(Md5KeyError::TooLong(n)),
            _ => Ok(Md5Key(key)),
        }
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Md5Key(<{} bytes>)", self.0.len())
    }
}

/// The speaker's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerConfig {
    /// Local AS.
    pub local_asn: u32,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Listening address (port 179 normally); none for active-only.
    pub listen: Option<SocketAddr>,
    /// Graceful restart: restart time in seconds advertised.
    pub graceful_restart: Option<u16>,
    /// Whether forwarding survives a restart of this speaker, so that peers may keep its routes over one
    /// (graceful restart then lists every family). An anylb node's does not (its dataplane is its process):
    /// it helps its peers restart, and its own routes go as soon as its session or BFD does.
    pub keeps_forwarding: bool,
    /// Whether this start is a restart with forwarding state kept (R bit, F bits).
    pub restarting: bool,
    /// Neighbours.
    pub neighbors: Vec<NeighborConfig>,
}

/// Attributes of an announcement as the owner gives them (per-neighbour export policy is applied at send time).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Announcement {
    /// Communities.
    pub communities: Vec<u32>,
    /// Large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// MED.
    pub med: Option<u32>,
    /// Extra prepends of the local AS (e.g. a backup announcement).
    pub prepend: u8,
}

impl NeighborConfig {
    /// A neighbour with the defaults of `anylb speak`: active, hold 90 s, keepalive 30 s, connect retry 2 s,
    /// the address's own family, no export policy, no key.
    pub fn new(address: IpAddr, remote_asn: u32) -> NeighborConfig {
        NeighborConfig {
            address,
            remote_asn,
            description: None,
            passive: false,
            hold_time: Duration::from_secs(90),
            keepalive: Duration::from_secs(30),
            connect_retry: Duration::from_secs(2),
            ttl: None,
            local_address: None,
            ipv4: address.is_ipv4(),
            ipv6: address.is_ipv6(),
            next_hop: None,
            ipv6_next_hop: None,
            communities: vec![],
            large_communities: vec![],
            med: None,
            local_pref: None,
            prepend: 0,
            max_prefix: None,
            md5_key: None,
            gtsm_hops: None,
        }
    }
}

impl SpeakerConfig {
    /// The speaker of node `cfg`, if it has BGP; `keys` are the TCP-MD5 keys read from the neighbours'
    /// password files (a neighbour with a password file but no key here gets none).
    pub fn from_topology(cfg: &NodeConfig, keys: &BTreeMap<IpAddr, Md5Key>) -> Option<SpeakerConfig> {
        let bgp = cfg.node.bgp.as_ref()?;
        let local_asn = bgp.asn?;
        let neighbors = bgp
            .neighbors
            .iter()
            .filter_map(|n| {
                let fams = n.families();
                Some(NeighborConfig {
                    address: n.address,
                    remote_asn: n.asn?,
                    description: n.description.clone(),
                    passive: n.passive,
                    hold_time: n.hold_time.map_or(Duration::from_secs(90), |d| d.get()),
                    keepalive: n.keepalive.map_or(Duration::from_secs(30), |d| d.get()),
                    connect_retry: n.connect_retry.map_or(Duration::from_secs(5), |d| d.get()),
                    ttl: n.multihop_ttl,
                    local_address: n.local_address,
                    ipv4: fams.contains(&Family::Ipv4Unicast),
                    ipv6: fams.contains(&Family::Ipv6Unicast),
                    next_hop: n.next_hop,
                    ipv6_next_hop: n.ipv6_next_hop,
                    communities: n.communities.iter().map(|c| c.0).collect(),
                    large_communities: n.large_communities.iter().map(|c| (c.0, c.1, c.2)).collect(),
                    med: n.med,
                    local_pref: n.local_pref,
                    prepend: n.as_path_prepend.unwrap_or(0),
                    max_prefix: n.max_prefix,
                    md5_key: keys.get(&n.address).cloned(),
                    gtsm_hops: n.gtsm.then(|| n.multihop_ttl.unwrap_or(1)),
                })
            })
            .collect();
        let port = bgp.listen_port();
        Some(SpeakerConfig {
            local_asn,
            router_id: cfg.node.router_id,
            listen: (port != 0).then(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)),
            graceful_restart: bgp
                .graceful_restart
                .filter(|g| g.enabled)
                .map(|g| g.restart_time.map_or(120, |t| t.as_secs().min(4095) as u16)),
            keeps_forwarding: false,
            restarting: false,
            neighbors,
        })
    }
}

/// The BFD sessions of node `cfg`: one per BGP neighbour that asks for it, from our address on the
/// neighbour's subnet (unless configured). Neighbours with no such address are returned apart, to report.
pub fn bfd_peers(cfg: &NodeConfig) -> (Vec<bfd::Peer>, Vec<IpAddr>) {
    let (mut peers, mut unplaced) = (Vec::new(), Vec::new());
    let Some(bgp) = &cfg.node.bgp else {
        return (peers, unplaced);
    };
    for n in &bgp.neighbors {
        let Some(b) = n.bfd.filter(|b| b.enabled) else {
            continue;
        };
        let local = n.local_address.or_else(|| {
            cfg.node
                .dataplane
                .ports
                .iter()
                .flat_map(|p| &p.addresses)
                .find(|a| a.contains(&n.address))
                .map(|a| a.addr())
        });
        let Some(local) = local else {
            unplaced.push(n.address);
            continue;
        };
        peers.push(bfd::Peer {
            address: n.address,
            local,
            params: bfd::Params {
                min_tx: b.min_tx.get(),
                min_rx: b.min_rx.get(),
                multiplier: b.multiplier,
            },
        });
    }
    (peers, unplaced)
}

/// What node `cfg` announces: every served VIP as a host route with the service's communities (merged when
/// services share a VIP), and every local-address pool marked for announcement.
pub fn announcements(cfg: &NodeConfig) -> Vec<(IpNet, Announcement)> {
    let mut out: Vec<(IpNet, Announcement)> = Vec::new();
    for s in &cfg.services {
        let p = IpNet::from(s.vip);
        let a = Announcement {
            communities: s.communities.iter().map(|c| c.0).collect(),
            large_communities: s.large_communities.iter().map(|c| (c.0, c.1, c.2)).collect(),
            med: None,
            prepend: 0,
        };
        match out.iter_mut().find(|(q, _)| *q == p) {
            Some((_, existing)) => {
                for c in a.communities {
                    if !existing.communities.contains(&c) {
                        existing.communities.push(c);
                    }
                }
            }
            None => out.push((p, a)),
        }
    }
    for pool in &cfg.node.local_addresses {
        if pool.announce.unwrap_or(true) {
            out.push((pool.prefix.trunc(), Announcement::default()));
        }
    }
    out
}

/// AS-path prepends on a pool announced for a lost node: the owner's own announcement wins while both exist
/// (while it takes its pool back).
pub const TAKEOVER_PREPEND: u8 = 3;

/// The pools of lost nodes this node serves (`adopted`, by prefix) that their owners announce by BGP: announced
/// here too while served, with a longer AS path.
pub fn takeover_announcements(cfg: &NodeConfig, adopted: &[IpNet]) -> Vec<(IpNet, Announcement)> {
    let Some(sync) = &cfg.sync else {
        return Vec::new();
    };
    adopted
        .iter()
        .map(IpNet::trunc)
        .filter(|p| sync.members.iter().any(|m| m.announced.contains(p)))
        .map(|p| {
            let a = Announcement {
                prepend: TAKEOVER_PREPEND,
                ..Announcement::default()
            };
            (p, a)
        })
        .collect()
}

/// Whether `p` is the host route of a VIP of one of node `cfg`'s services.
pub fn is_vip(cfg: &NodeConfig, p: &IpNet) -> bool {
    cfg.services.iter().any(|s| IpNet::from(s.vip) == *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = r#"
[cluster]
name = "t"
asn = 65010
[cluster.sync]
key_file = "k"
[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
sync_address = "192.0.2.11"
[nodes.dataplane]
workers = [1]
[[nodes.dataplane.ports]]
name = "p0"
device = "net_null0"
addresses = ["192.0.2.11/24"]
[[nodes.local_addresses]]
prefix = "198.51.100.16/29"
announce = false
[[nodes]]
name = "lb2"
router_id = "192.0.2.12"
sync_address = "192.0.2.12"
[nodes.dataplane]
workers = [1]
[[nodes.dataplane.ports]]
name = "p0"
device = "net_null0"
addresses = ["192.0.2.12/24"]
[[nodes.local_addresses]]
prefix = "198.51.100.24/29"
"#;

    #[test]
    fn a_lost_nodes_announced_pool_is_announced_by_its_successor_with_a_longer_path() {
        let t = anylb_conf::load_str(TOPOLOGY, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        let lb1 = t.resolve("lb1").expect("lb1");
        let announced: IpNet = "198.51.100.24/29".parse().expect("prefix");
        let unannounced: IpNet = "198.51.100.16/29".parse().expect("prefix");
        let got = takeover_announcements(&lb1, &[announced]);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.prepend), (announced, TAKEOVER_PREPEND));
        assert!(
            takeover_announcements(&lb1, &[unannounced]).is_empty(),
            "a pool its owner does not announce"
        );
        assert!(takeover_announcements(&lb1, &[]).is_empty());
        // Without sync nothing is taken over.
        let mut plain = lb1.clone();
        plain.sync = None;
        assert!(takeover_announcements(&plain, &[announced]).is_empty());
    }
}
