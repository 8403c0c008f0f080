//! ICMP errors received about a NATed flow, translated for the other side of the connection, between ICMPv4
//! and ICMPv6 for NAT64 (RFC 7915 §4.2, §5.2). Parsing the quote and rewriting it are pure functions; the
//! method around them finds the connection and sends the result.

use super::pkt::{drop, pseudo6, write_v6_header, Pkt};
use super::{Output, Verdict, Worker};
use crate::conn::{Conn, FLAG_BACKEND_V6, FLAG_CLIENT_V6, SP_SPLICED};
use crate::flow::{is_v4, to_v4, v4, Addr, Tuple};
use crate::frame::{Frame, FrameAlloc};
use crate::nat::Endpoints;
use crate::stats::DropReason;
use crate::tcp_state::Dir;
use crate::wire::icmp::{self, v4 as icmp4, v6 as icmp6};
use crate::wire::{checksum, ipv4, ipv6, proto, tcp, udp};

/// The packet an ICMP error quotes: protocol, endpoints, and where its transport header starts in the quote.
#[derive(Debug, Clone, Copy)]
struct Quote {
    proto: u8,
    src: Addr,
    sport: u16,
    dst: Addr,
    dport: u16,
    l4: usize,
}

/// The translated error's endpoints: its own source and destination, the quoted packet's endpoints as the
/// receiver sent it, and the receiver's family.
#[derive(Debug, Clone, Copy)]
struct Toward {
    src: Addr,
    dst: Addr,
    quote: Endpoints,
    v6: bool,
}

impl<F: Frame> Worker<F> {
    /// An ICMP error received about a NATed flow: translated for the other side of the connection (the client
    /// when a backend-side router or the backend complains, the backend when the client side does).
    pub(super) fn icmp_error_in<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let msg = icmp::Packet::new_unchecked(&f.data()[p.l4..]);
        let (ty, code, rest) = (msg.msg_type(), msg.code(), msg.rest());
        let inner = msg.data();
        let q = match parse_quote(p.v6, inner) {
            Ok(q) => q,
            Err(r) => return drop(r),
        };
        // The quoted packet is one we sent: its reverse is a packet of the connection.
        let t = Tuple {
            proto: q.proto,
            src: q.dst,
            sport: q.dport,
            dst: q.src,
            dport: q.sport,
        };
        let Some((idx, dir)) = self.conns.lookup(&t, self.conns.hash(&t)) else {
            return drop(DropReason::NoConnection);
        };
        let c = *self.conns.get(idx);
        let to = toward(&c, dir);
        let Some((nty, ncode, nrest)) = map_icmp(p.v6, to.v6, ty, code, rest) else {
            return drop(DropReason::Unsupported);
        };
        let quoted = requote(&q, &inner[q.l4..], &to);
        let mut f = f;
        let l3 = p.l3;
        let (outer_len, limit) = if to.v6 {
            (ipv6::HEADER_LEN, 1280)
        } else {
            (ipv4::HEADER_LEN, 576)
        };
        let q_hdr_len = outer_len;
        let quoted = &quoted[..quoted.len().min(limit - outer_len - 8 - q_hdr_len)];
        let q_total = q_hdr_len + quoted.len();
        let msg_len = 8 + q_total;
        f.truncate(l3);
        if !f.append(outer_len + msg_len) {
            return drop(DropReason::NoBuffer);
        }
        let dm = f.data_mut();
        let m0 = l3 + outer_len;
        icmp::Repr {
            msg_type: nty,
            code: ncode,
            rest: nrest,
        }
        .emit(&mut dm[m0..]);
        let qh = m0 + 8;
        write_ip_header(
            &mut dm[qh..],
            to.v6,
            &to.quote.src,
            &to.quote.dst,
            q.proto,
            quoted.len(),
            true,
        );
        dm[qh + q_hdr_len..qh + q_total].copy_from_slice(quoted);
        let icmp_proto = if to.v6 { proto::ICMPV6 } else { proto::ICMP };
        write_ip_header(&mut dm[l3..], to.v6, &to.src, &to.dst, icmp_proto, msg_len, false);
        let ps = if to.v6 {
            pseudo6(&dm[l3..], proto::ICMPV6, msg_len)
        } else {
            0
        };
        icmp::Packet::new_unchecked(&mut dm[m0..m0 + msg_len]).fill_checksum(ps);
        let Some(hop) = self.resolve(&to.dst, c.inbound_tuple().hash(self.snap.seed)) else {
            return drop(DropReason::NoRoute);
        };
        self.stats.icmp_errors += 1;
        self.emit(hop, l3, to.v6, f, alloc, out)
    }
}

/// The packet quoted in an ICMP error's body `inner` (IPv6 when `v6`): only TCP and UDP with their ports.
/// A truncated IPv6 quote is read as far as its fixed header.
fn parse_quote(v6: bool, inner: &[u8]) -> Result<Quote, DropReason> {
    let (proto, src, dst, l4) = if v6 {
        if inner.len() < ipv6::HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        let ip = ipv6::Packet::new_unchecked(inner);
        (
            ip.next_header(),
            ip.src().octets(),
            ip.dst().octets(),
            ipv6::HEADER_LEN,
        )
    } else {
        if inner.len() < ipv4::HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        let ip = ipv4::Packet::new_unchecked(inner);
        let ihl = ip.header_len();
        if ihl < ipv4::HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        (ip.protocol(), v4(ip.src()), v4(ip.dst()), ihl)
    };
    if !matches!(proto, proto::TCP | proto::UDP) || inner.len() < l4 + udp::HEADER_LEN {
        return Err(DropReason::Unsupported);
    }
    // TCP and UDP both start with the two ports.
    let ports = udp::Packet::new_unchecked(&inner[l4..]);
    Ok(Quote {
        proto,
        src,
        sport: ports.src_port(),
        dst,
        dport: ports.dst_port(),
        l4,
    })
}

/// Where the translated error about connection `c` goes: to the client when the error came from the backend
/// side (`Reply`), to the backend otherwise; the quote is the packet as that side sent it (for a spliced
/// SYN-proxy connection, with the sequence shift undone: the quoted acknowledgement of a segment the node sent
/// the backend goes back into the cookie's space, the quoted sequence number of one it sent the client into
/// the backend's, where that side's stack checks it).
fn toward(c: &Conn, dir: Dir) -> Toward {
    let delta = if c.sp == SP_SPLICED { c.sp_delta } else { 0 };
    match dir {
        Dir::Reply => Toward {
            src: c.vip(),
            dst: c.client(),
            quote: Endpoints {
                src: c.client(),
                sport: c.cport,
                dst: c.vip(),
                dport: c.vport,
                seq_add: 0,
                ack_add: delta.wrapping_neg(),
            },
            v6: c.flags & FLAG_CLIENT_V6 != 0,
        },
        Dir::Inbound => Toward {
            src: c.lip(),
            dst: c.backend(),
            quote: Endpoints {
                src: c.backend(),
                sport: c.bport,
                dst: c.lip(),
                dport: c.lport,
                seq_add: delta,
                ack_add: 0,
            },
            v6: c.flags & FLAG_BACKEND_V6 != 0,
        },
    }
}

/// The quoted transport bytes `seg` of `q` with the ports of `to.quote`, and its checksum (when quoted)
/// updated for the new ports and addresses.
fn requote(q: &Quote, seg: &[u8], to: &Toward) -> Vec<u8> {
    let mut quoted = seg.to_vec();
    let old_sum =
        checksum::sum(&strip(&q.src)) + checksum::sum(&strip(&q.dst)) + checksum::sum(&quoted[0..4]);
    quoted[0..2].copy_from_slice(&to.quote.sport.to_be_bytes());
    quoted[2..4].copy_from_slice(&to.quote.dport.to_be_bytes());
    // A SYN-proxy's shift, on as much of the sequence and acknowledgement numbers as the quote holds.
    let (mut old_nums, mut new_nums) = (0, 0);
    if q.proto == proto::TCP {
        for (at, add) in [(4, to.quote.seq_add), (8, to.quote.ack_add)] {
            if add != 0 && quoted.len() >= at + 4 {
                let v = u32::from_be_bytes([quoted[at], quoted[at + 1], quoted[at + 2], quoted[at + 3]]);
                quoted[at..at + 4].copy_from_slice(&v.wrapping_add(add).to_be_bytes());
                old_nums += checksum::sum(&v.to_be_bytes());
                new_nums += checksum::sum(&v.wrapping_add(add).to_be_bytes());
            }
        }
    }
    let (qs, qd) = if to.v6 {
        (to.quote.src.to_vec(), to.quote.dst.to_vec())
    } else {
        (to.quote.src[12..].to_vec(), to.quote.dst[12..].to_vec())
    };
    let new_sum = checksum::sum(&qs) + checksum::sum(&qd) + checksum::sum(&quoted[0..4]);
    let co = if q.proto == proto::TCP {
        tcp::CHECKSUM_OFFSET
    } else {
        udp::CHECKSUM_OFFSET
    };
    if quoted.len() >= co + 2 {
        let old_c = u16::from_be_bytes([quoted[co], quoted[co + 1]]);
        if !(q.proto == proto::UDP && old_c == 0) {
            let nc = checksum::update_sums(old_c, old_sum + old_nums, new_sum + new_nums);
            quoted[co..co + 2].copy_from_slice(&nc.to_be_bytes());
        }
    }
    quoted
}

/// Writes an IPv6 or IPv4 header (TTL 64; `dont_frag` for IPv4) at the start of `buf`.
fn write_ip_header(
    buf: &mut [u8],
    v6: bool,
    src: &Addr,
    dst: &Addr,
    next: u8,
    payload: usize,
    dont_frag: bool,
) {
    if v6 {
        write_v6_header(buf, src, dst, next, payload, 64);
    } else {
        ipv4::Repr {
            src: to_v4(src),
            dst: to_v4(dst),
            protocol: next,
            payload_len: payload,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag,
        }
        .emit(buf);
    }
}

/// An address as the bytes its family sums in a pseudo-header.
pub(super) fn strip(a: &Addr) -> Vec<u8> {
    if is_v4(a) {
        a[12..].to_vec()
    } else {
        a.to_vec()
    }
}

/// Maps an ICMP error between families (RFC 7915 §4.2 and §5.2); same family keeps it. The MTU of a
/// too-big message is adjusted by the 20-byte header difference.
pub(super) fn map_icmp(
    from_v6: bool,
    to_v6: bool,
    ty: u8,
    code: u8,
    rest: [u8; 4],
) -> Option<(u8, u8, [u8; 4])> {
    match (from_v6, to_v6) {
        (false, false) | (true, true) => Some((ty, code, rest)),
        (false, true) => match (ty, code) {
            (icmp4::DEST_UNREACHABLE, icmp4::CODE_FRAG_NEEDED) => {
                let mtu = u32::from(u16::from_be_bytes([rest[2], rest[3]])) + 20;
                Some((icmp6::PACKET_TOO_BIG, 0, mtu.max(1280).to_be_bytes()))
            }
            (icmp4::DEST_UNREACHABLE, icmp4::CODE_PORT_UNREACHABLE) => {
                Some((icmp6::DEST_UNREACHABLE, icmp6::CODE_PORT_UNREACHABLE, [0; 4]))
            }
            (icmp4::DEST_UNREACHABLE, 9 | 10 | 13) => {
                Some((icmp6::DEST_UNREACHABLE, icmp6::CODE_ADMIN_PROHIBITED, [0; 4]))
            }
            (icmp4::DEST_UNREACHABLE, 0 | 1 | 5..=8 | 11 | 12) => {
                Some((icmp6::DEST_UNREACHABLE, icmp6::CODE_NO_ROUTE, [0; 4]))
            }
            (icmp4::TIME_EXCEEDED, c) => Some((icmp6::TIME_EXCEEDED, c, [0; 4])),
            _ => None,
        },
        (true, false) => match (ty, code) {
            (icmp6::PACKET_TOO_BIG, _) => {
                let mtu = u32::from_be_bytes(rest)
                    .saturating_sub(20)
                    .min(u32::from(u16::MAX)) as u16;
                let m = mtu.to_be_bytes();
                Some((
                    icmp4::DEST_UNREACHABLE,
                    icmp4::CODE_FRAG_NEEDED,
                    [0, 0, m[0], m[1]],
                ))
            }
            (icmp6::DEST_UNREACHABLE, icmp6::CODE_PORT_UNREACHABLE) => {
                Some((icmp4::DEST_UNREACHABLE, icmp4::CODE_PORT_UNREACHABLE, [0; 4]))
            }
            (icmp6::DEST_UNREACHABLE, icmp6::CODE_ADMIN_PROHIBITED) => {
                Some((icmp4::DEST_UNREACHABLE, 10, [0; 4]))
            }
            (icmp6::DEST_UNREACHABLE, _) => Some((icmp4::DEST_UNREACHABLE, 1, [0; 4])),
            (icmp6::TIME_EXCEEDED, c) => Some((icmp4::TIME_EXCEEDED, c, [0; 4])),
            _ => None,
        },
    }
}
