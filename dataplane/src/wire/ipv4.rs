//! IPv4 headers (RFC 791); options are tolerated and skipped.
//!
//! ```text
//!  0       4       8              16   19                       31
//! +-------+-------+---------------+----+-------------------------+
//! |Version|  IHL  |     TOS       |         Total Length         |
//! |        Identification         |Flags|   Fragment Offset      |
//! |  TTL          |   Protocol    |       Header Checksum        |
//! |                       Source Address                         |
//! |                    Destination Address                       |
//! |                    Options (IHL > 5)                         |
//! +--------------------------------------------------------------+
//! ```

use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, Result};

pub(crate) mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// A view of an IPv4 packet.
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

    /// Checks that the buffer holds the header and the total length it claims, and that the lengths agree.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = self.header_len();
        let total = usize::from(self.total_len());
        if hl < HEADER_LEN || total < hl {
            return Err(Error::Malformed);
        }
        if len < total {
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
        self.b()[field::VER_IHL] >> 4
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }

    /// Type of service / DSCP+ECN.
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }

    /// Total length.
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.b()[field::LENGTH.start], self.b()[field::LENGTH.start + 1]])
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.b()[field::IDENT.start], self.b()[field::IDENT.start + 1]])
    }

    fn flg_off(&self) -> u16 {
        u16::from_be_bytes([self.b()[field::FLG_OFF.start], self.b()[field::FLG_OFF.start + 1]])
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flg_off() & 0x4000 != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flg_off() & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.flg_off() & 0x1fff) << 3
    }

    /// Whether this is a fragment (first or later).
    pub fn is_fragment(&self) -> bool {
        self.flg_off() & 0x3fff != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    /// Payload protocol.
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([
            self.b()[field::CHECKSUM.start],
            self.b()[field::CHECKSUM.start + 1],
        ])
    }

    /// Whether the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.b()[..self.header_len()])) == 0xffff
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        let b = &self.b()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.b()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The payload, up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets version 4 and the header length in bytes.
    pub fn set_ver_hl(&mut self, header_len: usize) {
        self.bm()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets the TOS byte.
    pub fn set_tos(&mut self, v: u8) {
        self.bm()[field::TOS] = v;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        self.bm()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        self.bm()[field::IDENT].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets flags and fragment offset: DF, MF, offset in bytes.
    pub fn set_frag(&mut self, df: bool, mf: bool, offset: u16) {
        let v = (u16::from(df) << 14) | (u16::from(mf) << 13) | ((offset >> 3) & 0x1fff);
        self.bm()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the TTL.
    pub fn set_ttl(&mut self, v: u8) {
        self.bm()[field::TTL] = v;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        self.bm()[field::PROTOCOL] = v;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.bm()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source address.
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.bm()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.bm()[field::DST].copy_from_slice(&a.octets());
    }

    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::finish(checksum::sum(&self.buffer.as_ref()[..hl]));
        self.set_checksum(c);
    }

    /// Decrements the TTL with an incremental checksum update (RFC 1624).
    pub fn decrement_ttl(&mut self) {
        let old = u16::from_be_bytes([self.ttl(), self.protocol()]);
        let ttl = self.ttl().wrapping_sub(1);
        self.set_ttl(ttl);
        let new = u16::from_be_bytes([ttl, self.protocol()]);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), usize::from(self.total_len()));
        &mut self.bm()[h..t]
    }
}

/// A parsed IPv4 header (options are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Payload length.
    pub payload_len: usize,
    /// TTL.
    pub ttl: u8,
    /// TOS byte.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't fragment.
    pub dont_frag: bool,
}

impl Repr {
    /// Parses a packet, verifying its header checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 4 {
            return Err(Error::Malformed);
        }
        if !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - p.header_len(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
        })
    }

    /// Writes a 20-byte header with checksum into `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_ver_hl(HEADER_LEN);
        p.set_tos(self.tos);
        p.set_total_len((HEADER_LEN + self.payload_len) as u16);
        p.set_ident(self.ident);
        p.set_frag(self.dont_frag, false, 0);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src);
        p.set_dst(self.dst);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 192.0.2.1 -> 203.0.113.10, TCP, 4 bytes of payload, DF, TTL 64.
    static PACKET: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x2a, 0xa0, 192, 0, 2, 1, 203, 0, 113,
        10, 0xaa, 0xbb, 0xcc, 0xdd,
    ];

    fn repr() -> Repr {
        Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(203, 0, 113, 10),
            protocol: 6,
            payload_len: 4,
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            dont_frag: true,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!((p.version(), p.header_len(), p.total_len()), (4, 20, 24));
        assert_eq!(
            (p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset()),
            (0x1234, true, false, 0)
        );
        assert_eq!((p.ttl(), p.protocol()), (64, 6));
        assert!(p.verify_checksum());
        assert_eq!(p.src(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 24];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_ver_hl(20);
        p.set_tos(0);
        p.set_total_len(24);
        p.set_ident(0x1234);
        p.set_frag(true, false, 0);
        p.set_ttl(64);
        p.set_protocol(6);
        p.set_src(Ipv4Addr::new(192, 0, 2, 1));
        p.set_dst(Ipv4Addr::new(203, 0, 113, 10));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn parse() {
        assert_eq!(Repr::parse(&Packet::new_unchecked(&PACKET[..])).unwrap(), repr());
        let mut bad = PACKET;
        bad[11] ^= 1;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&bad[..])),
            Err(Error::Checksum)
        );
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&PACKET[..23])),
            Err(Error::Truncated)
        );
        let mut short_ihl = PACKET;
        short_ihl[0] = 0x44;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&short_ihl[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn emit() {
        let mut buf = [0u8; 24];
        repr().emit(&mut buf);
        buf[20..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_valid() {
        let mut buf = PACKET;
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
    }

    #[test]
    fn options_are_skipped() {
        let mut buf = [0u8; 28];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_ver_hl(24);
        p.set_total_len(28);
        p.set_ttl(1);
        p.set_protocol(17);
        p.fill_checksum();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload().len(), 4);
        assert!(Repr::parse(&p).is_ok());
    }
}
