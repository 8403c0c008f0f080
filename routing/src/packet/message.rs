//! BGP messages (RFC 4271 §4): OPEN with capabilities (RFC 5492: MP-BGP, route refresh, 4-octet AS, graceful
//! restart; parsed whether a peer puts them in one optional parameter or one each), UPDATE, NOTIFICATION (with
//! the RFC 8203 shutdown communication), KEEPALIVE and ROUTE-REFRESH (RFC 2918).
//!
//! ```text
//! +--------------------------------------+--------+------+---------
//! |            marker (16 × 0xff)        | length | type | body
//! +--------------------------------------+--------+------+---------
//! ```

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use super::attribute::{
    self, decode_prefixes, encode_prefix, prefix_len_bytes, Attrs, MpReach, MpUnreach, AFI_IPV4,
};
use super::error::{code, subcode, DecodeError, Result, WithdrawReason};

/// Header length.
pub const HEADER_LEN: usize = 19;
/// Largest message (RFC 4271; extended messages are not negotiated).
pub const MAX_LEN: usize = 4096;

/// Message types.
pub mod kind {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH.
    pub const ROUTE_REFRESH: u8 = 5;
}

/// A capability (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Capability {
    /// Multiprotocol extensions (code 1).
    MultiProtocol {
        /// AFI.
        afi: u16,
        /// SAFI.
        safi: u8,
    },
    /// Route refresh (code 2).
    RouteRefresh,
    /// Graceful restart (code 64, RFC 4724).
    GracefulRestart {
        /// R bit: the sender has restarted.
        restarting: bool,
        /// N bit (RFC 8538): the sender also keeps routes over a NOTIFICATION other than Hard Reset.
        notification: bool,
        /// Restart time in seconds (12 bits).
        time: u16,
        /// (AFI, SAFI, forwarding state preserved).
        families: Vec<(u16, u8, bool)>,
    },
    /// 4-octet AS numbers (code 65).
    FourOctetAs(u32),
    /// Anything else, kept as is.
    Unknown {
        /// Capability code.
        code: u8,
        /// Value.
        value: Vec<u8>,
    },
}

impl Capability {
    fn encode(&self, out: &mut Vec<u8>) {
        let (c, v): (u8, Vec<u8>) = match self {
            Capability::MultiProtocol { afi, safi } => (1, vec![(afi >> 8) as u8, *afi as u8, 0, *safi]),
            Capability::RouteRefresh => (2, vec![]),
            Capability::GracefulRestart {
                restarting,
                notification,
                time,
                families,
            } => {
                let first =
                    (u16::from(*restarting) << 15) | (u16::from(*notification) << 14) | (time & 0x0fff);
                let mut v = first.to_be_bytes().to_vec();
                for (afi, safi, fwd) in families {
                    v.extend_from_slice(&afi.to_be_bytes());
                    v.push(*safi);
                    v.push(if *fwd { 0x80 } else { 0 });
                }
                (64, v)
            }
            Capability::FourOctetAs(a) => (65, a.to_be_bytes().to_vec()),
            Capability::Unknown { code, value } => (*code, value.clone()),
        };
        out.push(c);
        out.push(v.len() as u8);
        out.extend_from_slice(&v);
    }

    fn decode(c: u8, v: &[u8]) -> Capability {
        match (c, v.len()) {
            (1, 4) => Capability::MultiProtocol {
                afi: u16::from_be_bytes([v[0], v[1]]),
                safi: v[3],
            },
            (2, 0) => Capability::RouteRefresh,
            (64, n) if n >= 2 && (n - 2) % 4 == 0 => {
                let first = u16::from_be_bytes([v[0], v[1]]);
                let families = v[2..]
                    .chunks(4)
                    .map(|f| (u16::from_be_bytes([f[0], f[1]]), f[2], f[3] & 0x80 != 0))
                    .collect();
                Capability::GracefulRestart {
                    restarting: first & 0x8000 != 0,
                    notification: first & 0x4000 != 0,
                    time: first & 0x0fff,
                    families,
                }
            }
            (65, 4) => Capability::FourOctetAs(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            _ => Capability::Unknown {
                code: c,
                value: v.to_vec(),
            },
        }
    }
}

/// OPEN.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Open {
    /// The sender's AS: from the 4-octet AS capability when present, else the 2-octet field.
    pub asn: u32,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Capabilities.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The 4-octet AS capability's value, if sent.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    /// Whether the sender offers (AFI, SAFI).
    pub fn has_family(&self, afi: u16, safi: u8) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::MultiProtocol { afi: a, safi: s } if *a == afi && *s == safi))
    }
}

/// UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Update {
    /// Withdrawn IPv4 routes.
    pub withdrawn: Vec<Ipv4Net>,
    /// Path attributes (empty for withdraw-only messages).
    pub attrs: Attrs,
    /// IPv4 NLRI.
    pub nlri: Vec<Ipv4Net>,
    /// MP_REACH_NLRI.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI.
    pub mp_unreach: Option<MpUnreach>,
    /// RFC 7606: an attribute was malformed; every route of this UPDATE is to be treated as withdrawn.
    pub treat_as_withdraw: Option<WithdrawReason>,
}

impl Update {
    /// Whether this is the End-of-RIB marker (RFC 4724 §2): an empty UPDATE for IPv4, an MP_UNREACH with no
    /// prefixes for other families.
    pub fn end_of_rib(&self) -> Option<(u16, u8)> {
        let empty = self.withdrawn.is_empty() && self.nlri.is_empty() && self.mp_reach.is_none();
        match &self.mp_unreach {
            None if empty && self.attrs == Attrs::default() => Some((AFI_IPV4, attribute::SAFI_UNICAST)),
            Some(u) if empty && u.withdrawn.is_empty() => Some((u.afi, u.safi)),
            _ => None,
        }
    }
}

/// NOTIFICATION.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data.
    pub data: Vec<u8>,
}

impl Notification {
    /// A Cease / administrative shutdown with an RFC 8203 message (at most 255 bytes of UTF-8).
    pub fn shutdown(msg: &str) -> Notification {
        let mut m = msg.as_bytes().to_vec();
        while m.len() > 255 {
            m.pop();
            while !msg.is_char_boundary(m.len()) {
                m.pop();
            }
        }
        let mut data = vec![m.len() as u8];
        data.extend_from_slice(&m);
        Notification {
            code: code::CEASE,
            subcode: subcode::ADMIN_SHUTDOWN,
            data,
        }
    }

    /// The RFC 8203 shutdown communication, when this is a Cease shutdown or reset that carries one.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code != code::CEASE
            || !(self.subcode == subcode::ADMIN_SHUTDOWN || self.subcode == subcode::ADMIN_RESET)
        {
            return None;
        }
        let n = usize::from(*self.data.first()?);
        let m = self.data.get(1..1 + n)?;
        std::str::from_utf8(m).ok().map(str::to_owned)
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match (self.code, self.subcode) {
            (code::HEADER, _) => "message header error",
            (code::OPEN, subcode::BAD_PEER_AS) => "OPEN: bad peer AS",
            (code::OPEN, subcode::UNACCEPTABLE_HOLD) => "OPEN: unacceptable hold time",
            (code::OPEN, _) => "OPEN message error",
            (code::UPDATE, _) => "UPDATE message error",
            (code::HOLD_TIMER, _) => "hold timer expired",
            (code::FSM, _) => "finite state machine error",
            (code::CEASE, subcode::MAX_PREFIXES) => "cease: maximum prefixes reached",
            (code::CEASE, subcode::ADMIN_SHUTDOWN) => "cease: administrative shutdown",
            (code::CEASE, subcode::PEER_DECONFIGURED) => "cease: peer de-configured",
            (code::CEASE, subcode::ADMIN_RESET) => "cease: administrative reset",
            (code::CEASE, subcode::COLLISION) => "cease: connection collision resolution",
            (code::CEASE, _) => "cease",
            _ => "error",
        };
        write!(f, "{name} ({}/{})", self.code, self.subcode)?;
        if let Some(m) = self.shutdown_message() {
            write!(f, ": {m:?}")?;
        }
        Ok(())
    }
}

/// ROUTE-REFRESH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RouteRefresh {
    /// AFI.
    pub afi: u16,
    /// SAFI.
    pub safi: u8,
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE (boxed: it is much larger than the other messages).
    Update(Box<Update>),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// How to encode or decode for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Codec {
    /// 4-octet AS numbers negotiated.
    pub four_octet_as: bool,
}

/// The length of the message at the front of `buf`, once its header is complete. Errors on a bad marker or
/// length.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16] != [0xff; 16] {
        return Err(DecodeError::new(
            code::HEADER,
            subcode::NOT_SYNCHRONIZED,
            "bad marker",
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(DecodeError {
            code: code::HEADER,
            subcode: subcode::BAD_LENGTH,
            data: buf[16..18].to_vec(),
            reason: format!("length {len}"),
        });
    }
    Ok(Some(len))
}

fn header(out: &mut Vec<u8>, kind: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0, kind]);
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u16;
    out[at + 16..at + 18].copy_from_slice(&len.to_be_bytes());
}

impl Codec {
    /// Decodes one complete message (`buf` is exactly its bytes, header included).
    pub fn decode(&self, buf: &[u8]) -> Result<Message> {
        let len = frame_len(buf)?
            .ok_or_else(|| DecodeError::new(code::HEADER, subcode::BAD_LENGTH, "short header"))?;
        if len != buf.len() {
            return Err(DecodeError::new(
                code::HEADER,
                subcode::BAD_LENGTH,
                "length differs from the frame",
            ));
        }
        let body = &buf[HEADER_LEN..];
        let bad_len = || DecodeError {
            code: code::HEADER,
            subcode: subcode::BAD_LENGTH,
            data: buf[16..18].to_vec(),
            reason: "bad length for the type".into(),
        };
        match buf[18] {
            kind::OPEN => decode_open(body),
            kind::UPDATE => self.decode_update(body).map(|u| Message::Update(Box::new(u))),
            kind::NOTIFICATION => {
                if body.len() < 2 {
                    return Err(bad_len());
                }
                Ok(Message::Notification(Notification {
                    code: body[0],
                    subcode: body[1],
                    data: body[2..].to_vec(),
                }))
            }
            kind::KEEPALIVE if body.is_empty() => Ok(Message::Keepalive),
            kind::KEEPALIVE => Err(bad_len()),
            kind::ROUTE_REFRESH if body.len() == 4 => Ok(Message::RouteRefresh(RouteRefresh {
                afi: u16::from_be_bytes([body[0], body[1]]),
                safi: body[3],
            })),
            kind::ROUTE_REFRESH => Err(bad_len()),
            t => Err(DecodeError {
                code: code::HEADER,
                subcode: subcode::BAD_TYPE,
                data: vec![t],
                reason: format!("message type {t}"),
            }),
        }
    }

    fn decode_update(&self, b: &[u8]) -> Result<Update> {
        let malformed = |r: &str| DecodeError::new(code::UPDATE, subcode::MALFORMED_ATTR_LIST, r.to_owned());
        if b.len() < 4 {
            return Err(malformed("UPDATE too short"));
        }
        let wlen = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let w = b
            .get(2..2 + wlen)
            .ok_or_else(|| malformed("withdrawn routes overrun"))?;
        let alen_at = 2 + wlen;
        let alen = usize::from(u16::from_be_bytes([
            *b.get(alen_at).ok_or_else(|| malformed("no attribute length"))?,
            *b.get(alen_at + 1)
                .ok_or_else(|| malformed("no attribute length"))?,
        ]));
        let attrs = b
            .get(alen_at + 2..alen_at + 2 + alen)
            .ok_or_else(|| malformed("attributes overrun"))?;
        let nlri = &b[alen_at + 2 + alen..];
        let v4 = |x: Vec<IpNet>| {
            x.into_iter()
                .filter_map(|n| if let IpNet::V4(n) = n { Some(n) } else { None })
                .collect::<Vec<_>>()
        };
        let withdrawn = v4(decode_prefixes(w, false).ok_or_else(|| {
            DecodeError::new(
                code::UPDATE,
                subcode::INVALID_NETWORK,
                "malformed withdrawn routes",
            )
        })?);
        let nlri = v4(decode_prefixes(nlri, false)
            .ok_or_else(|| DecodeError::new(code::UPDATE, subcode::INVALID_NETWORK, "malformed NLRI"))?);
        let d = attribute::decode_attrs(attrs, self.four_octet_as)?;
        let mut treat_as_withdraw = d.withdraw;
        // RFC 4271 §6.3 / RFC 7606 §3(d): NLRI without ORIGIN, AS_PATH or NEXT_HOP are treated as withdrawn
        // (AS_PATH may be empty towards iBGP, but never absent).
        if treat_as_withdraw.is_none() && (!nlri.is_empty() || d.mp_reach.is_some()) {
            if d.attrs.origin.is_none() {
                treat_as_withdraw = Some(WithdrawReason::Missing(attribute::kind::ORIGIN));
            } else if !d.as_path_seen {
                treat_as_withdraw = Some(WithdrawReason::Missing(attribute::kind::AS_PATH));
            } else if !nlri.is_empty() && d.attrs.next_hop.is_none() {
                treat_as_withdraw = Some(WithdrawReason::Missing(attribute::kind::NEXT_HOP));
            }
        }
        Ok(Update {
            withdrawn,
            attrs: d.attrs,
            nlri,
            mp_reach: d.mp_reach,
            mp_unreach: d.mp_unreach,
            treat_as_withdraw,
        })
    }

    /// Encodes a message.
    pub fn encode(&self, m: &Message, out: &mut Vec<u8>) {
        match m {
            Message::Open(o) => encode_open(o, out),
            Message::Update(u) => {
                let at = header(out, kind::UPDATE);
                let mut w = Vec::new();
                for p in &u.withdrawn {
                    encode_prefix(&IpNet::V4(*p), &mut w);
                }
                out.extend_from_slice(&(w.len() as u16).to_be_bytes());
                out.extend_from_slice(&w);
                let mut a = Vec::new();
                let has_routes = !u.nlri.is_empty() || u.mp_reach.is_some();
                let attrs = if has_routes {
                    u.attrs.clone()
                } else {
                    Attrs::default()
                };
                attribute::encode_attrs(
                    &attrs,
                    u.mp_reach.as_ref(),
                    u.mp_unreach.as_ref(),
                    self.four_octet_as,
                    &mut a,
                );
                out.extend_from_slice(&(a.len() as u16).to_be_bytes());
                out.extend_from_slice(&a);
                for p in &u.nlri {
                    encode_prefix(&IpNet::V4(*p), out);
                }
                finish(out, at);
            }
            Message::Notification(n) => {
                let at = header(out, kind::NOTIFICATION);
                out.push(n.code);
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
                finish(out, at);
            }
            Message::Keepalive => {
                let at = header(out, kind::KEEPALIVE);
                finish(out, at);
            }
            Message::RouteRefresh(r) => {
                let at = header(out, kind::ROUTE_REFRESH);
                out.extend_from_slice(&r.afi.to_be_bytes());
                out.push(0);
                out.push(r.safi);
                finish(out, at);
            }
        }
    }
}

fn encode_open(o: &Open, out: &mut Vec<u8>) {
    let at = header(out, kind::OPEN);
    out.push(4);
    let as2 = if o.asn > 0xffff {
        attribute::AS_TRANS as u16
    } else {
        o.asn as u16
    };
    out.extend_from_slice(&as2.to_be_bytes());
    out.extend_from_slice(&o.hold_time.to_be_bytes());
    out.extend_from_slice(&o.router_id.octets());
    let mut caps = Vec::new();
    for c in &o.capabilities {
        c.encode(&mut caps);
    }
    // One optional parameter carrying every capability.
    let mut params = Vec::new();
    if !caps.is_empty() {
        params.push(2);
        params.push(caps.len() as u8);
        params.extend_from_slice(&caps);
    }
    out.push(params.len() as u8);
    out.extend_from_slice(&params);
    finish(out, at);
}

fn decode_open(b: &[u8]) -> Result<Message> {
    let bad = |sub: u8, r: &str| DecodeError::new(code::OPEN, sub, r.to_owned());
    if b.len() < 10 {
        return Err(DecodeError::new(
            code::HEADER,
            subcode::BAD_LENGTH,
            "OPEN too short",
        ));
    }
    if b[0] != 4 {
        return Err(DecodeError {
            code: code::OPEN,
            subcode: subcode::UNSUPPORTED_VERSION,
            data: vec![0, 4],
            reason: format!("version {}", b[0]),
        });
    }
    let as2 = u16::from_be_bytes([b[1], b[2]]);
    let hold_time = u16::from_be_bytes([b[3], b[4]]);
    let router_id = Ipv4Addr::new(b[5], b[6], b[7], b[8]);
    let plen = usize::from(b[9]);
    let mut params = b
        .get(10..10 + plen)
        .ok_or_else(|| bad(0, "optional parameters overrun"))?;
    if 10 + plen != b.len() {
        return Err(bad(0, "trailing bytes after the optional parameters"));
    }
    let mut capabilities = Vec::new();
    while !params.is_empty() {
        let (t, l) = (
            params[0],
            usize::from(*params.get(1).ok_or_else(|| bad(0, "parameter cut short"))?),
        );
        let v = params.get(2..2 + l).ok_or_else(|| bad(0, "parameter overruns"))?;
        if t != 2 {
            return Err(bad(
                subcode::UNSUPPORTED_PARAM,
                &format!("optional parameter {t}"),
            ));
        }
        let mut c = v;
        while !c.is_empty() {
            let (code_, cl) = (
                c[0],
                usize::from(*c.get(1).ok_or_else(|| bad(0, "capability cut short"))?),
            );
            let cv = c.get(2..2 + cl).ok_or_else(|| bad(0, "capability overruns"))?;
            capabilities.push(Capability::decode(code_, cv));
            c = &c[2 + cl..];
        }
        params = &params[2 + l..];
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(bad(subcode::UNACCEPTABLE_HOLD, "hold time 1 or 2"));
    }
    if router_id.is_unspecified() {
        return Err(bad(subcode::BAD_BGP_ID, "BGP identifier 0.0.0.0"));
    }
    let mut open = Open {
        asn: u32::from(as2),
        hold_time,
        router_id,
        capabilities,
    };
    if let Some(a4) = open.four_octet_as() {
        open.asn = a4;
    }
    Ok(Message::Open(open))
}

/// Packs IPv4 announcements sharing `attrs` into as few UPDATEs as fit in [`MAX_LEN`].
pub fn pack_v4(attrs: &Attrs, prefixes: &[Ipv4Net], codec: Codec) -> Vec<Update> {
    let mut probe = Vec::new();
    codec.encode(
        &Message::Update(Box::new(Update {
            attrs: attrs.clone(),
            nlri: vec![],
            ..Update::default()
        })),
        &mut probe,
    );
    let room = MAX_LEN - probe.len() - 64;
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0;
    for p in prefixes {
        let n = prefix_len_bytes(&IpNet::V4(*p));
        if used + n > room && !cur.is_empty() {
            out.push(Update {
                attrs: attrs.clone(),
                nlri: std::mem::take(&mut cur),
                ..Update::default()
            });
            used = 0;
        }
        cur.push(*p);
        used += n;
    }
    if !cur.is_empty() {
        out.push(Update {
            attrs: attrs.clone(),
            nlri: cur,
            ..Update::default()
        });
    }
    out
}

/// Packs IPv4 withdrawals into as few UPDATEs as fit.
pub fn pack_v4_withdraw(prefixes: &[Ipv4Net]) -> Vec<Update> {
    prefixes
        .chunks((MAX_LEN - 64) / 5)
        .map(|c| Update {
            withdrawn: c.to_vec(),
            ..Update::default()
        })
        .collect()
}

/// Packs MP_REACH announcements of one family sharing `attrs` and `next_hop`.
pub fn pack_mp(
    attrs: &Attrs,
    afi: u16,
    next_hop: attribute::MpNextHop,
    prefixes: &[IpNet],
    codec: Codec,
) -> Vec<Update> {
    let mut probe = Vec::new();
    let empty = MpReach {
        afi,
        safi: attribute::SAFI_UNICAST,
        next_hop,
        nlri: vec![],
    };
    codec.encode(
        &Message::Update(Box::new(Update {
            attrs: attrs.clone(),
            mp_reach: Some(empty.clone()),
            ..Update::default()
        })),
        &mut probe,
    );
    let room = MAX_LEN - probe.len() - 64;
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0;
    let flush = |cur: &mut Vec<IpNet>, out: &mut Vec<Update>| {
        out.push(Update {
            attrs: attrs.clone(),
            mp_reach: Some(MpReach {
                nlri: std::mem::take(cur),
                ..empty.clone()
            }),
            ..Update::default()
        });
    };
    for p in prefixes {
        let n = prefix_len_bytes(p);
        if used + n > room && !cur.is_empty() {
            flush(&mut cur, &mut out);
            used = 0;
        }
        cur.push(*p);
        used += n;
    }
    if !cur.is_empty() {
        flush(&mut cur, &mut out);
    }
    out
}

/// Packs MP_UNREACH withdrawals of one family.
pub fn pack_mp_withdraw(afi: u16, prefixes: &[IpNet]) -> Vec<Update> {
    prefixes
        .chunks((MAX_LEN - 64) / 17)
        .map(|c| Update {
            mp_unreach: Some(MpUnreach {
                afi,
                safi: attribute::SAFI_UNICAST,
                withdrawn: c.to_vec(),
            }),
            ..Update::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::attribute::{AsPath, MpNextHop, Origin, AFI_IPV6};

    fn round_trip(m: &Message, c: Codec) -> Message {
        let mut b = Vec::new();
        c.encode(m, &mut b);
        assert_eq!(frame_len(&b).unwrap(), Some(b.len()));
        c.decode(&b).unwrap()
    }

    #[test]
    fn keepalive_is_19_bytes() {
        let mut b = Vec::new();
        Codec::default().encode(&Message::Keepalive, &mut b);
        assert_eq!(b.len(), 19);
        assert_eq!(&b[16..], &[0, 19, 4]);
    }

    #[test]
    fn open_round_trips_with_capabilities() {
        let o = Open {
            asn: 4_200_000_001,
            hold_time: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 11),
            capabilities: vec![
                Capability::MultiProtocol { afi: 1, safi: 1 },
                Capability::MultiProtocol { afi: 2, safi: 1 },
                Capability::RouteRefresh,
                Capability::FourOctetAs(4_200_000_001),
                Capability::GracefulRestart {
                    restarting: true,
                    notification: true,
                    time: 120,
                    families: vec![(1, 1, true)],
                },
                Capability::Unknown {
                    code: 73,
                    value: b"lb1".to_vec(),
                },
            ],
        };
        let m = round_trip(&Message::Open(o.clone()), Codec::default());
        assert_eq!(m, Message::Open(o));
    }

    #[test]
    fn capabilities_in_separate_parameters_are_parsed() {
        // Two optional parameters, one capability each (as some implementations send).
        let body = [
            4, 0x5b, 0xa0, 0, 90, 192, 0, 2, 1, 16, 2, 6, 65, 4, 0xfa, 0x56, 0xea, 0x01, 2, 6, 1, 4, 0, 1, 0,
            1,
        ];
        let mut b = vec![0xff; 16];
        b.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        b.push(1);
        b.extend_from_slice(&body);
        let Message::Open(o) = Codec::default().decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(
            o.capabilities,
            vec![
                Capability::FourOctetAs(4_200_000_001),
                Capability::MultiProtocol { afi: 1, safi: 1 }
            ]
        );
        // The 2-octet field says AS_TRANS; the capability gives the real AS.
        assert_eq!(o.asn, 4_200_000_001);
    }

    #[test]
    fn update_round_trips_for_ipv4_and_ipv6() {
        let attrs = Attrs {
            origin: Some(Origin::Igp),
            as_path: AsPath::sequence(vec![65010, 65010]),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 11)),
            med: Some(10),
            communities: vec![(65010 << 16) | 80, 0xFFFF_0000],
            large_communities: vec![(65010, 1, 2)],
            ..Attrs::default()
        };
        let u = Update {
            attrs: attrs.clone(),
            nlri: vec!["203.0.113.10/32".parse().unwrap()],
            ..Update::default()
        };
        for four in [true, false] {
            assert_eq!(
                round_trip(
                    &Message::Update(Box::new(u.clone())),
                    Codec { four_octet_as: four }
                ),
                Message::Update(Box::new(u.clone()))
            );
        }
        let mut a6 = attrs.clone();
        a6.next_hop = None;
        let u6 = Update {
            attrs: a6,
            mp_reach: Some(MpReach {
                afi: AFI_IPV6,
                safi: 1,
                next_hop: MpNextHop::V6 {
                    global: "2001:db8::11".parse().unwrap(),
                    link_local: Some("fe80::1".parse().unwrap()),
                },
                nlri: vec!["2001:db8::1/128".parse().unwrap()],
            }),
            ..Update::default()
        };
        assert_eq!(
            round_trip(
                &Message::Update(Box::new(u6.clone())),
                Codec { four_octet_as: true }
            ),
            Message::Update(Box::new(u6))
        );
    }

    #[test]
    fn end_of_rib_markers_are_recognised() {
        assert_eq!(Update::default().end_of_rib(), Some((1, 1)));
        let u = Update {
            mp_unreach: Some(MpUnreach {
                afi: 2,
                safi: 1,
                withdrawn: vec![],
            }),
            ..Update::default()
        };
        let got = round_trip(&Message::Update(Box::new(u)), Codec::default());
        let Message::Update(u) = got else { panic!() };
        assert_eq!(u.end_of_rib(), Some((2, 1)));
    }

    #[test]
    fn notification_carries_a_shutdown_message() {
        let n = Notification::shutdown("maintenance: lb1 drained");
        let m = round_trip(&Message::Notification(n.clone()), Codec::default());
        let Message::Notification(d) = m else { panic!() };
        assert_eq!(d.shutdown_message().as_deref(), Some("maintenance: lb1 drained"));
        assert_eq!(
            d.to_string(),
            "cease: administrative shutdown (6/2): \"maintenance: lb1 drained\""
        );
    }

    #[test]
    fn route_refresh_round_trips() {
        let r = Message::RouteRefresh(RouteRefresh { afi: 2, safi: 1 });
        assert_eq!(round_trip(&r, Codec::default()), r);
    }

    #[test]
    fn packing_splits_large_announcements() {
        let attrs = Attrs {
            origin: Some(Origin::Igp),
            as_path: AsPath::sequence(vec![65010]),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 11)),
            ..Attrs::default()
        };
        let ps: Vec<Ipv4Net> = (0..10_000u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(0xcb00_0000 + i), 32).unwrap())
            .collect();
        let ups = pack_v4(&attrs, &ps, Codec::default());
        assert!(ups.len() >= 10 && ups.len() <= 15, "{}", ups.len());
        let mut total = 0;
        for u in &ups {
            let mut b = Vec::new();
            Codec::default().encode(&Message::Update(Box::new(u.clone())), &mut b);
            assert!(b.len() <= MAX_LEN);
            total += u.nlri.len();
        }
        assert_eq!(total, 10_000);
        let w = pack_v4_withdraw(&ps);
        assert!(w.iter().all(|u| {
            let mut b = Vec::new();
            Codec::default().encode(&Message::Update(Box::new(u.clone())), &mut b);
            b.len() <= MAX_LEN
        }));
    }

    #[test]
    fn bad_headers_and_bodies_are_notifications_not_panics() {
        assert_eq!(
            frame_len(&[0u8; 19]).unwrap_err().subcode,
            subcode::NOT_SYNCHRONIZED
        );
        let mut b = vec![0xff; 16];
        b.extend_from_slice(&[0, 18, 4]);
        assert_eq!(frame_len(&b).unwrap_err().subcode, subcode::BAD_LENGTH);
        let mut k = vec![0xff; 16];
        k.extend_from_slice(&[0, 20, 4, 0]);
        assert!(Codec::default().decode(&k).is_err());
        let mut t = vec![0xff; 16];
        t.extend_from_slice(&[0, 19, 9]);
        assert_eq!(
            Codec::default().decode(&t).unwrap_err().subcode,
            subcode::BAD_TYPE
        );
    }
}
