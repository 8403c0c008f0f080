//! `anylb run`: one node of the cluster. Starts the node's DPDK dataplane from the topology and its BGP
//! speaker, which announces the VIPs of the services the node serves and its local-address pools; routes
//! received from upstreams become the dataplane's route table (with ECMP). SIGTERM or SIGINT shut down
//! gracefully: the routes are re-announced with the GRACEFUL_SHUTDOWN community (RFC 8326), the node waits
//! `shutdown_wait`, then closes its sessions with a shutdown communication and stops the dataplane.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anylb_conf::{Family, NodeConfig};
use anylb_dataplane::dpdk::{Config, PortSpec, Runtime};
use anylb_dataplane::snapshot::{Builder, Overrides};
use anylb_healthcheck::monitor::Monitor;

use crate::daemon::{self, Node};
use anylb_routing::bfd;
use anylb_routing::rib::Announcement;
use anylb_routing::speaker::{NeighborConfig, Speaker, SpeakerConfig};
use clap::Args;
use ipnet::IpNet;

/// Arguments of `anylb run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Topology file.
    #[arg(long)]
    config: PathBuf,
    /// This node's name in the topology.
    #[arg(long)]
    node: String,
    /// Seconds between counter lines in the log (0: none).
    #[arg(long, default_value_t = 10)]
    stats_interval: u64,
    /// Do not create TAP exception interfaces (the kernel then sees only what it sees by itself).
    #[arg(long)]
    no_tap: bool,
}

/// Starts a BFD session for every BGP neighbour that asks for one (see [`Speaker::attach_bfd`]).
fn start_bfd(cfg: &NodeConfig, speaker: &Speaker) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(bgp) = &cfg.node.bgp else {
        return Vec::new();
    };
    let mut peers = Vec::new();
    for n in &bgp.neighbors {
        let Some(b) = n.bfd.filter(|b| b.enabled) else {
            continue;
        };
        // Our address on the neighbour's subnet, unless configured.
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
            tracing::warn!(neighbor = %n.address, "BFD: no local address on the neighbour's subnet; not started");
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
    speaker.attach_bfd(peers, 0x616c_0001)
}

/// The speaker configuration of a node, if it has BGP; an error names the neighbour whose password file
/// cannot be used. A relative password-file path is taken from `base`, the topology file's directory.
pub fn speaker_config(cfg: &NodeConfig, base: &std::path::Path) -> Result<Option<SpeakerConfig>, String> {
    let Some(bgp) = cfg.node.bgp.as_ref() else {
        return Ok(None);
    };
    let Some(local_asn) = bgp.asn else {
        return Ok(None);
    };
    let mut neighbors = Vec::new();
    for n in &bgp.neighbors {
        let Some(remote_asn) = n.asn else { continue };
        let md5_key = match &n.password_file {
            Some(f) => Some(
                crate::speak_cmd::read_password_file(&base.join(f))
                    .map_err(|e| format!("BGP neighbour {}: {e}", n.address))?,
            ),
            None => None,
        };
        let fams = n.families();
        neighbors.push(NeighborConfig {
            address: n.address,
            remote_asn,
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
            md5_key,
            gtsm_hops: n.gtsm.then(|| n.multihop_ttl.unwrap_or(1)),
        });
    }
    let port = bgp.listen_port();
    Ok(Some(SpeakerConfig {
        local_asn,
        router_id: cfg.node.router_id,
        listen: (port != 0).then(|| SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port)),
        graceful_restart: bgp
            .graceful_restart
            .filter(|g| g.enabled)
            .map(|g| g.restart_time.map_or(120, |t| t.as_secs().min(4095) as u16)),
        restarting: false,
        neighbors,
    }))
}

/// What the node announces: every served VIP as a host route with the service's communities, and every
/// local-address pool marked for announcement.
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

/// Whether `p` is the host route of a VIP of one of the node's services.
pub fn is_vip(cfg: &NodeConfig, p: &IpNet) -> bool {
    cfg.services.iter().any(|s| IpNet::from(s.vip) == *p)
}

/// Runs a node until a signal asks it to stop.
pub fn run(a: RunArgs) -> ExitCode {
    let topo = match anylb_conf::load_file(&a.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let Some(cfg) = topo.resolve(&a.node) else {
        eprintln!("error: {}: no node named {:?}", a.config.display(), a.node);
        return ExitCode::from(1);
    };
    let dp = &cfg.node.dataplane;
    let mut eal_args = dp.eal_args.clone();
    if !eal_args.iter().any(|x| x.starts_with("--file-prefix")) {
        eal_args.push(format!(
            "--file-prefix=anylb-{}-{}",
            cfg.node.name,
            std::process::id()
        ));
    }
    let rcfg = Config {
        workers: dp.workers.clone(),
        main_core: dp.main_core.unwrap_or(0),
        eal_args,
        ports: dp
            .ports
            .iter()
            .map(|p| PortSpec {
                name: p.name.clone(),
                device: p.device.clone(),
                mtu: p.mtu(),
                addresses: p.addresses.iter().map(|n| (n.addr(), n.prefix_len())).collect(),
                exception: p.exception.unwrap_or_default(),
            })
            .collect(),
        descriptors: 1024,
        mbufs: 16383,
        exception_taps: !a.no_tap,
    };
    let workers = dp.workers.len();
    let mut builder = Builder::default();
    let mut macs = Vec::new();
    let runtime = match Runtime::start(&rcfg, |m| {
        macs = m.to_vec();
        builder
            .build(&cfg, m, workers, &Overrides::default())
            .map_err(|e| e.to_string())
    }) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("error: cannot start the dataplane of {}: {e}", cfg.node.name);
            return ExitCode::from(1);
        }
    };
    tracing::info!(node = %cfg.node.name, workers, steering = ?runtime.steering(), "dataplane running");
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        let base = a.config.parent().unwrap_or(std::path::Path::new("."));
        let speaker = match speaker_config(&cfg, base) {
            Ok(Some(sc)) => match Speaker::start(sc).await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("error: cannot start the BGP speaker: {e}");
                    return ExitCode::from(1);
                }
            },
            Ok(None) => None,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        let bfd = speaker.as_ref().map(|s| start_bfd(&cfg, s));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let node = Arc::new(Node {
            config_path: a.config.clone(),
            cfg: Mutex::new(cfg.clone()),
            started: std::time::Instant::now(),
            runtime: runtime.clone(),
            speaker,
            monitor: Mutex::new(Monitor::start(&cfg)),
            announced: Mutex::new(BTreeMap::new()),
            drained: AtomicBool::new(false),
            forwarding: AtomicBool::new(true),
            control: tx,
        });
        let socket = cfg.node.control_socket();
        let api = tokio::spawn(daemon::serve_api(node.clone(), socket.clone()));
        let metrics = cfg
            .node
            .metrics_listen
            .map(|addr| tokio::spawn(daemon::serve_metrics(node.clone(), addr)));
        daemon::control(node.clone(), rx, builder, macs, a.stats_interval).await;
        api.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        for t in bfd.into_iter().flatten() {
            t.abort();
        }
        let _ = std::fs::remove_file(&socket);
        ExitCode::SUCCESS
    });
    drop(rt);
    match Arc::try_unwrap(runtime) {
        Ok(r) => r.stop(),
        Err(still_shared) => drop(still_shared),
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_are_read_relative_to_the_topology_and_named_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("r1.key"), "s3cret\n").expect("write");
        let topology = |file: &str| {
            format!(
                r#"[cluster]
name = "c"
asn = 65010
[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
[nodes.dataplane]
workers = [1]
[[nodes.dataplane.ports]]
name = "up0"
device = "net_null0"
addresses = ["192.0.2.11/24"]
[nodes.bgp]
[[nodes.bgp.neighbors]]
address = "192.0.2.1"
asn = 65000
gtsm = true
password_file = "{file}"
"#
            )
        };
        let cfg = anylb_conf::load_str(&topology("r1.key"), "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .resolve("lb1")
            .expect("node");
        let sc = speaker_config(&cfg, dir.path()).expect("config").expect("bgp");
        let n = &sc.neighbors[0];
        assert_eq!(
            n.md5_key.as_ref().map(anylb_routing::speaker::Md5Key::bytes),
            Some(&b"s3cret"[..])
        );
        assert_eq!(n.gtsm_hops, Some(1));
        let cfg = anylb_conf::load_str(&topology("missing.key"), "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .resolve("lb1")
            .expect("node");
        let e = speaker_config(&cfg, dir.path()).expect_err("missing file");
        assert!(
            e.contains("BGP neighbour 192.0.2.1") && e.contains("missing.key"),
            "{e}"
        );
    }
}
