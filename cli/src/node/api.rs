//! The control API on the node's Unix socket (mode 0660): JSON in and out, the types shared with the CLI in
//! [`crate::api`].

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anylb_dataplane::dpdk::ConnFilter;
use anylb_dataplane::stats::DropReason;
use anylb_healthcheck::monitor::Key;
use anylb_routing::speaker::Speaker;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ipnet::IpNet;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{Control, Node};
use crate::api;

type Shared = Arc<Node>;

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

async fn received(State(n): State<Shared>, Query(q): Query<NeighborQ>) -> Response {
    let v = match (&n.speaker, q.neighbor) {
        (Some(s), nb) => match s.received(nb) {
            Some(v) => v,
            None => {
                return err(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no BGP neighbour {}",
                        nb.map(|a| a.to_string()).unwrap_or_default()
                    ),
                )
            }
        },
        (None, Some(nb)) => {
            return err(
                StatusCode::NOT_FOUND,
                format!("no BGP neighbour {nb}: the node speaks no BGP"),
            )
        }
        (None, None) => Vec::new(),
    };
    Json(
        v.into_iter()
            .map(|r| api::ReceivedRoute {
                neighbor: r.neighbor.to_string(),
                prefix: r.prefix.to_string(),
                next_hop: r.route.next_hop.to_string(),
                stale: r.stale,
                as_path: r
                    .route
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
                local_pref: r.route.attrs.local_pref,
                med: r.route.attrs.med,
            })
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn bgp_summary(State(n): State<Shared>) -> Response {
    match &n.speaker {
        Some(s) => Json(s.summary()).into_response(),
        None => err(StatusCode::NOT_FOUND, "the node speaks no BGP"),
    }
}

async fn bfd(State(n): State<Shared>) -> Response {
    match &n.speaker {
        Some(s) => Json(s.bfd()).into_response(),
        None => Json(Vec::<serde_json::Value>::new()).into_response(),
    }
}

async fn cluster(State(n): State<Shared>) -> Response {
    match &n.sync {
        Some(s) => match s.view.lock() {
            Ok(v) => Json(v.clone()).into_response(),
            Err(_) => err(StatusCode::INTERNAL_SERVER_ERROR, "the sync view is poisoned"),
        },
        None => err(
            StatusCode::NOT_FOUND,
            "connection sync is off (no [cluster.sync] in the topology)",
        ),
    }
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
                origin: serde_json::to_value(r.origin)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
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
    let health = n.monitor().map(|m| m.services()).unwrap_or_default();
    let announced = n.announced.lock().map(|a| a.clone()).unwrap_or_default();
    let drained = n.drained.load(Ordering::Relaxed);
    let sessions_up = n.speaker.as_ref().map(|sp| {
        sp.neighbors()
            .iter()
            .filter(|nb| nb.state == anylb_routing::fsm::State::Established)
            .count()
    });
    let sync_waiting = n
        .sync
        .as_ref()
        .is_some_and(|s| s.view.lock().is_ok_and(|v| !v.ready));
    Json(
        cfg.services
            .iter()
            .map(|s| {
                let h = health.iter().find(|x| x.name == s.name);
                let healthy = h.map_or(0, |x| x.healthy);
                let is_announced = announced.contains_key(&IpNet::from(s.vip));
                let reason = match (is_announced, sessions_up) {
                    (_, None) => Some("no BGP neighbours configured".to_owned()),
                    (true, Some(0)) => Some("announced, but no BGP session is up".to_owned()),
                    (true, _) => None,
                    (false, _) if drained => Some("node drained".to_owned()),
                    (false, _) if healthy < s.min_healthy() => {
                        Some(format!("{healthy} healthy, min_healthy {}", s.min_healthy()))
                    }
                    (false, _) if sync_waiting => Some("waiting for the connection sync".to_owned()),
                    (false, _) => Some("not announced yet".to_owned()),
                };
                api::ServiceRow {
                    reason,
                    name: s.name.clone(),
                    vip: s.vip.to_string(),
                    port: s.port.port().unwrap_or(0),
                    protocol: format!("{:?}", s.protocol).to_lowercase(),
                    scheduler: format!("{:?}", s.scheduler).to_lowercase(),
                    forwarding: format!("{:?}", s.forwarding).to_lowercase(),
                    healthy: h.map_or(0, |x| x.healthy),
                    backends: s.backends.len() as u32,
                    min_healthy: s.min_healthy(),
                    announced: is_announced,
                }
            })
            .collect(),
    )
}

#[derive(Debug, Deserialize)]
struct ServiceQ {
    service: Option<String>,
}

async fn backends(State(n): State<Shared>, Query(q): Query<ServiceQ>) -> Response {
    let Some(m) = n.monitor() else {
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

/// The query of `GET /v1/conns`.
#[derive(Debug, Deserialize)]
struct ConnsQ {
    service: Option<String>,
    backend: Option<String>,
    client: Option<IpAddr>,
    state: Option<String>,
    limit: Option<usize>,
}

/// `ADDR`, `ADDR:PORT` or `[V6]:PORT`.
fn address_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    s.parse::<IpAddr>()
        .map(|a| (a, None))
        .or_else(|_| {
            s.parse::<std::net::SocketAddr>()
                .map(|a| (a.ip(), Some(a.port())))
        })
        .ok()
}

async fn conns(State(n): State<Shared>, Query(q): Query<ConnsQ>) -> Response {
    let limit = q.limit.unwrap_or(100).min(100_000);
    let vip = match &q.service {
        Some(s) => {
            let cfg = n.cfg.lock().ok().map(|c| c.clone());
            let Some(svc) = cfg.and_then(|c| c.services.iter().find(|x| &x.name == s).cloned()) else {
                return err(StatusCode::NOT_FOUND, format!("no service named {s:?}"));
            };
            Some((svc.vip, svc.port.port()))
        }
        None => None,
    };
    let backend = match q.backend.as_deref().map(|b| (b, address_port(b))) {
        Some((_, Some(b))) => Some(b),
        Some((b, None)) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("backend {b:?}: expected ADDRESS or ADDRESS:PORT"),
            )
        }
        None => None,
    };
    let filter = ConnFilter {
        vip,
        backend,
        client: q.client,
        state: q.state,
    };
    let rt = n.runtime.clone();
    let (list, matched) = tokio::task::spawn_blocking(move || rt.connections(filter, limit))
        .await
        .unwrap_or_default();
    Json(api::Conns {
        matched,
        connections: list
            .into_iter()
            .map(|c| api::Conn {
                worker: c.worker,
                proto: c.proto.to_owned(),
                client: c.client,
                vip: c.vip,
                local: c.local,
                backend: c.backend,
                state: c.state.to_owned(),
                expires_in_ms: c.expires_in_ms,
                syn_proxy: c.syn_proxy.map(str::to_owned),
            })
            .collect(),
    })
    .into_response()
}

fn worker_stats(s: &anylb_dataplane::stats::Stats) -> api::WorkerStats {
    let not_for_us = s.drops_of(DropReason::OtherMac);
    api::WorkerStats {
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        tx_packets: s.tx_packets,
        tx_bytes: s.tx_bytes,
        fast_path: s.fast_path,
        to_kernel: s.to_kernel,
        redirected: s.redirected,
        peer_forwarded: s.peer_forwarded,
        peer_forwarded_closed: s.peer_forwarded_closed,
        new_connections: s.new_connections,
        quic_routed: s.quic_routed,
        fragments: s.fragments,
        syn_cookies: s.syn_cookies,
        syn_proxied: s.syn_proxied,
        connections: s.connections,
        expired_connections: s.expired_connections,
        stack_replies: s.stack_replies,
        icmp_errors: s.icmp_errors,
        dropped: s.total_drops() - not_for_us,
        not_for_us,
    }
}

async fn stats(State(n): State<Shared>) -> Json<api::Stats> {
    let per = n.runtime.stats();
    let mut total = anylb_dataplane::stats::Stats::default();
    for s in &per {
        total.add(s);
    }
    Json(api::Stats {
        workers: per.iter().map(worker_stats).collect(),
        total: worker_stats(&total),
        drops: DropReason::ALL
            .iter()
            .map(|r| (r.name().to_owned(), total.drops_of(*r)))
            .collect(),
        tx_refused: n.runtime.tx_refused(),
        rates: n.rates.lock().ok().and_then(|w| w.node()),
    })
}

fn traffic(c: &anylb_dataplane::stats::BackendCounters) -> api::Traffic {
    api::Traffic {
        connections: c.connections,
        active: c.active,
        inactive: c.connections.saturating_sub(c.active),
        created: c.created,
        in_packets: c.in_packets,
        in_bytes: c.in_bytes,
        out_packets: c.out_packets,
        out_bytes: c.out_bytes,
    }
}

/// Reads the workers' counters off the async thread (they answer between bursts).
async fn counters(n: &Shared) -> anylb_dataplane::counters::NodeCounters {
    let rt = n.runtime.clone();
    tokio::task::spawn_blocking(move || rt.counters())
        .await
        .unwrap_or_default()
}

async fn service_stats(State(n): State<Shared>) -> Json<Vec<api::ServiceStats>> {
    let c = counters(&n).await;
    let w = n.rates.lock().map(|w| w.clone()).unwrap_or_default();
    Json(
        c.services
            .iter()
            .map(|s| api::ServiceStats {
                name: s.name.clone(),
                vip: s.vip,
                port: s.port,
                protocol: s.protocol.to_owned(),
                traffic: traffic(&s.counters),
                rates: w.traffic(&s.name, None),
                refused: api::Refused {
                    denied_node: s.refused.denied_node,
                    denied: s.refused.denied,
                    not_allowed: s.refused.not_allowed,
                    rate_limited: s.refused.rate_limited,
                    overloaded: s.refused.overloaded,
                },
                backends: s
                    .backends
                    .iter()
                    .map(|b| api::BackendStats {
                        address: b.address,
                        port: b.port,
                        traffic: traffic(&b.counters),
                        rates: w.traffic(&s.name, Some((b.address, b.port))),
                    })
                    .collect(),
            })
            .collect(),
    )
}

async fn pools(State(n): State<Shared>) -> Json<api::Pools> {
    let c = counters(&n).await;
    let e = &c.exhausted;
    Json(api::Pools {
        pools: c
            .pools
            .iter()
            .map(|p| api::Pool {
                address: p.address,
                ports: p.ports,
                tcp_used: p.tcp_used,
                udp_used: p.udp_used,
            })
            .collect(),
        exhausted: [
            ("ipv4_tcp", e.ipv4_tcp),
            ("ipv4_udp", e.ipv4_udp),
            ("ipv6_tcp", e.ipv6_tcp),
            ("ipv6_udp", e.ipv6_udp),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    })
}

async fn ports(State(n): State<Shared>) -> Json<Vec<api::Port>> {
    let w = n.rates.lock().map(|w| w.clone()).unwrap_or_default();
    Json(
        n.runtime
            .ports()
            .into_iter()
            .map(|p| api::Port {
                rates: w.port(&p.name),
                name: p.name,
                id: p.id,
                mac: p.mac,
                link_up: p.link_up,
                speed_mbps: p.speed_mbps,
                rx_packets: p.ipackets,
                rx_bytes: p.ibytes,
                tx_packets: p.opackets,
                tx_bytes: p.obytes,
                rx_missed: p.imissed,
                rx_errors: p.ierrors,
                tx_errors: p.oerrors,
                rx_nombuf: p.rx_nombuf,
            })
            .collect(),
    )
}

async fn drain_backend(State(n): State<Shared>, Json(d): Json<api::DrainBackend>) -> Response {
    let Some(m) = n.monitor() else {
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

/// The API's endpoints, for `GET /v1/`: method and path.
const ENDPOINTS: [(&str, &str); 21] = [
    ("GET", "/v1/"),
    ("GET", "/v1/status"),
    ("GET", "/v1/bgp/summary"),
    ("GET", "/v1/bgp/neighbors"),
    ("GET", "/v1/bfd"),
    ("GET", "/v1/cluster"),
    ("GET", "/v1/bgp/routes/advertised"),
    ("GET", "/v1/bgp/routes/received"),
    ("GET", "/v1/routes"),
    ("GET", "/v1/services"),
    ("GET", "/v1/backends"),
    ("GET", "/v1/conns"),
    ("GET", "/v1/neighbors"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/stats/services"),
    ("GET", "/v1/pools"),
    ("GET", "/v1/ports"),
    ("POST", "/v1/backends/drain"),
    ("POST", "/v1/node/drain"),
    ("POST", "/v1/reload"),
    ("GET", "/metrics"),
];

async fn endpoints() -> Json<Vec<serde_json::Value>> {
    Json(
        ENDPOINTS
            .iter()
            .map(|(m, p)| serde_json::json!({ "method": m, "path": p }))
            .collect(),
    )
}

/// The API router; `/metrics` is served here too (as on `metrics_listen`), and `/v1/` lists the endpoints.
pub fn router(n: Shared) -> Router {
    Router::new()
        .route("/v1/", get(endpoints))
        .route(
            "/metrics",
            get(|State(n): State<Shared>| super::metrics::response(n)),
        )
        .route("/v1/status", get(status))
        .route("/v1/bgp/summary", get(bgp_summary))
        .route("/v1/bgp/neighbors", get(bgp_neighbors))
        .route("/v1/bfd", get(bfd))
        .route("/v1/cluster", get(cluster))
        .route("/v1/bgp/routes/advertised", get(advertised))
        .route("/v1/bgp/routes/received", get(received))
        .route("/v1/routes", get(routes))
        .route("/v1/services", get(services))
        .route("/v1/backends", get(backends))
        .route("/v1/conns", get(conns))
        .route("/v1/neighbors", get(neighbors))
        .route("/v1/stats", get(stats))
        .route("/v1/stats/services", get(service_stats))
        .route("/v1/pools", get(pools))
        .route("/v1/ports", get(ports))
        .route("/v1/backends/drain", post(drain_backend))
        .route("/v1/node/drain", post(drain_node))
        .route("/v1/reload", post(reload))
        .with_state(n)
}

/// Serves the API on the node's Unix socket.
pub async fn serve(n: Shared, path: PathBuf) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %path.display(), "control API listening");
    axum::serve(l, router(n)).await
}
