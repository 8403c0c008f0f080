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

fn client_lab() -> Lab {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/client.toml")).unwrap();
    Lab::with(&text, &Overrides::default())
}

/// Sets the acknowledgement number of an IPv4 TCP frame (etherparse's builder acks 1) and fixes the checksum.
fn set_ack(f: &mut [u8], ack: u32) {
    f[42..46].copy_from_slice(&ack.to_be_bytes());
    f[50..52].copy_from_slice(&[0, 0]);
    let len = f.len() - 34;
    let mut sum: u32 = 6 + len as u32;
    for w in f[26..34].chunks(2).chain(f[34..].chunks(2)) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[50..52].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

fn tcp_seq_ack(frame: &[u8], l4: usize) -> (u32, u32) {
    let s = u32::from_be_bytes(frame[l4 + 4..l4 + 8].try_into().unwrap());
    let a = u32::from_be_bytes(frame[l4 + 8..l4 + 12].try_into().unwrap());
    (s, a)
}

#[test]
fn proxy_v2_header_goes_first_and_sequence_numbers_follow() {
    let mut lab = client_lab();
    let client = ("192.0.2.100", 40000);
    let vip = ("203.0.113.40", 80);
    // tcp() numbers the client's SYN with `seq`; its data start at seq + 1.
    let (_, out) = lab.forward(
        0,
        tcp(ROUTER_MAC, UP_MAC, client, vip, "S", 1000, Some(1460), b""),
    );
    let s = seen(&out);
    assert_eq!(
        s.mss,
        Some(1500 - 40 - 28),
        "room for the header in a full segment"
    );
    // SYN-ACK acknowledging the client's SYN (ack = 1001).
    let mut synack = tcp(
        backend_mac(1),
        IN_MAC,
        ("198.51.100.101", 8080),
        (&s.src.to_string(), s.sport),
        "SA",
        5000,
        Some(1460),
        b"",
    );
    set_ack(&mut synack, 1001);
    let (_, out) = lab.forward(1, synack);
    assert_eq!(tcp_seq_ack(&out, 34), (5000, 1001));

    // The handshake's ACK carries the header.
    let mut ack = tcp(ROUTER_MAC, UP_MAC, client, vip, "A", 1001, None, b"");
    set_ack(&mut ack, 5001);
    let (_, out) = lab.forward(0, ack);
    let s2 = seen(&out);
    assert_eq!(s2.payload.len(), 28);
    assert_eq!(&s2.payload[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(&s2.payload[16..20], &[192, 0, 2, 100], "client address");
    assert_eq!(&s2.payload[24..26], &40000u16.to_be_bytes(), "client port");
    assert_eq!(tcp_seq_ack(&out, 34).0, 1001);

    // The backend acknowledges the header: the client sees its own numbers.
    let mut a = tcp(
        backend_mac(1),
        IN_MAC,
        ("198.51.100.101", 8080),
        (&s.src.to_string(), s.sport),
        "A",
        5001,
        None,
        b"",
    );
    set_ack(&mut a, 1001 + 28);
    let (_, out) = lab.forward(1, a);
    assert_eq!(tcp_seq_ack(&out, 34).1, 1001);
    assert!(seen(&out).payload.is_empty());

    // Client data moves up by the header length.
    let mut data = tcp(ROUTER_MAC, UP_MAC, client, vip, "AP", 1001, None, b"GET /");
    set_ack(&mut data, 5001);
    let (_, out) = lab.forward(0, data);
    // The header was acknowledged, so it is not sent again.
    assert_eq!(tcp_seq_ack(&out, 34).0, 1001 + 28);
    assert_eq!(seen(&out).payload, b"GET /");
    let mut more = tcp(ROUTER_MAC, UP_MAC, client, vip, "AP", 1006, None, b"x");
    set_ack(&mut more, 5001);
    let (_, out) = lab.forward(0, more);
    assert_eq!(tcp_seq_ack(&out, 34).0, 1006 + 28);
}

#[test]
fn toa_rides_in_the_handshake_ack() {
    let mut lab = client_lab();
    let client = ("192.0.2.100", 40001);
    let vip = ("203.0.113.41", 80);
    let (_, out) = lab.forward(
        0,
        tcp(ROUTER_MAC, UP_MAC, client, vip, "S", 1000, Some(1460), b""),
    );
    assert_eq!(seen(&out).mss, Some(1500 - 40 - 8));
    let mut ack = tcp(ROUTER_MAC, UP_MAC, client, vip, "A", 1001, None, b"");
    set_ack(&mut ack, 5001);
    let (_, out) = lab.forward(0, ack);
    let tcp_hdr = &out[34..];
    assert_eq!(usize::from(tcp_hdr[12] >> 4) * 4, 28, "8 option bytes added");
    assert_eq!(&tcp_hdr[20..28], &[254, 8, 0x9c, 0x41, 192, 0, 2, 100]);
    // seen() verifies the TCP checksum.
    let s = seen(&out);
    assert!(s.payload.is_empty());
}

#[test]
fn segments_of_unknown_flows_get_a_second_chance_at_the_peer_node() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/peers.toml")).unwrap();
    let mut lab = Lab::with(&text, &Overrides::default());
    // The router moved a flow here mid-connection: its ACK goes unchanged to lb2, which may know it.
    let ack = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "A",
        5,
        None,
        b"data",
    );
    let (port, out) = lab.forward(0, ack.clone());
    assert_eq!(port, 1);
    assert_eq!(&out[..6], &[2, 0, 0, 0, 0x0c, 1], "to lb2's MAC");
    assert_eq!(&out[6..12], &IN_MAC);
    assert_eq!(out[12..], ack[12..], "the packet itself unchanged");
    assert_eq!(lab.worker.stats.peer_forwarded, 1);
    // From the peers' side it is not handed on again.
    let from_peer = tcp(
        [2, 0, 0, 0, 0x0c, 1],
        IN_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "A",
        5,
        None,
        b"data",
    );
    assert_eq!(
        lab.send(1, from_peer).0,
        Verdict::Drop {
            reason: DropReason::NoConnection
        }
    );
    // SYNs start connections here as always.
    let (port, out) = lab.forward(0, syn(("192.0.2.100", 40001), ("203.0.113.10", 80)));
    assert_eq!(port, 1);
    assert_eq!(seen(&out).dport, 8080);
}

#[test]
fn a_moved_flow_that_meets_a_closed_entry_of_its_tuple_gets_the_second_chance() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/peers.toml")).unwrap();
    let mut lab = Lab::with(&text, &Overrides::default());
    let client = ("192.0.2.100", 40000);
    let vip = ("203.0.113.10", 80);
    open_and_close(&mut lab, client);
    // The client reuses its port; the new connection's SYN opened it on lb2, and the router then moved the
    // flow here: its request goes unchanged to lb2, not to the old backend socket.
    let request = tcp(ROUTER_MAC, UP_MAC, client, vip, "AP", 9001, None, b"GET /");
    let (port, out) = lab.forward(0, request.clone());
    assert_eq!(port, 1);
    assert_eq!(&out[..6], &[2, 0, 0, 0, 0x0c, 1], "to lb2's MAC");
    assert_eq!(out[12..], request[12..], "the packet itself unchanged");
    assert_eq!(lab.worker.stats.peer_forwarded, 1);
    assert_eq!(lab.worker.stats.peer_forwarded_closed, 1);
    // Segments without data (the closed connection's repeated last ACK or FIN) stay with the closed entry.
    for flags in ["A", "AF"] {
        let (port, out) = lab.forward(0, tcp(ROUTER_MAC, UP_MAC, client, vip, flags, 2, None, b""));
        assert_eq!((port, seen(&out).dport), (1, 8080), "{flags}");
    }
    assert_eq!(lab.worker.stats.peer_forwarded, 1);
    // What lb2 hands here is not handed back: the closed entry translates it, as before.
    let from_peer = tcp(
        [2, 0, 0, 0, 0x0c, 1],
        IN_MAC,
        client,
        vip,
        "AP",
        9001,
        None,
        b"GET /",
    );
    let (port, out) = lab.forward(1, from_peer);
    assert_eq!((port, seen(&out).dport), (1, 8080));
    assert_eq!(lab.worker.stats.peer_forwarded, 1);
    // A SYN on the closed entry still opens a new connection here.
    let (_, out) = lab.forward(
        0,
        tcp(ROUTER_MAC, UP_MAC, client, vip, "S", 20001, Some(1460), b""),
    );
    assert!(seen(&out).syn);
    assert_eq!(lab.worker.stats.new_connections, 2);

    // A single node (no peers) has nowhere to hand it: the closed entry translates it, as before.
    let mut alone = Lab::new();
    let s = open_and_close(&mut alone, client);
    let (port, out) = alone.forward(0, request);
    let t = seen(&out);
    assert_eq!((port, t.dst, t.dport, t.sport), (1, s.dst, 8080, s.sport));
    assert_eq!(alone.worker.stats.peer_forwarded, 0);
}

#[test]
fn a_one_armed_node_hands_unknown_segments_back_out_of_its_port_to_the_peer() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/one-armed.toml"
    ))
    .unwrap();
    let mut lab = Lab::with(&text, &Overrides::default());
    let ack = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("198.51.100.7", 40000),
        ("203.0.113.10", 80),
        "A",
        5,
        None,
        b"data",
    );
    let (port, out) = lab.forward(0, ack.clone());
    assert_eq!(port, 0, "back out of the only port");
    assert_eq!(&out[..6], &[2, 0, 0, 0, 0x0c, 0], "to lb2's MAC");
    assert_eq!(&out[6..12], &UP_MAC);
    assert_eq!(out[12..], ack[12..], "the packet itself unchanged");
    assert_eq!(lab.worker.stats.peer_forwarded, 1);
    // What lb2 hands back (its MAC, not a router's) is not handed on again: no loop on the one segment.
    let from_peer = tcp(
        [2, 0, 0, 0, 0x0c, 0],
        UP_MAC,
        ("198.51.100.7", 40000),
        ("203.0.113.10", 80),
        "A",
        5,
        None,
        b"data",
    );
    assert_eq!(
        lab.send(0, from_peer).0,
        Verdict::Drop {
            reason: DropReason::NoConnection
        }
    );
    assert_eq!(lab.worker.stats.peer_forwarded, 1);
}

#[test]
fn gue_wraps_the_packet_in_udp_with_a_per_flow_source_port() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/gue.toml")).unwrap();
    let mut lab = Lab::with(&text, &Overrides::default());
    let mut sports = std::collections::HashSet::new();
    for cport in 40000..40008 {
        let inp = syn(("192.0.2.100", cport), ("203.0.113.33", 80));
        let (_, out) = lab.forward(0, inp.clone());
        let outer = &out[14..34];
        assert_eq!(outer[9], 17, "UDP");
        assert_eq!(&outer[16..20], &[198, 51, 100, 102]);
        let u = &out[34..42];
        sports.insert(u16::from_be_bytes([u[0], u[1]]));
        assert_eq!(u16::from_be_bytes([u[2], u[3]]), 6080);
        assert_eq!(usize::from(u16::from_be_bytes([u[4], u[5]])), 8 + inp.len() - 14);
        assert_eq!(out[42] >> 4, 4, "GUE variant 1: the inner IPv4 header follows");
        assert_eq!(out[42..42 + 20], inp[14..34]);
    }
    assert!(sports.len() > 4, "source ports vary per flow: {sports:?}");

    let inp = syn(("2001:db8:c::5", 50000), ("2001:db8::33", 80));
    let (_, out) = lab.forward(0, inp.clone());
    assert_eq!(out[14 + 6], 17);
    let u = &out[54..62];
    assert_eq!(u16::from_be_bytes([u[2], u[3]]), 9886);
    assert_eq!(out[62] >> 4, 6);
    // etherparse checks the UDP checksum over the IPv6 pseudo-header.
    let p = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
    let Some(etherparse::TransportSlice::Udp(udp)) = &p.transport else {
        panic!("not UDP")
    };
    let Some(etherparse::NetSlice::Ipv6(v6)) = &p.net else {
        panic!("not IPv6")
    };
    assert_eq!(
        udp.checksum(),
        udp.to_header()
            .calc_checksum_ipv6(&v6.header().to_header(), udp.payload())
            .unwrap()
    );
}
