//! The Prometheus page: `/metrics` on the node's `metrics_listen` address.

use std::net::SocketAddr;
use std::sync::Arc;

use anylb_dataplane::stats::DropReason;
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
    o
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
