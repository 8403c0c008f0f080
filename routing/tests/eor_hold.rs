//! Announcements wait for the peer's End-of-RIB when none of its routes are held (RFC 4724 §2): a raw peer on
//! loopback that offers graceful restart gets the speaker's VIP only after it has sent its own routes and
//! End-of-RIB; one that never sends End-of-RIB gets it after the bounded wait; one that does not offer
//! graceful restart (so will send no End-of-RIB) gets it at once.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anylb_routing::config::{Announcement, NeighborConfig, SpeakerConfig};
use anylb_routing::fsm::State;
use anylb_routing::packet::message::frame_len;
use anylb_routing::packet::{AsPath, Attrs, Capability, Codec, Message, Open, Origin, Update};
use anylb_routing::speaker::Speaker;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CODEC: Codec = Codec { four_octet_as: true };

/// A speaker on `speaker:port` with graceful restart, announcing 203.0.113.10/32 to a passive neighbour `peer`.
async fn speaker(speaker: &str, peer: &str, port: u16) -> Speaker {
    let s = Speaker::start(SpeakerConfig {
        local_asn: 65010,
        router_id: Ipv4Addr::new(192, 0, 2, 11),
        listen: Some(SocketAddr::new(speaker.parse().unwrap(), port)),
        graceful_restart: Some(120),
        keeps_forwarding: false,
        restarting: false,
        neighbors: vec![NeighborConfig {
            passive: true,
            hold_time: Duration::from_secs(30),
            keepalive: Duration::from_secs(10),
            ttl: Some(64),
            ..NeighborConfig::new(peer.parse().unwrap(), 65000)
        }],
    })
    .await
    .expect("speaker starts");
    s.announce(&[vip()], &Announcement::default());
    s
}

fn vip() -> IpNet {
    "203.0.113.10/32".parse().unwrap()
}

/// Connects from `peer` and opens the session, offering graceful restart or not.
async fn open(peer: &str, speaker: &str, port: u16, gr: bool) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(peer.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    let mut s = sock
        .connect(SocketAddr::new(speaker.parse().unwrap(), port))
        .await
        .unwrap();
    let mut capabilities = vec![
        Capability::MultiProtocol { afi: 1, safi: 1 },
        Capability::FourOctetAs(65000),
    ];
    if gr {
        capabilities.push(Capability::GracefulRestart {
            restarting: false,
            notification: false,
            time: 120,
            families: vec![(1, 1, false)],
        });
    }
    let mut out = Vec::new();
    CODEC.encode(
        &Message::Open(Open {
            asn: 65000,
            hold_time: 30,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities,
        }),
        &mut out,
    );
    CODEC.encode(&Message::Keepalive, &mut out);
    s.write_all(&out).await.unwrap();
    s
}

/// Reads the speaker's messages for up to `wait`; returns when its UPDATE carrying the VIP has come (with
/// the time it took), or None.
async fn vip_within(s: &mut TcpStream, buf: &mut Vec<u8>, wait: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        while let Ok(Some(len)) = frame_len(buf) {
            if buf.len() < len {
                break;
            }
            let m = CODEC.decode(&buf[..len]).expect("a valid message");
            buf.drain(..len);
            if let Message::Update(u) = m {
                if u.nlri.iter().any(|p| IpNet::V4(*p) == vip()) {
                    return Some(t0.elapsed());
                }
            }
        }
        let left = wait.checked_sub(t0.elapsed())?;
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => panic!("the speaker closed the session"),
            Err(_) => return None,
        }
    }
}

async fn established(sp: &Speaker) {
    let t0 = Instant::now();
    while sp.neighbors()[0].state != State::Established && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        sp.neighbors()[0].state,
        State::Established,
        "{:?}",
        sp.neighbors()
    );
}

#[tokio::test]
async fn announcements_wait_for_the_peers_end_of_rib() {
    let (spk, peer, port) = ("127.0.0.51", "127.0.0.52", 17907);
    let sp = speaker(spk, peer, port).await;
    let mut s = open(peer, spk, port, true).await;
    let mut buf = Vec::new();
    established(&sp).await;
    // Held: nothing in the first half second.
    assert_eq!(
        vip_within(&mut s, &mut buf, Duration::from_millis(500)).await,
        None
    );
    // The peer's routes, then its End-of-RIB: the VIP follows at once.
    let mut out = Vec::new();
    let route = Update {
        attrs: Attrs {
            origin: Some(Origin::Igp),
            as_path: AsPath::sequence(vec![65000]),
            next_hop: Some(Ipv4Addr::new(127, 0, 0, 52)),
            ..Default::default()
        },
        nlri: vec!["0.0.0.0/0".parse().unwrap()],
        ..Default::default()
    };
    CODEC.encode(&Message::Update(Box::new(route)), &mut out);
    CODEC.encode(&Message::Update(Box::default()), &mut out);
    s.write_all(&out).await.unwrap();
    let took = vip_within(&mut s, &mut buf, Duration::from_secs(1)).await;
    assert!(took.is_some(), "no announcement after the End-of-RIB");
    assert_eq!(
        sp.received(None).unwrap().len(),
        1,
        "the peer's route is installed"
    );
}

#[tokio::test]
async fn without_an_end_of_rib_announcements_go_after_the_wait() {
    let (spk, peer, port) = ("127.0.0.53", "127.0.0.54", 17908);
    let sp = speaker(spk, peer, port).await;
    let mut s = open(peer, spk, port, true).await;
    let mut buf = Vec::new();
    established(&sp).await;
    let took = vip_within(&mut s, &mut buf, Duration::from_secs(5)).await;
    let took = took.expect("announced after the wait");
    assert!(
        took >= Duration::from_millis(1500),
        "announced after {took:?}: not held"
    );
}

#[tokio::test]
async fn a_peer_without_graceful_restart_gets_the_announcements_at_once() {
    let (spk, peer, port) = ("127.0.0.55", "127.0.0.56", 17909);
    let sp = speaker(spk, peer, port).await;
    let mut s = open(peer, spk, port, false).await;
    let mut buf = Vec::new();
    established(&sp).await;
    let took = vip_within(&mut s, &mut buf, Duration::from_secs(5)).await;
    assert!(took.expect("announced") < Duration::from_millis(1000), "{took:?}");
}
