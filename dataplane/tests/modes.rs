//! The DR, tunnel and NAT forwarding modes through one worker, checked field by field (the golden replay tests
//! pin the exact bytes).

#![allow(clippy::unwrap_used)]

mod common;

use anylb_dataplane::snapshot::Overrides;
use anylb_dataplane::stats::DropReason;
use anylb_dataplane::worker::Verdict;
use common::*;

fn lab() -> Lab {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/modes.toml")).unwrap();
    Lab::with(&text, &Overrides::default())
}

fn syn(client: (&str, u16), vip: (&str, u16)) -> Vec<u8> {
    tcp(ROUTER_MAC, UP_MAC, client, vip, "S", 1, Some(1460), b"")
}

#[test]
fn dr_sends_the_unchanged_packet_to_the_backend_mac() {
    let mut lab = lab();
    for (client, vip, mac) in [
        (("192.0.2.100", 40000), ("203.0.113.30", 80), backend_mac(1)),
        (("2001:db8:c::5", 50000), ("2001:db8::30", 80), backend_mac(0x11)),
    ] {
        let inp = syn(client, vip);
        let (port, out) = lab.forward(0, inp.clone());
        assert_eq!(port, 1);
        assert_eq!(&out[..6], &mac, "to the backend's MAC");
        assert_eq!(&out[6..12], &IN_MAC);
        assert_eq!(out[12..], inp[12..], "addresses, TTL and payload unchanged");
        // Later segments of the flow follow the connection.
        let data = tcp(ROUTER_MAC, UP_MAC, client, vip, "AP", 2, None, b"GET /");
        let (_, out) = lab.forward(0, data.clone());
        assert_eq!(out[12..], data[12..]);
    }
}

#[test]
fn tunnel_encapsulates_with_a_per_flow_outer_source() {
    let mut lab = lab();
    let mut sources = std::collections::HashSet::new();
    for cport in 40000..40016 {
        let inp = syn(("192.0.2.100", cport), ("203.0.113.31", 80));
        let (port, out) = lab.forward(0, inp.clone());
        assert_eq!(port, 1);
        assert_eq!(&out[..6], &backend_mac(2));
        let outer = &out[14..34];
        assert_eq!(outer[0], 0x45);
        assert_eq!(outer[9], 4, "IP-in-IP");
        assert_eq!(
            usize::from(u16::from_be_bytes([outer[2], outer[3]])),
            inp.len() - 14 + 20
        );
        assert_eq!(&outer[16..20], &[198, 51, 100, 102]);
        let mut sum = 0u32;
        for w in outer.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "outer header checksum");
        sources.insert([outer[12], outer[13], outer[14], outer[15]]);
        assert_eq!(out.len(), inp.len() + 20);
        assert_eq!(
            out[34..66],
            inp[14..46],
            "inner addresses, TTL, ports and sequence unchanged (only the MSS is clamped)"
        );
    }
    assert_eq!(
        sources,
        [[198, 51, 100, 16], [198, 51, 100, 17]].into_iter().collect(),
        "flows spread over the local addresses"
    );

    let inp = syn(("2001:db8:c::5", 50000), ("2001:db8::31", 80));
    let (_, out) = lab.forward(0, inp.clone());
    let outer = &out[14..54];
    assert_eq!(outer[0] >> 4, 6);
    assert_eq!(outer[6], 41, "IPv6-in-IPv6");
    assert_eq!(
        usize::from(u16::from_be_bytes([outer[4], outer[5]])),
        inp.len() - 14
    );
    let label = u32::from_be_bytes([0, outer[1] & 0x0f, outer[2], outer[3]]);
    assert_ne!(label, 0, "flow label set from the flow hash");
    let pool: std::net::Ipv6Addr = "2001:db8:20::100".parse().unwrap();
    let backend: std::net::Ipv6Addr = "2001:db8:20::101".parse().unwrap();
    assert_eq!(
        outer[8..23],
        pool.octets()[..15],
        "outer source from the IPv6 pool"
    );
    assert_eq!(outer[24..40], backend.octets());
    assert_eq!(out.len(), inp.len() + 40);
    assert_eq!(out[54..106], inp[14..66]);
}

#[test]
fn tunnel_clamps_the_mss_and_reports_too_big() {
    let mut lab = lab();
    let (_, out) = lab.forward(0, syn(("192.0.2.100", 40000), ("203.0.113.31", 80)));
    // Inner TCP header at 14 + 20 + 20; MSS option first.
    let tcp_hdr = &out[54..];
    assert_eq!(&tcp_hdr[20..22], &[2, 4]);
    assert_eq!(u16::from_be_bytes([tcp_hdr[22], tcp_hdr[23]]), 1500 - 20 - 40);

    let big = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.31", 80),
        "A",
        2,
        None,
        &[0u8; 1460],
    );
    let (v, tx) = lab.send(0, big);
    assert_eq!(
        v,
        Verdict::IcmpError {
            port: 0,
            reason: DropReason::TooBig
        }
    );
    let icmp = &tx[0].1[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1480);
}

#[test]
fn nat_rewrites_the_destination_and_the_reply_source() {
    let mut lab = lab();
    for (client, vip, backend) in [
        (("192.0.2.100", 40000), ("203.0.113.32", 80), "198.51.100.101"),
        (("2001:db8:c::5", 50000), ("2001:db8::32", 80), "2001:db8:20::101"),
    ] {
        let (port, out) = lab.forward(0, syn(client, vip));
        assert_eq!(port, 1);
        let s = seen(&out);
        assert_eq!((s.src, s.sport), (ip(client.0), client.1), "client address kept");
        assert_eq!((s.dst, s.dport), (ip(backend), 8080));
        // The backend answers the client through its gateway, the node.
        let reply = tcp(s.dmac, IN_MAC, (backend, 8080), client, "SA", 9, Some(1460), b"");
        let (port, out) = lab.forward(1, reply);
        assert_eq!(port, 0);
        let r = seen(&out);
        assert_eq!((r.src, r.sport), (ip(vip.0), vip.1));
        assert_eq!((r.dst, r.dport), (ip(client.0), client.1));
        assert_eq!(r.dmac, ROUTER_MAC);
    }
    // UDP too.
    let (_, out) = lab.forward(
        0,
        udp(
            ROUTER_MAC,
            UP_MAC,
            ("192.0.2.100", 5353),
            ("203.0.113.32", 53),
            b"q",
        ),
    );
    let s = seen(&out);
    assert_eq!((s.src, s.dst), (ip("192.0.2.100"), ip("198.51.100.102")));
    let (_, out) = lab.forward(
        1,
        udp(
            s.dmac,
            IN_MAC,
            ("198.51.100.102", 53),
            ("192.0.2.100", 5353),
            b"a",
        ),
    );
    assert_eq!(seen(&out).src, ip("203.0.113.32"));
}

#[test]
fn nat_gateway_hands_unknown_transit_traffic_to_the_kernel() {
    let mut lab = lab();
    // A backend talking to the client with no connection: the kernel routes (or refuses) it.
    let stray = tcp(
        backend_mac(1),
        IN_MAC,
        ("198.51.100.101", 8080),
        ("192.0.2.100", 41000),
        "A",
        1,
        None,
        b"",
    );
    assert_eq!(lab.send(1, stray).0, Verdict::Kernel);
    // A mid-flow segment to a NAT VIP without a connection is dropped, not started.
    let (v, _) = lab.send(
        0,
        tcp(
            ROUTER_MAC,
            UP_MAC,
            ("192.0.2.100", 41000),
            ("203.0.113.32", 80),
            "A",
            1,
            None,
            b"",
        ),
    );
    assert_eq!(
        v,
        Verdict::Drop {
            reason: DropReason::NoConnection
        }
    );
}

fn snat_lab() -> Lab {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/snat.toml")).unwrap();
    Lab::with(&text, &Overrides::default())
}

#[test]
fn snat_gateway_translates_tcp_and_udp_both_ways() {
    let mut lab = snat_lab();
    // A LAN host (behind in0) opens a connection to a server on the WAN side (behind up0).
    let syn = tcp(
        backend_mac(2),
        IN_MAC,
        ("198.51.100.102", 45000),
        ("192.0.2.100", 443),
        "S",
        1,
        Some(1460),
        b"",
    );
    let (port, out) = lab.forward(1, syn);
    assert_eq!(port, 0);
    let s = seen(&out);
    assert_eq!(s.dmac, ROUTER_MAC);
    assert_eq!(s.src, ip("192.0.2.12"), "translated to the WAN address");
    assert!((3000..=3999).contains(&s.sport));
    assert_eq!(
        (s.dst, s.dport),
        (ip("192.0.2.100"), 443),
        "destination untouched"
    );
    assert_eq!(s.ttl, 63);
    // The server's answer comes back to the LAN host.
    let synack = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 443),
        ("192.0.2.12", s.sport),
        "SA",
        9,
        Some(1460),
        b"",
    );
    let (port, out) = lab.forward(0, synack);
    assert_eq!(port, 1);
    let r = seen(&out);
    assert_eq!(r.dmac, backend_mac(2));
    assert_eq!((r.src, r.sport), (ip("192.0.2.100"), 443));
    assert_eq!((r.dst, r.dport), (ip("198.51.100.102"), 45000));

    let q = udp(
        backend_mac(2),
        IN_MAC,
        ("198.51.100.102", 5300),
        ("192.0.2.53", 53),
        b"query",
    );
    let (_, out) = lab.forward(1, q);
    let u = seen(&out);
    assert_eq!(u.src, ip("192.0.2.12"));
    let a = udp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.53", 53),
        ("192.0.2.12", u.sport),
        b"answer",
    );
    let (_, out) = lab.forward(0, a);
    let back = seen(&out);
    assert_eq!((back.dst, back.dport), (ip("198.51.100.102"), 5300));
    assert_eq!(back.payload, b"answer");
}

#[test]
fn snat_gateway_translates_echo_by_identifier() {
    let mut lab = snat_lab();
    let mut req = Vec::new();
    etherparse::PacketBuilder::ethernet2(backend_mac(2), IN_MAC)
        .ipv4([198, 51, 100, 102], [192, 0, 2, 100], 64)
        .icmpv4_echo_request(0x1234, 1)
        .write(&mut req, b"ping")
        .unwrap();
    let (port, out) = lab.forward(1, req);
    assert_eq!(port, 0);
    let p = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
    let Some(etherparse::NetSlice::Ipv4(v4)) = &p.net else {
        panic!("not IPv4")
    };
    assert_eq!(v4.header().source(), [192, 0, 2, 12]);
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP")
    };
    let etherparse::Icmpv4Type::EchoRequest(e) = icmp.icmp_type() else {
        panic!("not an echo request")
    };
    assert_ne!(e.id, 0x1234, "identifier translated");
    let body = icmp.payload();
    let header = icmp.header();
    assert_eq!(
        header.checksum,
        etherparse::Icmpv4Type::EchoRequest(e).calc_checksum(body),
        "ICMP checksum"
    );
    let mut reply = Vec::new();
    etherparse::PacketBuilder::ethernet2(ROUTER_MAC, UP_MAC)
        .ipv4([192, 0, 2, 100], [192, 0, 2, 12], 64)
        .icmpv4_echo_reply(e.id, 1)
        .write(&mut reply, b"ping")
        .unwrap();
    let (port, out) = lab.forward(0, reply);
    assert_eq!(port, 1);
    let p = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
    let Some(etherparse::NetSlice::Ipv4(v4)) = &p.net else {
        panic!("not IPv4")
    };
    assert_eq!(v4.header().destination(), [198, 51, 100, 102]);
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP")
    };
    assert!(matches!(icmp.icmp_type(), etherparse::Icmpv4Type::EchoReply(r) if r.id == 0x1234));
}

#[test]
fn snat_gateway_leaves_unmatched_traffic_to_the_kernel() {
    let mut lab = snat_lab();
    // A source outside the rule.
    let f = tcp(
        backend_mac(2),
        IN_MAC,
        ("203.0.113.99", 45000),
        ("192.0.2.100", 443),
        "S",
        1,
        None,
        b"",
    );
    assert_eq!(lab.send(1, f).0, Verdict::Kernel);
    // A mid-flow segment of an unknown flow is not started.
    let f = tcp(
        backend_mac(2),
        IN_MAC,
        ("198.51.100.102", 45001),
        ("192.0.2.100", 443),
        "A",
        1,
        None,
        b"",
    );
    assert_eq!(
        lab.send(1, f).0,
        Verdict::Drop {
            reason: DropReason::NoConnection
        }
    );
}
