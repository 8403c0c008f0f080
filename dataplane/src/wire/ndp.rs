//! IPv6 neighbour discovery (RFC 4861): neighbour solicitations and advertisements carried in ICMPv6, with the
//! source/target link-layer address options.
//!
//! ```text
//! NS: | 135 | 0 | cksum | reserved (4) | target (16) | options (type 1: source link-layer address)
//! NA: | 136 | 0 | cksum | R S O flags, reserved (4) | target (16) | options (type 2: target link-layer address)
//! ```

use std::net::Ipv6Addr;

use super::ethernet::Mac;
use super::icmp::{self, v6};
use super::{Error, Result};

/// Length of an NS or NA without options.
pub const BASE_LEN: usize = 24;
/// Length with one link-layer address option.
pub const LEN_WITH_LLADDR: usize = 32;

/// NA flags.
pub mod flags {
    /// Router.
    pub const ROUTER: u8 = 0x80;
    /// Solicited.
    pub const SOLICITED: u8 = 0x40;
    /// Override.
    pub const OVERRIDE: u8 = 0x20;
}

/// A parsed neighbour solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    /// Who has `target`? (with the solicitor's MAC when not from the unspecified address)
    Solicit {
        target: Ipv6Addr,
        source_mac: Option<Mac>,
    },
    /// `target` is at `target_mac`.
    Advert {
        flags: u8,
        target: Ipv6Addr,
        target_mac: Option<Mac>,
    },
}

/// Finds link-layer address option `kind` (1 source, 2 target) in `opts`.
fn lladdr_option(opts: &[u8], kind: u8) -> Result<Option<Mac>> {
    let mut i = 0;
    while i + 2 <= opts.len() {
        let len = usize::from(opts[i + 1]) * 8;
        if len == 0 || i + len > opts.len() {
            return Err(Error::Malformed);
        }
        if opts[i] == kind && len >= 8 {
            let mut m = [0u8; 6];
            m.copy_from_slice(&opts[i + 2..i + 8]);
            return Ok(Some(m));
        }
        i += len;
    }
    Ok(None)
}

impl Repr {
    /// Parses an ICMPv6 message (header included) as NS or NA.
    pub fn parse(msg: &[u8]) -> Result<Repr> {
        let p = icmp::Packet::new_checked(msg)?;
        if msg.len() < BASE_LEN {
            return Err(Error::Truncated);
        }
        if p.code() != 0 {
            return Err(Error::Malformed);
        }
        let mut t = [0u8; 16];
        t.copy_from_slice(&msg[8..24]);
        let target = Ipv6Addr::from(t);
        if target.is_multicast() {
            return Err(Error::Malformed);
        }
        let opts = &msg[BASE_LEN..];
        match p.msg_type() {
            v6::NEIGHBOR_SOLICIT => Ok(Repr::Solicit {
                target,
                source_mac: lladdr_option(opts, 1)?,
            }),
            v6::NEIGHBOR_ADVERT => Ok(Repr::Advert {
                flags: msg[4],
                target,
                target_mac: lladdr_option(opts, 2)?,
            }),
            _ => Err(Error::Unsupported),
        }
    }

    /// Length this representation emits.
    pub fn len(&self) -> usize {
        let has = match self {
            Repr::Solicit { source_mac, .. } => source_mac.is_some(),
            Repr::Advert { target_mac, .. } => target_mac.is_some(),
        };
        if has {
            LEN_WITH_LLADDR
        } else {
            BASE_LEN
        }
    }

    /// Whether nothing is emitted (never: kept for API symmetry with `len`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the message with a zero checksum (fill it with the IPv6 pseudo-header).
    pub fn emit(&self, buf: &mut [u8]) {
        buf[..BASE_LEN].fill(0);
        let (ty, target, opt) = match *self {
            Repr::Solicit { target, source_mac } => {
                (v6::NEIGHBOR_SOLICIT, target, source_mac.map(|m| (1u8, m)))
            }
            Repr::Advert {
                flags,
                target,
                target_mac,
            } => {
                buf[4] = flags;
                (v6::NEIGHBOR_ADVERT, target, target_mac.map(|m| (2u8, m)))
            }
        };
        buf[0] = ty;
        buf[8..24].copy_from_slice(&target.octets());
        if let Some((kind, mac)) = opt {
            buf[24] = kind;
            buf[25] = 1;
            buf[26..32].copy_from_slice(&mac);
        }
    }
}

/// The solicited-node multicast address of `a`: ff02::1:ff00:0/104 with the low 24 bits of `a` (RFC 4291 §2.7.1).
pub fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast MAC of an IPv6 multicast address (33:33 + low 32 bits).
pub fn multicast_mac(a: &Ipv6Addr) -> Mac {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

#[cfg(test)]
mod tests {
    use super::*;

    static NS: [u8; 32] = [
        135, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 1, 1, 2, 0,
        0, 0, 0, 9,
    ];

    #[test]
    fn deconstruct() {
        let p = icmp::Packet::new_checked(&NS[..]).unwrap();
        assert_eq!(p.msg_type(), v6::NEIGHBOR_SOLICIT);
        assert_eq!(lladdr_option(&NS[24..], 1).unwrap(), Some([2, 0, 0, 0, 0, 9]));
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 32];
        buf[0] = 135;
        buf[8..24].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        buf[24..32].copy_from_slice(&[1, 1, 2, 0, 0, 0, 0, 9]);
        assert_eq!(buf, NS);
    }

    #[test]
    fn parse() {
        let r = Repr::parse(&NS).unwrap();
        assert_eq!(
            r,
            Repr::Solicit {
                target: "2001:db8::1".parse().unwrap(),
                source_mac: Some([2, 0, 0, 0, 0, 9])
            }
        );
        assert_eq!(Repr::parse(&NS[..20]), Err(Error::Truncated));
        let mut bad = NS;
        bad[25] = 0;
        assert_eq!(Repr::parse(&bad), Err(Error::Malformed));
    }

    #[test]
    fn emit() {
        let r = Repr::Advert {
            flags: flags::SOLICITED | flags::OVERRIDE,
            target: "2001:db8::1".parse().unwrap(),
            target_mac: Some([2, 0, 0, 0, 0, 7]),
        };
        let mut buf = [0u8; 32];
        r.emit(&mut buf);
        assert_eq!(r.len(), 32);
        assert_eq!(Repr::parse(&buf).unwrap(), r);
        assert_eq!(buf[0], 136);
        assert_eq!(buf[4], 0x60);
    }

    #[test]
    fn solicited_node_multicast() {
        let a: Ipv6Addr = "2001:db8::abcd:1234".parse().unwrap();
        assert_eq!(
            solicited_node(&a),
            "ff02::1:ffcd:1234".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(&solicited_node(&a)),
            [0x33, 0x33, 0xff, 0xcd, 0x12, 0x34]
        );
    }
}
