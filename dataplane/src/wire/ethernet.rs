//! Ethernet II frames with at most one 802.1Q tag.
//!
//! ```text
//! +------------+------------+--------------------+-----------+---------
//! | dst MAC(6) | src MAC(6) | [0x8100 TCI (4)]   | type (2)  | payload
//! +------------+------------+--------------------+-----------+---------
//! ```

use super::{Error, Result};

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// The broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// EtherType values the dataplane handles.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
}

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const TYPE: Range<usize> = 12..14;
    pub const TCI: Range<usize> = 14..16;
    pub const INNER_TYPE: Range<usize> = 16..18;
}

/// Length of an untagged header.
pub const HEADER_LEN: usize = 14;
/// Length of a tagged header.
pub const TAGGED_HEADER_LEN: usize = 18;

/// A view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks that the header (and the tag, if any) fits.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.outer_type() == ethertype::VLAN && b.len() < TAGGED_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Consumes the view.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    pub fn dst(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        m
    }

    /// Source MAC.
    pub fn src(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        m
    }

    fn outer_type(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::TYPE.start], b[field::TYPE.start + 1]])
    }

    /// The VLAN id, if tagged.
    pub fn vlan(&self) -> Option<u16> {
        if self.outer_type() != ethertype::VLAN {
            return None;
        }
        let b = self.buffer.as_ref();
        Some(u16::from_be_bytes([b[field::TCI.start], b[field::TCI.start + 1]]) & 0x0fff)
    }

    /// The EtherType of the payload (inside the tag, if any).
    pub fn ethertype(&self) -> u16 {
        if self.outer_type() == ethertype::VLAN {
            let b = self.buffer.as_ref();
            u16::from_be_bytes([b[field::INNER_TYPE.start], b[field::INNER_TYPE.start + 1]])
        } else {
            self.outer_type()
        }
    }

    /// Offset of the payload.
    pub fn header_len(&self) -> usize {
        if self.outer_type() == ethertype::VLAN {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC.
    pub fn set_dst(&mut self, m: Mac) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m);
    }

    /// Sets the source MAC.
    pub fn set_src(&mut self, m: Mac) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m);
    }

    /// Sets the payload EtherType (inside the tag, if any).
    pub fn set_ethertype(&mut self, t: u16) {
        let r = if self.outer_type() == ethertype::VLAN {
            field::INNER_TYPE
        } else {
            field::TYPE
        };
        self.buffer.as_mut()[r].copy_from_slice(&t.to_be_bytes());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

/// A parsed Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Payload EtherType.
    pub ethertype: u16,
}

impl Repr {
    /// Parses a checked frame.
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Result<Repr> {
        f.check_len()?;
        Ok(Repr {
            dst: f.dst(),
            src: f.src(),
            vlan: f.vlan(),
            ethertype: f.ethertype(),
        })
    }

    /// Header length this representation emits.
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header into the first [`header_len`](Self::header_len) bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[field::DST].copy_from_slice(&self.dst);
        buf[field::SRC].copy_from_slice(&self.src);
        match self.vlan {
            Some(v) => {
                buf[field::TYPE].copy_from_slice(&ethertype::VLAN.to_be_bytes());
                buf[field::TCI].copy_from_slice(&(v & 0x0fff).to_be_bytes());
                buf[field::INNER_TYPE].copy_from_slice(&self.ethertype.to_be_bytes());
            }
            None => buf[field::TYPE].copy_from_slice(&self.ethertype.to_be_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static UNTAGGED: [u8; 18] = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00, 0xaa, 0xbb, 0xcc, 0xdd,
    ];
    static TAGGED: [u8; 20] = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x81, 0x00, 0x00, 0x64, 0x86, 0xdd, 0xaa, 0xbb,
    ];

    #[test]
    fn deconstruct() {
        let f = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.vlan(), None);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        let t = Frame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(t.vlan(), Some(100));
        assert_eq!(t.ethertype(), ethertype::IPV6);
        assert_eq!(t.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 18];
        buf[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        let mut f = Frame::new_unchecked(&mut buf[..]);
        f.set_dst([2, 0, 0, 0, 0, 1]);
        f.set_src([2, 0, 0, 0, 0, 2]);
        f.set_ethertype(ethertype::IPV4);
        f.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(buf, UNTAGGED);
    }

    #[test]
    fn parse() {
        let r = Repr::parse(&Frame::new_unchecked(&TAGGED[..])).unwrap();
        assert_eq!(
            r,
            Repr {
                dst: [2, 0, 0, 0, 0, 1],
                src: [2, 0, 0, 0, 0, 2],
                vlan: Some(100),
                ethertype: ethertype::IPV6
            }
        );
        assert_eq!(
            Repr::parse(&Frame::new_unchecked(&TAGGED[..16])),
            Err(Error::Truncated)
        );
        assert_eq!(
            Repr::parse(&Frame::new_unchecked(&UNTAGGED[..13])),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn emit() {
        let r = Repr {
            dst: [2, 0, 0, 0, 0, 1],
            src: [2, 0, 0, 0, 0, 2],
            vlan: Some(100),
            ethertype: ethertype::IPV6,
        };
        let mut buf = [0u8; 18];
        r.emit(&mut buf);
        assert_eq!(buf[..], TAGGED[..18]);
    }
}
