//! The established fast path, and the warming of a burst's connection-table slots before it is processed.

use super::fullnat::v4_rewritten;
use super::pkt::{drop, endpoints, out_v6, outbound_v4, translated_len, Egress, Hop, Pkt, NO_HOP};
use super::{Output, Verdict, Worker};
use crate::conn::{
    CLA_NONE, CLA_TOA_DONE, FLAG_SNAT, MODE_FULLNAT, MODE_MASK, SP_NONE, SP_PENDING, SP_SPLICED,
};
use crate::flow::{is_v4, v4, Tuple};
use crate::frame::{Frame, FrameAlloc};
use crate::nat;
use crate::pool::owner;
use crate::snapshot::Local;
use crate::tcp_state::{self, Dir, State};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{checksum, ipv4, ipv6, proto, tcp, udp};

impl<F: Frame> Worker<F> {
    /// Starts loading the connection-table index slots, then the records, of a whole burst before processing
    /// it, so that their cache misses overlap instead of stalling one packet at a time.
    pub(super) fn warm(&mut self, frames: &[F]) {
        const EMPTY: Tuple = Tuple {
            proto: 0,
            src: [0; 16],
            sport: 0,
            dst: [0; 16],
            dport: 0,
        };
        let n = frames.len();
        self.hint_tuples.resize(n, EMPTY);
        self.hint_hashes.resize(n, 0);
        // Tuples and hashes first, each tuple's index line asked for as soon as its hash is known (a prefetch,
        // so these misses overlap each other and the hashing of the rest); then the records their signatures
        // point to, all before the first packet is processed.
        for ((f, t), h) in frames
            .iter()
            .zip(self.hint_tuples.iter_mut())
            .zip(self.hint_hashes.iter_mut())
        {
            match quick_tuple(f.data()) {
                Some(q) => {
                    *h = self.conns.hash(&q);
                    *t = q;
                    self.conns.warm(*h);
                }
                None => *h = 0,
            }
        }
        for (&h, t) in self.hint_hashes.iter().zip(&self.hint_tuples) {
            if h != 0 {
                self.conns.warm_record(h, is_v4(&t.src));
            }
        }
    }

    /// The established fast path: an untagged TCP segment or UDP datagram, IPv4 without options or IPv6
    /// without extension headers, of a Full-NAT connection (IPv4, IPv6 or NAT64) whose service and next hop
    /// are cached for the current snapshot and routes, and whose next hop is resolved. It does what `handle`
    /// would do for such a packet (same checks, same translation, same state and counters) without the
    /// general parsing; every condition is checked before the frame is changed (a SYN, FIN or RST whose
    /// checksum is bad goes back having lost only its Ethernet padding), and anything else is handed back for
    /// `handle`.
    ///
    /// A segment that moves the connection's TCP state (the handshake's last ACK, a FIN, a RST) is taken too,
    /// and so is a SYN on an established connection (a retransmission, or a forged one: it keeps its backend
    /// either way); a SYN, FIN or RST must be genuine, so its transport checksum is checked first, as the
    /// general path does. A SYN on any other state may replace the connection, a SYN-proxied connection's
    /// state changes are the SYN-proxy's, and a client's segment on a closed connection may belong to a newer
    /// flow of its tuple: those stay with `handle`.
    #[inline]
    pub(super) fn fast<A: FrameAlloc<F = F>>(
        &mut self,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Result<Verdict, F> {
        const L3: usize = ethernet::HEADER_LEN;
        let h = match (self.hint_hashes.get(self.cur), self.hint_tuples.get(self.cur)) {
            (Some(&h), Some(_)) if h != 0 && self.fast_path => h,
            _ => return Err(f),
        };
        let t = &self.hint_tuples[self.cur];
        let d = f.data();
        // (IPv6?, transport offset, network length, TTL or hop limit, protocol), read through the wire views.
        let eth = ethernet::Frame::new_unchecked(d);
        let untagged = d.len() >= L3 + ipv4::HEADER_LEN && eth.header_len() == L3;
        let (v6, l4, total, ttl, p) = match untagged.then(|| eth.ethertype()) {
            Some(ethertype::IPV4) => {
                let Ok(hdr) = <&[u8; ipv4::HEADER_LEN]>::try_from(&d[L3..L3 + ipv4::HEADER_LEN]) else {
                    return Err(f);
                };
                let ip = ipv4::Packet::new_unchecked(hdr);
                if ip.version() != 4
                    || ip.header_len() != ipv4::HEADER_LEN
                    || ip.is_fragment()
                    || (!f.rx_checksums_verified() && !checksum::ipv4_header_ok(hdr))
                {
                    return Err(f);
                }
                let total = usize::from(ip.total_len());
                if total < ipv4::HEADER_LEN {
                    return Err(f);
                }
                (false, L3 + ipv4::HEADER_LEN, total, ip.ttl(), ip.protocol())
            }
            Some(ethertype::IPV6) if d.len() >= L3 + ipv6::HEADER_LEN => {
                let ip = ipv6::Packet::new_unchecked(&d[L3..]);
                if ip.version() != 6 {
                    return Err(f);
                }
                let plen = usize::from(ip.payload_len());
                (
                    true,
                    L3 + ipv6::HEADER_LEN,
                    ipv6::HEADER_LEN + plen,
                    ip.hop_limit(),
                    ip.next_header(),
                )
            }
            _ => return Err(f),
        };
        if ttl <= 1 || d.len() < L3 + total {
            return Err(f);
        }
        let seg = &d[l4..L3 + total];
        let flags = match p {
            proto::TCP => match tcp::Packet::new_checked(seg) {
                Ok(t) => t.flags(),
                Err(_) => return Err(f),
            },
            proto::UDP if udp::Packet::new_checked(seg).is_ok() => 0,
            _ => return Err(f),
        };
        // A SYN, FIN or RST is acted on only once its transport checksum is found good.
        let checked = flags & (tcp::flags::SYN | tcp::flags::FIN | tcp::flags::RST) != 0;
        let local = self.snap.local(&t.dst);
        if !matches!(local, Some(Local::Vip | Local::Lip | Local::Released)) {
            return Err(f);
        }
        let Some((idx, dir)) = self.conns.lookup(t, h) else {
            // A reply to a local address in another worker's port slice, with no connection here (RSS put it
            // on this worker's queue): handed to its owner as the general path would, without its parsing.
            let o = owner(t.dport, self.snap.mask);
            if matches!(local, Some(Local::Lip | Local::Released))
                && o != self.id
                && usize::from(o) < self.snap.workers
            {
                self.stats.fast_path += 1;
                return Ok(self.redirect(o, f, out));
            }
            return Err(f);
        };
        let c = self.conns.get(idx);
        let slot = match dir {
            Dir::Inbound => c.nh_fwd,
            Dir::Reply => c.nh_rev,
        };
        let out_v6 = out_v6(c, dir);
        // IPv4 on both sides, the common case: the new addresses as they are kept, without the general
        // translation's 16-byte endpoints.
        let v4 = if v6 || out_v6 { None } else { outbound_v4(c, dir) };
        if c.flags & (MODE_MASK | FLAG_SNAT) != MODE_FULLNAT
            || !matches!(c.cla, CLA_NONE | CLA_TOA_DONE)
            || c.sp == SP_PENDING
            || c.svc_gen != self.snap.generation as u16
            || c.route_gen != self.route_gen
            || slot == NO_HOP
        {
            return Err(f);
        }
        let state = c.state();
        // Nearly every segment is an established connection's ACK or data, which changes nothing: known here
        // without the call.
        let new = if p != proto::TCP || (!checked && state == State::Established) {
            state
        } else {
            tcp_state::next(state, dir, flags)
        };
        // The general path's: a client's segment on a closed entry (maybe a newer flow of the tuple), a
        // SYN-proxied connection's state change, a SYN that may replace its connection.
        if (dir == Dir::Inbound && p == proto::TCP && matches!(state, State::TimeWait | State::Close))
            || ((checked || new != state) && c.sp != SP_NONE)
            || (flags & tcp::flags::SYN != 0 && state != State::Established)
        {
            return Err(f);
        }
        let (Some(svc), Some(entry)) = (
            self.snap.services.get(usize::from(c.service)),
            self.neigh.get(u32::from(slot)),
        ) else {
            return Err(f);
        };
        let (Some(mac), port) = (entry.mac, entry.port) else {
            return Err(f);
        };
        let Some(pt) = self.snap.ports.get(usize::from(port)) else {
            return Err(f);
        };
        let mtu = usize::from(pt.mtu);
        if pt.vlan.is_some() || translated_len(total, l4 - L3, v6, out_v6) > mtu {
            return Err(f);
        }
        // Committed: expiry, translation, Ethernet header, transmission.
        let src_mac = pt.mac;
        let uid = c.uid;
        // A spliced connection's sequence shift goes with the translation; SACK blocks (options) and windows of
        // differing scales need more.
        let spliced_more = c.sp == SP_SPLICED
            && (c.sp_win_in != 0
                || c.sp_win_reply >> 4 != c.sp_win_reply & 0x0f
                || (p == proto::TCP && f.data()[l4 + 12] >> 4 > 5));
        let exp = self.tick.saturating_add(svc.timeouts.of(new));
        let client_port = c.in_port;
        let pkt = |t: &Tuple| Pkt {
            in_port: 0,
            l3: L3,
            l4,
            v6,
            proto: p,
            src: t.src,
            dst: t.dst,
            sport: t.sport,
            dport: t.dport,
            ttl,
            tcp_flags: flags,
            frag: None,
        };
        if checked {
            // Trimmed first: the checksum covers the segment up to the IP length, not the Ethernet padding.
            f.truncate(L3 + total);
            if !self.verify_l4(&pkt(&self.hint_tuples[self.cur]), &f) {
                return Err(f);
            }
        }
        if new != state {
            self.conns.get_mut(idx).state = new as u8;
            self.count_state(uid, state, new);
        }
        if exp != self.conns.get(idx).expires {
            self.conns.set_expiry(idx, exp);
        }
        self.count_packet(uid, dir, total);
        if self.snap.sync.is_some() {
            self.sync_due(idx, out);
        }
        f.truncate(L3 + total);
        let rewritten = if let Some((src, dst, ports)) = v4 {
            // The rewrite itself, without the general translation's packet and egress descriptions.
            let ok = nat::rewrite_v4_to(&mut f.data_mut()[L3..], l4 - L3, src, dst, ports);
            v4_rewritten(ok, L3, l4)
        } else {
            let pkt = pkt(&self.hint_tuples[self.cur]);
            let eg = Egress {
                e: endpoints(self.conns.get(idx), dir),
                v6: out_v6,
                mtu,
                client_port,
            };
            self.translate(&mut f, &pkt, &eg)
        };
        let at = match rewritten {
            Ok(at) => at,
            Err(r) => return Ok(drop(r)),
        };
        if spliced_more {
            self.splice_shift(idx, dir, &mut f.data_mut()[at.l4..]);
        }
        self.stats.fast_path += 1;
        if at.l3 != L3 {
            return Ok(self.emit(
                Hop {
                    port,
                    slot: u32::from(slot),
                },
                at.l3,
                out_v6,
                f,
                alloc,
                out,
            ));
        }
        let mut eth = ethernet::Frame::new_unchecked(f.data_mut());
        eth.set_dst(mac);
        eth.set_src(src_mac);
        self.tx(port, f, out);
        Ok(Verdict::Forward { port })
    }
}

/// The transport tuple of a plain TCP/UDP frame (no IPv6 extension headers), for warming caches only.
#[inline]
pub(super) fn quick_tuple(d: &[u8]) -> Option<Tuple> {
    let eth = ethernet::Frame::new_checked(d).ok()?;
    let ip = d.get(eth.header_len()..)?;
    let (p, src, dst, l4) = match eth.ethertype() {
        ethertype::IPV4 if ip.len() >= ipv4::HEADER_LEN => {
            let h = ipv4::Packet::new_unchecked(ip);
            (h.protocol(), v4(h.src()), v4(h.dst()), h.header_len())
        }
        ethertype::IPV6 if ip.len() >= ipv6::HEADER_LEN => {
            let h = ipv6::Packet::new_unchecked(ip);
            (
                h.next_header(),
                h.src().octets(),
                h.dst().octets(),
                ipv6::HEADER_LEN,
            )
        }
        _ => return None,
    };
    if p != proto::TCP && p != proto::UDP {
        return None;
    }
    // TCP and UDP both start with the two ports.
    let ports = udp::Packet::new_unchecked(ip.get(l4..l4 + 4)?);
    Some(Tuple {
        proto: p,
        src,
        sport: ports.src_port(),
        dst,
        dport: ports.dst_port(),
    })
}
