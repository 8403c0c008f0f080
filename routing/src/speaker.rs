//! The speaker handle: configuration, the announce/withdraw API, neighbour status for the CLI, and the routes
//! received from upstreams as ECMP next hops for the dataplane.
//!
//! `announce` and `withdraw` are idempotent and take effect on every Established session at once (packed into
//! as few UPDATEs as fit); every (re)establishment and every ROUTE-REFRESH replays the whole Adj-RIB-Out.
//! Per-neighbour export policy (communities, large communities, MED, AS-path prepend, LOCAL_PREF for iBGP,
//! next hop) is applied when UPDATEs are built.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::sync::{mpsc, watch};

use crate::fsm::{Negotiated, State};
use crate::rib::{AdjRibIn, AdjRibOut, Announcement};

/// One neighbour's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NeighborConfig {
    /// Address.
    pub address: IpAddr,
    /// Remote AS.
    pub remote_asn: u32,
    /// Free text.
    pub description: Option<String>,
    /// Only accept connections.
    pub passive: bool,
    /// Hold time proposed.
    pub hold_time: Duration,
    /// Keepalive wanted.
    pub keepalive: Duration,
    /// First connect-retry delay.
    pub connect_retry: Duration,
    /// TTL of outgoing packets (multihop); 1 by default for eBGP.
    pub ttl: Option<u8>,
    /// Local address to bind.
    pub local_address: Option<IpAddr>,
    /// Carry IPv4 unicast.
    pub ipv4: bool,
    /// Carry IPv6 unicast.
    pub ipv6: bool,
    /// Next hop for IPv4 routes (default: the session's local address).
    pub next_hop: Option<Ipv4Addr>,
    /// Next hop for IPv6 routes (default: the session's local address when IPv6).
    pub ipv6_next_hop: Option<Ipv6Addr>,
    /// Communities added to every route sent.
    pub communities: Vec<u32>,
    /// Large communities added to every route sent.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// MED sent (an announcement's own MED wins).
    pub med: Option<u32>,
    /// LOCAL_PREF sent to iBGP neighbours.
    pub local_pref: Option<u32>,
    /// Extra prepends of the local AS.
    pub prepend: u8,
    /// Most prefixes accepted.
    pub max_prefix: Option<u32>,
    /// TCP-MD5 (RFC 2385) key for the session's segments.
    pub md5_key: Option<Md5Key>,
    /// GTSM (RFC 5082): the neighbour is at most this many hops away; packets are sent with TTL 255 and
    /// accepted only with a TTL of at least 256 − hops.
    pub gtsm_hops: Option<u8>,
}

/// A TCP-MD5 key; its `Debug` output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Key(Vec<u8>);

impl Md5Key {
    /// A key of 1 to 80 bytes (the Linux limit).
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Md5Key, String> {
        let key = key.into();
        match key.len() {
            0 => Err("the TCP-MD5 key is empty".into()),
            n if n > os_sys::MD5_MAX_KEY => Err(format!(
                "the TCP-MD5 key has {n} bytes; Linux takes at most {}",
                os_sys::MD5_MAX_KEY
            )),
            _ => Ok(Md5Key(key)),
        }
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Md5Key(<{} bytes>)", self.0.len())
    }
}

/// The speaker's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerConfig {
    /// Local AS.
    pub local_asn: u32,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Listening address (port 179 normally); none for active-only.
    pub listen: Option<SocketAddr>,
    /// Graceful restart: restart time in seconds advertised; forwarding kept across restarts.
    pub graceful_restart: Option<u16>,
    /// Whether this start is a restart with forwarding state kept (R bit, F bits).
    pub restarting: bool,
    /// Neighbours.
    pub neighbors: Vec<NeighborConfig>,
}

/// What the CLI shows of one neighbour.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NeighborStatus {
    /// Address.
    pub address: IpAddr,
    /// Remote AS.
    pub remote_asn: u32,
    /// Description.
    pub description: Option<String>,
    /// FSM state.
    pub state: State,
    /// When the session reached Established or last went down.
    pub since: Option<SystemTime>,
    /// Messages received.
    pub msgs_rcvd: u64,
    /// Messages sent.
    pub msgs_sent: u64,
    /// Prefixes received.
    pub prefixes_rcvd: usize,
    /// Prefixes announced.
    pub prefixes_sent: usize,
    /// Why the session last went down.
    pub last_error: Option<String>,
    /// The negotiated parameters while Established.
    pub negotiated: Option<Negotiated>,
    /// Local and remote socket addresses while connected.
    pub connection: Option<(SocketAddr, SocketAddr)>,
}

/// Commands to a session task.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Prefixes whose announcement changed (announce or withdraw per the Adj-RIB-Out).
    Changed(Vec<IpNet>),
    /// Stop with a shutdown communication.
    Stop(String),
    /// An accepted connection from this neighbour.
    Incoming(tokio::net::TcpStream),
    /// BFD for this neighbour went down.
    BfdDown,
}

/// One neighbour as the speaker keeps it.
#[derive(Debug)]
pub(crate) struct Neighbor {
    pub cfg: NeighborConfig,
    pub status: Mutex<NeighborStatus>,
    pub rib_in: Mutex<AdjRibIn>,
    pub cmd: mpsc::UnboundedSender<Cmd>,
}

/// State shared by the handle and the tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: SpeakerConfig,
    pub rib_out: Mutex<AdjRibOut>,
    pub neighbors: Vec<Arc<Neighbor>>,
    pub fib: watch::Sender<BTreeMap<IpNet, Vec<IpAddr>>>,
}

impl Shared {
    /// Recomputes the best paths over every neighbour's routes and publishes them when they changed.
    pub fn recompute_fib(&self) {
        let ribs: Vec<(AdjRibIn, bool, Ipv4Addr)> = self
            .neighbors
            .iter()
            .filter_map(|n| {
                let rid = n
                    .status
                    .lock()
                    .ok()?
                    .negotiated
                    .as_ref()
                    .map(|x| x.peer_router_id)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                let rib = n.rib_in.lock().ok()?.clone();
                Some((rib, n.cfg.remote_asn != self.cfg.local_asn, rid))
            })
            .collect();
        let best = crate::rib::best_paths(ribs.iter().map(|(r, e, id)| (r, *e, *id)));
        self.fib.send_if_modified(|cur| {
            if *cur == best {
                false
            } else {
                *cur = best;
                true
            }
        });
    }
}

/// The running speaker.
#[derive(Debug, Clone)]
pub struct Speaker {
    pub(crate) shared: Arc<Shared>,
}

impl Speaker {
    /// Starts the listener and one session task per neighbour on the current tokio runtime.
    pub async fn start(cfg: SpeakerConfig) -> std::io::Result<Speaker> {
        let (fib, _) = watch::channel(BTreeMap::new());
        let mut neighbors = Vec::new();
        let mut receivers = Vec::new();
        for n in &cfg.neighbors {
            let (tx, rx) = mpsc::unbounded_channel();
            neighbors.push(Arc::new(Neighbor {
                cfg: n.clone(),
                status: Mutex::new(NeighborStatus {
                    address: n.address,
                    remote_asn: n.remote_asn,
                    description: n.description.clone(),
                    state: State::Idle,
                    since: None,
                    msgs_rcvd: 0,
                    msgs_sent: 0,
                    prefixes_rcvd: 0,
                    prefixes_sent: 0,
                    last_error: None,
                    negotiated: None,
                    connection: None,
                }),
                rib_in: Mutex::new(AdjRibIn::with_limit(n.max_prefix)),
                cmd: tx,
            }));
            receivers.push(rx);
        }
        let listener = match cfg.listen {
            Some(addr) => Some(crate::tasks::listener(addr, &cfg.neighbors).await?),
            None => None,
        };
        let shared = Arc::new(Shared {
            cfg,
            rib_out: Mutex::new(AdjRibOut::default()),
            neighbors,
            fib,
        });
        for (n, rx) in shared.neighbors.iter().zip(receivers) {
            tokio::spawn(crate::tasks::session(shared.clone(), n.clone(), rx));
        }
        if let Some(l) = listener {
            tokio::spawn(crate::tasks::accept_loop(shared.clone(), l));
        }
        Ok(Speaker { shared })
    }

    /// Announces `prefixes` with `a` (idempotent; changes an existing announcement's attributes).
    pub fn announce(&self, prefixes: &[IpNet], a: &Announcement) {
        let changed: Vec<IpNet> = match self.shared.rib_out.lock() {
            Ok(mut out) => prefixes
                .iter()
                .copied()
                .filter(|p| out.announce(*p, a.clone()))
                .collect(),
            Err(_) => return,
        };
        self.notify(changed);
    }

    /// Withdraws `prefixes` (idempotent).
    pub fn withdraw(&self, prefixes: &[IpNet]) {
        let changed: Vec<IpNet> = match self.shared.rib_out.lock() {
            Ok(mut out) => prefixes.iter().copied().filter(|p| out.withdraw(p)).collect(),
            Err(_) => return,
        };
        self.notify(changed);
    }

    fn notify(&self, changed: Vec<IpNet>) {
        if changed.is_empty() {
            return;
        }
        for n in &self.shared.neighbors {
            let _ = n.cmd.send(Cmd::Changed(changed.clone()));
        }
    }

    /// What is announced now.
    pub fn advertised(&self) -> Vec<(IpNet, Announcement)> {
        self.shared
            .rib_out
            .lock()
            .map(|o| o.routes().map(|(p, a)| (*p, a.clone())).collect())
            .unwrap_or_default()
    }

    /// Every neighbour's status.
    pub fn neighbors(&self) -> Vec<NeighborStatus> {
        self.shared
            .neighbors
            .iter()
            .filter_map(|n| n.status.lock().ok().map(|s| s.clone()))
            .collect()
    }

    /// Routes received from `neighbor` (all neighbours when none), as (neighbour, prefix, next hop, attributes).
    pub fn received(&self, neighbor: Option<IpAddr>) -> Vec<(IpAddr, IpNet, crate::rib::Route)> {
        let mut out = Vec::new();
        for n in &self.shared.neighbors {
            if neighbor.is_some_and(|a| a != n.cfg.address) {
                continue;
            }
            if let Ok(r) = n.rib_in.lock() {
                out.extend(r.routes().map(|(p, rt)| (n.cfg.address, *p, rt.clone())));
            }
        }
        out.sort_by_key(|a| (a.0, a.1));
        out
    }

    /// The best received routes with their ECMP next hops, updated as they change.
    pub fn routes(&self) -> watch::Receiver<BTreeMap<IpNet, Vec<IpAddr>>> {
        self.shared.fib.subscribe()
    }

    /// Tells a neighbour's session that BFD declared the path down.
    pub fn bfd_down(&self, neighbor: IpAddr) {
        for n in self.shared.neighbors.iter().filter(|n| n.cfg.address == neighbor) {
            let _ = n.cmd.send(Cmd::BfdDown);
        }
    }

    /// Runs a BFD session to each of `peers` (discriminators from `first_disc` on); one that goes down after
    /// being up drops that neighbour's BGP session at once. Returns the tasks, to abort at shutdown.
    pub fn attach_bfd(
        &self,
        peers: Vec<crate::bfd::Peer>,
        first_disc: u32,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tasks: Vec<_> = peers
            .into_iter()
            .zip(first_disc..)
            .map(|(peer, disc)| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let address = peer.address;
                    if let Err(e) = crate::bfd::run(peer, disc, tx).await {
                        tracing::error!(neighbor = %address, error = %e, "BFD session failed");
                    }
                })
            })
            .collect();
        let speaker = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut up = std::collections::HashSet::new();
            while let Some(c) = rx.recv().await {
                if c.state == crate::bfd::State::Up {
                    tracing::info!(neighbor = %c.address, "BFD: up");
                    up.insert(c.address);
                } else if up.remove(&c.address) {
                    tracing::warn!(neighbor = %c.address, "BFD: path down; dropping the BGP session");
                    speaker.bfd_down(c.address);
                }
            }
        }));
        tasks
    }

    /// Stops every session with a shutdown communication (RFC 8203).
    pub fn stop(&self, message: &str) {
        for n in &self.shared.neighbors {
            let _ = n.cmd.send(Cmd::Stop(message.to_owned()));
        }
    }
}
