//! The codec against bytes captured from real routers (see `tests/fixtures/README.md`): every message decodes,
//! says what the router configuration says, and encodes back to bytes that decode to the same message.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use anylb_routing::packet::{Capability, Codec, Message, MpNextHop};
use ipnet::IpNet;

fn fixture(name: &str) -> Message {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let bytes = std::fs::read(&path).unwrap();
    let codec = Codec { four_octet_as: true };
    let m = codec.decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    // Round trip.
    let mut again = Vec::new();
    codec.encode(&m, &mut again);
    assert_eq!(codec.decode(&again).unwrap(), m, "{name}: decode(encode(m))");
    m
}

fn all() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_captured_message_decodes_and_round_trips() {
    let names = all();
    assert!(names.len() >= 14, "{names:?}");
    for n in &names {
        let m = fixture(n);
        let kind = match m {
            Message::Open(_) => "open",
            Message::Update(_) => "update",
            Message::Keepalive => "keepalive",
            Message::Notification(_) => "notification",
            Message::RouteRefresh(_) => "refresh",
        };
        assert!(n.contains(kind), "{n} decoded as {kind}");
    }
}

#[test]
fn opens_carry_the_routers_as_id_and_capabilities() {
    for (name, v6) in [
        ("frr_v4_00_open.bin", false),
        ("frr_v6_00_open.bin", true),
        ("bird_v4_00_open.bin", false),
        ("bird_v6_00_open.bin", true),
    ] {
        let Message::Open(o) = fixture(name) else {
            panic!("{name}: not an OPEN")
        };
        assert_eq!(o.asn, 65000, "{name}");
        assert_eq!(o.router_id, Ipv4Addr::new(192, 0, 2, 1), "{name}");
        assert_eq!(o.four_octet_as(), Some(65000), "{name}");
        assert!(
            o.capabilities.contains(&Capability::RouteRefresh),
            "{name}: {:?}",
            o.capabilities
        );
        let afi = if v6 { 2 } else { 1 };
        assert!(
            o.capabilities
                .contains(&Capability::MultiProtocol { afi, safi: 1 }),
            "{name}: {:?}",
            o.capabilities
        );
    }
}

#[test]
fn updates_carry_the_announced_prefixes_path_and_next_hop() {
    let Message::Update(u) = fixture("bird_v4_02_update.bin") else {
        panic!("not an UPDATE")
    };
    assert_eq!(u.nlri, vec!["192.0.2.128/26".parse().unwrap()]);
    assert_eq!(u.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(u.attrs.as_path.first(), Some(65000), "{:?}", u.attrs.as_path);
    assert!(!u.attrs.as_path.contains(65010));
    let Message::Update(u) = fixture("bird_v6_02_update.bin") else {
        panic!("not an UPDATE")
    };
    let mp = u.mp_reach.as_ref().unwrap();
    assert_eq!(mp.nlri, vec!["2001:db8:c::/64".parse::<IpNet>().unwrap()]);
    let MpNextHop::V6 { global, .. } = mp.next_hop else {
        panic!("{:?}", mp.next_hop)
    };
    assert_eq!(global, "2001:db8:1::1".parse::<Ipv6Addr>().unwrap());
    // BIRD ends its initial table with End-of-RIB markers (RFC 4724): an empty UPDATE for IPv4, an empty
    // MP_UNREACH_NLRI for IPv6.
    let Message::Update(eor4) = fixture("bird_v4_03_update.bin") else {
        panic!("not an UPDATE")
    };
    assert!(eor4.nlri.is_empty() && eor4.withdrawn.is_empty() && eor4.mp_reach.is_none());
    let Message::Update(eor6) = fixture("bird_v6_03_update.bin") else {
        panic!("not an UPDATE")
    };
    assert!(
        eor6.mp_unreach.as_ref().is_some_and(|m| m.withdrawn.is_empty()),
        "{eor6:?}"
    );
}

#[test]
fn no_captured_update_is_treated_as_withdraw() {
    // RFC 7606's checks (flags, mandatory attributes, lengths) must pass everything real routers send.
    for name in all() {
        if let Message::Update(u) = fixture(&name) {
            assert_eq!(u.treat_as_withdraw, None, "{name}");
        }
    }
}

#[test]
fn frr_sends_our_own_routes_back_with_our_as_in_the_path() {
    // FRR (without import-check off, its own network was not announced) reflected the speaker's VIPs back over
    // eBGP: the path holds 65010, the speaker's AS, which the session treats as a loop (RFC 4271 §9.1.2).
    for (name, prefix) in [
        ("frr_v4_02_update.bin", "203.0.113.10/32"),
        ("frr_v6_02_update.bin", "2001:db8:f::10/128"),
    ] {
        let Message::Update(u) = fixture(name) else {
            panic!("{name}: not an UPDATE")
        };
        let mut nlri: Vec<IpNet> = u.nlri.iter().map(|p| IpNet::V4(*p)).collect();
        nlri.extend(u.mp_reach.iter().flat_map(|m| m.nlri.clone()));
        assert_eq!(nlri, vec![prefix.parse::<IpNet>().unwrap()], "{name}");
        assert_eq!(u.attrs.as_path.first(), Some(65000), "{name}");
        assert!(u.attrs.as_path.contains(65010), "{name}: {:?}", u.attrs.as_path);
    }
}
