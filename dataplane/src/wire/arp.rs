//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! ```text
//! htype(2)=1 ptype(2)=0x0800 hlen(1)=6 plen(1)=4 oper(2) sha(6) spa(4) tha(6) tpa(4)
//! ```

use std::net::Ipv4Addr;

use super::ethernet::Mac;
use super::{Error, Result};

mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Who has TPA? Tell SPA.
    Request,
    /// SPA is at SHA.
    Reply,
}

/// A view of an ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Checks the length.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[r.start], b[r.start + 1]])
    }

    fn mac_at(&self, r: std::ops::Range<usize>) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[r]);
        m
    }

    fn ip_at(&self, r: std::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Hardware type (1 = Ethernet).
    pub fn htype(&self) -> u16 {
        self.u16_at(field::HTYPE)
    }

    /// Protocol type (0x0800 = IPv4).
    pub fn ptype(&self) -> u16 {
        self.u16_at(field::PTYPE)
    }

    /// Operation code.
    pub fn oper(&self) -> u16 {
        self.u16_at(field::OPER)
    }

    /// Sender hardware address.
    pub fn sha(&self) -> Mac {
        self.mac_at(field::SHA)
    }

    /// Sender protocol address.
    pub fn spa(&self) -> Ipv4Addr {
        self.ip_at(field::SPA)
    }

    /// Target hardware address.
    pub fn tha(&self) -> Mac {
        self.mac_at(field::THA)
    }

    /// Target protocol address.
    pub fn tpa(&self) -> Ipv4Addr {
        self.ip_at(field::TPA)
    }
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Operation.
    pub op: Operation,
    /// Sender MAC.
    pub sha: Mac,
    /// Sender IPv4.
    pub spa: Ipv4Addr,
    /// Target MAC.
    pub tha: Mac,
    /// Target IPv4.
    pub tpa: Ipv4Addr,
}

impl Repr {
    /// Parses; only Ethernet/IPv4 requests and replies are accepted.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        let b = p.buffer.as_ref();
        if p.htype() != 1 || p.ptype() != 0x0800 || b[field::HLEN] != 6 || b[field::PLEN] != 4 {
            return Err(Error::Unsupported);
        }
        let op = match p.oper() {
            1 => Operation::Request,
            2 => Operation::Reply,
            _ => return Err(Error::Unsupported),
        };
        Ok(Repr {
            op,
            sha: p.sha(),
            spa: p.spa(),
            tha: p.tha(),
            tpa: p.tpa(),
        })
    }

    /// Writes the packet into the first [`LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[field::HTYPE].copy_from_slice(&1u16.to_be_bytes());
        buf[field::PTYPE].copy_from_slice(&0x0800u16.to_be_bytes());
        buf[field::HLEN] = 6;
        buf[field::PLEN] = 4;
        let op: u16 = match self.op {
            Operation::Request => 1,
            Operation::Reply => 2,
        };
        buf[field::OPER].copy_from_slice(&op.to_be_bytes());
        buf[field::SHA].copy_from_slice(&self.sha);
        buf[field::SPA].copy_from_slice(&self.spa.octets());
        buf[field::THA].copy_from_slice(&self.tha);
        buf[field::TPA].copy_from_slice(&self.tpa.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0, 0, 0, 0, 0x05, 192, 0, 2, 1, 0, 0, 0, 0, 0,
        0, 203, 0, 113, 10,
    ];

    fn repr() -> Repr {
        Repr {
            op: Operation::Request,
            sha: [2, 0, 0, 0, 0, 5],
            spa: Ipv4Addr::new(192, 0, 2, 1),
            tha: [0; 6],
            tpa: Ipv4Addr::new(203, 0, 113, 10),
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_unchecked(&REQUEST[..]);
        assert_eq!((p.htype(), p.ptype(), p.oper()), (1, 0x0800, 1));
        assert_eq!(p.sha(), [2, 0, 0, 0, 0, 5]);
        assert_eq!(p.spa(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.tha(), [0; 6]);
        assert_eq!(p.tpa(), Ipv4Addr::new(203, 0, 113, 10));
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 28];
        repr().emit(&mut buf);
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn parse() {
        assert_eq!(Repr::parse(&Packet::new_unchecked(&REQUEST[..])).unwrap(), repr());
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&REQUEST[..27])),
            Err(Error::Truncated)
        );
        let mut bad = REQUEST;
        bad[7] = 9;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&bad[..])),
            Err(Error::Unsupported)
        );
    }

    #[test]
    fn emit() {
        let mut r = repr();
        r.op = Operation::Reply;
        let mut buf = [0u8; 28];
        r.emit(&mut buf);
        assert_eq!(Repr::parse(&Packet::new_unchecked(&buf[..])).unwrap(), r);
        assert_eq!(buf[7], 2);
    }
}
