//! The immutable configuration a worker forwards with: ports and their addresses, services with their effective
//! backend weights and Maglev tables, local-address pools, the route table and static neighbours.
//!
//! The control plane builds a new snapshot on every change (topology reload, a health transition, a drain) and
//! publishes it with a pointer swap; a worker picks it up between bursts. [`Builder`] keeps a registry that gives
//! every (service, backend) a stable id across snapshots, so per-backend connection counts survive reloads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::acl::PrefixList;
use anylb_conf::{ClientAddress, Encapsulation, Forwarding, NodeConfig, Protocol};

use crate::flow::{addr, is_v4, Addr, AddrTable, FastMap};
use crate::route::{NextHop, Origin, Route, Table};
use crate::sched::{self, backend_key, Maglev};
use crate::tcp_state::TickTimeouts;
use crate::wire::ethernet::Mac;
use crate::wire::proto;

/// Milliseconds per connection-table tick.
pub const TICK_MS: u64 = 64;

/// A dataplane port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Name from the topology.
    pub name: String,
    /// MAC address.
    pub mac: Mac,
    /// MTU.
    pub mtu: u16,
    /// VLAN tag of frames sent on it.
    pub vlan: Option<u16>,
    /// The node's own addresses on it, with prefix length.
    pub addrs: Vec<(Addr, u8)>,
}

/// A backend as the dataplane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Address.
    pub addr: Addr,
    /// Port (0: the client's destination port).
    pub port: u16,
    /// Effective weight (0 = down or drained).
    pub weight: u32,
    /// Stable id across snapshots.
    pub uid: u32,
    /// Connections on one worker above which it takes no new ones (0: no limit): the topology's upper
    /// threshold shared out over the workers.
    pub upper: u32,
    /// Once over, connections on one worker below which it takes new ones again.
    pub lower: u32,
}

/// A service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: Addr,
    /// Port, 0 for all.
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Forwarding mode.
    pub forwarding: Forwarding,
    /// How a Full-NAT backend learns the client's address.
    pub client_address: ClientAddress,
    /// UDP: how many first datagrams of a flow carry the client's address (`u32::MAX`: every one).
    pub client_address_datagrams: u32,
    /// Encapsulation of tunnel forwarding.
    pub encap: Encap,
    /// Scheduler.
    pub sched: sched::Kind,
    /// Backends, in topology order.
    pub backends: Vec<Backend>,
    /// Effective weights, parallel to `backends`.
    pub weights: Vec<u32>,
    /// Maglev table over `backends`.
    pub maglev: Maglev,
    /// Client persistence in ticks.
    pub persistence: Option<u32>,
    /// Timeouts in ticks.
    pub timeouts: TickTimeouts,
    /// QUIC routing by server ID, when the service carries QUIC.
    pub quic: Option<QuicRoute>,
    /// Clients allowed to open connections (empty: every client).
    pub allow: PrefixList,
    /// Clients whose new connections are dropped.
    pub deny: PrefixList,
    /// The new-connection rate limit, per worker.
    pub rate_limit: Option<RateLimit>,
    /// SYNs are answered with cookies by the node (see [`SynProxyPolicy`]).
    pub syn_proxy: bool,
}

/// A new-connection rate limit as one worker applies it: its share of the rate, the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second on this worker.
    pub per_sec: u32,
    /// Most tokens held.
    pub burst: u32,
    /// A bucket per client address.
    pub per_client: bool,
    /// Answer excess TCP SYNs with a RST.
    pub reset: bool,
}

/// Where a QUIC connection ID carries the server ID, and which backend each ID names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicRoute {
    /// Bytes of the connection ID before the server ID.
    pub offset: usize,
    /// Length of the server ID.
    pub len: usize,
    /// Server ID → backend index.
    pub ids: FastMap<u64, u16>,
}

/// Tunnel encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// IP-in-IP / IPv6-in-IPv6.
    Ip,
    /// GUE variant 1 to this UDP port.
    Gue(u16),
}

/// A source-NAT gateway rule, resolved.
#[derive(Debug, Clone)]
pub struct Snat {
    /// Rule name.
    pub name: String,
    /// Source prefixes matched, as (network, prefix length in 128-bit terms).
    pub sources: Vec<(Addr, u8)>,
    /// Protocols matched: TCP, UDP, ICMP echo.
    pub tcp: bool,
    /// See `tcp`.
    pub udp: bool,
    /// See `tcp`.
    pub icmp: bool,
    /// The port the translated traffic must leave through.
    pub out_port: u16,
    /// Translation addresses with their port range.
    pub pool: Vec<(Addr, u16, u16)>,
}

impl Snat {
    /// Whether the rule matches a packet from `src` over `proto`.
    pub fn matches(&self, src: &Addr, proto: u8) -> bool {
        let p = match proto {
            proto::TCP => self.tcp,
            proto::UDP => self.udp,
            proto::ICMP | proto::ICMPV6 => self.icmp,
            _ => false,
        };
        p && self
            .sources
            .iter()
            .any(|(net, len)| prefix_contains(net, *len, src))
    }
}

/// Whether `a` is inside `net/len` (128-bit form).
fn prefix_contains(net: &Addr, len: u8, a: &Addr) -> bool {
    let full = usize::from(len / 8);
    if net[..full] != a[..full] {
        return false;
    }
    let rest = len % 8;
    rest == 0 || (net[full] ^ a[full]) & (0xffu8 << (8 - rest)) == 0
}

/// What a local address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// A VIP.
    Vip,
    /// A Full-NAT local address.
    Lip,
    /// A lost node's local address given back to it: frames still addressed here (a backend's neighbour
    /// cache not yet updated) translate for the connections held here, but ARP/ND is its owner's again.
    Released,
    /// The node's own address on a port (the kernel answers for it).
    Own(u16),
    /// Not ours, but possibly the reply of a NAT-mode connection the node is the gateway for. Never stored in
    /// [`Snapshot::local`].
    Transit,
}

/// Everything a worker needs, immutable.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases with every build.
    pub generation: u64,
    /// Cluster hash seed (Maglev, flow hashes).
    pub seed: u64,
    /// Worker count and the port-slice mask.
    pub workers: usize,
    /// See [`crate::pool::slice_mask`].
    pub mask: u16,
    /// Connection-table capacity per worker.
    pub conn_capacity: u32,
    /// Limits of each worker's fragment table.
    pub fragments: crate::frag::Limits,
    /// Clients whose new connections to any VIP of the node are dropped.
    pub deny: PrefixList,
    /// Connection sync, when on: which connections are synced and how often.
    pub sync: Option<SyncPolicy>,
    /// The SYN-proxy's key and SYN-ACK, when the cluster sets them.
    pub syn_proxy: Option<SynProxyPolicy>,
    /// Ports.
    pub ports: Vec<Port>,
    /// Services.
    pub services: Vec<Service>,
    svc_index: FastMap<(Addr, u8, u16), u16>,
    /// Addresses the dataplane answers for (looked up for every packet).
    pub local: AddrTable<Local>,
    /// Local-address pools as (address, first port, last port).
    pub lips: Vec<(Addr, u16, u16)>,
    /// Route table (connected subnets and static routes; received routes are added by the control plane).
    pub routes: Table,
    /// Static neighbours as (port, address, MAC).
    pub static_neighbors: Vec<(u16, Addr, Mac)>,
    /// Backend uid → (service index, backend index), for the CLI.
    pub uid_index: HashMap<u32, (u16, u16)>,
    /// Some service uses NAT forwarding: TCP and UDP to addresses that are not ours are looked up in the
    /// connection table (the backends' replies) before going to the kernel.
    pub transit: bool,
    /// Source-NAT gateway rules of this node, in topology order (the first match wins).
    pub snat: Vec<Snat>,
    /// The cluster's default timeouts (source-NAT flows).
    pub default_timeouts: TickTimeouts,
    /// Other nodes' addresses on this node's connected subnets, with the port that reaches them: TCP segments
    /// to a VIP without a connection here are handed to one of them ("second chance").
    pub peers: Vec<(u16, Addr)>,
    /// Next hops of routes (the routers traffic comes from): only frames from them get a second chance.
    pub routers: Vec<(u16, Addr)>,
}

impl Snapshot {
    /// The service for a packet to `dst:dport` over `proto`: an exact port first, then an all-ports service.
    #[inline]
    pub fn service(&self, dst: &Addr, proto: u8, dport: u16) -> Option<u16> {
        self.svc_index
            .get(&(*dst, proto, dport))
            .or_else(|| self.svc_index.get(&(*dst, proto, 0)))
            .copied()
    }

    /// What `a` is to this node, if anything.
    #[inline]
    pub fn local(&self, a: &Addr) -> Option<Local> {
        self.local.get(a)
    }

    /// The first own address of `port` in the family of `like` (source of ICMP errors and solicitations).
    pub fn port_addr(&self, port: u16, v4: bool) -> Option<Addr> {
        self.ports
            .get(usize::from(port))?
            .addrs
            .iter()
            .find(|(a, _)| is_v4(a) == v4)
            .map(|(a, _)| *a)
    }
}

/// Why a snapshot could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// More ports than MAC addresses given.
    #[error("port {0} has no MAC address")]
    NoMac(String),
    /// A name the topology validation should have caught.
    #[error("unknown port {0:?}")]
    UnknownPort(String),
    /// Too many services or backends for the dataplane's indices.
    #[error("too many {0}")]
    TooMany(&'static str),
}

/// What a SYN-proxy mints its cookies with and offers clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynProxyPolicy {
    /// The cookie key, the same on every node.
    pub key: crate::syncookie::CookieKey,
    /// The key before the last rotation, and the last time slot its cookies are still accepted in.
    pub previous: Option<(crate::syncookie::CookieKey, u64)>,
    /// Window scale offered to a client that offers one.
    pub wscale: u8,
    /// Window of the SYN-ACK.
    pub window: u16,
}

/// Which connections a node syncs to its holders, in table ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// A connection is synced once it has lived this long.
    pub threshold: u32,
    /// And again this often while it lives.
    pub refresh: u32,
}

/// A duration in table ticks (at least one).
fn ticks(d: std::time::Duration) -> u32 {
    u32::try_from((d.as_millis() / u128::from(TICK_MS)).max(1)).unwrap_or(u32::MAX)
}

/// Health and admin state that overrides topology weights.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// (service, backend address, backend port) → weight (0 = down or drained).
    pub weights: HashMap<(String, IpAddr, u16), u32>,
    /// Routes learnt by BGP: prefix → ECMP next hops. Static routes of the topology win over them, except
    /// fallback ones, which they replace.
    pub routes: Vec<(ipnet::IpNet, Vec<IpAddr>)>,
    /// Local-address pools of lost nodes taken over (prefix, first and last port).
    pub adopted: Vec<(ipnet::IpNet, u16, u16)>,
    /// Local-address pools of nodes taken over and given back since (their frames still translate here).
    pub released: Vec<(ipnet::IpNet, u16, u16)>,
    /// The node's own local addresses are not answered for yet (it is back, and its successor still serves
    /// them until it has resynced).
    pub withhold_lips: bool,
}

/// Builds snapshots, keeping backend ids stable.
#[derive(Debug, Default)]
pub struct Builder {
    uids: HashMap<(String, Addr, u16), u32>,
    generation: u64,
    cookie_secret: Option<Vec<u8>>,
    previous_cookie_key: Option<(crate::syncookie::CookieKey, u64)>,
}

impl Builder {
    /// Sets the secret of the SYN cookies (the content of `cluster.syn_proxy.key_file`, which a node reads).
    /// Without one (replay, tests) the cluster's name keys them. Setting another secret rotates the key: cookies
    /// of the one it replaces stay good for as long as they would have (until the slot after `now_unix_ms`'s),
    /// so handshakes in progress complete. Returns whether the secret changed.
    pub fn set_cookie_secret(&mut self, secret: Vec<u8>, now_unix_ms: u64) -> bool {
        if self.cookie_secret.as_ref() == Some(&secret) {
            return false;
        }
        if let Some(old) = self.cookie_secret.replace(secret) {
            let until = crate::syncookie::slot_of(now_unix_ms) + 1;
            self.previous_cookie_key = Some((crate::syncookie::CookieKey::new(&old), until));
        }
        true
    }

    /// Builds a snapshot of `cfg` for `workers` workers; `macs` are the ports' MAC addresses in topology order.
    pub fn build(
        &mut self,
        cfg: &NodeConfig,
        macs: &[Mac],
        workers: usize,
        ov: &Overrides,
    ) -> Result<Snapshot, BuildError> {
        self.generation += 1;
        let node = &cfg.node;
        let port_no = |name: &str| port_index(cfg, name);
        let Connected {
            ports,
            mut routes,
            mut local,
        } = connected(cfg, macs)?;
        let mut routers = add_routes(cfg, ov, &mut routes)?;
        let lips = pools(cfg, &mut local);
        // The local addresses of lost nodes this node has taken over answer here too (ARP/ND, replies), but new
        // connections never take ports from them.
        for (prefix, _, _) in &ov.adopted {
            for a in prefix.hosts().chain(std::iter::once(prefix.network())) {
                local.entry(addr(a)).or_insert(Local::Lip);
            }
        }
        for (prefix, _, _) in &ov.released {
            for a in prefix.hosts().chain(std::iter::once(prefix.network())) {
                local.entry(addr(a)).or_insert(Local::Released);
            }
        }
        if ov.withhold_lips {
            // Not answered for, but a frame that still comes here translates if its connection is known.
            for (a, _, _) in &lips {
                local.insert(*a, Local::Released);
            }
        }
        let mut peers = Vec::new();
        for a in &cfg.peers {
            let on = node
                .dataplane
                .ports
                .iter()
                .position(|p| p.addresses.iter().any(|n| n.contains(a)));
            if let Some(port) = on {
                peers.push((port as u16, addr(*a)));
            }
        }
        let snat = snat_rules(cfg, &mut local)?;
        let mut static_neighbors = Vec::new();
        for n in &node.neighbors {
            static_neighbors.push((port_no(&n.port)?, addr(n.address), n.mac.0));
        }

        let Services {
            services,
            svc_index,
            uid_index,
        } = self.services(cfg, ov, &mut local, workers)?;
        let transit = services.iter().any(|s| s.forwarding == Forwarding::Nat);
        Ok(Snapshot {
            transit,
            snat,
            peers,
            routers: {
                routers.sort_unstable();
                routers.dedup();
                routers
            },
            default_timeouts: TickTimeouts::new(&cfg.timeouts, TICK_MS),
            generation: self.generation,
            seed: cfg.maglev.seed,
            workers: workers.max(1),
            mask: crate::pool::slice_mask(workers),
            conn_capacity: node.dataplane.connections_per_worker(),
            fragments: fragment_limits(node.dataplane.fragments),
            deny: prefix_list(&node.deny),
            syn_proxy: cfg.syn_proxy.as_ref().map(|sp| SynProxyPolicy {
                key: crate::syncookie::CookieKey::new(
                    self.cookie_secret.as_deref().unwrap_or(cfg.cluster.as_bytes()),
                ),
                previous: self.previous_cookie_key,
                wscale: sp.wscale.min(14),
                window: sp.window,
            }),
            sync: cfg.sync.as_ref().map(|s| SyncPolicy {
                threshold: ticks(s.settings.threshold.get()),
                refresh: ticks(s.settings.refresh.get()),
            }),
            ports,
            services,
            svc_index,
            local: AddrTable::new(local),
            lips,
            routes,
            static_neighbors,
            uid_index,
        })
    }

    /// The services of `cfg` (source-NAT rules are not services), their index by VIP, protocol and port, and
    /// backend ids (stable across snapshots) to their place; VIPs are added to `local`.
    fn services(
        &mut self,
        cfg: &NodeConfig,
        ov: &Overrides,
        local: &mut FastMap<Addr, Local>,
        workers: usize,
    ) -> Result<Services, BuildError> {
        let mut services = Vec::new();
        let mut svc_index = FastMap::default();
        let mut uid_index = HashMap::new();
        if cfg.services.len() >= usize::from(u16::MAX) {
            return Err(BuildError::TooMany("services"));
        }
        for s in &cfg.services {
            if s.forwarding == Forwarding::Snat {
                continue;
            }
            if s.backends.len() >= usize::from(u16::MAX) {
                return Err(BuildError::TooMany("backends in one service"));
            }
            let vip = addr(s.vip);
            let vport = s.port.port().unwrap_or(0);
            let p = match s.protocol {
                Protocol::Tcp => proto::TCP,
                Protocol::Udp => proto::UDP,
            };
            let mut backends = Vec::new();
            for (bi, b) in s.backends.iter().enumerate() {
                let port = b.port.or(s.port.port()).unwrap_or(0);
                let next = self.uids.len() as u32;
                let uid = *self
                    .uids
                    .entry((s.name.clone(), addr(b.address), port))
                    .or_insert(next);
                let base = if b.drained { 0 } else { b.weight() };
                let weight = ov
                    .weights
                    .get(&(s.name.clone(), b.address, port))
                    .map_or(base, |&w| w.min(base));
                uid_index.insert(uid, (services.len() as u16, bi as u16));
                // A worker's share of the thresholds (rounded up: a backend is never refused below its limit).
                let share = |t: u32| t.div_ceil(workers.max(1) as u32);
                let upper = b.upper_threshold.map_or(0, share);
                backends.push(Backend {
                    addr: addr(b.address),
                    port,
                    weight,
                    uid,
                    upper,
                    lower: b.lower_threshold.map_or(upper * 3 / 4, share),
                });
            }
            let keys: Vec<([u8; 18], u32)> = backends
                .iter()
                .map(|b| (backend_key(&b.addr, b.port), b.weight))
                .collect();
            let maglev = Maglev::build(&keys, cfg.maglev.table_size, cfg.maglev.seed);
            let timeouts = TickTimeouts::new(&s.timeouts.unwrap_or_default().apply(cfg.timeouts), TICK_MS);
            let persistence = s
                .persistence
                .map(|d| u32::try_from((d.as_millis() / TICK_MS).max(1)).unwrap_or(u32::MAX));
            svc_index.insert((vip, p, vport), services.len() as u16);
            local.insert(vip, Local::Vip);
            let weights = backends.iter().map(|b| b.weight).collect();
            services.push(Service {
                name: s.name.clone(),
                vip,
                port: vport,
                proto: p,
                forwarding: s.forwarding,
                client_address: s.client_address,
                client_address_datagrams: match s.client_address_datagrams.unwrap_or(3) {
                    0 => u32::MAX,
                    n => n,
                },
                encap: match s.encapsulation {
                    Some(Encapsulation::Gue) => Encap::Gue(s.gue_port()),
                    _ => Encap::Ip,
                },
                sched: s.scheduler.into(),
                backends,
                weights,
                maglev,
                persistence,
                timeouts,
                allow: prefix_list(&s.allow),
                deny: prefix_list(&s.deny),
                rate_limit: s.rate_limit.map(|rl| {
                    let n = workers.max(1) as u32;
                    RateLimit {
                        per_sec: rl.cps.div_ceil(n),
                        burst: rl.burst.unwrap_or(rl.cps).div_ceil(n).max(1),
                        per_client: rl.per_client.unwrap_or(false),
                        reset: rl.action == Some(anylb_conf::LimitAction::Reset),
                    }
                }),
                syn_proxy: s.syn_proxy == Some(true),
                quic: s.quic.map(|q| QuicRoute {
                    offset: usize::from(q.offset()),
                    len: usize::from(q.server_id_length),
                    ids: s
                        .backends
                        .iter()
                        .enumerate()
                        .filter_map(|(bi, b)| {
                            let (id, _) = anylb_conf::parse_server_id(b.server_id.as_deref()?)?;
                            Some((id, bi as u16))
                        })
                        .collect(),
                }),
            });
        }
        Ok(Services {
            services,
            svc_index,
            uid_index,
        })
    }
}

/// A prefix list from the topology's prefixes.
fn prefix_list(nets: &[ipnet::IpNet]) -> PrefixList {
    let v: Vec<(Addr, u8)> = nets.iter().map(|n| (addr(n.network()), n.prefix_len())).collect();
    PrefixList::new(v.iter().map(|(a, l)| (a, *l)))
}

/// A worker's fragment-table limits from the topology, defaults filled in.
fn fragment_limits(t: Option<anylb_conf::FragmentLimits>) -> crate::frag::Limits {
    let d = crate::frag::Limits::default();
    let t = t.unwrap_or(anylb_conf::FragmentLimits {
        datagrams: None,
        parked: None,
        timeout: None,
    });
    crate::frag::Limits {
        datagrams: t.datagrams.map_or(d.datagrams, |n| n as usize),
        parked: t.parked.map_or(d.parked, |n| n as usize),
        parked_per_datagram: d.parked_per_datagram,
        timeout_ms: t.timeout.map_or(d.timeout_ms, |x| x.as_millis()),
    }
}

/// The ports of a node with the routes and addresses they bring.
struct Connected {
    ports: Vec<Port>,
    routes: Table,
    local: FastMap<Addr, Local>,
}

/// The services of a snapshot with their indexes.
struct Services {
    services: Vec<Service>,
    svc_index: FastMap<(Addr, u8, u16), u16>,
    uid_index: HashMap<u32, (u16, u16)>,
}

/// The index of the port named `name`.
fn port_index(cfg: &NodeConfig, name: &str) -> Result<u16, BuildError> {
    cfg.node
        .dataplane
        .ports
        .iter()
        .position(|p| p.name == name)
        .map(|i| i as u16)
        .ok_or_else(|| BuildError::UnknownPort(name.to_owned()))
}

/// The ports with their MACs, the connected routes of their subnets, and the node's own addresses.
fn connected(cfg: &NodeConfig, macs: &[Mac]) -> Result<Connected, BuildError> {
    let node = &cfg.node;
    let mut ports = Vec::new();
    let mut routes = Table::default();
    let mut local = FastMap::default();
    for (i, p) in node.dataplane.ports.iter().enumerate() {
        let mac = match p.mac {
            Some(m) => m.0,
            None => *macs.get(i).ok_or_else(|| BuildError::NoMac(p.name.clone()))?,
        };
        let addrs: Vec<(Addr, u8)> = p
            .addresses
            .iter()
            .map(|n| (addr(n.addr()), n.prefix_len()))
            .collect();
        for n in &p.addresses {
            let a = addr(n.network());
            routes.add_hops(
                &a,
                n.prefix_len(),
                &[NextHop {
                    via: None,
                    port: i as u16,
                }],
            );
            local.insert(addr(n.addr()), Local::Own(i as u16));
        }
        ports.push(Port {
            name: p.name.clone(),
            mac,
            mtu: p.mtu(),
            vlan: p.vlan,
            addrs,
        });
    }
    Ok(Connected { ports, routes, local })
}

/// Adds the static routes of the topology, then the received ones (`ov.routes`, whose next hops must be on a
/// connected subnet, eBGP single hop; a static route of the same prefix wins). Returns the routers: every
/// (port, next hop) of a route.
fn add_routes(cfg: &NodeConfig, ov: &Overrides, routes: &mut Table) -> Result<Vec<(u16, Addr)>, BuildError> {
    let node = &cfg.node;
    let port_no = |name: &str| port_index(cfg, name);
    let mut routers: Vec<(u16, Addr)> = Vec::new();
    for r in &node.routes {
        let hops = r
            .via
            .iter()
            .map(|v| {
                let via = addr(*v);
                let port = match &r.port {
                    Some(name) => port_no(name)?,
                    None => routes.next_hop(&via, 0).map(|h| h.port).unwrap_or(0),
                };
                Ok(NextHop { via: Some(via), port })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        routers.extend(hops.iter().filter_map(|h| Some((h.port, h.via?))));
        let origin = if r.fallback {
            Origin::Fallback
        } else {
            Origin::Static
        };
        routes.insert(
            &addr(r.prefix.network()),
            r.prefix.prefix_len(),
            Route { hops, origin },
        );
    }
    for (prefix, via) in &ov.routes {
        // A static route wins over a received one of the same prefix, unless it is only a fallback (the
        // received route then replaces it; `insert` overwrites).
        if node.routes.iter().any(|r| r.prefix == *prefix && !r.fallback) {
            continue;
        }
        // Next hops must be on a connected subnet (eBGP single hop); others are ignored.
        let hops: Vec<NextHop> = via
            .iter()
            .filter_map(|v| {
                let via = addr(*v);
                routes
                    .next_hop(&via, 0)
                    .filter(|h| h.via.is_none())
                    .map(|h| NextHop {
                        via: Some(via),
                        port: h.port,
                    })
            })
            .collect();
        if !hops.is_empty() {
            routers.extend(hops.iter().filter_map(|h| Some((h.port, h.via?))));
            let route = Route {
                hops,
                origin: Origin::Bgp,
            };
            routes.insert(&addr(prefix.network()), prefix.prefix_len(), route);
        }
    }
    Ok(routers)
}

/// The local addresses of the pools with their port ranges; they are added to `local`.
fn pools(cfg: &NodeConfig, local: &mut FastMap<Addr, Local>) -> Vec<(Addr, u16, u16)> {
    let node = &cfg.node;
    let mut lips = Vec::new();
    for pool in &node.local_addresses {
        let pr = pool.ports();
        for a in pool.prefix.hosts().chain(std::iter::once(pool.prefix.network())) {
            let a = addr(a);
            if !lips.iter().any(|(x, _, _)| *x == a) {
                lips.push((a, pr.start, pr.end));
                local.insert(a, Local::Lip);
            }
        }
    }
    lips
}

/// The source-NAT rules; their pool addresses are added to `local`.
fn snat_rules(cfg: &NodeConfig, local: &mut FastMap<Addr, Local>) -> Result<Vec<Snat>, BuildError> {
    let port_no = |name: &str| port_index(cfg, name);
    let mut snat = Vec::new();
    for r in &cfg.snat {
        let out_port = port_no(&r.out_port)?;
        let pr = r.ports.unwrap_or(anylb_conf::PortRange::DEFAULT_POOL);
        let mut pool = Vec::new();
        for n in &r.pool {
            for a in n.hosts().chain(std::iter::once(n.network())) {
                let a = addr(a);
                if !pool.iter().any(|(x, _, _)| *x == a) {
                    pool.push((a, pr.start, pr.end));
                    local.insert(a, Local::Lip);
                }
            }
        }
        let protos = r.protocols();
        snat.push(Snat {
            name: r.name.clone(),
            sources: r
                .sources
                .iter()
                .map(|n| {
                    let len = if n.addr().is_ipv4() {
                        n.prefix_len() + 96
                    } else {
                        n.prefix_len()
                    };
                    (addr(n.network()), len)
                })
                .collect(),
            tcp: protos.contains(&anylb_conf::SnatProtocol::Tcp),
            udp: protos.contains(&anylb_conf::SnatProtocol::Udp),
            icmp: protos.contains(&anylb_conf::SnatProtocol::Icmp),
            out_port,
            pool,
        });
    }
    Ok(snat)
}

/// A snapshot shared between the control plane and workers.
pub type Shared = Arc<Snapshot>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TOPOLOGY;
    use std::net::IpAddr;

    fn via(s: &Snapshot, dst: &str) -> Option<IpAddr> {
        let d: IpAddr = dst.parse().ok()?;
        s.routes
            .next_hop(&addr(d), 0)?
            .via
            .map(|v| crate::flow::to_ip(&v))
    }

    fn origin(s: &Snapshot, prefix: &str) -> Option<Origin> {
        let p: ipnet::IpNet = prefix.parse().ok()?;
        let len = if p.addr().is_ipv4() {
            p.prefix_len() + 96
        } else {
            p.prefix_len()
        };
        let a = addr(p.network());
        s.routes
            .routes()
            .find(|(l, k, _)| *l == len && *k == a)
            .map(|(_, _, r)| r.origin)
    }

    #[test]
    fn a_received_route_replaces_a_fallback_static_route_but_not_a_plain_one() {
        let cfg = anylb_conf::load_str(TOPOLOGY, "t.toml")
            .expect("topology")
            .resolve("lb1")
            .expect("node");
        let mut b = Builder::default();
        let macs = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
        let none = b.build(&cfg, &macs, 1, &Overrides::default()).expect("snapshot");
        assert_eq!(via(&none, "192.0.2.130"), "192.0.2.1".parse().ok());
        assert_eq!(origin(&none, "192.0.2.128/26"), Some(Origin::Fallback));
        assert_eq!(origin(&none, "192.0.2.0/28"), Some(Origin::Connected));
        let received = Overrides {
            routes: ["192.0.2.128/26", "198.51.100.0/24"]
                .iter()
                .map(|p| (p.parse().expect("prefix"), vec!["192.0.2.2".parse().expect("ip")]))
                .collect(),
            ..Overrides::default()
        };
        let bgp = b.build(&cfg, &macs, 1, &received).expect("snapshot");
        assert_eq!(
            via(&bgp, "192.0.2.130"),
            "192.0.2.2".parse().ok(),
            "BGP replaces the fallback"
        );
        assert_eq!(
            via(&bgp, "198.51.100.7"),
            "192.0.2.1".parse().ok(),
            "a plain static route wins"
        );
        // The session resets, the received route goes: the fallback is used again.
        let reset = b.build(&cfg, &macs, 1, &Overrides::default()).expect("snapshot");
        assert_eq!(via(&reset, "192.0.2.130"), "192.0.2.1".parse().ok());
    }
}
