//! RFC 7606 over a live session: a peer on loopback sends the speaker UPDATEs with wrong attribute flags, no
//! AS_PATH, an attribute overrunning the path attributes and a cut-off attribute header. Each must leave the
//! session up, install nothing, and be counted with its reason; a valid UPDATE after them is installed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anylb_routing::config::{NeighborConfig, SpeakerConfig};
use anylb_routing::fsm::State;
use anylb_routing::packet::{Capability, Codec, Message, Open, WithdrawReason};
use anylb_routing::speaker::Speaker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const SPEAKER: &str = "127.0.0.41";
const PEER: &str = "127.0.0.42";
const PORT: u16 = 17906;

/// An UPDATE from raw path attributes and one IPv4 NLRI prefix of 26 bits.
fn update(attrs: &[u8], prefix: [u8; 4]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(&[26, prefix[0], prefix[1], prefix[2], prefix[3]]);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&(19 + body.len() as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&body);
    m
}

const ORIGIN: [u8; 4] = [0x40, 1, 1, 0];
/// AS_PATH: one AS_SEQUENCE of 65000 (4-octet ASNs).
const AS_PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8];
/// NEXT_HOP 127.0.0.42.
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 127, 0, 0, 42];

fn attrs(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[tokio::test]
async fn malformed_updates_are_withdrawn_counted_and_leave_the_session_up() {
    let speaker_addr: IpAddr = SPEAKER.parse().unwrap();
    let peer_addr: IpAddr = PEER.parse().unwrap();
    let speaker = Speaker::start(SpeakerConfig {
        local_asn: 65010,
        router_id: Ipv4Addr::new(192, 0, 2, 11),
        listen: Some(SocketAddr::new(speaker_addr, PORT)),
        graceful_restart: None,
        keeps_forwarding: false,
        restarting: false,
        neighbors: vec![NeighborConfig {
            passive: true,
            hold_time: Duration::from_secs(30),
            keepalive: Duration::from_secs(10),
            ttl: Some(64),
            ..NeighborConfig::new(peer_addr, 65000)
        }],
    })
    .await
    .expect("speaker starts");
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(peer_addr, 0)).unwrap();
    let mut s = sock.connect(SocketAddr::new(speaker_addr, PORT)).await.unwrap();
    let codec = Codec { four_octet_as: true };
    let mut out = Vec::new();
    codec.encode(
        &Message::Open(Open {
            asn: 65000,
            hold_time: 30,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: vec![
                Capability::MultiProtocol { afi: 1, safi: 1 },
                Capability::FourOctetAs(65000),
            ],
        }),
        &mut out,
    );
    codec.encode(&Message::Keepalive, &mut out);
    s.write_all(&out).await.unwrap();
    let established = || speaker.neighbors()[0].state == State::Established;
    let t0 = std::time::Instant::now();
    while !established() && t0.elapsed() < Duration::from_secs(5) {
        // Drain what the speaker sends (its OPEN, KEEPALIVEs, UPDATEs) so its writes never block.
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
    }
    assert!(established(), "{:?}", speaker.neighbors());

    let cases: [(Vec<u8>, WithdrawReason); 4] = [
        // ORIGIN sent as optional transitive (0xC0): §3(c).
        (
            attrs(&[&[0xc0, 1, 1, 0], &AS_PATH, &NEXT_HOP]),
            WithdrawReason::Flags(1),
        ),
        // NLRI without AS_PATH: §3(d).
        (attrs(&[&ORIGIN, &NEXT_HOP]), WithdrawReason::Missing(2)),
        // NEXT_HOP claiming 9 octets where 4 remain: §4.
        (
            attrs(&[&ORIGIN, &AS_PATH, &[0x40, 3, 9, 127, 0, 0, 42]]),
            WithdrawReason::Overrun,
        ),
        // Two octets left where an attribute header needs three: §4.
        (
            attrs(&[&ORIGIN, &AS_PATH, &NEXT_HOP, &[0x40, 4]]),
            WithdrawReason::Overrun,
        ),
    ];
    for (i, (a, why)) in cases.iter().enumerate() {
        let prefix = [198, 51, 100, 64 * i as u8];
        s.write_all(&update(a, prefix)).await.unwrap();
        let t0 = std::time::Instant::now();
        let counted = |want: u64| {
            let n = &speaker.neighbors()[0];
            n.updates_withdrawn == want && n.last_withdrawn == Some(*why)
        };
        while !counted(i as u64 + 1) && t0.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = &speaker.neighbors()[0];
        assert!(counted(i as u64 + 1), "case {i} ({why}): {n:?}");
        assert_eq!(n.state, State::Established, "case {i}: the session must stay up");
        assert!(
            speaker.received(None).unwrap().is_empty(),
            "case {i}: nothing installed"
        );
    }
    // A valid UPDATE after all that is installed.
    s.write_all(&update(&attrs(&[&ORIGIN, &AS_PATH, &NEXT_HOP]), [203, 0, 113, 0]))
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    while speaker.received(None).unwrap().is_empty() && t0.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got: Vec<String> = speaker
        .received(None)
        .unwrap()
        .iter()
        .map(|r| r.prefix.to_string())
        .collect();
    assert_eq!(got, ["203.0.113.0/26"]);
    assert_eq!(speaker.neighbors()[0].state, State::Established);
    speaker.stop("test over");
}
