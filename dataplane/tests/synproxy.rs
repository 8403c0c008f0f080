//! The SYN-proxy through one worker: a SYN answered with a cookie and no state, a valid ACK opening the
//! backend's side with the client's options, the two handshakes spliced with shifted sequence numbers (and
//! SACK blocks and windows) both ways, bad cookies and ACK floods dropped without state, a cookie minted by
//! another node with the same key accepted, one from another key or too old refused, and a backend's RST
//! reaching the client in the cookie's sequence space.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use anylb_dataplane::cluster::record::{Op, Record};
use anylb_dataplane::snapshot::Overrides;
use anylb_dataplane::stats::DropReason;
use anylb_dataplane::worker::Verdict;
use common::*;
use etherparse::{SlicedPacket, TcpHeader, TcpOptionElement, TransportSlice};

const WEB4: (&str, u16) = ("203.0.113.10", 80);
const CLIENT: (&str, u16) = ("192.0.2.200", 40000);
const PROXY: &str = "[cluster.syn_proxy]\nkey_file = \"cookie.key\"\nwscale = 7";

fn lab() -> Lab {
    web4_lab("syn_proxy = true", "", PROXY)
}

/// A client segment with TCP options.
fn seg(
    src: (&str, u16),
    flags: &str,
    seq: u32,
    ack: u32,
    window: u16,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    let n = Numbers { seq, ack, window };
    tcp_segment((ROUTER_MAC, UP_MAC), src, WEB4, flags, n, opts, payload)
}

/// A backend segment to the connection's local address and port, as `to` (a frame the backend got) shows them.
fn from_backend(
    to: &[u8],
    flags: &str,
    seq: u32,
    ack: u32,
    window: u16,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    let s = seen(to);
    let (b, l) = (s.dst.to_string(), s.src.to_string());
    let n = Numbers { seq, ack, window };
    tcp_segment(
        (backend_mac(1), IN_MAC),
        (&b, s.dport),
        (&l, s.sport),
        flags,
        n,
        opts,
        payload,
    )
}

/// The TCP header of a frame (its checksums checked by `seen`).
fn tcp_of(frame: &[u8]) -> TcpHeader {
    let _ = seen(frame);
    match SlicedPacket::from_ethernet(frame).unwrap().transport {
        Some(TransportSlice::Tcp(t)) => t.to_header(),
        other => panic!("not TCP: {other:?}"),
    }
}

fn options(h: &TcpHeader) -> Vec<TcpOptionElement> {
    h.options_iterator().map(|o| o.unwrap()).collect()
}

/// The options as the node writes them: MSS, window scale, SACK-permitted, NOP-padded.
fn written(mss: u16, wscale: u8) -> Vec<TcpOptionElement> {
    vec![
        TcpOptionElement::MaximumSegmentSize(mss),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(wscale),
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::SelectiveAcknowledgementPermitted,
    ]
}

const CLIENT_OPTS: [TcpOptionElement; 4] = [
    TcpOptionElement::MaximumSegmentSize(1400),
    TcpOptionElement::SelectiveAcknowledgementPermitted,
    TcpOptionElement::Noop,
    TcpOptionElement::WindowScale(6),
];

/// The client's SYN (sequence 1000) and the node's SYN-ACK; returns the cookie.
fn handshake(l: &mut Lab, client: (&str, u16)) -> u32 {
    let (v, tx) = l.send(0, seg(client, "S", 1000, 0, 64240, &CLIENT_OPTS, b""));
    assert_eq!(v, Verdict::Reply { port: 0 });
    assert_eq!(tx.len(), 1);
    let h = tcp_of(&tx[0].1);
    assert!(h.syn && h.ack && !h.rst);
    assert_eq!(h.acknowledgment_number, 1001);
    h.sequence_number
}

/// Gives the lab node the cookie secret `secret` (a rotation when it had another) at wall-clock `now_ms`;
/// whether it changed.
fn rekey(l: &mut Lab, secret: &[u8], now_ms: u64) -> bool {
    let changed = l.builder.set_cookie_secret(secret.to_vec(), now_ms);
    let snap = l
        .builder
        .build(&l.cfg, &[UP_MAC, IN_MAC], 1, &Overrides::default())
        .unwrap();
    l.worker.set_snapshot(Arc::new(snap));
    changed
}

#[test]
fn a_syn_is_answered_with_a_cookie_and_nothing_is_kept() {
    let mut l = lab();
    let (v, tx) = l.send(0, seg(CLIENT, "S", 1000, 0, 64240, &CLIENT_OPTS, b""));
    assert_eq!(v, Verdict::Reply { port: 0 });
    let s = seen(&tx[0].1);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (ip(WEB4.0), 80, ip(CLIENT.0), 40000)
    );
    let h = tcp_of(&tx[0].1);
    // The node's MSS (1500 less 40, no IPv6 backends), its window scale for a client that scales, SACK as
    // offered; no timestamps.
    assert_eq!(options(&h), written(1460, 7));
    assert_eq!(h.window_size, 65535);
    // A flood of spoofed SYNs: every one answered, none kept.
    for i in 0..10_000u32 {
        let src = format!("198.18.{}.{}", i / 250, i % 250 + 1);
        let (v, _) = l.send(
            0,
            seg((&src, 1024 + (i % 60000) as u16), "S", i, 0, 1024, &[], b""),
        );
        assert_eq!(v, Verdict::Reply { port: 0 });
    }
    assert_eq!(l.worker.conns().len(), 0);
    assert_eq!(l.worker.stats.syn_cookies, 10_001);
    assert_eq!(l.worker.stats.new_connections, 0);
}

#[test]
fn a_valid_ack_opens_the_backend_side_and_the_connection_runs_shifted() {
    // Spliced segments take the established fast path; the general path must give the same.
    for fast in [true, false] {
        let fast_packets = spliced_conversation(fast);
        assert_eq!(fast_packets > 0, fast, "fast path used: {fast_packets}");
    }
}

/// The conversation of the test above, with the fast path on or off; returns the packets it took.
fn spliced_conversation(fast: bool) -> u64 {
    let mut l = lab();
    l.worker.set_fast_path(fast);
    let cookie = handshake(&mut l, CLIENT);
    // The client's ACK: the connection opens and the client's SYN, as it was, goes to the backend.
    let (v, tx) = l.send(0, seg(CLIENT, "A", 1001, cookie.wrapping_add(1), 1003, &[], b""));
    assert_eq!(v, Verdict::Held);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].0, 1);
    let backend_syn = tx[0].1.clone();
    let syn = tcp_of(&backend_syn);
    assert!(syn.syn && !syn.ack);
    assert_eq!(syn.sequence_number, 1000);
    assert_eq!(syn.window_size, 64192, "the ACK's window, unscaled (1003 << 6)");
    assert_eq!(options(&syn), written(1400, 6));
    assert_eq!(l.worker.conns().len(), 1);
    assert_eq!(l.worker.stats.syn_proxied, 1);
    // Data from the client before the backend answered is held too.
    let (v, tx) = l.send(
        0,
        seg(CLIENT, "A", 1001, cookie.wrapping_add(1), 1003, &[], b"GET /"),
    );
    assert_eq!((v, tx.len()), (Verdict::Held, 0));
    // The backend's SYN-ACK (its own sequence, window scale 9) splices the handshakes: the held ACK and
    // data go on, acknowledging the backend's sequence numbers.
    let (v, tx) = l.send(
        1,
        from_backend(
            &backend_syn,
            "SA",
            500_000,
            1001,
            65535,
            &[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::WindowScale(9),
            ],
            b"",
        ),
    );
    assert_eq!(v, Verdict::Spliced);
    assert_eq!(
        tx.len(),
        2,
        "the held ACK and the held data, nothing to the client"
    );
    for (port, f) in &tx {
        assert_eq!(*port, 1);
        let h = tcp_of(f);
        assert_eq!((h.sequence_number, h.acknowledgment_number), (1001, 500_001));
    }
    assert_eq!(seen(&tx[1].1).payload, b"GET /");
    // The backend's data reaches the client in the cookie's sequence space, its window rescaled from the
    // backend's scale (9) to the one the client was told (7).
    let (_, out) = l.forward(
        1,
        from_backend(&backend_syn, "A", 500_001, 1006, 100, &[], b"HTTP/1.1 200"),
    );
    let h = tcp_of(&out);
    assert_eq!(
        (h.sequence_number, h.acknowledgment_number, h.window_size),
        (cookie.wrapping_add(1), 1006, 400)
    );
    // The client's SACK blocks (of data it got, in the cookie's space) reach the backend in its own.
    let sack = TcpOptionElement::SelectiveAcknowledgement(
        (cookie.wrapping_add(13), cookie.wrapping_add(20)),
        [None, None, None],
    );
    let (_, out) = l.forward(
        0,
        seg(
            CLIENT,
            "A",
            1006,
            cookie.wrapping_add(13),
            1003,
            &[TcpOptionElement::Noop, TcpOptionElement::Noop, sack],
            b"",
        ),
    );
    let h = tcp_of(&out);
    assert_eq!(h.acknowledgment_number, 500_013);
    assert_eq!(
        options(&h)[2],
        TcpOptionElement::SelectiveAcknowledgement((500_013, 500_020), [None, None, None])
    );
    assert_eq!(l.worker.stats.drops.iter().sum::<u64>(), 0);
    l.worker.stats.fast_path
}

#[test]
fn a_bad_cookie_or_an_ack_flood_is_dropped_without_state() {
    let mut l = lab();
    let cookie = handshake(&mut l, CLIENT);
    for bad in [cookie, cookie.wrapping_add(2), cookie ^ 0x0010_0000] {
        let (v, tx) = l.send(0, seg(CLIENT, "A", 1001, bad, 1003, &[], b""));
        assert_eq!(
            v,
            Verdict::Drop {
                reason: DropReason::BadCookie
            }
        );
        assert!(tx.is_empty());
    }
    // Another client sequence number is another cookie.
    assert_eq!(
        l.send(0, seg(CLIENT, "A", 1002, cookie.wrapping_add(1), 1003, &[], b""))
            .0,
        Verdict::Drop {
            reason: DropReason::BadCookie
        }
    );
    for i in 0..10_000u32 {
        let src = format!("198.18.{}.{}", i / 250, i % 250 + 1);
        let (v, tx) = l.send(
            0,
            seg(
                (&src, 5000),
                "A",
                i,
                i.wrapping_mul(2_654_435_761),
                1024,
                &[],
                b"",
            ),
        );
        assert!(matches!(v, Verdict::Drop { .. }) && tx.is_empty());
    }
    assert_eq!(l.worker.conns().len(), 0);
    assert!(l.worker.stats.drops_of(DropReason::BadCookie) >= 10_000);
}

#[test]
fn a_cookie_is_good_on_every_node_with_the_key_and_only_for_a_while() {
    let mut a = lab();
    let mut b = lab();
    let cookie = handshake(&mut a, CLIENT);
    // ECMP moved the flow: the other node opens the connection from the cookie alone.
    let (v, tx) = b.send(0, seg(CLIENT, "A", 1001, cookie.wrapping_add(1), 1003, &[], b""));
    assert_eq!((v, tx.len()), (Verdict::Held, 1));
    // A node with another key refuses it.
    let mut c = lab();
    rekey(&mut c, b"another secret, another cluster", 0);
    assert_eq!(
        c.send(0, seg(CLIENT, "A", 1001, cookie.wrapping_add(1), 1003, &[], b""))
            .0,
        Verdict::Drop {
            reason: DropReason::BadCookie
        }
    );
    // Two to three time slots later (over 128 s), the cookie is stale.
    a.advance(130_000);
    assert_eq!(
        a.send(0, seg(CLIENT, "A", 1001, cookie.wrapping_add(1), 1003, &[], b""))
            .0,
        Verdict::Drop {
            reason: DropReason::BadCookie
        }
    );
}

#[test]
fn after_a_key_rotation_the_old_keys_cookies_live_out_their_time() {
    let mut l = lab();
    // The node's clock reads 1 s of wall-clock time: slot 0.
    assert!(rekey(&mut l, b"first secret of the cluster", 1_000));
    let old = handshake(&mut l, CLIENT);
    assert!(rekey(&mut l, b"second secret of the cluster", 1_000));
    assert!(
        !rekey(&mut l, b"second secret of the cluster", 1_000),
        "the same again"
    );
    // A handshake begun before the rotation completes after it; new cookies come from the new key.
    let (v, _) = l.send(0, seg(CLIENT, "A", 1001, old.wrapping_add(1), 1003, &[], b""));
    assert_eq!(v, Verdict::Held);
    let other = ("192.0.2.201", 40000);
    let new = handshake(&mut l, other);
    // A slot on, the new key's cookie is good; two slots on, a cookie of the old key (minted in slot 1 by a
    // node that still had it) is refused: the old key is retired at the end of the slot after the rotation.
    l.advance(64_000);
    let (v, _) = l.send(0, seg(other, "A", 1001, new.wrapping_add(1), 1003, &[], b""));
    assert_eq!(v, Verdict::Held);
    let late = ("192.0.2.202", 40000);
    let mut m = lab();
    rekey(&mut m, b"first secret of the cluster", 0);
    m.advance(64_000);
    let stale = handshake(&mut m, late);
    l.advance(64_000);
    assert_eq!(
        l.send(0, seg(late, "A", 1001, stale.wrapping_add(1), 1003, &[], b""))
            .0,
        Verdict::Drop {
            reason: DropReason::BadCookie
        },
        "the old key is retired"
    );
}

#[test]
fn a_backend_refusal_reaches_the_client_as_a_reset_of_the_nodes_handshake() {
    let mut l = lab();
    let cookie = handshake(&mut l, CLIENT);
    let (_, tx) = l.send(0, seg(CLIENT, "A", 1001, cookie.wrapping_add(1), 1003, &[], b""));
    let (v, tx) = l.send(1, from_backend(&tx[0].1, "RA", 0, 1001, 0, &[], b""));
    assert!(matches!(v, Verdict::Forward { port: 0 }), "{v:?}");
    let h = tcp_of(&tx[0].1);
    assert!(h.rst);
    assert_eq!(
        h.sequence_number,
        cookie.wrapping_add(1),
        "in the client's window"
    );
}

#[test]
fn proxy_v2_goes_in_front_of_the_held_request() {
    let mut l = web4_lab("syn_proxy = true\nclient_address = \"proxy_v2\"", "", PROXY);
    let cookie = handshake(&mut l, CLIENT);
    let (_, tx) = l.send(0, seg(CLIENT, "A", 1001, cookie.wrapping_add(1), 1003, &[], b""));
    let backend_syn = tx[0].1.clone();
    let (v, _) = l.send(
        0,
        seg(CLIENT, "AP", 1001, cookie.wrapping_add(1), 1003, &[], b"GET /"),
    );
    assert_eq!(v, Verdict::Held);
    // A backend that declines window scaling: the client was told 7, so its windows are divided by 128.
    let (v, tx) = l.send(1, from_backend(&backend_syn, "SA", 9000, 1001, 65535, &[], b""));
    assert_eq!((v, tx.len()), (Verdict::Spliced, 2));
    let p = seen(&tx[1].1).payload;
    assert!(p.starts_with(b"\r\n\r\n\0\r\nQUIT\n"), "{p:?}");
    assert_eq!(&p[28..], b"GET /");
    // The backend acknowledges the header and the request: the client sees its 5 bytes acknowledged, the
    // answer in the cookie's sequence space.
    let (_, out) = l.forward(
        1,
        from_backend(&backend_syn, "A", 9001, 1001 + 28 + 5, 1280, &[], b"OK"),
    );
    let h = tcp_of(&out);
    assert_eq!(
        (h.sequence_number, h.acknowledgment_number, h.window_size),
        (cookie.wrapping_add(1), 1006, 10)
    );
}

#[test]
fn a_spliced_connection_synced_to_another_node_keeps_its_shift() {
    let mut a = lab();
    let cookie = handshake(&mut a, CLIENT);
    let (_, tx) = a.send(0, seg(CLIENT, "A", 1001, cookie.wrapping_add(1), 1003, &[], b""));
    let backend_syn = tx[0].1.clone();
    let sa = from_backend(
        &backend_syn,
        "SA",
        300,
        1001,
        65535,
        &[TcpOptionElement::WindowScale(7)],
        b"",
    );
    assert_eq!(a.send(1, sa).0, Verdict::Spliced);
    // Its record, as the sync sends it, applied on another node with the same topology.
    let (_, c) = a.worker.conns().iter().next().unwrap();
    let r = Record::of(Op::Upsert, c, 60_000);
    let mut b = lab();
    b.worker.apply_synced(&r);
    let (_, out) = b.forward(1, from_backend(&backend_syn, "A", 301, 1001, 500, &[], b"hi"));
    let h = tcp_of(&out);
    assert_eq!(
        (h.sequence_number, h.acknowledgment_number, h.window_size),
        (cookie.wrapping_add(1), 1001, 500)
    );
    let (_, out) = b.forward(0, seg(CLIENT, "A", 1001, cookie.wrapping_add(3), 1003, &[], b""));
    assert_eq!(tcp_of(&out).acknowledgment_number, 303);
}

#[test]
fn nat64_a_v6_client_is_proxied_to_a_v4_backend() {
    let web64 = "name = \"web64\"\nvip = \"2001:db8::64\"\nport = 80\nprotocol = \"tcp\"\n";
    let t = TOPOLOGY
        .replacen(web64, &format!("{web64}syn_proxy = true\n"), 1)
        .replacen("[[nodes]]\n", &format!("{PROXY}\n[[nodes]]\n"), 1);
    let mut l = Lab::with(&t, &Overrides::default());
    let (client, vip) = (("2001:db8:c::5", 40000), ("2001:db8::64", 80));
    let up = (ROUTER_MAC, UP_MAC);
    let n = |seq, ack| Numbers {
        seq,
        ack,
        window: 1003,
    };
    let (v, tx) = l.send(
        0,
        tcp_segment(up, client, vip, "S", n(1000, 0), &CLIENT_OPTS, b""),
    );
    assert_eq!(v, Verdict::Reply { port: 0 });
    let sa = tcp_of(&tx[0].1);
    // IPv6 towards the client, IPv4 towards the backend: the node offers 1500 − 60.
    assert_eq!(options(&sa)[0], TcpOptionElement::MaximumSegmentSize(1440));
    let cookie = sa.sequence_number;
    let ack = tcp_segment(up, client, vip, "A", n(1001, cookie.wrapping_add(1)), &[], b"");
    let (v, tx) = l.send(0, ack);
    assert_eq!((v, tx.len()), (Verdict::Held, 1));
    let syn = seen(&tx[0].1);
    assert_eq!(
        (syn.src.is_ipv4(), syn.dst, syn.mss),
        (true, ip("198.51.100.101"), Some(1400))
    );
    let (v, tx) = l.send(1, from_backend(&tx[0].1, "SA", 5000, 1001, 65535, &[], b""));
    assert_eq!((v, tx.len()), (Verdict::Spliced, 1));
    assert_eq!(tcp_of(&tx[0].1).acknowledgment_number, 5001);
    let (_, out) = l.forward(1, from_backend(&tx[0].1, "A", 5001, 1001, 1280, &[], b"hello"));
    let s = seen(&out);
    assert_eq!(
        (s.src, s.dst, s.payload.as_slice()),
        (ip("2001:db8::64"), ip("2001:db8:c::5"), &b"hello"[..])
    );
    assert_eq!(tcp_of(&out).sequence_number, cookie.wrapping_add(1));
}

#[test]
fn icmp_errors_quote_the_sequence_numbers_each_side_knows() {
    let mut l = lab();
    let cookie = handshake(&mut l, CLIENT);
    let (_, tx) = l.send(0, seg(CLIENT, "A", 1001, cookie.wrapping_add(1), 1003, &[], b""));
    let backend_syn = tx[0].1.clone();
    let sa = from_backend(&backend_syn, "SA", 70_000, 1001, 65535, &[], b"");
    let (_, tx) = l.send(1, sa);
    let to_backend = tx[0].1.clone();
    let (_, to_client) = l.forward(
        1,
        from_backend(&backend_syn, "A", 70_001, 1001, 1000, &[], b"answer"),
    );
    // A router on the client's side: "fragmentation needed" about the answer, quoting its first 28 bytes
    // (sequence number in the cookie's space); the backend gets it with its own sequence number.
    let quote = |frame: &[u8]| frame[14..14 + 20 + 12].to_vec();
    let icmp = |smac, dmac, src: [u8; 4], dst: [u8; 4], quoted: &[u8]| {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2(smac, dmac)
            .ipv4(src, dst, 64)
            .icmpv4_raw(3, 4, [0, 0, 0x05, 0x78])
            .write(&mut v, quoted)
            .unwrap();
        v
    };
    let (_, out) = l.forward(
        0,
        icmp(
            ROUTER_MAC,
            UP_MAC,
            [192, 0, 2, 1],
            [203, 0, 113, 10],
            &quote(&to_client),
        ),
    );
    let inner = &out[14 + 20 + 8 + 20..];
    assert_eq!(u32::from_be_bytes(inner[4..8].try_into().unwrap()), 70_001);
    // A router on the backend's side, about the client's ACK the node sent on: the client gets it with the
    // acknowledgement in the cookie's space.
    let b = seen(&to_backend);
    let (lip, be) = match (b.src, b.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets(), d.octets()),
        _ => panic!("IPv4"),
    };
    let (_, out) = l.forward(1, icmp(backend_mac(1), IN_MAC, be, lip, &quote(&to_backend)));
    let inner = &out[14 + 20 + 8 + 20..];
    assert_eq!(
        u32::from_be_bytes(inner[8..12].try_into().unwrap()),
        cookie.wrapping_add(1)
    );
}

#[test]
fn a_plain_service_is_not_proxied() {
    let mut l = web4_lab("", "", PROXY);
    let (v, _) = l.send(0, seg(CLIENT, "S", 1000, 0, 64240, &CLIENT_OPTS, b""));
    assert!(matches!(v, Verdict::Forward { port: 1 }), "{v:?}");
    assert_eq!(l.worker.stats.syn_cookies, 0);
}
