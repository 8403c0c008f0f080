//! The control loop: health checks, BGP, routes and weights into the dataplane, drains, reloads, shutdown.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anylb_dataplane::snapshot::{Builder, Overrides};
use anylb_healthcheck::monitor::Monitor;
use anylb_routing::config::{announcements, is_vip, takeover_announcements};
use anylb_routing::rib::Announcement;
use anylb_routing::speaker::Speaker;
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::selfcheck::SelfCheck;
use super::{Control, Node};

/// How often the control loop samples the workers' heartbeats.
const SELF_CHECK_EVERY: Duration = Duration::from_millis(500);

/// The control loop: health checks, BGP, routes and weights into the dataplane, drains, reloads, shutdown.
pub async fn run(
    n: Arc<Node>,
    mut rx: mpsc::UnboundedReceiver<Control>,
    mut builder: Builder,
    macs: Vec<[u8; 6]>,
    stats_interval: u64,
) {
    let mut routes: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
    let mut fib = n.speaker.as_ref().map(Speaker::routes);
    let mut health = n.monitor().map(|m| m.changes());
    let mut takeover = n.sync.as_ref().map(|s| s.takeover.clone());
    let mut stats_tick = tokio::time::interval(Duration::from_secs(stats_interval.max(1)));
    let mut self_check = tokio::time::interval(SELF_CHECK_EVERY);
    self_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = SelfCheck::new(SELF_CHECK_EVERY, Duration::from_secs(1));
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut hup) = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
        (Ok(t), Ok(h)) => (t, h),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install a signal handler");
            return;
        }
    };
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            apply(&n, &mut builder, &macs, &routes);
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                // SIGHUP reloads the topology, as `anylb reload` does.
                match reload_topology(&n, &mut builder) {
                    Ok(changes) => {
                        tracing::info!(changes = changes.len(), "reloaded on SIGHUP: {}", changes.join("; "));
                        health = n.monitor().map(|m| m.changes());
                        dirty = true;
                    }
                    Err(e) => tracing::error!(error = %e, "reload on SIGHUP refused; the running configuration is unchanged"),
                }
            }
            msg = rx.recv() => match msg {
                None => break,
                Some(Control::Dirty) => dirty = true,
                Some(Control::NodeDrain(on, reply)) => {
                    if on {
                        graceful_withdraw(&n).await;
                        n.drained.store(true, Ordering::Relaxed);
                        let _ = reply.send("node drained: routes withdrawn after the graceful-shutdown period".into());
                    } else {
                        n.drained.store(false, Ordering::Relaxed);
                        let _ = reply.send("node undrained: routes announced again".into());
                    }
                    dirty = true;
                }
                Some(Control::Reload(reply)) => {
                    let r = reload_topology(&n, &mut builder);
                    if r.is_ok() {
                        health = n.monitor().map(|m| m.changes());
                        dirty = true;
                    }
                    let _ = reply.send(r);
                }
            },
            changed = async { match fib.as_mut() { Some(f) => f.changed().await, None => std::future::pending().await } } => {
                if changed.is_err() {
                    fib = None;
                    continue;
                }
                routes = fib.as_ref().map(|f| f.borrow().clone()).unwrap_or_default();
                tracing::info!(routes = routes.len(), "received routes changed; updating the dataplane");
                dirty = true;
            }
            changed = async { match health.as_mut() { Some(h) => h.changed().await, None => std::future::pending().await } } => {
                if changed.is_ok() {
                    dirty = true;
                }
            }
            changed = async { match takeover.as_mut() { Some(t) => t.changed().await, None => std::future::pending().await } } => {
                // A lost node's local addresses taken over or released, or this node ready to announce.
                match changed {
                    Ok(()) => dirty = true,
                    Err(_) => takeover = None,
                }
            }
            _ = self_check.tick() => {
                // A worker that stopped publishing for a second has stopped forwarding: withdraw everything.
                let Some(ok) = check.observe(std::time::Instant::now(), &n.runtime.heartbeats()) else {
                    continue;
                };
                if ok != n.forwarding.load(Ordering::Relaxed) {
                    tracing::warn!(forwarding = ok, "dataplane self-check changed");
                    n.forwarding.store(ok, Ordering::Relaxed);
                    dirty = true;
                }
            }
            _ = stats_tick.tick(), if stats_interval > 0 => {
                for (i, s) in n.runtime.stats().iter().enumerate() {
                    tracing::info!(worker = i, rx = s.rx_packets, tx = s.tx_packets, kernel = s.to_kernel, new_conns = s.new_connections,
                        drops = s.total_drops(), redirected = s.redirected, "worker counters");
                }
            }
        }
    }
    shutdown(&n).await;
}

/// Withdraws the routes gracefully, closes the BGP sessions and stops the health checks.
async fn shutdown(n: &Node) {
    tracing::info!("stopping");
    if n.speaker.is_some() && !n.drained.load(Ordering::Relaxed) {
        graceful_withdraw(n).await;
    }
    if let (Some(s), Ok(cfg)) = (&n.speaker, n.cfg.lock().map(|c| c.node.name.clone())) {
        s.stop(&format!("anylb node {cfg} shutting down"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The other nodes serve this one's connections from now on, without waiting for its heartbeats to stop.
    if let Some(s) = &n.sync {
        s.leave().await;
    }
    if let Some(m) = n.monitor() {
        m.stop();
    }
    for (i, s) in n.runtime.stats().iter().enumerate() {
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
}

/// Rebuilds the dataplane snapshot and brings the announcements in line with health, drains and self-check.
fn apply(n: &Node, builder: &mut Builder, macs: &[[u8; 6]], routes: &BTreeMap<IpNet, Vec<IpAddr>>) {
    let Ok(cfg) = n.cfg.lock().map(|c| c.clone()) else {
        return;
    };
    let m = n.monitor();
    let takeover = n.sync.as_ref().map(|s| s.takeover.borrow().clone());
    let ov = Overrides {
        weights: m.as_ref().map(Monitor::weights).unwrap_or_default(),
        routes: routes.iter().map(|(p, h)| (*p, h.clone())).collect(),
        adopted: takeover.as_ref().map(|t| t.adopted.clone()).unwrap_or_default(),
        released: takeover.as_ref().map(|t| t.released.clone()).unwrap_or_default(),
        withhold_lips: takeover.as_ref().is_some_and(|t| t.withhold_lips),
    };
    match builder.build(&cfg, macs, n.runtime.stats().len(), &ov) {
        Ok(snap) => n.runtime.publish(snap),
        Err(e) => tracing::warn!(error = %e, "cannot rebuild the dataplane configuration"),
    }
    let Some(sp) = &n.speaker else { return };
    let services = m.map(|m| m.services()).unwrap_or_default();
    // With connection sync, a node announces once it has its connections back and its local addresses are its own.
    let live = n.forwarding.load(Ordering::Relaxed)
        && !n.drained.load(Ordering::Relaxed)
        && takeover.as_ref().is_none_or(|t| t.ready);
    let adopted: Vec<IpNet> = ov.adopted.iter().map(|(p, _, _)| *p).collect();
    let want: BTreeMap<IpNet, Announcement> = announcements(&cfg)
        .into_iter()
        .chain(takeover_announcements(&cfg, &adopted))
        .filter(|(p, _)| {
            live && (!is_vip(&cfg, p) || services.iter().any(|s| IpNet::from(s.vip) == *p && s.announce))
        })
        .collect();
    let Ok(mut announced) = n.announced.lock() else {
        return;
    };
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
    *announced = want;
}

/// RFC 8326: re-announce everything with GRACEFUL_SHUTDOWN, wait, then withdraw.
async fn graceful_withdraw(n: &Node) {
    let Some(sp) = &n.speaker else { return };
    let wait = n
        .cfg
        .lock()
        .ok()
        .and_then(|c| c.node.bgp.as_ref().map(|b| b.shutdown_wait().get()))
        .unwrap_or(Duration::ZERO);
    let current = n.announced.lock().map(|a| a.clone()).unwrap_or_default();
    if !wait.is_zero() && !current.is_empty() {
        tracing::info!(wait = ?wait, "graceful shutdown: announcing with the GRACEFUL_SHUTDOWN community");
        for (p, ann) in &current {
            let mut g = ann.clone();
            g.communities.push(anylb_conf::Community::GRACEFUL_SHUTDOWN.0);
            sp.announce(&[*p], &g);
        }
        tokio::time::sleep(wait).await;
    }
    let all: Vec<IpNet> = current.keys().copied().collect();
    sp.withdraw(&all);
    if let Ok(mut a) = n.announced.lock() {
        a.clear();
    }
}

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The topology file does not load (every error with its location).
    #[error("{0}")]
    Topology(#[from] anylb_conf::Diagnostics),
    /// The node's name is gone from the topology.
    #[error("the new topology has no node {0:?}")]
    NoNode(String),
    /// Changes a running node cannot take.
    #[error("these changes need a restart of the node: {}", .0.join("; "))]
    NeedsRestart(Vec<String>),
    /// The node's state is unusable (a thread panicked holding it).
    #[error("the node's configuration is poisoned")]
    Poisoned,
    /// A key file of the new topology cannot be used.
    #[error("{0}")]
    Key(#[from] super::assemble::AssembleError),
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Re-reads the topology and applies what changed for this node (see [`apply_topology`]), counting the result.
fn reload_topology(n: &Node, builder: &mut Builder) -> Result<Vec<String>, ReloadError> {
    let r = apply_topology(n, builder);
    n.reloads[usize::from(r.is_err())].fetch_add(1, Ordering::Relaxed);
    r
}

/// Re-reads the topology (and the SYN cookies' key file: a new key rotates it) and applies what changed for
/// this node; changes that need a restart are refused.
fn apply_topology(n: &Node, builder: &mut Builder) -> Result<Vec<String>, ReloadError> {
    let topo = anylb_conf::load_file(&n.config_path)?;
    let old = n.cfg.lock().map_err(|_| ReloadError::Poisoned)?.clone();
    let new = topo
        .resolve(&old.node.name)
        .ok_or_else(|| ReloadError::NoNode(old.node.name.clone()))?;
    let changes = anylb_conf::diff::diff_resolved(&old, &new);
    let refused: Vec<String> = changes
        .iter()
        .filter(|c| {
            c.needs_restart()
                || matches!(
                    c,
                    anylb_conf::Change::NeighborAdded { .. }
                        | anylb_conf::Change::NeighborRemoved { .. }
                        | anylb_conf::Change::NeighborChanged { .. }
                        | anylb_conf::Change::BgpChanged { .. }
                )
        })
        .map(ToString::to_string)
        .collect();
    if !refused.is_empty() {
        return Err(ReloadError::NeedsRestart(refused));
    }
    let cookie_secret = match &new.syn_proxy {
        Some(sp) => {
            let base = n.config_path.parent().unwrap_or(std::path::Path::new("."));
            Some(super::assemble::read_key(
                "cluster.syn_proxy.key_file",
                &base.join(&sp.key_file),
            )?)
        }
        None => None,
    };
    let mut text: Vec<String> = changes.iter().map(ToString::to_string).collect();
    if cookie_secret.is_some_and(|k| builder.set_cookie_secret(k, unix_ms())) {
        text.push("SYN cookie key rotated (the old key's cookies stay good for their time)".to_owned());
        tracing::info!("reload: SYN cookie key rotated");
    }
    if changes.is_empty() {
        return Ok(text);
    }
    // Health state of unchanged backends carries over; connections keep their translations.
    let prev = n.monitor();
    let fresh = Monitor::start_after(&new, prev.as_ref());
    if let Some(p) = prev {
        p.stop();
    }
    if let Ok(mut m) = n.monitor.lock() {
        *m = fresh;
    }
    if let Ok(mut c) = n.cfg.lock() {
        *c = new;
    }
    for t in &text {
        tracing::info!(change = %t, "reload");
    }
    Ok(text)
}
