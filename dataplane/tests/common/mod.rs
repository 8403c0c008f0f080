//! A lab for engine tests: a node topology with an uplink (clients behind a router) and an inside port
//! (backends), packets built and checked by etherparse, an independent implementation.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::Arc;

use anylb_dataplane::frame::{Frame, VecAlloc, VecFrame};
use anylb_dataplane::snapshot::{Builder, Overrides};
use anylb_dataplane::worker::{Output, Verdict, Worker};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};

pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const UP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x00];
pub const IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];

pub fn backend_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0xbe, i]
}

pub const TOPOLOGY: &str = r#"
[cluster]
name = "lab"
asn = 65010
[cluster.maglev]
seed = 7
table_size = 251

[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
[nodes.dataplane]
workers = [1]
connections_per_worker = 1024
[[nodes.dataplane.ports]]
name = "up0"
device = "net_null0"
addresses = ["192.0.2.11/28", "2001:db8:10::11/64"]
[[nodes.dataplane.ports]]
name = "in0"
device = "net_null1"
addresses = ["198.51.100.1/24", "2001:db8:20::1/64"]
mtu = 1500

[[nodes.local_addresses]]
prefix = "198.51.100.16/31"
ports = "2000-2999"
port = "in0"
[[nodes.local_addresses]]
prefix = "2001:db8:20::100/127"
ports = "2000-2999"
port = "in0"

[[nodes.routes]]
prefix = "0.0.0.0/0"
via = ["192.0.2.1"]
[[nodes.routes]]
prefix = "::/0"
via = ["2001:db8:10::1"]

[[nodes.neighbors]]
address = "192.0.2.1"
mac = "02:00:00:00:00:01"
port = "up0"
[[nodes.neighbors]]
address = "2001:db8:10::1"
mac = "02:00:00:00:00:01"
port = "up0"
[[nodes.neighbors]]
address = "198.51.100.101"
mac = "02:00:00:00:be:01"
port = "in0"
[[nodes.neighbors]]
address = "198.51.100.102"
mac = "02:00:00:00:be:02"
port = "in0"
[[nodes.neighbors]]
address = "2001:db8:20::101"
mac = "02:00:00:00:be:11"
port = "in0"

[[services]]
name = "web4"
vip = "203.0.113.10"
port = 80
protocol = "tcp"
backends = [{ address = "198.51.100.101", port = 8080 }, { address = "198.51.100.102", port = 8080 }]

[[services]]
name = "dns4"
vip = "203.0.113.10"
port = 53
protocol = "udp"
backends = [{ address = "198.51.100.101" }]

[[services]]
name = "web6"
vip = "2001:db8::1"
port = 80
protocol = "tcp"
backends = [{ address = "2001:db8:20::101", port = 8080 }]

[[services]]
name = "dns6"
vip = "2001:db8::1"
port = 53
protocol = "udp"
backends = [{ address = "2001:db8:20::101" }]

[[services]]
name = "web64"
vip = "2001:db8::64"
port = 80
protocol = "tcp"
backends = [{ address = "198.51.100.101", port = 8080 }]

[[services]]
name = "dns64"
vip = "2001:db8::64"
port = 53
protocol = "udp"
backends = [{ address = "198.51.100.102" }]
"#;

pub struct Lab {
    pub worker: Worker<VecFrame>,
    pub builder: Builder,
    pub cfg: anylb_conf::NodeConfig,
    pub alloc: VecAlloc,
    pub now: u64,
}

impl Lab {
    pub fn new() -> Lab {
        Lab::with(TOPOLOGY, &Overrides::default())
    }

    pub fn with(topology: &str, ov: &Overrides) -> Lab {
        Lab::worker_of(topology, ov, 1, 0)
    }

    /// Worker `id` of a node with `workers` workers.
    pub fn worker_of(topology: &str, ov: &Overrides, workers: usize, id: u16) -> Lab {
        let t = anylb_conf::load_str(topology, "lab.toml").unwrap_or_else(|e| panic!("{e}"));
        let cfg = t.resolve("lb1").unwrap();
        let mut builder = Builder::default();
        let snap = builder.build(&cfg, &[UP_MAC, IN_MAC], workers, ov).unwrap();
        let mut worker = Worker::new(id, Arc::new(snap));
        // Drain the gratuitous announcements of the first snapshot.
        let mut out = Output::new(false);
        worker.poll(1_000, &mut VecAlloc, &mut out);
        Lab {
            worker,
            builder,
            cfg,
            alloc: VecAlloc,
            now: 1_000,
        }
    }

    /// Sends one frame in on `port`; returns its verdict and everything transmitted.
    pub fn send(&mut self, port: u16, frame: Vec<u8>) -> (Verdict, Vec<(u16, Vec<u8>)>) {
        let mut out = Output::new(true);
        self.worker.process(
            self.now,
            port,
            [VecFrame::from_bytes(&frame)],
            &mut self.alloc,
            &mut out,
        );
        let tx = out.tx.into_iter().map(|(p, f)| (p, f.data().to_vec())).collect();
        (out.verdicts[0], tx)
    }

    /// Sends a frame that must be forwarded as exactly one frame; returns (port, frame).
    pub fn forward(&mut self, port: u16, frame: Vec<u8>) -> (u16, Vec<u8>) {
        let (v, tx) = self.send(port, frame);
        assert!(matches!(v, Verdict::Forward { .. }), "verdict {v:?}");
        assert_eq!(tx.len(), 1);
        tx.into_iter().next().unwrap()
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        let mut out = Output::new(false);
        self.worker.poll(self.now, &mut self.alloc, &mut out);
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP segment from `src` to `dst` in an Ethernet frame from `smac` to `dmac`.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: (&str, u16),
    dst: (&str, u16),
    flags: &str,
    seq: u32,
    mss: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    tcp_acking(smac, dmac, src, dst, flags, seq, 1, mss, payload)
}

/// A TCP segment with acknowledgement number `ack` (used when `flags` has 'A').
#[allow(clippy::too_many_arguments)]
pub fn tcp_acking(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: (&str, u16),
    dst: (&str, u16),
    flags: &str,
    seq: u32,
    ack: u32,
    mss: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let opts: Vec<TcpOptionElement> = mss
        .map(TcpOptionElement::MaximumSegmentSize)
        .into_iter()
        .collect();
    let numbers = Numbers {
        seq,
        ack,
        window: 64240,
    };
    tcp_segment((smac, dmac), src, dst, flags, numbers, &opts, payload)
}

/// A TCP segment's sequence and acknowledgement numbers and window.
#[derive(Debug, Clone, Copy)]
pub struct Numbers {
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
}

/// A TCP segment from `src` to `dst` with any options, in an Ethernet frame from `macs.0` to `macs.1`;
/// `flags` letters S, A (acknowledging `n.ack`), F, R, P.
pub fn tcp_segment(
    (smac, dmac): ([u8; 6], [u8; 6]),
    src: (&str, u16),
    dst: (&str, u16),
    flags: &str,
    n: Numbers,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(smac, dmac);
    let mut b = match (ip(src.0), ip(dst.0)) {
        (IpAddr::V4(a), IpAddr::V4(b)) => eth
            .ipv4(a.octets(), b.octets(), 64)
            .tcp(src.1, dst.1, n.seq, n.window),
        (IpAddr::V6(a), IpAddr::V6(b)) => eth
            .ipv6(a.octets(), b.octets(), 64)
            .tcp(src.1, dst.1, n.seq, n.window),
        _ => panic!("mixed families"),
    };
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(n.ack);
    }
    if flags.contains('F') {
        b = b.fin();
    }
    if flags.contains('R') {
        b = b.rst();
    }
    if flags.contains('P') {
        b = b.psh();
    }
    if !opts.is_empty() {
        b = b.options(opts).unwrap();
    }
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

/// A UDP datagram.
pub fn udp(smac: [u8; 6], dmac: [u8; 6], src: (&str, u16), dst: (&str, u16), payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(smac, dmac);
    let (s, d) = (ip(src.0), ip(dst.0));
    let b = match (s, d) {
        (IpAddr::V4(a), IpAddr::V4(b)) => eth.ipv4(a.octets(), b.octets(), 64).udp(src.1, dst.1),
        (IpAddr::V6(a), IpAddr::V6(b)) => eth.ipv6(a.octets(), b.octets(), 64).udp(src.1, dst.1),
        _ => panic!("mixed families"),
    };
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

/// What a transmitted frame carries, with every checksum verified independently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub proto: &'static str,
    pub sport: u16,
    pub dport: u16,
    pub syn: bool,
    pub mss: Option<u16>,
    pub payload: Vec<u8>,
}

/// Parses a frame with etherparse and checks the IPv4 header checksum and the transport checksum.
pub fn seen(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).unwrap_or_else(|e| panic!("etherparse: {e:?}"));
    let eth = p
        .link
        .as_ref()
        .and_then(|l| l.to_header())
        .and_then(|h| h.ethernet2())
        .unwrap();
    let (src, dst, ttl, s4d4, s6d6) = match p.net.as_ref().unwrap() {
        NetSlice::Ipv4(v4) => {
            let h = v4.header();
            let hdr = h.to_header();
            assert_eq!(
                hdr.header_checksum,
                hdr.calc_header_checksum(),
                "IPv4 header checksum"
            );
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                h.ttl(),
                Some((h.source(), h.destination())),
                None,
            )
        }
        NetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                h.hop_limit(),
                None,
                Some((h.source(), h.destination())),
            )
        }
        other => panic!("not IP: {other:?}"),
    };
    match p.transport.as_ref().unwrap() {
        TransportSlice::Tcp(t) => {
            let want = match (s4d4, s6d6) {
                (Some((s, d)), _) => t.calc_checksum_ipv4(s, d).unwrap(),
                (_, Some((s, d))) => t.calc_checksum_ipv6(s, d).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(t.checksum(), want, "TCP checksum");
            let mss = t.options_iterator().find_map(|o| match o {
                Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
                _ => None,
            });
            Seen {
                dmac: eth.destination,
                smac: eth.source,
                src,
                dst,
                ttl,
                proto: "tcp",
                sport: t.source_port(),
                dport: t.destination_port(),
                syn: t.syn(),
                mss,
                payload: t.payload().to_vec(),
            }
        }
        TransportSlice::Udp(u) => {
            let h = u.to_header();
            if u.checksum() != 0 || s6d6.is_some() {
                let want = match (s4d4, s6d6) {
                    (Some((s, d)), _) => h.calc_checksum_ipv4_raw(s, d, u.payload()).unwrap(),
                    (_, Some((s, d))) => h.calc_checksum_ipv6_raw(s, d, u.payload()).unwrap(),
                    _ => unreachable!(),
                };
                assert_eq!(u.checksum(), want, "UDP checksum");
            }
            Seen {
                dmac: eth.destination,
                smac: eth.source,
                src,
                dst,
                ttl,
                proto: "udp",
                sport: u.source_port(),
                dport: u.destination_port(),
                syn: false,
                mss: None,
                payload: u.payload().to_vec(),
            }
        }
        other => panic!("unexpected transport {other:?}"),
    }
}

/// Splits the IP packet of `frame` (built whole, its checksums right) into fragments carrying at most `chunk`
/// bytes (a multiple of 8) of the IP payload each, with identification `ident`: IPv4 fragments, or IPv6 ones with
/// a fragment header. In order.
pub fn fragments(frame: &[u8], chunk: usize, ident: u32) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0);
    let (eth, ip) = frame.split_at(14);
    let v6 = ip[0] >> 4 == 6;
    let (hdr, payload) = ip.split_at(if v6 { 40 } else { usize::from(ip[0] & 0x0f) * 4 });
    let pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let (offset, more) = ((i * chunk) as u16, i + 1 < pieces.len());
            let mut f = eth.to_vec();
            if v6 {
                let mut h = hdr.to_vec();
                let next = h[6];
                h[6] = 44;
                h[4..6].copy_from_slice(&((8 + piece.len()) as u16).to_be_bytes());
                f.extend_from_slice(&h);
                f.extend_from_slice(&[next, 0]);
                f.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
                f.extend_from_slice(&ident.to_be_bytes());
            } else {
                let mut h = hdr.to_vec();
                let total = (h.len() + piece.len()) as u16;
                h[2..4].copy_from_slice(&total.to_be_bytes());
                h[4..6].copy_from_slice(&(ident as u16).to_be_bytes());
                h[6..8].copy_from_slice(&((u16::from(more) << 13) | (offset >> 3)).to_be_bytes());
                h[10..12].copy_from_slice(&[0, 0]);
                let c = !ones_sum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
            }
            f.extend_from_slice(piece);
            f
        })
        .collect()
}

/// The one's complement sum of 16-bit words.
fn ones_sum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Fragment fields of a frame: (identification, offset in bytes, more) — IPv4's or the IPv6 fragment header's;
/// none for a whole packet.
pub fn frag_fields(frame: &[u8]) -> Option<(u32, u16, bool)> {
    let ip = &frame[14..];
    if ip[0] >> 4 == 6 {
        (ip[6] == 44).then(|| {
            let fo = u16::from_be_bytes([ip[42], ip[43]]);
            (
                u32::from_be_bytes([ip[44], ip[45], ip[46], ip[47]]),
                fo & 0xfff8,
                fo & 1 != 0,
            )
        })
    } else {
        let fo = u16::from_be_bytes([ip[6], ip[7]]);
        (fo & 0x3fff != 0).then(|| {
            (
                u32::from(u16::from_be_bytes([ip[4], ip[5]])),
                (fo & 0x1fff) << 3,
                fo & 0x2000 != 0,
            )
        })
    }
}

/// Puts fragments (any order) back together as one frame, as the receiving kernel would, and checks they are
/// one datagram: same identification, no gap, one last fragment. The result passes to [`seen`], which verifies
/// the transport checksum over the whole datagram.
pub fn reassemble(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut parts: Vec<(u32, u16, bool, &Vec<u8>)> = frames
        .iter()
        .map(|f| {
            let (id, off, more) = frag_fields(f).expect("a fragment");
            (id, off, more, f)
        })
        .collect();
    parts.sort_by_key(|p| p.1);
    assert!(parts.iter().all(|p| p.0 == parts[0].0), "one identification");
    assert_eq!(parts.iter().filter(|p| !p.2).count(), 1, "one last fragment");
    assert!(!parts.last().unwrap().2, "the last fragment is last");
    let first = parts[0].3;
    let v6 = first[14] >> 4 == 6;
    let (hlen, data_at) = if v6 {
        (40, 48)
    } else {
        (
            usize::from(first[14] & 0x0f) * 4,
            usize::from(first[14] & 0x0f) * 4,
        )
    };
    let mut payload = Vec::new();
    for (_, off, _, f) in &parts {
        assert_eq!(usize::from(*off), payload.len(), "no gap, no overlap");
        payload.extend_from_slice(&f[14 + data_at..]);
    }
    let mut out = first[..14 + hlen].to_vec();
    if v6 {
        out[14 + 6] = first[14 + 40];
        out[14 + 4..14 + 6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        let h = &mut out[14..14 + hlen];
        h[2..4].copy_from_slice(&((hlen + payload.len()) as u16).to_be_bytes());
        h[6..8].copy_from_slice(&[0, 0]);
        h[10..12].copy_from_slice(&[0, 0]);
        let c = !ones_sum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(&payload);
    out
}

/// The lab topology with `web4` added to service web4 (203.0.113.10:80, backends .101 and .102), `node` to
/// the node and `cluster` (tables under `[cluster]`) before it.
pub fn web4_lab(web4: &str, node: &str, cluster: &str) -> Lab {
    let mut t = TOPOLOGY.replacen(
        "protocol = \"tcp\"\nbackends = [{ address = \"198.51.100.101\", port = 8080 }, { address = \"198.51.100.102\", port = 8080 }]",
        &format!("protocol = \"tcp\"\n{web4}\nbackends = [{{ address = \"198.51.100.101\", port = 8080 }}, {{ address = \"198.51.100.102\", port = 8080 }}]"),
        1,
    );
    assert!(t.contains(web4), "the lab topology changed: web4 not found");
    t = t.replacen("[[nodes]]\n", &format!("{cluster}\n[[nodes]]\n{node}\n"), 1);
    Lab::with(&t, &Overrides::default())
}

/// Opens a TCP connection from `client` to the IPv4 service `vip` of the lab (backends .101 and .102 on port
/// 8080): the client's SYN (sequence 1) and the backend's SYN-ACK. Returns what the backend received.
pub fn open_tcp(lab: &mut Lab, client: (&str, u16), vip: (&str, u16)) -> Seen {
    let (_, out) = lab.forward(0, tcp(ROUTER_MAC, UP_MAC, client, vip, "S", 1, Some(1460), b""));
    let s = seen(&out);
    lab.forward(1, backend_synack(&s));
    s
}

/// Opens a connection from `client` to 203.0.113.10:80 through `lab` and closes it (backend first, then the
/// client; the backend's last ACK leaves the entry in TIME_WAIT). Returns what the backend received.
pub fn open_and_close(lab: &mut Lab, client: (&str, u16)) -> Seen {
    let vip = ("203.0.113.10", 80);
    let s = open_tcp(lab, client, vip);
    lab.forward(0, tcp(ROUTER_MAC, UP_MAC, client, vip, "A", 2, None, b""));
    lab.forward(1, from_backend(&s, "AF"));
    lab.forward(0, tcp(ROUTER_MAC, UP_MAC, client, vip, "AF", 2, None, b""));
    lab.forward(1, from_backend(&s, "A"));
    s
}

/// The SYN-ACK (sequence 7) of the lab's backend (.101 or .102, port 8080) to the SYN it received, `s`.
pub fn backend_synack(s: &Seen) -> Vec<u8> {
    from_backend(s, "SA")
}

/// A segment without data (sequence 7, `flags`) from the lab's backend (.101 or .102, port 8080) on the
/// connection whose SYN it received, `s`.
pub fn from_backend(s: &Seen, flags: &str) -> Vec<u8> {
    tcp(
        backend_mac(if s.dst == ip("198.51.100.101") { 1 } else { 2 }),
        IN_MAC,
        (&s.dst.to_string(), 8080),
        (&s.src.to_string(), s.sport),
        flags,
        7,
        None,
        b"",
    )
}
