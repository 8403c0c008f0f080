//! The node's connection sync (`docs/cluster.md`): the workers' records go to this node's holders over the
//! authenticated sync channel; other nodes' records go into every worker's table and into a store kept per
//! owner (for an owner's bulk resync when it returns); heartbeats tell who is alive and whose local addresses
//! each node serves. When an owner is lost and this node is its successor, this node takes its local addresses
//! over (they are answered for here, with gratuitous ARP / unsolicited NA); when the owner is heard again they
//! are released. A node that starts asks its holders for its records, and neither announces its routes nor
//! answers for its own local addresses until it has them and no other node serves its addresses any more.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anylb_conf::ClusterSync;
use anylb_dataplane::cluster::owner::{holders, successor};
use anylb_dataplane::cluster::record::{Op, Record};
use anylb_dataplane::cluster::sync::{open, Channel, Counters, DatagramError, Key, Kind, Settings};
use anylb_dataplane::dpdk::Runtime;
use ipnet::IpNet;
use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};

/// What the sync tells the control loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Takeover {
    /// Pools of lost nodes this node serves (prefix, first and last port).
    pub adopted: Vec<(IpNet, u16, u16)>,
    /// Pools of nodes served here and given back since: frames still sent here translate, ARP is theirs.
    pub released: Vec<(IpNet, u16, u16)>,
    /// The node's own local addresses are not answered for yet.
    pub withhold_lips: bool,
    /// Resynced and its addresses are its own: the node may announce its routes.
    pub ready: bool,
}

/// One other node as `anylb cluster` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerView {
    /// Name.
    pub name: String,
    /// Sync address and port.
    pub address: Option<SocketAddr>,
    /// Heard within `dead_after`.
    pub alive: bool,
    /// Milliseconds since it was last heard.
    pub last_heard_ms: Option<u64>,
    /// It holds this node's records.
    pub holds_ours: bool,
    /// This node holds its records.
    pub we_hold: bool,
    /// Its records held here.
    pub records_held: usize,
    /// This node serves its local addresses (it is lost).
    pub taken_over: bool,
    /// It serves this node's local addresses.
    pub serves_ours: bool,
    /// Datagrams to it not acknowledged yet.
    pub in_flight: usize,
    /// Record and datagram counters of the channel to and from it.
    pub counters: Counters,
}

/// The sync as `anylb cluster` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncView {
    /// This node.
    pub node: String,
    /// Resynced and its addresses are its own.
    pub ready: bool,
    /// The other nodes.
    pub peers: Vec<PeerView>,
    /// Takeovers of a lost node's addresses since start.
    pub takeovers: u64,
    /// Milliseconds since the last takeover or release.
    pub last_change_ago_ms: Option<u64>,
    /// Datagrams refused: bad tag (another key, or altered).
    pub bad_tag: u64,
    /// Datagrams refused: malformed.
    pub malformed: u64,
    /// Datagrams from an address or index that is not a member.
    pub strangers: u64,
}

/// Shared view for the API.
pub type View = Arc<Mutex<SyncView>>;

/// The running sync as the rest of the node holds it.
#[derive(Debug, Clone)]
pub struct Handle {
    /// What `anylb cluster` shows.
    pub view: View,
    /// What it has taken over, and whether the node may announce.
    pub takeover: watch::Receiver<Takeover>,
    leave: Arc<Notify>,
}

impl Handle {
    /// Tells the other nodes this one is stopping, so that its successor takes over at once; the sync stops.
    pub async fn leave(&self) {
        self.leave.notify_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The running sync of one node.
struct Node {
    me: usize,
    cfg: ClusterSync,
    names: Vec<String>,
    addrs: Vec<Option<SocketAddr>>,
    replicas: usize,
    channels: Vec<Option<Channel>>,
    heard: Vec<Option<Instant>>,
    /// It said it was stopping, and has not been heard since.
    left: Vec<bool>,
    /// Data received from the peer since our last acknowledgement to it.
    ack_due: Vec<bool>,
    serves_me: Vec<bool>,
    adopted: BTreeSet<usize>,
    released: BTreeSet<usize>,
    /// When each was last given back.
    released_at: HashMap<usize, Instant>,
    held: Vec<HashMap<ClientKey, Record>>,
    started: Instant,
    /// When this node's sync loop last ran (a pause of the whole node shows as a gap).
    awake: Instant,
    /// It has been ready once: from then on it keeps announcing.
    was_ready: bool,
    last_change: Option<Instant>,
    view: View,
    takeover: watch::Sender<Takeover>,
}

/// A record's client tuple: protocol, client address and port, VIP and port.
type ClientKey = (u8, [u8; 16], u16, [u8; 16], u16);

/// A key for a record: its client tuple.
fn key_of(r: &Record) -> ClientKey {
    (r.proto, r.client, r.cport, r.vip, r.vport)
}

impl Node {
    fn alive(&self, i: usize, now: Instant) -> bool {
        let dead_after = self.cfg.settings.dead_after.get();
        i == self.me
            || !self.left[i]
                && self.heard[i].map_or(now.saturating_duration_since(self.started) < dead_after, |t| {
                    now.saturating_duration_since(t) < dead_after
                })
    }

    /// Notes that the loop runs at `now`. After a pause of this node's own (stopped, starved) longer than two
    /// heartbeats, the other nodes' silence is partly ours: they get a fresh window instead of being taken over
    /// (their heartbeats may be waiting in our socket), and the node's addresses are announced again (its
    /// successor may have served them meanwhile).
    fn wake(&mut self, now: Instant, runtime: &Runtime) {
        if now.saturating_duration_since(self.awake) > self.cfg.settings.heartbeat.get() * 2 {
            tracing::warn!(paused = ?now.saturating_duration_since(self.awake), "sync: this node was paused; no judgement of the others across it");
            for h in self.heard.iter_mut().flatten() {
                *h = now;
            }
            runtime.announce_again();
        }
        self.awake = now;
    }

    fn members(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// Takes over the lost nodes this node succeeds, releases the ones back, and says when it is ready.
    fn decide(&mut self, now: Instant) {
        let names = self.members();
        let alive: Vec<bool> = (0..self.names.len()).map(|i| self.alive(i, now)).collect();
        let idx = |n: &str| names.iter().position(|x| *x == n);
        let mut adopted = BTreeSet::new();
        for (o, owner) in names.iter().enumerate() {
            if o == self.me || alive[o] {
                continue;
            }
            let succ = successor(owner, &names, self.replicas, |n| idx(n).is_some_and(|i| alive[i]));
            if succ.and_then(idx) == Some(self.me) {
                adopted.insert(o);
            }
        }
        let changed = adopted != self.adopted;
        if changed {
            for o in adopted.difference(&self.adopted) {
                tracing::warn!(node = %self.names[*o], "sync: node lost; serving its local addresses and connections");
            }
            for o in self.adopted.difference(&adopted) {
                tracing::info!(node = %self.names[*o], "sync: node back; its local addresses are released");
                self.released.insert(*o);
                self.released_at.insert(*o, now);
            }
            for o in &adopted {
                self.released.remove(o);
            }
        }
        let served_elsewhere = (0..alive.len()).any(|i| i != self.me && alive[i] && self.serves_me[i]);
        let settled = now.saturating_duration_since(self.started) >= self.cfg.settings.dead_after.get() * 2;
        let pools = |set: &BTreeSet<usize>| -> Vec<(IpNet, u16, u16)> {
            set.iter()
                .flat_map(|o| self.cfg.members[*o].pools.iter().copied())
                .collect()
        };
        // Ready once resynced with its addresses its own; then it stays ready (announcing), whatever another
        // node claims for a moment.
        self.was_ready |= settled && !served_elsewhere;
        let next = Takeover {
            adopted: pools(&adopted),
            released: pools(&self.released),
            withhold_lips: served_elsewhere || !settled,
            ready: self.was_ready,
        };
        let newly = adopted.difference(&self.adopted).count() as u64;
        self.adopted = adopted;
        if changed {
            self.last_change = Some(now);
        }
        self.takeover.send_if_modified(|t| {
            if *t == next {
                false
            } else {
                *t = next.clone();
                true
            }
        });
        if let Ok(mut v) = self.view.lock() {
            v.takeovers += newly;
            v.ready = next.ready;
        }
    }

    /// The nodes whose addresses this node serves, and those it gave back in the last three heartbeats: an
    /// owner that sees its bit withholds its addresses until the bit is gone and then announces them again, so
    /// that no neighbour cache is left pointing here however short the takeover was.
    fn adopted_bits(&self, now: Instant) -> u32 {
        let recent = self.cfg.settings.heartbeat.get() * 3;
        self.adopted
            .iter()
            .chain(
                self.released_at
                    .iter()
                    .filter(|(_, t)| now.saturating_duration_since(**t) < recent)
                    .map(|(o, _)| o),
            )
            .filter(|o| **o < 32)
            .fold(0, |b, o| b | (1 << *o))
    }

    /// Publishes the per-peer view.
    fn publish(&self, now: Instant) {
        let names = self.members();
        let mine = holders(names[self.me], &names, self.replicas);
        let peers = (0..names.len())
            .filter(|i| *i != self.me)
            .map(|i| PeerView {
                name: self.names[i].clone(),
                address: self.addrs[i],
                alive: self.alive(i, now),
                last_heard_ms: self.heard[i].map(|t| now.saturating_duration_since(t).as_millis() as u64),
                holds_ours: mine.contains(&names[i]),
                we_hold: holders(names[i], &names, self.replicas).contains(&names[self.me]),
                records_held: self.held[i].len(),
                taken_over: self.adopted.contains(&i),
                serves_ours: self.serves_me[i],
                in_flight: self.channels[i].as_ref().map_or(0, Channel::in_flight),
                counters: self.channels[i].as_ref().map(|c| c.counters).unwrap_or_default(),
            })
            .collect();
        if let Ok(mut v) = self.view.lock() {
            v.peers = peers;
            v.last_change_ago_ms = self
                .last_change
                .map(|t| now.saturating_duration_since(t).as_millis() as u64);
        }
    }
}

/// Starts the sync of node `me` (its index among `cfg.members`) with `key`; returns its handle and its task.
pub async fn start(
    cfg: ClusterSync,
    me: usize,
    key: &[u8],
    runtime: Arc<Runtime>,
) -> std::io::Result<(Handle, tokio::task::JoinHandle<()>)> {
    let port = cfg.settings.port;
    let addrs: Vec<Option<SocketAddr>> = cfg
        .members
        .iter()
        .map(|m| m.address.map(|a| SocketAddr::new(a, port)))
        .collect();
    let bind = addrs
        .get(me)
        .copied()
        .flatten()
        .ok_or_else(|| std::io::Error::other("this node has no sync_address"))?;
    let socket = UdpSocket::bind(bind).await?;
    let epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| (d.as_millis() as u32) | 1);
    let key = Key::new(key);
    let n = cfg.members.len();
    let names: Vec<String> = cfg.members.iter().map(|m| m.name.clone()).collect();
    let replicas = cfg
        .settings
        .replicas
        .map_or(n.saturating_sub(1), usize::from)
        .max(1);
    let channels = (0..n)
        .map(|i| (i != me).then(|| Channel::new(key.clone(), me as u16, epoch, Settings::default())))
        .collect();
    let view = Arc::new(Mutex::new(SyncView {
        node: names[me].clone(),
        ready: false,
        peers: Vec::new(),
        takeovers: 0,
        last_change_ago_ms: None,
        bad_tag: 0,
        malformed: 0,
        strangers: 0,
    }));
    let (tx, rx) = watch::channel(Takeover {
        withhold_lips: true,
        ..Takeover::default()
    });
    let node = Node {
        me,
        names,
        addrs,
        replicas,
        channels,
        heard: vec![None; n],
        left: vec![false; n],
        ack_due: vec![false; n],
        serves_me: vec![false; n],
        adopted: BTreeSet::new(),
        released: BTreeSet::new(),
        released_at: HashMap::new(),
        held: vec![HashMap::new(); n],
        started: Instant::now(),
        awake: Instant::now(),
        was_ready: false,
        last_change: None,
        view: view.clone(),
        takeover: tx,
        cfg,
    };
    tracing::info!(address = %bind, members = n, replicas, "connection sync listening");
    let leave = Arc::new(Notify::new());
    let task = tokio::spawn(run(node, socket, key, runtime, leave.clone()));
    Ok((
        Handle {
            view,
            takeover: rx,
            leave,
        },
        task,
    ))
}

/// The sync loop: every few milliseconds the workers' records out and resends; heartbeats; datagrams in.
async fn run(mut node: Node, socket: UdpSocket, key: Key, runtime: Arc<Runtime>, leave: Arc<Notify>) {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut beat = tokio::time::interval(node.cfg.settings.heartbeat.get());
    let mut buf = vec![0u8; 65536];
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    let names: Vec<String> = node.names.clone();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mine: Vec<usize> = holders(refs[node.me], &refs, node.replicas)
        .iter()
        .filter_map(|h| refs.iter().position(|x| x == h))
        .collect();
    loop {
        for (i, d) in out.drain(..) {
            if let Some(a) = node.addrs[i] {
                let _ = socket.send_to(&d, a).await;
            }
        }
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                node.wake(now, &runtime);
                let records = runtime.sync_records();
                let mut produced = Vec::new();
                for &h in &mine {
                    // A lost holder gets nothing (and no resends) until it is heard again; then it gets
                    // everything again.
                    if !node.alive(h, now) {
                        continue;
                    }
                    if let Some(c) = node.channels[h].as_mut() {
                        for r in &records {
                            c.push(r, now, &mut produced);
                        }
                        c.flush(now, &mut produced);
                        c.poll(now, &mut produced);
                        out.extend(produced.drain(..).map(|d| (h, d)));
                    }
                }
                // Data is acknowledged within a tick, well before the sender's resend timeout.
                let bits = node.adopted_bits(now);
                for (i, c) in node.channels.iter().enumerate() {
                    if let (Some(c), true) = (c, std::mem::take(&mut node.ack_due[i])) {
                        out.push((i, c.heartbeat(bits)));
                    }
                }
            }
            _ = beat.tick() => {
                let now = Instant::now();
                node.wake(now, &runtime);
                let bits = node.adopted_bits(now);
                for (i, c) in node.channels.iter().enumerate() {
                    let Some(c) = c else { continue };
                    out.push((i, c.heartbeat(bits)));
                    // Until a holder of our records is heard, ask it for them (we may be back after a restart).
                    if node.heard[i].is_none() && mine.contains(&i) {
                        out.push((i, c.resync_request()));
                    }
                }
                node.decide(now);
                node.publish(now);
            }
            () = leave.notified() => {
                tracing::info!("sync: leaving; the other nodes take over now");
                for (i, c) in node.channels.iter().enumerate() {
                    if let (Some(c), Some(a)) = (c, node.addrs[i]) {
                        let _ = socket.send_to(&c.leave(), a).await;
                    }
                }
                return;
            }
            r = socket.recv_from(&mut buf) => {
                let Ok((len, from)) = r else { continue };
                receive(&mut node, &key, &buf[..len], from, &runtime, &mut out);
            }
        }
    }
}

/// One datagram from another node.
fn receive(
    node: &mut Node,
    key: &Key,
    b: &[u8],
    from: SocketAddr,
    runtime: &Runtime,
    out: &mut Vec<(usize, Vec<u8>)>,
) {
    let d = match open(key, b) {
        Ok(d) => d,
        Err(e) => {
            if let Ok(mut v) = node.view.lock() {
                match e {
                    DatagramError::BadTag => v.bad_tag += 1,
                    DatagramError::Malformed | DatagramError::Record(_) => v.malformed += 1,
                }
            }
            tracing::debug!(%from, error = %e, "sync datagram refused");
            return;
        }
    };
    let i = usize::from(d.sender);
    let known =
        i != node.me && node.addrs.get(i).copied().flatten().map(|a| a.ip()) == Some(canonical(from.ip()));
    if !known {
        if let Ok(mut v) = node.view.lock() {
            v.strangers += 1;
        }
        return;
    }
    let now = Instant::now();
    node.wake(now, runtime);
    let was_alive = node.alive(i, now);
    node.heard[i] = Some(now);
    node.left[i] = d.kind == Kind::Leave;
    // Data, new or again (our acknowledgement may have been lost), is acknowledged on the next tick.
    node.ack_due[i] |= d.kind == Kind::Data;
    if d.kind == Kind::Ack {
        node.serves_me[i] = node.me < 32 && d.seq & (1 << node.me) != 0;
    }
    let Some(c) = node.channels[i].as_mut() else {
        return;
    };
    let before = c.peer_epoch();
    let epoch = d.epoch;
    let asks = d.kind == Kind::Resync;
    let received = c.receive(d);
    let restarted = before.is_some_and(|e| e != epoch);
    if restarted {
        // The peer restarted with empty tables: the workers send it all our synced connections again.
        tracing::info!(node = %node.names[i], "sync: peer restarted; sending it our connections again");
        runtime.resync_all();
    }
    if restarted || asks {
        // Its own records, which it lost: on its request, and on any first datagram of its new run (its
        // request may come after it has heard us, when it no longer asks).
        bulk_resync(node, i, now, out);
    }
    let Some(d) = received else {
        if !was_alive {
            node.decide(now);
            back(runtime);
        }
        return;
    };
    match d.kind {
        Kind::Data => {
            for r in &d.records {
                match r.op {
                    Op::Upsert => {
                        node.held[i].insert(key_of(r), *r);
                    }
                    Op::Delete => {
                        node.held[i].remove(&key_of(r));
                    }
                }
            }
            runtime.apply_synced(&d.records);
        }
        Kind::Resync => {}
        Kind::Leave => tracing::info!(node = %node.names[i], "sync: node stopping; serving its connections"),
        Kind::Ack => {}
    }
    if was_alive != node.alive(i, now) {
        node.decide(now);
    }
    if !was_alive && node.alive(i, now) {
        back(runtime);
    }
}

/// Sends peer `i` everything held for it.
fn bulk_resync(node: &mut Node, i: usize, now: Instant, out: &mut Vec<(usize, Vec<u8>)>) {
    tracing::info!(node = %node.names[i], records = node.held[i].len(), "sync: bulk resync");
    let mut produced = Vec::new();
    let held: Vec<Record> = node.held[i].values().copied().collect();
    if let Some(c) = node.channels[i].as_mut() {
        for r in &held {
            c.push(r, now, &mut produced);
        }
        c.flush(now, &mut produced);
    }
    out.extend(produced.into_iter().map(|p| (i, p)));
}

/// A lost node is heard again: it may have served our addresses while we did not hear it (or we were the ones
/// paused), so the neighbours' caches are pointed back at us; and it got none of our records meanwhile, so it
/// gets them all again.
fn back(runtime: &Runtime) {
    runtime.announce_again();
    runtime.resync_all();
}

/// An address with an IPv4-mapped IPv6 address turned into IPv4.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}
