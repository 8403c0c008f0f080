//! Path attributes (RFC 4271 §4.3, §5): ORIGIN, AS_PATH / AS4_PATH (RFC 6793), NEXT_HOP, MED, LOCAL_PREF,
//! ATOMIC_AGGREGATE, AGGREGATOR / AS4_AGGREGATOR, COMMUNITIES (RFC 1997), MP_REACH_NLRI / MP_UNREACH_NLRI
//! (RFC 4760), LARGE_COMMUNITY (RFC 8092); unknown optional transitive attributes are kept (and sent on with
//! the partial bit), unknown optional non-transitive ones dropped.
//!
//! ```text
//! +---------------+---------------+-------------------+-----------------
//! | flags (O T P E)|  type code    | length (1 or 2)   | value
//! +---------------+---------------+-------------------+-----------------
//! ```
//!
//! Errors follow RFC 7606: a malformed well-known or known optional attribute, wrong optional/transitive flags
//! on a recognised attribute (§3(c)), and attribute lengths that overrun the section (§4) make the UPDATE
//! "treat-as-withdraw"; a malformed MP_REACH/MP_UNREACH (whose NLRI cannot be found) resets the session, and
//! a malformed AGGREGATOR or ATOMIC_AGGREGATE is discarded (§7.6, §7.7).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::{code, subcode, DecodeError, WithdrawReason};

/// Attribute flag bits.
pub mod flags {
    /// Optional.
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial.
    pub const PARTIAL: u8 = 0x20;
    /// Extended (2-byte) length.
    pub const EXTENDED: u8 = 0x10;
}

/// Attribute type codes.
pub mod kind {
    /// ORIGIN.
    pub const ORIGIN: u8 = 1;
    /// AS_PATH.
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP.
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC.
    pub const MED: u8 = 4;
    /// LOCAL_PREF.
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR.
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES.
    pub const COMMUNITIES: u8 = 8;
    /// MP_REACH_NLRI.
    pub const MP_REACH: u8 = 14;
    /// MP_UNREACH_NLRI.
    pub const MP_UNREACH: u8 = 15;
    /// AS4_PATH.
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR.
    pub const AS4_AGGREGATOR: u8 = 18;
    /// LARGE_COMMUNITY.
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// The 2-octet stand-in for 4-octet ASNs (RFC 6793).
pub const AS_TRANS: u32 = 23456;

/// Address family identifiers.
pub const AFI_IPV4: u16 = 1;
/// IPv6 AFI.
pub const AFI_IPV6: u16 = 2;
/// Unicast SAFI.
pub const SAFI_UNICAST: u8 = 1;

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// IGP.
    Igp = 0,
    /// EGP.
    Egp = 1,
    /// Incomplete.
    Incomplete = 2,
}

/// An AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Segment {
    /// AS_SET (1).
    Set(Vec<u32>),
    /// AS_SEQUENCE (2).
    Sequence(Vec<u32>),
}

/// An AS path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct AsPath(pub Vec<Segment>);

impl AsPath {
    /// A path of one sequence.
    pub fn sequence(asns: Vec<u32>) -> AsPath {
        if asns.is_empty() {
            AsPath(Vec::new())
        } else {
            AsPath(vec![Segment::Sequence(asns)])
        }
    }

    /// Path length for best-path selection (an AS_SET counts one).
    pub fn len(&self) -> usize {
        self.0
            .iter()
            .map(|s| match s {
                Segment::Set(_) => 1,
                Segment::Sequence(v) => v.len(),
            })
            .sum()
    }

    /// Whether the path is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first AS (the neighbour's, for eBGP).
    pub fn first(&self) -> Option<u32> {
        match self.0.first()? {
            Segment::Sequence(v) => v.first().copied(),
            Segment::Set(_) => None,
        }
    }

    /// Whether `asn` appears anywhere (loop detection).
    pub fn contains(&self, asn: u32) -> bool {
        self.0.iter().any(|s| match s {
            Segment::Set(v) | Segment::Sequence(v) => v.contains(&asn),
        })
    }

    /// Whether every ASN fits in 2 octets.
    fn fits_2_octets(&self) -> bool {
        self.0.iter().all(|s| match s {
            Segment::Set(v) | Segment::Sequence(v) => v.iter().all(|&a| a <= 0xffff),
        })
    }

    fn encode(&self, four: bool, out: &mut Vec<u8>) {
        for seg in &self.0 {
            let (t, v) = match seg {
                Segment::Set(v) => (1u8, v),
                Segment::Sequence(v) => (2u8, v),
            };
            // Segments hold at most 255 ASNs.
            for chunk in v.chunks(255) {
                out.push(t);
                out.push(chunk.len() as u8);
                for &a in chunk {
                    if four {
                        out.extend_from_slice(&a.to_be_bytes());
                    } else {
                        let a2 = if a > 0xffff { AS_TRANS as u16 } else { a as u16 };
                        out.extend_from_slice(&a2.to_be_bytes());
                    }
                }
            }
        }
    }

    fn decode(mut b: &[u8], four: bool) -> Option<AsPath> {
        let w = if four { 4 } else { 2 };
        let mut segs = Vec::new();
        while !b.is_empty() {
            let (t, n) = (*b.first()?, usize::from(*b.get(1)?));
            if n == 0 {
                return None;
            }
            let body = b.get(2..2 + n * w)?;
            let asns = body
                .chunks(w)
                .map(|c| {
                    if four {
                        u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                    } else {
                        u32::from(u16::from_be_bytes([c[0], c[1]]))
                    }
                })
                .collect();
            segs.push(match t {
                1 => Segment::Set(asns),
                2 => Segment::Sequence(asns),
                _ => return None,
            });
            b = &b[2 + n * w..];
        }
        Some(AsPath(segs))
    }

    /// Merges a 2-octet AS_PATH with an AS4_PATH (RFC 6793 §4.2.3): the AS4_PATH replaces the last ASNs.
    fn merge_as4(&self, as4: &AsPath) -> AsPath {
        let (n2, n4) = (self.len(), as4.len());
        if n4 > n2 {
            return self.clone();
        }
        let mut keep = n2 - n4;
        let mut out = Vec::new();
        for s in &self.0 {
            if keep == 0 {
                break;
            }
            match s {
                Segment::Set(v) => {
                    out.push(Segment::Set(v.clone()));
                    keep -= 1;
                }
                Segment::Sequence(v) => {
                    let take = keep.min(v.len());
                    out.push(Segment::Sequence(v[..take].to_vec()));
                    keep -= take;
                }
            }
        }
        out.extend(as4.0.iter().cloned());
        AsPath(out)
    }
}

/// An attribute this speaker does not interpret, carried on when optional transitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RawAttr {
    /// Flags as received.
    pub flags: u8,
    /// Type code.
    pub kind: u8,
    /// Value.
    pub value: Vec<u8>,
}

/// Next hop of MP_REACH_NLRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum MpNextHop {
    /// An IPv4 next hop.
    V4(Ipv4Addr),
    /// An IPv6 global next hop with an optional link-local one (RFC 2545).
    V6 {
        /// Global address.
        global: Ipv6Addr,
        /// Link-local address.
        link_local: Option<Ipv6Addr>,
    },
}

impl MpNextHop {
    /// The address used for forwarding (the global one).
    pub fn addr(&self) -> IpAddr {
        match *self {
            MpNextHop::V4(a) => IpAddr::V4(a),
            MpNextHop::V6 { global, .. } => IpAddr::V6(global),
        }
    }
}

/// MP_REACH_NLRI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MpReach {
    /// AFI.
    pub afi: u16,
    /// SAFI.
    pub safi: u8,
    /// Next hop.
    pub next_hop: MpNextHop,
    /// Reachable prefixes.
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MpUnreach {
    /// AFI.
    pub afi: u16,
    /// SAFI.
    pub safi: u8,
    /// Withdrawn prefixes.
    pub withdrawn: Vec<IpNet>,
}

/// The attributes of an UPDATE (MP_REACH/MP_UNREACH are kept apart, on the UPDATE).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Attrs {
    /// ORIGIN.
    pub origin: Option<Origin>,
    /// AS_PATH, with AS4_PATH already merged for 2-octet sessions.
    pub as_path: AsPath,
    /// NEXT_HOP (IPv4 NLRI).
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR (AS, address).
    pub aggregator: Option<(u32, Ipv4Addr)>,
    /// COMMUNITIES.
    pub communities: Vec<u32>,
    /// LARGE_COMMUNITY.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// Unknown optional transitive attributes.
    pub unknown: Vec<RawAttr>,
}

/// What decoding the attributes found.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub attrs: Attrs,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// RFC 7606 treat-as-withdraw: an attribute was malformed; the reason.
    pub withdraw: Option<WithdrawReason>,
    /// Whether an AS_PATH attribute was present (it may be empty).
    pub as_path_seen: bool,
    /// Whether any attribute was present at all.
    pub any: bool,
}

fn u32_at(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

/// Decodes a list of prefixes (NLRI encoding: length in bits, then the significant bytes).
pub fn decode_prefixes(mut b: &[u8], v6: bool) -> Option<Vec<IpNet>> {
    let max = if v6 { 128 } else { 32 };
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = *b.first()?;
        if len > max {
            return None;
        }
        let n = usize::from(len).div_ceil(8);
        let bytes = b.get(1..1 + n)?;
        let net = if v6 {
            let mut a = [0u8; 16];
            a[..n].copy_from_slice(bytes);
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).ok()?.trunc())
        } else {
            let mut a = [0u8; 4];
            a[..n].copy_from_slice(bytes);
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).ok()?.trunc())
        };
        out.push(net);
        b = &b[1 + n..];
    }
    Some(out)
}

/// Encodes one prefix.
pub fn encode_prefix(p: &IpNet, out: &mut Vec<u8>) {
    let len = p.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match p {
        IpNet::V4(n4) => out.extend_from_slice(&n4.network().octets()[..n]),
        IpNet::V6(n6) => out.extend_from_slice(&n6.network().octets()[..n]),
    }
}

/// Encoded size of one prefix.
pub fn prefix_len_bytes(p: &IpNet) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

/// Decodes the attribute section. `four` says whether the session negotiated 4-octet ASNs.
pub(crate) fn decode_attrs(mut b: &[u8], four: bool) -> Result<Decoded, DecodeError> {
    let mut d = Decoded::default();
    let mut seen = [false; 256];
    let mut as4_path: Option<AsPath> = None;
    let mut as4_aggr: Option<(u32, Ipv4Addr)> = None;
    let malformed = |r: &str| DecodeError::new(code::UPDATE, subcode::MALFORMED_ATTR_LIST, r.to_owned());
    while !b.is_empty() {
        d.any = true;
        // RFC 7606 §4: fewer octets left than an attribute header, or a length overrunning the section: the
        // Total Path Attribute Length still locates the NLRI, so the UPDATE is treated as withdraw.
        let hdr = if b[0] & flags::EXTENDED != 0 { 4 } else { 3 };
        let len = match b.get(..hdr) {
            Some([_, _, l]) => usize::from(*l),
            Some([_, _, h, l]) => usize::from(u16::from_be_bytes([*h, *l])),
            _ => {
                d.withdraw.get_or_insert(WithdrawReason::Overrun);
                break;
            }
        };
        let (fl, kind) = (b[0], b[1]);
        let Some(v) = b.get(hdr..hdr + len) else {
            d.withdraw.get_or_insert(WithdrawReason::Overrun);
            break;
        };
        b = &b[hdr + len..];
        if seen[usize::from(kind)] {
            // RFC 7606 §3(g): repeated attributes other than MP_* are discarded; repeated MP_* reset the session.
            if kind == kind::MP_REACH || kind == kind::MP_UNREACH {
                return Err(malformed("MP_REACH_NLRI or MP_UNREACH_NLRI repeated"));
            }
            continue;
        }
        seen[usize::from(kind)] = true;
        if expected_flags(kind).is_some_and(|want| fl & (flags::OPTIONAL | flags::TRANSITIVE) != want) {
            // RFC 7606 §3(c); AGGREGATOR and ATOMIC_AGGREGATE with wrong flags are discarded (§7.6, §7.7),
            // MP_* are still read so that their NLRI are withdrawn.
            match kind {
                kind::AGGREGATOR | kind::ATOMIC_AGGREGATE | kind::AS4_AGGREGATOR => continue,
                _ => {
                    d.withdraw.get_or_insert(WithdrawReason::Flags(kind));
                }
            }
        }
        let mut bad = || {
            d.withdraw.get_or_insert(WithdrawReason::Malformed(kind));
        };
        match kind {
            kind::ORIGIN => match v {
                [0] => d.attrs.origin = Some(Origin::Igp),
                [1] => d.attrs.origin = Some(Origin::Egp),
                [2] => d.attrs.origin = Some(Origin::Incomplete),
                _ => bad(),
            },
            kind::AS_PATH => match AsPath::decode(v, four) {
                Some(p) => {
                    d.attrs.as_path = p;
                    d.as_path_seen = true;
                }
                None => bad(),
            },
            kind::AS4_PATH => as4_path = AsPath::decode(v, true),
            kind::NEXT_HOP => match v {
                [a, b2, c, e] => d.attrs.next_hop = Some(Ipv4Addr::new(*a, *b2, *c, *e)),
                _ => bad(),
            },
            kind::MED => match u32_at(v).filter(|_| v.len() == 4) {
                Some(x) => d.attrs.med = Some(x),
                None => bad(),
            },
            kind::LOCAL_PREF => match u32_at(v).filter(|_| v.len() == 4) {
                Some(x) => d.attrs.local_pref = Some(x),
                None => bad(),
            },
            // RFC 7606 §7.6: a malformed ATOMIC_AGGREGATE or AGGREGATOR is discarded.
            kind::ATOMIC_AGGREGATE => d.attrs.atomic_aggregate = v.is_empty(),
            kind::AGGREGATOR => {
                let w = if four { 4 } else { 2 };
                if v.len() == w + 4 {
                    let asn = if four {
                        u32_at(v).unwrap_or(0)
                    } else {
                        u32::from(u16::from_be_bytes([v[0], v[1]]))
                    };
                    d.attrs.aggregator = Some((asn, Ipv4Addr::new(v[w], v[w + 1], v[w + 2], v[w + 3])));
                }
            }
            kind::AS4_AGGREGATOR => {
                if v.len() == 8 {
                    as4_aggr = Some((u32_at(v).unwrap_or(0), Ipv4Addr::new(v[4], v[5], v[6], v[7])));
                }
            }
            kind::COMMUNITIES => {
                if v.len() % 4 != 0 {
                    bad();
                } else {
                    d.attrs.communities = v
                        .chunks(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                }
            }
            kind::LARGE_COMMUNITY => {
                if v.len() % 12 != 0 {
                    bad();
                } else {
                    d.attrs.large_communities = v
                        .chunks(12)
                        .map(|c| {
                            (
                                u32_at(c).unwrap_or(0),
                                u32_at(&c[4..]).unwrap_or(0),
                                u32_at(&c[8..]).unwrap_or(0),
                            )
                        })
                        .collect();
                }
            }
            kind::MP_REACH => d.mp_reach = Some(decode_mp_reach(v)?),
            kind::MP_UNREACH => d.mp_unreach = Some(decode_mp_unreach(v)?),
            _ => {
                if fl & flags::OPTIONAL == 0 {
                    // An unrecognised well-known attribute (RFC 4271 §6.3).
                    return Err(DecodeError {
                        code: code::UPDATE,
                        subcode: 2,
                        data: vec![fl, kind],
                        reason: format!("unrecognised well-known attribute {kind}"),
                    });
                }
                if fl & flags::TRANSITIVE != 0 {
                    d.attrs.unknown.push(RawAttr {
                        flags: fl | flags::PARTIAL,
                        kind,
                        value: v.to_vec(),
                    });
                }
            }
        }
    }
    if !four {
        if let Some(p4) = as4_path {
            d.attrs.as_path = d.attrs.as_path.merge_as4(&p4);
        }
        if let (Some((AS_TRANS, _)), Some(a4)) = (d.attrs.aggregator, as4_aggr) {
            d.attrs.aggregator = Some(a4);
        }
    }
    Ok(d)
}

/// The optional and transitive bits a recognised attribute must carry (RFC 4271 §5, RFC 4760, RFC 6793,
/// RFC 1997, RFC 8092); `None` for attributes this decoder does not know.
fn expected_flags(kind: u8) -> Option<u8> {
    const WELL_KNOWN: u8 = flags::TRANSITIVE;
    const OPT_TRANS: u8 = flags::OPTIONAL | flags::TRANSITIVE;
    match kind {
        kind::ORIGIN | kind::AS_PATH | kind::NEXT_HOP | kind::LOCAL_PREF | kind::ATOMIC_AGGREGATE => {
            Some(WELL_KNOWN)
        }
        kind::MED | kind::MP_REACH | kind::MP_UNREACH => Some(flags::OPTIONAL),
        kind::AGGREGATOR
        | kind::COMMUNITIES
        | kind::AS4_PATH
        | kind::AS4_AGGREGATOR
        | kind::LARGE_COMMUNITY => Some(OPT_TRANS),
        _ => None,
    }
}

fn decode_mp_reach(v: &[u8]) -> Result<MpReach, DecodeError> {
    let bad = |r: &str| {
        DecodeError::new(
            code::UPDATE,
            subcode::OPTIONAL_ATTR,
            format!("MP_REACH_NLRI: {r}"),
        )
    };
    if v.len() < 5 {
        return Err(bad("too short"));
    }
    let afi = u16::from_be_bytes([v[0], v[1]]);
    let safi = v[2];
    let nh_len = usize::from(v[3]);
    let nh = v.get(4..4 + nh_len).ok_or_else(|| bad("next hop overruns"))?;
    let rest = v.get(4 + nh_len + 1..).ok_or_else(|| bad("no reserved octet"))?;
    let next_hop = match nh.len() {
        4 => MpNextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        16 | 32 => {
            let mut g = [0u8; 16];
            g.copy_from_slice(&nh[..16]);
            let ll = (nh.len() == 32).then(|| {
                let mut l = [0u8; 16];
                l.copy_from_slice(&nh[16..32]);
                Ipv6Addr::from(l)
            });
            MpNextHop::V6 {
                global: Ipv6Addr::from(g),
                link_local: ll,
            }
        }
        n => return Err(bad(&format!("next hop of {n} bytes"))),
    };
    let nlri = match afi {
        AFI_IPV4 | AFI_IPV6 => decode_prefixes(rest, afi == AFI_IPV6).ok_or_else(|| bad("malformed NLRI"))?,
        _ => Vec::new(),
    };
    Ok(MpReach {
        afi,
        safi,
        next_hop,
        nlri,
    })
}

fn decode_mp_unreach(v: &[u8]) -> Result<MpUnreach, DecodeError> {
    let bad = |r: &str| {
        DecodeError::new(
            code::UPDATE,
            subcode::OPTIONAL_ATTR,
            format!("MP_UNREACH_NLRI: {r}"),
        )
    };
    if v.len() < 3 {
        return Err(bad("too short"));
    }
    let afi = u16::from_be_bytes([v[0], v[1]]);
    let withdrawn = match afi {
        AFI_IPV4 | AFI_IPV6 => {
            decode_prefixes(&v[3..], afi == AFI_IPV6).ok_or_else(|| bad("malformed withdrawn routes"))?
        }
        _ => Vec::new(),
    };
    Ok(MpUnreach {
        afi,
        safi: v[2],
        withdrawn,
    })
}

fn push_attr(out: &mut Vec<u8>, fl: u8, kind: u8, value: &[u8]) {
    if value.len() > 255 {
        out.push(fl | flags::EXTENDED);
        out.push(kind);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.push(fl & !flags::EXTENDED);
        out.push(kind);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
}

/// Encodes attributes (and MP_REACH/MP_UNREACH when given) for a peer; `four` = 4-octet ASNs negotiated.
pub(crate) fn encode_attrs(
    a: &Attrs,
    mp_reach: Option<&MpReach>,
    mp_unreach: Option<&MpUnreach>,
    four: bool,
    out: &mut Vec<u8>,
) {
    if let Some(u) = mp_unreach {
        let mut v = Vec::new();
        v.extend_from_slice(&u.afi.to_be_bytes());
        v.push(u.safi);
        for p in &u.withdrawn {
            encode_prefix(p, &mut v);
        }
        push_attr(out, flags::OPTIONAL, kind::MP_UNREACH, &v);
    }
    if mp_reach.is_none() && a.origin.is_none() {
        return;
    }
    if let Some(o) = a.origin {
        push_attr(out, flags::TRANSITIVE, kind::ORIGIN, &[o as u8]);
    }
    let mut p = Vec::new();
    a.as_path.encode(four, &mut p);
    push_attr(out, flags::TRANSITIVE, kind::AS_PATH, &p);
    if let Some(nh) = a.next_hop {
        push_attr(out, flags::TRANSITIVE, kind::NEXT_HOP, &nh.octets());
    }
    if let Some(m) = a.med {
        push_attr(out, flags::OPTIONAL, kind::MED, &m.to_be_bytes());
    }
    if let Some(l) = a.local_pref {
        push_attr(out, flags::TRANSITIVE, kind::LOCAL_PREF, &l.to_be_bytes());
    }
    if a.atomic_aggregate {
        push_attr(out, flags::TRANSITIVE, kind::ATOMIC_AGGREGATE, &[]);
    }
    if let Some((asn, ip)) = a.aggregator {
        let mut v = Vec::new();
        if four {
            v.extend_from_slice(&asn.to_be_bytes());
        } else {
            let a2 = if asn > 0xffff { AS_TRANS as u16 } else { asn as u16 };
            v.extend_from_slice(&a2.to_be_bytes());
        }
        v.extend_from_slice(&ip.octets());
        push_attr(out, flags::OPTIONAL | flags::TRANSITIVE, kind::AGGREGATOR, &v);
        if !four && asn > 0xffff {
            let mut v4 = asn.to_be_bytes().to_vec();
            v4.extend_from_slice(&ip.octets());
            push_attr(
                out,
                flags::OPTIONAL | flags::TRANSITIVE,
                kind::AS4_AGGREGATOR,
                &v4,
            );
        }
    }
    if !a.communities.is_empty() {
        let v: Vec<u8> = a.communities.iter().flat_map(|c| c.to_be_bytes()).collect();
        push_attr(out, flags::OPTIONAL | flags::TRANSITIVE, kind::COMMUNITIES, &v);
    }
    if let Some(r) = mp_reach {
        let mut v = Vec::new();
        v.extend_from_slice(&r.afi.to_be_bytes());
        v.push(r.safi);
        match r.next_hop {
            MpNextHop::V4(a4) => {
                v.push(4);
                v.extend_from_slice(&a4.octets());
            }
            MpNextHop::V6 { global, link_local } => {
                v.push(if link_local.is_some() { 32 } else { 16 });
                v.extend_from_slice(&global.octets());
                if let Some(l) = link_local {
                    v.extend_from_slice(&l.octets());
                }
            }
        }
        v.push(0);
        for p in &r.nlri {
            encode_prefix(p, &mut v);
        }
        push_attr(out, flags::OPTIONAL, kind::MP_REACH, &v);
    }
    if !four && !a.as_path.fits_2_octets() {
        let mut v = Vec::new();
        a.as_path.encode(true, &mut v);
        push_attr(out, flags::OPTIONAL | flags::TRANSITIVE, kind::AS4_PATH, &v);
    }
    if !a.large_communities.is_empty() {
        let v: Vec<u8> = a
            .large_communities
            .iter()
            .flat_map(|(g, l1, l2)| [g.to_be_bytes(), l1.to_be_bytes(), l2.to_be_bytes()].concat())
            .collect();
        push_attr(
            out,
            flags::OPTIONAL | flags::TRANSITIVE,
            kind::LARGE_COMMUNITY,
            &v,
        );
    }
    for u in &a.unknown {
        push_attr(out, u.flags, u.kind, &u.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip() {
        let ps: Vec<IpNet> = ["203.0.113.10/32", "198.51.100.0/24", "0.0.0.0/0", "10.0.0.0/7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut b = Vec::new();
        for p in &ps {
            encode_prefix(p, &mut b);
        }
        assert_eq!(b[..5], [32, 203, 0, 113, 10]);
        assert_eq!(decode_prefixes(&b, false).unwrap(), ps);
        assert!(decode_prefixes(&[33, 1, 2, 3, 4, 5], false).is_none());
        assert!(decode_prefixes(&[24, 1, 2], false).is_none());
    }

    #[test]
    fn as4_path_is_sent_to_2_octet_peers_and_merged_back() {
        let a = Attrs {
            origin: Some(Origin::Igp),
            as_path: AsPath::sequence(vec![4_200_000_001, 65010]),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..Attrs::default()
        };
        let mut b = Vec::new();
        encode_attrs(&a, None, None, false, &mut b);
        let d = decode_attrs(&b, false).unwrap();
        assert_eq!(d.attrs.as_path, a.as_path);
        // The 2-octet AS_PATH itself carries AS_TRANS.
        let two = AsPath::decode(&[2, 2, 0x5b, 0xa0, 0xfd, 0xf2], false).unwrap();
        assert_eq!(two, AsPath::sequence(vec![AS_TRANS, 65010]));
    }

    #[test]
    fn malformed_known_attributes_treat_as_withdraw() {
        // ORIGIN with value 7.
        let b = [0x40, 1, 1, 7];
        let d = decode_attrs(&b, true).unwrap();
        assert_eq!(d.withdraw, Some(WithdrawReason::Malformed(kind::ORIGIN)));
        assert_eq!(
            d.withdraw.map(|w| w.to_string()).as_deref(),
            Some("malformed ORIGIN")
        );
        // An unknown optional transitive attribute is kept with the partial bit.
        let d = decode_attrs(&[0xc0, 99, 2, 0xab, 0xcd], true).unwrap();
        assert_eq!(
            d.attrs.unknown,
            vec![RawAttr {
                flags: 0xe0,
                kind: 99,
                value: vec![0xab, 0xcd]
            }]
        );
        // Unknown optional non-transitive is dropped.
        assert!(decode_attrs(&[0x80, 98, 1, 0], true)
            .unwrap()
            .attrs
            .unknown
            .is_empty());
    }

    #[test]
    fn wrong_flags_on_recognised_attributes_treat_as_withdraw() {
        // ORIGIN 0xC0 (optional), NEXT_HOP 0xC0, MED 0x40 (well-known): RFC 7606 §3(c).
        for (b, kind) in [
            (vec![0xc0, 1, 1, 0], kind::ORIGIN),
            (vec![0xc0, 3, 4, 192, 0, 2, 1], kind::NEXT_HOP),
            (vec![0x40, 4, 4, 0, 0, 0, 5], kind::MED),
        ] {
            let d = decode_attrs(&b, true).unwrap();
            assert_eq!(d.withdraw, Some(WithdrawReason::Flags(kind)), "{b:?}");
        }
        // The right flags pass; the extended-length and partial bits do not matter.
        let d = decode_attrs(&[0x50, 1, 0, 1, 0, 0x80, 4, 4, 0, 0, 0, 5], true).unwrap();
        assert_eq!(d.withdraw, None);
        assert_eq!(d.attrs.med, Some(5));
        // An AGGREGATOR with wrong flags is discarded, not withdrawn (§7.7).
        let d = decode_attrs(&[0x40, 7, 8, 0, 0, 0xfd, 0xe8, 192, 0, 2, 1], true).unwrap();
        assert_eq!((d.withdraw, d.attrs.aggregator), (None, None));
    }

    #[test]
    fn lengths_overrunning_the_section_treat_as_withdraw() {
        // RFC 7606 §4: a length past the end, and fewer than three octets left for a header.
        let over = decode_attrs(&[0x40, 1, 5, 0], true).unwrap();
        assert_eq!(over.withdraw, Some(WithdrawReason::Overrun));
        let short = decode_attrs(&[0x40, 1, 1, 0, 0x40], true).unwrap();
        assert_eq!(short.withdraw, Some(WithdrawReason::Overrun));
        assert_eq!(short.attrs.origin, Some(Origin::Igp));
        let ext = decode_attrs(&[0x50, 1, 0], true).unwrap();
        assert_eq!(ext.withdraw, Some(WithdrawReason::Overrun));
    }
}
