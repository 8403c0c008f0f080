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
//! | GET | /v1/conns | `service=NAME&limit=N` | connections |
//! | GET | /v1/stats | | [`Stats`] |
//! | POST | /v1/backends/drain | [`DrainBackend`] | [`Done`] |
//! | POST | /v1/node/drain | [`DrainNode`] | [`Done`] |
//! | POST | /v1/reload | | [`Done`] with the applied changes |

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
    /// Port or "all".
    pub port: String,
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
}

/// Counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// Per worker.
    pub workers: Vec<serde_json::Value>,
    /// Sum over workers.
    pub total: serde_json::Value,
    /// Drop counts by reason (sum).
    pub drops: Vec<(String, u64)>,
    /// Ports.
    pub ports: Vec<serde_json::Value>,
    /// Frames the NICs refused (TX queues full).
    pub tx_failed: u64,
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
