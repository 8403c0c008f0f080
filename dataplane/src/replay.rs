//! Offline replay: one worker's pipeline over the frames of a capture, with the clock taken from their
//! timestamps and a fixed seed, so the same input always gives the same output. It is the operator's debugger
//! (`anylb replay`) and the base of golden tests.
//!
//! A capture has no port numbers, so each frame enters on the port whose MAC it is addressed to; broadcast
//! and multicast frames enter on the port whose subnet holds their sender, else the first port. Ports without a
//! `mac` in the topology get `02:a1:1b:00:00:NN` (NN = port number). Unicast frames for other MACs are dropped
//! (`other_mac`) only when the topology names the MAC of every port.

use std::sync::Arc;

use anylb_conf::NodeConfig;
use serde::Serialize;

use crate::flow::{is_v4, to_ip, v4};
use crate::frame::{Frame, VecAlloc, VecFrame};
use crate::pcap::Record;
use crate::snapshot::{BuildError, Builder, Overrides, Snapshot};
use crate::stats::Stats;
use crate::wire::ethernet::{self, ethertype, Mac};
use crate::wire::{arp, icmp, ipv4, ipv6, proto, tcp, udp};
use crate::worker::{Output, Verdict, Worker};

/// What happened to one input frame.
#[derive(Debug, Clone, Serialize)]
pub struct PacketReport {
    /// 1-based frame number in the input.
    pub index: usize,
    /// Capture time, nanoseconds.
    pub ts_ns: u64,
    /// Port it entered on.
    pub in_port: String,
    /// A one-line description of the frame.
    pub summary: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Frames transmitted while handling it, as (port, description).
    pub sent: Vec<(String, String)>,
}

/// The result of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    /// One report per input frame.
    pub packets: Vec<PacketReport>,
    /// Every transmitted frame, in order.
    #[serde(skip)]
    pub output: Vec<Record>,
    /// The worker's counters at the end.
    pub stats: Stats,
}

/// The MAC of port `i` in a replay.
pub fn port_mac(cfg: &NodeConfig, i: usize) -> Mac {
    cfg.node
        .dataplane
        .ports
        .get(i)
        .and_then(|p| p.mac)
        .map_or([0x02, 0xa1, 0x1b, 0, 0, i as u8], |m| m.0)
}

/// The port a captured frame enters on.
fn in_port(snap: &Snapshot, frame: &[u8]) -> u16 {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return 0;
    };
    if let Some(i) = snap.ports.iter().position(|p| p.mac == eth.dst()) {
        return i as u16;
    }
    let l3 = &frame[eth.header_len()..];
    let sender = match eth.ethertype() {
        ethertype::ARP if l3.len() >= arp::LEN => Some(v4(arp::Packet::new_unchecked(l3).spa())),
        ethertype::IPV4 if l3.len() >= ipv4::HEADER_LEN => Some(v4(ipv4::Packet::new_unchecked(l3).src())),
        ethertype::IPV6 if l3.len() >= ipv6::HEADER_LEN => {
            Some(ipv6::Packet::new_unchecked(l3).src().octets())
        }
        _ => None,
    };
    sender
        .and_then(|s| snap.routes.next_hop(&s, 0))
        .filter(|h| h.via.is_none())
        .map_or(0, |h| h.port)
}

/// Runs the pipeline over `records`; `cookie_secret` is the SYN cookies' (the content of
/// `cluster.syn_proxy.key_file`), without which the cluster's name keys them.
pub fn run(cfg: &NodeConfig, records: &[Record], cookie_secret: Option<&[u8]>) -> Result<Replay, BuildError> {
    let macs: Vec<Mac> = (0..cfg.node.dataplane.ports.len())
        .map(|i| port_mac(cfg, i))
        .collect();
    let mut builder = Builder::default();
    if let Some(k) = cookie_secret {
        builder.set_cookie_secret(k.to_vec(), 0);
    }
    let snap = Arc::new(builder.build(cfg, &macs, 1, &Overrides::default())?);
    let mut w: Worker<VecFrame> = Worker::new(0, snap.clone());
    // A capture carries the real NIC's MAC: frames for other MACs are only dropped when the topology names
    // every port's MAC (otherwise the ports have made-up ones).
    w.set_mac_filter(cfg.node.dataplane.ports.iter().all(|p| p.mac.is_some()));
    let mut alloc = VecAlloc;
    let mut packets = Vec::new();
    let mut output = Vec::new();
    let name = |p: u16| {
        snap.ports
            .get(usize::from(p))
            .map_or_else(|| p.to_string(), |x| x.name.clone())
    };
    for (i, r) in records.iter().enumerate() {
        let port = in_port(&snap, &r.data);
        let mut out = Output::new(true);
        w.process(
            r.ts_ms(),
            port,
            [VecFrame::from_bytes(&r.data)],
            &mut alloc,
            &mut out,
        );
        let mut sent = Vec::new();
        for (p, f) in out.tx {
            sent.push((name(p), describe(f.data())));
            output.push(Record {
                ts_ns: r.ts_ns,
                data: f.data().to_vec(),
            });
        }
        packets.push(PacketReport {
            index: i + 1,
            ts_ns: r.ts_ns,
            in_port: name(port),
            summary: describe(&r.data),
            verdict: out.verdicts.first().copied().unwrap_or(Verdict::Kernel),
            sent,
        });
    }
    Ok(Replay {
        packets,
        output,
        stats: w.stats.clone(),
    })
}

fn tcp_flags(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (tcp::flags::SYN, 'S'),
        (tcp::flags::FIN, 'F'),
        (tcp::flags::RST, 'R'),
        (tcp::flags::PSH, 'P'),
        (tcp::flags::ACK, '.'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

fn endpoint(a: &[u8; 16], port: u16) -> String {
    if is_v4(a) {
        format!("{}:{port}", to_ip(a))
    } else {
        format!("[{}]:{port}", to_ip(a))
    }
}

/// A one-line, tcpdump-like description of a frame.
pub fn describe(frame: &[u8]) -> String {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return format!("runt frame of {} bytes", frame.len());
    };
    let l3 = &frame[eth.header_len()..];
    let vlan = eth.vlan().map(|v| format!("vlan {v} ")).unwrap_or_default();
    let body = match eth.ethertype() {
        ethertype::ARP => match arp::Repr::parse(&arp::Packet::new_unchecked(l3)) {
            Ok(r) if r.op == arp::Operation::Request => format!("arp who-has {} tell {}", r.tpa, r.spa),
            Ok(r) => format!("arp reply {} is-at {}", r.spa, mac_str(&r.sha)),
            Err(e) => format!("arp ({e})"),
        },
        ethertype::IPV4 => match ipv4::Packet::new_checked(l3) {
            Ok(ip) if ip.is_fragment() => fragment(
                ip.protocol(),
                v4(ip.src()),
                v4(ip.dst()),
                (u32::from(ip.ident()), ip.frag_offset(), ip.more_frags()),
                ip.payload(),
            ),
            Ok(ip) => l4(ip.protocol(), v4(ip.src()), v4(ip.dst()), ip.payload(), false),
            Err(e) => format!("ipv4 ({e})"),
        },
        ethertype::IPV6 => {
            match ipv6::Packet::new_checked(l3).and_then(|ip| ip.upper_layer().map(|ul| (ip, ul))) {
                Ok((ip, ul)) => {
                    let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
                    let payload = l3.get(ul.offset..end).unwrap_or(&[]);
                    match ul.fragment.filter(|h| !h.is_atomic()) {
                        Some(h) => fragment(
                            ul.protocol,
                            ip.src().octets(),
                            ip.dst().octets(),
                            (h.ident, h.offset, h.more),
                            payload,
                        ),
                        None => l4(ul.protocol, ip.src().octets(), ip.dst().octets(), payload, true),
                    }
                }
                Err(e) => format!("ipv6 ({e})"),
            }
        }
        t => format!("ethertype {t:#06x}"),
    };
    format!("{vlan}{body}")
}

fn mac_str(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// A fragment: its ports when it is the first (the transport header is there), its identification, offset and
/// M flag, and the bytes it carries.
fn fragment(
    p: u8,
    src: [u8; 16],
    dst: [u8; 16],
    (ident, offset, more): (u32, u16, bool),
    data: &[u8],
) -> String {
    let name = match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        _ => "ip",
    };
    let ends = if offset == 0 && data.len() >= 4 {
        let ports = udp::Packet::new_unchecked(data);
        format!(
            "{} > {}",
            endpoint(&src, ports.src_port()),
            endpoint(&dst, ports.dst_port())
        )
    } else {
        format!("{} > {}", to_ip(&src), to_ip(&dst))
    };
    format!(
        "{name} {ends} frag id {ident:#x} offset {offset}{} len {}",
        if more { " more" } else { "" },
        data.len()
    )
}

fn l4(p: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8], v6: bool) -> String {
    match p {
        proto::TCP => match tcp::Packet::new_checked(payload) {
            Ok(t) => format!(
                "tcp {} > {} [{}] len {}",
                endpoint(&src, t.src_port()),
                endpoint(&dst, t.dst_port()),
                tcp_flags(t.flags()),
                t.payload().len()
            ),
            Err(e) => format!("tcp ({e})"),
        },
        proto::UDP => match udp::Packet::new_checked(payload) {
            Ok(u) => format!(
                "udp {} > {} len {}",
                endpoint(&src, u.src_port()),
                endpoint(&dst, u.dst_port()),
                u.payload().len()
            ),
            Err(e) => format!("udp ({e})"),
        },
        proto::ICMP | proto::ICMPV6 => match icmp::Packet::new_checked(payload) {
            Ok(m) => format!(
                "{} {} > {} type {} code {}",
                if v6 { "icmp6" } else { "icmp" },
                to_ip(&src),
                to_ip(&dst),
                m.msg_type(),
                m.code()
            ),
            Err(e) => format!("icmp ({e})"),
        },
        other => format!("ip proto {other} {} > {}", to_ip(&src), to_ip(&dst)),
    }
}
