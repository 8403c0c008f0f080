//! Telling a Full-NAT backend who the client is: the TOA TCP option and the PROXY protocol v2 header.
//!
//! Both are written into TCP segments that are already translated (addresses towards the backend). The byte
//! work is here; when to do it (which segment, the sequence shift the PROXY header causes) is the worker's.
//!
//! - TOA: option kind 254 with the client's port and address (8 bytes for IPv4, 20 for IPv6), inserted right
//!   after the fixed TCP header, as the `toa` kernel modules of LVS/DPVS backends expect.
//! - PROXY v2: the 16-byte preamble and the client and VIP addresses and ports (28 bytes for IPv4, 52 for
//!   IPv6), inserted before the segment's payload. Every later client byte is then `len` further on in the
//!   backend's sequence space.

use crate::flow::{is_v4, Addr};
use crate::frame::Frame;
use crate::wire::{checksum, ipv4, tcp};

/// TCP option kind of TOA.
pub const TOA_KIND: u8 = 254;

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

/// The PROXY v2 header (command PROXY, TCP) for a connection from `client:cport` to `vip:vport`. A client and
/// VIP of different families (NAT64) are both written as IPv6, the VIP's IPv4 address mapped.
pub fn proxy_v2(client: &Addr, cport: u16, vip: &Addr, vport: u16) -> Vec<u8> {
    let v6 = !is_v4(client) || !is_v4(vip);
    let mut h = PP2_SIGNATURE.to_vec();
    h.push(0x21);
    h.push(if v6 { 0x21 } else { 0x11 });
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

/// The offset of the sequence number in a TCP header.
pub const SEQ: usize = tcp::field::SEQ.start;
/// The offset of the acknowledgement number in a TCP header.
pub const ACK: usize = tcp::field::ACK.start;

/// Sets the 32-bit field at `at` of the TCP segment `seg` to `v`, keeping its checksum valid.
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
        );
        assert_eq!(h.len(), proxy_len(false));
        assert_eq!(&h[..12], &PP2_SIGNATURE);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..24], &[192, 0, 2, 100, 203, 0, 113, 10]);
        assert_eq!(&h[24..28], &[0x9c, 0x40, 0, 80]);
        let six: Addr = "2001:db8::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let h = proxy_v2(&six, 1, &v4([203, 0, 113, 10].into()), 80);
        assert_eq!(h.len(), proxy_len(true));
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
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
