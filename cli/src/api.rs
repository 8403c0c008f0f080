//! The control API shared by the daemon and the CLI: JSON over HTTP/1.1 on the node's Unix socket, so that
//! `curl --unix-socket /run/anylb/lb1.sock http://anylb/v1/services` works too.
//!
//! | method | path | body / query | answer |
//! |---|---|---|---|
//! | GET | /v1/status | | [`Status`] |
//! | GET | /v1/bgp/neighbors | | neighbour statuses |
//! | GET | /v1/bgp/routes/advertised | | [`AdvertisedRoute`]s |
//! | GET | /v1/bgp/routes/received | `neighbor=ADDR` | [`ReceivedRoute`]s |
//! | GET | /v1/routes | | [`FibRoute`]s of the dataplane |
//! | GET | /v1/services | | [`ServiceRow`]s |
//! | GET | /v1/backends | `service=NAME` | backend statuses with transitions |
//! | GET | /v1/conns | `service=NAME&backend=ADDR[:PORT]&client=ADDR&state=NAME&limit=N` | [`Conns`] |
//! | GET | /v1/stats | | [`Stats`] |
//! | GET | /v1/stats/services | | [`ServiceStats`]s |
//! | GET | /v1/pools | | [`Pools`] |
//! | GET | /v1/ports | | [`Port`]s |
//! | POST | /v1/backends/drain | [`DrainBackend`] | [`Done`] |
//! | POST | /v1/node/drain | [`DrainNode`] | [`Done`] |
//! | POST | /v1/reload | | [`Done`] with the applied changes |

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub node: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Worker count.
    pub workers: usize,
    /// Reply steering in use.
    pub steering: String,
    /// Whether every worker is forwarding (heartbeats fresh).
    pub forwarding: bool,
    /// Whether the node is drained by hand.
    pub drained: bool,
    /// Topology file.
    pub config: String,
}

/// One advertised prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdvertisedRoute {
    /// Prefix.
    pub prefix: String,
    /// Communities.
    pub communities: Vec<String>,
    /// Large communities.
    pub large_communities: Vec<String>,
    /// MED.
    pub med: Option<u32>,
}

/// One received route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedRoute {
    /// Neighbour it came from.
    pub neighbor: String,
    /// Prefix.
    pub prefix: String,
    /// Next hop.
    pub next_hop: String,
    /// Kept as stale while the neighbour restarts (graceful restart).
    pub stale: bool,
    /// AS path.
    pub as_path: String,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// MED.
    pub med: Option<u32>,
}

/// One route of the dataplane's table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FibRoute {
    /// Prefix.
    pub prefix: String,
    /// Where it comes from: connected, static, fallback or bgp.
    pub origin: String,
    /// Next hops as "via ADDR dev PORT" or "dev PORT".
    pub next_hops: Vec<String>,
}

/// One service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRow {
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: String,
    /// Port (0: every port).
    pub port: u16,
    /// Protocol.
    pub protocol: String,
    /// Scheduler.
    pub scheduler: String,
    /// Forwarding mode.
    pub forwarding: String,
    /// Healthy backends.
    pub healthy: u32,
    /// Backends.
    pub backends: u32,
    /// Needed to announce.
    pub min_healthy: u32,
    /// Announced by BGP now.
    pub announced: bool,
    /// Why it is not announced (node drained, too few healthy backends, no BGP session, waiting for the
    /// connection sync), or why an announcement reaches no router.
    pub reason: Option<String>,
}

/// `GET /v1/stats`: the dataplane's counters, summed and per worker, with rates over the last seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// Per worker.
    pub workers: Vec<WorkerStats>,
    /// Sum over workers.
    pub total: WorkerStats,
    /// Frames dropped by reason (sum over workers), every reason listed.
    pub drops: BTreeMap<String, u64>,
    /// Frames the NICs refused (TX queues full).
    pub tx_refused: u64,
    /// Rates between the daemon's last two samples (none in its first seconds).
    pub rates: Option<NodeRates>,
}

/// One worker's counters (or their sum).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames the established fast path forwarded.
    pub fast_path: u64,
    /// Frames handed to the kernel.
    pub to_kernel: u64,
    /// Frames handed to another worker.
    pub redirected: u64,
    /// TCP segments of unknown flows handed to another node.
    pub peer_forwarded: u64,
    /// Of those, segments with data that met a connection both sides had closed (a newer flow of its tuple,
    /// moved here from the node it opened on).
    #[serde(default)]
    pub peer_forwarded_closed: u64,
    /// Connections created.
    pub new_connections: u64,
    /// Of those, QUIC connections routed by the server ID of their connection ID.
    pub quic_routed: u64,
    /// IP fragments of TCP and UDP handled.
    pub fragments: u64,
    /// SYNs to SYN-proxy services answered with a cookie.
    #[serde(default)]
    pub syn_cookies: u64,
    /// Connections opened by an ACK with a valid cookie.
    #[serde(default)]
    pub syn_proxied: u64,
    /// Connections in the table.
    pub connections: u64,
    /// Connections expired.
    pub expired_connections: u64,
    /// ARP/ND answers and echo replies sent.
    pub stack_replies: u64,
    /// ICMP errors sent or translated.
    pub icmp_errors: u64,
    /// Frames dropped for a reason that means trouble (every reason but `other_mac`).
    pub dropped: u64,
    /// Frames for other hosts on a shared segment (`other_mac`): not this node's traffic, not a fault.
    pub not_for_us: u64,
}

/// Rates over the last seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRates {
    /// Seconds between the two samples.
    pub over_secs: f64,
    /// Frames received per second.
    pub rx_packets_per_sec: f64,
    /// Frames sent per second.
    pub tx_packets_per_sec: f64,
    /// Bytes received per second.
    pub rx_bytes_per_sec: f64,
    /// Bytes sent per second.
    pub tx_bytes_per_sec: f64,
    /// Connections created per second.
    pub new_connections_per_sec: f64,
    /// Frames dropped per second (every reason).
    pub dropped_per_sec: f64,
}

/// A service's or backend's rates, as `ipvsadm --rate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficRates {
    /// Connections scheduled per second (CPS).
    pub connections_per_sec: f64,
    /// Packets client → backend per second.
    pub in_packets_per_sec: f64,
    /// Packets backend → client per second.
    pub out_packets_per_sec: f64,
    /// Bytes client → backend per second.
    pub in_bytes_per_sec: f64,
    /// Bytes backend → client per second.
    pub out_bytes_per_sec: f64,
}

/// Connections and traffic of a service or backend, as `ipvsadm -Ln --stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Traffic {
    /// Connections in the table.
    pub connections: u32,
    /// Of those, TCP connections established (ipvsadm's ActiveConn).
    pub active: u32,
    /// The others (InActConn).
    pub inactive: u32,
    /// Connections scheduled since start.
    pub created: u64,
    /// Packets client → backend.
    pub in_packets: u64,
    /// Bytes client → backend.
    pub in_bytes: u64,
    /// Packets backend → client.
    pub out_packets: u64,
    /// Bytes backend → client.
    pub out_bytes: u64,
}

/// `GET /v1/stats/services`: one service with its backends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: IpAddr,
    /// Port (0: all).
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    /// The sum over its backends.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Rates (none in the daemon's first seconds).
    pub rates: Option<TrafficRates>,
    /// New flows it refused, by reason.
    pub refused: Refused,
    /// Its backends.
    pub backends: Vec<BackendStats>,
}

/// New flows a service refused, by reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Refused {
    /// On the node's deny list.
    pub denied_node: u64,
    /// On the service's deny list.
    pub denied: u64,
    /// Not on its allow list.
    pub not_allowed: u64,
    /// Over its rate limit.
    pub rate_limited: u64,
    /// Every backend at its upper threshold.
    pub overloaded: u64,
}

/// A backend's counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendStats {
    /// Address.
    pub address: IpAddr,
    /// Port (0: the client's destination port).
    pub port: u16,
    /// Counters.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Rates.
    pub rates: Option<TrafficRates>,
}

/// `GET /v1/pools`: the local addresses' ports, as DPVS's `ipvsadm -G`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pools {
    /// One per local address.
    pub pools: Vec<Pool>,
    /// Connections refused because every address of a family was out of ports.
    pub exhausted: BTreeMap<String, u64>,
}

/// One local address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    /// The address.
    pub address: IpAddr,
    /// Ports of its range (each usable once per protocol).
    pub ports: usize,
    /// TCP ports in use.
    pub tcp_used: usize,
    /// UDP ports in use.
    pub udp_used: usize,
}

/// `GET /v1/ports`: a port's link and NIC counters, as `dpip link show -s`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Port {
    /// Topology name.
    pub name: String,
    /// DPDK port id.
    pub id: u16,
    /// MAC.
    pub mac: String,
    /// Link up.
    pub link_up: bool,
    /// Link speed.
    pub speed_mbps: u32,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames dropped because the receive queues were full.
    pub rx_missed: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Receive buffer allocation failures.
    pub rx_nombuf: u64,
    /// Rates.
    pub rates: Option<PortRates>,
}

/// A port's rates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortRates {
    /// Frames received per second.
    pub rx_packets_per_sec: f64,
    /// Frames sent per second.
    pub tx_packets_per_sec: f64,
    /// Bytes received per second.
    pub rx_bytes_per_sec: f64,
    /// Bytes sent per second.
    pub tx_bytes_per_sec: f64,
}

/// `GET /v1/conns`: the first connections that match the query, and how many match in all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conns {
    /// Connections that match, over all workers.
    pub matched: usize,
    /// The first `limit` of them.
    pub connections: Vec<Conn>,
}

/// One connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conn {
    /// Worker that owns it.
    pub worker: u16,
    /// "tcp" or "udp".
    pub proto: String,
    /// Client address and port.
    pub client: std::net::SocketAddr,
    /// VIP and port.
    pub vip: std::net::SocketAddr,
    /// Local address and port.
    pub local: std::net::SocketAddr,
    /// Backend address and port.
    pub backend: std::net::SocketAddr,
    /// TCP state (ESTABLISHED, ...), or UDP.
    pub state: String,
    /// Milliseconds until it expires.
    pub expires_in_ms: u64,
    /// A SYN-proxied connection: "pending" (its backend's answer awaited) or "spliced"; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<String>,
}

/// `POST /v1/backends/drain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainBackend {
    /// Service.
    pub service: String,
    /// Backend address.
    pub address: IpAddr,
    /// Backend port.
    pub port: u16,
    /// Drain (true) or undrain.
    pub drained: bool,
}

/// `POST /v1/node/drain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainNode {
    /// Drain (true) or undrain.
    pub drained: bool,
}

/// Answer of a POST.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    /// What happened.
    pub message: String,
    /// Details (applied changes of a reload).
    #[serde(default)]
    pub details: Vec<String>,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

/// Why a CLI request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("no anylb daemon answers on {path}: {reason} (is `anylb run` running? use -s/--socket to choose the socket)")]
    NoDaemon {
        /// Socket path.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The daemon answered with an error.
    #[error("{0}")]
    Api(String),
    /// The answer could not be read.
    #[error("bad answer from the daemon: {0}")]
    Protocol(String),
}

/// Sends one request and returns the JSON body of a 2xx answer.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, ClientError> {
    let mut s = UnixStream::connect(socket).map_err(|e| ClientError::NoDaemon {
        path: socket.display().to_string(),
        reason: e.to_string(),
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: anylb\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::Protocol("no header end".into()))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ClientError::Protocol(head.to_owned()))?;
    // Chunked bodies (hyper's default for streaming) are de-chunked here.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| ClientError::Protocol(format!("{e}: {body}")))?;
    if !(200..300).contains(&code) {
        return Err(ClientError::Api(
            v.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or(&body)
                .to_owned(),
        ));
    }
    Ok(v)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
