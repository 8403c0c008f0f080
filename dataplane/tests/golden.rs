//! Golden replay tests: each scenario's input capture is replayed through one worker and the transmitted
//! frames must equal the stored output capture byte for byte, the verdicts the stored list.
//!
//! The inputs are generated here (backend frames answer what the pipeline actually sent), and the test also
//! checks that generating them again gives the stored input. After an intended change of behaviour, run
//! `ANYLB_BLESS=1 cargo test -p anylb-dataplane --test golden` and review the diff of `tests/golden/`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use anylb_dataplane::pcap::{self, Record};
use anylb_dataplane::replay;
use anylb_dataplane::snapshot::Overrides;
use common::*;
use etherparse::PacketBuilder;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Builds a scenario's input frames, talking to a live worker so that backend frames answer what it sent.
struct Gen {
    lab: Lab,
    frames: Vec<Vec<u8>>,
}

impl Gen {
    fn new(topology: &str) -> Gen {
        let text = std::fs::read_to_string(dir().join(topology)).unwrap();
        let mut lab = Lab::with(&text, &Overrides::default());
        // The lab's clock reads the replay's wall-clock time (its records' timestamps), so that SYN cookies
        // minted here are the ones the replay mints.
        lab.worker.set_wall_clock(REPLAY_START_MS - lab.now);
        Gen {
            lab,
            frames: Vec::new(),
        }
    }

    /// Feeds a frame; returns what was transmitted.
    fn send(&mut self, port: u16, f: Vec<u8>) -> Vec<(u16, Vec<u8>)> {
        self.frames.push(f.clone());
        self.lab.send(port, f).1
    }

    /// A client → VIP TCP segment; returns the frame the backend got, if one.
    fn client_tcp(
        &mut self,
        client: (&str, u16),
        vip: (&str, u16),
        flags: &str,
        payload: &[u8],
    ) -> Option<Seen> {
        let f = tcp(
            ROUTER_MAC,
            UP_MAC,
            client,
            vip,
            flags,
            100,
            if flags == "S" { Some(1460) } else { None },
            payload,
        );
        self.send(0, f)
            .into_iter()
            .find(|(p, _)| *p == 1)
            .map(|(_, f)| seen(&f))
    }

    /// The backend's answer to `to`, the frame it received.
    fn backend_tcp(&mut self, to: &Seen, flags: &str, payload: &[u8]) {
        let f = tcp(
            to.dmac,
            IN_MAC,
            (&to.dst.to_string(), to.dport),
            (&to.src.to_string(), to.sport),
            flags,
            500,
            if flags == "SA" { Some(1460) } else { None },
            payload,
        );
        self.send(1, f);
    }

    fn records(&self) -> Vec<Record> {
        self.frames
            .iter()
            .enumerate()
            .map(|(i, f)| Record {
                ts_ns: (REPLAY_START_MS + i as u64) * 1_000_000,
                data: f.clone(),
            })
            .collect()
    }
}

/// Wall-clock time of the first input record (ms since the Unix epoch); each next one is 1 ms later.
const REPLAY_START_MS: u64 = 1_700_000_000_000;

/// A SYN-proxied conversation of `client` with `vip`: SYN answered with a cookie, an ACK with a bad cookie
/// dropped, the valid ACK and the request held while the backend's SYN goes out, the backend's SYN-ACK
/// splicing the handshakes, the answer shifted and rescaled, then the close.
fn proxied_conversation(g: &mut Gen, client: (&str, u16), vip: (&str, u16)) {
    use etherparse::TcpOptionElement as O;
    let up = (ROUTER_MAC, UP_MAC);
    let opts = [
        O::MaximumSegmentSize(1400),
        O::SelectiveAcknowledgementPermitted,
        O::Noop,
        O::WindowScale(6),
    ];
    let segment = |macs, src, dst, flags: &str, seq, ack, window, opts: &[O], payload: &[u8]| {
        tcp_segment(macs, src, dst, flags, Numbers { seq, ack, window }, opts, payload)
    };
    let out = g.send(0, segment(up, client, vip, "S", 1000, 0, 64240, &opts, b""));
    let (seq, _) = seq_len(&out[0].1);
    let cookie = seq.wrapping_add(1);
    assert!(g
        .send(
            0,
            segment(up, client, vip, "A", 1001, cookie.wrapping_add(5), 1003, &[], b"")
        )
        .is_empty());
    let out = g.send(0, segment(up, client, vip, "A", 1001, cookie, 1003, &[], b""));
    let syn = seen(&out[0].1);
    let req = b"GET / HTTP/1.0\r\n\r\n";
    assert!(g
        .send(0, segment(up, client, vip, "AP", 1001, cookie, 1003, &[], req))
        .is_empty());
    let down = (syn.dmac, IN_MAC);
    let (b, l) = ((syn.dst.to_string(), syn.dport), (syn.src.to_string(), syn.sport));
    let (b, l) = ((b.0.as_str(), b.1), (l.0.as_str(), l.1));
    let sa_opts = [O::MaximumSegmentSize(1460), O::WindowScale(9)];
    assert_eq!(
        g.send(1, segment(down, b, l, "SA", 70_000, 1001, 65535, &sa_opts, b""))
            .len(),
        2
    );
    let resp = b"HTTP/1.0 200 OK\r\n\r\nhello";
    let end = 1001 + req.len() as u32;
    g.send(1, segment(down, b, l, "AP", 70_001, end, 100, &[], resp));
    let back = cookie.wrapping_add(resp.len() as u32);
    g.send(0, segment(up, client, vip, "AF", end, back, 1003, &[], b""));
    let bend = 70_001 + resp.len() as u32;
    g.send(1, segment(down, b, l, "AF", bend, end + 1, 100, &[], b""));
    g.send(
        0,
        segment(
            up,
            client,
            vip,
            "A",
            end + 1,
            back.wrapping_add(1),
            1003,
            &[],
            b"",
        ),
    );
}

/// A full TCP conversation: handshake, data both ways, client close, backend close, last ACK.
fn conversation(topology: &str, client: (&str, u16), vip: (&str, u16)) -> Gen {
    let mut g = Gen::new(topology);
    let syn = g.client_tcp(client, vip, "S", b"").unwrap();
    g.backend_tcp(&syn, "SA", b"");
    g.client_tcp(client, vip, "A", b"");
    g.client_tcp(client, vip, "AP", b"GET / HTTP/1.0\r\n\r\n");
    g.backend_tcp(&syn, "AP", b"HTTP/1.0 200 OK\r\n\r\nhello");
    g.client_tcp(client, vip, "AF", b"");
    g.backend_tcp(&syn, "AF", b"");
    g.client_tcp(client, vip, "A", b"");
    g
}

/// The sequence number of a TCP frame and its payload length.
fn seq_len(frame: &[u8]) -> (u32, u32) {
    let s = seen(frame);
    let l4 = if s.src.is_ipv4() { 34 } else { 54 };
    let seq = u32::from_be_bytes(frame[l4 + 4..l4 + 8].try_into().unwrap());
    (seq, s.payload.len() as u32)
}

/// A conversation with real sequence and acknowledgement numbers on both sides (the client-address modes
/// depend on them): the backend acknowledges what it received.
fn numbered_conversation(topology: &str, client: (&str, u16), vip: (&str, u16)) -> Gen {
    let mut g = Gen::new(topology);
    let c = |flags: &str, seq: u32, ack: u32, payload: &[u8]| {
        let mss = if flags == "S" { Some(1460) } else { None };
        tcp_acking(ROUTER_MAC, UP_MAC, client, vip, flags, seq, ack, mss, payload)
    };
    let to_backend = |out: Vec<(u16, Vec<u8>)>| out.into_iter().find(|(p, _)| *p == 1).unwrap().1;
    let syn = to_backend(g.send(0, c("S", 1000, 0, b"")));
    let s = seen(&syn);
    let b = |flags: &str, seq: u32, ack: u32, payload: &[u8]| {
        let mss = if flags == "SA" { Some(1460) } else { None };
        tcp_acking(
            s.dmac,
            IN_MAC,
            (&s.dst.to_string(), s.dport),
            (&s.src.to_string(), s.sport),
            flags,
            seq,
            ack,
            mss,
            payload,
        )
    };
    let (bs, _) = seq_len(&syn);
    g.send(1, b("SA", 5000, bs.wrapping_add(1), b""));
    g.send(0, c("A", 1001, 5001, b""));
    let req = b"GET / HTTP/1.0\r\n\r\n";
    let got = to_backend(g.send(0, c("AP", 1001, 5001, req)));
    let (rs, rl) = seq_len(&got);
    let resp = b"HTTP/1.0 200 OK\r\n\r\nhello";
    g.send(1, b("AP", 5001, rs.wrapping_add(rl), resp));
    let fin_ack = 5001 + resp.len() as u32;
    let fin = to_backend(g.send(0, c("AF", 1001 + req.len() as u32, fin_ack, b"")));
    let (fs, _) = seq_len(&fin);
    g.send(1, b("AF", fin_ack, fs.wrapping_add(1), b""));
    g.send(0, c("A", 1002 + req.len() as u32, fin_ack + 1, b""));
    g
}

fn scenario(name: &str) -> (Gen, &'static str) {
    match name {
        "tcp44" => (
            conversation("lab.toml", ("192.0.2.100", 40000), ("203.0.113.10", 80)),
            "lab.toml",
        ),
        "tcp66" => (
            conversation("lab.toml", ("2001:db8:c::5", 50000), ("2001:db8::1", 80)),
            "lab.toml",
        ),
        "tcp64" => (
            conversation("lab.toml", ("2001:db8:c::5", 50000), ("2001:db8::64", 80)),
            "lab.toml",
        ),
        "udp" => {
            let mut g = Gen::new("lab.toml");
            for (client, vip, backend_mac_) in [
                (("192.0.2.100", 5353), ("203.0.113.10", 53), backend_mac(1)),
                (("2001:db8:c::5", 5353), ("2001:db8::1", 53), backend_mac(0x11)),
                (("2001:db8:c::5", 5354), ("2001:db8::64", 53), backend_mac(2)),
            ] {
                let out = g.send(0, udp(ROUTER_MAC, UP_MAC, client, vip, b"query"));
                let s = seen(&out[0].1);
                g.send(
                    1,
                    udp(
                        backend_mac_,
                        IN_MAC,
                        (&s.dst.to_string(), s.dport),
                        (&s.src.to_string(), s.sport),
                        b"answer",
                    ),
                );
            }
            (g, "lab.toml")
        }
        "arp_ns" => {
            let mut g = Gen::new("lab.toml");
            let mut v = Vec::new();
            let arp = etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                etherparse::ArpOperation::REQUEST,
                &ROUTER_MAC,
                &[192, 0, 2, 1],
                &[0; 6],
                &[203, 0, 113, 10],
            )
            .unwrap();
            PacketBuilder::ethernet2(ROUTER_MAC, [0xff; 6])
                .arp(arp)
                .write(&mut v)
                .unwrap();
            g.send(0, v);
            let target: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
            let mut body = target.octets().to_vec();
            body.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
            let group: std::net::Ipv6Addr = "ff02::1:ff00:1".parse().unwrap();
            let src: std::net::Ipv6Addr = "2001:db8:10::1".parse().unwrap();
            let mut v = Vec::new();
            PacketBuilder::ethernet2(ROUTER_MAC, [0x33, 0x33, 0xff, 0, 0, 1])
                .ipv6(src.octets(), group.octets(), 255)
                .icmpv6_raw(135, 0, [0; 4])
                .write(&mut v, &body)
                .unwrap();
            g.send(0, v);
            (g, "lab.toml")
        }
        "echo" => {
            let mut g = Gen::new("lab.toml");
            let mut v = Vec::new();
            PacketBuilder::ethernet2(ROUTER_MAC, UP_MAC)
                .ipv4([192, 0, 2, 100], [203, 0, 113, 10], 60)
                .icmpv4_echo_request(7, 1)
                .write(&mut v, b"ping")
                .unwrap();
            g.send(0, v);
            let (s, d): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
                ("2001:db8:c::5".parse().unwrap(), "2001:db8::64".parse().unwrap());
            let mut v = Vec::new();
            PacketBuilder::ethernet2(ROUTER_MAC, UP_MAC)
                .ipv6(s.octets(), d.octets(), 60)
                .icmpv6_echo_request(9, 2)
                .write(&mut v, b"ping6")
                .unwrap();
            g.send(0, v);
            (g, "lab.toml")
        }
        "frag_needed" => {
            let mut g = Gen::new("lab.toml");
            for (client, vip) in [
                (("192.0.2.100", 40000), ("203.0.113.10", 80)),
                (("2001:db8:c::5", 50000), ("2001:db8::64", 80)),
            ] {
                let f = tcp(ROUTER_MAC, UP_MAC, client, vip, "S", 100, Some(1460), b"");
                let out = g.send(0, f);
                let to_backend = &out[0].1;
                let s = seen(to_backend);
                let (src, dst): ([u8; 4], [u8; 4]) = (
                    to_backend[30..34].try_into().unwrap(),
                    to_backend[26..30].try_into().unwrap(),
                );
                let mut v = Vec::new();
                PacketBuilder::ethernet2(s.dmac, IN_MAC)
                    .ipv4(src, dst, 64)
                    .icmpv4_raw(3, 4, [0, 0, 0x05, 0x78])
                    .write(&mut v, &to_backend[14..14 + 28])
                    .unwrap();
                g.send(1, v);
            }
            (g, "lab.toml")
        }
        "all_drained" => {
            let mut g = Gen::new("lab.toml");
            g.client_tcp(("192.0.2.100", 40000), ("203.0.113.20", 80), "S", b"");
            (g, "lab.toml")
        }
        "table_full" => {
            let mut g = Gen::new("small-table.toml");
            for port in 40000..40003 {
                g.client_tcp(("192.0.2.100", port), ("203.0.113.10", 80), "S", b"");
            }
            g.client_tcp(("192.0.2.100", 40000), ("203.0.113.10", 80), "A", b"still here");
            (g, "small-table.toml")
        }
        "dr" | "tunnel" | "gue" => {
            // Replies bypass the node in these modes: only the client's side goes through it.
            let topology = if name == "gue" { "gue.toml" } else { "modes.toml" };
            let mut g = Gen::new(topology);
            let (v4, v6) = match name {
                "dr" => ("203.0.113.30", "2001:db8::30"),
                "gue" => ("203.0.113.33", "2001:db8::33"),
                _ => ("203.0.113.31", "2001:db8::31"),
            };
            for (client, vip) in [
                (("192.0.2.100", 40000), (v4, 80)),
                (("2001:db8:c::5", 50000), (v6, 80)),
            ] {
                for (flags, payload) in [
                    ("S", &b""[..]),
                    ("A", b""),
                    ("AP", b"GET / HTTP/1.0\r\n\r\n"),
                    ("AF", b""),
                    ("A", b""),
                ] {
                    let f = tcp(
                        ROUTER_MAC,
                        UP_MAC,
                        client,
                        vip,
                        flags,
                        100,
                        if flags == "S" { Some(1460) } else { None },
                        payload,
                    );
                    g.send(0, f);
                }
            }
            (g, topology)
        }
        "nat44" => (
            conversation("modes.toml", ("192.0.2.100", 40000), ("203.0.113.32", 80)),
            "modes.toml",
        ),
        "nat66" => (
            conversation("modes.toml", ("2001:db8:c::5", 50000), ("2001:db8::32", 80)),
            "modes.toml",
        ),
        "snat" => {
            // A LAN host behind in0 talks to servers behind up0 through the gateway: TCP, UDP and ping.
            let mut g = Gen::new("snat.toml");
            let lan = backend_mac(2);
            let out = g.send(
                1,
                tcp(
                    lan,
                    IN_MAC,
                    ("198.51.100.102", 45000),
                    ("192.0.2.100", 443),
                    "S",
                    1,
                    Some(1460),
                    b"",
                ),
            );
            let s = seen(&out[0].1);
            g.send(
                0,
                tcp(
                    ROUTER_MAC,
                    UP_MAC,
                    ("192.0.2.100", 443),
                    ("192.0.2.12", s.sport),
                    "SA",
                    9,
                    Some(1460),
                    b"",
                ),
            );
            g.send(
                1,
                tcp(
                    lan,
                    IN_MAC,
                    ("198.51.100.102", 45000),
                    ("192.0.2.100", 443),
                    "A",
                    2,
                    None,
                    b"",
                ),
            );
            let out = g.send(
                1,
                udp(
                    lan,
                    IN_MAC,
                    ("198.51.100.102", 5300),
                    ("192.0.2.53", 53),
                    b"query",
                ),
            );
            let u = seen(&out[0].1);
            g.send(
                0,
                udp(
                    ROUTER_MAC,
                    UP_MAC,
                    ("192.0.2.53", 53),
                    ("192.0.2.12", u.sport),
                    b"answer",
                ),
            );
            let mut req = Vec::new();
            PacketBuilder::ethernet2(lan, IN_MAC)
                .ipv4([198, 51, 100, 102], [192, 0, 2, 100], 64)
                .icmpv4_echo_request(0x1234, 1)
                .write(&mut req, b"ping")
                .unwrap();
            let out = g.send(1, req);
            let id = u16::from_be_bytes([out[0].1[38], out[0].1[39]]);
            let mut reply = Vec::new();
            PacketBuilder::ethernet2(ROUTER_MAC, UP_MAC)
                .ipv4([192, 0, 2, 100], [192, 0, 2, 12], 64)
                .icmpv4_echo_reply(id, 1)
                .write(&mut reply, b"ping")
                .unwrap();
            g.send(0, reply);
            // IPv6: TCP and UDP.
            let lan6 = backend_mac(0x11);
            let out = g.send(
                1,
                tcp(
                    lan6,
                    IN_MAC,
                    ("2001:db8:20::101", 45000),
                    ("2001:db8:99::100", 443),
                    "S",
                    1,
                    Some(1440),
                    b"",
                ),
            );
            let s6 = seen(&out[0].1);
            g.send(
                0,
                tcp(
                    ROUTER_MAC,
                    UP_MAC,
                    ("2001:db8:99::100", 443),
                    ("2001:db8:10::12", s6.sport),
                    "SA",
                    9,
                    Some(1440),
                    b"",
                ),
            );
            let out = g.send(
                1,
                udp(
                    lan6,
                    IN_MAC,
                    ("2001:db8:20::101", 5300),
                    ("2001:db8:99::53", 53),
                    b"query",
                ),
            );
            let u6 = seen(&out[0].1);
            g.send(
                0,
                udp(
                    ROUTER_MAC,
                    UP_MAC,
                    ("2001:db8:99::53", 53),
                    ("2001:db8:10::12", u6.sport),
                    b"answer",
                ),
            );
            (g, "snat.toml")
        }
        "proxy_v2" => (
            numbered_conversation("client.toml", ("192.0.2.100", 40000), ("203.0.113.40", 80)),
            "client.toml",
        ),
        "proxy_v2_v6" => (
            numbered_conversation("client.toml", ("2001:db8:c::5", 50000), ("2001:db8::40", 80)),
            "client.toml",
        ),
        "toa" => (
            numbered_conversation("client.toml", ("192.0.2.100", 40000), ("203.0.113.41", 80)),
            "client.toml",
        ),
        "toa64" => (
            numbered_conversation("client.toml", ("2001:db8:c::5", 50000), ("2001:db8::41", 80)),
            "client.toml",
        ),
        "bad_rst" => {
            // An established connection; an RST whose checksum is wrong is dropped and changes nothing (the
            // next data segment still reaches the backend); a genuine RST then closes the connection.
            let (client, vip) = (("192.0.2.100", 40000), ("203.0.113.10", 80));
            let mut g = Gen::new("lab.toml");
            let syn = g.client_tcp(client, vip, "S", b"").unwrap();
            g.backend_tcp(&syn, "SA", b"");
            g.client_tcp(client, vip, "A", b"");
            let mut rst = tcp(ROUTER_MAC, UP_MAC, client, vip, "R", 100, None, b"");
            rst[34 + 16] ^= 0x5a;
            assert!(g.send(0, rst).is_empty(), "the corrupted RST went out");
            assert!(g.client_tcp(client, vip, "AP", b"still here").is_some());
            assert!(g.client_tcp(client, vip, "R", b"").is_some());
            let states: Vec<_> = g.lab.worker.conns().iter().map(|(_, c)| c.state()).collect();
            assert_eq!(states, [anylb_dataplane::tcp_state::State::Close]);
            (g, "lab.toml")
        }
        "quic" => {
            // A QUIC client's Initial (long header) is scheduled; the backend's answer comes back. The client
            // then migrates to new ports (short headers whose connection ID carries the backend's server ID):
            // each new flow goes to the same backend, although new handshakes from such ports are spread over
            // both. An unknown server ID is scheduled like a handshake.
            let vip = ("203.0.113.10", 443);
            let mut g = Gen::new("quic.toml");
            let mut initial = vec![0xc3, 0, 0, 0, 1, 8];
            initial.extend_from_slice(&[0x5a; 8]);
            initial.extend_from_slice(&[0, 0, 0x41, 0x00]);
            let to_backend =
                |out: Vec<(u16, Vec<u8>)>| seen(&out.into_iter().find(|(p, _)| *p == 1).unwrap().1);
            let first = to_backend(g.send(0, udp(ROUTER_MAC, UP_MAC, ("192.0.2.100", 40000), vip, &initial)));
            let reply = udp(
                first.dmac,
                IN_MAC,
                (&first.dst.to_string(), first.dport),
                (&first.src.to_string(), first.sport),
                b"server handshake",
            );
            assert_eq!(g.send(1, reply).len(), 1);
            let id: u8 = if first.dst == ip("198.51.100.101") { 1 } else { 2 };
            let short = |sid: [u8; 2]| {
                let mut p = vec![0x41, 0x01, sid[0], sid[1]];
                p.extend_from_slice(&[0x77; 14]);
                p
            };
            for port in 40001..40009 {
                let got = to_backend(g.send(
                    0,
                    udp(ROUTER_MAC, UP_MAC, ("192.0.2.100", port), vip, &short([0x0a, id])),
                ));
                assert_eq!(got.dst, first.dst, "migrated to port {port}");
            }
            let spread: std::collections::BTreeSet<_> = (41001..41009)
                .map(|port| {
                    to_backend(g.send(0, udp(ROUTER_MAC, UP_MAC, ("192.0.2.100", port), vip, &initial))).dst
                })
                .collect();
            assert_eq!(spread.len(), 2, "handshakes from new ports go to both backends");
            to_backend(g.send(
                0,
                udp(
                    ROUTER_MAC,
                    UP_MAC,
                    ("192.0.2.100", 42000),
                    vip,
                    &short([0x0b, 0xad]),
                ),
            ));
            assert_eq!(g.lab.worker.stats.quic_routed, 8);
            (g, "quic.toml")
        }
        "udp_client_address" => {
            // UOA (DPVS's IPv4 option 31) in the first datagrams of a flow: three by default from an IPv4
            // client (8-byte option), two as configured from an IPv6 client through NAT64 (20 bytes); PROXY v2
            // (DGRAM) before the payload of every datagram to an IPv6 backend. Replies come back unmarked.
            let mut g = Gen::new("udp_client.toml");
            let to_backend = |out: Vec<(u16, Vec<u8>)>| out.into_iter().find(|(p, _)| *p == 1).unwrap().1;
            let answer = |g: &mut Gen, f: &[u8]| {
                let s = seen(f);
                let back = udp(
                    s.dmac,
                    IN_MAC,
                    (&s.dst.to_string(), s.dport),
                    (&s.src.to_string(), s.sport),
                    b"answer",
                );
                assert_eq!(g.send(1, back).len(), 1);
            };
            for (client, vip, marked, len) in [
                (("192.0.2.100", 5353), ("203.0.113.42", 53), 3, 8),
                (("2001:db8:c::5", 5353), ("2001:db8::43", 53), 2, 20),
            ] {
                for i in 0..4 {
                    let f = to_backend(g.send(0, udp(ROUTER_MAC, UP_MAC, client, vip, b"query")));
                    let ihl = usize::from(f[14] & 0x0f) * 4;
                    if i < marked {
                        assert_eq!(
                            (ihl, f[34], usize::from(f[35])),
                            (20 + len, 31, len),
                            "datagram {i} carries UOA"
                        );
                    } else {
                        assert_eq!(ihl, 20, "datagram {i} is plain");
                    }
                    assert_eq!(seen(&f).payload, b"query");
                    answer(&mut g, &f);
                }
            }
            for _ in 0..2 {
                let f = to_backend(g.send(
                    0,
                    udp(
                        ROUTER_MAC,
                        UP_MAC,
                        ("2001:db8:c::5", 5353),
                        ("2001:db8::42", 53),
                        b"query",
                    ),
                ));
                let p = seen(&f).payload;
                assert_eq!(&p[..4], &[0x0d, 0x0a, 0x0d, 0x0a]);
                assert_eq!(&p[12..14], &[0x21, 0x22], "PROXY, DGRAM over IPv6");
                assert_eq!(&p[16 + 36..], b"query");
                answer(&mut g, &f);
            }
            (g, "udp_client.toml")
        }
        "fragments" => {
            // 3000-byte UDP datagrams in fragments through Full-NAT 44, 66 and NAT64: the client's in order,
            // the backend's answer last fragment first (parked until the first comes); a 2500-byte TCP segment
            // in two fragments through 44, 66 and 64, the second first; an IPv6 atomic fragment, forwarded as a
            // whole packet.
            let mut g = Gen::new("lab.toml");
            let data: Vec<u8> = (0..3000).map(|i| (i % 251) as u8).collect();
            for (client, vip, chunk, id) in [
                ("192.0.2.100", "203.0.113.10", 1480, 0x11),
                ("2001:db8:c::5", "2001:db8::1", 1448, 0x22),
                ("2001:db8:c::5", "2001:db8::64", 1448, 0x33),
            ] {
                let whole = udp(ROUTER_MAC, UP_MAC, (client, 5353), (vip, 53), &data);
                let mut at_backend = Vec::new();
                for f in fragments(&whole, chunk, id) {
                    at_backend.extend(g.send(0, f).into_iter().map(|(_, f)| f));
                }
                let s = seen(&reassemble(&at_backend));
                assert_eq!(s.payload, data);
                let back = udp(
                    s.dmac,
                    IN_MAC,
                    (&s.dst.to_string(), s.dport),
                    (&s.src.to_string(), s.sport),
                    &data,
                );
                let mut at_client = Vec::new();
                let back_chunk = if s.src.is_ipv6() { 1448 } else { 1480 };
                for f in fragments(&back, back_chunk, id + 1).into_iter().rev() {
                    at_client.extend(g.send(1, f).into_iter().map(|(_, f)| f));
                }
                assert_eq!(seen(&reassemble(&at_client)).payload, data);
            }
            for (client, vip, chunk, id) in [
                (("192.0.2.100", 40000), ("203.0.113.10", 80), 1480, 0x44),
                (("2001:db8:c::5", 40000), ("2001:db8::1", 80), 1448, 0x45),
                (("2001:db8:c::5", 40001), ("2001:db8::64", 80), 1448, 0x46),
            ] {
                let syn = g.client_tcp(client, vip, "S", b"").unwrap();
                g.backend_tcp(&syn, "SA", b"");
                let seg = tcp(ROUTER_MAC, UP_MAC, client, vip, "AP", 101, None, &data[..2500]);
                let mut out = Vec::new();
                for f in fragments(&seg, chunk, id).into_iter().rev() {
                    out.extend(g.send(0, f).into_iter().map(|(_, f)| f));
                }
                assert_eq!(seen(&reassemble(&out)).payload, &data[..2500]);
            }
            let whole = udp(
                ROUTER_MAC,
                UP_MAC,
                ("2001:db8:c::5", 5354),
                ("2001:db8::1", 53),
                b"atomic",
            );
            let atomic = fragments(&whole, 1448, 0x55).remove(0);
            assert_eq!(g.send(0, atomic).len(), 1);
            (g, "lab.toml")
        }
        "admission" => {
            // New flows judged: a client on the service's deny list, one outside its allow list, one on the
            // node's deny list — dropped, nothing to a backend; then three SYNs of an allowed client with both
            // backends' upper threshold at one connection: one each, the third dropped as overloaded.
            let vip = ("203.0.113.20", 80);
            let mut g = Gen::new("admission.toml");
            for client in [
                ("192.0.2.5", 40000),
                ("198.18.0.1", 40000),
                ("192.0.2.250", 40000),
            ] {
                assert!(
                    g.client_tcp(client, vip, "S", b"").is_none(),
                    "{client:?} refused"
                );
            }
            let a = g.client_tcp(("192.0.2.100", 40001), vip, "S", b"").unwrap();
            let b = g.client_tcp(("192.0.2.100", 40002), vip, "S", b"").unwrap();
            assert_ne!(a.dst, b.dst, "the second backend takes the second connection");
            assert!(g.client_tcp(("192.0.2.100", 40003), vip, "S", b"").is_none());
            (g, "admission.toml")
        }
        "syn_proxy" => {
            let mut g = Gen::new("syn_proxy.toml");
            proxied_conversation(&mut g, ("192.0.2.100", 40000), ("203.0.113.10", 80));
            proxied_conversation(&mut g, ("2001:db8:c::5", 40000), ("2001:db8::1", 80));
            (g, "syn_proxy.toml")
        }
        other => panic!("no scenario {other}"),
    }
}

fn check(name: &str) {
    let (g, topology) = scenario(name);
    let input = g.records();
    let text = std::fs::read_to_string(dir().join(topology)).unwrap();
    let cfg = anylb_conf::load_str(&text, topology)
        .unwrap()
        .resolve("lb1")
        .unwrap();
    let result = replay::run(&cfg, &input, None).unwrap();
    let verdicts: Vec<String> = result
        .packets
        .iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p.index,
                serde_json::to_string(&p.verdict).unwrap(),
                p.summary
            )
        })
        .collect();
    let verdicts = verdicts.join("\n") + "\n";
    let (pin, pout, pv) = (
        dir().join(format!("{name}.in.pcap")),
        dir().join(format!("{name}.out.pcap")),
        dir().join(format!("{name}.verdicts")),
    );
    if std::env::var_os("ANYLB_BLESS").is_some() {
        pcap::write(std::fs::File::create(&pin).unwrap(), &input).unwrap();
        pcap::write(std::fs::File::create(&pout).unwrap(), &result.output).unwrap();
        std::fs::write(&pv, &verdicts).unwrap();
        return;
    }
    let stored_in = pcap::read(std::fs::File::open(&pin).unwrap()).unwrap();
    assert_eq!(
        stored_in, input,
        "{name}: the generator no longer produces the stored input"
    );
    let replayed = replay::run(&cfg, &stored_in, None).unwrap();
    let stored_out = pcap::read(std::fs::File::open(&pout).unwrap()).unwrap();
    assert_eq!(
        replayed.output.len(),
        stored_out.len(),
        "{name}: number of output frames"
    );
    for (i, (got, want)) in replayed.output.iter().zip(&stored_out).enumerate() {
        assert_eq!(got.data, want.data, "{name}: output frame {}", i + 1);
    }
    assert_eq!(
        verdicts,
        std::fs::read_to_string(&pv).unwrap(),
        "{name}: verdicts"
    );
}

#[test]
fn golden_tcp44_handshake_data_teardown() {
    check("tcp44");
}

#[test]
fn golden_bad_checksum_rst_leaves_the_connection_as_it_was() {
    check("bad_rst");
}

#[test]
fn golden_quic_connection_migrating_to_new_ports_stays_on_its_backend() {
    check("quic");
}

#[test]
fn golden_uoa_and_proxy_v2_on_udp() {
    check("udp_client_address");
}

#[test]
fn golden_fragments_44_66_64_in_and_out_of_order() {
    check("fragments");
}

#[test]
fn golden_deny_allow_and_upper_threshold() {
    check("admission");
}

#[test]
fn golden_syn_proxy_cookie_splice_and_shift_v4_and_v6() {
    check("syn_proxy");
}

#[test]
fn golden_tcp66_handshake_data_teardown() {
    check("tcp66");
}

#[test]
fn golden_tcp64_handshake_data_teardown() {
    check("tcp64");
}

#[test]
fn golden_udp_44_66_64() {
    check("udp");
}

#[test]
fn golden_arp_and_ns_for_a_vip() {
    check("arp_ns");
}

#[test]
fn golden_echo_to_vips() {
    check("echo");
}

#[test]
fn golden_frag_needed_from_a_backend_reaches_the_client() {
    check("frag_needed");
}

#[test]
fn golden_syn_with_every_backend_at_weight_zero() {
    check("all_drained");
}

#[test]
fn golden_full_connection_table() {
    check("table_full");
}

#[test]
fn golden_dr_v4_and_v6() {
    check("dr");
}

#[test]
fn golden_tunnel_ipip_and_ip6ip6() {
    check("tunnel");
}

#[test]
fn golden_nat44_handshake_data_teardown() {
    check("nat44");
}

#[test]
fn golden_nat66_handshake_data_teardown() {
    check("nat66");
}

#[test]
fn golden_snat_gateway_tcp_udp_and_ping() {
    check("snat");
}

#[test]
fn golden_proxy_v2_ipv4() {
    check("proxy_v2");
}

#[test]
fn golden_proxy_v2_ipv6() {
    check("proxy_v2_v6");
}

#[test]
fn golden_toa_ipv4() {
    check("toa");
}

#[test]
fn golden_toa_nat64() {
    check("toa64");
}

#[test]
fn golden_tunnel_gue_v4_and_v6() {
    check("gue");
}
