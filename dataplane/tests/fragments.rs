//! Fragments through one worker: UDP datagrams and TCP segments split into IPv4 and IPv6 fragments, in order and
//! out of order, through Full-NAT 44, 66 and NAT64 both ways. What comes out is put back together as the
//! receiving kernel would and must be the datagram sent, translated, with its transport checksum right.

#![allow(clippy::unwrap_used)]

mod common;

use anylb_dataplane::stats::DropReason;
use anylb_dataplane::worker::Verdict;
use common::*;

/// A payload of `n` bytes that is not all the same.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Sends `frames` in on `port` in the order of `order`; returns the verdicts and every frame sent out.
fn send_all(lab: &mut Lab, port: u16, frames: &[Vec<u8>], order: &[usize]) -> (Vec<Verdict>, Vec<Vec<u8>>) {
    let mut verdicts = Vec::new();
    let mut sent = Vec::new();
    for &i in order {
        let (v, tx) = lab.send(port, frames[i].clone());
        verdicts.push(v);
        sent.extend(tx.into_iter().map(|(_, f)| f));
    }
    (verdicts, sent)
}

/// A UDP datagram of 3000 bytes from the client to `vip`:53 in three fragments (in order), and the backend's
/// 3000-byte answer in three fragments sent last first. Both arrive whole (reassembled) and translated.
fn udp_both_ways(client: &str, vip: &str, chunk: usize) {
    let mut lab = Lab::new();
    let query = payload(3000);
    let whole = udp(ROUTER_MAC, UP_MAC, (client, 5353), (vip, 53), &query);
    let frags = fragments(&whole, chunk, 0x1234);
    assert_eq!(frags.len(), 3);
    let (verdicts, out) = send_all(&mut lab, 0, &frags, &[0, 1, 2]);
    assert!(
        verdicts.iter().all(|v| matches!(v, Verdict::Forward { port: 1 })),
        "{verdicts:?}"
    );
    assert_eq!(out.len(), 3);
    let at_backend = seen(&reassemble(&out));
    assert_eq!(at_backend.payload, query);
    assert_eq!((at_backend.proto, at_backend.dport), ("udp", 53));
    let answer = payload(3000).into_iter().rev().collect::<Vec<u8>>();
    let back = udp(
        at_backend.dmac,
        IN_MAC,
        (&at_backend.dst.to_string(), 53),
        (&at_backend.src.to_string(), at_backend.sport),
        &answer,
    );
    let back_frags = fragments(&back, chunk, 0x0bee);
    let (verdicts, out) = send_all(&mut lab, 1, &back_frags, &[2, 1, 0]);
    assert_eq!(
        verdicts[..2],
        [Verdict::Parked, Verdict::Parked],
        "later fragments wait for the first"
    );
    assert!(matches!(verdicts[2], Verdict::Forward { port: 0 }));
    assert_eq!(out.len(), 3, "the first, then the two parked ones");
    let at_client = seen(&reassemble(&out));
    assert_eq!(at_client.payload, answer);
    assert_eq!((at_client.src, at_client.sport), (ip(vip), 53));
    assert_eq!((at_client.dst, at_client.dport), (ip(client), 5353));
    assert_eq!(lab.worker.stats.fragments, 6);
}

#[test]
fn udp_fragments_through_fullnat44() {
    udp_both_ways("192.0.2.100", "203.0.113.10", 1480);
}

#[test]
fn udp_fragments_through_fullnat66() {
    udp_both_ways("2001:db8:c::5", "2001:db8::1", 1448);
}

#[test]
fn udp_fragments_through_nat64_both_ways() {
    udp_both_ways("2001:db8:c::5", "2001:db8::64", 1448);
}

#[test]
fn nat64_carries_the_fragment_fields_across() {
    let mut lab = Lab::new();
    let whole = udp(
        ROUTER_MAC,
        UP_MAC,
        ("2001:db8:c::5", 5353),
        ("2001:db8::64", 53),
        &payload(2000),
    );
    let frags = fragments(&whole, 1448, 0xabcd_0102);
    let (_, out) = send_all(&mut lab, 0, &frags, &[1, 0]);
    // IPv4 fragments: identification from the low 16 bits, offsets and MF kept, DF clear.
    let fields: Vec<_> = out.iter().map(|f| frag_fields(f).unwrap()).collect();
    assert_eq!(fields, [(0x0102, 0, true), (0x0102, 1448, false)]);
    assert!(out.iter().all(|f| f[14 + 6] & 0x40 == 0), "DF clear on fragments");
}

#[test]
fn a_tcp_segment_in_fragments_reaches_the_backend_whole() {
    let mut lab = Lab::new();
    let client = ("192.0.2.100", 40000);
    let vip = ("203.0.113.10", 80);
    let s = open_tcp(&mut lab, client, vip);
    let data = payload(2500);
    let seg = tcp(ROUTER_MAC, UP_MAC, client, vip, "AP", 2, None, &data);
    let frags = fragments(&seg, 1480, 77);
    let (verdicts, out) = send_all(&mut lab, 0, &frags, &[1, 0]);
    assert_eq!(verdicts[0], Verdict::Parked);
    assert_eq!(out.len(), 2);
    let got = seen(&reassemble(&out));
    assert_eq!((got.dst, got.dport, got.payload), (s.dst, 8080, data));
}

#[test]
fn tiny_and_overlapping_fragments_are_dropped() {
    let mut lab = Lab::new();
    let seg = tcp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        &payload(64),
    );
    // A first fragment with 8 bytes of the 20-byte TCP header (RFC 1858's tiny fragment).
    let tiny = fragments(&seg, 8, 5);
    let (v, tx) = lab.send(0, tiny[0].clone());
    assert_eq!(
        v,
        Verdict::Drop {
            reason: DropReason::Fragment
        }
    );
    assert!(tx.is_empty());
    // The fragment at offset 8 could rewrite the TCP flags of an earlier first fragment.
    let (v, _) = lab.send(0, tiny[1].clone());
    assert_eq!(
        v,
        Verdict::Drop {
            reason: DropReason::Fragment
        }
    );
    assert_eq!(lab.worker.conns().len(), 0);
}

#[test]
fn an_ipv6_atomic_fragment_is_a_whole_packet() {
    let mut lab = Lab::new();
    let whole = udp(
        ROUTER_MAC,
        UP_MAC,
        ("2001:db8:c::5", 5353),
        ("2001:db8::1", 53),
        b"query",
    );
    // One fragment holding everything: offset 0, M clear (RFC 6946).
    let atomic = fragments(&whole, 1448, 9).remove(0);
    assert_eq!(frag_fields(&atomic), Some((9, 0, false)));
    let (port, out) = lab.forward(0, atomic);
    assert_eq!(port, 1);
    let s = seen(&reassemble(&[out]));
    assert_eq!(s.payload, b"query");
    assert_eq!(lab.worker.stats.fragments, 0, "not treated as a fragment");
}

#[test]
fn fragments_whose_first_never_comes_time_out() {
    let mut lab = Lab::new();
    let whole = udp(
        ROUTER_MAC,
        UP_MAC,
        ("192.0.2.100", 5353),
        ("203.0.113.10", 53),
        &payload(3000),
    );
    let frags = fragments(&whole, 1480, 3);
    let (verdicts, out) = send_all(&mut lab, 0, &frags, &[1, 2]);
    assert_eq!(verdicts, [Verdict::Parked, Verdict::Parked]);
    assert!(out.is_empty());
    lab.advance(1_000);
    assert_eq!(lab.worker.stats.drops_of(DropReason::FragmentTimeout), 0);
    lab.advance(1_200);
    assert_eq!(lab.worker.stats.drops_of(DropReason::FragmentTimeout), 2);
    // The first fragment alone now opens the flow; nothing is left to follow it.
    let (v, tx) = lab.send(0, frags[0].clone());
    assert!(matches!(v, Verdict::Forward { .. }));
    assert_eq!(tx.len(), 1);
}

#[test]
fn a_nat64_answer_too_big_for_the_ipv6_side_is_fragmented() {
    let mut lab = Lab::new();
    let query = udp(
        ROUTER_MAC,
        UP_MAC,
        ("2001:db8:c::5", 5353),
        ("2001:db8::64", 53),
        b"query",
    );
    let (_, out) = lab.forward(0, query);
    let s = seen(&out);
    // A 1500-byte IPv4 answer without DF becomes 1520 bytes of IPv6: two IPv6 fragments instead of a drop.
    let answer = payload(1472);
    let mut back = udp(
        backend_mac(2),
        IN_MAC,
        (&s.dst.to_string(), 53),
        (&s.src.to_string(), s.sport),
        &answer,
    );
    set_df(&mut back, false);
    let (v, tx) = lab.send(1, back.clone());
    assert!(matches!(v, Verdict::Forward { port: 0 }), "{v:?}");
    assert_eq!(tx.len(), 2);
    assert!(tx.iter().all(|(_, f)| f.len() - 14 <= 1500));
    let got = seen(&reassemble(&tx.into_iter().map(|(_, f)| f).collect::<Vec<_>>()));
    assert_eq!((got.src, got.payload), (ip("2001:db8::64"), answer));
    // With DF set, the sender is told the MTU instead.
    set_df(&mut back, true);
    let (v, _) = lab.send(1, back);
    assert!(
        matches!(
            v,
            Verdict::IcmpError {
                reason: DropReason::TooBig,
                ..
            }
        ),
        "{v:?}"
    );
}

/// Sets or clears DF in an IPv4 frame, keeping its header checksum right.
fn set_df(frame: &mut [u8], df: bool) {
    if df {
        frame[14 + 6] |= 0x40;
    } else {
        frame[14 + 6] &= !0x40;
    }
    frame[24..26].copy_from_slice(&[0, 0]);
    let mut sum: u32 = frame[14..34]
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(c[1]))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}
