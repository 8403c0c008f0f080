//! Property: for any client tuple, payload and flags, a NATed flow's reply restores the client's exact tuple,
//! for IPv4→IPv4, IPv6→IPv6 and NAT64, with every checksum verified by etherparse.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;

fn client_v4(i: u8) -> String {
    format!("192.0.2.{}", 100 + (i % 100))
}

fn client_v6(i: u16) -> String {
    format!("2001:db8:c::{i:x}")
}

/// Opens a flow from `client` to `vip`, answers from the backend, and checks both directions.
fn round_trip(client: (&str, u16), vip: (&str, u16), tcp_flow: bool, payload: &[u8], reply: &[u8]) {
    let mut lab = Lab::new();
    let first = if tcp_flow {
        tcp(ROUTER_MAC, UP_MAC, client, vip, "S", 1, Some(1460), payload)
    } else {
        udp(ROUTER_MAC, UP_MAC, client, vip, payload)
    };
    let (port, to_backend) = lab.forward(0, first);
    assert_eq!(port, 1);
    let s = seen(&to_backend);
    assert_eq!(s.payload, payload);
    let bmac = s.dmac;
    let answer = if tcp_flow {
        tcp(
            bmac,
            IN_MAC,
            (&s.dst.to_string(), s.dport),
            (&s.src.to_string(), s.sport),
            "SA",
            5,
            None,
            reply,
        )
    } else {
        udp(
            bmac,
            IN_MAC,
            (&s.dst.to_string(), s.dport),
            (&s.src.to_string(), s.sport),
            reply,
        )
    };
    let (port, to_client) = lab.forward(1, answer);
    assert_eq!(port, 0);
    let r = seen(&to_client);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (ip(vip.0), vip.1, ip(client.0), client.1)
    );
    assert_eq!(r.payload, reply);
    assert_eq!(r.dmac, ROUTER_MAC);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn fnat44_replies_restore_the_client_tuple(c in any::<u8>(), cport in 1024u16.., tcp_flow: bool,
        payload in prop::collection::vec(any::<u8>(), 0..200), reply in prop::collection::vec(any::<u8>(), 0..200)) {
        let vip = if tcp_flow { ("203.0.113.10", 80) } else { ("203.0.113.10", 53) };
        round_trip((&client_v4(c), cport), vip, tcp_flow, &payload, &reply);
    }

    #[test]
    fn fnat66_replies_restore_the_client_tuple(c in 1u16.., cport in 1024u16.., tcp_flow: bool,
        payload in prop::collection::vec(any::<u8>(), 0..200), reply in prop::collection::vec(any::<u8>(), 0..200)) {
        let vip = if tcp_flow { ("2001:db8::1", 80) } else { ("2001:db8::1", 53) };
        round_trip((&client_v6(c), cport), vip, tcp_flow, &payload, &reply);
    }

    #[test]
    fn nat64_replies_restore_the_client_tuple(c in 1u16.., cport in 1024u16.., tcp_flow: bool,
        payload in prop::collection::vec(any::<u8>(), 0..200), reply in prop::collection::vec(any::<u8>(), 0..200)) {
        let vip = if tcp_flow { ("2001:db8::64", 80) } else { ("2001:db8::64", 53) };
        round_trip((&client_v6(c), cport), vip, tcp_flow, &payload, &reply);
    }
}
