//! The node daemon's control plane: the loop that turns health, BGP and operator actions into dataplane
//! snapshots and BGP announcements, the control API on the node's Unix socket (mode 0660), and the Prometheus
//! `/metrics` listener.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anylb_conf::NodeConfig;
use anylb_dataplane::dpdk::Runtime;
use anylb_dataplane::snapshot::{Builder, Overrides};
use anylb_dataplane::stats::DropReason;
use anylb_healthcheck::monitor::{Key, Monitor};
use anylb_routing::rib::Announcement;
use anylb_routing::speaker::Speaker;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ipnet::IpNet;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::api;
use crate::run_cmd::{announcements, is_vip};

/// Requests from the API to the control loop.
#[derive(Debug)]
pub enum Control {
    /// Re-read the topology and apply the difference.
    Reload(oneshot::Sender<Result<Vec<String>, String>>),
    /// Drain or undrain the whole node.
    NodeDrain(bool, oneshot::Sender<String>),
    /// Something changed; rebuild.
    Dirty,
}

/// Everything the API reads.
#[derive(Debug)]
pub struct Node {
    /// Topology file.
    pub config_path: PathBuf,
    /// Current resolved configuration.
    pub cfg: Mutex<NodeConfig>,
    /// Start time.
    pub started: Instant,
    /// The dataplane.
    pub runtime: Arc<Runtime>,
    /// The BGP speaker.
    pub speaker: Option<Speaker>,
    /// The health monitor (replaced on reload).
    pub monitor: Mutex<Monitor>,
    /// What is announced now.
    pub announced: Mutex<BTreeMap<IpNet, Announcement>>,
    /// Drained by hand.
    pub drained: AtomicBool,
    /// Workers forwarding.
    pub forwarding: AtomicBool,
    /// To the control loop.
    pub control: mpsc::UnboundedSender<Control>,
}

type Shared = Arc<Node>;

fn monitor(n: &Node) -> Option<Monitor> {
    n.monitor.lock().ok().map(|m| m.clone())
}

fn err(code: StatusCode, e: impl ToString) -> Response {
    (code, Json(api::ApiError { error: e.to_string() })).into_response()
}

async fn status(State(n): State<Shared>) -> Json<api::Status> {
    let cfg = n
        .cfg
        .lock()
        .map(|c| (c.cluster.clone(), c.node.name.clone()))
        .unwrap_or_default();
    Json(api::Status {
        cluster: cfg.0,
        node: cfg.1,
        uptime_secs: n.started.elapsed().as_secs(),
        workers: n.runtime.stats().len(),
        steering: format!("{:?}", n.runtime.steering()),
        forwarding: n.forwarding.load(Ordering::Relaxed),
        drained: n.drained.load(Ordering::Relaxed),
        config: n.config_path.display().to_string(),
    })
}

async fn bgp_neighbors(State(n): State<Shared>) -> Response {
    match &n.speaker {
        Some(s) => Json(s.neighbors()).into_response(),
        None => Json(Vec::<serde_json::Value>::new()).into_response(),
    }
}

fn community(c: u32) -> String {
    anylb_conf::Community(c).to_string()
}

async fn advertised(State(n): State<Shared>) -> Json<Vec<api::AdvertisedRoute>> {
    let v = n.speaker.as_ref().map(Speaker::advertised).unwrap_or_default();
    Json(
        v.into_iter()
            .map(|(p, a)| api::AdvertisedRoute {
                prefix: p.to_string(),
                communities: a.communities.iter().map(|c| community(*c)).collect(),
                large_communities: a
                    .large_communities
                    .iter()
                    .map(|(g, x, y)| format!("{g}:{x}:{y}"))
                    .collect(),
                med: a.med,
            })
            .collect(),
    )
}

#[derive(Debug, Deserialize)]
struct NeighborQ {
    neighbor: Option<IpAddr>,
}

async fn received(State(n): State<Shared>, Query(q): Query<NeighborQ>) -> Json<Vec<api::ReceivedRoute>> {
    let v = n
        .speaker
        .as_ref()
        .map(|s| s.received(q.neighbor))
        .unwrap_or_default();
    Json(
        v.into_iter()
            .map(|(nb, p, r)| api::ReceivedRoute {
                neighbor: nb.to_string(),
                prefix: p.to_string(),
                next_hop: r.next_hop.to_string(),
                as_path: r
                    .attrs
                    .as_path
                    .0
                    .iter()
                    .map(|s| match s {
                        anylb_routing::packet::Segment::Sequence(v) => {
                            v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
                        }
                        anylb_routing::packet::Segment::Set(v) => format!(
                            "{{{}}}",
                            v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                local_pref: r.attrs.local_pref,
                med: r.attrs.med,
            })
            .collect(),
    )
}

async fn routes(State(n): State<Shared>) -> Json<Vec<api::FibRoute>> {
    let Some(snap) = n.runtime.current() else {
        return Json(Vec::new());
    };
    let mut v: Vec<api::FibRoute> = snap
        .routes
        .routes()
        .map(|(len, key, r)| {
            let v4 = anylb_dataplane::flow::is_v4(&key);
            let (addr, plen) = if v4 {
                (anylb_dataplane::flow::to_ip(&key), len - 96)
            } else {
                (IpAddr::V6(key.into()), len)
            };
            api::FibRoute {
                prefix: format!("{addr}/{plen}"),
                next_hops: r
                    .hops
                    .iter()
                    .map(|h| {
                        let dev = snap
                            .ports
                            .get(usize::from(h.port))
                            .map_or_else(|| h.port.to_string(), |p| p.name.clone());
                        match h.via {
                            Some(v) => format!("via {} dev {dev}", anylb_dataplane::flow::to_ip(&v)),
                            None => format!("dev {dev}"),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    v.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    Json(v)
}

async fn services(State(n): State<Shared>) -> Json<Vec<api::ServiceRow>> {
    let cfg = match n.cfg.lock() {
        Ok(c) => c.clone(),
        Err(_) => return Json(Vec::new()),
    };
    let health = monitor(&n).map(|m| m.services()).unwrap_or_default();
    let announced = n.announced.lock().map(|a| a.clone()).unwrap_or_default();
    Json(
        cfg.services
            .iter()
            .map(|s| {
                let h = health.iter().find(|x| x.name == s.name);
                api::ServiceRow {
                    name: s.name.clone(),
                    vip: s.vip.to_string(),
                    port: s.port.to_string(),
                    protocol: format!("{:?}", s.protocol).to_lowercase(),
                    scheduler: format!("{:?}", s.scheduler).to_lowercase(),
                    forwarding: format!("{:?}", s.forwarding).to_lowercase(),
                    healthy: h.map_or(0, |x| x.healthy),
                    backends: s.backends.len() as u32,
                    min_healthy: s.min_healthy(),
                    announced: announced.contains_key(&IpNet::from(s.vip)),
                }
            })
            .collect(),
    )
}

#[derive(Debug, Deserialize)]
struct ServiceQ {
    service: Option<String>,
    limit: Option<usize>,
}

async fn backends(State(n): State<Shared>, Query(q): Query<ServiceQ>) -> Response {
    let Some(m) = monitor(&n) else {
        return err(StatusCode::INTERNAL_SERVER_ERROR, "no monitor");
    };
    if let Some(s) = &q.service {
        let known = n
            .cfg
            .lock()
            .is_ok_and(|c| c.services.iter().any(|x| &x.name == s));
        if !known {
            return err(StatusCode::NOT_FOUND, format!("no service named {s:?}"));
        }
    }
    Json(m.backends(q.service.as_deref())).into_response()
}

async fn neighbors(State(n): State<Shared>) -> Response {
    let rt = n.runtime.clone();
    // The workers answer between bursts; do not hold an executor thread meanwhile.
    match tokio::task::spawn_blocking(move || rt.neighbors()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn conns(State(n): State<Shared>, Query(q): Query<ServiceQ>) -> Response {
    let limit = q.limit.unwrap_or(100).min(100_000);
    let rt = n.runtime.clone();
    let vips: Option<Vec<(IpAddr, String)>> = match &q.service {
        Some(s) => {
            let cfg = n.cfg.lock().ok().map(|c| c.clone());
            let Some(svc) = cfg.and_then(|c| c.services.iter().find(|x| &x.name == s).cloned()) else {
                return err(StatusCode::NOT_FOUND, format!("no service named {s:?}"));
            };
            Some(vec![(svc.vip, svc.port.to_string())])
        }
        None => None,
    };
    let want = if vips.is_some() { 100_000 } else { limit };
    let list = tokio::task::spawn_blocking(move || rt.connections(want))
        .await
        .unwrap_or_default();
    let list: Vec<_> = list
        .into_iter()
        .filter(|c| {
            vips.as_ref().is_none_or(|v| {
                v.iter().any(|(ip, port)| {
                    c.vip.ip() == *ip && (port == "all" || *port == c.vip.port().to_string())
                })
            })
        })
        .take(limit)
        .collect();
    Json(list).into_response()
}

fn stats_value(s: &anylb_dataplane::stats::Stats) -> serde_json::Value {
    serde_json::json!({
        "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes, "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes, "fast_path": s.fast_path,
        "to_kernel": s.to_kernel, "redirected": s.redirected, "peer_forwarded": s.peer_forwarded,
        "new_connections": s.new_connections,
        "expired_connections": s.expired_connections, "stack_replies": s.stack_replies, "icmp_errors": s.icmp_errors,
        "drops": s.total_drops(),
    })
}

async fn stats(State(n): State<Shared>) -> Json<api::Stats> {
    let per = n.runtime.stats();
    let mut total = anylb_dataplane::stats::Stats::default();
    for s in &per {
        total.add(s);
    }
    Json(api::Stats {
        workers: per.iter().map(stats_value).collect(),
        total: stats_value(&total),
        drops: DropReason::ALL
            .iter()
            .map(|r| (r.name().to_owned(), total.drops_of(*r)))
            .collect(),
        ports: n
            .runtime
            .ports()
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect(),
        tx_failed: n.runtime.tx_failed(),
    })
}

async fn drain_backend(State(n): State<Shared>, Json(d): Json<api::DrainBackend>) -> Response {
    let Some(m) = monitor(&n) else {
        return err(StatusCode::INTERNAL_SERVER_ERROR, "no monitor");
    };
    let key = Key {
        service: d.service.clone(),
        address: d.address,
        port: d.port,
    };
    if !m.set_drained(&key, d.drained) {
        return err(
            StatusCode::NOT_FOUND,
            format!("no backend {}:{} in service {:?}", d.address, d.port, d.service),
        );
    }
    let _ = n.control.send(Control::Dirty);
    let what = if d.drained { "drained" } else { "undrained" };
    Json(api::Done {
        message: format!("backend {}:{} of {} {what}", d.address, d.port, d.service),
        details: vec![],
    })
    .into_response()
}

async fn drain_node(State(n): State<Shared>, Json(d): Json<api::DrainNode>) -> Response {
    let (tx, rx) = oneshot::channel();
    if n.control.send(Control::NodeDrain(d.drained, tx)).is_err() {
        return err(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    }
    match rx.await {
        Ok(m) => Json(api::Done {
            message: m,
            details: vec![],
        })
        .into_response(),
        Err(_) => err(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    }
}

async fn reload(State(n): State<Shared>) -> Response {
    let (tx, rx) = oneshot::channel();
    if n.control.send(Control::Reload(tx)).is_err() {
        return err(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    }
    match rx.await {
        Ok(Ok(changes)) => {
            let message = if changes.is_empty() {
                "no changes".to_owned()
            } else {
                format!("{} changes applied", changes.len())
            };
            Json(api::Done {
                message,
                details: changes,
            })
            .into_response()
        }
        Ok(Err(e)) => err(StatusCode::BAD_REQUEST, e),
        Err(_) => err(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    }
}

/// The API router.
pub fn router(n: Shared) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/bgp/neighbors", get(bgp_neighbors))
        .route("/v1/bgp/routes/advertised", get(advertised))
        .route("/v1/bgp/routes/received", get(received))
        .route("/v1/routes", get(routes))
        .route("/v1/services", get(services))
        .route("/v1/backends", get(backends))
        .route("/v1/conns", get(conns))
        .route("/v1/neighbors", get(neighbors))
        .route("/v1/stats", get(stats))
        .route("/v1/backends/drain", post(drain_backend))
        .route("/v1/node/drain", post(drain_node))
        .route("/v1/reload", post(reload))
        .with_state(n)
}

/// Serves the API on the node's Unix socket.
pub async fn serve_api(n: Shared, path: PathBuf) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %path.display(), "control API listening");
    axum::serve(l, router(n)).await
}

/// Prometheus metrics in the text exposition format.
pub fn metrics_text(n: &Node) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let per = n.runtime.stats();
    let _ = writeln!(
        o,
        "# HELP anylb_packets_total Frames by worker and direction.\n# TYPE anylb_packets_total counter"
    );
    for (w, s) in per.iter().enumerate() {
        let _ = writeln!(
            o,
            "anylb_packets_total{{worker=\"{w}\",dir=\"rx\"}} {}",
            s.rx_packets
        );
        let _ = writeln!(
            o,
            "anylb_packets_total{{worker=\"{w}\",dir=\"tx\"}} {}",
            s.tx_packets
        );
    }
    let _ = writeln!(
        o,
        "# HELP anylb_bytes_total Bytes by worker and direction.\n# TYPE anylb_bytes_total counter"
    );
    for (w, s) in per.iter().enumerate() {
        let _ = writeln!(o, "anylb_bytes_total{{worker=\"{w}\",dir=\"rx\"}} {}", s.rx_bytes);
        let _ = writeln!(o, "anylb_bytes_total{{worker=\"{w}\",dir=\"tx\"}} {}", s.tx_bytes);
    }
    let _ = writeln!(
        o,
        "# HELP anylb_drops_total Dropped frames by worker and reason.\n# TYPE anylb_drops_total counter"
    );
    for (w, s) in per.iter().enumerate() {
        for r in DropReason::ALL {
            let _ = writeln!(
                o,
                "anylb_drops_total{{worker=\"{w}\",reason=\"{}\"}} {}",
                r.name(),
                s.drops_of(r)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP anylb_connections_total Connections created.\n# TYPE anylb_connections_total counter"
    );
    for (w, s) in per.iter().enumerate() {
        let _ = writeln!(
            o,
            "anylb_connections_total{{worker=\"{w}\"}} {}",
            s.new_connections
        );
    }
    let _ = writeln!(
        o,
        "# HELP anylb_fast_path_total Frames forwarded by the established fast path.\n# TYPE anylb_fast_path_total counter"
    );
    for (w, s) in per.iter().enumerate() {
        let _ = writeln!(o, "anylb_fast_path_total{{worker=\"{w}\"}} {}", s.fast_path);
    }
    let _ = writeln!(
        o,
        "# HELP anylb_peer_forwarded_total TCP segments of unknown flows handed to another node.\n# TYPE anylb_peer_forwarded_total counter"
    );
    for (w, s) in per.iter().enumerate() {
        let _ = writeln!(
            o,
            "anylb_peer_forwarded_total{{worker=\"{w}\"}} {}",
            s.peer_forwarded
        );
    }
    let _ = writeln!(
        o,
        "# HELP anylb_connections Connections in the table.\n# TYPE anylb_connections gauge"
    );
    for (w, s) in per.iter().enumerate() {
        let _ = writeln!(
            o,
            "anylb_connections{{worker=\"{w}\"}} {}",
            s.new_connections.saturating_sub(s.expired_connections)
        );
    }
    if let Some(sp) = &n.speaker {
        let _ = writeln!(o, "# HELP anylb_bgp_session_established 1 when the BGP session is Established.\n# TYPE anylb_bgp_session_established gauge");
        for nb in sp.neighbors() {
            let up = u8::from(nb.state == anylb_routing::fsm::State::Established);
            let _ = writeln!(
                o,
                "anylb_bgp_session_established{{neighbor=\"{}\"}} {up}",
                nb.address
            );
        }
        let _ = writeln!(
            o,
            "# HELP anylb_bgp_prefixes Prefixes received and sent.\n# TYPE anylb_bgp_prefixes gauge"
        );
        for nb in sp.neighbors() {
            let _ = writeln!(
                o,
                "anylb_bgp_prefixes{{neighbor=\"{}\",dir=\"received\"}} {}",
                nb.address, nb.prefixes_rcvd
            );
            let _ = writeln!(
                o,
                "anylb_bgp_prefixes{{neighbor=\"{}\",dir=\"sent\"}} {}",
                nb.address, nb.prefixes_sent
            );
        }
    }
    if let Some(m) = monitor(n) {
        let _ = writeln!(o, "# HELP anylb_backend_up 1 when the backend passes its health check and is not drained.\n# TYPE anylb_backend_up gauge");
        for b in m.backends(None) {
            let _ = writeln!(
                o,
                "anylb_backend_up{{service=\"{}\",backend=\"{}:{}\"}} {}",
                b.key.service,
                b.key.address,
                b.key.port,
                u8::from(b.effective_weight > 0)
            );
        }
        let _ = writeln!(o, "# HELP anylb_service_announced 1 when the service's VIP is announced.\n# TYPE anylb_service_announced gauge");
        let announced = n.announced.lock().map(|a| a.clone()).unwrap_or_default();
        for s in m.services() {
            let _ = writeln!(
                o,
                "anylb_service_announced{{service=\"{}\"}} {}",
                s.name,
                u8::from(announced.contains_key(&IpNet::from(s.vip)))
            );
        }
    }
    o
}

/// Serves `/metrics` on TCP.
pub async fn serve_metrics(n: Shared, addr: SocketAddr) -> std::io::Result<()> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(n): State<Shared>| async move { metrics_text(&n) }),
        )
        .with_state(n);
    axum::serve(l, app).await
}

/// The control loop: health checks, BGP, routes and weights into the dataplane, drains, reloads, shutdown.
pub async fn control(
    n: Shared,
    mut rx: mpsc::UnboundedReceiver<Control>,
    mut builder: Builder,
    macs: Vec<[u8; 6]>,
    stats_interval: u64,
) {
    let mut routes: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
    let mut fib = n.speaker.as_ref().map(Speaker::routes);
    let mut health = monitor(&n).map(|m| m.changes());
    let mut stats_tick = tokio::time::interval(Duration::from_secs(stats_interval.max(1)));
    let mut self_check = tokio::time::interval(Duration::from_millis(500));
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
                match reload_topology(&n) {
                    Ok(changes) => {
                        tracing::info!(changes = changes.len(), "reloaded on SIGHUP: {}", changes.join("; "));
                        health = monitor(&n).map(|m| m.changes());
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
                    let r = reload_topology(&n);
                    if r.is_ok() {
                        health = monitor(&n).map(|m| m.changes());
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
            _ = self_check.tick() => {
                // A worker that stopped publishing for a second has stopped forwarding: withdraw everything.
                let ok = n.runtime.heartbeat_ages_ms().iter().all(|&age| age < 1000);
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
    tracing::info!("stopping");
    if n.speaker.is_some() && !n.drained.load(Ordering::Relaxed) {
        graceful_withdraw(&n).await;
    }
    if let (Some(s), Ok(cfg)) = (&n.speaker, n.cfg.lock().map(|c| c.node.name.clone())) {
        s.stop(&format!("anylb node {cfg} shutting down"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if let Some(m) = monitor(&n) {
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
    let m = monitor(n);
    let ov = Overrides {
        weights: m.as_ref().map(Monitor::weights).unwrap_or_default(),
        routes: routes.iter().map(|(p, h)| (*p, h.clone())).collect(),
    };
    match builder.build(&cfg, macs, n.runtime.stats().len(), &ov) {
        Ok(snap) => n.runtime.publish(snap),
        Err(e) => tracing::warn!(error = %e, "cannot rebuild the dataplane configuration"),
    }
    let Some(sp) = &n.speaker else { return };
    let services = m.map(|m| m.services()).unwrap_or_default();
    let live = n.forwarding.load(Ordering::Relaxed) && !n.drained.load(Ordering::Relaxed);
    let want: BTreeMap<IpNet, Announcement> = announcements(&cfg)
        .into_iter()
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

/// Re-reads the topology and applies what changed for this node; changes that need a restart are refused.
fn reload_topology(n: &Node) -> Result<Vec<String>, String> {
    let topo = anylb_conf::load_file(&n.config_path).map_err(|e| e.to_string())?;
    let old = n.cfg.lock().map_err(|e| e.to_string())?.clone();
    let new = topo
        .resolve(&old.node.name)
        .ok_or_else(|| format!("the new topology has no node {:?}", old.node.name))?;
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
        return Err(format!(
            "these changes need a restart of the node: {}",
            refused.join("; ")
        ));
    }
    let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
    if changes.is_empty() {
        return Ok(text);
    }
    // Health state of unchanged backends carries over; connections keep their translations.
    let prev = monitor(n);
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
