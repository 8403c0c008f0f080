//! Full-NAT through one worker: IPv4, IPv6 and NAT64 connections in both directions, checked by etherparse.

#![allow(clippy::unwrap_used)]

mod common;

use anylb_dataplane::counters::merge;
use anylb_dataplane::stats::DropReason;
use anylb_dataplane::worker::Verdict;
use common::*;

#[test]
fn fnat44_tcp_handshake_data_and_reply_restore_the_client_tuple() {
    let mut lab = Lab::new();
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        Some(1460),
        b"",
    );
    let (port, out) = lab.forward(0, syn);
    assert_eq!(port, 1);
    let s = seen(&out);
    assert_eq!(s.smac, IN_MAC);
    assert!(s.dmac == backend_mac(1) || s.dmac == backend_mac(2));
    assert!(s.src == ip("198.51.100.16") || s.src == ip("198.51.100.17"));
    assert!(s.dst == ip("198.51.100.101") || s.dst == ip("198.51.100.102"));
    assert_eq!(s.dport, 8080);
    assert!((2000..=2999).contains(&s.sport));
    assert_eq!(s.ttl, 63);
    assert!(s.syn);
    assert_eq!(s.mss, Some(1460));

    // The backend answers the local address; the client sees the VIP.
    let (port, out) = lab.forward(1, backend_synack(&s));
    assert_eq!(port, 0);
    let r = seen(&out);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (ip("203.0.113.10"), 80, ip("192.0.2.100"), 40000)
    );
    assert_eq!(r.dmac, ROUTER_MAC);
    assert_eq!(r.smac, UP_MAC);

    // Data keeps going to the same backend through the same local port.
    let data = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "AP",
        2,
        None,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let (_, out) = lab.forward(0, data);
    let d = seen(&out);
    assert_eq!((d.src, d.sport, d.dst, d.dport), (s.src, s.sport, s.dst, 8080));
    assert_eq!(d.payload, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(lab.worker.stats.new_connections, 1);
    assert_eq!(lab.worker.conns().len(), 1);

    // The service's and backend's counters, as `anylb services --stats` shows them: two packets in (SYN 44
    // bytes of IP with its MSS option, data 58), one out (SYN-ACK, 40), one established connection, one
    // TCP port of the pool in use.
    let counters = |lab: &Lab| merge(lab.worker.snapshot(), &[lab.worker.counters()]);
    let c = counters(&lab);
    let web = c.services.iter().find(|s| s.name == "web4").unwrap();
    let b = web.backends.iter().find(|b| b.address == s.dst).unwrap().counters;
    assert_eq!(
        (b.created, b.connections, b.active, b.in_packets, b.out_packets),
        (1, 1, 1, 2, 1)
    );
    assert_eq!((b.in_bytes, b.out_bytes), (44 + 58, 40));
    assert_eq!(
        web.counters, b,
        "one backend had traffic: the service's sum is its counters"
    );
    assert_eq!(c.pools.iter().map(|p| p.tcp_used).sum::<usize>(), 1);
    // A reset leaves it in the table, inactive.
    let rst = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "R",
        20,
        None,
        b"",
    );
    lab.forward(0, rst);
    let c = counters(&lab);
    let web = c.services.iter().find(|s| s.name == "web4").unwrap();
    assert_eq!(
        (
            web.counters.connections,
            web.counters.active,
            web.counters.in_packets
        ),
        (1, 0, 3)
    );
}

#[test]
fn fnat66_tcp_and_udp() {
    let mut lab = Lab::new();
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("2001:db8:c::5", 50000),
        ("2001:db8::1", 80),
        "S",
        1,
        Some(1440),
        b"",
    );
    let (port, out) = lab.forward(0, syn);
    assert_eq!(port, 1);
    let s = seen(&out);
    assert_eq!(s.dst, ip("2001:db8:20::101"));
    assert!(
        s.src == ip("2001:db8:20::100")
            || s.src == ip("2001:db8:20::101")
            || s.src.to_string().starts_with("2001:db8:20::10")
    );
    assert_eq!(s.ttl, 63);
    let back = tcp(
        backend_mac(0x11),
        IN_MAC,
        ("2001:db8:20::101", 8080),
        (&s.src.to_string(), s.sport),
        "SA",
        9,
        None,
        b"",
    );
    let (_, out) = lab.forward(1, back);
    let r = seen(&out);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (ip("2001:db8::1"), 80, ip("2001:db8:c::5"), 50000)
    );

    let q = udp(
        ROUTER_MAC,
        UP_MAC,
        ("2001:db8:c::5", 5353),
        ("2001:db8::1", 53),
        b"query",
    );
    let (_, out) = lab.forward(0, q);
    let u = seen(&out);
    assert_eq!((u.dst, u.dport, u.proto), (ip("2001:db8:20::101"), 53, "udp"));
    let a = udp(
        backend_mac(0x11),
        IN_MAC,
        ("2001:db8:20::101", 53),
        (&u.src.to_string(), u.sport),
        b"answer",
    );
    let (_, out) = lab.forward(1, a);
    let r = seen(&out);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (ip("2001:db8::1"), 53, ip("2001:db8:c::5"), 5353)
    );
    assert_eq!(r.payload, b"answer");
}

#[test]
fn nat64_tcp_translates_headers_and_clamps_mss_both_ways() {
    let mut lab = Lab::new();
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("2001:db8:c::5", 50000),
        ("2001:db8::64", 80),
        "S",
        1,
        Some(1460),
        b"",
    );
    let (port, out) = lab.forward(0, syn);
    assert_eq!(port, 1);
    let s = seen(&out);
    assert_eq!(s.dst, ip("198.51.100.101"));
    assert!(s.src.is_ipv4());
    assert_eq!(s.ttl, 63);
    assert_eq!(
        s.mss,
        Some(1440),
        "the backend's 1480-byte IPv4 segments become 1500-byte IPv6 packets towards the client (MTU 1500 - 60)"
    );
    let back = tcp(
        backend_mac(1),
        IN_MAC,
        ("198.51.100.101", 8080),
        (&s.src.to_string(), s.sport),
        "SA",
        9,
        Some(1460),
        b"hello",
    );
    let (port, out) = lab.forward(1, back);
    assert_eq!(port, 0);
    let r = seen(&out);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (ip("2001:db8::64"), 80, ip("2001:db8:c::5"), 50000)
    );
    assert_eq!(r.mss, Some(1440), "clamped for the 20 bigger header towards IPv6");
    assert_eq!(r.payload, b"hello");
}

#[test]
fn nat64_udp_gets_a_checksum_towards_ipv6() {
    let mut lab = Lab::new();
    let q = udp(
        ROUTER_MAC,
        UP_MAC,
        ("2001:db8:c::5", 5353),
        ("2001:db8::64", 53),
        b"q",
    );
    let (_, out) = lab.forward(0, q);
    let u = seen(&out);
    assert_eq!(u.dst, ip("198.51.100.102"));
    let mut a = udp(
        backend_mac(2),
        IN_MAC,
        ("198.51.100.102", 53),
        (&u.src.to_string(), u.sport),
        b"a",
    );
    // An IPv4 UDP checksum of 0 means none.
    a[14 + 20 + 6] = 0;
    a[14 + 20 + 7] = 0;
    let (_, out) = lab.forward(1, a);
    let r = seen(&out);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (ip("2001:db8::64"), 53, ip("2001:db8:c::5"), 5353)
    );
}

#[test]
fn non_syn_for_unknown_flow_and_closed_ports_are_counted_drops() {
    let mut lab = Lab::new();
    let ack = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "A",
        1,
        None,
        b"",
    );
    assert_eq!(
        lab.send(0, ack).0,
        Verdict::Drop {
            reason: DropReason::NoConnection
        }
    );
    let other = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 443),
        "S",
        1,
        None,
        b"",
    );
    assert_eq!(
        lab.send(0, other).0,
        Verdict::Drop {
            reason: DropReason::NoService
        }
    );
    let stray = tcp(
        backend_mac(1),
        IN_MAC,
        ("198.51.100.101", 8080),
        ("198.51.100.16", 2500),
        "SA",
        1,
        None,
        b"",
    );
    assert_eq!(
        lab.send(1, stray).0,
        Verdict::Drop {
            reason: DropReason::NoConnection
        }
    );
    assert_eq!(lab.worker.stats.drops_of(DropReason::NoConnection), 2);
    assert_eq!(lab.worker.stats.drops_of(DropReason::NoService), 1);
}

#[test]
fn bad_checksum_on_a_new_flow_is_dropped() {
    let mut lab = Lab::new();
    let mut syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    let n = syn.len();
    syn[n - 3] ^= 0xff;
    assert_eq!(
        lab.send(0, syn).0,
        Verdict::Drop {
            reason: DropReason::BadChecksum
        }
    );
}

#[test]
fn traffic_for_the_node_itself_goes_to_the_kernel() {
    let mut lab = Lab::new();
    let bgp = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.1", 40000),
        ("192.0.2.11", 179),
        "S",
        1,
        None,
        b"",
    );
    assert_eq!(lab.send(0, bgp).0, Verdict::Kernel);
    let other = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.1", 40000),
        ("192.0.2.99", 22),
        "S",
        1,
        None,
        b"",
    );
    assert_eq!(lab.send(0, other).0, Verdict::Kernel);
}

#[test]
fn connections_expire_and_release_their_ports() {
    let mut lab = Lab::new();
    let q = udp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 5353),
        ("203.0.113.10", 53),
        b"q",
    );
    lab.forward(0, q);
    assert_eq!(lab.worker.conns().len(), 1);
    lab.advance(299_000);
    assert_eq!(lab.worker.conns().len(), 1);
    lab.advance(2_000);
    assert_eq!(lab.worker.conns().len(), 0);
    assert_eq!(lab.worker.stats.expired_connections, 1);
}

#[test]
fn a_new_syn_on_a_finished_connection_is_scheduled_afresh() {
    let mut lab = Lab::new();
    let client = ("192.0.2.100", 40000);
    let mut first = None;
    for round in 0..2 {
        let s = open_and_close(&mut lab, client);
        match round {
            0 => first = Some((s.src, s.sport)),
            _ => assert_ne!(
                first,
                Some((s.src, s.sport)),
                "the reused client port got a fresh local port"
            ),
        }
    }
    assert_eq!(lab.worker.stats.new_connections, 2);
    assert_eq!(
        lab.worker.conns().len(),
        1,
        "the finished connection was replaced, not kept"
    );
    // The gauge counts what the table holds: created minus expired would say 2 (the replaced entry is
    // removed, not expired).
    assert_eq!(lab.worker.stats.expired_connections, 0);
    assert_eq!(lab.worker.stats.connections, 1);
}

#[test]
fn frames_for_another_stations_mac_are_dropped_not_forwarded() {
    let mut lab = Lab::new();
    // A switch flooding a frame for another node's MAC: the VIP is ours too, but the frame is not.
    let flooded = tcp(
        ROUTER_MAC,
        [0x02, 0, 0, 0, 0x0b, 0x99],
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        Some(1460),
        b"",
    );
    let (v, tx) = lab.send(0, flooded);
    assert_eq!(
        v,
        Verdict::Drop {
            reason: DropReason::OtherMac
        }
    );
    assert!(tx.is_empty());
    assert_eq!(lab.worker.stats.new_connections, 0);
    // The same SYN to our MAC opens the connection.
    let ours = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        Some(1460),
        b"",
    );
    lab.forward(0, ours);
    assert_eq!(lab.worker.stats.new_connections, 1);
}
