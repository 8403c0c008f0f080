//! QUIC packet headers as a load balancer sees them (RFC 9000 §17, RFC 8999): the form bit, and the destination
//! connection ID whose bytes carry a server ID in the layout of the QUIC-LB draft (plaintext mode).
//!
//! ```text
//! long header (handshakes: Initial, 0-RTT, Handshake, Retry):
//! |1|1|T T|X X X X| version (4) | DCID len (1) | DCID (0-20) | SCID len (1) | SCID | ...
//!
//! short header (1-RTT, everything after the handshake):
//! |0|1|S|R R|K|P P| DCID (length known only to the servers) | packet number | payload ...
//!
//! QUIC-LB plaintext connection ID (what anylb reads; the server writes it):
//! | first octet (config rotation, length) | server ID (`len` bytes at `offset`) | nonce ... |
//! ```
//!
//! A short header does not say how long its connection ID is: the balancer is told where the server ID sits
//! (offset and length) by the topology, as the QUIC-LB configuration tells it.

use super::{Error, Result};

pub(crate) mod field {
    /// The first octet: form and fixed bits.
    pub const FLAGS: usize = 0;
    /// Long header: the version (4 bytes) follows the first octet.
    pub const VERSION: std::ops::Range<usize> = 1..5;
    /// Long header: the destination connection ID's length.
    pub const LONG_DCID_LEN: usize = 5;
    /// Long header: the destination connection ID.
    pub const LONG_DCID: usize = 6;
    /// Short header: the destination connection ID.
    pub const SHORT_DCID: usize = 1;
}

/// Header form bit: set in long headers.
pub const FORM_LONG: u8 = 0x80;
/// Fixed bit: set in every QUIC v1 packet (RFC 9000 §17.2, §17.3).
pub const FIXED: u8 = 0x40;
/// The longest connection ID of QUIC v1.
pub const MAX_CID_LEN: usize = 20;

/// A view of the start of a QUIC packet (a UDP payload).
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

    /// Checks the first octet is there with the fixed bit set and, for a long header, that the version and
    /// the destination connection ID (at most 20 bytes) fit.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        let first = *b.get(field::FLAGS).ok_or(Error::Truncated)?;
        if first & FIXED == 0 {
            return Err(Error::Malformed);
        }
        if first & FORM_LONG != 0 {
            let len = usize::from(*b.get(field::LONG_DCID_LEN).ok_or(Error::Truncated)?);
            if len > MAX_CID_LEN {
                return Err(Error::Malformed);
            }
            if b.len() < field::LONG_DCID + len {
                return Err(Error::Truncated);
            }
        }
        Ok(())
    }

    /// Whether this is a long header (a handshake packet).
    pub fn is_long(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FORM_LONG != 0
    }

    /// Long header: the version.
    pub fn version(&self) -> Option<u32> {
        let b = self.buffer.as_ref();
        self.is_long()
            .then(|| b.get(field::VERSION))
            .flatten()
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }

    /// The destination connection ID: its whole length for a long header; for a short header, everything
    /// after the first octet (the connection ID is a prefix of it).
    pub fn dcid(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        if self.is_long() {
            let len = usize::from(b[field::LONG_DCID_LEN]);
            &b[field::LONG_DCID..field::LONG_DCID + len]
        } else {
            &b[field::SHORT_DCID..]
        }
    }

    /// The server ID of a short-header packet: `len` bytes at `offset` of its connection ID, as a number;
    /// none for a long header (the client chose its connection ID) or a packet too short to hold it.
    pub fn server_id(&self, offset: usize, len: usize) -> Option<u64> {
        if self.is_long() || len == 0 || len > 8 {
            return None;
        }
        let id = self.dcid().get(offset..offset + len)?;
        Some(id.iter().fold(0u64, |a, &x| a << 8 | u64::from(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client Initial: long header, version 1, an 8-byte DCID, then the SCID and the rest.
    const INITIAL: [u8; 20] = [
        0xc3, 0, 0, 0, 1, 8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 4, 0xaa, 0xbb, 0xcc, 0xdd, 0x00,
    ];
    /// A 1-RTT packet whose connection ID (first octet 0x01, server ID 0x0a01, nonce) a server wrote.
    const SHORT: [u8; 12] = [
        0x41, 0x01, 0x0a, 0x01, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&INITIAL[..]).unwrap();
        assert!(p.is_long());
        assert_eq!(p.version(), Some(1));
        assert_eq!(p.dcid(), &INITIAL[6..14]);
        assert_eq!(
            p.server_id(1, 2),
            None,
            "a long header carries the client's choice"
        );
        let s = Packet::new_checked(&SHORT[..]).unwrap();
        assert!(!s.is_long());
        assert_eq!(s.version(), None);
        assert_eq!(s.server_id(1, 2), Some(0x0a01));
        assert_eq!(s.server_id(1, 1), Some(0x0a));
    }

    #[test]
    fn truncated_and_malformed() {
        assert_eq!(Packet::new_checked(&[][..]).unwrap_err(), Error::Truncated);
        assert_eq!(
            Packet::new_checked(&[0x01u8][..]).unwrap_err(),
            Error::Malformed,
            "no fixed bit"
        );
        assert_eq!(Packet::new_checked(&INITIAL[..10]).unwrap_err(), Error::Truncated);
        let mut long_cid = INITIAL;
        long_cid[5] = 21;
        assert_eq!(Packet::new_checked(&long_cid[..]).unwrap_err(), Error::Malformed);
        let s = Packet::new_checked(&SHORT[..3]).unwrap();
        assert_eq!(s.server_id(1, 2), None, "too short for the server ID");
        assert_eq!(s.server_id(1, 9), None, "server IDs are 1 to 8 bytes");
    }

    #[test]
    fn parse() {
        // Every long-header type (Initial, 0-RTT, Handshake, Retry) is a handshake packet; the version is
        // read whatever it is (version negotiation is the servers' business).
        for first in [0xc0u8, 0xd0, 0xe0, 0xf0] {
            let mut p = INITIAL;
            p[0] = first;
            p[1..5].copy_from_slice(&0x6b33_43cfu32.to_be_bytes());
            let h = Packet::new_checked(&p[..]).unwrap();
            assert!(h.is_long());
            assert_eq!(h.version(), Some(0x6b33_43cf));
        }
        let mut zero = INITIAL;
        zero[5] = 0;
        assert_eq!(Packet::new_checked(&zero[..]).unwrap().dcid(), &[] as &[u8]);
    }

    #[test]
    fn emit() {
        // What a server writes (first octet, server ID, nonce) is what the balancer reads back.
        let mut pkt = vec![0x40, 0x02];
        pkt.extend_from_slice(&0x00c0_ffeeu32.to_be_bytes());
        pkt.extend_from_slice(&[9; 8]);
        let p = Packet::new_checked(&pkt[..]).unwrap();
        assert_eq!(p.server_id(1, 4), Some(0x00c0_ffee));
        assert_eq!(p.dcid()[0], 0x02);
    }
}
