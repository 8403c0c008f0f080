//! The Prometheus page: `/metrics` on the node's `metrics_listen` address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anylb_dataplane::stats::DropReason;
use anylb_routing::bfd;
use anylb_routing::fsm::State as Fsm;
use anylb_routing::neighbor::{family_name, family_of, FAMILIES};
use anylb_routing::speaker::Speaker;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use ipnet::IpNet;

use super::Node;

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
        let _ = writeln!(o, "anylb_connections{{worker=\"{w}\"}} {}", s.connections);
    }
    if let Some(sp) = &n.speaker {
        bgp(&mut o, sp);
    }
    if let Some(m) = n.monitor() {
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
    if let Some(v) = n
        .sync
        .as_ref()
        .and_then(|s| s.view.lock().ok().map(|v| v.clone()))
    {
        sync(&mut o, &v);
    }
    o
}

/// Connection sync: peers alive, records by direction, resends, overflow, refused datagrams, takeovers.
fn sync(o: &mut String, v: &super::sync::SyncView) {
    use std::fmt::Write;
    let _ = writeln!(o, "# HELP anylb_sync_ready 1 when the node has its connections back and its local addresses are its own.\n# TYPE anylb_sync_ready gauge\nanylb_sync_ready {}", u8::from(v.ready));
    let _ = writeln!(o, "# HELP anylb_sync_takeovers_total Lost nodes whose local addresses this node took over.\n# TYPE anylb_sync_takeovers_total counter\nanylb_sync_takeovers_total {}", v.takeovers);
    let _ = writeln!(o, "# HELP anylb_sync_datagrams_refused_total Sync datagrams refused, by reason.\n# TYPE anylb_sync_datagrams_refused_total counter");
    for (reason, n) in [
        ("bad_tag", v.bad_tag),
        ("malformed", v.malformed),
        ("stranger", v.strangers),
    ] {
        let _ = writeln!(o, "anylb_sync_datagrams_refused_total{{reason=\"{reason}\"}} {n}");
    }
    type Get = fn(&super::sync::PeerView) -> u64;
    let per_peer: [(&str, &str, &str, Get); 7] = [
        (
            "anylb_sync_peer_alive",
            "gauge",
            "1 when the peer was heard within dead_after.",
            |p| u64::from(p.alive),
        ),
        (
            "anylb_sync_records_held",
            "gauge",
            "The peer's connection records held here.",
            |p| p.records_held as u64,
        ),
        (
            "anylb_sync_records_sent_total",
            "counter",
            "Records sent to the peer (first transmissions).",
            |p| p.counters.records_sent,
        ),
        (
            "anylb_sync_records_acked_total",
            "counter",
            "Records the peer acknowledged.",
            |p| p.counters.records_acked,
        ),
        (
            "anylb_sync_resent_total",
            "counter",
            "Datagrams sent to the peer again after their timeout.",
            |p| p.counters.resent,
        ),
        (
            "anylb_sync_overflow_total",
            "counter",
            "Records not sent to the peer: window full and rate bound reached.",
            |p| p.counters.overflow,
        ),
        (
            "anylb_sync_datagrams_received_total",
            "counter",
            "Datagrams accepted from the peer.",
            |p| p.counters.received,
        ),
    ];
    for (name, kind, help, get) in per_peer {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &v.peers {
            let _ = writeln!(o, "{name}{{peer=\"{}\"}} {}", p.name, get(p));
        }
    }
}

/// Serves `/metrics` on TCP.
pub async fn serve(n: Arc<Node>, addr: SocketAddr) -> std::io::Result<()> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(n): State<Arc<Node>>| async move { metrics_text(&n) }),
        )
        .with_state(n);
    axum::serve(l, app).await
}

/// BGP sessions and BFD: state, flaps, unused UPDATEs, prefixes by family and direction, BFD state, timers
/// and transitions.
fn bgp(o: &mut String, sp: &Speaker) {
    use std::fmt::Write;
    let neighbors = sp.neighbors();
    let _ = writeln!(o, "# HELP anylb_bgp_session_established 1 when the BGP session is Established.\n# TYPE anylb_bgp_session_established gauge");
    for nb in &neighbors {
        let up = u8::from(nb.state == Fsm::Established);
        let _ = writeln!(
            o,
            "anylb_bgp_session_established{{neighbor=\"{}\"}} {up}",
            nb.address
        );
    }
    let _ = writeln!(o, "# HELP anylb_bgp_session_state The session's FSM state (1 for the current one).\n# TYPE anylb_bgp_session_state gauge");
    for nb in &neighbors {
        let _ = writeln!(
            o,
            "anylb_bgp_session_state{{neighbor=\"{}\",state=\"{}\"}} 1",
            nb.address,
            nb.state.name()
        );
    }
    let _ = writeln!(o, "# HELP anylb_bgp_session_flaps_total Times the session left Established.\n# TYPE anylb_bgp_session_flaps_total counter");
    for nb in &neighbors {
        let _ = writeln!(
            o,
            "anylb_bgp_session_flaps_total{{neighbor=\"{}\"}} {}",
            nb.address, nb.flaps
        );
    }
    let _ = writeln!(o, "# HELP anylb_bgp_updates_withdrawn_total UPDATEs whose routes were not used (RFC 7606 treat-as-withdraw, AS-path loop).\n# TYPE anylb_bgp_updates_withdrawn_total counter");
    for nb in &neighbors {
        let _ = writeln!(
            o,
            "anylb_bgp_updates_withdrawn_total{{neighbor=\"{}\"}} {}",
            nb.address, nb.updates_withdrawn
        );
    }
    let _ = writeln!(o, "# HELP anylb_bgp_prefixes Prefixes received (stale ones too), stale, and sent, by family.\n# TYPE anylb_bgp_prefixes gauge");
    for nb in &neighbors {
        let mut received: BTreeMap<&str, (usize, usize)> =
            FAMILIES.iter().map(|f| (family_name(*f), (0, 0))).collect();
        for r in sp.received(Some(nb.address)).unwrap_or_default() {
            let e = received.entry(family_name(family_of(&r.prefix))).or_default();
            e.0 += 1;
            e.1 += usize::from(r.stale);
        }
        for (family, (all, stale)) in received {
            let sent = nb.prefixes_sent_by_family.get(family).copied().unwrap_or(0);
            for (dir, v) in [("received", all), ("stale", stale), ("sent", sent)] {
                let _ = writeln!(
                    o,
                    "anylb_bgp_prefixes{{neighbor=\"{}\",family=\"{family}\",dir=\"{dir}\"}} {v}",
                    nb.address
                );
            }
        }
    }
    let sessions = sp.bfd();
    let _ = writeln!(
        o,
        "# HELP anylb_bfd_session_up 1 when the BFD session is Up.\n# TYPE anylb_bfd_session_up gauge"
    );
    for b in &sessions {
        let up = u8::from(b.info.state == bfd::State::Up);
        let _ = writeln!(o, "anylb_bfd_session_up{{peer=\"{}\"}} {up}", b.peer);
    }
    let _ = writeln!(o, "# HELP anylb_bfd_session_transitions_total Times the BFD session came up and went down.\n# TYPE anylb_bfd_session_transitions_total counter");
    for b in &sessions {
        for (to, v) in [("up", b.up_count), ("down", b.down_count)] {
            let _ = writeln!(
                o,
                "anylb_bfd_session_transitions_total{{peer=\"{}\",to=\"{to}\"}} {v}",
                b.peer
            );
        }
    }
    let _ = writeln!(o, "# HELP anylb_bfd_detection_time_seconds Time without a packet after which the session goes down.\n# TYPE anylb_bfd_detection_time_seconds gauge");
    for b in &sessions {
        let _ = writeln!(
            o,
            "anylb_bfd_detection_time_seconds{{peer=\"{}\"}} {}",
            b.peer,
            f64::from(b.info.detection_time_us) / 1e6
        );
    }
}
