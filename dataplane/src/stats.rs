//! Per-worker counters and the reasons a packet is dropped. The fast path returns a small `Copy` reason and
//! bumps one array slot; the control plane reads copies.

use serde::Serialize;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum DropReason {
    /// A header did not parse or its lengths disagree.
    Malformed = 0,
    /// An IP or transport checksum is wrong.
    BadChecksum,
    /// Addressed to a VIP on a port or protocol no service serves.
    NoService,
    /// No backend has weight (all down or drained).
    NoBackend,
    /// The connection table is full.
    TableFull,
    /// No local address or port is free.
    PoolExhausted,
    /// No route to the destination.
    NoRoute,
    /// The next hop did not resolve and its hold queue is full.
    Unresolved,
    /// TTL or hop limit ran out (an ICMP time exceeded was sent when possible).
    Ttl,
    /// A TCP segment other than a SYN, or a reply, for a connection the table does not have.
    NoConnection,
    /// A fragment anylb does not forward: a first fragment that splits the transport header, a TCP fragment at
    /// offset 8 (RFC 1858), a fragment of another protocol, or of a NAT-mode or source-NAT flow.
    Fragment,
    /// Larger than the egress MTU (an ICMP error was sent when possible).
    TooBig,
    /// A protocol or message the dataplane does not handle for this destination.
    Unsupported,
    /// The frame could not be grown or rewritten (no headroom).
    NoBuffer,
    /// A unicast frame addressed to another station's MAC (a switch flooding an unknown destination).
    OtherMac,
    /// A fragment that came before its first one found the fragment table full.
    FragmentLimit,
    /// A fragment parked for its first one, which did not come in time.
    FragmentTimeout,
    /// A new flow from a client on the node's deny list.
    DeniedNode,
    /// A new flow from a client on the service's deny list.
    Denied,
    /// A new flow from a client not on the service's allow list.
    NotAllowed,
    /// A new flow over the service's rate limit.
    RateLimited,
    /// A new flow to a service whose every backend is at its upper connection threshold.
    Overloaded,
    /// A segment to a SYN-proxy service with no connection whose acknowledgement is not a valid SYN cookie.
    BadCookie,
    /// A client segment of a SYN-proxied connection whose backend has not answered yet, with no room to hold
    /// it (the client sends it again).
    SynProxyHeld,
}

/// Number of drop reasons.
pub const DROP_REASONS: usize = 24;

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::NoService,
        DropReason::NoBackend,
        DropReason::TableFull,
        DropReason::PoolExhausted,
        DropReason::NoRoute,
        DropReason::Unresolved,
        DropReason::Ttl,
        DropReason::NoConnection,
        DropReason::Fragment,
        DropReason::TooBig,
        DropReason::Unsupported,
        DropReason::NoBuffer,
        DropReason::OtherMac,
        DropReason::FragmentLimit,
        DropReason::FragmentTimeout,
        DropReason::DeniedNode,
        DropReason::Denied,
        DropReason::NotAllowed,
        DropReason::RateLimited,
        DropReason::Overloaded,
        DropReason::BadCookie,
        DropReason::SynProxyHeld,
    ];

    /// Counter name.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::NoService => "no_service",
            DropReason::NoBackend => "no_backend",
            DropReason::TableFull => "table_full",
            DropReason::PoolExhausted => "pool_exhausted",
            DropReason::NoRoute => "no_route",
            DropReason::Unresolved => "unresolved_neighbor",
            DropReason::Ttl => "ttl_exceeded",
            DropReason::NoConnection => "no_connection",
            DropReason::Fragment => "fragment",
            DropReason::TooBig => "too_big",
            DropReason::Unsupported => "unsupported",
            DropReason::NoBuffer => "no_buffer",
            DropReason::OtherMac => "other_mac",
            DropReason::FragmentLimit => "fragment_limit",
            DropReason::FragmentTimeout => "fragment_timeout",
            DropReason::DeniedNode => "denied_node",
            DropReason::Denied => "denied",
            DropReason::NotAllowed => "not_allowed",
            DropReason::RateLimited => "rate_limited",
            DropReason::Overloaded => "overloaded",
            DropReason::BadCookie => "bad_cookie",
            DropReason::SynProxyHeld => "syn_proxy_held",
        }
    }
}

/// One backend's connections and traffic on one worker, as `ipvsadm -Ln --stats` shows them for a real
/// server. "In" is client → backend, "out" backend → client; bytes are IP bytes as received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendCounters {
    /// Connections in the table now (least-connection scheduling reads this).
    pub connections: u32,
    /// Of those, TCP connections in ESTABLISHED (ipvsadm's ActiveConn; the rest are InActConn).
    pub active: u32,
    /// Connections scheduled to the backend here.
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

impl BackendCounters {
    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &BackendCounters) {
        self.connections += o.connections;
        self.active += o.active;
        self.created += o.created;
        self.in_packets += o.in_packets;
        self.in_bytes += o.in_bytes;
        self.out_packets += o.out_packets;
        self.out_bytes += o.out_bytes;
    }
}

/// Counters of one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted (forwarded or answered).
    pub tx_packets: u64,
    /// Of the frames forwarded, those the established fast path took (no state change, everything cached).
    pub fast_path: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames handed to the kernel.
    pub to_kernel: u64,
    /// Frames sent to another worker.
    pub redirected: u64,
    /// TCP segments to a VIP without a connection here, handed to another node ("second chance").
    pub peer_forwarded: u64,
    /// Of those, segments with data that met a connection here both sides had closed: a newer flow of its
    /// tuple, opened on a peer node (the client reused its port) and moved here by the router.
    pub peer_forwarded_closed: u64,
    /// Connections created.
    pub new_connections: u64,
    /// Of those, QUIC connections sent to the backend their connection ID names (a migrated connection).
    pub quic_routed: u64,
    /// IP fragments of TCP and UDP handled (forwarded, parked or sent to their worker).
    pub fragments: u64,
    /// SYNs to SYN-proxy services answered with a cookie.
    pub syn_cookies: u64,
    /// Connections opened by an ACK with a valid cookie (their backend's side then opened).
    pub syn_proxied: u64,
    /// Connections expired.
    pub expired_connections: u64,
    /// Connections in the table now (a gauge: what the table holds, not created minus expired).
    pub connections: u64,
    /// ARP/ND answers and echo replies sent.
    pub stack_replies: u64,
    /// ICMP errors sent or translated.
    pub icmp_errors: u64,
    /// Drops by [`DropReason`].
    pub drops: [u64; DROP_REASONS],
}

impl Stats {
    /// Counts a drop.
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &Stats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.fast_path += o.fast_path;
        self.tx_bytes += o.tx_bytes;
        self.to_kernel += o.to_kernel;
        self.quic_routed += o.quic_routed;
        self.fragments += o.fragments;
        self.syn_cookies += o.syn_cookies;
        self.syn_proxied += o.syn_proxied;
        self.redirected += o.redirected;
        self.peer_forwarded += o.peer_forwarded;
        self.peer_forwarded_closed += o.peer_forwarded_closed;
        self.new_connections += o.new_connections;
        self.expired_connections += o.expired_connections;
        self.connections += o.connections;
        self.stack_replies += o.stack_replies;
        self.icmp_errors += o.icmp_errors;
        for (t, d) in self.drops.iter_mut().zip(o.drops.iter()) {
            *t += d;
        }
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Drops of one reason.
    pub fn drops_of(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}
