//! IPv6 headers (RFC 8200) and the walk over extension headers (hop-by-hop, routing, destination options,
//! fragment) to the upper-layer header.
//!
//! ```text
//! +-------+---------------+--------------------------------------+
//! |Version| Traffic Class |              Flow Label              |
//! |        Payload Length         |  Next Header  |   Hop Limit  |
//! |                   Source Address (16)                        |
//! |                 Destination Address (16)                     |
//! +--------------------------------------------------------------+
//! ```

use std::net::Ipv6Addr;

use super::{Error, Result};

pub(crate) mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// Extension header numbers walked.
pub mod ext {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
    /// No next header.
    pub const NONE: u8 = 59;
}

/// Most extension headers walked before giving up (a hostile chain is malformed, not a loop).
const MAX_EXT_HEADERS: usize = 8;

/// Where the upper-layer header starts, after the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Upper-layer protocol (TCP 6, UDP 17, ICMPv6 58, …).
    pub protocol: u8,
    /// Offset of its header from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header, when the packet has one.
    pub fragment: Option<FragmentHeader>,
}

/// What a fragment header (RFC 8200 §4.5) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Offset of the header from the start of the IPv6 header.
    pub at: usize,
    /// Fragment offset in bytes.
    pub offset: u16,
    /// M: more fragments follow.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

impl FragmentHeader {
    /// An atomic fragment (offset 0, M clear): a whole packet that happens to carry the header, processed as
    /// one (RFC 6946).
    pub fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more
    }
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the header and the payload length it claims.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Consumes the view.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// IP version field.
    pub fn version(&self) -> u8 {
        self.b()[0] >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        (u16::from_be_bytes([self.b()[0], self.b()[1]]) >> 4) as u8
    }

    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        let b = &self.b()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x000f_ffff
    }

    /// Payload length.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.b()[field::LENGTH.start], self.b()[field::LENGTH.start + 1]])
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.b()[field::NXT_HDR]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[field::SRC]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.b()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// Walks the extension headers to the upper-layer header.
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let end = HEADER_LEN + usize::from(self.payload_len());
        let b = self.b();
        let mut next = self.next_header();
        let mut off = HEADER_LEN;
        let mut fragment = None;
        for _ in 0..MAX_EXT_HEADERS {
            match next {
                ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS => {
                    if off + 8 > end {
                        return Err(Error::Malformed);
                    }
                    if next == ext::HOP_BY_HOP && off != HEADER_LEN {
                        return Err(Error::Malformed);
                    }
                    let len = (usize::from(b[off + 1]) + 1) * 8;
                    next = b[off];
                    off += len;
                }
                ext::FRAGMENT => {
                    if off + 8 > end {
                        return Err(Error::Malformed);
                    }
                    let fo = u16::from_be_bytes([b[off + 2], b[off + 3]]);
                    fragment = Some(FragmentHeader {
                        at: off,
                        offset: fo & 0xfff8,
                        more: fo & 1 != 0,
                        ident: u32::from_be_bytes([b[off + 4], b[off + 5], b[off + 6], b[off + 7]]),
                    });
                    next = b[off];
                    off += 8;
                }
                _ => {
                    if off > end {
                        return Err(Error::Malformed);
                    }
                    return Ok(UpperLayer {
                        protocol: next,
                        offset: off,
                        fragment,
                    });
                }
            }
        }
        Err(Error::Malformed)
    }

    /// Bytes after the fixed header, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets version 6, traffic class and flow label.
    pub fn set_ver_tc_flow(&mut self, tc: u8, flow: u32) {
        let v = (6u32 << 28) | (u32::from(tc) << 20) | (flow & 0x000f_ffff);
        self.bm()[field::VER_TC_FLOW].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        self.bm()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.bm()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.bm()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src(&mut self, a: &Ipv6Addr) {
        self.bm()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst(&mut self, a: &Ipv6Addr) {
        self.bm()[field::DST].copy_from_slice(&a.octets());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.bm()[HEADER_LEN..end]
    }
}

/// A parsed IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source.
    pub src: Ipv6Addr,
    /// Destination.
    pub dst: Ipv6Addr,
    /// Next header of the fixed header.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label.
    pub flow_label: u32,
}

impl Repr {
    /// Parses a packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Writes the fixed header into `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_ver_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src(&self.src);
        p.set_dst(&self.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2001:db8::1 -> 2001:db8::2, hop-by-hop (8 bytes) then UDP, 8 bytes of UDP.
    static PACKET: [u8; 56] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 1, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // fixed header
        17, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop: next UDP, len 0, PadN
        0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00, // UDP
    ];

    fn repr() -> Repr {
        Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            next_header: ext::HOP_BY_HOP,
            payload_len: 16,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(
            (p.version(), p.payload_len(), p.next_header(), p.hop_limit()),
            (6, 16, 0, 64)
        );
        assert_eq!(p.src(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            p.upper_layer().unwrap(),
            UpperLayer {
                protocol: 17,
                offset: 48,
                fragment: None
            }
        );
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 56];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_ver_tc_flow(0, 0);
        p.set_payload_len(16);
        p.set_next_header(0);
        p.set_hop_limit(64);
        p.set_src(&"2001:db8::1".parse().unwrap());
        p.set_dst(&"2001:db8::2".parse().unwrap());
        p.payload_mut().copy_from_slice(&PACKET[40..]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn parse() {
        assert_eq!(Repr::parse(&Packet::new_unchecked(&PACKET[..])).unwrap(), repr());
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&PACKET[..55])),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn emit() {
        let mut buf = [0u8; 40];
        repr().emit(&mut buf);
        assert_eq!(buf[..], PACKET[..40]);
    }

    #[test]
    fn fragment_and_routing_headers_are_walked() {
        let mut buf = [0u8; 40 + 8 + 8 + 8];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_ver_tc_flow(0, 0);
        p.set_payload_len(24);
        p.set_next_header(ext::ROUTING);
        buf[40] = ext::FRAGMENT; // routing: next fragment, len 0
        buf[48] = 6; // fragment: next TCP
        buf[50..52].copy_from_slice(&0x0009u16.to_be_bytes()); // offset 8 bytes, M set
        buf[52..56].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        let ul = Packet::new_unchecked(&buf[..]).upper_layer().unwrap();
        let frag = FragmentHeader {
            at: 48,
            offset: 8,
            more: true,
            ident: 0xdead_beef,
        };
        assert_eq!(
            ul,
            UpperLayer {
                protocol: 6,
                offset: 56,
                fragment: Some(frag)
            }
        );
        assert!(!frag.is_atomic());
        assert!(FragmentHeader {
            offset: 0,
            more: false,
            ..frag
        }
        .is_atomic());
    }

    #[test]
    fn hostile_extension_chains_are_malformed() {
        // A chain of destination-options headers longer than we walk.
        let mut buf = [0u8; 40 + 8 * 10];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_ver_tc_flow(0, 0);
        p.set_payload_len(80);
        p.set_next_header(ext::DEST_OPTS);
        for i in 0..10 {
            buf[40 + 8 * i] = ext::DEST_OPTS;
        }
        assert_eq!(
            Packet::new_unchecked(&buf[..]).upper_layer(),
            Err(Error::Malformed)
        );
        // An extension length running past the payload.
        let mut buf = [0u8; 48];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_ver_tc_flow(0, 0);
        p.set_payload_len(8);
        p.set_next_header(ext::DEST_OPTS);
        buf[40] = 6;
        buf[41] = 5;
        assert_eq!(
            Packet::new_unchecked(&buf[..]).upper_layer(),
            Err(Error::Malformed)
        );
    }
}
