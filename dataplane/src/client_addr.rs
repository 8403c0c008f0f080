//! Telling a Full-NAT backend who the client is: the TOA TCP option, the PROXY protocol v2 header (TCP and UDP)
//! and DPVS's UOA IP option (UDP).
//!
//! All are written into packets that are already translated (addresses towards the backend). The byte work is
//! here; when to do it (which segment or datagram, the sequence shift the PROXY header causes) is the worker's.
//!
//! - TOA: option kind 254 with the client's port and address (8 bytes for IPv4, 20 for IPv6), inserted right
//!   after the fixed TCP header, as the `toa` kernel modules of LVS/DPVS backends expect.
//! - PROXY v2: the 16-byte preamble and the client and VIP addresses and ports (28 bytes for IPv4, 52 for
//!   IPv6), inserted before the segment's payload. Every later client byte is then `len` further on in the
//!   backend's sequence space. For UDP (transport byte DGRAM), before the payload of the flow's first datagrams.
//! - UOA: IPv4 option 31 with the client's port and address (8 bytes for an IPv4 client, 20 for IPv6), after
//!   the IPv4 header of the flow's first datagrams, as DPVS's `uoa` kernel module reads it:
//!
//! ```text
//! | 31 | len | client port (2) | client address (4 or 16) |
//! ```

use crate::flow::{is_v4, Addr};
use crate::frame::Frame;
use crate::wire::{checksum, ipv4, tcp, udp};

/// TCP option kind of TOA.
pub const TOA_KIND: u8 = 254;
/// IPv4 option type of UOA (31, not copied on fragmentation, control class).
pub const UOA_TYPE: u8 = 31;

/// PROXY protocol v2 preamble.
const PP2_SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// Length of the TOA option for a client of this family.
pub fn toa_len(client_v6: bool) -> usize {
    if client_v6 {
        20
    } else {
        8
    }
}

/// Length of the PROXY v2 header for a client of this family.
pub fn proxy_len(client_v6: bool) -> usize {
    if client_v6 {
        16 + 36
    } else {
        16 + 12
    }
}

/// The TOA option for `client:port`.
pub fn toa(client: &Addr, port: u16) -> Vec<u8> {
    let mut o = vec![TOA_KIND, toa_len(!is_v4(client)) as u8];
    o.extend_from_slice(&port.to_be_bytes());
    o.extend_from_slice(if is_v4(client) { &client[12..] } else { &client[..] });
    o
}

/// The UOA option for `client:port`.
pub fn uoa(client: &Addr, port: u16) -> Vec<u8> {
    let mut o = vec![UOA_TYPE, toa_len(!is_v4(client)) as u8];
    o.extend_from_slice(&port.to_be_bytes());
    o.extend_from_slice(if is_v4(client) { &client[12..] } else { &client[..] });
    o
}

/// The PROXY v2 header (command PROXY; TCP, or UDP when `datagram`) for a flow from `client:cport` to
/// `vip:vport`. A client and VIP of different families (NAT64) are both written as IPv6, the VIP's IPv4
/// address mapped.
pub fn proxy_v2(client: &Addr, cport: u16, vip: &Addr, vport: u16, datagram: bool) -> Vec<u8> {
    let v6 = !is_v4(client) || !is_v4(vip);
    let mut h = PP2_SIGNATURE.to_vec();
    h.push(0x21);
    // Family (0x1_ IPv4, 0x2_ IPv6) and transport (0x_1 STREAM, 0x_2 DGRAM).
    h.push(if v6 { 0x20 } else { 0x10 } | if datagram { 0x02 } else { 0x01 });
    h.extend_from_slice(&(if v6 { 36u16 } else { 12 }).to_be_bytes());
    for a in [client, vip] {
        h.extend_from_slice(if v6 { &a[..] } else { &a[12..] });
    }
    h.extend_from_slice(&cport.to_be_bytes());
    h.extend_from_slice(&vport.to_be_bytes());
    h
}

/// Inserts `bytes` into the TCP segment of the IP packet at `l3` (its TCP header at `l4`): as a TCP option
/// right after the fixed header when `option`, else before the payload. Fixes the IP length (and IPv4 header
/// checksum), the TCP data offset for an option, and the TCP checksum. False (frame unchanged) when there is
/// no tailroom or an option would not fit the 60-byte TCP header.
pub fn insert<F: Frame>(f: &mut F, l3: usize, l4: usize, v6: bool, bytes: &[u8], option: bool) -> bool {
    let n = bytes.len();
    let d = f.data();
    let Some(&off) = d.get(l4 + 12) else {
        return false;
    };
    let doff = usize::from(off >> 4) * 4;
    if doff < tcp::HEADER_LEN || d.len() < l4 + doff || (option && (doff + n > 60 || n % 4 != 0)) {
        return false;
    }
    let at = if option { l4 + tcp::HEADER_LEN } else { l4 + doff };
    if !f.append(n) {
        return false;
    }
    let d = f.data_mut();
    let len = d.len();
    d.copy_within(at..len - n, at + n);
    d[at..at + n].copy_from_slice(bytes);
    if option {
        d[l4 + 12] = (((doff + n) / 4) as u8) << 4 | (off & 0x0f);
    }
    let seg_len = len - l4;
    let pseudo = if v6 {
        let plen = (len - l3 - 40) as u16;
        d[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        checksum::sum(&d[l3 + 8..l3 + 40]) + u32::from(crate::wire::proto::TCP) + seg_len as u32
    } else {
        let total = (len - l3) as u16;
        let mut ip = ipv4::Packet::new_unchecked(&mut d[l3..]);
        ip.set_total_len(total);
        ip.fill_checksum();
        let (src, dst) = (ip.src(), ip.dst());
        checksum::pseudo_v4(src, dst, crate::wire::proto::TCP, seg_len as u16)
    };
    tcp::Packet::new_unchecked(&mut d[l4..]).fill_checksum(pseudo);
    true
}

/// Inserts the IPv4 option `opt` (a multiple of 4 bytes) after the options of the IPv4 packet at `l3`: fixes the
/// header length, total length and header checksum (the transport checksum does not cover IP options). False
/// (frame unchanged) when there is no tailroom or the header would pass 60 bytes.
pub fn insert_ipv4_option<F: Frame>(f: &mut F, l3: usize, opt: &[u8]) -> bool {
    let n = opt.len();
    let Some(&vihl) = f.data().get(l3) else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < ipv4::HEADER_LEN || ihl + n > 60 || n % 4 != 0 || f.data().len() < l3 + ihl || !f.append(n) {
        return false;
    }
    let d = f.data_mut();
    let len = d.len();
    let at = l3 + ihl;
    d.copy_within(at..len - n, at + n);
    d[at..at + n].copy_from_slice(opt);
    d[l3] = (vihl & 0xf0) | ((ihl + n) / 4) as u8;
    let mut ip = ipv4::Packet::new_unchecked(&mut d[l3..]);
    ip.set_total_len((len - l3) as u16);
    ip.fill_checksum();
    true
}

/// Inserts `bytes` before the payload of the UDP datagram of the IP packet at `l3` (its UDP header at `l4`):
/// fixes the UDP and IP lengths, the IPv4 header checksum and the UDP checksum (an IPv4 datagram sent without
/// one keeps none). False (frame unchanged) when there is no tailroom.
pub fn insert_udp_payload<F: Frame>(f: &mut F, l3: usize, l4: usize, v6: bool, bytes: &[u8]) -> bool {
    let n = bytes.len();
    if f.data().len() < l4 + udp::HEADER_LEN || !f.append(n) {
        return false;
    }
    let d = f.data_mut();
    let len = d.len();
    let at = l4 + udp::HEADER_LEN;
    d.copy_within(at..len - n, at + n);
    d[at..at + n].copy_from_slice(bytes);
    let seg_len = (len - l4) as u16;
    let had_checksum = udp::Packet::new_unchecked(&d[l4..]).checksum() != 0;
    udp::Packet::new_unchecked(&mut d[l4..]).set_len(seg_len);
    let pseudo = if v6 {
        let plen = (len - l3 - 40) as u16;
        d[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        checksum::sum(&d[l3 + 8..l3 + 40]) + u32::from(crate::wire::proto::UDP) + u32::from(seg_len)
    } else {
        let mut ip = ipv4::Packet::new_unchecked(&mut d[l3..]);
        ip.set_total_len((len - l3) as u16);
        ip.fill_checksum();
        let (src, dst) = (ip.src(), ip.dst());
        if !had_checksum {
            return true;
        }
        checksum::pseudo_v4(src, dst, crate::wire::proto::UDP, seg_len)
    };
    udp::Packet::new_unchecked(&mut d[l4..]).fill_checksum(pseudo);
    true
}

/// The offset of the sequence number in a TCP header.
pub const SEQ: usize = tcp::field::SEQ.start;
/// The offset of the acknowledgement number in a TCP header.
pub const ACK: usize = tcp::field::ACK.start;

/// Sets the 32-bit field at `at` of the TCP segment `seg` to `v`, keeping its checksum valid.
#[inline]
pub fn set_u32(seg: &mut [u8], at: usize, v: u32) {
    let old = u32::from_be_bytes([seg[at], seg[at + 1], seg[at + 2], seg[at + 3]]);
    if old == v {
        return;
    }
    let halves = |x: u32| (x >> 16) + (x & 0xffff);
    seg[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let co = tcp::CHECKSUM_OFFSET;
    let c = checksum::update_sums(u16::from_be_bytes([seg[co], seg[co + 1]]), halves(old), halves(v));
    seg[co..co + 2].copy_from_slice(&c.to_be_bytes());
}

/// Applies `map` to the edges of every SACK block in the options of TCP segment `seg` (checksum kept valid).
pub fn map_sack(seg: &mut [u8], map: impl Fn(u32) -> u32) {
    let end = tcp::Packet::new_unchecked(&*seg).header_len().min(seg.len());
    let mut i = tcp::HEADER_LEN;
    while i < end {
        match seg[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&l) = seg.get(i + 1) else { break };
                let l = usize::from(l);
                if l < 2 || i + l > end {
                    break;
                }
                if kind == 5 {
                    let mut e = i + 2;
                    while e + 4 <= i + l {
                        let v = u32::from_be_bytes([seg[e], seg[e + 1], seg[e + 2], seg[e + 3]]);
                        set_u32(seg, e, map(v));
                        e += 4;
                    }
                }
                i += l;
            }
        }
    }
}

/// `a` is after or at `b` in sequence space.
pub fn seq_ge(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) as i32 >= 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::v4;

    #[test]
    fn proxy_v2_header_layout() {
        let h = proxy_v2(
            &v4([192, 0, 2, 100].into()),
            40000,
            &v4([203, 0, 113, 10].into()),
            80,
            false,
        );
        assert_eq!(h.len(), proxy_len(false));
        assert_eq!(&h[..12], &PP2_SIGNATURE);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..24], &[192, 0, 2, 100, 203, 0, 113, 10]);
        assert_eq!(&h[24..28], &[0x9c, 0x40, 0, 80]);
        let six: Addr = "2001:db8::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let h = proxy_v2(&six, 1, &v4([203, 0, 113, 10].into()), 80, false);
        assert_eq!(h.len(), proxy_len(true));
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        // Datagrams: DGRAM over IPv4 (0x12) and IPv6 (0x22).
        let h = proxy_v2(
            &v4([192, 0, 2, 100].into()),
            5353,
            &v4([203, 0, 113, 10].into()),
            53,
            true,
        );
        assert_eq!(&h[12..14], &[0x21, 0x12]);
        let h = proxy_v2(&six, 5353, &six, 53, true);
        assert_eq!(&h[12..14], &[0x21, 0x22]);
    }

    #[test]
    fn uoa_option_layout() {
        assert_eq!(
            uoa(&v4([192, 0, 2, 100].into()), 40000),
            [UOA_TYPE, 8, 0x9c, 0x40, 192, 0, 2, 100]
        );
        let six: Addr = "2001:db8::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let o = uoa(&six, 1);
        assert_eq!((o.len(), o[1], &o[2..4]), (20, 20, &[0u8, 1][..]));
        assert_eq!(&o[4..], &six);
    }

    #[test]
    fn toa_layout() {
        let o = toa(&v4([192, 0, 2, 100].into()), 40000);
        assert_eq!(o, vec![254, 8, 0x9c, 0x40, 192, 0, 2, 100]);
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_ge(5, u32::MAX - 3));
        assert!(!seq_ge(u32::MAX - 3, 5));
        assert!(seq_ge(7, 7));
    }
}
