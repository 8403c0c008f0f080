//! Semantic validation of a topology that deserialized: the rules a schema cannot express (uniqueness,
//! references between sections, address families, ranges, timer relations). Each issue carries the key path
//! of the value to fix; the loader turns it into file:line:column.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{
    BgpNeighbor, ClientAddress, Encapsulation, Family, Forwarding, HealthKind, LimitAction, Node, Protocol,
    Service, SnatRule, Topology,
};
use crate::path;
use crate::tree::KeyPath;
use crate::types::{Duration, PortRange, PortSpec};

/// One rule violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Where (positions index the deserialized vectors).
    pub path: KeyPath,
    /// What is wrong.
    pub message: String,
}

/// Collects issues.
struct Report(Vec<Issue>);

impl Report {
    fn push(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(Issue {
            path,
            message: message.into(),
        });
    }
}

/// Checks every rule. With `check_node_refs` false (some node failed to load), references to node names are
/// not checked, since they could name the node that failed.
pub fn validate(t: &Topology, check_node_refs: bool) -> Vec<Issue> {
    let mut r = Report(Vec::new());
    cluster(t, &mut r);
    let node_names: HashSet<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
    let refs = |name: &str| !check_node_refs || node_names.contains(name);

    let mut seen_names = HashSet::new();
    let mut seen_router_ids = HashMap::new();
    for (i, n) in t.nodes.iter().enumerate() {
        if n.name.is_empty() || n.name.contains(['/', ' ']) {
            r.push(
                path!["nodes", i, "name"],
                "a node name must be non-empty, without '/' or spaces",
            );
        }
        if !seen_names.insert(n.name.as_str()) {
            r.push(
                path!["nodes", i, "name"],
                format!("duplicate node name {:?}", n.name),
            );
        }
        if let Some(prev) = seen_router_ids.insert(n.router_id, &n.name) {
            r.push(
                path!["nodes", i, "router_id"],
                format!("router id {} is also node {prev:?}'s", n.router_id),
            );
        }
        node(t, i, n, &refs, &mut r);
    }
    pools_across_nodes(t, &mut r);
    own_addresses_across_nodes(t, &mut r);

    let mut seen_services = HashSet::new();
    for (i, s) in t.services.iter().enumerate() {
        if !seen_services.insert(s.name.as_str()) {
            r.push(
                path!["services", i, "name"],
                format!("duplicate service name {:?}", s.name),
            );
        }
        service(t, i, s, &refs, &mut r);
    }
    duplicate_vips(t, &mut r);

    let mut seen_snat = HashSet::new();
    for (i, s) in t.snat.iter().enumerate() {
        if !seen_snat.insert(s.name.as_str()) {
            r.push(
                path!["snat", i, "name"],
                format!("duplicate SNAT rule name {:?}", s.name),
            );
        }
        snat(t, i, s, &refs, &mut r);
    }
    r.0
}

fn cluster(t: &Topology, r: &mut Report) {
    sync(t, r);
    let c = &t.cluster;
    if c.name.is_empty() {
        r.push(path!["cluster", "name"], "the cluster name must not be empty");
    }
    if let Some(asn) = c.asn {
        check_asn(path!["cluster", "asn"], asn, r);
    }
    check_timers(
        path!["cluster", "bgp"],
        Some(c.bgp.hold_time),
        Some(c.bgp.keepalive),
        r,
    );
    if c.bgp.connect_retry.get().is_zero() {
        r.push(
            path!["cluster", "bgp", "connect_retry"],
            "connect_retry must be longer than 0s",
        );
    }
    let to = c.timeouts;
    for (key, d) in [
        ("tcp_syn_recv", to.tcp_syn_recv),
        ("tcp_established", to.tcp_established),
        ("tcp_fin_wait", to.tcp_fin_wait),
        ("tcp_close_wait", to.tcp_close_wait),
        ("tcp_last_ack", to.tcp_last_ack),
        ("tcp_time_wait", to.tcp_time_wait),
        ("tcp_close", to.tcp_close),
        ("udp", to.udp),
    ] {
        if d.get().is_zero() {
            r.push(
                path!["cluster", "timeouts", key],
                "a timeout must be longer than 0s",
            );
        }
    }
    let m = c.maglev.table_size;
    if !is_prime(u64::from(m)) {
        r.push(
            path!["cluster", "maglev", "table_size"],
            format!("table_size {m} is not a prime (65537 is)"),
        );
    }
    let most = t.services.iter().map(|s| s.backends.len()).max().unwrap_or(0);
    if (m as usize) < most {
        r.push(
            path!["cluster", "maglev", "table_size"],
            format!("table_size {m} is smaller than {most} backends"),
        );
    }
}

/// Connection sync: every node has a sync address of its own, the replicas fit the cluster, and the timers make
/// sense (a node is declared lost only after several heartbeats); the SYN-proxy's window scale is one TCP allows.
fn sync(t: &Topology, r: &mut Report) {
    if let Some(c) = &t.cluster.syn_proxy {
        if c.wscale > 14 {
            r.push(
                path!["cluster", "syn_proxy", "wscale"],
                format!("window scale {} is above 14 (RFC 7323)", c.wscale),
            );
        }
    }
    let Some(s) = &t.cluster.sync else { return };
    let n = t.nodes.len();
    if n < 2 {
        r.push(
            path!["cluster", "sync"],
            "connection sync needs at least two nodes",
        );
    }
    if n > 32 {
        // Heartbeats carry the nodes whose local addresses their sender serves as a 32-bit map.
        r.push(
            path!["cluster", "sync"],
            format!("connection sync takes at most 32 nodes, not {n}"),
        );
    }
    if let Some(rep) = s.replicas {
        if rep == 0 || usize::from(rep) >= n.max(2) {
            r.push(
                path!["cluster", "sync", "replicas"],
                format!(
                    "replicas must be from 1 to {} (the other nodes)",
                    n.saturating_sub(1).max(1)
                ),
            );
        }
    }
    if s.port == 0 {
        r.push(path!["cluster", "sync", "port"], "the sync port must not be 0");
    }
    if s.heartbeat.get().is_zero() || s.dead_after.get() < s.heartbeat.get() * 3 {
        r.push(
            path!["cluster", "sync", "dead_after"],
            "dead_after must be at least three heartbeats (a node is lost only after several missed ones)",
        );
    }
    if s.refresh.get() <= s.threshold.get() {
        r.push(
            path!["cluster", "sync", "refresh"],
            "refresh must be longer than threshold",
        );
    }
    for (i, node) in t.nodes.iter().enumerate() {
        let own = |a: &IpAddr| {
            node.dataplane
                .ports
                .iter()
                .any(|p| p.addresses.iter().any(|n| n.addr() == *a))
        };
        match node.sync_address {
            None => r.push(
                path!["nodes", i],
                format!("node {:?} needs a sync_address: connection sync is on", node.name),
            ),
            Some(a) if !own(&a) => r.push(
                path!["nodes", i, "sync_address"],
                format!("{a} is not one of the node's own port addresses"),
            ),
            Some(_) => {}
        }
    }
}

fn check_asn(p: KeyPath, asn: u32, r: &mut Report) {
    if asn == 0 || asn == 23456 || asn == u32::MAX {
        r.push(p, format!("ASN {asn} is reserved (RFC 7607, RFC 6793)"));
    }
}

/// Hold time 0 or ≥ 3 s (RFC 4271 §4.2), keepalive at most a third of it.
fn check_timers(p: KeyPath, hold: Option<Duration>, keepalive: Option<Duration>, r: &mut Report) {
    if let Some(h) = hold {
        if !h.get().is_zero() && h.get() < std::time::Duration::from_secs(3) {
            r.push(
                p.with("hold_time"),
                "hold_time must be 0s or at least 3s (RFC 4271)",
            );
        }
        if h.as_secs() > 65535 {
            r.push(p.with("hold_time"), "hold_time must be at most 65535s");
        }
        if let Some(k) = keepalive {
            if !h.get().is_zero() && k.get() > h.get() / 3 {
                r.push(
                    p.with("keepalive"),
                    format!("keepalive {k} is more than a third of hold_time {h}"),
                );
            }
        }
    }
}

fn node(t: &Topology, i: usize, n: &Node, refs: &dyn Fn(&str) -> bool, r: &mut Report) {
    let np = path!["nodes", i];
    let dp = np.with("dataplane");
    if n.dataplane.workers.is_empty() {
        r.push(dp.with("workers"), "at least one worker core is needed");
    }
    let mut cores = HashSet::new();
    for (j, c) in n.dataplane.workers.iter().enumerate() {
        if !cores.insert(*c) {
            r.push(dp.with("workers").with(j), format!("core {c} is listed twice"));
        }
    }
    if n.dataplane.connections_per_worker == Some(0) {
        r.push(
            dp.with("connections_per_worker"),
            "connections_per_worker must be at least 1",
        );
    }
    if let Some(d) = n.dataplane.descriptors {
        if !d.is_power_of_two() || !(64..=16384).contains(&d) {
            r.push(
                dp.with("descriptors"),
                format!("descriptors must be a power of two from 64 to 16384, not {d}"),
            );
        }
    }
    if let Some(m) = n.dataplane.mbufs {
        let need = n.dataplane.mbufs_needed();
        if m < need {
            r.push(
                dp.with("mbufs"),
                format!("{m} buffers cannot fill the queues: at least {need} are needed for these workers, ports and descriptors"),
            );
        }
    }
    if let Some(fl) = &n.dataplane.fragments {
        let fp = dp.with("fragments");
        if fl.datagrams == Some(0) {
            r.push(fp.with("datagrams"), "datagrams must be at least 1");
        }
        if fl
            .timeout
            .is_some_and(|t| t.get().is_zero() || t.get() > std::time::Duration::from_secs(60))
        {
            r.push(fp.with("timeout"), "timeout must be more than 0s and at most 60s");
        }
    }
    if n.dataplane.ports.is_empty() {
        r.push(dp.with("ports"), "at least one port is needed");
    }
    let mut port_names = HashSet::new();
    for (j, p) in n.dataplane.ports.iter().enumerate() {
        let pp = dp.with("ports").with(j);
        if !port_names.insert(p.name.as_str()) {
            r.push(pp.with("name"), format!("duplicate port name {:?}", p.name));
        }
        if p.device.trim().is_empty() {
            r.push(
                pp.with("device"),
                "device must be a PCI address or a DPDK vdev string",
            );
        }
        if let Some(mtu) = p.mtu {
            if !(68..=9216).contains(&mtu) {
                r.push(pp.with("mtu"), format!("mtu {mtu} is outside 68-9216"));
            }
        }
        if let Some(v) = p.vlan {
            if !(1..=4094).contains(&v) {
                r.push(pp.with("vlan"), format!("vlan {v} is outside 1-4094"));
            }
        }
        for (k, a) in p.addresses.iter().enumerate() {
            if a.addr() == a.network() && a.prefix_len() < a.max_prefix_len() - 1 {
                r.push(
                    pp.with("addresses").with(k),
                    format!("{a} is a network address; give the port's own address with its prefix length"),
                );
            }
        }
    }
    let port_exists = |name: &str| n.dataplane.ports.iter().any(|p| p.name == name);

    for (j, pool) in n.local_addresses.iter().enumerate() {
        let pp = np.with("local_addresses").with(j);
        if let Some(pr) = pool.ports {
            check_range(pp.with("ports"), pr, r);
        }
        if let Some(port) = &pool.port {
            if !port_exists(port) {
                r.push(
                    pp.with("port"),
                    format!("no dataplane port named {port:?} on this node"),
                );
            }
        }
        if let Some(b) = &pool.backup {
            if b == &n.name {
                r.push(pp.with("backup"), "a pool's backup must be another node");
            } else if !refs(b) {
                r.push(pp.with("backup"), format!("unknown node {b:?}"));
            }
        }
        for (k, other) in n.local_addresses.iter().enumerate().take(j) {
            if nets_overlap(&pool.prefix, &other.prefix) {
                r.push(
                    pp.with("prefix"),
                    format!("{} overlaps local_addresses[{k}] {}", pool.prefix, other.prefix),
                );
            }
        }
    }

    for (j, rt) in n.routes.iter().enumerate() {
        let rp = np.with("routes").with(j);
        if rt.via.is_empty() {
            r.push(rp.with("via"), "a route needs at least one next hop");
        }
        for (k, v) in rt.via.iter().enumerate() {
            if v.is_ipv4() != rt.prefix.addr().is_ipv4() {
                r.push(
                    rp.with("via").with(k),
                    format!("next hop {v} is not of the family of {}", rt.prefix),
                );
            }
        }
        if let Some(port) = &rt.port {
            if !port_exists(port) {
                r.push(
                    rp.with("port"),
                    format!("no dataplane port named {port:?} on this node"),
                );
            }
        }
    }

    let mut neigh_seen = HashSet::new();
    for (j, ne) in n.neighbors.iter().enumerate() {
        let ep = np.with("neighbors").with(j);
        if !port_exists(&ne.port) {
            r.push(
                ep.with("port"),
                format!("no dataplane port named {:?} on this node", ne.port),
            );
        }
        if !neigh_seen.insert(ne.address) {
            r.push(
                ep.with("address"),
                format!("{} has two static entries", ne.address),
            );
        }
    }

    if let Some(bgp) = &n.bgp {
        let bp = np.with("bgp");
        let local = t.local_asn(n);
        match bgp.asn {
            Some(asn) => check_asn(bp.with("asn"), asn, r),
            None if local.is_none() => {
                r.push(bp.with("asn"), "no local ASN: set nodes.bgp.asn or cluster.asn")
            }
            None => {}
        }
        if let Some(gr) = bgp.graceful_restart.and_then(|g| g.restart_time) {
            if gr.as_secs() > 4095 {
                r.push(
                    bp.with("graceful_restart").with("restart_time"),
                    "restart_time must be at most 4095s",
                );
            }
        }
        let mut seen = HashSet::new();
        for (j, nb) in bgp.neighbors.iter().enumerate() {
            let nbp = bp.with("neighbors").with(j);
            if !seen.insert(nb.address) {
                r.push(
                    nbp.with("address"),
                    format!("neighbour {} is listed twice", nb.address),
                );
            }
            neighbor(nbp, nb, local, r);
        }
    }
}

fn neighbor(p: KeyPath, nb: &BgpNeighbor, local: Option<u32>, r: &mut Report) {
    match nb.asn {
        None => r.push(
            p.with("asn"),
            format!("neighbour {} has no asn (its remote ASN)", nb.address),
        ),
        Some(asn) => check_asn(p.with("asn"), asn, r),
    }
    check_timers(p.clone(), nb.hold_time, nb.keepalive, r);
    if nb.multihop_ttl == Some(0) {
        r.push(p.with("multihop_ttl"), "multihop_ttl must be 1-255");
    }
    if let Some(la) = nb.local_address {
        if la.is_ipv4() != nb.address.is_ipv4() {
            r.push(
                p.with("local_address"),
                "local_address must be of the neighbour address family",
            );
        }
    }
    let fams = nb.families();
    let mut seen = HashSet::new();
    for (j, f) in nb.families.iter().enumerate() {
        if !seen.insert(*f) {
            r.push(p.with("families").with(j), "family listed twice");
        }
    }
    if fams.contains(&Family::Ipv6Unicast) && nb.address.is_ipv4() && nb.ipv6_next_hop.is_none() {
        r.push(
            p.with("ipv6_next_hop"),
            "IPv6 routes over an IPv4 session need ipv6_next_hop",
        );
    }
    if nb.next_hop.is_some() && !fams.contains(&Family::Ipv4Unicast) {
        r.push(
            p.with("next_hop"),
            "next_hop is for IPv4 routes, but ipv4-unicast is not negotiated",
        );
    }
    let ibgp = nb.asn.is_some() && nb.asn == local;
    if nb.local_pref.is_some() && !ibgp {
        r.push(
            p.with("local_pref"),
            "local_pref is only sent to iBGP neighbours (remote asn = local asn)",
        );
    }
    if nb.max_prefix == Some(0) {
        r.push(
            p.with("max_prefix"),
            "max_prefix must be at least 1 (leave it out for no limit)",
        );
    }
    if let Some(bfd) = nb.bfd {
        if bfd.multiplier == 0 {
            r.push(p.with("bfd").with("multiplier"), "multiplier must be at least 1");
        }
        for (k, d) in [("min_tx", bfd.min_tx), ("min_rx", bfd.min_rx)] {
            if d.get() < std::time::Duration::from_millis(10) {
                r.push(p.with("bfd").with(k), format!("{k} must be at least 10ms"));
            }
        }
    }
}

fn check_range(p: KeyPath, pr: PortRange, r: &mut Report) {
    if !pr.is_valid() {
        r.push(
            p,
            format!("invalid port range {pr}: it must start at 1 or above and not end before it starts"),
        );
    }
}

fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn pools_across_nodes(t: &Topology, r: &mut Report) {
    for (i, n) in t.nodes.iter().enumerate() {
        for (j, pool) in n.local_addresses.iter().enumerate() {
            for other in t.nodes.iter().take(i) {
                for op in &other.local_addresses {
                    if nets_overlap(&pool.prefix, &op.prefix) {
                        r.push(
                            path!["nodes", i, "local_addresses", j, "prefix"],
                            format!("{} overlaps {} of node {:?}", pool.prefix, op.prefix, other.name),
                        );
                    }
                }
            }
        }
    }
}

fn own_addresses_across_nodes(t: &Topology, r: &mut Report) {
    let mut seen: HashMap<IpAddr, &str> = HashMap::new();
    for (i, n) in t.nodes.iter().enumerate() {
        for (j, p) in n.dataplane.ports.iter().enumerate() {
            for (k, a) in p.addresses.iter().enumerate() {
                if let Some(prev) = seen.insert(a.addr(), &n.name) {
                    r.push(
                        path!["nodes", i, "dataplane", "ports", j, "addresses", k],
                        format!("address {} is also on node {prev:?}", a.addr()),
                    );
                }
            }
        }
    }
}

fn check_node_list(p: KeyPath, nodes: &Option<Vec<String>>, refs: &dyn Fn(&str) -> bool, r: &mut Report) {
    let Some(list) = nodes else { return };
    if list.is_empty() {
        r.push(
            p.clone(),
            "an empty node list serves nowhere; leave `nodes` out to mean every node",
        );
    }
    let mut seen = HashSet::new();
    for (j, name) in list.iter().enumerate() {
        if !refs(name) {
            r.push(p.with(j), format!("unknown node {name:?}"));
        }
        if !seen.insert(name) {
            r.push(p.with(j), format!("node {name:?} listed twice"));
        }
    }
}

fn service(t: &Topology, i: usize, s: &Service, refs: &dyn Fn(&str) -> bool, r: &mut Report) {
    let sp = path!["services", i];
    if s.name.is_empty() {
        r.push(sp.with("name"), "the service name must not be empty");
    }
    check_node_list(sp.with("nodes"), &s.nodes, refs, r);
    if s.forwarding == Forwarding::Snat {
        r.push(
            sp.with("forwarding"),
            "source NAT is configured with [[snat]] rules, not as a service",
        );
    }
    if (s.encapsulation.is_some() || s.gue_port.is_some()) && s.forwarding != Forwarding::Tunnel {
        let key = if s.encapsulation.is_some() {
            "encapsulation"
        } else {
            "gue_port"
        };
        r.push(sp.with(key), format!("{key} is for tunnel forwarding"));
    }
    if s.gue_port.is_some() && s.encapsulation != Some(Encapsulation::Gue) {
        r.push(sp.with("gue_port"), "gue_port needs encapsulation = \"gue\"");
    }
    if s.gue_port == Some(0) {
        r.push(sp.with("gue_port"), "gue_port must be 1-65535");
    }
    if s.client_address != ClientAddress::None {
        if s.forwarding != Forwarding::Fullnat {
            r.push(
                sp.with("client_address"),
                "client_address is for fullnat services (the other modes keep the client's address)",
            );
        }
        match (s.client_address, s.protocol) {
            (ClientAddress::Toa, Protocol::Udp) => r.push(
                sp.with("client_address"),
                "toa is a TCP option: use uoa or proxy_v2 for udp",
            ),
            (ClientAddress::Uoa, Protocol::Tcp) => r.push(
                sp.with("client_address"),
                "uoa is for udp: use toa or proxy_v2 for tcp",
            ),
            (ClientAddress::Uoa, Protocol::Udp) => {
                if let Some(j) = s.backends.iter().position(|b| b.address.is_ipv6()) {
                    r.push(
                        sp.with("backends").with(j).with("address"),
                        "uoa is an IPv4 option: every backend of a uoa service must be IPv4 (use proxy_v2)",
                    );
                }
            }
            _ => {}
        }
    }
    if s.client_address_datagrams.is_some()
        && (s.protocol != Protocol::Udp || s.client_address == ClientAddress::None)
    {
        r.push(
            sp.with("client_address_datagrams"),
            "client_address_datagrams is for udp services with a client_address",
        );
    }
    quic(&sp, s, r);
    limits(&sp, s, r);
    syn_proxy(t, &sp, s, r);
    if s.persistence.is_some_and(|d| d.get().is_zero()) {
        r.push(
            sp.with("persistence"),
            "persistence must be longer than 0s (leave it out for none)",
        );
    }
    if let Some(min) = s.min_healthy {
        if min as usize > s.backends.len() {
            r.push(
                sp.with("min_healthy"),
                format!(
                    "min_healthy {min} is more than the {} backends: the VIP could never be announced",
                    s.backends.len()
                ),
            );
        }
    }
    for n in &t.nodes {
        for pool in &n.local_addresses {
            if pool.prefix.contains(&s.vip) {
                r.push(
                    sp.with("vip"),
                    format!(
                        "VIP {} is inside node {:?}'s local pool {}",
                        s.vip, n.name, pool.prefix
                    ),
                );
            }
        }
        for p in &n.dataplane.ports {
            if p.addresses.iter().any(|a| a.addr() == s.vip) {
                r.push(
                    sp.with("vip"),
                    format!(
                        "VIP {} is node {:?}'s own address on port {}",
                        s.vip, n.name, p.name
                    ),
                );
            }
        }
    }

    let mut seen = HashSet::new();
    for (j, b) in s.backends.iter().enumerate() {
        let bp = sp.with("backends").with(j);
        if b.port == Some(0) {
            r.push(bp.with("port"), "backend port must be 1-65535");
        }
        if b.weight.is_some_and(|w| w > 65535) {
            r.push(bp.with("weight"), "weight must be 0-65535");
        }
        let key = (b.address, b.port);
        if !seen.insert(key) {
            r.push(
                bp.with("address"),
                format!("backend {} port {:?} listed twice", b.address, b.port),
            );
        }
        let same_family = b.address.is_ipv4() == s.vip.is_ipv4();
        match s.forwarding {
            Forwarding::Fullnat if s.vip.is_ipv4() && b.address.is_ipv6() => r.push(
                bp.with("address"),
                "an IPv4 VIP cannot reach an IPv6 backend (NAT46 is not supported); use an IPv6 VIP",
            ),
            Forwarding::Dr | Forwarding::Tunnel | Forwarding::Nat if !same_family => r.push(
                bp.with("address"),
                format!(
                    "{:?} forwarding keeps the address family: backend and VIP must both be IPv4 or IPv6",
                    s.forwarding
                )
                .to_lowercase(),
            ),
            _ => {}
        }
        if matches!(s.forwarding, Forwarding::Dr | Forwarding::Tunnel) {
            if let (Some(bport), PortSpec::One(vport)) = (b.port, s.port) {
                if bport != vport {
                    r.push(
                        bp.with("port"),
                        "dr and tunnel forwarding cannot change the port: use the service port",
                    );
                }
            }
        }
    }

    if s.forwarding == Forwarding::Fullnat {
        let need_v4 = s.backends.iter().any(|b| b.address.is_ipv4());
        // An IPv4 VIP with IPv6 backends is already reported above.
        let need_v6 = s.vip.is_ipv6() && s.backends.iter().any(|b| b.address.is_ipv6());
        for n in t.nodes.iter().filter(|n| s.served_by(&n.name)) {
            let has_v4 = n.local_addresses.iter().any(|p| p.prefix.addr().is_ipv4());
            let has_v6 = n.local_addresses.iter().any(|p| p.prefix.addr().is_ipv6());
            let what = if s.vip.is_ipv6() && need_v4 {
                "NAT64 to IPv4 backends"
            } else {
                "Full-NAT to IPv4 backends"
            };
            if need_v4 && !has_v4 {
                r.push(
                    sp.with("backends"),
                    format!("{what} needs an IPv4 local-address pool on node {:?}", n.name),
                );
            }
            if need_v6 && !has_v6 {
                r.push(
                    sp.with("backends"),
                    format!(
                        "Full-NAT to IPv6 backends needs an IPv6 local-address pool on node {:?}",
                        n.name
                    ),
                );
            }
        }
    }

    if let Some(h) = &s.health {
        health(sp.with("health"), s, h, r);
    }
}

fn health(p: KeyPath, s: &Service, h: &crate::model::HealthCheck, r: &mut Report) {
    use HealthKind::*;
    if h.timeout() >= h.interval() {
        r.push(
            p.with("timeout"),
            format!(
                "timeout {} must be shorter than interval {}",
                h.timeout(),
                h.interval()
            ),
        );
    }
    if h.interval.is_some_and(|d| d.get().is_zero()) {
        r.push(p.with("interval"), "interval must be longer than 0s");
    }
    if h.rise == Some(0) {
        r.push(p.with("rise"), "rise must be at least 1");
    }
    if h.fall == Some(0) {
        r.push(p.with("fall"), "fall must be at least 1");
    }
    if let Some(j) = h.jitter {
        if !(0.0..=0.5).contains(&j) {
            r.push(
                p.with("jitter"),
                format!("jitter {j} must be between 0.0 and 0.5 of the interval"),
            );
        }
    }
    let http = matches!(h.kind, Http | Https);
    let only = |key: &str, set: bool, ok: bool, kinds: &str, r: &mut Report| {
        if set && !ok {
            r.push(p.with(key), format!("`{key}` applies to {kinds} checks only"));
        }
    };
    only("path", h.path.is_some(), http, "http and https", r);
    only("status", !h.status.is_empty(), http, "http and https", r);
    only("body", h.body.is_some(), http, "http and https", r);
    only(
        "host",
        h.host.is_some(),
        http || h.kind == Grpc,
        "http, https and grpc",
        r,
    );
    let tls = h.kind == Https || (h.kind == Grpc && h.tls == Some(true));
    only(
        "tls_verify",
        h.tls_verify.is_some(),
        tls,
        "https and grpc with tls = true",
        r,
    );
    only("tls", h.tls.is_some(), h.kind == Grpc, "grpc", r);
    only(
        "grpc_service",
        h.grpc_service.is_some(),
        h.kind == Grpc,
        "grpc",
        r,
    );
    for (key, set) in [
        ("query", h.query.is_some()),
        ("query_type", h.query_type.is_some()),
        ("rcode", h.rcode.is_some()),
        ("answer", h.answer.is_some()),
    ] {
        only(key, set, h.kind == Dns, "dns", r);
    }
    only("payload", h.payload.is_some(), h.kind == Udp, "udp", r);
    only("send", h.send.is_some(), h.kind == Tcp, "tcp", r);
    only("syn", h.syn.is_some(), h.kind == Tcp, "tcp", r);
    only(
        "expect",
        h.expect.is_some(),
        matches!(h.kind, Udp | Tcp),
        "udp and tcp",
        r,
    );
    if h.kind == Dns {
        dns_check(h, &p, r);
    }
    only("command", !h.command.is_empty(), h.kind == Exec, "exec", r);
    if let Some(path) = &h.path {
        if !path.starts_with('/') {
            r.push(p.with("path"), "path must start with '/'");
        }
    }
    for (j, code) in h.status.iter().enumerate() {
        if !(100..=599).contains(code) {
            r.push(
                p.with("status").with(j),
                format!("{code} is not an HTTP status code"),
            );
        }
    }
    if h.kind == Udp && h.payload.is_none() {
        r.push(p.with("payload"), "a udp check needs a payload to send");
    }
    if h.kind == Exec && h.command.is_empty() {
        r.push(p.with("command"), "an exec check needs a command");
    }
    if h.port == Some(0) {
        r.push(p.with("port"), "port must be 1-65535");
    }
    let needs_port = matches!(h.kind, Tcp | Http | Https | Udp | Grpc | Dns);
    if needs_port
        && h.port.is_none()
        && s.port == PortSpec::All
        && s.backends.iter().any(|b| b.port.is_none())
    {
        r.push(
            p.with("port"),
            "the service serves all ports and a backend has none: set the port to check",
        );
    }
}

/// A dns check needs a name that fits in a query: labels of 1-63 bytes, at most 253 characters.
fn dns_check(h: &crate::model::HealthCheck, p: &KeyPath, r: &mut Report) {
    let Some(q) = &h.query else {
        r.push(p.with("query"), "a dns check needs a name to query");
        return;
    };
    let name = q.strip_suffix('.').unwrap_or(q);
    if name.len() > 253 {
        r.push(p.with("query"), format!("{q:?} is longer than 253 characters"));
    } else if !name.is_empty() && name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        r.push(
            p.with("query"),
            format!("{q:?} has an empty label or one longer than 63 characters"),
        );
    }
}

/// Rate limits and backend connection thresholds.
fn limits(sp: &KeyPath, s: &Service, r: &mut Report) {
    if let Some(rl) = &s.rate_limit {
        let rp = sp.with("rate_limit");
        if rl.cps == 0 {
            r.push(rp.with("cps"), "cps must be at least 1");
        }
        if rl.burst == Some(0) {
            r.push(rp.with("burst"), "burst must be at least 1");
        }
        if rl.action == Some(LimitAction::Reset) && s.protocol != Protocol::Tcp {
            r.push(
                rp.with("action"),
                "reset answers with a TCP RST: for tcp services only",
            );
        }
    }
    for (j, b) in s.backends.iter().enumerate() {
        let bp = sp.with("backends").with(j);
        match (b.upper_threshold, b.lower_threshold) {
            (Some(0), _) => r.push(bp.with("upper_threshold"), "upper_threshold must be at least 1"),
            (None, Some(_)) => r.push(
                bp.with("lower_threshold"),
                "lower_threshold needs an upper_threshold",
            ),
            (Some(u), Some(l)) if l >= u => r.push(
                bp.with("lower_threshold"),
                format!("lower_threshold {l} must be below upper_threshold {u}"),
            ),
            _ => {}
        }
    }
}

/// SYN-proxy: TCP Full-NAT services only, with the cluster's cookie key.
fn syn_proxy(t: &Topology, sp: &KeyPath, s: &Service, r: &mut Report) {
    if s.syn_proxy != Some(true) {
        return;
    }
    let p = sp.with("syn_proxy");
    if s.protocol != Protocol::Tcp {
        r.push(
            p.clone(),
            "a SYN-proxy answers TCP handshakes: for tcp services only",
        );
    }
    if s.forwarding != Forwarding::Fullnat {
        r.push(
            p.clone(),
            "a SYN-proxy splices two handshakes with a sequence shift: for fullnat forwarding only",
        );
    }
    if t.cluster.syn_proxy.is_none() {
        r.push(
            p,
            "needs [cluster.syn_proxy] with the cookie key_file every node shares",
        );
    }
}

/// QUIC routing: UDP services only, a server ID of 1-8 bytes inside a 20-byte connection ID, and every backend
/// with its own server ID of that length.
fn quic(sp: &KeyPath, s: &Service, r: &mut Report) {
    let Some(q) = &s.quic else {
        for (j, b) in s.backends.iter().enumerate() {
            if b.server_id.is_some() {
                r.push(
                    sp.with("backends").with(j).with("server_id"),
                    "server_id is for services with a quic table",
                );
            }
        }
        return;
    };
    let qp = sp.with("quic");
    if s.protocol != Protocol::Udp {
        r.push(qp.clone(), "quic routing needs protocol udp");
    }
    if !(1..=8).contains(&q.server_id_length) {
        r.push(qp.with("server_id_length"), "server_id_length must be 1-8 bytes");
        return;
    }
    if usize::from(q.offset()) + usize::from(q.server_id_length) > 20 {
        r.push(
            qp.with("server_id_offset"),
            "the server ID must fit in a 20-byte connection ID",
        );
    }
    let mut seen: Vec<(u64, usize)> = Vec::new();
    for (j, b) in s.backends.iter().enumerate() {
        let bp = sp.with("backends").with(j).with("server_id");
        match b
            .server_id
            .as_deref()
            .map(|h| (h, crate::model::parse_server_id(h)))
        {
            None => r.push(bp, "every backend of a quic service needs a server_id"),
            Some((h, None)) => r.push(bp, format!("{h:?} is not a server ID in hex (1-8 bytes)")),
            Some((h, Some((_, len)))) if len != usize::from(q.server_id_length) => r.push(
                bp,
                format!("{h:?} is {len} bytes; server_id_length is {}", q.server_id_length),
            ),
            Some((h, Some((v, _)))) => match seen.iter().position(|(x, _)| *x == v) {
                Some(k) => r.push(bp, format!("{h:?} is backends[{}]'s server_id too", seen[k].1)),
                None => seen.push((v, j)),
            },
        }
    }
}

fn duplicate_vips(t: &Topology, r: &mut Report) {
    for (i, s) in t.services.iter().enumerate() {
        for (j, o) in t.services.iter().enumerate().take(i) {
            if s.vip == o.vip && s.protocol == o.protocol && s.port.overlaps(o.port) {
                r.push(
                    path!["services", i, "vip"],
                    format!(
                        "{} {}:{} is already service {:?} (services[{j}])",
                        format!("{:?}", s.protocol).to_lowercase(),
                        s.vip,
                        s.port,
                        o.name
                    ),
                );
            }
        }
    }
}

fn snat(t: &Topology, i: usize, s: &SnatRule, refs: &dyn Fn(&str) -> bool, r: &mut Report) {
    let p = path!["snat", i];
    check_node_list(p.with("nodes"), &s.nodes, refs, r);
    if s.sources.is_empty() {
        r.push(p.with("sources"), "at least one source prefix is needed");
    }
    if s.pool.is_empty() {
        r.push(p.with("pool"), "at least one translation address is needed");
    }
    if let Some(pr) = s.ports {
        check_range(p.with("ports"), pr, r);
    }
    for (j, src) in s.sources.iter().enumerate() {
        if let Some(first) = s.pool.first() {
            if src.addr().is_ipv4() != first.addr().is_ipv4() {
                r.push(
                    p.with("sources").with(j),
                    "sources and pool must be of one address family",
                );
            }
        }
    }
    for n in t.nodes.iter().filter(|n| s.served_by(&n.name)) {
        if !n.dataplane.ports.iter().any(|port| port.name == s.out_port) {
            r.push(
                p.with("out_port"),
                format!("node {:?} has no dataplane port named {:?}", n.name, s.out_port),
            );
        }
    }
}

/// Trial division; table sizes are at most a few million.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(251));
        assert!(!is_prime(65536));
        assert!(!is_prime(1));
    }
}
