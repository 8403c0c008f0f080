//! What the worker's files share: the frame parsed once, the hop and layout of a rewritten packet, where a
//! translated packet goes, and the small pure helpers of header arithmetic. A leaf: it imports nothing of the
//! worker but its output types.

use super::output::Verdict;
use crate::conn::{Conn, InsertError, FLAG_BACKEND_V6, FLAG_CLIENT_V6, SP_SPLICED};
use crate::flow::{Addr, Tuple};
use crate::frag::FragKey;
use crate::nat::FragFields;
use crate::nat::{Endpoints, Ports};
use crate::stats::DropReason;
use crate::tcp_state::Dir;
use crate::wire::{checksum, ipv4, ipv6, proto, tcp};

/// ICMP errors a worker may send in a burst, and per millisecond after it (RFC 1812 §4.3.2.8 rate limit).
pub(super) const ICMP_BURST: u32 = 100;
/// Marks an unresolved cached next hop (neighbour slots are below it).
pub(super) const NO_HOP: u16 = u16::MAX;

/// A frame parsed once ([`ip`](super::ip) builds it, or the fast path from its checks) and passed by reference from then
/// on: where its network and transport headers start, its family, protocol, endpoints, TTL and TCP flags.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pkt {
    /// Port it arrived on.
    pub(super) in_port: u16,
    /// Offset of the network header.
    pub(super) l3: usize,
    /// Offset of the transport header.
    pub(super) l4: usize,
    /// IPv6 (else IPv4).
    pub(super) v6: bool,
    /// Transport protocol.
    pub(super) proto: u8,
    pub(super) src: Addr,
    pub(super) dst: Addr,
    /// Transport ports (the echo identifier for ICMP through source NAT).
    pub(super) sport: u16,
    pub(super) dport: u16,
    /// TTL or hop limit as received.
    pub(super) ttl: u8,
    /// TCP flags (0 for other protocols).
    pub(super) tcp_flags: u8,
    /// When the packet is a fragment (not an atomic one): its identification, offset and M flag.
    pub(super) frag: Option<FragFields>,
}

impl Pkt {
    /// The datagram this fragment belongs to.
    pub(super) fn frag_key(&self, f: FragFields) -> FragKey {
        FragKey {
            src: self.src,
            dst: self.dst,
            ident: f.ident,
            proto: self.proto,
        }
    }

    /// The transport tuple as received.
    pub(super) fn tuple(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.src,
            sport: self.sport,
            dst: self.dst,
            dport: self.dport,
        }
    }

    /// A TCP segment with SYN set.
    pub(super) fn syn(&self) -> bool {
        self.proto == proto::TCP && self.tcp_flags & tcp::flags::SYN != 0
    }

    /// A TCP segment that opens a connection: SYN without ACK or RST.
    pub(super) fn opens(&self) -> bool {
        self.tcp_flags & (tcp::flags::SYN | tcp::flags::ACK | tcp::flags::RST) == tcp::flags::SYN
    }
}

/// The way out for a frame: the egress port, and the neighbour-table slot of the next hop on it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hop {
    pub(super) port: u16,
    pub(super) slot: u32,
}

/// Where the network and transport headers of a rewritten packet start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub(super) l3: usize,
    pub(super) l4: usize,
}

/// Where a translated packet goes: its new endpoints, its family, the egress port's MTU, and the port the
/// connection's client is behind (whose MTU bounds the MSS a backend may send towards it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Egress {
    pub(super) e: Endpoints,
    pub(super) v6: bool,
    pub(super) mtu: usize,
    pub(super) client_port: u8,
}

/// An ICMP error the worker originates.
#[derive(Debug, Clone, Copy)]
pub(super) enum IcmpKind {
    /// TTL / hop limit exceeded in transit.
    TimeExceeded,
    /// Larger than this MTU.
    TooBig(usize),
}

/// Drops are counted by the caller of `handle`; this only names the reason.
pub(super) fn drop(reason: DropReason) -> Verdict {
    Verdict::Drop { reason }
}

/// Sum of the IPv6 pseudo-header for the IPv6 header at the start of `ip6`.
pub(super) fn pseudo6(ip6: &[u8], p: u8, len: usize) -> u32 {
    checksum::sum(&ip6[8..40]) + u32::from(p) + (len as u32 >> 16) + (len as u32 & 0xffff)
}

pub(super) fn write_v6_header(buf: &mut [u8], src: &Addr, dst: &Addr, next: u8, payload: usize, hop: u8) {
    ipv6::Repr {
        src: (*src).into(),
        dst: (*dst).into(),
        next_header: next,
        payload_len: payload,
        hop_limit: hop,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(buf);
}

/// A TCP segment without payload that the node writes itself: a RST or a SYN-ACK from a VIP, the SYN a
/// SYN-proxy opens a backend's side with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment<'a> {
    pub(super) v6: bool,
    pub(super) src: Addr,
    pub(super) dst: Addr,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: u8,
    pub(super) window: u16,
    pub(super) options: &'a [u8],
}

impl Segment<'_> {
    /// An empty segment from where `p` went back to where it came from (addresses and ports swapped): fill in
    /// the numbers, flags, window and options of an answer.
    pub(super) fn back_to_sender(p: &Pkt) -> Segment<'static> {
        Segment {
            v6: p.v6,
            src: p.dst,
            dst: p.src,
            sport: p.dport,
            dport: p.sport,
            seq: 0,
            ack: 0,
            flags: 0,
            window: 0,
            options: &[],
        }
    }

    /// Bytes of its IP and TCP headers.
    pub(super) fn len(&self) -> usize {
        (if self.v6 {
            ipv6::HEADER_LEN
        } else {
            ipv4::HEADER_LEN
        }) + tcp::HEADER_LEN
            + self.options.len()
    }

    /// Writes it (IP header without options, TCP header with its options and checksum) at the start of `buf`,
    /// which holds at least [`len`](Self::len) bytes; returns where the TCP header starts.
    pub(super) fn write(&self, buf: &mut [u8]) -> usize {
        let tl = tcp::HEADER_LEN + self.options.len();
        let (l4, pseudo) = if self.v6 {
            write_v6_header(buf, &self.src, &self.dst, proto::TCP, tl, 64);
            (ipv6::HEADER_LEN, pseudo6(buf, proto::TCP, tl))
        } else {
            let (src, dst) = (crate::flow::to_v4(&self.src), crate::flow::to_v4(&self.dst));
            ipv4::Repr {
                src,
                dst,
                protocol: proto::TCP,
                payload_len: tl,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: true,
            }
            .emit(buf);
            (
                ipv4::HEADER_LEN,
                checksum::pseudo_v4(src, dst, proto::TCP, tl as u16),
            )
        };
        let seg = &mut buf[l4..l4 + tl];
        let mut t = tcp::Packet::new_unchecked(&mut *seg);
        t.set_src_port(self.sport);
        t.set_dst_port(self.dport);
        t.set_seq(self.seq);
        t.set_ack(self.ack);
        t.set_header_len_flags(tl, self.flags);
        t.set_window(self.window);
        t.set_checksum(0);
        t.set_urgent(0);
        seg[tcp::HEADER_LEN..].copy_from_slice(self.options);
        tcp::Packet::new_unchecked(seg).fill_checksum(pseudo);
        l4
    }
}

/// Lowers a SYN's MSS option (checksum kept valid).
pub(super) fn clamp_mss(seg: &mut [u8], max: u16) {
    if let Ok(mut t) = tcp::Packet::new_checked(seg) {
        t.clamp_mss(max);
    }
}

/// Where a Full-NAT packet of connection `c` travelling `dir` goes: its new endpoints (with a spliced SYN-proxy
/// connection's sequence shift), and whether that side is IPv6.
#[inline]
pub(super) fn outbound(c: &Conn, dir: Dir) -> (Endpoints, bool) {
    (endpoints(c, dir), out_v6(c, dir))
}

/// The new endpoints of a Full-NAT packet of connection `c` travelling `dir` ([`outbound`]'s first half).
#[inline]
pub(super) fn endpoints(c: &Conn, dir: Dir) -> Endpoints {
    let p = ports_out(c, dir);
    let (src, dst) = match dir {
        Dir::Inbound => (c.lip(), c.backend()),
        Dir::Reply => (c.vip(), c.client()),
    };
    Endpoints {
        src,
        sport: p.sport,
        dst,
        dport: p.dport,
        seq_add: p.seq_add,
        ack_add: p.ack_add,
    }
}

/// Whether a packet of connection `c` travelling `dir` leaves as IPv6.
#[inline(always)]
pub(super) fn out_v6(c: &Conn, dir: Dir) -> bool {
    let flag = match dir {
        Dir::Inbound => FLAG_BACKEND_V6,
        Dir::Reply => FLAG_CLIENT_V6,
    };
    c.flags & flag != 0
}

/// [`outbound`] for a connection that is IPv4 on both sides: the new source and destination addresses and the
/// transport header's part, none of it as 16-byte addresses. `None` for a connection with an IPv6 side.
#[inline(always)]
pub(super) fn outbound_v4(c: &Conn, dir: Dir) -> Option<([u8; 4], [u8; 4], Ports)> {
    let (src, dst) = match dir {
        Dir::Inbound => (c.v4_addr(2)?, c.v4_addr(3)?),
        Dir::Reply => (c.v4_addr(1)?, c.v4_addr(0)?),
    };
    Some((src, dst, ports_out(c, dir)))
}

/// The ports a packet of connection `c` travelling `dir` leaves with, and its sequence shift.
#[inline(always)]
fn ports_out(c: &Conn, dir: Dir) -> Ports {
    let delta = if c.sp == SP_SPLICED { c.sp_delta } else { 0 };
    match dir {
        Dir::Inbound => Ports {
            sport: c.lport,
            dport: c.bport,
            seq_add: 0,
            ack_add: delta,
        },
        Dir::Reply => Ports {
            sport: c.vport,
            dport: c.cport,
            seq_add: delta.wrapping_neg(),
            ack_add: 0,
        },
    }
}

/// The network-layer length of a packet of `len` bytes (network header `hdr` bytes) once translated from
/// IPv6 or IPv4 (`from_v6`) to IPv6 or IPv4 (`to_v6`).
#[inline]
pub(super) fn translated_len(len: usize, hdr: usize, from_v6: bool, to_v6: bool) -> usize {
    match (from_v6, to_v6) {
        (false, false) | (true, true) => len,
        (true, false) => len - hdr + ipv4::HEADER_LEN,
        (false, true) => len - hdr + ipv6::HEADER_LEN,
    }
}

/// The drop reason of a failed insertion.
pub(super) fn insert_error(e: InsertError) -> DropReason {
    match e {
        InsertError::Full => DropReason::TableFull,
        InsertError::Exists => DropReason::NoConnection,
    }
}
