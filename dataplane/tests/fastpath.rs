//! The established fast path against the general path: two workers on the same topology, one with the fast
//! path and one without, get the same frames and must answer with the same verdicts, the same bytes out and
//! the same counters (but the fast-path count) — over handshakes, data both ways, teardown, UDP, for IPv4,
//! IPv6 and NAT64 connections, and frames the fast path must leave alone (bad checksums, TTL 1, fragments, IP
//! options or IPv6 extension headers, padding, truncation).

#![allow(clippy::unwrap_used)]

mod common;

use anylb_dataplane::snapshot::Overrides;
use anylb_dataplane::stats::Stats;
use anylb_dataplane::worker::Verdict;
use common::*;
use proptest::prelude::*;

/// Both workers; the second never takes the fast path.
struct Pair {
    fast: Lab,
    slow: Lab,
}

type Sent = (Verdict, Vec<(u16, Vec<u8>)>);

impl Pair {
    fn new() -> Pair {
        let mut slow = Lab::new();
        slow.worker.set_fast_path(false);
        Pair {
            fast: Lab::new(),
            slow,
        }
    }

    fn send(&mut self, port: u16, frame: Vec<u8>) -> Sent {
        let a = self.fast.send(port, frame.clone());
        let b = self.slow.send(port, frame);
        assert_eq!(a, b, "fast and general paths differ");
        let strip = |s: &Stats| Stats {
            fast_path: 0,
            ..s.clone()
        };
        assert_eq!(strip(&self.fast.worker.stats), strip(&self.slow.worker.stats));
        assert_eq!(self.slow.worker.stats.fast_path, 0);
        // The same connections in the same states with the same expiry, and the same backend counters
        // (connections active, packets and bytes each way).
        let conns = |l: &Lab| {
            let mut v: Vec<_> = l
                .worker
                .conns()
                .iter()
                .map(|(_, c)| (format!("{:?}", c.inbound_tuple()), c.state(), c.expires))
                .collect();
            v.sort();
            v
        };
        assert_eq!(conns(&self.fast), conns(&self.slow), "connection tables differ");
        assert_eq!(self.fast.worker.counters(), self.slow.worker.counters());
        a
    }

    fn advance(&mut self, ms: u64) {
        self.fast.advance(ms);
        self.slow.advance(ms);
    }
}

/// The IPv4 header checksum recomputed after a change.
fn fix_ip_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    f[24] = 0;
    f[25] = 0;
    let mut s: u32 = 0;
    for c in f[14..14 + ihl].chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

/// Ways to spoil a frame the fast path would otherwise take.
#[derive(Debug, Clone, Copy)]
enum Spoil {
    None,
    BadIpChecksum,
    Ttl1,
    Fragment,
    IpOptions,
    Padding,
    Truncated,
    /// The transport checksum wrong (the IP header's still right).
    BadL4Checksum,
}

fn spoil(mut f: Vec<u8>, how: Spoil) -> Vec<u8> {
    if f[12..14] == [0x86, 0xdd] {
        return spoil6(f, how);
    }
    match how {
        Spoil::None => {}
        Spoil::BadIpChecksum => f[24] ^= 0x5a,
        Spoil::Ttl1 => {
            f[22] = 1;
            fix_ip_checksum(&mut f);
        }
        Spoil::Fragment => {
            f[20] |= 0x20;
            fix_ip_checksum(&mut f);
        }
        Spoil::IpOptions => {
            // Four bytes of NOP / end-of-options after the fixed header.
            f.splice(34..34, [1, 1, 1, 0]);
            f[14] = 0x46;
            let total = u16::from_be_bytes([f[16], f[17]]) + 4;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            fix_ip_checksum(&mut f);
        }
        Spoil::Padding => f.extend_from_slice(&[0; 12]),
        Spoil::Truncated => f.truncate(14 + 20 + 10),
        // The checksum's low byte: TCP's at 16 into the segment, UDP's at 6.
        Spoil::BadL4Checksum => {
            let at = 34 + if f[23] == 6 { 17 } else { 7 };
            f[at] ^= 0x5a;
        }
    }
    f
}

/// The IPv6 versions: hop limit 1, a destination-options header in front of the transport header (for
/// fragments and options alike), a payload length past the frame.
fn spoil6(mut f: Vec<u8>, how: Spoil) -> Vec<u8> {
    match how {
        Spoil::None => {}
        Spoil::Ttl1 => f[21] = 1,
        Spoil::Fragment | Spoil::IpOptions => {
            let next = f[20];
            f.splice(54..54, [next, 0, 1, 4, 0, 0, 0, 0]);
            f[20] = 60;
            let plen = u16::from_be_bytes([f[18], f[19]]) + 8;
            f[18..20].copy_from_slice(&plen.to_be_bytes());
        }
        Spoil::BadIpChecksum => {
            let plen = u16::from_be_bytes([f[18], f[19]]) + 100;
            f[18..20].copy_from_slice(&plen.to_be_bytes());
        }
        Spoil::Padding => f.extend_from_slice(&[0; 12]),
        Spoil::Truncated => f.truncate(14 + 40 + 10),
        Spoil::BadL4Checksum => {
            let at = 54 + if f[20] == 6 { 17 } else { 7 };
            f[at] ^= 0x5a;
        }
    }
    f
}

/// Where the SYN of a flow went: backend endpoint, local endpoint, backend MAC.
type BackendSide = ((String, u16), (String, u16), [u8; 6]);

/// One client flow: its client endpoint, the VIP, and the backend side learnt from the SYN's translation.
struct Flow {
    client: (String, u16),
    vip: &'static str,
    backend: Option<BackendSide>,
    seq: u32,
}

impl Flow {
    fn new(client: &str, port: u16, vip: &'static str) -> Flow {
        Flow {
            client: (client.into(), port),
            vip,
            backend: None,
            seq: 1,
        }
    }

    fn inbound(&self, flags: &str, payload: &[u8]) -> Vec<u8> {
        tcp(
            ROUTER_MAC,
            UP_MAC,
            (&self.client.0, self.client.1),
            (self.vip, 80),
            flags,
            self.seq,
            None,
            payload,
        )
    }

    fn datagram(&self) -> Vec<u8> {
        udp(
            ROUTER_MAC,
            UP_MAC,
            (&self.client.0, self.client.1),
            (self.vip, 53),
            b"q",
        )
    }

    fn reply(&self, flags: &str, payload: &[u8]) -> Option<Vec<u8>> {
        let ((b, bp), (l, lp), mac) = self.backend.as_ref()?;
        Some(tcp(
            mac.to_owned(),
            IN_MAC,
            (b, *bp),
            (l, *lp),
            flags,
            7,
            None,
            payload,
        ))
    }
}

/// Opens `flow` with a SYN and learns where it went.
fn open(p: &mut Pair, flow: &mut Flow) {
    let (v, tx) = p.send(0, flow.inbound("S", b""));
    if let (Verdict::Forward { .. }, Some((_, f))) = (v, tx.first()) {
        let s = seen(f);
        flow.backend = Some(((s.dst.to_string(), s.dport), (s.src.to_string(), s.sport), s.dmac));
    }
}

#[test]
fn established_segments_take_the_fast_path_with_the_same_result() {
    for (client, vip) in [
        ("192.0.2.100", "203.0.113.10"),
        ("2001:db8:c::100", "2001:db8::1"),
        ("2001:db8:c::100", "2001:db8::64"),
    ] {
        one_flow(client, vip);
    }
}

fn one_flow(client: &str, vip: &'static str) {
    let mut p = Pair::new();
    let mut flow = Flow::new(client, 40000, vip);
    open(&mut p, &mut flow);
    p.send(1, flow.reply("SA", b"").unwrap());
    flow.seq = 2;
    p.send(0, flow.inbound("A", b""));
    assert_eq!(
        p.fast.worker.stats.fast_path, 1,
        "the SYN and SYN-ACK take the general path, the handshake's last ACK the fast one"
    );
    for i in 0..10u32 {
        p.send(0, flow.inbound("AP", format!("request {i}").as_bytes()));
        p.send(1, flow.reply("AP", b"response").unwrap());
    }
    assert_eq!(p.fast.worker.stats.fast_path, 21);
    // Spoilt frames go the general way (and fail or succeed there the same).
    for how in [
        Spoil::BadIpChecksum,
        Spoil::Ttl1,
        Spoil::Fragment,
        Spoil::IpOptions,
        Spoil::Truncated,
    ] {
        p.send(0, spoil(flow.inbound("AP", b"x"), how));
    }
    assert_eq!(p.fast.worker.stats.fast_path, 21);
    // Ethernet padding is trimmed on the fast path too.
    p.send(0, spoil(flow.inbound("A", b""), Spoil::Padding));
    assert_eq!(p.fast.worker.stats.fast_path, 22);
    // A SYN on the established connection (a retransmission) keeps it and its backend: fast path, once
    // its checksum is found good; with a bad one it is the general path's to drop.
    p.send(0, flow.inbound("S", b""));
    assert_eq!(p.fast.worker.stats.fast_path, 23);
    p.send(0, spoil(flow.inbound("S", b""), Spoil::BadL4Checksum));
    assert_eq!(p.fast.worker.stats.fast_path, 23);
    // Teardown changes the state, on the fast path too; a FIN with a bad checksum changes nothing.
    p.send(0, spoil(flow.inbound("AF", b""), Spoil::BadL4Checksum));
    assert_eq!(p.fast.worker.stats.fast_path, 23);
    p.send(0, spoil(flow.inbound("AF", b""), Spoil::Padding));
    p.send(1, flow.reply("AF", b"").unwrap());
    p.send(0, flow.inbound("A", b""));
    assert_eq!(p.fast.worker.stats.fast_path, 26);
    // Closed: the client's next segment may be a newer flow's, the general path's to judge.
    p.send(0, flow.inbound("AP", b"again"));
    assert_eq!(p.fast.worker.stats.fast_path, 26);
    // UDP datagrams after the first.
    let dns = Flow::new(client, 5353, vip);
    for _ in 0..3 {
        p.send(0, dns.datagram());
    }
    assert_eq!(p.fast.worker.stats.fast_path, 28, "{client} -> {vip}");
}

fn spoils() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        6 => Just(Spoil::None),
        1 => Just(Spoil::BadIpChecksum),
        1 => Just(Spoil::Ttl1),
        1 => Just(Spoil::Fragment),
        1 => Just(Spoil::IpOptions),
        1 => Just(Spoil::Padding),
        1 => Just(Spoil::Truncated),
        1 => Just(Spoil::BadL4Checksum),
    ]
}

const KINDS: [&str; 10] = ["S", "A", "AP", "AF", "R", "SA", "udp", "F", "RA", "SF"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random segments of six flows (IPv4, IPv6, NAT64) in both directions, some spoilt, with the clock moving: both paths
    /// always agree.
    #[test]
    fn both_paths_agree_on_random_traffic(
        events in proptest::collection::vec((0usize..6, any::<bool>(), 0usize..KINDS.len(), spoils(), 0u64..3000), 1..80)
    ) {
        let mut p = Pair::new();
        let mut flows = [
            Flow::new("192.0.2.100", 40000, "203.0.113.10"),
            Flow::new("192.0.2.101", 40001, "203.0.113.10"),
            Flow::new("2001:db8:c::100", 40000, "2001:db8::1"),
            Flow::new("2001:db8:c::101", 40001, "2001:db8::1"),
            Flow::new("2001:db8:c::102", 40002, "2001:db8::64"),
            Flow::new("2001:db8:c::103", 40003, "2001:db8::64"),
        ];
        for (i, reply, kind, how, ms) in events {
            let fl = &mut flows[i];
            let k = KINDS[kind];
            if k == "S" && !reply {
                open(&mut p, fl);
                continue;
            }
            let frame = match (k, reply) {
                ("udp", _) => Some(fl.datagram()),
                (_, false) => Some(fl.inbound(k, b"data")),
                (_, true) => fl.reply(k, b"data"),
            };
            if let Some(f) = frame {
                p.send(if reply { 1 } else { 0 }, spoil(f, how));
            }
            fl.seq = fl.seq.wrapping_add(4);
            p.advance(ms);
        }
    }
}

/// A backend's reply to a local port in the other worker's slice, with no connection here (RSS put it on this
/// worker's queue), is handed to that worker, by the fast path without the general parsing, with the same
/// verdict and counters as the general path; a port of this worker's own slice is not.
#[test]
fn reply_of_another_worker_is_handed_over() {
    let worker0 = |fast: bool| {
        let mut lab = Lab::worker_of(TOPOLOGY, &Overrides::default(), 2, 0);
        lab.worker.set_fast_path(fast);
        lab
    };
    let (mut fast, mut slow) = (worker0(true), worker0(false));
    for (port, owner) in [(2001, Some(1)), (2003, Some(1)), (2002, None)] {
        let reply = tcp(
            backend_mac(1),
            IN_MAC,
            ("198.51.100.101", 8080),
            ("198.51.100.16", port),
            "A",
            7,
            None,
            b"",
        );
        let (a, b) = (fast.send(1, reply.clone()), slow.send(1, reply));
        assert_eq!(a, b, "port {port}: fast and general paths differ");
        match owner {
            Some(w) => assert_eq!(a.0, Verdict::Redirect { worker: w }, "port {port}"),
            None => assert!(matches!(a.0, Verdict::Drop { .. }), "port {port}: {:?}", a.0),
        }
    }
    assert_eq!(fast.worker.stats.redirected, 2);
    assert_eq!(fast.worker.stats.fast_path, 2, "handed over by the fast path");
    let strip = |s: &Stats| Stats {
        fast_path: 0,
        ..s.clone()
    };
    assert_eq!(strip(&fast.worker.stats), strip(&slow.worker.stats));
}

/// A reload that takes the IPv4 local addresses away: the connection goes on inbound (the general path
/// refreshes it, then the fast path takes it again), but a backend's reply to its old local address is not
/// translated any more (the kernel's, now) on either path. The fast path has two reasons not to take it: the
/// reload forgot the connection's next hops (a reply's is cached again only by the general path, which
/// translates it only to a local address), and what it remembered of destinations is cleared with the
/// snapshot.
#[test]
fn a_local_address_taken_away_by_a_reload_is_noticed() {
    let mut p = Pair::new();
    let mut flow = Flow::new("192.0.2.100", 40000, "203.0.113.10");
    open(&mut p, &mut flow);
    p.send(1, flow.reply("SA", b"").unwrap());
    flow.seq = 2;
    p.send(0, flow.inbound("A", b""));
    for _ in 0..2 {
        assert!(matches!(
            p.send(1, flow.reply("A", b"").unwrap()).0,
            Verdict::Forward { .. }
        ));
    }
    let before = p.fast.worker.stats.fast_path;
    for lab in [&mut p.fast, &mut p.slow] {
        let mut cfg = lab.cfg.clone();
        for pool in &mut cfg.node.local_addresses {
            if pool.prefix.addr().is_ipv4() {
                pool.prefix = "198.51.100.20/31".parse().unwrap();
            }
        }
        let snap = lab
            .builder
            .build(&cfg, &[UP_MAC, IN_MAC], 1, &Overrides::default())
            .unwrap();
        lab.worker.set_snapshot(std::sync::Arc::new(snap));
    }
    for _ in 0..2 {
        assert!(matches!(
            p.send(0, flow.inbound("A", b"")).0,
            Verdict::Forward { .. }
        ));
    }
    let v = p.send(1, flow.reply("A", b"").unwrap()).0;
    assert!(!matches!(v, Verdict::Forward { .. }), "{v:?}");
    assert_eq!(
        p.fast.worker.stats.fast_path,
        before + 1,
        "the second inbound segment only"
    );
}
