//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages, which share one layout: type, code, checksum, four bytes that
//! depend on the type (echo identifier and sequence, next-hop MTU, pointer), then data — for errors, the start of
//! the packet that caused them.
//!
//! ```text
//! | type (1) | code (1) | checksum (2) | rest of header (4) | data …
//! ```

use super::checksum;
use super::{Error, Result};

/// Header length (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 2;

/// ICMPv4 types and codes used by the dataplane.
pub mod v4 {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
    /// Code: port unreachable.
    pub const CODE_PORT_UNREACHABLE: u8 = 3;
    /// Code: fragmentation needed and DF set.
    pub const CODE_FRAG_NEEDED: u8 = 4;
    /// Code: TTL exceeded in transit.
    pub const CODE_TTL_EXCEEDED: u8 = 0;
}

/// ICMPv6 types and codes used by the dataplane.
pub mod v6 {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Neighbor solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Code: port unreachable.
    pub const CODE_PORT_UNREACHABLE: u8 = 4;
    /// Code: no route to destination.
    pub const CODE_NO_ROUTE: u8 = 0;
    /// Code: address unreachable.
    pub const CODE_ADDR_UNREACHABLE: u8 = 3;
    /// Code: administratively prohibited.
    pub const CODE_ADMIN_PROHIBITED: u8 = 1;
}

/// Whether an ICMPv4 type is an error that quotes the packet that caused it.
pub fn v4_is_error(ty: u8) -> bool {
    matches!(ty, v4::DEST_UNREACHABLE | v4::TIME_EXCEEDED | v4::PARAM_PROBLEM)
}

/// Whether an ICMPv6 type is an error (types below 128).
pub fn v6_is_error(ty: u8) -> bool {
    ty < 128
}

/// A view of an ICMP or ICMPv6 message.
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

    /// Checks the header fits.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        self.u16_at(2)
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        self.u16_at(4)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        self.u16_at(6)
    }

    /// ICMPv4 fragmentation-needed next-hop MTU (bytes 6-7).
    pub fn v4_mtu(&self) -> u16 {
        self.u16_at(6)
    }

    /// ICMPv6 packet-too-big MTU (bytes 4-7).
    pub fn v6_mtu(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// The four type-specific bytes.
    pub fn rest(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[4], b[5], b[6], b[7]]
    }

    /// Data after the header.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum over the whole buffer is right; `pseudo` is 0 for ICMPv4.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::fold(pseudo + checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the type.
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[0] = v;
    }

    /// Sets the code.
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[1] = v;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[2..4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the four type-specific bytes.
    pub fn set_rest(&mut self, v: [u8; 4]) {
        self.buffer.as_mut()[4..8].copy_from_slice(&v);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, v: u16) {
        self.buffer.as_mut()[4..6].copy_from_slice(&v.to_be_bytes());
    }

    /// Computes the checksum over the whole buffer; `pseudo` is 0 for ICMPv4.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(pseudo + checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }

    /// Data after the header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A parsed ICMP/ICMPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Type.
    pub msg_type: u8,
    /// Code.
    pub code: u8,
    /// Type-specific bytes.
    pub rest: [u8; 4],
}

impl Repr {
    /// Parses a message header.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        Ok(Repr {
            msg_type: p.msg_type(),
            code: p.code(),
            rest: p.rest(),
        })
    }

    /// Writes the header with a zero checksum.
    pub fn emit(&self, buf: &mut [u8]) {
        let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_msg_type(self.msg_type);
        p.set_code(self.code);
        p.set_checksum(0);
        p.set_rest(self.rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request, id 0x1234, seq 1, payload "abcd", checksum filled.
    static ECHO: [u8; 12] = [8, 0, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd'];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq()),
            (v4::ECHO_REQUEST, 0, 0x1234, 1)
        );
        assert_eq!(p.data(), b"abcd");
        assert!(p.verify_checksum(0));
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(8);
        p.set_code(0);
        p.set_rest([0x12, 0x34, 0, 1]);
        p.data_mut().copy_from_slice(b"abcd");
        p.fill_checksum(0);
        assert_eq!(buf, ECHO);
    }

    #[test]
    fn parse() {
        let r = Repr::parse(&Packet::new_unchecked(&ECHO[..])).unwrap();
        assert_eq!(
            r,
            Repr {
                msg_type: 8,
                code: 0,
                rest: [0x12, 0x34, 0, 1]
            }
        );
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&ECHO[..7])),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn emit() {
        let mut buf = ECHO;
        Repr {
            msg_type: 8,
            code: 0,
            rest: [0x12, 0x34, 0, 1],
        }
        .emit(&mut buf);
        Packet::new_unchecked(&mut buf[..]).fill_checksum(0);
        assert_eq!(buf, ECHO);
    }

    #[test]
    fn error_types() {
        assert!(v4_is_error(v4::DEST_UNREACHABLE) && !v4_is_error(v4::ECHO_REQUEST));
        assert!(v6_is_error(v6::PACKET_TOO_BIG) && !v6_is_error(v6::NEIGHBOR_SOLICIT));
    }
}
