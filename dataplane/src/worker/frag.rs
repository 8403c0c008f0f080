//! IPv4 and IPv6 fragments of TCP and UDP, forwarded without reassembly ([`crate::frag`] says why): the first
//! fragment takes the normal path and binds its datagram to the connection it went through; later fragments
//! follow with only their IP header translated (Full-NAT 44, 66, NAT64 both ways) or as they are (DR, tunnel),
//! or wait, parked, for a first fragment that has not come yet.
//!
//! Defences (RFC 1858, RFC 3128): a first fragment must hold the whole transport header (a "tiny fragment"
//! that splits it is dropped), and a TCP fragment at offset 8 — which could overwrite the header's flags — is
//! dropped. Overlaps beyond that are the receiving kernel's to resolve, as it reassembles.

use super::pkt::{drop, outbound, Hop, Pkt};
use super::{Output, Verdict, Worker};
use crate::conn::{FLAG_SNAT, MODE_DR, MODE_FULLNAT, MODE_MASK, MODE_TUNNEL};
use crate::frag::{FragKey, Refused, Route};
use crate::frame::{Frame, FrameAlloc};
use crate::nat::{self, FragFields};
use crate::snapshot::{Encap, Local};
use crate::stats::DropReason;
use crate::tcp_state::Dir;
use crate::wire::{ipv4, ipv6, proto, tcp, udp};

impl<F: Frame> Worker<F> {
    /// A TCP or UDP fragment to a VIP, a local address or through the node.
    pub(super) fn fragment<A: FrameAlloc<F = F>>(
        &mut self,
        p: Pkt,
        fr: FragFields,
        local: Local,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        if fr.is_first() {
            // The whole transport header must be in the first fragment.
            let room = f.data().len().saturating_sub(p.l4);
            let header = match p.proto {
                proto::TCP => f
                    .data()
                    .get(p.l4 + 12)
                    .map_or(usize::MAX, |o| (usize::from(o >> 4) * 4).max(tcp::HEADER_LEN)),
                _ => udp::HEADER_LEN,
            };
            if room < header {
                return drop(DropReason::Fragment);
            }
            self.stats.fragments += 1;
            return self.transport(p, local, f, alloc, out);
        }
        if p.proto == proto::TCP && fr.offset == 8 {
            return drop(DropReason::Fragment);
        }
        self.stats.fragments += 1;
        let key = p.frag_key(fr);
        match self.frags.route(&key, self.now_ms) {
            Some(route) => self.follow(&p, route, f, alloc, out),
            None => match self.frags.park(key, p.in_port, f, self.now_ms) {
                Ok(()) => Verdict::Parked,
                Err((_, Refused::Datagrams | Refused::Parked)) => drop(DropReason::FragmentLimit),
            },
        }
    }

    /// The first fragment of datagram `key` went `route`: the fragments parked for it go the same way.
    pub(super) fn fragments_follow<A: FrameAlloc<F = F>>(
        &mut self,
        key: FragKey,
        route: Route,
        alloc: &mut A,
        out: &mut Output<F>,
    ) {
        let parked = match self.frags.bind(key, route, self.now_ms) {
            Ok(v) => v,
            Err(_) => {
                self.stats.drop(DropReason::FragmentLimit);
                return;
            }
        };
        for (port, f) in parked {
            let v = match self.reparse(port, &f) {
                Some(p) => self.follow(&p, route, f, alloc, out),
                None => drop(DropReason::Malformed),
            };
            if let Verdict::Drop { reason } = v {
                self.stats.drop(reason);
            }
        }
    }

    /// The packet view of a parked later fragment, read again from its frame.
    fn reparse(&self, in_port: u16, f: &F) -> Option<Pkt> {
        let d = f.data();
        let l3 = crate::wire::ethernet::Frame::new_checked(d).ok()?.header_len();
        match d.get(l3)? >> 4 {
            4 => {
                let ip = ipv4::Packet::new_checked(&d[l3..]).ok()?;
                Some(Pkt {
                    in_port,
                    l3,
                    l4: l3 + ip.header_len(),
                    v6: false,
                    proto: ip.protocol(),
                    src: crate::flow::v4(ip.src()),
                    dst: crate::flow::v4(ip.dst()),
                    sport: 0,
                    dport: 0,
                    ttl: ip.ttl(),
                    tcp_flags: 0,
                    frag: Some(FragFields {
                        ident: u32::from(ip.ident()),
                        offset: ip.frag_offset(),
                        more: ip.more_frags(),
                    }),
                })
            }
            _ => {
                let ip = ipv6::Packet::new_checked(&d[l3..]).ok()?;
                let ul = ip.upper_layer().ok()?;
                let h = ul.fragment?;
                Some(Pkt {
                    in_port,
                    l3,
                    l4: l3 + ul.offset,
                    v6: true,
                    proto: ul.protocol,
                    src: ip.src().octets(),
                    dst: ip.dst().octets(),
                    sport: 0,
                    dport: 0,
                    ttl: ip.hop_limit(),
                    tcp_flags: 0,
                    frag: Some(FragFields {
                        ident: h.ident,
                        offset: h.offset,
                        more: h.more,
                    }),
                })
            }
        }
    }

    /// A later fragment of a datagram whose route is known.
    fn follow<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        route: Route,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        match route {
            Route::Worker(w) => self.redirect(w, f, out),
            Route::Conn(idx, dir) => self.forward_later(p, idx, dir, f, alloc, out),
        }
    }

    /// A later fragment through connection `idx`: its IP header translated as the first fragment's was (the
    /// connection's addresses; NAT64 carries the identification, offset and M flag across), or the frame sent
    /// as the direct modes send it.
    fn forward_later<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        idx: u32,
        dir: Dir,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        if p.ttl <= 1 {
            return drop(DropReason::Ttl);
        }
        let c = *self.conns.get(idx);
        // The connection's slot may have been reused since the first fragment: it must still be that flow.
        let same = match dir {
            Dir::Inbound => c.client() == p.src && c.vip() == p.dst,
            Dir::Reply => c.backend() == p.src && c.lip() == p.dst,
        };
        if !same {
            return drop(DropReason::NoConnection);
        }
        let len = f.data().len() - p.l3;
        self.count_packet(c.uid, dir, len);
        match c.flags & (MODE_MASK | FLAG_SNAT) {
            MODE_DR | MODE_TUNNEL if dir == Dir::Inbound => {
                let encap = (c.flags & MODE_MASK == MODE_TUNNEL).then(|| {
                    self.snap
                        .services
                        .get(usize::from(c.service))
                        .map_or(Encap::Ip, |s| s.encap)
                });
                return self.forward_direct(p, idx, encap, f, alloc, out);
            }
            MODE_FULLNAT => {}
            _ => return drop(DropReason::Fragment),
        }
        let (e, out_v6) = outbound(&c, dir);
        let Some(hop) = self.next_hop(idx, &c, dir, &e.dst) else {
            return drop(DropReason::NoRoute);
        };
        let grow = match (p.v6, out_v6) {
            (false, true) => ipv6::HEADER_LEN + 8 - (p.l4 - p.l3),
            _ => 0,
        };
        let mtu = self.mtu(hop.port);
        // IPv6 to IPv6 is not fragmented further (the sender's path MTU discovery covers it).
        if len + grow > mtu && p.v6 && out_v6 {
            return drop(DropReason::TooBig);
        }
        let fr = p.frag;
        let l3 = match (p.v6, out_v6) {
            (false, false) => {
                nat::rewrite_v4_header(&mut f.data_mut()[p.l3..], &e);
                p.l3
            }
            (true, true) => {
                nat::rewrite_v6_header(&mut f.data_mut()[p.l3..], &e);
                p.l3
            }
            (true, false) => {
                self.ident = self.ident.wrapping_add(1);
                match nat::v6_to_v4(f.data_mut(), p.l3, p.l4, p.proto, &e, self.ident, fr) {
                    Some(l3) => l3,
                    None => return drop(DropReason::Malformed),
                }
            }
            (false, true) => {
                let (mut l3, mut l4) = (p.l3, p.l4);
                if l4 < ipv6::HEADER_LEN + 8 {
                    let need = ipv6::HEADER_LEN + 8 - l4;
                    if !f.prepend(need) {
                        return drop(DropReason::NoBuffer);
                    }
                    l3 += need;
                    l4 += need;
                }
                match nat::v4_to_v6(f.data_mut(), l3, l4, p.proto, &e, fr) {
                    Some(l3) => l3,
                    None => return drop(DropReason::Malformed),
                }
            }
        };
        if len + grow > mtu {
            return self.emit_fragmented(hop, l3, out_v6, f, alloc, out);
        }
        self.emit(hop, l3, out_v6, f, alloc, out)
    }

    /// Sends the translated packet at `l3` — an IPv4 packet, or an IPv6 one with a fragment header right after
    /// its fixed header — as fragments that fit the MTU of the hop's port: the first in this frame, the rest in
    /// new ones, their offsets counted from the packet's own (it may be a fragment already) and M set on all but
    /// a last one.
    pub(super) fn emit_fragmented<A: FrameAlloc<F = F>>(
        &mut self,
        hop: Hop,
        l3: usize,
        v6: bool,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let mtu = self.mtu(hop.port);
        let d = f.data();
        let (hdr, base, more) = if v6 {
            if d.get(l3 + 6) != Some(&nat::IPV6_FRAGMENT) || d.len() < l3 + 48 {
                return drop(DropReason::TooBig);
            }
            let fo = u16::from_be_bytes([d[l3 + 42], d[l3 + 43]]);
            (ipv6::HEADER_LEN + 8, fo & 0xfff8, fo & 1 != 0)
        } else {
            let ip = ipv4::Packet::new_unchecked(&d[l3..]);
            (ip.header_len(), ip.frag_offset(), ip.more_frags())
        };
        let max = mtu.saturating_sub(hdr) & !7;
        let data_len = d.len() - l3 - hdr;
        if max == 0 {
            return drop(DropReason::TooBig);
        }
        let mut rest = Vec::new();
        let mut off = max;
        while off < data_len {
            let n = max.min(data_len - off);
            let Some(mut g) = alloc.alloc() else {
                return drop(DropReason::NoBuffer);
            };
            if !g.append(l3 + hdr + n) {
                return drop(DropReason::NoBuffer);
            }
            let (src, dst) = (f.data(), g.data_mut());
            dst[..l3 + hdr].copy_from_slice(&src[..l3 + hdr]);
            dst[l3 + hdr..].copy_from_slice(&src[l3 + hdr + off..l3 + hdr + off + n]);
            set_fragment(
                &mut dst[l3..],
                v6,
                hdr,
                n,
                base + off as u16,
                more || off + n < data_len,
            );
            rest.push(g);
            off += n;
        }
        f.truncate(l3 + hdr + max);
        set_fragment(&mut f.data_mut()[l3..], v6, hdr, max, base, true);
        let v = self.emit(hop, l3, v6, f, alloc, out);
        for g in rest {
            self.emit(hop, l3, v6, g, alloc, out);
        }
        v
    }
}

/// Writes the length, offset and M flag of a fragment carrying `n` bytes (and the IPv4 header checksum).
fn set_fragment(ip: &mut [u8], v6: bool, hdr: usize, n: usize, offset: u16, more: bool) {
    if v6 {
        ip[4..6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
        ip[42..44].copy_from_slice(&((offset & 0xfff8) | u16::from(more)).to_be_bytes());
    } else {
        let mut h = ipv4::Packet::new_unchecked(&mut ip[..hdr]);
        h.set_total_len((hdr + n) as u16);
        h.set_frag(false, more, offset);
        h.fill_checksum();
    }
}
