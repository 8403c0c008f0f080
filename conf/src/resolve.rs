//! The resolved configuration of one node: what `anylb run --node NAME` runs. Cluster defaults are filled in
//! (timers, timeouts, ASN, ports, weights, health-check parameters) and only the services and SNAT rules the
//! node serves are kept, so the result prints back as a complete, explicit description of the node.

use serde::{Deserialize, Serialize};

use crate::model::{HealthKind, Maglev, Node, Service, SnatRule, TimeoutOverrides, Timeouts, Topology};
use crate::types::PortSpec;

/// Everything one node needs, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Cluster name.
    pub cluster: String,
    /// Maglev parameters shared by the cluster.
    pub maglev: Maglev,
    /// Cluster timeouts (each service carries its effective ones).
    pub timeouts: Timeouts,
    /// The node.
    pub node: Node,
    /// Services this node serves.
    #[serde(default)]
    pub services: Vec<Service>,
    /// SNAT rules this node applies.
    #[serde(default)]
    pub snat: Vec<SnatRule>,
    /// The other nodes' dataplane addresses: a node hands them TCP segments of flows it does not know (the
    /// router moved a flow between nodes), since the flow's connection may live there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<std::net::IpAddr>,
    /// Connection sync, with every node of the cluster (this one included), when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<ClusterSync>,
    /// The cluster's SYN-proxy settings, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<crate::model::SynProxy>,
}

/// Connection sync as one node sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterSync {
    /// The cluster's settings.
    pub settings: crate::model::Sync,
    /// Every node in topology order; a node's index is its place here.
    pub members: Vec<SyncMember>,
}

/// One node as the others sync with it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SyncMember {
    /// Name.
    pub name: String,
    /// Sync address.
    pub address: Option<std::net::IpAddr>,
    /// Its local-address pools (prefix, first port, last port): a successor takes them over.
    pub pools: Vec<(ipnet::IpNet, u16, u16)>,
    /// The pools it announces by BGP: a successor announces them too while it serves them.
    pub announced: Vec<ipnet::IpNet>,
}

impl Topology {
    /// The resolved configuration of node `name`, or `None` if no such node exists.
    pub fn resolve(&self, name: &str) -> Option<NodeConfig> {
        let mut node = self.node(name)?.clone();
        let c = &self.cluster;
        node.control_socket = Some(node.control_socket());
        let dp = &mut node.dataplane;
        dp.connections_per_worker = Some(dp.connections_per_worker());
        if dp.main_core.is_none() {
            dp.main_core = (0u16..).find(|c| !dp.workers.contains(c));
        }
        let first_port = dp.ports.first().map(|p| p.name.clone());
        for p in &mut dp.ports {
            p.mtu = Some(p.mtu());
        }
        for pool in &mut node.local_addresses {
            pool.ports = Some(pool.ports());
            pool.announce = Some(pool.announce.unwrap_or(true));
            if pool.port.is_none() {
                pool.port.clone_from(&first_port);
            }
        }
        let local_asn = self.local_asn(&node);
        if let Some(bgp) = &mut node.bgp {
            bgp.asn = local_asn;
            bgp.listen_port = Some(bgp.listen_port());
            bgp.shutdown_wait = Some(bgp.shutdown_wait());
            for nb in &mut bgp.neighbors {
                nb.hold_time = Some(nb.hold_time.unwrap_or(c.bgp.hold_time));
                nb.keepalive = Some(nb.keepalive.unwrap_or(c.bgp.keepalive));
                nb.connect_retry = Some(nb.connect_retry.unwrap_or(c.bgp.connect_retry));
                nb.families = nb.families();
                if nb.asn.is_some() && nb.asn == local_asn {
                    nb.local_pref = Some(nb.local_pref.unwrap_or(100));
                }
            }
        }
        let services = self
            .services
            .iter()
            .filter(|s| s.served_by(name))
            .map(|s| resolve_service(s, c.timeouts))
            .collect();
        let snat = self
            .snat
            .iter()
            .filter(|s| s.served_by(name))
            .map(|s| {
                let mut s = s.clone();
                s.protocols = s.protocols();
                s.ports = Some(s.ports.unwrap_or_default());
                s
            })
            .collect();
        let peers = self
            .nodes
            .iter()
            .filter(|n| n.name != name)
            .flat_map(|n| {
                n.dataplane
                    .ports
                    .iter()
                    .flat_map(|p| p.addresses.iter().map(|a| a.addr()))
            })
            .collect();
        let sync = c.sync.clone().map(|settings| ClusterSync {
            settings,
            members: self
                .nodes
                .iter()
                .map(|n| SyncMember {
                    name: n.name.clone(),
                    address: n.sync_address,
                    pools: n
                        .local_addresses
                        .iter()
                        .map(|p| (p.prefix, p.ports().start, p.ports().end))
                        .collect(),
                    announced: n
                        .local_addresses
                        .iter()
                        .filter(|p| p.announce.unwrap_or(true))
                        .map(|p| p.prefix.trunc())
                        .collect(),
                })
                .collect(),
        });
        Some(NodeConfig {
            cluster: c.name.clone(),
            sync,
            syn_proxy: c.syn_proxy.clone(),
            maglev: c.maglev,
            timeouts: c.timeouts,
            node,
            services,
            snat,
            peers,
        })
    }
}

fn resolve_service(s: &Service, base: Timeouts) -> Service {
    let mut s = s.clone();
    let t = s.timeouts.unwrap_or_default().apply(base);
    s.timeouts = Some(TimeoutOverrides {
        tcp_syn_recv: Some(t.tcp_syn_recv),
        tcp_established: Some(t.tcp_established),
        tcp_fin_wait: Some(t.tcp_fin_wait),
        tcp_close_wait: Some(t.tcp_close_wait),
        tcp_last_ack: Some(t.tcp_last_ack),
        tcp_time_wait: Some(t.tcp_time_wait),
        tcp_close: Some(t.tcp_close),
        udp: Some(t.udp),
    });
    s.min_healthy = Some(s.min_healthy());
    for b in &mut s.backends {
        b.weight = Some(b.weight());
        if let (None, PortSpec::One(p)) = (b.port, s.port) {
            b.port = Some(p);
        }
    }
    if let Some(h) = &mut s.health {
        h.interval = Some(h.interval());
        h.timeout = Some(h.timeout());
        h.rise = Some(h.rise());
        h.fall = Some(h.fall());
        h.jitter = Some(h.jitter());
        if matches!(h.kind, HealthKind::Http | HealthKind::Https) {
            h.path.get_or_insert_with(|| "/".to_owned());
            if h.status.is_empty() {
                h.status = vec![200];
            }
        }
        if h.kind == HealthKind::Https {
            h.tls_verify.get_or_insert(false);
        }
        if h.kind == HealthKind::Grpc && *h.tls.get_or_insert(false) {
            h.tls_verify.get_or_insert(false);
        }
        if h.kind == HealthKind::Dns {
            h.query_type.get_or_insert_default();
            h.rcode.get_or_insert_default();
        }
    }
    s
}
