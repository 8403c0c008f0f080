//! The small stack: ARP and ND answers, echo, next-hop resolution with the hold queue, gratuitous
//! announcements, ICMP errors sent and translated, and the drops a full table, an empty pool or drained
//! backends cause.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use anylb_dataplane::frame::{Frame, VecFrame};
use anylb_dataplane::snapshot::Overrides;
use anylb_dataplane::stats::DropReason;
use anylb_dataplane::worker::{Output, Verdict};
use common::*;
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder,
    SlicedPacket, TransportSlice,
};

fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &ROUTER_MAC,
        &sender,
        &[0; 6],
        &target,
    )
    .unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, [0xff; 6])
        .arp(arp)
        .write(&mut v)
        .unwrap();
    v
}

#[test]
fn arp_for_a_vip_is_answered_and_for_the_node_goes_to_the_kernel() {
    let mut lab = Lab::new();
    let (v, tx) = lab.send(0, arp_request([192, 0, 2, 1], [203, 0, 113, 10]));
    assert_eq!(v, Verdict::Reply { port: 0 });
    let p = SlicedPacket::from_ethernet(&tx[0].1).unwrap();
    let eth = p.link.unwrap().to_header().unwrap().ethernet2().unwrap();
    assert_eq!((eth.destination, eth.source), (ROUTER_MAC, UP_MAC));
    let Some(NetSlice::Arp(a)) = p.net else {
        panic!("not ARP")
    };
    assert_eq!(a.operation(), ArpOperation::REPLY);
    assert_eq!(a.sender_hw_addr(), UP_MAC);
    assert_eq!(a.sender_protocol_addr(), [203, 0, 113, 10]);
    assert_eq!(a.target_protocol_addr(), [192, 0, 2, 1]);
    // A local address is answered too; the node's own address is the kernel's.
    assert_eq!(
        lab.send(1, arp_request([198, 51, 100, 101], [198, 51, 100, 17]))
            .0,
        Verdict::Reply { port: 1 }
    );
    assert_eq!(
        lab.send(0, arp_request([192, 0, 2, 1], [192, 0, 2, 11])).0,
        Verdict::Kernel
    );
}

#[test]
fn neighbor_solicitation_for_a_vip_gets_an_advertisement() {
    let mut lab = Lab::new();
    let target: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut ns = [0u8; 32];
    ns[0] = 135;
    ns[8..24].copy_from_slice(&target.octets());
    ns[24..32].copy_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
    let group: std::net::Ipv6Addr = "ff02::1:ff00:1".parse().unwrap();
    let b = PacketBuilder::ethernet2(ROUTER_MAC, [0x33, 0x33, 0xff, 0, 0, 1])
        .ipv6(ip6("2001:db8:10::1"), group.octets(), 255)
        .icmpv6_raw(135, 0, [0; 4]);
    let mut v = Vec::new();
    b.write(&mut v, &ns[8..]).unwrap();
    let (verdict, tx) = lab.send(0, v);
    assert_eq!(verdict, Verdict::Reply { port: 0 });
    let p = SlicedPacket::from_ethernet(&tx[0].1).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source(), target.octets());
    assert_eq!(ip.header().destination(), ip6("2001:db8:10::1"));
    assert_eq!(ip.header().hop_limit(), 255);
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!(icmp.type_u8(), 136);
    let h = ip.header();
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type()
            .calc_checksum(h.source(), h.destination(), icmp.payload())
            .unwrap()
    );
    assert_eq!(&icmp.payload()[..16], &target.octets());
    assert_eq!(&icmp.payload()[16..24], &[2, 1, 2, 0, 0, 0, 0x0b, 0]);
}

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

#[test]
fn echo_to_a_vip_is_answered_in_both_families() {
    let mut lab = Lab::new();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, UP_MAC)
        .ipv4([192, 0, 2, 100], [203, 0, 113, 10], 60)
        .icmpv4_echo_request(7, 1)
        .write(&mut v, b"ping")
        .unwrap();
    let (verdict, tx) = lab.send(0, v);
    assert_eq!(verdict, Verdict::Reply { port: 0 });
    let p = SlicedPacket::from_ethernet(&tx[0].1).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source(), [203, 0, 113, 10]);
    assert_eq!(ip.header().destination(), [192, 0, 2, 100]);
    let hdr = ip.header().to_header();
    assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!(
        icmp.icmp_type(),
        Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 7, seq: 1 })
    );
    assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));

    let mut v = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, UP_MAC)
        .ipv6(ip6("2001:db8:c::5"), ip6("2001:db8::1"), 60)
        .icmpv6_echo_request(9, 2)
        .write(&mut v, b"ping6")
        .unwrap();
    let (verdict, tx) = lab.send(0, v);
    assert_eq!(verdict, Verdict::Reply { port: 0 });
    let p = SlicedPacket::from_ethernet(&tx[0].1).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!()
    };
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!(
        icmp.icmp_type(),
        Icmpv6Type::EchoReply(etherparse::IcmpEchoHeader { id: 9, seq: 2 })
    );
    let h = ip.header();
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type()
            .calc_checksum(h.source(), h.destination(), icmp.payload())
            .unwrap()
    );
}

#[test]
fn unresolved_backend_is_held_until_arp_answers() {
    let topo = TOPOLOGY.replace(
        "backends = [{ address = \"198.51.100.101\", port = 8080 }, { address = \"198.51.100.102\", port = 8080 }]",
        "backends = [{ address = \"198.51.100.103\", port = 8080 }]",
    );
    let mut lab = Lab::with(&topo, &Overrides::default());
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    let (v, tx) = lab.send(0, syn.clone());
    assert_eq!(v, Verdict::Held);
    // An ARP request went out of the inside port, from the port's address.
    assert_eq!(tx.len(), 1);
    let p = SlicedPacket::from_ethernet(&tx[0].1).unwrap();
    let Some(NetSlice::Arp(a)) = p.net else {
        panic!("expected ARP")
    };
    assert_eq!(a.operation(), ArpOperation::REQUEST);
    assert_eq!(a.target_protocol_addr(), [198, 51, 100, 103]);
    assert_eq!(a.sender_protocol_addr(), [198, 51, 100, 1]);
    // A retransmitted SYN waits too, without a second request within a second.
    let (v, tx) = lab.send(0, syn);
    assert_eq!((v, tx.len()), (Verdict::Held, 0));

    let reply = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REPLY,
        &backend_mac(3),
        &[198, 51, 100, 103],
        &IN_MAC,
        &[198, 51, 100, 1],
    )
    .unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(backend_mac(3), IN_MAC)
        .arp(reply)
        .write(&mut v)
        .unwrap();
    let (verdict, tx) = lab.send(1, v);
    assert_eq!(verdict, Verdict::Kernel);
    assert_eq!(tx.len(), 2, "both held SYNs leave");
    for (port, f) in &tx {
        assert_eq!(*port, 1);
        let s = seen(f);
        assert_eq!(s.dmac, backend_mac(3));
        assert_eq!(s.dst, ip("198.51.100.103"));
    }
}

#[test]
fn a_new_vip_is_announced_by_gratuitous_arp() {
    let mut lab = Lab::new();
    let topo = format!(
        "{TOPOLOGY}\n[[services]]\nname = \"new\"\nvip = \"198.51.100.200\"\nport = 80\nprotocol = \"tcp\"\n"
    );
    let t = anylb_conf::load_str(&topo, "t").unwrap();
    let snap = lab
        .builder
        .build(
            &t.resolve("lb1").unwrap(),
            &[UP_MAC, IN_MAC],
            1,
            &Overrides::default(),
        )
        .unwrap();
    lab.worker.set_snapshot(Arc::new(snap));
    let mut out: Output<VecFrame> = Output::new(false);
    lab.worker.poll(lab.now + 1, &mut lab.alloc, &mut out);
    assert_eq!(out.tx.len(), 1);
    let (port, f) = &out.tx[0];
    assert_eq!(*port, 1, "announced on the port whose subnet holds it");
    let p = SlicedPacket::from_ethernet(f.data()).unwrap();
    let Some(NetSlice::Arp(a)) = p.net else { panic!() };
    assert_eq!(a.sender_protocol_addr(), [198, 51, 100, 200]);
    assert_eq!(a.target_protocol_addr(), [198, 51, 100, 200]);
}

#[test]
fn ttl_expiring_at_the_vip_sends_time_exceeded_to_the_client() {
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
    syn[14 + 8] = 1;
    let c = anylb_dataplane::wire::checksum::finish(anylb_dataplane::wire::checksum::sum(&{
        let mut h = syn[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    }));
    syn[24..26].copy_from_slice(&c.to_be_bytes());
    let (v, tx) = lab.send(0, syn);
    assert_eq!(
        v,
        Verdict::IcmpError {
            port: 0,
            reason: DropReason::Ttl
        }
    );
    let p = SlicedPacket::from_ethernet(&tx[0].1).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source(), [192, 0, 2, 11]);
    assert_eq!(ip.header().destination(), [192, 0, 2, 100]);
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!(icmp.type_u8(), 11);
    assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
    assert_eq!(lab.worker.stats.drops_of(DropReason::Ttl), 1);
}

/// Opens a flow and returns the frame the backend received.
fn open_flow(lab: &mut Lab, client: (&str, u16), vip: (&str, u16)) -> Seen {
    let syn = tcp(ROUTER_MAC, UP_MAC, client, vip, "S", 1, None, b"");
    seen(&lab.forward(0, syn).1)
}

fn frag_needed_from_backend(to_backend: &[u8], mtu: u16) -> Vec<u8> {
    let quoted = &to_backend[14..14 + 20 + 8];
    let src: [u8; 4] = to_backend[30..34].try_into().unwrap();
    let dst: [u8; 4] = to_backend[26..30].try_into().unwrap();
    let mut v = Vec::new();
    let m = mtu.to_be_bytes();
    PacketBuilder::ethernet2(backend_mac(1), IN_MAC)
        .ipv4(src, dst, 64)
        .icmpv4_raw(3, 4, [0, 0, m[0], m[1]])
        .write(&mut v, quoted)
        .unwrap();
    v
}

#[test]
fn frag_needed_from_a_backend_reaches_the_client_about_its_own_packet() {
    let mut lab = Lab::new();
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    let (_, to_backend) = lab.forward(0, syn);
    let (v, tx) = lab.send(1, frag_needed_from_backend(&to_backend, 1400));
    assert_eq!(v, Verdict::Forward { port: 0 });
    let p = SlicedPacket::from_ethernet(&tx[0].1).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source(), [203, 0, 113, 10]);
    assert_eq!(ip.header().destination(), [192, 0, 2, 100]);
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 4));
    assert_eq!(icmp.bytes5to8(), [0, 0, 0x05, 0x78]);
    assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
    // The quoted packet is the client's: client → VIP:80, with a valid header checksum.
    let q = etherparse::Ipv4HeaderSlice::from_slice(icmp.payload()).unwrap();
    assert_eq!(
        (q.source(), q.destination()),
        ([192, 0, 2, 100], [203, 0, 113, 10])
    );
    assert_eq!(q.to_header().calc_header_checksum(), q.header_checksum());
    let ports = &icmp.payload()[20..24];
    assert_eq!(ports, &[0x9c, 0x40, 0, 80]);
}

#[test]
fn frag_needed_for_a_nat64_flow_becomes_packet_too_big() {
    let mut lab = Lab::new();
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("2001:db8:c::5", 50000),
        ("2001:db8::64", 80),
        "S",
        1,
        None,
        b"",
    );
    let (_, to_backend) = lab.forward(0, syn);
    let (v, tx) = lab.send(1, frag_needed_from_backend(&to_backend, 1400));
    assert_eq!(v, Verdict::Forward { port: 0 });
    let p = SlicedPacket::from_ethernet(&tx[0].1).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("expected IPv6")
    };
    assert_eq!(ip.header().source(), ip6("2001:db8::64"));
    assert_eq!(ip.header().destination(), ip6("2001:db8:c::5"));
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        panic!()
    };
    assert_eq!(icmp.type_u8(), 2);
    assert_eq!(u32::from_be_bytes(icmp.bytes5to8()), 1420);
    let h = ip.header();
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type()
            .calc_checksum(h.source(), h.destination(), icmp.payload())
            .unwrap()
    );
    let q = etherparse::Ipv6HeaderSlice::from_slice(icmp.payload()).unwrap();
    assert_eq!(
        (q.source(), q.destination()),
        (ip6("2001:db8:c::5"), ip6("2001:db8::64"))
    );
}

#[test]
fn port_unreachable_from_a_backend_for_an_unknown_flow_is_dropped() {
    let mut lab = Lab::new();
    let s = open_flow(&mut lab, ("192.0.2.100", 40000), ("203.0.113.10", 80));
    let mut fake = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("198.51.100.16", 1),
        (&s.dst.to_string(), 8080),
        "S",
        1,
        None,
        b"",
    );
    fake[14 + 12..14 + 16].copy_from_slice(&[198, 51, 100, 16]);
    let (v, _) = lab.send(1, frag_needed_from_backend(&fake, 1400));
    assert_eq!(
        v,
        Verdict::Drop {
            reason: DropReason::NoConnection
        }
    );
}

#[test]
fn every_backend_drained_drops_new_flows_with_no_backend() {
    let mut ov = Overrides::default();
    ov.weights.insert(("web4".into(), ip("198.51.100.101"), 8080), 0);
    ov.weights.insert(("web4".into(), ip("198.51.100.102"), 8080), 0);
    let mut lab = Lab::with(TOPOLOGY, &ov);
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    assert_eq!(
        lab.send(0, syn).0,
        Verdict::Drop {
            reason: DropReason::NoBackend
        }
    );
}

#[test]
fn draining_a_backend_keeps_its_established_connections() {
    let mut lab = Lab::new();
    let s = open_flow(&mut lab, ("192.0.2.100", 40000), ("203.0.113.10", 80));
    let mut ov = Overrides::default();
    ov.weights.insert(("web4".into(), s.dst, 8080), 0);
    let snap = lab.builder.build(&lab.cfg, &[UP_MAC, IN_MAC], 1, &ov).unwrap();
    lab.worker.set_snapshot(Arc::new(snap));
    let data = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "AP",
        2,
        None,
        b"more",
    );
    let d = seen(&lab.forward(0, data).1);
    assert_eq!((d.dst, d.sport), (s.dst, s.sport));
    // New flows avoid the drained backend.
    for port in 41000..41020 {
        let n = open_flow(&mut lab, ("192.0.2.100", port), ("203.0.113.10", 80));
        assert_ne!(n.dst, s.dst);
    }
}

#[test]
fn no_new_connection_reaches_a_drained_backend_through_an_old_entry() {
    // Issue 20.5: a client that closed second reuses its port at once, while the entry may still be closing;
    // a SYN retransmitted to a backend that went down sticks to it too. Either way the new SYN must be
    // scheduled afresh, away from the backend with weight 0.
    for (round, close) in [(0u16, Some("F")), (1, Some("AF")), (2, None)].into_iter() {
        let mut lab = Lab::new();
        let client = ("192.0.2.100", 40000 + round);
        let vip = ("203.0.113.10", 80);
        let s = open_flow(&mut lab, client, vip);
        if let Some(flags) = close {
            // The backend answers, the client completes the handshake and sends its FIN: the entry is
            // closing (CloseWait), not TimeWait.
            let back = tcp(
                backend_mac(if s.dst == ip("198.51.100.101") { 1 } else { 2 }),
                IN_MAC,
                (&s.dst.to_string(), s.dport),
                (&s.src.to_string(), s.sport),
                "SA",
                7,
                None,
                b"",
            );
            lab.forward(1, back);
            lab.forward(0, tcp(ROUTER_MAC, UP_MAC, client, vip, "A", 2, None, b""));
            lab.forward(0, tcp(ROUTER_MAC, UP_MAC, client, vip, flags, 2, None, b""));
        }
        let mut ov = Overrides::default();
        ov.weights.insert(("web4".into(), s.dst, 8080), 0);
        let snap = lab.builder.build(&lab.cfg, &[UP_MAC, IN_MAC], 1, &ov).unwrap();
        lab.worker.set_snapshot(Arc::new(snap));
        let again = open_flow(&mut lab, client, vip);
        assert_ne!(
            again.dst, s.dst,
            "round {round}: the new SYN went to the drained backend"
        );
        assert_eq!(
            lab.worker.conns().len(),
            1,
            "round {round}: the old entry was replaced"
        );
    }
}

#[test]
fn a_full_table_drops_new_flows_and_keeps_old_ones() {
    let topo = TOPOLOGY.replace("connections_per_worker = 1024", "connections_per_worker = 2");
    let mut lab = Lab::with(&topo, &Overrides::default());
    let a = open_flow(&mut lab, ("192.0.2.100", 40000), ("203.0.113.10", 80));
    open_flow(&mut lab, ("192.0.2.100", 40001), ("203.0.113.10", 80));
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40002),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    assert_eq!(
        lab.send(0, syn).0,
        Verdict::Drop {
            reason: DropReason::TableFull
        }
    );
    let data = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "A",
        2,
        None,
        b"x",
    );
    assert_eq!(seen(&lab.forward(0, data).1).sport, a.sport);
}

#[test]
fn an_exhausted_pool_is_a_counted_drop() {
    let topo = TOPOLOGY.replacen("ports = \"2000-2999\"", "ports = \"2000-2001\"", 1);
    let mut lab = Lab::with(&topo, &Overrides::default());
    // Two IPv4 local addresses with two ports each.
    for port in 0..4 {
        open_flow(&mut lab, ("192.0.2.100", 40000 + port), ("203.0.113.10", 80));
    }
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 45000),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    assert_eq!(
        lab.send(0, syn).0,
        Verdict::Drop {
            reason: DropReason::PoolExhausted
        }
    );
    assert_eq!(lab.worker.stats.drops_of(DropReason::PoolExhausted), 1);
}

#[test]
fn garbage_frames_are_counted_drops_not_panics() {
    let mut lab = Lab::new();
    assert_eq!(
        lab.send(0, vec![1, 2, 3]).0,
        Verdict::Drop {
            reason: DropReason::Malformed
        }
    );
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
    syn.truncate(14 + 20 + 10);
    assert_eq!(
        lab.send(0, syn).0,
        Verdict::Drop {
            reason: DropReason::Malformed
        }
    );
}

#[test]
fn a_truncated_ipv4_header_is_a_counted_drop() {
    // Found by the pipeline fuzzer: 15 bytes after the Ethernet header used to panic while warming the burst.
    let mut lab = Lab::new();
    for n in 0..20 {
        let mut f = vec![0u8; 14 + n];
        f[..6].copy_from_slice(&UP_MAC);
        f[6..12].copy_from_slice(&ROUTER_MAC);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        if n > 0 {
            f[14] = 0x45;
        }
        let (v, _) = lab.send(0, f);
        assert!(
            matches!(v, Verdict::Drop { .. } | Verdict::Kernel),
            "{n} bytes: {v:?}"
        );
    }
}

/// A reply from the backend to the local address and port `to_backend` came from.
fn reply_to(to_backend: &[u8]) -> Vec<u8> {
    let p = SlicedPacket::from_ethernet(to_backend).unwrap();
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (&p.net, &p.transport) else {
        panic!("not TCP/IPv4")
    };
    let (lip, backend) = (ip.header().source(), ip.header().destination());
    let mut v = Vec::new();
    PacketBuilder::ethernet2(backend_mac(1), IN_MAC)
        .ipv4(backend, lip, 64)
        .tcp(t.destination_port(), t.source_port(), 9000, 64000)
        .syn()
        .ack(t.sequence_number() + 1)
        .write(&mut v, b"")
        .unwrap();
    v
}

#[test]
fn withheld_local_addresses_are_not_answered_but_still_translate_and_are_announced_when_back() {
    let mut lab = Lab::new();
    let syn = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    let (_, to_backend) = lab.forward(0, syn);
    let lip: [u8; 4] = to_backend[26..30].try_into().unwrap();
    // The node waits for its resync (or its successor still serves its addresses): its local addresses are
    // neither answered for nor announced, but a reply that still comes here translates.
    let withheld = Overrides {
        withhold_lips: true,
        ..Overrides::default()
    };
    let snap = lab
        .builder
        .build(&lab.cfg, &[UP_MAC, IN_MAC], 1, &withheld)
        .unwrap();
    lab.worker.set_snapshot(Arc::new(snap));
    let mut out: Output<VecFrame> = Output::new(false);
    lab.worker.poll(lab.now + 1, &mut lab.alloc, &mut out);
    assert!(out.tx.is_empty(), "nothing announced");
    assert_eq!(
        lab.send(1, arp_request([198, 51, 100, 101], lip)).0,
        Verdict::Kernel,
        "ARP for a withheld address is not answered"
    );
    assert_eq!(lab.send(1, reply_to(&to_backend)).0, Verdict::Forward { port: 0 });
    // Its own again: announced by gratuitous ARP, and answered.
    let snap = lab
        .builder
        .build(&lab.cfg, &[UP_MAC, IN_MAC], 1, &Overrides::default())
        .unwrap();
    lab.worker.set_snapshot(Arc::new(snap));
    let mut out: Output<VecFrame> = Output::new(false);
    lab.worker.poll(lab.now + 2, &mut lab.alloc, &mut out);
    let announced: Vec<[u8; 4]> = out
        .tx
        .iter()
        .filter_map(|(_, f)| match SlicedPacket::from_ethernet(f.data()).ok()?.net? {
            NetSlice::Arp(a) => a.sender_protocol_addr().try_into().ok(),
            _ => None,
        })
        .collect();
    assert!(announced.contains(&lip), "{announced:?}");
    assert_eq!(
        lab.send(1, arp_request([198, 51, 100, 101], lip)).0,
        Verdict::Reply { port: 1 }
    );
}
