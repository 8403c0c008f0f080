//! TCP headers (RFC 9293) with the MSS option, which NAT64 clamps, and the handshake options a SYN-proxy reads
//! from a SYN and writes into its SYN-ACK and its SYN to the backend (MSS, window scale and SACK-permitted,
//! RFC 7323 and RFC 2018; timestamps are read to be declined).
//!
//! ```text
//! | src port (2) | dst port (2) | seq (4) | ack (4) | off/flags (2) | window (2) | checksum (2) | urg (2) | options
//! ```

use super::checksum;
use super::{Error, Result};

pub(crate) mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const FLAGS: Range<usize> = 12..14;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 16;

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// A view of a TCP segment.
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

    /// Checks that the header and its options fit.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len < hl {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.b()[at], self.b()[at + 1]])
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT.start)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        self.u32_at(field::SEQ.start)
    }

    /// Acknowledgement number.
    pub fn ack(&self) -> u32 {
        self.u32_at(field::ACK.start)
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::FLAGS.start] >> 4) * 4
    }

    /// Flag bits (FIN..CWR).
    pub fn flags(&self) -> u8 {
        self.b()[field::FLAGS.start + 1]
    }

    /// Window.
    pub fn window(&self) -> u16 {
        self.u16_at(field::WINDOW.start)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM.start)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        self.u16_at(field::URGENT.start)
    }

    /// The options bytes.
    pub fn options(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.header_len()]
    }

    /// The MSS option's value, if present.
    pub fn mss(&self) -> Option<u16> {
        find_option(self.options(), 2, 4).map(|at| {
            let o = &self.options()[at + 2..at + 4];
            u16::from_be_bytes([o[0], o[1]])
        })
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
}

/// The options of a handshake segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandshakeOptions {
    /// Maximum segment size.
    pub mss: Option<u16>,
    /// Window scale shift (as sent; RFC 7323 caps its use at 14).
    pub wscale: Option<u8>,
    /// SACK-permitted.
    pub sack_permitted: bool,
    /// Timestamps (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
}

impl HandshakeOptions {
    /// Reads the options bytes of a segment; a malformed option list ends the walk (what came before counts).
    pub fn parse(opts: &[u8]) -> HandshakeOptions {
        let mut o = HandshakeOptions::default();
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => break,
                1 => i += 1,
                k => {
                    let Some(&l) = opts.get(i + 1) else { break };
                    let l = usize::from(l);
                    if l < 2 || i + l > opts.len() {
                        break;
                    }
                    let v = &opts[i + 2..i + l];
                    match (k, l) {
                        (2, 4) => o.mss = Some(u16::from_be_bytes([v[0], v[1]])),
                        (3, 3) => o.wscale = Some(v[0]),
                        (4, 2) => o.sack_permitted = true,
                        (8, 10) => {
                            let w = |j: usize| u32::from_be_bytes([v[j], v[j + 1], v[j + 2], v[j + 3]]);
                            o.timestamps = Some((w(0), w(4)));
                        }
                        _ => {}
                    }
                    i += l;
                }
            }
        }
        o
    }

    /// Writes MSS, window scale and SACK-permitted (timestamps are not written) into `buf`, padded with NOPs
    /// to a multiple of four bytes; returns the length (at most [`HANDSHAKE_OPTIONS_MAX`]).
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        if let Some(m) = self.mss {
            buf[n..n + 4].copy_from_slice(&[2, 4, (m >> 8) as u8, m as u8]);
            n += 4;
        }
        if let Some(w) = self.wscale {
            buf[n..n + 4].copy_from_slice(&[1, 3, 3, w]);
            n += 4;
        }
        if self.sack_permitted {
            buf[n..n + 4].copy_from_slice(&[1, 1, 4, 2]);
            n += 4;
        }
        n
    }
}

/// The most bytes [`HandshakeOptions::emit`] writes.
pub const HANDSHAKE_OPTIONS_MAX: usize = 12;

/// Offset of option `kind` with total length `len` in `opts`, walking the option list safely.
fn find_option(opts: &[u8], kind: u8, len: usize) -> Option<usize> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            k => {
                let l = usize::from(*opts.get(i + 1)?);
                if l < 2 || i + l > opts.len() {
                    return None;
                }
                if k == kind && l == len {
                    return Some(i);
                }
                i += l;
            }
        }
    }
    None
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn set_u32(&mut self, at: usize, v: u32) {
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        self.set_u16(field::SRC_PORT.start, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        self.set_u16(field::DST_PORT.start, v);
    }

    /// Sets the sequence number.
    pub fn set_seq(&mut self, v: u32) {
        self.set_u32(field::SEQ.start, v);
    }

    /// Sets the acknowledgement number.
    pub fn set_ack(&mut self, v: u32) {
        self.set_u32(field::ACK.start, v);
    }

    /// Sets header length (bytes) and flags.
    pub fn set_header_len_flags(&mut self, header_len: usize, flags: u8) {
        let b = self.buffer.as_mut();
        b[field::FLAGS.start] = ((header_len / 4) as u8) << 4;
        b[field::FLAGS.start + 1] = flags;
    }

    /// Sets the window.
    pub fn set_window(&mut self, v: u16) {
        self.set_u16(field::WINDOW.start, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16(field::CHECKSUM.start, v);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent(&mut self, v: u16) {
        self.set_u16(field::URGENT.start, v);
    }

    /// Lowers the MSS option to at most `max`, updating the checksum incrementally. Returns whether it changed.
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        let Some(at) = find_option(self.options(), 2, 4) else {
            return false;
        };
        let at = HEADER_LEN + at + 2;
        let old = self.u16_at(at);
        if old <= max {
            return false;
        }
        self.set_u16(at, max);
        let c = checksum::update_u16(self.checksum(), old, max);
        self.set_checksum(c);
        true
    }

    /// Computes and sets the checksum given the pseudo-header sum; the buffer must be exactly the segment.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(pseudo + checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Whether the checksum over exactly this segment is right for the pseudo-header sum.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::fold(pseudo + checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

/// A parsed TCP header (the MSS is the only option kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// MSS option.
    pub mss: Option<u16>,
}

impl Repr {
    /// Parses a segment.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq(),
            ack: p.ack(),
            flags: p.flags(),
            window: p.window(),
            mss: p.mss(),
        })
    }

    /// Header length this representation emits.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + if self.mss.is_some() { 4 } else { 0 }
    }

    /// Writes the header into `buf` (checksum left 0; fill it once the payload is in place).
    pub fn emit(&self, buf: &mut [u8]) {
        let hl = self.header_len();
        let mut p = Packet::new_unchecked(&mut buf[..hl]);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq(self.seq);
        p.set_ack(self.ack);
        p.set_header_len_flags(hl, self.flags);
        p.set_window(self.window);
        p.set_checksum(0);
        p.set_urgent(0);
        if let Some(mss) = self.mss {
            buf[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    // SYN 192.0.2.1:12345 -> 203.0.113.10:80, seq 1, MSS 1460.
    static SYN: [u8; 24] = [
        0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0x00, 0x00, 0, 0, 2, 4, 0x05,
        0xb4,
    ];

    fn repr() -> Repr {
        Repr {
            src_port: 12345,
            dst_port: 80,
            seq: 1,
            ack: 0,
            flags: flags::SYN,
            window: 0xffff,
            mss: Some(1460),
        }
    }

    fn pseudo(len: u16) -> u32 {
        checksum::pseudo_v4(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(203, 0, 113, 10),
            6,
            len,
        )
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.seq(), p.ack()), (12345, 80, 1, 0));
        assert_eq!((p.header_len(), p.flags(), p.window()), (24, flags::SYN, 0xffff));
        assert_eq!(p.mss(), Some(1460));
        assert!(p.payload().is_empty());
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 24];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_src_port(12345);
        p.set_dst_port(80);
        p.set_seq(1);
        p.set_ack(0);
        p.set_header_len_flags(24, flags::SYN);
        p.set_window(0xffff);
        p.set_urgent(0);
        buf[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        assert_eq!(buf, SYN);
    }

    #[test]
    fn parse() {
        assert_eq!(Repr::parse(&Packet::new_unchecked(&SYN[..])).unwrap(), repr());
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&SYN[..19])),
            Err(Error::Truncated)
        );
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&SYN[..22])),
            Err(Error::Truncated)
        );
        let mut bad = SYN;
        bad[12] = 0x40;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&bad[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn emit() {
        let mut buf = [0u8; 24];
        repr().emit(&mut buf);
        assert_eq!(buf, SYN);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.fill_checksum(pseudo(24));
        assert!(p.verify_checksum(pseudo(24)));
    }

    #[test]
    fn mss_clamp_keeps_checksum_valid() {
        let mut buf = SYN;
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.fill_checksum(pseudo(24));
        assert!(p.clamp_mss(1440));
        assert_eq!(p.mss(), Some(1440));
        assert!(p.verify_checksum(pseudo(24)));
        assert!(!p.clamp_mss(1500));
    }

    #[test]
    fn handshake_options_are_read_and_written() {
        // MSS 1460, SACK-permitted, timestamps, NOP, window scale 7 (Linux's SYN).
        let opts = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0, 1, 3, 3, 7];
        let o = HandshakeOptions::parse(&opts);
        assert_eq!(
            o,
            HandshakeOptions {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                timestamps: Some((9, 0)),
            }
        );
        let mut buf = [0u8; HANDSHAKE_OPTIONS_MAX];
        let n = o.emit(&mut buf);
        assert_eq!(&buf[..n], &[2, 4, 5, 0xb4, 1, 3, 3, 7, 1, 1, 4, 2]);
        assert_eq!(
            HandshakeOptions::parse(&buf[..n]),
            HandshakeOptions {
                timestamps: None,
                ..o
            }
        );
        // A cut option ends the walk; what came before stays.
        assert_eq!(HandshakeOptions::parse(&[2, 4, 5, 0xb4, 3, 3]).mss, Some(1460));
        assert_eq!(HandshakeOptions::parse(&[3, 9, 1]), HandshakeOptions::default());
    }

    #[test]
    fn malformed_options_are_not_followed() {
        assert_eq!(find_option(&[2, 0, 0, 0], 2, 4), None);
        assert_eq!(find_option(&[2, 9, 0, 0], 2, 4), None);
        assert_eq!(find_option(&[1, 1, 2, 4, 5, 0xb4, 0, 0], 2, 4), Some(2));
    }
}
