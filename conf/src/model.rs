//! The typed topology: one file describes a whole anylb cluster — its defaults, every node (dataplane ports,
//! worker cores, local-address pools, static routes and neighbours, BGP), every service with its backends and
//! health check, and the SNAT rules.
//!
//! Every struct refuses unknown keys. Optional keys that have a cluster-wide default stay `None` here and are
//! filled in by [`crate::resolve`]; the accessors with the same name return the effective value.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::types::{Community, Duration, LargeCommunity, MacAddr, PortRange, PortSpec};

/// The whole cluster topology, as written in the TOML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Cluster-wide identity and defaults.
    pub cluster: Cluster,
    /// The anylb nodes; each runs `anylb run --node NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    /// Load-balanced services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Source-NAT gateway rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snat: Vec<SnatRule>,
}

/// Cluster identity and the defaults every node and service inherits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Name of the cluster, shown by the CLI.
    pub name: String,
    /// Default local ASN of every node's BGP speaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Default BGP timers.
    #[serde(default)]
    pub bgp: BgpDefaults,
    /// Default connection-table timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Maglev parameters; identical on every node so that every node picks the same backend for a flow.
    #[serde(default)]
    pub maglev: Maglev,
    /// Connection sync between the nodes (stateless-equivalent nodes, `docs/cluster.md`); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<Sync>,
    /// SYN-proxy settings of the services with `syn_proxy = true` (`docs/topology.md`); needed by them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<SynProxy>,
}

/// What every node's SYN-proxy shares: the key its SYN cookies are minted and checked with (so that a
/// handshake ECMP moves between nodes still completes), and what its SYN-ACK offers the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynProxy {
    /// File holding the secret of the SYN cookies, the same on every node (relative to the topology file).
    pub key_file: PathBuf,
    /// Window scale the SYN-ACK offers a client that offers one (default 7, at most 14); a backend that
    /// scales otherwise has its windows rescaled towards the client.
    #[serde(default = "SynProxy::default_wscale")]
    pub wscale: u8,
    /// Window of the SYN-ACK (default 65535).
    #[serde(default = "SynProxy::default_window")]
    pub window: u16,
}

impl SynProxy {
    fn default_wscale() -> u8 {
        7
    }
    fn default_window() -> u16 {
        65535
    }
}

/// Connection sync: every node streams its long-lived connections to its holders, and takes a lost node's
/// local addresses and connections over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    /// UDP port of the sync datagrams on every node's `sync_address` (default 7946).
    #[serde(default = "Sync::default_port")]
    pub port: u16,
    /// File holding the shared key that authenticates every datagram (relative to the topology file).
    pub key_file: PathBuf,
    /// How many other nodes hold each node's connections (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u16>,
    /// A connection is synced once it has lived this long (default 2s): shorter ones are not.
    #[serde(default = "Sync::default_threshold")]
    pub threshold: Duration,
    /// A synced connection is synced again this often while it lives (default 60s).
    #[serde(default = "Sync::default_refresh")]
    pub refresh: Duration,
    /// Heartbeat interval (default 200ms).
    #[serde(default = "Sync::default_heartbeat")]
    pub heartbeat: Duration,
    /// A node not heard for this long is lost and its successor takes over (default 1s).
    #[serde(default = "Sync::default_dead_after")]
    pub dead_after: Duration,
}

impl Sync {
    fn default_port() -> u16 {
        7946
    }
    fn default_threshold() -> Duration {
        Duration::from_secs(2)
    }
    fn default_refresh() -> Duration {
        Duration::from_secs(60)
    }
    fn default_heartbeat() -> Duration {
        Duration::from_millis(200)
    }
    fn default_dead_after() -> Duration {
        Duration::from_secs(1)
    }
}

/// Default BGP timers for every neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BgpDefaults {
    /// Proposed hold time (RFC 4271: 0 or at least 3 s).
    pub hold_time: Duration,
    /// Keepalive interval; at most a third of the hold time.
    pub keepalive: Duration,
    /// First connect-retry delay; doubled on each failure up to 8 times this.
    pub connect_retry: Duration,
}

impl Default for BgpDefaults {
    fn default() -> Self {
        BgpDefaults {
            hold_time: Duration::from_secs(90),
            keepalive: Duration::from_secs(30),
            connect_retry: Duration::from_secs(5),
        }
    }
}

/// Connection-table timeouts per protocol state, as IPVS's `ipvsadm --set` and DPVS's `timeout` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP after a SYN was forwarded, until the handshake completes.
    pub tcp_syn_recv: Duration,
    /// Established TCP.
    pub tcp_established: Duration,
    /// TCP after a FIN from the client.
    pub tcp_fin_wait: Duration,
    /// TCP after a FIN from the backend.
    pub tcp_close_wait: Duration,
    /// TCP waiting for the last ACK.
    pub tcp_last_ack: Duration,
    /// TCP after both FINs.
    pub tcp_time_wait: Duration,
    /// TCP after a RST.
    pub tcp_close: Duration,
    /// UDP flows since their last packet.
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_recv: Duration::from_secs(30),
            tcp_established: Duration::from_secs(900),
            tcp_fin_wait: Duration::from_secs(120),
            tcp_close_wait: Duration::from_secs(60),
            tcp_last_ack: Duration::from_secs(30),
            tcp_time_wait: Duration::from_secs(120),
            tcp_close: Duration::from_secs(10),
            udp: Duration::from_secs(300),
        }
    }
}

/// Per-service timeout overrides; unset ones come from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutOverrides {
    /// See [`Timeouts::tcp_syn_recv`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_syn_recv: Option<Duration>,
    /// See [`Timeouts::tcp_established`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_established: Option<Duration>,
    /// See [`Timeouts::tcp_fin_wait`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_fin_wait: Option<Duration>,
    /// See [`Timeouts::tcp_close_wait`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_close_wait: Option<Duration>,
    /// See [`Timeouts::tcp_last_ack`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_last_ack: Option<Duration>,
    /// See [`Timeouts::tcp_time_wait`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_time_wait: Option<Duration>,
    /// See [`Timeouts::tcp_close`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_close: Option<Duration>,
    /// See [`Timeouts::udp`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<Duration>,
}

impl TimeoutOverrides {
    /// The cluster timeouts with these overrides applied.
    pub fn apply(&self, base: Timeouts) -> Timeouts {
        Timeouts {
            tcp_syn_recv: self.tcp_syn_recv.unwrap_or(base.tcp_syn_recv),
            tcp_established: self.tcp_established.unwrap_or(base.tcp_established),
            tcp_fin_wait: self.tcp_fin_wait.unwrap_or(base.tcp_fin_wait),
            tcp_close_wait: self.tcp_close_wait.unwrap_or(base.tcp_close_wait),
            tcp_last_ack: self.tcp_last_ack.unwrap_or(base.tcp_last_ack),
            tcp_time_wait: self.tcp_time_wait.unwrap_or(base.tcp_time_wait),
            tcp_close: self.tcp_close.unwrap_or(base.tcp_close),
            udp: self.udp.unwrap_or(base.udp),
        }
    }
}

/// Maglev consistent-hashing parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Maglev {
    /// Seed of the fixed hash; change it only for the whole cluster at once.
    pub seed: u64,
    /// Lookup-table size M; a prime, at least 100 × the largest backend count for ≤ 1% imbalance.
    pub table_size: u32,
}

impl Default for Maglev {
    fn default() -> Self {
        Maglev {
            seed: 0x616e_796c_625f_6d67,
            table_size: 65537,
        }
    }
}

/// One anylb node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Unique node name, given to `anylb run --node`.
    pub name: String,
    /// BGP router id and the node's identity.
    pub router_id: Ipv4Addr,
    /// Unix socket of the control API (default `/run/anylb/<name>.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// Address of the Prometheus `/metrics` listener; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// The node's address for connection sync (one of its own, reachable from the other nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_address: Option<IpAddr>,
    /// Packet I/O: cores, EAL arguments, ports.
    pub dataplane: Dataplane,
    /// Local-address (LIP) pools used as Full-NAT sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_addresses: Vec<LocalPool>,
    /// Static routes of the dataplane FIB.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<StaticRoute>,
    /// Static ARP/ND entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<StaticNeighbor>,
    /// The embedded BGP speaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgp>,
    /// Client prefixes whose new connections to any VIP of the node are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<IpNet>,
}

impl Node {
    /// The control socket path, defaulted from the node name.
    pub fn control_socket(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/anylb/{}.sock", self.name)))
    }
}

/// The node's packet I/O.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    /// Cores that run forwarding workers, one worker per core.
    pub workers: Vec<u16>,
    /// Core of the control thread (default: the first core not in `workers`). It may share a worker's core on
    /// small machines: the control thread mostly sleeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_core: Option<u16>,
    /// Extra DPDK EAL arguments (the core list and vdevs are derived from the topology).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eal_args: Vec<String>,
    /// Capacity of each worker's connection table (default 1,048,576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_worker: Option<u32>,
    /// Descriptors of each RX and TX queue, a power of two from 64 to 16384 (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptors: Option<u16>,
    /// Packet buffers in the pool (default: enough for every queue's descriptors, the per-core caches and the
    /// worker rings, at least 16,383).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbufs: Option<u32>,
    /// Limits of the fragment table each worker keeps (datagrams in flight, fragments parked, time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragments: Option<FragmentLimits>,
    /// The ports.
    pub ports: Vec<Port>,
}

/// Limits of a worker's fragment table: fragments are forwarded, not reassembled; these bound what is kept
/// while a datagram's fragments pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FragmentLimits {
    /// Datagrams in flight at once (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datagrams: Option<u32>,
    /// Fragments parked until their first fragment comes, in all (default 512; 64 per datagram at most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<u32>,
    /// How long a datagram is remembered after its last fragment (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl Dataplane {
    /// Connection-table capacity per worker.
    pub fn connections_per_worker(&self) -> u32 {
        self.connections_per_worker.unwrap_or(1 << 20)
    }

    /// Descriptors per RX and TX queue.
    pub fn descriptors(&self) -> u16 {
        self.descriptors.unwrap_or(1024)
    }

    /// The fewest packet buffers that keep every queue full: an RX and a TX ring of `descriptors` per worker
    /// and port, a 256-buffer cache and a 1,024-slot ring per worker, and 1,024 for held and exception frames.
    pub fn mbufs_needed(&self) -> u32 {
        let (workers, ports) = (self.workers.len().max(1) as u32, self.ports.len().max(1) as u32);
        2 * u32::from(self.descriptors()) * workers * ports + workers * (256 + 1024) + 1024
    }

    /// Packet buffers in the pool: as configured, else the next 2^n − 1 (the mempool's best size) above
    /// what is needed, at least 16,383.
    pub fn mbufs(&self) -> u32 {
        self.mbufs
            .unwrap_or_else(|| (self.mbufs_needed() + 1).next_power_of_two().max(1 << 14) - 1)
    }
}

/// One dataplane port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Port name, referenced by pools, routes and neighbours.
    pub name: String,
    /// A PCI address ("0000:03:00.0") or a DPDK vdev string ("net_af_packet0,iface=eth1").
    pub device: String,
    /// The node's own addresses on this port, with prefix length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpNet>,
    /// MTU in bytes (default 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// 802.1Q VLAN id, when the port is tagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// MAC address override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// How the kernel gets the node's own traffic on this port (default auto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionPath>,
}

/// The kernel exception path of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExceptionPath {
    /// A TAP interface, except for `net_af_packet` ports whose interface the kernel sees itself.
    #[default]
    Auto,
    /// Always a TAP interface carrying the port's addresses.
    Tap,
    /// No kernel path.
    None,
}

impl Port {
    /// The MTU, defaulted.
    pub fn mtu(&self) -> u16 {
        self.mtu.unwrap_or(1500)
    }
}

/// A local-address pool: Full-NAT sources this node owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalPool {
    /// Addresses of the pool (every address of the prefix is a LIP).
    pub prefix: IpNet,
    /// Source ports handed out per LIP (default 1024-65535); split between workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
    /// The port the pool's addresses live on (default: the first port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Whether to announce the pool by BGP (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<bool>,
    /// Node that announces this pool as a backup with a longer AS path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

impl LocalPool {
    /// The port range, defaulted.
    pub fn ports(&self) -> PortRange {
        self.ports.unwrap_or_default()
    }
}

/// A static route of the dataplane FIB; several next hops make an ECMP route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    /// Destination prefix.
    pub prefix: IpNet,
    /// Next hops (ECMP when several).
    pub via: Vec<IpAddr>,
    /// Port to reach them (default: the port whose subnet holds the next hop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// A fallback: a route of the same prefix received over BGP replaces it while it exists (a floating
    /// static route, as FRR's `ip route … 250`), so replies keep flowing while a BGP session resets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
}

/// A static ARP/ND entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNeighbor {
    /// Neighbour address.
    pub address: IpAddr,
    /// Its MAC address.
    pub mac: MacAddr,
    /// The port it is on.
    pub port: String,
}

/// The node's BGP speaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBgp {
    /// Local ASN (default: the cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// TCP port the speaker listens on (default 179; 0 = no listener, active sessions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Graceful restart (RFC 4724).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestart>,
    /// How long a graceful shutdown (RFC 8326) waits between tagging and withdrawing (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_wait: Option<Duration>,
    /// The BGP neighbours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<BgpNeighbor>,
}

impl NodeBgp {
    /// The listen port, defaulted.
    pub fn listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(179)
    }

    /// The graceful-shutdown wait, defaulted.
    pub fn shutdown_wait(&self) -> Duration {
        self.shutdown_wait.unwrap_or(Duration::from_secs(10))
    }
}

/// Graceful restart settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GracefulRestart {
    /// Whether to advertise the capability.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Restart time advertised to peers (default 120s; at most 4095s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_time: Option<Duration>,
}

/// Serde default of `true`.
fn yes() -> bool {
    true
}

/// Address families a BGP session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// IPv4 unicast (AFI 1, SAFI 1).
    Ipv4Unicast,
    /// IPv6 unicast (AFI 2, SAFI 1).
    Ipv6Unicast,
}

/// One BGP neighbour of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpNeighbor {
    /// Neighbour address (IPv4 or IPv6).
    pub address: IpAddr,
    /// Remote ASN; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Free text shown by `anylb bgp neighbor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Only accept connections, never connect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passive: bool,
    /// Hold time (default: the cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<Duration>,
    /// Keepalive interval (default: the cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<Duration>,
    /// Connect-retry delay (default: the cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_retry: Option<Duration>,
    /// eBGP multihop: the TTL of outgoing packets (default 1 for eBGP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multihop_ttl: Option<u8>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only TTL ≥ 256 − hops, where hops is `multihop_ttl`
    /// (1, a directly connected neighbour, when unset).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gtsm: bool,
    /// File that holds the TCP-MD5 password (RFC 2385); the password itself never appears in the topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Families negotiated (default: the family of the neighbour address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<Family>,
    /// Local address to bind the session to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<IpAddr>,
    /// Next hop for IPv4 routes (default: the session's local address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<Ipv4Addr>,
    /// Global IPv6 next hop for IPv6 routes, required to carry IPv6 over an IPv4 session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_next_hop: Option<std::net::Ipv6Addr>,
    /// Communities added to every route sent to this neighbour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    /// Large communities added to every route sent to this neighbour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<LargeCommunity>,
    /// MULTI_EXIT_DISC sent with every route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    /// LOCAL_PREF sent to iBGP neighbours (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Times the local ASN is prepended to the AS path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_path_prepend: Option<u8>,
    /// Most prefixes accepted from the neighbour before the session is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefix: Option<u32>,
    /// Bidirectional Forwarding Detection for this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<Bfd>,
}

impl BgpNeighbor {
    /// Families, defaulted to the neighbour address family.
    pub fn families(&self) -> Vec<Family> {
        if !self.families.is_empty() {
            return self.families.clone();
        }
        match self.address {
            IpAddr::V4(_) => vec![Family::Ipv4Unicast],
            IpAddr::V6(_) => vec![Family::Ipv6Unicast],
        }
    }
}

/// BFD session parameters (RFC 5880).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bfd {
    /// Whether BFD runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Desired minimum transmit interval (default 300ms).
    #[serde(default = "Bfd::default_interval")]
    pub min_tx: Duration,
    /// Required minimum receive interval (default 300ms).
    #[serde(default = "Bfd::default_interval")]
    pub min_rx: Duration,
    /// Detection multiplier (default 3).
    #[serde(default = "Bfd::default_multiplier")]
    pub multiplier: u8,
}

impl Bfd {
    fn default_interval() -> Duration {
        Duration::from_millis(300)
    }

    fn default_multiplier() -> u8 {
        3
    }
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// How packets reach a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Full-NAT: source becomes a local address, destination the backend (also NAT64).
    #[default]
    Fullnat,
    /// Direct routing: the frame goes to the backend's MAC, addresses unchanged.
    Dr,
    /// IP-in-IP / GUE tunnel to the backend.
    Tunnel,
    /// Destination NAT; anylb is the backends' gateway.
    Nat,
    /// Source NAT: configured by `[[snat]]` rules rather than as a service.
    Snat,
}

/// Backend selection algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections.
    Wlc,
    /// Source-address hash.
    Sh,
    /// Weighted Maglev consistent hashing (the same choice on every node).
    #[default]
    Maglev,
}

/// A load-balanced service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique service name.
    pub name: String,
    /// Virtual IP, IPv4 or IPv6.
    pub vip: IpAddr,
    /// Service port, or "all".
    pub port: PortSpec,
    /// tcp or udp.
    pub protocol: Protocol,
    /// Forwarding mode (default fullnat).
    #[serde(default)]
    pub forwarding: Forwarding,
    /// Scheduler (default maglev).
    #[serde(default)]
    pub scheduler: Scheduler,
    /// Client-address persistence, as `ipvsadm -p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Duration>,
    /// Timeout overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutOverrides>,
    /// Nodes that serve the service (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// Healthy backends needed to announce the VIP (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy: Option<u32>,
    /// Communities attached to the VIP's announcement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    /// Large communities attached to the VIP's announcement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<LargeCommunity>,
    /// Health check of every backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// How Full-NAT backends learn the client's address.
    #[serde(default, skip_serializing_if = "ClientAddress::is_none")]
    pub client_address: ClientAddress,
    /// UDP with a client address: how many first datagrams of a flow carry it (default 3, as DPVS's UOA;
    /// 0: every datagram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address_datagrams: Option<u32>,
    /// Encapsulation of tunnel forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<Encapsulation>,
    /// UDP destination port of GUE encapsulation (default 6080, Linux's fou convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<u16>,
    /// Client prefixes allowed to open connections (none listed: every client).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<IpNet>,
    /// Client prefixes whose new connections are dropped (checked before `allow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<IpNet>,
    /// New connections per second the service accepts (token bucket), overall or per client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// TCP Full-NAT: the node answers SYNs itself with SYN cookies and opens the backend's side only for a
    /// client that completes the handshake (default false; needs `cluster.syn_proxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<bool>,
    /// UDP services carrying QUIC: short-header packets go to the backend whose server ID their connection ID
    /// carries (QUIC-LB plaintext layout), so a connection that migrates to a new client address or port
    /// stays on its backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic: Option<QuicLb>,
    /// Backends (real servers).
    #[serde(default)]
    pub backends: Vec<Backend>,
}

/// A new-connection rate limit: a token bucket of `burst` tokens refilled at `cps` per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// New connections per second.
    pub cps: u32,
    /// Connections that may open at once (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// One bucket per client address instead of one for the service (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<bool>,
    /// What an excess new connection gets: `drop` (default), or `reset` (a TCP RST from the VIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<LimitAction>,
}

/// What an excess new connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    /// Dropped and counted.
    #[default]
    Drop,
    /// Answered with a TCP RST from the VIP (TCP services), and counted.
    Reset,
}

/// Where a QUIC connection ID carries the server ID (the QUIC-LB draft's plaintext configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicLb {
    /// Bytes of the connection ID before the server ID (default 1: the first octet is the config rotation
    /// and length octet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id_offset: Option<u8>,
    /// Length of the server ID in bytes (1-8); every backend has a `server_id` of that length.
    pub server_id_length: u8,
}

impl QuicLb {
    /// Offset, defaulted.
    pub fn offset(&self) -> u8 {
        self.server_id_offset.unwrap_or(1)
    }
}

/// A server ID written as hex (`"0a01"`, `"0x0a01"`): its value and length in bytes (1-8).
pub fn parse_server_id(hex: &str) -> Option<(u64, usize)> {
    let digits = hex.strip_prefix("0x").unwrap_or(hex);
    if digits.is_empty() || digits.len() % 2 != 0 || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16)
        .ok()
        .map(|v| (v, digits.len() / 2))
}

/// How tunnel forwarding wraps the client's packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encapsulation {
    /// IP-in-IP for IPv4 VIPs, IPv6-in-IPv6 for IPv6 VIPs.
    #[default]
    Ipip,
    /// Generic UDP Encapsulation, variant 1 (the inner IP packet right after the UDP header); the UDP source
    /// port varies per flow.
    Gue,
}

/// How a Full-NAT backend learns the client's address and port, which the translation hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAddress {
    /// Not at all.
    #[default]
    None,
    /// TCP option 254 ("TOA") in the handshake's last ACK, read by the backend's toa kernel module.
    Toa,
    /// A PROXY protocol version 2 header before the client's first byte (nginx `proxy_protocol`, HAProxy);
    /// for UDP, before the payload of the first datagrams (or every one) of a flow.
    ProxyV2,
    /// UDP to IPv4 backends: DPVS's UOA IP option (type 31, the client's port and address) in the first
    /// datagrams of a flow, read by the backend's `uoa` kernel module.
    Uoa,
}

impl ClientAddress {
    /// Whether it is `None` (for serde's skip).
    pub fn is_none(&self) -> bool {
        *self == ClientAddress::None
    }
}

impl Service {
    /// The GUE destination port, defaulted.
    pub fn gue_port(&self) -> u16 {
        self.gue_port.unwrap_or(6080)
    }

    /// min_healthy, defaulted.
    pub fn min_healthy(&self) -> u32 {
        self.min_healthy.unwrap_or(1)
    }

    /// Whether `node` serves the service.
    pub fn served_by(&self, node: &str) -> bool {
        self.nodes.as_ref().is_none_or(|n| n.iter().any(|x| x == node))
    }

    /// Whether a backend is reached by NAT64 (IPv6 VIP, IPv4 backend).
    pub fn needs_nat64(&self) -> bool {
        self.vip.is_ipv6() && self.backends.iter().any(|b| b.address.is_ipv4())
    }
}

/// A backend (real server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Backend address.
    pub address: IpAddr,
    /// Backend port (default: the service port; required when the service port is "all").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Weight (default 100; 0 takes no new connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Administratively drained: existing connections stay, no new ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// Connections above which the backend takes no new ones (IPVS `-x`); none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_threshold: Option<u32>,
    /// Once over the upper threshold, connections below which it takes new ones again (IPVS `-y`; default
    /// three quarters of the upper threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_threshold: Option<u32>,
    /// QUIC services: the server ID this backend writes into its connection IDs, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
}

impl Backend {
    /// Weight, defaulted.
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(100)
    }
}

/// Kind of health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// TCP connect.
    Tcp,
    /// HTTP GET.
    Http,
    /// HTTPS GET.
    Https,
    /// gRPC health checking protocol (`grpc.health.v1.Health/Check`).
    Grpc,
    /// A DNS query.
    Dns,
    /// UDP request/response.
    Udp,
    /// ICMP / ICMPv6 echo.
    Icmp,
    /// A command's exit code.
    Exec,
    /// No check: backends are always up.
    None,
}

/// A health check, applied to every backend of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The checker.
    pub kind: HealthKind,
    /// Time between checks (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Time a check may take (default 1s; less than the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Successes in a row to go up (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    /// Failures in a row to go down (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    /// Random spread added to each interval, as a fraction 0.0-0.5 of it (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// Weight ramp after recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<Duration>,
    /// Port to check (default: the backend's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Source address of the checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// http/https: request path (default "/").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// http/https: Host header; grpc: :authority; and the TLS server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// http/https: accepted status codes (default: 200 alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<u16>,
    /// http/https: substring the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// https, grpc over TLS: verify the server certificate (default false: backends often have self-signed ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// grpc: over TLS (default false: HTTP/2 in cleartext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// grpc: the service name asked about (default empty: the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_service: Option<String>,
    /// dns: the name queried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// dns: the query type (default A).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_type: Option<DnsType>,
    /// dns: the rcode the answer must have (default NOERROR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<Rcode>,
    /// dns: an address the answer must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<IpAddr>,
    /// udp: payload sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// tcp: probe with a SYN alone on a raw socket, a SYN-ACK meaning up (default true; false: a full connect
    /// per check). Checks with `send` or `expect` always connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn: Option<bool>,
    /// tcp: bytes sent once connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// udp, tcp: substring the reply must contain (udp: any reply when unset; tcp: the banner or answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// exec: program and arguments; `{address}` and `{port}` are substituted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

impl HealthCheck {
    /// Interval, defaulted.
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Duration::from_secs(2))
    }

    /// Timeout, defaulted.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(1))
    }

    /// Rise, defaulted.
    pub fn rise(&self) -> u32 {
        self.rise.unwrap_or(2)
    }

    /// Fall, defaulted.
    pub fn fall(&self) -> u32 {
        self.fall.unwrap_or(3)
    }

    /// Jitter fraction, defaulted.
    pub fn jitter(&self) -> f64 {
        self.jitter.unwrap_or(0.1)
    }
}

/// A DNS query type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DnsType {
    /// IPv4 address.
    #[default]
    A,
    /// IPv6 address.
    Aaaa,
    /// Canonical name.
    Cname,
    /// Mail exchange.
    Mx,
    /// Name server.
    Ns,
    /// Pointer.
    Ptr,
    /// Start of authority.
    Soa,
    /// Service locator.
    Srv,
    /// Text.
    Txt,
}

impl DnsType {
    /// The type's number (RFC 1035, RFC 3596, RFC 2782).
    pub fn code(self) -> u16 {
        match self {
            DnsType::A => 1,
            DnsType::Ns => 2,
            DnsType::Cname => 5,
            DnsType::Soa => 6,
            DnsType::Ptr => 12,
            DnsType::Mx => 15,
            DnsType::Txt => 16,
            DnsType::Aaaa => 28,
            DnsType::Srv => 33,
        }
    }
}

/// A DNS response code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Rcode {
    /// No error.
    #[default]
    NoError,
    /// Format error.
    FormErr,
    /// Server failure.
    ServFail,
    /// The name does not exist.
    NxDomain,
    /// Not implemented.
    NotImp,
    /// Refused.
    Refused,
}

impl Rcode {
    /// The code's number (RFC 1035 §4.1.1).
    pub fn code(self) -> u8 {
        match self {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
        }
    }
}

/// Protocols an SNAT rule translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnatProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP echo, translated by identifier.
    Icmp,
}

/// A source-NAT gateway rule: traffic from `sources` leaving through `out_port` gets a source from `pool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnatRule {
    /// Rule name.
    pub name: String,
    /// Source prefixes matched.
    pub sources: Vec<IpNet>,
    /// Protocols matched (default tcp, udp, icmp).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<SnatProtocol>,
    /// Dataplane port the traffic leaves through (the WAN side).
    pub out_port: String,
    /// Translation addresses (WAN side).
    pub pool: Vec<IpNet>,
    /// Translation ports (default 1024-65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
    /// Nodes that apply the rule (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

impl SnatRule {
    /// Whether `node` applies the rule.
    pub fn served_by(&self, node: &str) -> bool {
        self.nodes.as_ref().is_none_or(|n| n.iter().any(|x| x == node))
    }

    /// Protocols, defaulted.
    pub fn protocols(&self) -> Vec<SnatProtocol> {
        if self.protocols.is_empty() {
            vec![SnatProtocol::Tcp, SnatProtocol::Udp, SnatProtocol::Icmp]
        } else {
            self.protocols.clone()
        }
    }
}

impl Topology {
    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Local ASN of a node: its own, else the cluster's.
    pub fn local_asn(&self, node: &Node) -> Option<u32> {
        node.bgp.as_ref().and_then(|b| b.asn).or(self.cluster.asn)
    }
}
