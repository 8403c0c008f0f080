//! Differential test against an independent BGP implementation, netgauze-bgp-pkt: what our encoder writes,
//! netgauze reads as the same message; what netgauze writes back, our decoder reads as the same message; and
//! the bytes captured from FRR and BIRD mean the same thing to both decoders.
//!
//! Both sides are reduced to one neutral form ([`Norm`]) so the comparison does not depend on either
//! library's types: OPEN (AS, hold time, identifier, capabilities), UPDATE (withdrawn and announced IPv4
//! prefixes, every attribute we model, MP_REACH / MP_UNREACH with next hops, unknown attributes with their
//! flags), KEEPALIVE, ROUTE-REFRESH. NOTIFICATIONs are compared by netgauze writing back the exact bytes.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anylb_routing::packet::attribute::RawAttr;
use anylb_routing::packet::{
    AsPath, Attrs, Capability, Codec, Message, MpNextHop, MpReach, MpUnreach, Notification, Open, Origin,
    RouteRefresh, Segment, Update,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::path_attribute::PathAttributeValue as V;
use netgauze_bgp_pkt::path_attribute::{
    Aggregator, AsPath as NgAsPath, MpReach as NgReach, MpUnreach as NgUnreach,
};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;
use proptest::prelude::*;

/// A capability in neutral form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Cap {
    Mp(u16, u8),
    RouteRefresh,
    Gr(bool, u16, Vec<(u16, u8, bool)>),
    As4(u32),
    Other(u8, Vec<u8>),
}

/// An UPDATE in neutral form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct U {
    withdrawn: Vec<IpNet>,
    nlri: Vec<IpNet>,
    origin: Option<u8>,
    as_path: Vec<(u8, Vec<u32>)>,
    next_hop: Option<Ipv4Addr>,
    med: Option<u32>,
    local_pref: Option<u32>,
    atomic: bool,
    aggregator: Option<(u32, Ipv4Addr)>,
    communities: Vec<u32>,
    large: Vec<(u32, u32, u32)>,
    reach: Option<(u16, u8, Vec<IpAddr>, Vec<IpNet>)>,
    unreach: Option<(u16, u8, Vec<IpNet>)>,
    /// (type, optional/transitive/partial flags, value)
    unknown: Vec<(u8, u8, Vec<u8>)>,
}

/// A message in neutral form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Norm {
    Open {
        asn: u32,
        hold: u16,
        id: Ipv4Addr,
        caps: Vec<Cap>,
    },
    Update(Box<U>),
    Keepalive,
    Refresh(u16, u8),
}

fn ours(m: &Message) -> Norm {
    match m {
        Message::Open(o) => {
            let mut caps: Vec<Cap> = o
                .capabilities
                .iter()
                .map(|c| match c {
                    Capability::MultiProtocol { afi, safi } => Cap::Mp(*afi, *safi),
                    Capability::RouteRefresh => Cap::RouteRefresh,
                    Capability::GracefulRestart {
                        restarting,
                        time,
                        families,
                        ..
                    } => Cap::Gr(*restarting, *time, families.clone()),
                    Capability::FourOctetAs(a) => Cap::As4(*a),
                    Capability::Unknown { code, value } => Cap::Other(*code, value.clone()),
                })
                .collect();
            caps.sort();
            Norm::Open {
                asn: o.asn,
                hold: o.hold_time,
                id: o.router_id,
                caps,
            }
        }
        Message::Update(u) => {
            let a = &u.attrs;
            let reach = u.mp_reach.as_ref().map(|r| {
                let nh = match r.next_hop {
                    MpNextHop::V4(v) => vec![IpAddr::V4(v)],
                    MpNextHop::V6 { global, link_local } => std::iter::once(IpAddr::V6(global))
                        .chain(link_local.map(IpAddr::V6))
                        .collect(),
                };
                (r.afi, r.safi, nh, r.nlri.clone())
            });
            let mut unknown: Vec<_> = a
                .unknown
                .iter()
                .map(|r| (r.kind, r.flags & 0xe0, r.value.clone()))
                .collect();
            unknown.sort();
            Norm::Update(Box::new(U {
                withdrawn: u.withdrawn.iter().map(|p| IpNet::V4(*p)).collect(),
                nlri: u.nlri.iter().map(|p| IpNet::V4(*p)).collect(),
                origin: a.origin.map(|o| o as u8),
                as_path: a
                    .as_path
                    .0
                    .iter()
                    .map(|s| match s {
                        Segment::Set(v) => (1, v.clone()),
                        Segment::Sequence(v) => (2, v.clone()),
                    })
                    .collect(),
                next_hop: a.next_hop,
                med: a.med,
                local_pref: a.local_pref,
                atomic: a.atomic_aggregate,
                aggregator: a.aggregator,
                communities: a.communities.clone(),
                large: a.large_communities.clone(),
                reach,
                unreach: u
                    .mp_unreach
                    .as_ref()
                    .map(|r| (r.afi, r.safi, r.withdrawn.clone())),
                unknown,
            }))
        }
        Message::Keepalive => Norm::Keepalive,
        Message::RouteRefresh(r) => Norm::Refresh(r.afi, r.safi),
        Message::Notification(_) => unreachable!("notifications are compared as bytes"),
    }
}

fn theirs(m: &BgpMessage) -> Norm {
    match m {
        BgpMessage::Open(o) => {
            let mut caps: Vec<Cap> = o
                .capabilities()
                .into_iter()
                .map(|c| match c {
                    BgpCapability::MultiProtocolExtensions(mp) => {
                        let t = mp.address_type();
                        Cap::Mp(
                            u16::from(t.address_family()),
                            u8::from(t.subsequent_address_family()),
                        )
                    }
                    BgpCapability::RouteRefresh => Cap::RouteRefresh,
                    BgpCapability::GracefulRestartCapability(g) => Cap::Gr(
                        g.restart(),
                        g.time(),
                        g.address_families()
                            .iter()
                            .map(|f| {
                                let t = f.address_type();
                                (
                                    u16::from(t.address_family()),
                                    u8::from(t.subsequent_address_family()),
                                    f.forwarding_state(),
                                )
                            })
                            .collect(),
                    ),
                    BgpCapability::FourOctetAs(a) => Cap::As4(a.asn4()),
                    // Capabilities we do not model (route refresh's Cisco and enhanced variants, FQDN,
                    // add-path…) are unknown to us: compare them as netgauze writes them back, code and value.
                    other => {
                        let mut b = Vec::new();
                        other.write(&mut b).unwrap();
                        Cap::Other(b[0], b[2..].to_vec())
                    }
                })
                .collect();
            caps.sort();
            Norm::Open {
                asn: o.my_asn4(),
                hold: o.hold_time(),
                id: o.bgp_id(),
                caps,
            }
        }
        BgpMessage::Update(u) => {
            let mut n = U {
                withdrawn: u
                    .withdraw_routes()
                    .iter()
                    .map(|p| IpNet::V4(p.network().address()))
                    .collect(),
                nlri: u
                    .nlri()
                    .iter()
                    .map(|p| IpNet::V4(p.network().address()))
                    .collect(),
                ..U::default()
            };
            for pa in u.path_attributes() {
                match pa.value() {
                    V::Origin(o) => n.origin = Some(u8::from(*o)),
                    V::AsPath(NgAsPath::As4PathSegments(segs)) => {
                        n.as_path = segs
                            .iter()
                            .map(|s| (u8::from(s.segment_type()), s.as_numbers().to_vec()))
                            .collect()
                    }
                    V::AsPath(NgAsPath::As2PathSegments(_)) => panic!("2-octet AS_PATH on a 4-octet session"),
                    V::NextHop(h) => n.next_hop = Some(h.next_hop()),
                    V::MultiExitDiscriminator(m) => n.med = Some(m.metric()),
                    V::LocalPreference(l) => n.local_pref = Some(l.metric()),
                    V::AtomicAggregate(_) => n.atomic = true,
                    V::Aggregator(Aggregator::As4Aggregator(a)) => {
                        n.aggregator = Some((*a.asn(), a.origin()))
                    }
                    V::Aggregator(Aggregator::As2Aggregator(a)) => {
                        n.aggregator = Some((u32::from(*a.asn()), a.origin()))
                    }
                    V::Communities(c) => n.communities = c.communities().iter().map(|c| c.value()).collect(),
                    V::LargeCommunities(c) => {
                        n.large = c
                            .communities()
                            .iter()
                            .map(|c| (c.global_admin(), c.local_data1(), c.local_data2()))
                            .collect()
                    }
                    V::MpReach(NgReach::Ipv6Unicast {
                        next_hop_global,
                        next_hop_local,
                        nlri,
                    }) => {
                        n.reach = Some((
                            2,
                            1,
                            std::iter::once(IpAddr::V6(*next_hop_global))
                                .chain(next_hop_local.map(IpAddr::V6))
                                .collect(),
                            nlri.iter().map(|p| IpNet::V6(p.network().address())).collect(),
                        ))
                    }
                    V::MpReach(NgReach::Ipv4Unicast {
                        next_hop,
                        next_hop_local,
                        nlri,
                    }) => {
                        n.reach = Some((
                            1,
                            1,
                            std::iter::once(*next_hop)
                                .chain(next_hop_local.map(IpAddr::V6))
                                .collect(),
                            nlri.iter().map(|p| IpNet::V4(p.network().address())).collect(),
                        ))
                    }
                    V::MpUnreach(NgUnreach::Ipv6Unicast { nlri }) => {
                        n.unreach = Some((
                            2,
                            1,
                            nlri.iter().map(|p| IpNet::V6(p.network().address())).collect(),
                        ))
                    }
                    V::MpUnreach(NgUnreach::Ipv4Unicast { nlri }) => {
                        n.unreach = Some((
                            1,
                            1,
                            nlri.iter().map(|p| IpNet::V4(p.network().address())).collect(),
                        ))
                    }
                    V::UnknownAttribute(x) => {
                        let flags = (u8::from(pa.optional()) << 7)
                            | (u8::from(pa.transitive()) << 6)
                            | (u8::from(pa.partial()) << 5);
                        n.unknown.push((x.code(), flags, x.value().to_vec()))
                    }
                    other => panic!("netgauze read an attribute we never write: {other:?}"),
                }
            }
            n.unknown.sort();
            Norm::Update(Box::new(n))
        }
        BgpMessage::KeepAlive => Norm::Keepalive,
        BgpMessage::RouteRefresh(r) => {
            let t = r.address_type();
            Norm::Refresh(
                u16::from(t.address_family()),
                u8::from(t.subsequent_address_family()),
            )
        }
        BgpMessage::Notification(_) => unreachable!("notifications are compared as bytes"),
    }
}

const CODEC: Codec = Codec { four_octet_as: true };

fn ng_parse(bytes: &[u8]) -> BgpMessage {
    BgpMessage::parse(&mut SliceReader::new(bytes), &mut BgpParsingContext::default())
        .unwrap_or_else(|e| panic!("netgauze refused {bytes:02x?}: {e:?}"))
}

fn ng_write(m: &BgpMessage) -> Vec<u8> {
    let mut out = Vec::new();
    m.write(&mut out).unwrap();
    out
}

fn encode(m: &Message) -> Vec<u8> {
    let mut b = Vec::new();
    CODEC.encode(m, &mut b);
    b
}

/// Both directions for one message: netgauze reads our bytes as the same message, and our decoder reads
/// netgauze's re-encoding of it as the same message.
fn check(m: &Message) {
    let bytes = encode(m);
    let ng = ng_parse(&bytes);
    assert_eq!(
        theirs(&ng),
        ours(m),
        "netgauze reads our bytes differently: {bytes:02x?}"
    );
    let back = ng_write(&ng);
    let again = CODEC
        .decode(&back)
        .unwrap_or_else(|e| panic!("we refused netgauze's {back:02x?}: {e:?}"));
    assert_eq!(
        ours(&again),
        ours(m),
        "we read netgauze's bytes differently: {back:02x?}"
    );
}

// ---- generators ----

fn v4_prefix() -> impl Strategy<Value = Ipv4Net> {
    // Unicast space only (netgauze refuses class D/E prefixes as IPv4 unicast NLRI).
    (1u8..224, any::<[u8; 3]>(), 0u8..=32).prop_map(|(a, rest, len)| {
        Ipv4Net::new(Ipv4Addr::new(a, rest[0], rest[1], rest[2]), len.max(8))
            .unwrap()
            .trunc()
    })
}

fn v6_prefix() -> impl Strategy<Value = Ipv6Net> {
    (0x2000u16..0x3fff, any::<[u16; 7]>(), 16u8..=128).prop_map(|(a, r, len)| {
        Ipv6Net::new(Ipv6Addr::new(a, r[0], r[1], r[2], r[3], r[4], r[5], r[6]), len)
            .unwrap()
            .trunc()
    })
}

fn dedup<T: Ord + Clone>(mut v: Vec<T>) -> Vec<T> {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

fn open() -> impl Strategy<Value = Message> {
    (
        1u32..,
        prop_oneof![Just(0u16), 3u16..],
        // BGP identifiers from unicast space: netgauze refuses class D/E identifiers, which RFC 6286 allows
        // (any non-zero value) and so do we.
        (0x0100_0000u32..0xe000_0000),
        any::<[bool; 3]>(),
        proptest::option::of((any::<bool>(), 0u16..4096, any::<[bool; 2]>())),
        proptest::option::of((100u8..=127, proptest::collection::vec(any::<u8>(), 0..8))),
    )
        .prop_map(|(asn, hold, id, fams, gr, unknown)| {
            let mut caps = vec![Capability::FourOctetAs(asn)];
            if fams[0] {
                caps.push(Capability::MultiProtocol { afi: 1, safi: 1 });
            }
            if fams[1] {
                caps.push(Capability::MultiProtocol { afi: 2, safi: 1 });
            }
            if fams[2] {
                caps.push(Capability::RouteRefresh);
            }
            if let Some((restarting, time, fwd)) = gr {
                caps.push(Capability::GracefulRestart {
                    restarting,
                    notification: false,
                    time,
                    families: vec![(1, 1, fwd[0]), (2, 1, fwd[1])],
                });
            }
            if let Some((code, value)) = unknown {
                caps.push(Capability::Unknown { code, value });
            }
            Message::Open(Open {
                asn,
                hold_time: hold,
                router_id: Ipv4Addr::from(id),
                capabilities: caps,
            })
        })
}

fn attrs() -> impl Strategy<Value = Attrs> {
    (
        0u8..3,
        proptest::collection::vec((any::<bool>(), proptest::collection::vec(1u32.., 1..6)), 0..3),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        any::<bool>(),
        proptest::option::of((1u32.., any::<u32>())),
        proptest::collection::vec(any::<u32>(), 0..5),
        proptest::collection::vec(any::<(u32, u32, u32)>(), 0..4),
        proptest::collection::vec((200u8..=250, proptest::collection::vec(any::<u8>(), 0..12)), 0..3),
    )
        .prop_map(
            |(origin, segs, med, local_pref, atomic, aggregator, communities, large, unknown)| Attrs {
                origin: Some([Origin::Igp, Origin::Egp, Origin::Incomplete][usize::from(origin)]),
                as_path: AsPath(
                    segs.into_iter()
                        .map(|(set, v)| {
                            if set {
                                Segment::Set(v)
                            } else {
                                Segment::Sequence(v)
                            }
                        })
                        .collect(),
                ),
                next_hop: None,
                med,
                local_pref,
                atomic_aggregate: atomic,
                aggregator: aggregator.map(|(a, ip)| (a, Ipv4Addr::from(ip))),
                communities: dedup(communities),
                large_communities: dedup(large),
                unknown: dedup(unknown)
                    .into_iter()
                    .scan(std::collections::BTreeSet::new(), |seen, (kind, value)| {
                        // Optional transitive with the partial bit: our decoder sets that bit on unknown transitive
                        // attributes as it keeps them (RFC 4271 §5: a passed-on one must carry it), so a clear bit
                        // would read back set.
                        Some(seen.insert(kind).then_some(RawAttr {
                            flags: 0xe0,
                            kind,
                            value,
                        }))
                    })
                    .flatten()
                    .collect(),
            },
        )
}

fn update() -> impl Strategy<Value = Message> {
    (
        proptest::collection::vec(v4_prefix(), 0..8),
        proptest::collection::vec(v4_prefix(), 0..8),
        attrs(),
        any::<u32>(),
        proptest::option::of((
            any::<u128>(),
            proptest::option::of(any::<u64>()),
            proptest::collection::vec(v6_prefix(), 1..8),
        )),
        proptest::collection::vec(v6_prefix(), 0..6),
    )
        .prop_map(|(withdrawn, nlri, mut attrs, nh, reach, unreach)| {
            let (withdrawn, nlri) = (dedup(withdrawn), dedup(nlri));
            let mp_reach = reach.map(|(g, ll, p)| MpReach {
                afi: 2,
                safi: 1,
                next_hop: MpNextHop::V6 {
                    global: Ipv6Addr::from(g | (0x2001u128 << 112)),
                    link_local: ll.map(|l| Ipv6Addr::from((0xfe80u128 << 112) | u128::from(l))),
                },
                nlri: dedup(p).into_iter().map(IpNet::V6).collect(),
            });
            if !nlri.is_empty() {
                attrs.next_hop = Some(Ipv4Addr::from(nh));
            }
            let mp_unreach = (!unreach.is_empty()).then(|| MpUnreach {
                afi: 2,
                safi: 1,
                withdrawn: dedup(unreach).into_iter().map(IpNet::V6).collect(),
            });
            let has_routes = !nlri.is_empty() || mp_reach.is_some();
            Message::Update(Box::new(Update {
                withdrawn,
                attrs: if has_routes { attrs } else { Attrs::default() },
                nlri,
                mp_reach,
                mp_unreach,
                treat_as_withdraw: None,
            }))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn opens_mean_the_same_to_netgauze_both_ways(m in open()) {
        check(&m);
    }

    #[test]
    fn updates_mean_the_same_to_netgauze_both_ways(m in update()) {
        check(&m);
    }
}

#[test]
fn keepalive_route_refresh_and_end_of_rib_mean_the_same_to_netgauze() {
    check(&Message::Keepalive);
    check(&Message::RouteRefresh(RouteRefresh { afi: 1, safi: 1 }));
    check(&Message::RouteRefresh(RouteRefresh { afi: 2, safi: 1 }));
    // End-of-RIB: an empty UPDATE for IPv4, an empty MP_UNREACH for IPv6.
    check(&Message::Update(Box::default()));
    let eor6 = Update {
        mp_unreach: Some(MpUnreach {
            afi: 2,
            safi: 1,
            withdrawn: vec![],
        }),
        ..Update::default()
    };
    check(&Message::Update(Box::new(eor6)));
}

#[test]
fn notifications_are_written_back_byte_for_byte_by_netgauze() {
    let cases = [
        Notification::shutdown("maintenance window 42: draining node"),
        Notification::shutdown(""),
        Notification {
            code: 4,
            subcode: 0,
            data: vec![],
        },
        Notification {
            code: 6,
            subcode: 7,
            data: vec![],
        },
        Notification {
            code: 3,
            subcode: 1,
            data: vec![],
        },
        Notification {
            code: 2,
            subcode: 2,
            data: vec![0xfd, 0xe9],
        },
        Notification {
            code: 6,
            subcode: 1,
            data: vec![0, 1, 1, 0, 0, 0, 0x03, 0xe8],
        },
    ];
    for n in cases {
        let bytes = encode(&Message::Notification(n.clone()));
        let ng = ng_parse(&bytes);
        assert!(matches!(ng, BgpMessage::Notification(_)), "{ng:?}");
        assert_eq!(ng_write(&ng), bytes, "{n:?} as netgauze reads it: {ng:?}");
        let ours = CODEC.decode(&bytes).unwrap();
        assert_eq!(ours, Message::Notification(n));
    }
}

#[test]
fn bytes_captured_from_frr_and_bird_mean_the_same_to_both_decoders() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "bin") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let m = CODEC.decode(&bytes).unwrap();
        assert_eq!(theirs(&ng_parse(&bytes)), ours(&m), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 14, "{seen} fixtures");
}
