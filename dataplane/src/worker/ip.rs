//! IPv4 and IPv6 parsed into a [`Pkt`], and TCP/UDP dispatched through the connection table: an existing
//! connection is forwarded, a new flow to a service opens one, replies to local addresses go to the worker
//! that owns their port, and transit flows to the source-NAT gateway or the kernel.

use super::pkt::{drop, pseudo6, Pkt};
use super::{Output, Verdict, Worker};
use crate::conn::Conn;
use crate::flow::{to_v4, v4};
use crate::frag::Route;
use crate::frame::{Frame, FrameAlloc};
use crate::nat::FragFields;
use crate::pool::owner;
use crate::snapshot::Local;
use crate::stats::DropReason;
use crate::tcp_state::{Dir, State};
use crate::wire::icmp::v6 as icmp6;
use crate::wire::{checksum, ipv4, ipv6, proto, tcp, udp};

impl<F: Frame> Worker<F> {
    /// An IPv4 packet (at `l3`) for a VIP, a local address or through the node; the rest goes to the kernel.
    pub(super) fn ipv4<A: FrameAlloc<F = F>>(
        &mut self,
        in_port: u16,
        mut f: F,
        l3: usize,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let Ok(ip) = ipv4::Packet::new_checked(&d[l3..]) else {
            return drop(DropReason::Malformed);
        };
        if ip.version() != 4 {
            return drop(DropReason::Malformed);
        }
        let dst = v4(ip.dst());
        let local = match self.snap.local(&dst) {
            None if (self.snap.transit && matches!(ip.protocol(), proto::TCP | proto::UDP))
                || (!self.snap.snat.is_empty()
                    && matches!(ip.protocol(), proto::TCP | proto::UDP | proto::ICMP)) =>
            {
                Local::Transit
            }
            Some(Local::Own(_)) | None => return self.kernel(in_port, f, out),
            Some(l) => l,
        };
        if !f.rx_checksums_verified() && !ip.verify_checksum() {
            return drop(DropReason::BadChecksum);
        }
        let frag = ip.is_fragment().then(|| FragFields {
            ident: u32::from(ip.ident()),
            offset: ip.frag_offset(),
            more: ip.more_frags(),
        });
        let (ihl, total, p, ttl, src) = (
            ip.header_len(),
            usize::from(ip.total_len()),
            ip.protocol(),
            ip.ttl(),
            v4(ip.src()),
        );
        f.truncate(l3 + total);
        let pkt = Pkt {
            in_port,
            l3,
            l4: l3 + ihl,
            v6: false,
            proto: p,
            src,
            dst,
            sport: 0,
            dport: 0,
            ttl,
            tcp_flags: 0,
            frag,
        };
        match (p, frag) {
            (proto::TCP | proto::UDP, Some(fr)) => self.fragment(pkt, fr, local, f, alloc, out),
            (proto::TCP | proto::UDP, None) => self.transport(pkt, local, f, alloc, out),
            (_, Some(_)) => drop(DropReason::Fragment),
            (proto::ICMP, None) => self.icmp4(&pkt, local, f, alloc, out),
            _ => drop(DropReason::Unsupported),
        }
    }

    /// An IPv6 packet (at `l3`): neighbour discovery to the small stack, then as [`Worker::ipv4`].
    pub(super) fn ipv6<A: FrameAlloc<F = F>>(
        &mut self,
        in_port: u16,
        mut f: F,
        l3: usize,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let Ok(ip) = ipv6::Packet::new_checked(&d[l3..]) else {
            return drop(DropReason::Malformed);
        };
        if ip.version() != 6 {
            return drop(DropReason::Malformed);
        }
        let Ok(ul) = ip.upper_layer() else {
            return drop(DropReason::Malformed);
        };
        let dst = ip.dst().octets();
        let src = ip.src().octets();
        let (plen, hop) = (usize::from(ip.payload_len()), ip.hop_limit());
        // An atomic fragment (offset 0, M clear) is a whole packet (RFC 6946): processed as one, its fragment
        // header carried along (or dropped by NAT64's header translation).
        let frag = ul.fragment.filter(|h| !h.is_atomic()).map(|h| FragFields {
            ident: h.ident,
            offset: h.offset,
            more: h.more,
        });
        let pkt = Pkt {
            in_port,
            l3,
            l4: l3 + ul.offset,
            v6: true,
            proto: ul.protocol,
            src,
            dst,
            sport: 0,
            dport: 0,
            ttl: hop,
            tcp_flags: 0,
            frag,
        };
        let icmp_type = d.get(l3 + ul.offset).copied();
        f.truncate(l3 + ipv6::HEADER_LEN + plen);
        if ul.protocol == proto::ICMPV6 && ul.fragment.is_none() {
            let ty = icmp_type;
            if matches!(ty, Some(icmp6::NEIGHBOR_SOLICIT | icmp6::NEIGHBOR_ADVERT)) {
                if hop != 255 {
                    return drop(DropReason::Malformed);
                }
                return self.ndp(&pkt, f, out);
            }
        }
        let local = match self.snap.local(&dst) {
            None if (self.snap.transit || !self.snap.snat.is_empty())
                && matches!(ul.protocol, proto::TCP | proto::UDP) =>
            {
                Local::Transit
            }
            Some(Local::Own(_)) | None => return self.kernel(in_port, f, out),
            Some(l) => l,
        };
        match (ul.protocol, frag) {
            (proto::TCP | proto::UDP, Some(fr)) => self.fragment(pkt, fr, local, f, alloc, out),
            (proto::TCP | proto::UDP, None) => self.transport(pkt, local, f, alloc, out),
            (_, Some(_)) => drop(DropReason::Fragment),
            (proto::ICMPV6, None) => self.icmp6(&pkt, f, alloc, out),
            _ => drop(DropReason::Unsupported),
        }
    }

    /// A TCP segment or UDP datagram to a VIP, a local address or through the node: its ports and flags read
    /// into `p`, then the connection it belongs to, or what becomes of a flow not known here.
    pub(super) fn transport<A: FrameAlloc<F = F>>(
        &mut self,
        mut p: Pkt,
        local: Local,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let l4 = &f.data()[p.l4..];
        if p.proto == proto::TCP {
            let Ok(t) = tcp::Packet::new_checked(l4) else {
                return drop(DropReason::Malformed);
            };
            (p.sport, p.dport, p.tcp_flags) = (t.src_port(), t.dst_port(), t.flags());
        } else if p.frag.is_some() {
            // A first fragment: its UDP length covers the whole datagram, not this fragment.
            if l4.len() < udp::HEADER_LEN {
                return drop(DropReason::Fragment);
            }
            let u = udp::Packet::new_unchecked(l4);
            (p.sport, p.dport) = (u.src_port(), u.dst_port());
        } else {
            let Ok(u) = udp::Packet::new_checked(l4) else {
                return drop(DropReason::Malformed);
            };
            (p.sport, p.dport) = (u.src_port(), u.dst_port());
        }
        let t = p.tuple();
        let h = self.hinted_hash(&t).unwrap_or_else(|| self.conns.hash(&t));
        let hit = match self.conns.lookup(&t, h) {
            // A new SYN on a closing or closed connection (the client reused its port; a client that closed
            // second reuses it at once, while this entry may still wait for a last ACK), or a SYN retransmitted
            // to a backend that has since been drained or gone down: forget the old entry and schedule afresh,
            // so that no new connection sticks to a backend that should get none (IPVS conn_reuse_mode). An
            // established connection keeps its backend (a SYN there may be forged).
            Some((idx, Dir::Inbound))
                if local == Local::Vip
                    && p.tcp_flags & (tcp::flags::SYN | tcp::flags::ACK) == tcp::flags::SYN
                    && self.reusable(idx) =>
            {
                self.forget(idx, out);
                None
            }
            // Data from a router on a connection both sides have closed: that connection's client has sent
            // its FIN and has no data left to send (only a repeated last ACK or FIN, which stay here), so this
            // is a newer flow of the same tuple (a client that reused its port) whose SYN opened it on a peer
            // node, and which the router has since moved here. Translated by the closed entry it would reach
            // the old backend's socket and never its own: it gets the second chance instead, as a flow not
            // known here would.
            Some((idx, Dir::Inbound))
                if local == Local::Vip
                    && p.proto == proto::TCP
                    && p.tcp_flags & tcp::flags::SYN == 0
                    && matches!(self.conns.get(idx).state(), State::TimeWait | State::Close)
                    && !self.snap.peers.is_empty()
                    && !tcp::Packet::new_unchecked(&f.data()[p.l4..]).payload().is_empty()
                    && self.sent_by_router(p.in_port, &f) =>
            {
                // A part of `peer_forwarded`: counted when that is.
                let handed = self.stats.peer_forwarded;
                let v = self.hand_to_peer(&p, h, f, alloc, out);
                self.stats.peer_forwarded_closed += self.stats.peer_forwarded - handed;
                return v;
            }
            other => other,
        };
        match hit {
            Some((idx, dir)) => self.forward(&p, idx, dir, f, alloc, out),
            None => self.unknown(&p, local, h, f, alloc, out),
        }
    }

    /// A TCP segment to a VIP that is not a SYN, with no connection here: for a SYN-proxy service, an ACK
    /// returning a valid cookie opens one; else a segment from a router goes to a peer node (second chance),
    /// where its connection may live; anything else is dropped.
    fn stray_segment<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        h: u64,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let proxied = self
            .snap
            .service(&p.dst, p.proto, p.dport)
            .filter(|&si| self.snap.services[usize::from(si)].syn_proxy);
        let f = match proxied {
            Some(si) => match self.cookie_ack(p, si, f, alloc, out) {
                Ok(v) => return v,
                Err(f) => f,
            },
            None => f,
        };
        if !self.snap.peers.is_empty() && self.sent_by_router(p.in_port, &f) {
            return self.hand_to_peer(p, h, f, alloc, out);
        }
        if proxied.is_some() && p.tcp_flags & tcp::flags::ACK != 0 {
            return drop(DropReason::BadCookie);
        }
        self.new_conn(p, f, alloc, out)
    }

    /// A packet of a flow with no connection here (`h` its tuple's hash): a segment from a router that does
    /// not open a connection goes to a peer node (second chance); the first packet of a flow to a VIP opens
    /// one; a reply to a local address goes to the worker that owns its port; a transit flow goes to the
    /// worker of a NAT-mode client port, the source-NAT gateway, or the kernel.
    fn unknown<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        local: Local,
        h: u64,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        match local {
            Local::Vip if p.proto == proto::TCP && !p.opens() => self.stray_segment(p, h, f, alloc, out),
            Local::Vip => self.new_conn(p, f, alloc, out),
            Local::Transit => {
                let o = self.nat_owner(p.dport);
                if self.snap.transit && o != self.id {
                    self.redirect(o, f, out)
                } else if let Some(ri) = self.snat_rule(p) {
                    self.snat_flow(p, ri, f, alloc, out)
                } else {
                    self.kernel(p.in_port, f, out)
                }
            }
            _ => {
                let o = owner(p.dport, self.snap.mask);
                if o != self.id && usize::from(o) < self.snap.workers {
                    // The later fragments of this datagram carry no port: they follow the first one there.
                    if let Some(fr) = p.frag {
                        self.fragments_follow(p.frag_key(fr), Route::Worker(o), alloc, out);
                    }
                    self.redirect(o, f, out)
                } else {
                    drop(DropReason::NoConnection)
                }
            }
        }
    }

    /// Whether a new SYN may replace connection `idx`: it is closing or closed, or still in its handshake
    /// with a backend whose weight is now zero.
    fn reusable(&self, idx: u32) -> bool {
        let c = self.conns.get(idx);
        match c.state() {
            State::FinWait | State::CloseWait | State::LastAck | State::TimeWait | State::Close => true,
            State::SynRecv => self.backend_weight(c) == Some(0),
            State::Established | State::Udp => false,
        }
    }

    /// The current weight of connection `c`'s backend, when its service is still there.
    fn backend_weight(&self, c: &Conn) -> Option<u32> {
        let si = self.snap.service(&c.vip(), c.proto, c.vport)?;
        let (svc_i, bi) = *self.snap.uid_index.get(&c.uid)?;
        if svc_i != si {
            return None;
        }
        self.snap
            .services
            .get(usize::from(si))?
            .weights
            .get(usize::from(bi))
            .copied()
    }

    /// Whether the transport checksum of `p` is right (or the NIC verified it); a UDP/IPv6 datagram without
    /// one is not (RFC 8200 §8.1).
    pub(super) fn verify_l4(&self, p: &Pkt, f: &F) -> bool {
        if f.rx_checksums_verified() {
            return true;
        }
        let d = f.data();
        let seg = &d[p.l4..];
        let pseudo = if p.v6 {
            pseudo6(&d[p.l3..], p.proto, seg.len())
        } else {
            checksum::pseudo_v4(to_v4(&p.src), to_v4(&p.dst), p.proto, seg.len() as u16)
        };
        if p.proto == proto::TCP {
            tcp::Packet::new_unchecked(seg).verify_checksum(pseudo)
        } else {
            let u = udp::Packet::new_unchecked(seg);
            if p.v6 && u.checksum() == 0 {
                return false;
            }
            u.verify_checksum(pseudo)
        }
    }
}
