//! Full-NAT header rewrites: addresses and ports of IPv4→IPv4 and IPv6→IPv6 packets in place, and the IPv6 ↔
//! IPv4 header translation of NAT64 (RFC 7915 §4 and §5 for the fields a layer-4 balancer carries).
//!
//! Transport checksums are updated incrementally (RFC 1624): the pseudo-header's protocol and length are the
//! same before and after, so the change is the difference of the address and port sums, whichever families
//! the packet goes between. A UDP/IPv4 datagram without checksum keeps none towards IPv4 and gets a full one
//! towards IPv6, where it is mandatory.

use crate::flow::{to_v4, Addr};
use crate::wire::{checksum, icmp, ipv4, ipv6, proto, tcp, udp};

/// The fragment fields a NAT64 translation carries across (RFC 7915 §4.1 and §5.1.1): IPv4's 16-bit
/// identification becomes IPv6's 32-bit one and back (low 16 bits), the offset and the more-fragments flag are
/// kept. A fragment leaves IPv4 with DF clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragFields {
    /// Identification.
    pub ident: u32,
    /// Offset in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

impl FragFields {
    /// Whether this fragment carries the transport header (the first one).
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// The IPv6 fragment header's protocol number.
pub const IPV6_FRAGMENT: u8 = 44;

/// The new endpoints of a translated packet.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// New source address.
    pub src: Addr,
    /// New source port.
    pub sport: u16,
    /// New destination address.
    pub dst: Addr,
    /// New destination port.
    pub dport: u16,
    /// Added to a TCP segment's sequence number (a SYN-proxied connection's shift; 0 for none).
    pub seq_add: u32,
    /// Added to a TCP segment's acknowledgement number.
    pub ack_add: u32,
}

impl Endpoints {
    /// What the transport header gets.
    #[inline(always)]
    pub fn ports(&self) -> Ports {
        Ports {
            sport: self.sport,
            dport: self.dport,
            seq_add: self.seq_add,
            ack_add: self.ack_add,
        }
    }
}

/// What a translated packet's transport header gets: the new ports, and the sequence shift of a SYN-proxied
/// connection (the part of [`Endpoints`] past the addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// New source port.
    pub sport: u16,
    /// New destination port.
    pub dport: u16,
    /// Added to a TCP segment's sequence number.
    pub seq_add: u32,
    /// Added to a TCP segment's acknowledgement number.
    pub ack_add: u32,
}

/// Offset of the transport checksum field for `p`.
fn csum_offset(p: u8) -> usize {
    if p == proto::TCP {
        tcp::CHECKSUM_OFFSET
    } else {
        udp::CHECKSUM_OFFSET
    }
}

/// The 16-bit word at `i`.
#[inline(always)]
fn w(b: &[u8], i: usize) -> u32 {
    u32::from(u16::from_be_bytes([b[i], b[i + 1]]))
}

/// Sum of the 16-bit words of an address field (4 or 16 bytes), unfolded.
#[inline(always)]
fn addr_sum(a: &[u8]) -> u32 {
    let mut s = 0;
    let mut i = 0;
    while i + 1 < a.len() {
        s += w(a, i);
        i += 2;
    }
    s
}

/// Rewrites the transport ports and checksum of the segment at `l4` for new addresses.
/// `old_addr_sum`/`new_addr_sum` are the sums of the old and new source+destination address bytes.
#[inline]
fn rewrite_l4(l4: &mut [u8], p: u8, e: Ports, old_addr_sum: u32, new_addr_sum: u32, to_v6: bool) -> bool {
    let co = csum_offset(p);
    if l4.len() < co + 2 {
        return false;
    }
    // TCP and UDP share the position of the ports.
    let (sp, dp) = (udp::field::SRC_PORT, udp::field::DST_PORT);
    let old_ports = w(l4, sp.start) + w(l4, dp.start);
    l4[sp].copy_from_slice(&e.sport.to_be_bytes());
    l4[dp].copy_from_slice(&e.dport.to_be_bytes());
    let new_ports = u32::from(e.sport) + u32::from(e.dport);
    let old_c = u16::from_be_bytes([l4[co], l4[co + 1]]);
    if p == proto::UDP && old_c == 0 {
        if !to_v6 {
            return true;
        }
        // Compute a full checksum; the pseudo-header sum is the new address sum plus protocol and length.
        let len = l4.len();
        l4[co..co + 2].copy_from_slice(&[0, 0]);
        let pseudo = new_addr_sum + u32::from(proto::UDP) + len as u32;
        let c = checksum::finish(pseudo + checksum::sum(l4));
        let c = if c == 0 { 0xffff } else { c };
        l4[co..co + 2].copy_from_slice(&c.to_be_bytes());
        return true;
    }
    let acc = u64::from(!old_c)
        + u64::from(!checksum::fold(old_addr_sum + old_ports))
        + u64::from(new_addr_sum + new_ports);
    finish_l4(l4, p, co, &e, be_sum_as_ne(acc));
    true
}

/// Writes the checksum (at `co`) of a TCP segment or UDP datagram whose addresses and ports have changed:
/// `acc` is RFC 1624 eqn. 3's sum for them (`~HC`, and `~m + m'` for each changed word) in the machine's byte
/// order (see [`rewrite_v4_to`]); a SYN-proxied connection's sequence shift is applied and added here. A UDP
/// checksum that comes out 0 is sent as 0xffff (0 means none).
#[inline(always)]
fn finish_l4(l4: &mut [u8], p: u8, co: usize, e: &Ports, acc: u64) {
    let mut c = !checksum::fold64(acc + shift_seq(l4, p, e));
    if p == proto::UDP && c == 0 {
        c = 0xffff;
    }
    l4[co..co + 2].copy_from_slice(&c.to_ne_bytes());
}

/// A one's-complement sum of big-endian words, folded, as the same sum of the words read in the machine's
/// byte order (the byte-swapped sum, RFC 1071).
#[inline(always)]
fn be_sum_as_ne(acc: u64) -> u64 {
    u64::from(u16::from_ne_bytes(checksum::fold64(acc).to_be_bytes()))
}

/// Adds a SYN-proxied connection's sequence shift (`e`) to a TCP segment's sequence and acknowledgement numbers
/// (`l4` from its header on) and returns what the checksum update takes for it: the old numbers complemented
/// and the new ones, as 32-bit words (RFC 1624 eqn. 3's `~m + m'`) in the machine's byte order (see
/// [`rewrite_v4_to`]). Nothing to do, and 0, without a shift.
#[inline(always)]
fn shift_seq(l4: &mut [u8], p: u8, e: &Ports) -> u64 {
    let mut acc = 0;
    if p == proto::TCP && (e.seq_add | e.ack_add) != 0 && l4.len() >= tcp::HEADER_LEN {
        for (at, add) in [
            (tcp::field::SEQ.start, e.seq_add),
            (tcp::field::ACK.start, e.ack_add),
        ] {
            let old = [l4[at], l4[at + 1], l4[at + 2], l4[at + 3]];
            let new = u32::from_be_bytes(old).wrapping_add(add).to_be_bytes();
            l4[at..at + 4].copy_from_slice(&new);
            acc += u64::from(!u32::from_ne_bytes(old)) + u64::from(u32::from_ne_bytes(new));
        }
    }
    acc
}

/// Rewrites an IPv4 packet (`pkt` starts at the IPv4 header, `ihl` its length) to new endpoints and decrements
/// its TTL. Returns false, leaving the packet as it was, when the transport header is too short.
///
/// The per-packet work of every IPv4 Full-NAT segment, so written as straight-line arithmetic on 32-bit words:
/// the address and port sums of both checksums come from four loads and four stores.
#[inline]
pub fn rewrite_v4(pkt: &mut [u8], ihl: usize, e: &Endpoints) -> bool {
    rewrite_v4_to(
        pkt,
        ihl,
        to_v4(&e.src).octets(),
        to_v4(&e.dst).octets(),
        e.ports(),
    )
}

/// [`rewrite_v4`] with the new IPv4 addresses given as such: the fast path's form, which builds no
/// [`Endpoints`] (16-byte addresses written as two 8-byte halves and read back as one 16-byte value cannot be
/// forwarded from the store buffer, and each such read waited for the stores to reach the cache).
///
/// Both checksums are updated in the machine's byte order: a one's-complement sum of byte-swapped words is
/// the byte-swapped sum (RFC 1071, 2(B)), so the old and new words are summed as they lie in memory and the
/// result is stored the same way, with no byte swaps (0 and 0xffff, the values UDP treats specially, read the
/// same either way).
#[inline(always)]
pub fn rewrite_v4_to(pkt: &mut [u8], ihl: usize, src: [u8; 4], dst: [u8; 4], e: Ports) -> bool {
    if ihl < ipv4::HEADER_LEN || pkt.len() < ihl {
        return false;
    }
    let (hdr, l4) = pkt.split_at_mut(ihl);
    let Some(h) = hdr.first_chunk_mut::<{ ipv4::HEADER_LEN }>() else {
        return false;
    };
    let p = h[ipv4::field::PROTOCOL];
    let co = csum_offset(p);
    // The ports and the checksum (TCP's ends at 18, UDP's at 8, the end of its header).
    if l4.len() < co + 2 {
        return false;
    }
    let addrs = rewrite_header_v4(h, src, dst);
    // TCP and UDP share the position of the ports: one 32-bit word.
    let ports = ((u32::from(e.sport) << 16) | u32::from(e.dport)).to_be_bytes();
    let old_ports = checksum::ne32(l4, 0);
    l4[..4].copy_from_slice(&ports);
    let old_c = u16::from_ne_bytes([l4[co], l4[co + 1]]);
    if p == proto::UDP && old_c == 0 {
        return true;
    }
    let acc = u64::from(!old_c) + addrs + u64::from(!old_ports) + u64::from(u32::from_ne_bytes(ports));
    finish_l4(l4, p, co, &e, acc);
    true
}

/// Rewrites a 20-byte IPv4 header's addresses and decrements its TTL, keeping its checksum, and returns the
/// addresses' part of a transport checksum update. Both checksums take the same change, summed once as 32-bit
/// words (RFC 1624 eqn. 3 with `~m` and `m'` the old and new words, whose halves are the 16-bit words it
/// names), in the machine's byte order (see [`rewrite_v4_to`]); the header's takes the TTL's word besides.
#[inline(always)]
fn rewrite_header_v4(h: &mut [u8; ipv4::HEADER_LEN], src: [u8; 4], dst: [u8; 4]) -> u64 {
    use ipv4::field::{CHECKSUM, DST, SRC, TTL};
    let addrs = u64::from(!checksum::ne32(h, SRC.start))
        + u64::from(!checksum::ne32(h, DST.start))
        + u64::from(u32::from_ne_bytes(src))
        + u64::from(u32::from_ne_bytes(dst));
    // The TTL is the high byte of its big-endian 16-bit word: decrementing it lowers that word by 0x100, so
    // `~m + m'` is 0xffff - 0x100 whatever the word was (0xfffe read in little-endian order). A TTL of 0
    // wraps to 255 and raises the word by 0xff00 instead: `~m + m'` = 0xffff + 0xff00, which folds to 0xff00
    // (0x00ff). Nothing is read back: a 16-bit load of what a byte store has just written waits for the store.
    let ttl_change: u16 = if h[TTL] == 0 { 0xff00 } else { 0xfeff };
    let ttl_change = u16::from_ne_bytes(ttl_change.to_be_bytes());
    let ip = u64::from(!u16::from_ne_bytes([h[CHECKSUM.start], h[CHECKSUM.start + 1]]))
        + addrs
        + u64::from(ttl_change);
    h[TTL] = h[TTL].wrapping_sub(1);
    h[SRC].copy_from_slice(&src);
    h[DST].copy_from_slice(&dst);
    h[CHECKSUM].copy_from_slice(&(!checksum::fold64(ip)).to_ne_bytes());
    addrs
}

/// Rewrites an ICMP echo request or reply (`pkt` starts at the IPv4 header, `ihl` its length): addresses from
/// `e`, identifier `id`, TTL decremented. Returns false when the ICMP header is too short.
pub fn rewrite_echo_v4(pkt: &mut [u8], ihl: usize, e: &Endpoints, id: u16) -> bool {
    if pkt.len() < ihl + icmp::HEADER_LEN {
        return false;
    }
    rewrite_v4_header(pkt, e);
    let mut m = icmp::Packet::new_unchecked(&mut pkt[ihl..]);
    let old = m.echo_ident();
    m.set_echo_ident(id);
    let c = checksum::update_u16(m.checksum(), old, id);
    m.set_checksum(c);
    true
}

/// Rewrites the IPv4 addresses from `e` and decrements the TTL, keeping the header checksum (`pkt` starts at
/// the IPv4 header). A later fragment needs nothing more.
pub fn rewrite_v4_header(pkt: &mut [u8], e: &Endpoints) {
    if let Some(h) = pkt.first_chunk_mut() {
        rewrite_header_v4(h, to_v4(&e.src).octets(), to_v4(&e.dst).octets());
    }
}

/// Rewrites an IPv6 packet (`pkt` starts at the IPv6 header, the transport header at `l4`) to new endpoints
/// and decrements the hop limit.
pub fn rewrite_v6(pkt: &mut [u8], l4: usize, p: u8, e: &Endpoints) -> bool {
    let (old_addrs, new_addrs) = rewrite_v6_header(pkt, e);
    rewrite_l4(&mut pkt[l4..], p, e.ports(), old_addrs, new_addrs, true)
}

/// Rewrites the IPv6 addresses from `e` and decrements the hop limit; returns the sums of the old and new
/// addresses. A later fragment needs nothing more.
pub fn rewrite_v6_header(pkt: &mut [u8], e: &Endpoints) -> (u32, u32) {
    use ipv6::field::{DST, HOP_LIMIT, SRC};
    let old_addrs = addr_sum(&pkt[SRC.start..DST.end]);
    pkt[HOP_LIMIT] = pkt[HOP_LIMIT].wrapping_sub(1);
    pkt[SRC].copy_from_slice(&e.src);
    pkt[DST].copy_from_slice(&e.dst);
    (old_addrs, addr_sum(&pkt[SRC.start..DST.end]))
}

/// Translates an IPv6 packet to IPv4 in place. `buf` holds the frame; the IPv6 header starts at `l3` and the
/// transport header (or, for a later fragment, the fragment's data) at `l4`, which must be at least 20 bytes
/// after `l3`. Writes a 20-byte IPv4 header just before `l4` and returns its offset. TTL is the hop limit minus
/// one; `ident` fills the identification of a whole packet (DF set); a fragment keeps its own fields, and only
/// the first one has its transport header rewritten.
pub fn v6_to_v4(
    buf: &mut [u8],
    l3: usize,
    l4: usize,
    p: u8,
    e: &Endpoints,
    ident: u16,
    frag: Option<FragFields>,
) -> Option<usize> {
    if l4 < l3 + ipv6::HEADER_LEN {
        return None;
    }
    let (tc, hop, old_addrs) = {
        let ip6 = ipv6::Packet::new_unchecked(&buf[l3..l4]);
        let addrs = ipv6::field::SRC.start..ipv6::field::DST.end;
        (
            ip6.traffic_class(),
            ip6.hop_limit(),
            addr_sum(&buf[l3 + addrs.start..l3 + addrs.end]),
        )
    };
    let l4_len = buf.len() - l4;
    u16::try_from(ipv4::HEADER_LEN + l4_len).ok()?;
    let n = l4 - ipv4::HEADER_LEN;
    ipv4::Repr {
        src: to_v4(&e.src),
        dst: to_v4(&e.dst),
        protocol: p,
        payload_len: l4_len,
        ttl: hop.wrapping_sub(1),
        tos: tc,
        ident: frag.map_or(ident, |f| f.ident as u16),
        // DF set: the path MTU is discovered end to end (RFC 7915 §5.1 leaves DF to the translator when the
        // IPv6 packet has no fragment header).
        dont_frag: frag.is_none(),
    }
    .emit(&mut buf[n..l4]);
    if let Some(f) = frag {
        let mut ip = ipv4::Packet::new_unchecked(&mut buf[n..l4]);
        ip.set_frag(false, f.more, f.offset);
        ip.fill_checksum();
        if !f.is_first() {
            return Some(n);
        }
    }
    let addrs = ipv4::field::SRC.start..ipv4::field::DST.end;
    let new_addrs = addr_sum(&buf[n + addrs.start..n + addrs.end]);
    rewrite_l4(&mut buf[l4..], p, e.ports(), old_addrs, new_addrs, false).then_some(n)
}

/// Translates an IPv4 packet to IPv6 in place. The IPv4 header starts at `l3` and the transport header (or,
/// for a later fragment, the fragment's data) at `l4`; the caller guarantees `l4 >= 40` (48 for a fragment).
/// Writes a 40-byte IPv6 header — and for a fragment an 8-byte fragment header — just before `l4` and returns
/// its offset. Only a whole packet or a first fragment has its transport header rewritten.
pub fn v4_to_v6(
    buf: &mut [u8],
    l3: usize,
    l4: usize,
    p: u8,
    e: &Endpoints,
    frag: Option<FragFields>,
) -> Option<usize> {
    let fh = if frag.is_some() { 8 } else { 0 };
    if l4 < ipv6::HEADER_LEN + fh {
        return None;
    }
    let (tos, ttl, old_addrs) = {
        let ip = ipv4::Packet::new_unchecked(&buf[l3..]);
        let addrs = ipv4::field::SRC.start..ipv4::field::DST.end;
        (
            ip.tos(),
            ip.ttl(),
            addr_sum(&buf[l3 + addrs.start..l3 + addrs.end]),
        )
    };
    let l4_len = u16::try_from(buf.len() - l4 + fh).ok()?;
    let n = l4 - ipv6::HEADER_LEN - fh;
    ipv6::Repr {
        src: e.src.into(),
        dst: e.dst.into(),
        next_header: if frag.is_some() { IPV6_FRAGMENT } else { p },
        payload_len: usize::from(l4_len),
        hop_limit: ttl.wrapping_sub(1),
        traffic_class: tos,
        flow_label: 0,
    }
    .emit(&mut buf[n..n + ipv6::HEADER_LEN]);
    if let Some(f) = frag {
        let h = &mut buf[l4 - 8..l4];
        h[0] = p;
        h[1] = 0;
        h[2..4].copy_from_slice(&((f.offset & 0xfff8) | u16::from(f.more)).to_be_bytes());
        h[4..8].copy_from_slice(&f.ident.to_be_bytes());
        if !f.is_first() {
            return Some(n);
        }
    }
    let addrs = ipv6::field::SRC.start..ipv6::field::DST.end;
    let new_addrs = addr_sum(&buf[n + addrs.start..n + addrs.end]);
    rewrite_l4(&mut buf[l4..], p, e.ports(), old_addrs, new_addrs, true).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{addr, v4};
    use std::net::Ipv4Addr;

    fn tcp_v4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut b = vec![0u8; 20 + 20 + 4];
        let mut ip = ipv4::Packet::new_unchecked(&mut b[..]);
        ip.set_ver_hl(20);
        ip.set_total_len(44);
        ip.set_ttl(64);
        ip.set_protocol(6);
        ip.set_src(src);
        ip.set_dst(dst);
        ip.fill_checksum();
        let mut t = tcp::Packet::new_unchecked(&mut b[20..]);
        t.set_src_port(40000);
        t.set_dst_port(80);
        t.set_header_len_flags(20, 0x18);
        b[40..].copy_from_slice(b"data");
        let pseudo = checksum::pseudo_v4(src, dst, 6, 24);
        tcp::Packet::new_unchecked(&mut b[20..]).fill_checksum(pseudo);
        b
    }

    /// Local address 198.51.100.16:1025 to backend 198.51.100.101:8080, no sequence shift.
    fn towards_backend() -> Endpoints {
        Endpoints {
            src: v4(Ipv4Addr::new(198, 51, 100, 16)),
            sport: 1025,
            dst: v4(Ipv4Addr::new(198, 51, 100, 101)),
            dport: 8080,
            seq_add: 0,
            ack_add: 0,
        }
    }

    #[test]
    fn v4_rewrite_keeps_checksums_valid() {
        let mut b = tcp_v4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(203, 0, 113, 10));
        let e = towards_backend();
        assert!(rewrite_v4(&mut b, 20, &e));
        let ip = ipv4::Packet::new_checked(&b[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.ttl(), 63);
        let pseudo = checksum::pseudo_v4(ip.src(), ip.dst(), 6, 24);
        let t = tcp::Packet::new_checked(&b[20..]).unwrap();
        assert!(t.verify_checksum(pseudo));
        assert_eq!((t.src_port(), t.dst_port()), (1025, 8080));
    }

    #[test]
    fn the_header_checksum_follows_the_ttl_at_every_value() {
        // The TTL's 16-bit word is computed, not read back: check it at the edges, through both rewriters.
        let e = towards_backend();
        for ttl in [0u8, 1, 2, 64, 128, 255] {
            for header_only in [false, true] {
                let mut b = tcp_v4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(203, 0, 113, 10));
                let mut ip = ipv4::Packet::new_unchecked(&mut b[..]);
                ip.set_ttl(ttl);
                ip.fill_checksum();
                if header_only {
                    rewrite_v4_header(&mut b, &e);
                } else {
                    assert!(rewrite_v4(&mut b, 20, &e));
                }
                let ip = ipv4::Packet::new_checked(&b[..]).unwrap();
                assert!(ip.verify_checksum(), "ttl {ttl}, header only {header_only}");
                assert_eq!(ip.ttl(), ttl.wrapping_sub(1));
            }
        }
    }

    #[test]
    fn v4_rewrites_of_random_segments_keep_both_checksums_valid() {
        // Random addresses, ports, TTLs, payloads and sequence shifts, TCP and UDP (with and without a
        // checksum): every rewritten packet is checked by summing it whole.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let tcp = i % 2 == 0;
            let (src, dst) = (Ipv4Addr::from(next() as u32), Ipv4Addr::from(next() as u32));
            let payload = (next() % 9) as usize;
            let l4_len = if tcp { 20 } else { 8 } + payload;
            let mut b = vec![0u8; 20 + l4_len];
            for byte in &mut b[20..] {
                *byte = next() as u8;
            }
            let mut ip = ipv4::Packet::new_unchecked(&mut b[..]);
            ip.set_ver_hl(20);
            ip.set_total_len((20 + l4_len) as u16);
            ip.set_ttl(next() as u8);
            ip.set_protocol(if tcp { proto::TCP } else { proto::UDP });
            ip.set_src(src);
            ip.set_dst(dst);
            ip.fill_checksum();
            let p = if tcp { proto::TCP } else { proto::UDP };
            let pseudo = |b: &[u8]| {
                let ip = ipv4::Packet::new_unchecked(b);
                checksum::pseudo_v4(ip.src(), ip.dst(), p, l4_len as u16)
            };
            let no_udp_sum = !tcp && next() % 4 == 0;
            if tcp {
                b[32] = 0x50;
                let ps = pseudo(&b);
                tcp::Packet::new_unchecked(&mut b[20..]).fill_checksum(ps);
            } else {
                b[24..26].copy_from_slice(&(l4_len as u16).to_be_bytes());
                b[26..28].copy_from_slice(&[0, 0]);
                if !no_udp_sum {
                    let c = checksum::finish(pseudo(&b) + checksum::sum(&b[20..]));
                    b[26..28].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
                }
            }
            let (new_src, new_dst) = ((next() as u32).to_be_bytes(), (next() as u32).to_be_bytes());
            let shift = tcp && next() % 2 == 0;
            let ports = Ports {
                sport: next() as u16,
                dport: next() as u16,
                seq_add: if shift { next() as u32 } else { 0 },
                ack_add: if shift { next() as u32 } else { 0 },
            };
            let ttl = b[8];
            assert!(rewrite_v4_to(&mut b, 20, new_src, new_dst, ports));
            let ip = ipv4::Packet::new_checked(&b[..]).unwrap();
            assert!(ip.verify_checksum(), "packet {i}");
            assert_eq!(ip.ttl(), ttl.wrapping_sub(1));
            assert_eq!((ip.src().octets(), ip.dst().octets()), (new_src, new_dst));
            let l4 = &b[20..];
            assert_eq!(u16::from_be_bytes([l4[0], l4[1]]), ports.sport);
            assert_eq!(u16::from_be_bytes([l4[2], l4[3]]), ports.dport);
            if no_udp_sum {
                assert_eq!(&l4[6..8], &[0, 0], "packet {i}: no checksum stays none");
            } else {
                assert_eq!(
                    checksum::fold(pseudo(&b) + checksum::sum(l4)),
                    0xffff,
                    "packet {i}"
                );
            }
        }
    }

    #[test]
    fn v4_to_v6_and_back_restore_the_segment() {
        let orig = tcp_v4(Ipv4Addr::new(198, 51, 100, 101), Ipv4Addr::new(198, 51, 100, 16));
        let mut b = vec![0u8; 20];
        b.extend_from_slice(&orig);
        let e = Endpoints {
            src: addr("2001:db8::64".parse().unwrap()),
            sport: 80,
            dst: addr("2001:db8:1::5".parse().unwrap()),
            dport: 40000,
            seq_add: 0,
            ack_add: 0,
        };
        let n = v4_to_v6(&mut b, 20, 40, 6, &e, None).unwrap();
        assert_eq!(n, 0);
        let ip6 = ipv6::Packet::new_checked(&b[..]).unwrap();
        assert_eq!(ip6.payload_len(), 24);
        assert_eq!(ip6.hop_limit(), 63);
        let pseudo = checksum::pseudo_v6(&ip6.src(), &ip6.dst(), 6, 24);
        assert!(tcp::Packet::new_checked(&b[40..])
            .unwrap()
            .verify_checksum(pseudo));

        let back = towards_backend();
        let n = v6_to_v4(&mut b, 0, 40, 6, &back, 7, None).unwrap();
        assert_eq!(n, 20);
        let ip = ipv4::Packet::new_checked(&b[20..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.ttl(), 62);
        let pseudo = checksum::pseudo_v4(ip.src(), ip.dst(), 6, 24);
        assert!(tcp::Packet::new_checked(&b[40..])
            .unwrap()
            .verify_checksum(pseudo));
    }

    #[test]
    fn udp_without_checksum_gets_one_towards_ipv6() {
        let mut b = vec![0u8; 40 + 8 + 4];
        b[20] = 0x45;
        b[22..24].copy_from_slice(&32u16.to_be_bytes());
        b[28] = 64;
        b[29] = 17;
        b[40..42].copy_from_slice(&53u16.to_be_bytes());
        b[42..44].copy_from_slice(&1025u16.to_be_bytes());
        b[44..46].copy_from_slice(&12u16.to_be_bytes());
        b[48..].copy_from_slice(b"pong");
        let e = Endpoints {
            src: addr("2001:db8::64".parse().unwrap()),
            sport: 53,
            dst: addr("2001:db8::5".parse().unwrap()),
            dport: 4000,
            seq_add: 0,
            ack_add: 0,
        };
        v4_to_v6(&mut b, 20, 40, 17, &e, None).unwrap();
        let ip6 = ipv6::Packet::new_checked(&b[..]).unwrap();
        let u = udp::Packet::new_checked(&b[40..]).unwrap();
        assert_ne!(u.checksum(), 0);
        assert!(u.verify_checksum(checksum::pseudo_v6(&ip6.src(), &ip6.dst(), 17, 12)));
    }
}
