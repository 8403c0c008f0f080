//! The speaker handle: configuration, the announce/withdraw API, neighbour status for the CLI, and the routes
//! received from upstreams as ECMP next hops for the dataplane.
//!
//! `announce` and `withdraw` are idempotent and take effect on every Established session at once (packed into
//! as few UPDATEs as fit); every (re)establishment and every ROUTE-REFRESH replays the whole Adj-RIB-Out.
//! Per-neighbour export policy (communities, large communities, MED, AS-path prepend, LOCAL_PREF for iBGP,
//! next hop) is applied when UPDATEs are built.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use tokio::sync::{mpsc, watch};

use crate::bfd;
use crate::config::SpeakerConfig;
use crate::neighbor::{Cmd, Neighbor, NeighborStatus, Shared};
use crate::rib::{AdjRibIn, Announcement, Route};

/// One BFD session for the life of each BGP session to its neighbour (see [`Speaker::attach_bfd`]).
async fn follow_bgp(
    speaker: Speaker,
    peer: bfd::Peer,
    disc: u32,
    status: Arc<Mutex<bfd::Status>>,
    mut established: watch::Receiver<bool>,
) {
    let address = peer.address;
    loop {
        while !*established.borrow_and_update() {
            if established.changed().await.is_err() {
                return;
            }
        }
        let (tx, mut changes) = mpsc::unbounded_channel();
        let run = bfd::run(peer.clone(), disc, tx, status.clone());
        tokio::pin!(run);
        let mut up = false;
        loop {
            tokio::select! {
                r = &mut run => {
                    if let Err(e) = r {
                        tracing::error!(neighbor = %address, error = %e, "BFD session failed");
                    }
                    return;
                }
                Some(c) = changes.recv() => {
                    if c.state == bfd::State::Up {
                        tracing::info!(neighbor = %address, "BFD: up");
                        up = true;
                    } else if std::mem::take(&mut up) {
                        tracing::warn!(neighbor = %address, "BFD: path down; dropping the BGP session");
                        speaker.bfd_down(address);
                    }
                }
                changed = established.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !*established.borrow() {
                        // The BGP session is gone: this BFD session ends with it.
                        break;
                    }
                }
            }
        }
    }
}

/// A route received from a neighbour, as the CLI shows it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The neighbour.
    pub neighbor: IpAddr,
    /// The prefix.
    pub prefix: IpNet,
    /// Next hop and attributes.
    pub route: Route,
    /// Kept as stale while the neighbour restarts.
    pub stale: bool,
}

/// What `bgp summary` shows: the speaker, then its neighbours.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// BGP identifier.
    pub router_id: std::net::Ipv4Addr,
    /// Local AS.
    pub local_asn: u32,
    /// Prefixes with a best path (received routes in the table).
    pub best_paths: usize,
    /// Prefixes announced.
    pub advertised: usize,
    /// Every neighbour.
    pub neighbors: Vec<NeighborStatus>,
}

/// The running speaker.
#[derive(Debug, Clone)]
pub struct Speaker {
    shared: Arc<Shared>,
    /// The BFD sessions attached, as they report themselves.
    bfd: Arc<Mutex<Vec<Arc<Mutex<bfd::Status>>>>>,
}

impl Speaker {
    /// Starts the listener and one session task per neighbour on the current tokio runtime.
    pub async fn start(cfg: SpeakerConfig) -> std::io::Result<Speaker> {
        let mut neighbors = Vec::new();
        let mut receivers = Vec::new();
        for n in &cfg.neighbors {
            let (tx, rx) = mpsc::unbounded_channel();
            neighbors.push(Arc::new(Neighbor {
                cfg: n.clone(),
                status: Mutex::new(NeighborStatus::new(n)),
                rib_in: Mutex::new(AdjRibIn::with_limit(n.max_prefix)),
                stale: Mutex::default(),
                established: watch::channel(false).0,
                cmd: tx,
            }));
            receivers.push(rx);
        }
        let listener = match cfg.listen {
            Some(addr) => Some(crate::network::listener(addr, &cfg.neighbors).await?),
            None => None,
        };
        let shared = Arc::new(Shared::new(cfg, neighbors));
        for (n, rx) in shared.neighbors.iter().zip(receivers) {
            tokio::spawn(crate::tasks::session(shared.clone(), n.clone(), rx));
        }
        if let Some(l) = listener {
            tokio::spawn(crate::tasks::accept_loop(shared.clone(), l));
        }
        Ok(Speaker {
            shared,
            bfd: Arc::default(),
        })
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

    /// Routes received from `neighbor` (all neighbours when none); `None` when no such neighbour is
    /// configured.
    pub fn received(&self, neighbor: Option<IpAddr>) -> Option<Vec<Received>> {
        if neighbor.is_some_and(|a| !self.shared.neighbors.iter().any(|n| n.cfg.address == a)) {
            return None;
        }
        let mut out = Vec::new();
        for n in &self.shared.neighbors {
            if neighbor.is_some_and(|a| a != n.cfg.address) {
                continue;
            }
            let stale = n.stale.lock().map(|s| s.clone()).unwrap_or_default();
            if let Ok(r) = n.rib_in.lock() {
                out.extend(r.routes().map(|(p, rt)| Received {
                    neighbor: n.cfg.address,
                    prefix: *p,
                    route: rt.clone(),
                    stale: stale.contains(p),
                }));
            }
        }
        out.sort_by_key(|r| (r.neighbor, r.prefix));
        Some(out)
    }

    /// The speaker's identity and its neighbours, for `bgp summary`.
    pub fn summary(&self) -> Summary {
        Summary {
            router_id: self.shared.cfg.router_id,
            local_asn: self.shared.cfg.local_asn,
            best_paths: self.shared.best_paths(),
            advertised: self.shared.rib_out.lock().map(|o| o.len()).unwrap_or(0),
            neighbors: self.neighbors(),
        }
    }

    /// The best received routes with their ECMP next hops, updated as they change.
    pub fn routes(&self) -> watch::Receiver<BTreeMap<IpNet, Vec<IpAddr>>> {
        self.shared.subscribe()
    }

    /// Tells a neighbour's session that BFD declared the path down.
    pub fn bfd_down(&self, neighbor: IpAddr) {
        for n in self.shared.neighbors.iter().filter(|n| n.cfg.address == neighbor) {
            let _ = n.cmd.send(Cmd::BfdDown);
        }
    }

    /// Runs a BFD session to each of `peers` (discriminators from `first_disc` on) while that neighbour's BGP
    /// session is Established: it starts when the session comes up and stops when it goes down. A BFD session
    /// that goes down after being up drops the BGP session at once. Returns the tasks, to abort at shutdown.
    ///
    /// Starting with the BGP session (as FRR's bgpd registers its BFD peers) means BFD comes up once per BGP
    /// session: a peer that re-keys its BFD session when BGP comes up (FRR does, when the neighbour has no
    /// `update-source`: the session is made anew with the local address BGP used) never sees ours go up first.
    pub fn attach_bfd(&self, peers: Vec<bfd::Peer>, first_disc: u32) -> Vec<tokio::task::JoinHandle<()>> {
        peers
            .into_iter()
            .zip(first_disc..)
            .filter_map(|(peer, disc)| {
                let Some(established) = self.established(peer.address) else {
                    tracing::warn!(neighbor = %peer.address, "BFD: not a BGP neighbour; not started");
                    return None;
                };
                let status = Arc::new(Mutex::new(bfd::Status::new(
                    &peer,
                    &bfd::Session::new(peer.params, disc, std::time::Instant::now()),
                )));
                if let Ok(mut all) = self.bfd.lock() {
                    all.push(status.clone());
                }
                Some(tokio::spawn(follow_bgp(
                    self.clone(),
                    peer,
                    disc,
                    status,
                    established,
                )))
            })
            .collect()
    }

    /// Whether the BGP session to `neighbor` is Established, as it changes.
    fn established(&self, neighbor: IpAddr) -> Option<watch::Receiver<bool>> {
        self.shared
            .neighbors
            .iter()
            .find(|n| n.cfg.address == neighbor)
            .map(|n| n.established.subscribe())
    }

    /// Every BFD session's state, timers and history.
    pub fn bfd(&self) -> Vec<bfd::Status> {
        self.bfd
            .lock()
            .map(|all| {
                all.iter()
                    .filter_map(|s| s.lock().ok().map(|s| s.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops every session with a shutdown communication (RFC 8203).
    pub fn stop(&self, message: &str) {
        for n in &self.shared.neighbors {
            let _ = n.cmd.send(Cmd::Stop(message.to_owned()));
        }
    }
}
