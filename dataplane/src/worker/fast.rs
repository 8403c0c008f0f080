//! The established fast path, and the warming of a burst's connection-table slots before it is processed.
//!
//! Warming reads each frame's flow once: a plain IPv4 frame (untagged, no options, TCP or UDP) as a
//! [`Tuple4`] straight from its bytes, anything else with a tuple as a [`Tuple`]. The fast path then takes
//! the plain IPv4 frame of a connection that is IPv4 on both sides without ever widening its addresses: the
//! key is compared with the record's four-byte addresses, and whether its destination is a VIP or local
//! address is remembered per direction for the snapshot. Every other frame (IPv6, NAT64, a flow not known
//! here) goes the general way through 16-byte tuples; both ways end in [`Worker::established`].

use std::net::Ipv4Addr;

use super::fullnat::v4_rewritten;
use super::pkt::{drop, endpoints, out_v6, outbound_v4, translated_len, Egress, Hop, Pkt, NO_HOP};
use super::{Output, Verdict, Worker};
use crate::conn::{
    CLA_NONE, CLA_TOA_DONE, FLAG_SNAT, MODE_FULLNAT, MODE_MASK, SP_NONE, SP_PENDING, SP_SPLICED,
};
use crate::flow::{is_v4, v4, Tuple, Tuple4};
use crate::frame::{Frame, FrameAlloc};
use crate::nat::{self, Ports};
use crate::pool::owner;
use crate::snapshot::Local;
use crate::tcp_state::{self, Dir, State};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{checksum, ipv4, ipv6, proto, tcp, udp};

/// What warming learnt of one frame of the burst.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Hint {
    /// Hash of the frame's tuple; 0: it has none (not TCP or UDP, or too short).
    pub(super) h: u64,
    /// The key of a plain IPv4 frame. Any other frame's tuple is in the worker's `hint_tuples` at the same
    /// position.
    pub(super) v4: Option<Tuple4>,
    /// The record and direction of the first index entry with the hash's signature: most likely the frame's
    /// connection, checked before it is taken ([`ConnTable::lookup_from`](crate::conn::ConnTable::lookup_from)).
    pub(super) cand: Option<(u32, Dir)>,
}

/// What the fast path read of a frame's network and transport headers (the frame is untagged).
#[derive(Debug, Clone, Copy)]
struct Shape {
    v6: bool,
    /// Offset of the transport header.
    l4: usize,
    /// Length from the network header on, as that header says.
    total: usize,
    /// TTL or hop limit.
    ttl: u8,
    /// Transport protocol.
    p: u8,
    /// TCP flags (0 for UDP).
    flags: u8,
}

/// The IPv4 addresses and ports a connection that is IPv4 on both sides gives a packet ([`outbound_v4`]).
type Out4 = ([u8; 4], [u8; 4], Ports);

const L3: usize = ethernet::HEADER_LEN;

impl<F: Frame> Worker<F> {
    /// Reads each frame's flow (see the module's documentation) and starts loading the connection-table index
    /// slots, then the records, of the whole burst before it is processed, so that their cache misses overlap
    /// instead of stalling one packet at a time.
    pub(super) fn warm(&mut self, frames: &[F]) {
        const EMPTY: Tuple = Tuple {
            proto: 0,
            src: [0; 16],
            sport: 0,
            dst: [0; 16],
            dport: 0,
        };
        let n = frames.len();
        self.hints.resize(n, Hint::default());
        self.hint_tuples.resize(n, EMPTY);
        // Keys and hashes first; then every index line asked for, in a loop of its own; then the records their
        // signatures point to, all before the first packet is processed. A prefetch that misses the TLB holds
        // up retirement until its page walk is done (a sampling profile at 10M connections put three quarters
        // of warming's time on it), so the prefetches go in a loop of a few instructions each: the core then
        // has many of them, and their walks, in flight at once, where one after each hash it had a few.
        for ((f, hint), t) in frames
            .iter()
            .zip(self.hints.iter_mut())
            .zip(self.hint_tuples.iter_mut())
        {
            let d = f.data();
            *hint = if let Some(k) = plain_v4(d) {
                Hint {
                    h: self.conns.hash_v4(&k),
                    v4: Some(k),
                    cand: None,
                }
            } else if quick_tuple(d, t) {
                Hint {
                    h: self.conns.hash(t),
                    v4: None,
                    cand: None,
                }
            } else {
                Hint::default()
            };
        }
        for hint in &self.hints {
            if hint.h != 0 {
                self.conns.warm(hint.h);
            }
        }
        for (hint, t) in self.hints.iter_mut().zip(&self.hint_tuples) {
            if hint.h != 0 {
                hint.cand = self.conns.warm_record(hint.h, hint.v4.is_some() || is_v4(&t.src));
            }
        }
    }

    /// The hash warming computed for the current frame, if its tuple is `t`: the general path need not hash
    /// again.
    pub(super) fn hinted_hash(&self, t: &Tuple) -> Option<u64> {
        let hint = self.hints.get(self.cur)?;
        let same = match hint.v4 {
            Some(k) => k.tuple() == *t,
            None => self.hint_tuples.get(self.cur) == Some(t),
        };
        (hint.h != 0 && same).then_some(hint.h)
    }

    /// The established fast path for the current frame: an untagged TCP segment or UDP datagram, IPv4 without
    /// options or IPv6 without extension headers, of a Full-NAT connection (IPv4, IPv6 or NAT64) whose service
    /// and next hop are cached for the current snapshot and routes, and whose next hop is resolved. It does
    /// what `handle` would do for such a packet (same checks, same translation, same state and counters)
    /// without the general parsing; anything else is handed back for `handle`.
    #[inline]
    pub(super) fn fast<A: FrameAlloc<F = F>>(
        &mut self,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Result<Verdict, F> {
        let hint = match self.hints.get(self.cur) {
            Some(&hint) if hint.h != 0 && self.fast_path => hint,
            _ => return Err(f),
        };
        match hint.v4 {
            Some(k) => {
                let Some(s) = shape_v4(&f) else {
                    return Err(f);
                };
                let hit = self.conns.lookup_v4(&k, hint.h, hint.cand);
                if let Some((idx, dir)) = hit {
                    // IPv4 on both sides, the common case: its addresses as the record keeps them.
                    if let Some(o) = outbound_v4(self.conns.get(idx), dir) {
                        if !self.local_v4(k.dst, dir) {
                            return Err(f);
                        }
                        return self.established(f, s, idx, dir, Some(o), || k.tuple(), alloc, out);
                    }
                }
                self.located(f, s, &k.tuple(), hit, alloc, out)
            }
            None => {
                let Some(s) = shape(&f) else {
                    return Err(f);
                };
                let t = self.hint_tuples[self.cur];
                let hit = self.conns.lookup_from(&t, hint.h, hint.cand);
                self.located(f, s, &t, hit, alloc, out)
            }
        }
    }

    /// Whether `dst`, the destination of a plain IPv4 packet travelling `dir`, is a VIP or a local address
    /// here. Remembered per direction for the current snapshot (cleared when it changes): a burst's packets
    /// go to a few VIPs one way and a few local addresses the other.
    #[inline(always)]
    fn local_v4(&mut self, dst: [u8; 4], dir: Dir) -> bool {
        match self.local_v4[dir as usize] {
            Some((a, ok)) if a == dst => ok,
            _ => self.local_v4_asked(dst, dir),
        }
    }

    /// [`local_v4`](Self::local_v4) when the remembered address is another: asks the snapshot.
    #[cold]
    fn local_v4_asked(&mut self, dst: [u8; 4], dir: Dir) -> bool {
        let ok = matches!(
            self.snap.local(&v4(Ipv4Addr::from(dst))),
            Some(Local::Vip | Local::Lip | Local::Released)
        );
        self.local_v4[dir as usize] = Some((dst, ok));
        ok
    }

    /// The fast path for a frame of tuple `t` whose connection the lookup found (`hit`) or not: its
    /// destination must be a VIP or a local address; a reply to a local address in another worker's port
    /// slice, with no connection here (RSS put it on this worker's queue), is handed to its owner as the
    /// general path would, without its parsing.
    #[allow(clippy::too_many_arguments)]
    fn located<A: FrameAlloc<F = F>>(
        &mut self,
        f: F,
        s: Shape,
        t: &Tuple,
        hit: Option<(u32, Dir)>,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Result<Verdict, F> {
        let local = self.snap.local(&t.dst);
        if !matches!(local, Some(Local::Vip | Local::Lip | Local::Released)) {
            return Err(f);
        }
        let Some((idx, dir)) = hit else {
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
        let o = if s.v6 || out_v6(c, dir) {
            None
        } else {
            outbound_v4(c, dir)
        };
        self.established(f, s, idx, dir, o, || *t, alloc, out)
    }

    /// The fast path's work on connection `idx` for a frame of shape `s` travelling `dir`; `o` the new
    /// addresses and ports when the packet and its connection are IPv4 on both sides, `t` the frame's tuple
    /// (asked for only by a checksum check or a translation with an IPv6 side). Every condition is checked
    /// before the frame is changed (a SYN, FIN or RST whose checksum is bad goes back having lost only its
    /// Ethernet padding).
    ///
    /// A segment that moves the connection's TCP state (the handshake's last ACK, a FIN, a RST) is taken too,
    /// and so is a SYN on an established connection (a retransmission, or a forged one: it keeps its backend
    /// either way); a SYN, FIN or RST must be genuine, so its transport checksum is checked first, as the
    /// general path does. A SYN on any other state may replace the connection, a SYN-proxied connection's
    /// state changes are the SYN-proxy's, and a client's segment on a closed connection may belong to a newer
    /// flow of its tuple: those stay with `handle`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn established<A: FrameAlloc<F = F>>(
        &mut self,
        mut f: F,
        s: Shape,
        idx: u32,
        dir: Dir,
        o: Option<Out4>,
        t: impl Fn() -> Tuple,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Result<Verdict, F> {
        let Shape {
            v6,
            l4,
            total,
            ttl,
            p,
            flags,
        } = s;
        // A SYN, FIN or RST is acted on only once its transport checksum is found good.
        let checked = flags & (tcp::flags::SYN | tcp::flags::FIN | tcp::flags::RST) != 0;
        let c = self.conns.get(idx);
        let slot = match dir {
            Dir::Inbound => c.nh_fwd,
            Dir::Reply => c.nh_rev,
        };
        let out_v6 = out_v6(c, dir);
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
        let pkt = |t: Tuple| Pkt {
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
            if !self.verify_l4(&pkt(t()), &f) {
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
        let rewritten = if let Some((src, dst, ports)) = o {
            // The rewrite itself, without the general translation's packet and egress descriptions.
            let ok = nat::rewrite_v4_to(&mut f.data_mut()[L3..], l4 - L3, src, dst, ports);
            v4_rewritten(ok, L3, l4)
        } else {
            let eg = Egress {
                e: endpoints(self.conns.get(idx), dir),
                v6: out_v6,
                mtu,
                client_port,
            };
            self.translate(&mut f, &pkt(t()), &eg)
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

/// The network and transport headers of an untagged frame the fast path may take (IPv4 without options and
/// not a fragment, or IPv6 without extension headers; TCP or UDP; a TTL or hop limit left to decrement; the
/// IPv4 header checksum good), else `None`.
#[inline(always)]
fn shape<F: Frame>(f: &F) -> Option<Shape> {
    let d = f.data();
    let eth = ethernet::Frame::new_unchecked(d);
    if d.len() < L3 + ipv4::HEADER_LEN || eth.header_len() != L3 {
        return None;
    }
    match eth.ethertype() {
        ethertype::IPV4 => shape_v4(f),
        ethertype::IPV6 if d.len() >= L3 + ipv6::HEADER_LEN => {
            let ip = ipv6::Packet::new_unchecked(&d[L3..]);
            if ip.version() != 6 {
                return None;
            }
            let total = ipv6::HEADER_LEN + usize::from(ip.payload_len());
            let l4 = L3 + ipv6::HEADER_LEN;
            let (ttl, p) = (ip.hop_limit(), ip.next_header());
            transport(d, l4, total, ttl, p).map(|flags| Shape {
                v6: true,
                l4,
                total,
                ttl,
                p,
                flags,
            })
        }
        _ => None,
    }
}

/// [`shape`] of a frame known to be untagged IPv4 (warming found it so): its header, then the transport's.
#[inline(always)]
fn shape_v4<F: Frame>(f: &F) -> Option<Shape> {
    const L4: usize = L3 + ipv4::HEADER_LEN;
    let d = f.data();
    let hdr = d.get(L3..L4)?.first_chunk::<{ ipv4::HEADER_LEN }>()?;
    let ip = ipv4::Packet::new_unchecked(hdr);
    if ip.version() != 4
        || ip.header_len() != ipv4::HEADER_LEN
        || ip.is_fragment()
        || (!f.rx_checksums_verified() && !checksum::ipv4_header_ok(hdr))
    {
        return None;
    }
    let total = usize::from(ip.total_len());
    let (ttl, p) = (ip.ttl(), ip.protocol());
    if total < ipv4::HEADER_LEN {
        return None;
    }
    transport(d, L4, total, ttl, p).map(|flags| Shape {
        v6: false,
        l4: L4,
        total,
        ttl,
        p,
        flags,
    })
}

/// The TCP flags (0 for UDP) of a frame whose network header says it is `total` bytes long with the
/// transport header at `l4`: if the frame holds that much, the transport header is sound and the TTL or hop
/// limit `ttl` has one to spare.
#[inline(always)]
fn transport(d: &[u8], l4: usize, total: usize, ttl: u8, p: u8) -> Option<u8> {
    if ttl <= 1 {
        return None;
    }
    let seg = d.get(l4..L3 + total)?;
    match p {
        proto::TCP => Some(tcp::Packet::new_checked(seg).ok()?.flags()),
        proto::UDP if udp::Packet::new_checked(seg).is_ok() => Some(0),
        _ => None,
    }
}

/// The key of a plain IPv4 frame (untagged, a 20-byte header, TCP or UDP), read straight from its first 38
/// bytes; `None` for any other frame. Only a key: the fast path checks the rest. Kept apart from
/// [`quick_tuple`], which reads every other case: one function for both, returning either form, read the
/// plain frame through the general Ethernet and IPv4 views and cost the DPDK path 74 instructions a frame
/// (callgrind, 1,058 → 1,132).
#[inline(always)]
pub(super) fn plain_v4(d: &[u8]) -> Option<Tuple4> {
    const L4: usize = L3 + ipv4::HEADER_LEN;
    let b = d.first_chunk::<{ L4 + 4 }>()?;
    let eth = ethernet::Frame::new_unchecked(&b[..]);
    let ip = ipv4::Packet::new_unchecked(&b[L3..L4]);
    let p = ip.protocol();
    if eth.header_len() != L3
        || eth.ethertype() != ethertype::IPV4
        || ip.version() != 4
        || ip.header_len() != ipv4::HEADER_LEN
        || (p != proto::TCP && p != proto::UDP)
    {
        return None;
    }
    // TCP and UDP both start with the two ports.
    let ports = udp::Packet::new_unchecked(&b[L4..]);
    Some(Tuple4 {
        proto: p,
        src: ip.src().octets(),
        sport: ports.src_port(),
        dst: ip.dst().octets(),
        dport: ports.dst_port(),
    })
}

/// The transport tuple of a plain TCP/UDP frame (no IPv6 extension headers), for warming caches only, written
/// into `t`; false (and `t` left as it was) for any other frame. Written in place, addresses copied from the
/// frame as whole fields: built as a returned value, an IPv6 tuple was put together byte by byte on the stack
/// and copied twice (callgrind: 41 instructions a frame for the copy alone).
#[inline]
pub(super) fn quick_tuple(d: &[u8], t: &mut Tuple) -> bool {
    let Ok(eth) = ethernet::Frame::new_checked(d) else {
        return false;
    };
    let Some(ip) = d.get(eth.header_len()..) else {
        return false;
    };
    let (p, l4, v6) = match eth.ethertype() {
        ethertype::IPV4 if ip.len() >= ipv4::HEADER_LEN => {
            let h = ipv4::Packet::new_unchecked(ip);
            (h.protocol(), h.header_len(), false)
        }
        ethertype::IPV6 if ip.len() >= ipv6::HEADER_LEN => (
            ipv6::Packet::new_unchecked(ip).next_header(),
            ipv6::HEADER_LEN,
            true,
        ),
        _ => return false,
    };
    if p != proto::TCP && p != proto::UDP {
        return false;
    }
    // TCP and UDP both start with the two ports.
    let Some(ports) = ip.get(l4..l4 + 4) else {
        return false;
    };
    let ports = udp::Packet::new_unchecked(ports);
    if v6 {
        t.src.copy_from_slice(&ip[ipv6::field::SRC]);
        t.dst.copy_from_slice(&ip[ipv6::field::DST]);
    } else {
        let h = ipv4::Packet::new_unchecked(ip);
        t.src = v4(h.src());
        t.dst = v4(h.dst());
    }
    t.proto = p;
    t.sport = ports.src_port();
    t.dport = ports.dst_port();
    true
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    const SRC4: [u8; 4] = [192, 0, 2, 1];
    const DST4: [u8; 4] = [203, 0, 113, 10];

    /// An Ethernet frame (optionally VLAN-tagged) carrying IPv4 with `options` 4-byte words of options, or
    /// IPv6, protocol `p`, ports 40000 → 80.
    fn frame(vlan: bool, v6: bool, options: usize, p: u8) -> Vec<u8> {
        let mut b = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if vlan {
            b.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        if v6 {
            b.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, p, 64]);
            b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
            b.extend_from_slice(&"2001:db8:1::5".parse::<Ipv6Addr>().unwrap().octets());
        } else {
            let ihl = 5 + options as u8;
            b.extend_from_slice(&[0x08, 0x00, 0x40 | ihl, 0, 0, 40, 0, 0, 0x40, 0, 64, p, 0, 0]);
            b.extend_from_slice(&SRC4);
            b.extend_from_slice(&DST4);
            b.extend(std::iter::repeat_n(1u8, options * 4));
        }
        b.extend_from_slice(&40000u16.to_be_bytes());
        b.extend_from_slice(&80u16.to_be_bytes());
        b.extend_from_slice(&[0; 16]);
        b
    }

    fn unset() -> Tuple {
        Tuple {
            proto: 0,
            src: [0xaa; 16],
            sport: 0,
            dst: [0xaa; 16],
            dport: 0,
        }
    }

    #[test]
    fn the_warming_readers_read_what_the_frame_holds() {
        let v4_tuple = Tuple {
            proto: proto::TCP,
            src: v4(Ipv4Addr::from(SRC4)),
            sport: 40000,
            dst: v4(Ipv4Addr::from(DST4)),
            dport: 80,
        };
        // A plain IPv4 frame: both readers, the key mapped being the tuple.
        let plain = frame(false, false, 0, proto::TCP);
        let k = plain_v4(&plain).expect("plain IPv4");
        assert_eq!(k.tuple(), v4_tuple);
        let mut t = unset();
        assert!(quick_tuple(&plain, &mut t));
        assert_eq!(t, v4_tuple);
        // Options and a VLAN tag are not plain, and the general reader finds the ports past them.
        for f in [
            frame(false, false, 2, proto::TCP),
            frame(true, false, 0, proto::TCP),
        ] {
            assert_eq!(plain_v4(&f), None);
            let mut t = unset();
            assert!(quick_tuple(&f, &mut t));
            assert_eq!(t, v4_tuple);
        }
        // IPv6: whole addresses.
        let f = frame(false, true, 0, proto::UDP);
        assert_eq!(plain_v4(&f), None);
        let mut t = unset();
        assert!(quick_tuple(&f, &mut t));
        assert_eq!(
            t,
            Tuple {
                proto: proto::UDP,
                src: "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
                sport: 40000,
                dst: "2001:db8:1::5".parse::<Ipv6Addr>().unwrap().octets(),
                dport: 80,
            }
        );
        // Not TCP or UDP, or cut before the ports: neither reads a flow, and the tuple is left as it was.
        let icmp = frame(false, false, 0, proto::ICMP);
        let cut = &frame(false, true, 0, proto::TCP)[..L3 + ipv6::HEADER_LEN + 2];
        for f in [&icmp[..], cut, &plain[..30]] {
            assert_eq!(plain_v4(f), None);
            let mut t = unset();
            assert!(!quick_tuple(f, &mut t));
            assert_eq!(t, unset());
        }
    }
}
