//! Packets of an existing connection: TCP state and expiry kept, then Full-NAT translation (IPv4, IPv6 and
//! NAT64 both ways) and forwarding; direct-mode connections are handed to [`direct`](super::direct).

use super::pkt::{clamp_mss, drop, outbound, translated_len, Egress, IcmpKind, Layout, Pkt};
use super::synproxy::Pending;
use super::{Output, Verdict, Worker};
use crate::conn::{CLA_NONE, FLAG_SNAT, MODE_DR, MODE_MASK, MODE_TUNNEL, SP_PENDING, SP_SPLICED};
use crate::frag::Route;
use crate::frame::{Frame, FrameAlloc};
use crate::nat::FragFields;
use crate::nat::{self};
use crate::snapshot::{Encap, TICK_MS};
use crate::stats::DropReason;
use crate::tcp_state::{self, Dir, State};
use crate::wire::{ipv4, ipv6, proto, tcp};

impl<F: Frame> Worker<F> {
    /// Forwards a packet of connection `idx` travelling `dir`; a first fragment that went out binds its
    /// datagram to the connection, so that its later fragments follow.
    pub(super) fn forward<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        idx: u32,
        dir: Dir,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let v = self.forward_packet(p, idx, dir, f, alloc, out);
        if let (Some(fr), Verdict::Forward { .. } | Verdict::Held) = (p.frag, v) {
            self.fragments_follow(p.frag_key(fr), Route::Conn(idx, dir), alloc, out);
        }
        v
    }

    fn forward_packet<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        idx: u32,
        dir: Dir,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        if p.ttl <= 1 {
            return self.icmp_error(p, f, IcmpKind::TimeExceeded, DropReason::Ttl, alloc, out);
        }
        let mut c = *self.conns.get(idx);
        let mode = c.flags & MODE_MASK;
        if matches!(mode, MODE_DR | MODE_TUNNEL) && dir == Dir::Reply {
            // Direct-return modes never see replies: this is a stray packet that happens to match.
            return drop(DropReason::NoConnection);
        }
        // A segment that would change the connection's state (SYN, FIN, RST) must be genuine: a corrupted or
        // forged one is dropped with the connection as it was. Other segments are the endpoints' to check.
        if p.proto == proto::TCP
            && p.tcp_flags & (tcp::flags::SYN | tcp::flags::FIN | tcp::flags::RST) != 0
            && p.frag.is_none()
            && !self.verify_l4(p, &f)
        {
            return drop(DropReason::BadChecksum);
        }
        if c.sp == SP_PENDING {
            match self.pending(p, idx, dir, f, alloc, out) {
                Pending::Done(v) => return v,
                Pending::Forward(g) => {
                    // The backend's RST has just fixed the shift it goes to the client with.
                    f = g;
                    c = *self.conns.get(idx);
                }
            }
        }
        let svc = self.advance(p, idx, dir);
        self.count_packet(c.uid, dir, f.data().len() - p.l3);
        if self.snap.sync.is_some() {
            self.sync_due(idx, out);
        }
        if matches!(mode, MODE_DR | MODE_TUNNEL) {
            let encap = match mode {
                MODE_DR => None,
                _ => Some(
                    svc.and_then(|si| self.snap.services.get(usize::from(si)))
                        .map_or(Encap::Ip, |s| s.encap),
                ),
            };
            return self.forward_direct(p, idx, encap, f, alloc, out);
        }
        let (e, out_v6) = outbound(&c, dir);
        let Some(hop) = self.next_hop(idx, &c, dir, &e.dst) else {
            return drop(DropReason::NoRoute);
        };
        let eg = Egress {
            e,
            v6: out_v6,
            mtu: self.mtu(hop.port),
            client_port: c.in_port,
        };
        // Too big for the egress port after translation? An IPv4 packet without DF, or a fragment, is fragmented
        // (further) on the way out; otherwise the sender learns its own MTU (RFC 1191, RFC 8201).
        let in_len = f.data().len() - p.l3;
        let grows = usize::from(p.frag.is_some() && !p.v6 && out_v6) * 8;
        let out_len = translated_len(in_len, p.l4 - p.l3, p.v6, out_v6) + grows;
        let mut q = *p;
        let split = out_len > eg.mtu;
        if split {
            let v4_df = !p.v6 && ipv4::Packet::new_unchecked(&f.data()[p.l3..]).dont_frag();
            let may = match (p.v6, out_v6) {
                (false, _) => p.frag.is_some() || !v4_df,
                (true, false) => p.frag.is_some(),
                (true, true) => false,
            };
            if !may {
                return self.too_big(p, f, (eg.mtu + in_len).saturating_sub(out_len), alloc, out);
            }
            if !p.v6 && out_v6 && p.frag.is_none() {
                // IPv6 fragments need a fragment header: the whole packet becomes a first and only fragment,
                // with IPv4's identification (RFC 7915 §4.1).
                q.frag = Some(FragFields {
                    ident: u32::from(ipv4::Packet::new_unchecked(&f.data()[p.l3..]).ident()),
                    offset: 0,
                    more: false,
                });
            }
        }
        let p = &q;
        let at = match self.translate(&mut f, p, &eg) {
            Ok(at) => at,
            Err(r) => return drop(r),
        };
        if c.cla != CLA_NONE {
            if let Err(r) = self.client_address(idx, dir, &mut f, at, &eg) {
                return drop(r);
            }
        }
        if c.sp == SP_SPLICED {
            self.splice_shift(idx, dir, &mut f.data_mut()[at.l4..]);
        }
        if split {
            return self.emit_fragmented(hop, at.l3, out_v6, f, alloc, out);
        }
        self.emit(hop, at.l3, out_v6, f, alloc, out)
    }

    /// Moves connection `idx` to the TCP state packet `p` leads to and renews its expiry; returns the index of
    /// its service in the current snapshot (found again by VIP, protocol and port after a reload), if any.
    pub(super) fn advance(&mut self, p: &Pkt, idx: u32, dir: Dir) -> Option<u16> {
        let c = *self.conns.get(idx);
        let snap_gen = self.snap.generation as u16;
        let old = c.state();
        let new = if p.proto == proto::TCP {
            tcp_state::next(old, dir, p.tcp_flags)
        } else {
            State::Udp
        };
        let svc = if c.flags & FLAG_SNAT != 0 {
            None
        } else if c.svc_gen == snap_gen {
            Some(c.service)
        } else {
            let s = self.snap.service(&c.vip(), c.proto, c.vport);
            if let Some(si) = s {
                let cm = self.conns.get_mut(idx);
                cm.service = si;
                cm.svc_gen = snap_gen;
            }
            s
        };
        let timeouts = svc
            .and_then(|si| self.snap.services.get(usize::from(si)))
            .map(|s| s.timeouts);
        let timeout = match timeouts {
            Some(t) => t.of(new),
            None if c.flags & FLAG_SNAT != 0 => self.snap.default_timeouts.of(new),
            None => 300_000 / TICK_MS as u32,
        };
        if new != old {
            self.conns.get_mut(idx).state = new as u8;
            self.count_state(c.uid, old, new);
        }
        let exp = self.tick.saturating_add(timeout);
        if exp != c.expires {
            self.conns.set_expiry(idx, exp);
        }
        svc
    }

    /// The MTU of `port` (1500 for a port the snapshot does not know).
    pub(super) fn mtu(&self, port: u16) -> usize {
        self.snap
            .ports
            .get(usize::from(port))
            .map_or(1500, |pt| usize::from(pt.mtu))
    }

    /// A packet too big for its egress once forwarded: IPv4 without DF is dropped, anything else answered with
    /// an ICMP error telling the sender `mtu` (at least the family's minimum).
    pub(super) fn too_big<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        f: F,
        mtu: usize,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let dont_frag = p.v6 || ipv4::Packet::new_unchecked(&f.data()[p.l3..]).dont_frag();
        if !dont_frag {
            return drop(DropReason::TooBig);
        }
        let mtu = mtu.max(if p.v6 { 1280 } else { 68 });
        self.icmp_error(p, f, IcmpKind::TooBig(mtu), DropReason::TooBig, alloc, out)
    }

    /// Rewrites a Full-NAT packet in place for `eg`: within its family, or translated between IPv6 and IPv4
    /// (NAT64, with the MSS of a SYN lowered for the larger or the other side's header). Returns where its
    /// network and transport headers now start.
    pub(super) fn translate(&mut self, f: &mut F, p: &Pkt, eg: &Egress) -> Result<Layout, DropReason> {
        let (l3, l4, e) = (p.l3, p.l4, &eg.e);
        match (p.v6, eg.v6) {
            (false, false) => v4_rewritten(nat::rewrite_v4(&mut f.data_mut()[l3..], l4 - l3, e), l3, l4),
            (true, true) => {
                if !nat::rewrite_v6(&mut f.data_mut()[l3..], l4 - l3, p.proto, e) {
                    return Err(DropReason::Malformed);
                }
                Ok(Layout { l3, l4 })
            }
            (true, false) => {
                self.ident = self.ident.wrapping_add(1);
                if p.syn() {
                    // The backend's segments must fit the backend side (IPv4, 40 bytes of headers) and, once
                    // translated, the client side (IPv6, 60 bytes): an MSS of 1460 from an IPv6 client would let
                    // 1500-byte IPv4 segments become 1520-byte IPv6 packets.
                    let client_mtu = self.mtu(u16::from(eg.client_port));
                    let max = eg.mtu.saturating_sub(40).min(client_mtu.saturating_sub(60));
                    clamp_mss(&mut f.data_mut()[l4..], max as u16);
                }
                let l3 = nat::v6_to_v4(f.data_mut(), l3, l4, p.proto, e, self.ident, p.frag)
                    .ok_or(DropReason::Malformed)?;
                Ok(Layout { l3, l4 })
            }
            (false, true) => {
                let (mut l3, mut l4) = (l3, l4);
                // Room for the IPv6 header, and the fragment header of a fragment.
                let need = ipv6::HEADER_LEN + if p.frag.is_some() { 8 } else { 0 };
                if l4 < need {
                    let grow = need - l4;
                    if !f.prepend(grow) {
                        return Err(DropReason::NoBuffer);
                    }
                    l4 += grow;
                    l3 += grow;
                }
                if p.syn() {
                    let client_mtu = self.mtu(u16::from(eg.client_port));
                    clamp_mss(&mut f.data_mut()[l4..], client_mtu.saturating_sub(60) as u16);
                }
                let l3 =
                    nat::v4_to_v6(f.data_mut(), l3, l4, p.proto, e, p.frag).ok_or(DropReason::Malformed)?;
                Ok(Layout { l3, l4 })
            }
        }
    }
}

/// The outcome of one of `nat`'s IPv4 rewrites of a Full-NAT packet in place (network header at `l3`,
/// transport at `l4`, both where they were): [`Worker::translate`]'s for this pair, and the fast path's.
#[inline(always)]
pub(super) fn v4_rewritten(ok: bool, l3: usize, l4: usize) -> Result<Layout, DropReason> {
    if ok {
        Ok(Layout { l3, l4 })
    } else {
        Err(DropReason::Malformed)
    }
}
