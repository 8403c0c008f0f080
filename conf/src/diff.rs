//! What changed for one node between two topologies: services, backends and their weights, health checks, BGP
//! neighbours, local-address pools, SNAT rules, and the parts that need a dataplane restart (ports, cores, EAL).
//! Live reload applies these changes one by one; anything not listed is untouched, so its connections live on.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::model::{Backend, Topology};
use crate::resolve::NodeConfig;

/// One change, as seen by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// The node appears in the new topology only.
    NodeAdded,
    /// The node is gone from the new topology.
    NodeRemoved,
    /// A service the node now serves.
    ServiceAdded { service: String },
    /// A service the node no longer serves.
    ServiceRemoved { service: String },
    /// Service settings other than backends and health changed (field names listed).
    ServiceChanged { service: String, fields: Vec<String> },
    /// A backend was added.
    BackendAdded { service: String, backend: String },
    /// A backend was removed.
    BackendRemoved { service: String, backend: String },
    /// A backend's weight changed.
    BackendWeight {
        service: String,
        backend: String,
        old: u32,
        new: u32,
    },
    /// A backend was drained or undrained.
    BackendDrained {
        service: String,
        backend: String,
        drained: bool,
    },
    /// The health check of a service changed.
    HealthChanged { service: String },
    /// A BGP neighbour was added.
    NeighborAdded { address: String },
    /// A BGP neighbour was removed.
    NeighborRemoved { address: String },
    /// A BGP neighbour's settings changed (field names listed).
    NeighborChanged { address: String, fields: Vec<String> },
    /// Node-wide BGP settings (ASN, listen port, graceful restart) changed.
    BgpChanged { fields: Vec<String> },
    /// A local-address pool was added.
    PoolAdded { prefix: String },
    /// A local-address pool was removed.
    PoolRemoved { prefix: String },
    /// A local-address pool's settings changed.
    PoolChanged { prefix: String, fields: Vec<String> },
    /// Static routes changed.
    RoutesChanged,
    /// Static neighbours changed.
    StaticNeighborsChanged,
    /// An SNAT rule was added, removed or changed.
    SnatChanged { rule: String },
    /// Cluster-wide Maglev parameters or timeouts changed.
    ClusterChanged { fields: Vec<String> },
    /// Ports, worker cores, EAL arguments, control socket or metrics address changed: needs a restart.
    RestartRequired { fields: Vec<String> },
}

impl Change {
    /// Whether the change can only be applied by restarting the node.
    pub fn needs_restart(&self) -> bool {
        matches!(
            self,
            Change::RestartRequired { .. } | Change::NodeAdded | Change::NodeRemoved
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Change::*;
        match self {
            NodeAdded => write!(f, "node added"),
            NodeRemoved => write!(f, "node removed"),
            ServiceAdded { service } => write!(f, "service {service}: added"),
            ServiceRemoved { service } => write!(f, "service {service}: removed"),
            ServiceChanged { service, fields } => {
                write!(f, "service {service}: changed {}", fields.join(", "))
            }
            BackendAdded { service, backend } => write!(f, "service {service}: backend {backend} added"),
            BackendRemoved { service, backend } => write!(f, "service {service}: backend {backend} removed"),
            BackendWeight {
                service,
                backend,
                old,
                new,
            } => {
                write!(f, "service {service}: backend {backend} weight {old} -> {new}")
            }
            BackendDrained {
                service,
                backend,
                drained,
            } => {
                let what = if *drained { "drained" } else { "undrained" };
                write!(f, "service {service}: backend {backend} {what}")
            }
            HealthChanged { service } => write!(f, "service {service}: health check changed"),
            NeighborAdded { address } => write!(f, "bgp neighbor {address}: added"),
            NeighborRemoved { address } => write!(f, "bgp neighbor {address}: removed"),
            NeighborChanged { address, fields } => {
                write!(f, "bgp neighbor {address}: changed {}", fields.join(", "))
            }
            BgpChanged { fields } => write!(f, "bgp: changed {}", fields.join(", ")),
            PoolAdded { prefix } => write!(f, "local pool {prefix}: added"),
            PoolRemoved { prefix } => write!(f, "local pool {prefix}: removed"),
            PoolChanged { prefix, fields } => write!(f, "local pool {prefix}: changed {}", fields.join(", ")),
            RoutesChanged => write!(f, "static routes changed"),
            StaticNeighborsChanged => write!(f, "static neighbors changed"),
            SnatChanged { rule } => write!(f, "snat rule {rule}: changed"),
            ClusterChanged { fields } => write!(f, "cluster: changed {}", fields.join(", ")),
            RestartRequired { fields } => write!(f, "restart required: changed {}", fields.join(", ")),
        }
    }
}

/// Names of the top-level fields whose serialized values differ, `except` some.
fn changed_fields<T: Serialize>(old: &T, new: &T, except: &[&str]) -> Vec<String> {
    let as_map = |v: &T| match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_map(old), as_map(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !except.contains(&k.as_str()) && a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn backend_key(b: &Backend) -> String {
    match (b.address, b.port) {
        (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

/// Changes for node `name` from `old` to `new`, in a stable order.
pub fn diff(old: &Topology, new: &Topology, name: &str) -> Vec<Change> {
    match (old.resolve(name), new.resolve(name)) {
        (None, None) => Vec::new(),
        (None, Some(_)) => vec![Change::NodeAdded],
        (Some(_), None) => vec![Change::NodeRemoved],
        (Some(a), Some(b)) => diff_resolved(&a, &b),
    }
}

/// Changes between two resolved configurations of one node.
pub fn diff_resolved(a: &NodeConfig, b: &NodeConfig) -> Vec<Change> {
    let mut out = Vec::new();
    let mut cluster = Vec::new();
    if a.maglev != b.maglev {
        cluster.push("maglev".to_owned());
    }
    if a.timeouts != b.timeouts {
        cluster.push("timeouts".to_owned());
    }
    if a.peers != b.peers {
        cluster.push("peers".to_owned());
    }
    if a.syn_proxy != b.syn_proxy {
        cluster.push("syn_proxy".to_owned());
    }
    if !cluster.is_empty() {
        out.push(Change::ClusterChanged { fields: cluster });
    }

    let mut restart = changed_fields(
        &a.node,
        &b.node,
        &["local_addresses", "routes", "neighbors", "bgp", "dataplane"],
    );
    restart.extend(
        changed_fields(&a.node.dataplane, &b.node.dataplane, &[])
            .into_iter()
            .map(|f| format!("dataplane.{f}")),
    );
    if !restart.is_empty() {
        out.push(Change::RestartRequired { fields: restart });
    }

    services(a, b, &mut out);
    bgp(a, b, &mut out);

    let pools_a: BTreeMap<String, _> = a
        .node
        .local_addresses
        .iter()
        .map(|p| (p.prefix.to_string(), p))
        .collect();
    let pools_b: BTreeMap<String, _> = b
        .node
        .local_addresses
        .iter()
        .map(|p| (p.prefix.to_string(), p))
        .collect();
    for (k, pa) in &pools_a {
        match pools_b.get(k) {
            None => out.push(Change::PoolRemoved { prefix: k.clone() }),
            Some(pb) if pa != pb => out.push(Change::PoolChanged {
                prefix: k.clone(),
                fields: changed_fields(pa, pb, &[]),
            }),
            Some(_) => {}
        }
    }
    for k in pools_b.keys().filter(|k| !pools_a.contains_key(*k)) {
        out.push(Change::PoolAdded { prefix: k.clone() });
    }
    if a.node.routes != b.node.routes {
        out.push(Change::RoutesChanged);
    }
    if a.node.neighbors != b.node.neighbors {
        out.push(Change::StaticNeighborsChanged);
    }

    let snat_a: BTreeMap<&str, _> = a.snat.iter().map(|s| (s.name.as_str(), s)).collect();
    let snat_b: BTreeMap<&str, _> = b.snat.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut names: Vec<&str> = snat_a.keys().chain(snat_b.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    for n in names {
        if snat_a.get(n) != snat_b.get(n) {
            out.push(Change::SnatChanged { rule: n.to_owned() });
        }
    }
    out
}

fn services(a: &NodeConfig, b: &NodeConfig, out: &mut Vec<Change>) {
    let sa: BTreeMap<&str, _> = a.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let sb: BTreeMap<&str, _> = b.services.iter().map(|s| (s.name.as_str(), s)).collect();
    for (name, old) in &sa {
        let service = (*name).to_owned();
        let Some(new) = sb.get(name) else {
            out.push(Change::ServiceRemoved { service });
            continue;
        };
        let fields = changed_fields(*old, *new, &["backends", "health"]);
        if !fields.is_empty() {
            out.push(Change::ServiceChanged {
                service: service.clone(),
                fields,
            });
        }
        if old.health != new.health {
            out.push(Change::HealthChanged {
                service: service.clone(),
            });
        }
        let ba: BTreeMap<String, &Backend> = old.backends.iter().map(|x| (backend_key(x), x)).collect();
        let bb: BTreeMap<String, &Backend> = new.backends.iter().map(|x| (backend_key(x), x)).collect();
        for (k, x) in &ba {
            let backend = k.clone();
            match bb.get(k) {
                None => out.push(Change::BackendRemoved {
                    service: service.clone(),
                    backend,
                }),
                Some(y) => {
                    if x.weight() != y.weight() {
                        out.push(Change::BackendWeight {
                            service: service.clone(),
                            backend: backend.clone(),
                            old: x.weight(),
                            new: y.weight(),
                        });
                    }
                    if x.server_id != y.server_id {
                        out.push(Change::ServiceChanged {
                            service: service.clone(),
                            fields: vec![format!("backends.{backend}.server_id")],
                        });
                    }
                    if x.drained != y.drained {
                        out.push(Change::BackendDrained {
                            service: service.clone(),
                            backend,
                            drained: y.drained,
                        });
                    }
                }
            }
        }
        for k in bb.keys().filter(|k| !ba.contains_key(*k)) {
            out.push(Change::BackendAdded {
                service: service.clone(),
                backend: k.clone(),
            });
        }
    }
    for name in sb.keys().filter(|n| !sa.contains_key(*n)) {
        out.push(Change::ServiceAdded {
            service: (*name).to_owned(),
        });
    }
}

fn bgp(a: &NodeConfig, b: &NodeConfig, out: &mut Vec<Change>) {
    let (ga, gb) = (a.node.bgp.as_ref(), b.node.bgp.as_ref());
    if let (Some(x), Some(y)) = (ga, gb) {
        let fields = changed_fields(x, y, &["neighbors"]);
        if !fields.is_empty() {
            out.push(Change::BgpChanged { fields });
        }
    } else if ga.is_some() != gb.is_some() {
        out.push(Change::BgpChanged {
            fields: vec!["bgp".to_owned()],
        });
    }
    let na: BTreeMap<String, _> = ga
        .iter()
        .flat_map(|g| &g.neighbors)
        .map(|n| (n.address.to_string(), n))
        .collect();
    let nb: BTreeMap<String, _> = gb
        .iter()
        .flat_map(|g| &g.neighbors)
        .map(|n| (n.address.to_string(), n))
        .collect();
    for (k, x) in &na {
        match nb.get(k) {
            None => out.push(Change::NeighborRemoved { address: k.clone() }),
            Some(y) if x != y => out.push(Change::NeighborChanged {
                address: k.clone(),
                fields: changed_fields(*x, *y, &[]),
            }),
            Some(_) => {}
        }
    }
    for k in nb.keys().filter(|k| !na.contains_key(*k)) {
        out.push(Change::NeighborAdded { address: k.clone() });
    }
}
