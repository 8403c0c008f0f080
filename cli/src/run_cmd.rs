//! `anylb run`: one node of the cluster. Starts the node's DPDK dataplane from the topology and its BGP
//! speaker, which announces the VIPs of the services the node serves and its local-address pools; routes
//! received from upstreams become the dataplane's route table (with ECMP). SIGTERM or SIGINT shut down
//! gracefully: the routes are re-announced with the GRACEFUL_SHUTDOWN community (RFC 8326), the node waits
//! `shutdown_wait`, then closes its sessions with a shutdown communication and stops the dataplane.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anylb_conf::{Family, NodeConfig};
use anylb_dataplane::dpdk::{Config, PortSpec, Runtime};
use anylb_dataplane::snapshot::{Builder, Overrides};
use anylb_healthcheck::monitor::Monitor;
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

/// The speaker configuration of a node, if it has BGP.
pub fn speaker_config(cfg: &NodeConfig) -> Option<SpeakerConfig> {
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
            })
        })
        .collect();
    let port = bgp.listen_port();
    Some(SpeakerConfig {
        local_asn,
        router_id: cfg.node.router_id,
        listen: (port != 0).then(|| SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port)),
        graceful_restart: bgp
            .graceful_restart
            .filter(|g| g.enabled)
            .map(|g| g.restart_time.map_or(120, |t| t.as_secs().min(4095) as u16)),
        restarting: false,
        neighbors,
    })
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
fn is_vip(cfg: &NodeConfig, p: &IpNet) -> bool {
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
        Ok(r) => r,
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
            runtime.stop();
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(control(&a, &cfg, &runtime, &mut builder, &macs));
    runtime.stop();
    code
}

/// The control loop: health checks, BGP, route and weight updates into the dataplane, counters, shutdown.
async fn control(
    a: &RunArgs,
    cfg: &NodeConfig,
    runtime: &Runtime,
    builder: &mut Builder,
    macs: &[[u8; 6]],
) -> ExitCode {
    let speaker = match speaker_config(cfg) {
        Some(sc) => match Speaker::start(sc).await {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: cannot start the BGP speaker: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let monitor = Monitor::start(cfg);
    let all = announcements(cfg);
    let mut announced: BTreeMap<IpNet, Announcement> = BTreeMap::new();
    let mut routes: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
    let mut fib = speaker.as_ref().map(Speaker::routes);
    let mut health = monitor.changes();
    let mut stats_tick = tokio::time::interval(Duration::from_secs(a.stats_interval.max(1)));
    let mut self_check = tokio::time::interval(Duration::from_millis(500));
    let mut dataplane_ok = true;
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot install a signal handler: {e}");
            return ExitCode::from(1);
        }
    };
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            // The dataplane gets the health checker's weights and the routes BGP learnt.
            let ov = Overrides {
                weights: monitor.weights(),
                routes: routes.iter().map(|(p, h)| (*p, h.clone())).collect(),
            };
            match builder.build(cfg, macs, runtime.stats().len(), &ov) {
                Ok(snap) => runtime.publish(snap),
                Err(e) => tracing::warn!(error = %e, "cannot rebuild the dataplane configuration"),
            }
            // Announce a VIP while the dataplane forwards and one of its services has min_healthy backends up;
            // announce the pools while the dataplane forwards.
            if let Some(sp) = &speaker {
                let services = monitor.services();
                let want: BTreeMap<IpNet, Announcement> = all
                    .iter()
                    .filter(|(p, _)| {
                        dataplane_ok
                            && (!is_vip(cfg, p)
                                || services.iter().any(|s| IpNet::from(s.vip) == *p && s.announce))
                    })
                    .cloned()
                    .collect();
                for (p, ann) in &want {
                    if announced.get(p) != Some(ann) {
                        sp.announce(&[*p], ann);
                        tracing::info!(prefix = %p, "announce");
                    }
                }
                let gone: Vec<IpNet> = announced
                    .keys()
                    .filter(|p| !want.contains_key(*p))
                    .copied()
                    .collect();
                if !gone.is_empty() {
                    sp.withdraw(&gone);
                    for p in &gone {
                        tracing::info!(prefix = %p, "withdraw");
                    }
                }
                announced = want;
            }
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            changed = async { match fib.as_mut() { Some(f) => f.changed().await, None => std::future::pending().await } } => {
                if changed.is_err() {
                    fib = None;
                    continue;
                }
                routes = fib.as_ref().map(|f| f.borrow().clone()).unwrap_or_default();
                tracing::info!(routes = routes.len(), "received routes changed; updating the dataplane");
                dirty = true;
            }
            changed = health.changed() => {
                if changed.is_ok() {
                    dirty = true;
                }
            }
            _ = self_check.tick() => {
                // A worker that stopped publishing for a second has stopped forwarding: withdraw everything.
                let ok = runtime.heartbeat_ages_ms().iter().all(|&age| age < 1000);
                if ok != dataplane_ok {
                    tracing::warn!(forwarding = ok, "dataplane self-check changed");
                    dataplane_ok = ok;
                    dirty = true;
                }
            }
            _ = stats_tick.tick(), if a.stats_interval > 0 => {
                for (i, s) in runtime.stats().iter().enumerate() {
                    tracing::info!(worker = i, rx = s.rx_packets, tx = s.tx_packets, kernel = s.to_kernel, new_conns = s.new_connections,
                        drops = s.total_drops(), redirected = s.redirected, "worker counters");
                }
            }
        }
    }
    tracing::info!("stopping");
    if let Some(s) = &speaker {
        let wait = cfg
            .node
            .bgp
            .as_ref()
            .map_or(Duration::ZERO, |b| b.shutdown_wait().get());
        if !wait.is_zero() {
            tracing::info!(wait = ?wait, "graceful shutdown: announcing with the GRACEFUL_SHUTDOWN community");
            for (p, ann) in announced.iter() {
                let mut g = ann.clone();
                g.communities.push(anylb_conf::Community::GRACEFUL_SHUTDOWN.0);
                s.announce(&[*p], &g);
            }
            tokio::time::sleep(wait).await;
        }
        s.stop(&format!("anylb node {} shutting down", cfg.node.name));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (i, s) in runtime.stats().iter().enumerate() {
        tracing::info!(
            worker = i,
            rx = s.rx_packets,
            tx = s.tx_packets,
            new_conns = s.new_connections,
            drops = s.total_drops(),
            redirected = s.redirected,
            kernel = s.to_kernel,
            "final counters"
        );
    }
    ExitCode::SUCCESS
}
