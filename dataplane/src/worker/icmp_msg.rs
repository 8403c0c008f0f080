//! ICMP and ICMPv6 addressed to the dataplane: echo answered, errors about NATed flows handed to
//! [`icmp_in`](super::icmp_in), and the errors the worker originates (time exceeded, too big) under a rate
//! limit (RFC 1812 §4.3.2.8).

use super::pkt::{drop, pseudo6, write_v6_header, IcmpKind, Pkt, ICMP_BURST};
use super::{Output, Verdict, Worker};
use crate::flow::to_v4;
use crate::frame::{Frame, FrameAlloc};
use crate::snapshot::Local;
use crate::stats::DropReason;
use crate::wire::icmp::{self, v4 as icmp4, v6 as icmp6};
use crate::wire::{checksum, ipv4, ipv6, proto};

impl<F: Frame> Worker<F> {
    /// ICMP to a VIP or local address, or an echo through the source-NAT gateway.
    pub(super) fn icmp4<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        local: Local,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let Ok(m) = icmp::Packet::new_checked(&d[p.l4..]) else {
            return drop(DropReason::Malformed);
        };
        if !f.rx_checksums_verified() && !m.verify_checksum(0) {
            return drop(DropReason::BadChecksum);
        }
        let ty = m.msg_type();
        let f = if !self.snap.snat.is_empty() && matches!(ty, icmp4::ECHO_REQUEST | icmp4::ECHO_REPLY) {
            match self.snat_echo(*p, local, ty, f, alloc, out) {
                Ok(v) => return v,
                Err(f) => f,
            }
        } else {
            f
        };
        if local == Local::Transit {
            return self.kernel(p.in_port, f, out);
        }
        let mut f = f;
        if ty == icmp4::ECHO_REQUEST {
            let d = f.data_mut();
            let mut m = icmp::Packet::new_unchecked(&mut d[p.l4..]);
            let code = m.code();
            let c = checksum::update_u16(
                m.checksum(),
                u16::from_be_bytes([icmp4::ECHO_REQUEST, code]),
                u16::from_be_bytes([icmp4::ECHO_REPLY, code]),
            );
            m.set_msg_type(icmp4::ECHO_REPLY);
            m.set_checksum(c);
            let mut ip = ipv4::Packet::new_unchecked(&mut d[p.l3..]);
            ip.set_src(to_v4(&p.dst));
            ip.set_dst(to_v4(&p.src));
            ip.set_ttl(64);
            ip.fill_checksum();
            return self.reply_to_sender(p.in_port, f, out);
        }
        if icmp::v4_is_error(ty) {
            return self.icmp_error_in(p, f, alloc, out);
        }
        drop(DropReason::Unsupported)
    }

    /// ICMPv6 to a VIP or local address (neighbour discovery went to the small stack before).
    pub(super) fn icmp6<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let msg = &d[p.l4..];
        let Ok(m) = icmp::Packet::new_checked(msg) else {
            return drop(DropReason::Malformed);
        };
        if !f.rx_checksums_verified() && !m.verify_checksum(pseudo6(&d[p.l3..], proto::ICMPV6, msg.len())) {
            return drop(DropReason::BadChecksum);
        }
        let ty = m.msg_type();
        if ty == icmp6::ECHO_REQUEST {
            let len = msg.len();
            let d = f.data_mut();
            icmp::Packet::new_unchecked(&mut d[p.l4..]).set_msg_type(icmp6::ECHO_REPLY);
            let mut ip = ipv6::Packet::new_unchecked(&mut d[p.l3..]);
            ip.set_src(&p.dst.into());
            ip.set_dst(&p.src.into());
            ip.set_hop_limit(64);
            let ps = pseudo6(&d[p.l3..], proto::ICMPV6, len);
            icmp::Packet::new_unchecked(&mut d[p.l4..]).fill_checksum(ps);
            return self.reply_to_sender(p.in_port, f, out);
        }
        if icmp::v6_is_error(ty) {
            return self.icmp_error_in(p, f, alloc, out);
        }
        drop(DropReason::Unsupported)
    }

    /// Whether an ICMP error may be sent now (token bucket: a burst of 100, then one per millisecond).
    pub(super) fn icmp_allowed(&mut self) -> bool {
        let elapsed = self.now_ms.saturating_sub(self.icmp_refill_ms);
        if elapsed > 0 {
            self.icmp_tokens =
                (self.icmp_tokens + u32::try_from(elapsed).unwrap_or(u32::MAX)).min(ICMP_BURST);
            self.icmp_refill_ms = self.now_ms;
        }
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// Turns the frame into an ICMP error about itself, sent back to its source, and counts `reason`.
    pub(super) fn icmp_error<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        mut f: F,
        kind: IcmpKind,
        reason: DropReason,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        self.stats.drop(reason);
        if !self.icmp_allowed() {
            return Verdict::Drop { reason };
        }
        let from = self.snap.port_addr(p.in_port, !p.v6).unwrap_or(p.dst);
        let (hdr, limit) = if p.v6 {
            (ipv6::HEADER_LEN + 8, 1280)
        } else {
            (ipv4::HEADER_LEN + 8, 576)
        };
        let quote = (f.data().len() - p.l3).min(limit - hdr);
        f.truncate(p.l3 + quote);
        if !f.prepend(hdr) {
            return Verdict::Drop { reason };
        }
        let (ty, code, rest) = match (kind, p.v6) {
            (IcmpKind::TimeExceeded, false) => (icmp4::TIME_EXCEEDED, icmp4::CODE_TTL_EXCEEDED, [0; 4]),
            (IcmpKind::TimeExceeded, true) => (icmp6::TIME_EXCEEDED, 0, [0; 4]),
            (IcmpKind::TooBig(mtu), false) => {
                let m = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
                (
                    icmp4::DEST_UNREACHABLE,
                    icmp4::CODE_FRAG_NEEDED,
                    [0, 0, m[0], m[1]],
                )
            }
            (IcmpKind::TooBig(mtu), true) => (
                icmp6::PACKET_TOO_BIG,
                0,
                u32::try_from(mtu).unwrap_or(u32::MAX).to_be_bytes(),
            ),
        };
        let l3 = p.l3;
        let msg_len = 8 + quote;
        let d = f.data_mut();
        icmp::Repr {
            msg_type: ty,
            code,
            rest,
        }
        .emit(&mut d[l3 + hdr - 8..]);
        if p.v6 {
            write_v6_header(&mut d[l3..], &from, &p.src, proto::ICMPV6, msg_len, 64);
            let ps = pseudo6(&d[l3..], proto::ICMPV6, msg_len);
            icmp::Packet::new_unchecked(&mut d[l3 + ipv6::HEADER_LEN..]).fill_checksum(ps);
        } else {
            ipv4::Repr {
                src: to_v4(&from),
                dst: to_v4(&p.src),
                protocol: proto::ICMP,
                payload_len: msg_len,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: false,
            }
            .emit(&mut d[l3..]);
            icmp::Packet::new_unchecked(&mut d[l3 + ipv4::HEADER_LEN..]).fill_checksum(0);
        }
        let Some(hop) = self.resolve(&p.src, 0) else {
            return Verdict::Drop { reason };
        };
        let port = hop.port;
        self.stats.icmp_errors += 1;
        match self.emit(hop, l3, p.v6, f, alloc, out) {
            Verdict::Forward { port } | Verdict::Reply { port } => Verdict::IcmpError { port, reason },
            Verdict::Held => Verdict::IcmpError { port, reason },
            _ => Verdict::Drop { reason },
        }
    }
}
