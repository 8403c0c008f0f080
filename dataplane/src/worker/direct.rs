//! The direct modes: direct routing (the frame unchanged to the backend's MAC), tunnelling (IP-in-IP,
//! IPv6-in-IPv6 or GUE), and the worker that keeps a NAT-mode connection.

use super::pkt::{clamp_mss, drop, Pkt};
use super::{Output, Verdict, Worker};
use crate::flow::{is_v4, to_v4, Addr};
use crate::frame::{Frame, FrameAlloc};
use crate::snapshot::Encap;
use crate::stats::DropReason;
use crate::tcp_state::Dir;
use crate::wire::{checksum, ipv4, ipv6, proto, udp};

impl<F: Frame> Worker<F> {
    /// Direct routing (`encap` none: the frame as received, to the backend's MAC) and tunnelling (IP-in-IP or
    /// IPv6-in-IPv6, or GUE, from the connection's outer source to the backend) for connection `idx`. Replies
    /// go from the backend straight to the client.
    pub(super) fn forward_direct<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        idx: u32,
        encap: Option<Encap>,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let c = *self.conns.get(idx);
        let Some(hop) = self.next_hop(idx, &c, Dir::Inbound, &c.backend()) else {
            return drop(DropReason::NoRoute);
        };
        let Some(encap) = encap else {
            return self.emit(hop, p.l3, p.v6, f, alloc, out);
        };
        let mtu = self.mtu(hop.port);
        let ip_len = if p.v6 { ipv6::HEADER_LEN } else { ipv4::HEADER_LEN };
        let outer = match encap {
            Encap::Ip => ip_len,
            Encap::Gue(_) => ip_len + udp::HEADER_LEN,
        };
        let in_len = f.data().len() - p.l3;
        if in_len + outer > mtu {
            return self.too_big(p, f, mtu.saturating_sub(outer), alloc, out);
        }
        if p.syn() {
            let l3l4 = if p.v6 { 60 } else { 40 };
            clamp_mss(&mut f.data_mut()[p.l4..], mtu.saturating_sub(outer + l3l4) as u16);
        }
        if !f.prepend(outer) {
            return drop(DropReason::NoBuffer);
        }
        // The inner packet now starts at `l3 + outer`; the outer headers go in front of it.
        let l3 = p.l3;
        let hash = c.inbound_tuple().hash(self.snap.seed);
        let (next, ip_payload) = match (encap, p.v6) {
            (Encap::Gue(_), _) => (proto::UDP, in_len + udp::HEADER_LEN),
            (Encap::Ip, true) => (proto::IPV6, in_len),
            (Encap::Ip, false) => (proto::IPIP, in_len),
        };
        let d = f.data_mut();
        if let Encap::Gue(port) = encap {
            // GUE variant 1: the inner IP packet right after the UDP header. The source port spreads flows.
            let u = &mut d[l3 + ip_len..l3 + ip_len + ip_payload];
            udp::Repr {
                src_port: 0xc000 | (hash as u16 & 0x3fff),
                dst_port: port,
                payload_len: in_len,
            }
            .emit(u);
            if p.v6 {
                // IPv6 needs a UDP checksum.
                let pseudo = checksum::pseudo_v6(
                    &c.lip().into(),
                    &c.backend().into(),
                    proto::UDP,
                    ip_payload as u32,
                );
                udp::Packet::new_unchecked(u).fill_checksum(pseudo);
            }
        }
        let inner = l3 + outer;
        if p.v6 {
            let tclass = ipv6::Packet::new_unchecked(&d[inner..]).traffic_class();
            ipv6::Repr {
                src: c.lip().into(),
                dst: c.backend().into(),
                next_header: next,
                payload_len: ip_payload,
                hop_limit: 64,
                traffic_class: tclass,
                flow_label: (hash & 0xf_ffff) as u32,
            }
            .emit(&mut d[l3..]);
        } else {
            self.ident = self.ident.wrapping_add(1);
            let ip = ipv4::Packet::new_unchecked(&d[inner..]);
            let (tos, dont_frag) = (ip.tos(), ip.dont_frag());
            ipv4::Repr {
                src: to_v4(&c.lip()),
                dst: to_v4(&c.backend()),
                protocol: next,
                payload_len: ip_payload,
                ttl: 64,
                tos,
                ident: self.ident,
                dont_frag,
            }
            .emit(&mut d[l3..]);
        }
        self.emit(hop, l3, p.v6, f, alloc, out)
    }

    /// The outer source of a tunnelled flow with hash `h` to `backend`: one of the local addresses of the
    /// backend's family chosen by the hash (so the backend's RSS spreads flows), else the egress port's address.
    pub(super) fn tunnel_source(&self, backend: &Addr, h: u64) -> Option<Addr> {
        let fam = is_v4(backend);
        let n = self.snap.lips.iter().filter(|(a, _, _)| is_v4(a) == fam).count();
        if n > 0 {
            return self
                .snap
                .lips
                .iter()
                .filter(|(a, _, _)| is_v4(a) == fam)
                .nth((h % n as u64) as usize)
                .map(|(a, _, _)| *a);
        }
        let hop = self.snap.routes.next_hop(backend, h)?;
        self.snap.port_addr(hop.port, fam)
    }

    /// The worker that keeps NAT-mode connections of client port `port` (their replies are addressed to it).
    pub(super) fn nat_owner(&self, port: u16) -> u16 {
        (usize::from(port) % self.snap.workers.max(1)) as u16
    }
}
