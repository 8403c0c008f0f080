//! Dataplane engine benchmarks on one core, 64-byte frames, printing `BENCH <name> <value> <unit>` lines.
//!
//! Run: `cargo bench -p anylb-dataplane --bench engine` (add `-- quick` for a short run without the 10M table,
//! `-- syn_proxy` for the SYN-proxy figures alone).
//!
//! - established Full-NAT44 with 1k, 1M and 10M connections in the table, and Full-NAT64 with 1k and 1M:
//!   pre-built frames of random established flows are copied into recycled buffers (as a NIC would DMA them)
//!   and processed in bursts of 32; 1k connections also over the large tables' input (1M distinct frames,
//!   whose streaming costs the harness itself), and the large tables' rates as ratios to both 1k figures;
//! - new connections per second: SYNs of fresh flows, each allocating a local address and port, with the clock
//!   advancing so that connections expire and release their ports at the same rate (steady state);
//! - bytes per connection of the connection table;
//! - SYN-proxy: SYNs answered with cookies per second (spoofed sources, no state), and established throughput
//!   of spliced (sequence-shifted) connections against plain ones, alternated three times in one run;
//! - reply steering with two workers: backends' replies on their owner's queue, on the queue RSS would pick
//!   (half handed to the other worker), and all on the wrong one (`-- steering` for these alone).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anylb_dataplane::conn::Conn;
use anylb_dataplane::frame::{Frame, VecAlloc, VecFrame};
use anylb_dataplane::snapshot::{Builder, Overrides};
use anylb_dataplane::worker::{Output, Worker};

const BURST: usize = 32;
/// Measurement rounds per figure.
const ROUNDS: usize = 5;
const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const UP_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 0];
const IN_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];

fn topology(capacity: u32, syn_timeout: &str) -> String {
    format!(
        r#"
[cluster]
name = "bench"
[cluster.timeouts]
tcp_syn_recv = "{syn_timeout}"
[cluster.syn_proxy]
key_file = "bench.key"
[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
[nodes.dataplane]
workers = [1]
connections_per_worker = {capacity}
[[nodes.dataplane.ports]]
name = "up0"
device = "net_null0"
addresses = ["192.0.2.11/28", "2001:db8:10::11/64"]
[[nodes.dataplane.ports]]
name = "in0"
device = "net_null1"
addresses = ["198.51.100.1/25"]
[[nodes.local_addresses]]
prefix = "198.51.100.128/25"
ports = "1024-65535"
port = "in0"
[[nodes.local_addresses]]
prefix = "203.0.113.128/25"
ports = "1024-65535"
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
[[services]]
name = "web4"
vip = "203.0.113.10"
port = 80
protocol = "tcp"
backends = [{{ address = "198.51.100.101", port = 8080 }}, {{ address = "198.51.100.102", port = 8080 }}]
[[services]]
name = "web-sp"
vip = "203.0.113.10"
port = 8080
protocol = "tcp"
syn_proxy = true
backends = [{{ address = "198.51.100.101", port = 8080 }}, {{ address = "198.51.100.102", port = 8080 }}]
[[services]]
name = "web64"
vip = "2001:db8::64"
port = 80
protocol = "tcp"
backends = [{{ address = "198.51.100.101", port = 8080 }}, {{ address = "198.51.100.102", port = 8080 }}]
"#
    )
}

/// Connection sync on (a second node to sync with): every connection is synced once it has lived 10 ms and
/// again every second of the benchmark's clock.
const SYNC: &str = r#"
[cluster.sync]
key_file = "bench.key"
threshold = "10ms"
refresh = "1s"
[[nodes]]
name = "lb2"
router_id = "192.0.2.12"
sync_address = "192.0.2.12"
[nodes.dataplane]
workers = [1]
[[nodes.dataplane.ports]]
name = "up0"
device = "net_null0"
addresses = ["192.0.2.12/28"]
[[nodes.local_addresses]]
prefix = "198.51.100.0/26"
"#;

fn worker(capacity: u32, syn_timeout: &str) -> Worker<VecFrame> {
    worker_with(capacity, syn_timeout, false)
}

fn worker_with(capacity: u32, syn_timeout: &str, sync: bool) -> Worker<VecFrame> {
    workers(capacity, syn_timeout, sync, 1).remove(0)
}

/// `n` workers of one node (each its own connection table and slice of the local ports).
fn workers(capacity: u32, syn_timeout: &str, sync: bool, n: u16) -> Vec<Worker<VecFrame>> {
    let mut text = topology(capacity, syn_timeout);
    if sync {
        text = text.replacen(
            "router_id = \"192.0.2.11\"\n",
            "router_id = \"192.0.2.11\"\nsync_address = \"192.0.2.11\"\n",
            1,
        );
        text.push_str(SYNC);
    }
    let t = anylb_conf::load_str(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}"));
    let cfg = t.resolve("lb1").expect("node");
    let snap = Builder::default()
        .build(&cfg, &[UP_MAC, IN_MAC], usize::from(n), &Overrides::default())
        .expect("snapshot");
    let snap = Arc::new(snap);
    (0..n).map(|id| Worker::new(id, snap.clone())).collect()
}

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A 64-byte (60 + FCS) TCP frame from client `i` to the IPv4 VIP, or a 78-byte one to the IPv6 VIP, port 80,
/// sequence 1.
fn frame(i: u32, v6: bool, flags: u8) -> Vec<u8> {
    frame_to(
        i,
        v6,
        flags,
        Seg {
            dport: 80,
            seq: 1,
            ack: 0,
        },
    )
}

/// Where a benchmark segment goes and its numbers.
#[derive(Clone, Copy)]
struct Seg {
    dport: u16,
    seq: u32,
    ack: u32,
}

fn frame_to(i: u32, v6: bool, flags: u8, sg: Seg) -> Vec<u8> {
    // Client address and port spread the flows: 240 addresses outside the uplink /28, 60000 ports each.
    let host = 16 + (i % 240) as u8;
    let port = 1024 + (i / 240) as u16;
    let mut f = Vec::with_capacity(80);
    f.extend_from_slice(&UP_MAC);
    f.extend_from_slice(&ROUTER_MAC);
    if v6 {
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let src = [
            0x20,
            0x01,
            0x0d,
            0xb8,
            0,
            0x0c,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            (i >> 24) as u8 | 0x80,
            host,
        ];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        let mut t = tcp_header(port, flags, sg);
        let mut ps = Vec::new();
        ps.extend_from_slice(&src);
        ps.extend_from_slice(&dst);
        ps.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        ps.extend_from_slice(&t);
        let c = csum(&ps);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&t);
    } else {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&ipv4_tcp(
            [192, 0, 2, host],
            [203, 0, 113, 10],
            tcp_header(port, flags, sg),
        ));
        f.resize(60, 0);
    }
    f
}

/// An IPv4 header and the 20-byte TCP header `t` after it, both checksums filled in.
fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], mut t: Vec<u8>) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut ps = Vec::new();
    ps.extend_from_slice(&src);
    ps.extend_from_slice(&dst);
    ps.extend_from_slice(&[0, 6, 0, 20]);
    ps.extend_from_slice(&t);
    let c = csum(&ps);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&t);
    ip
}

fn tcp_header(sport: u16, flags: u8, sg: Seg) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&sg.dport.to_be_bytes());
    t[4..8].copy_from_slice(&sg.seq.to_be_bytes());
    t[8..12].copy_from_slice(&sg.ack.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t
}

/// Frames stored back to back (fixed stride), as a NIC ring would hold them.
struct Templates {
    bytes: Vec<u8>,
    lens: Vec<u8>,
}

const STRIDE: usize = 128;

impl Templates {
    fn new(frames: impl Iterator<Item = Vec<u8>>) -> Templates {
        let mut t = Templates {
            bytes: Vec::new(),
            lens: Vec::new(),
        };
        for f in frames {
            let mut slot = [0u8; STRIDE];
            slot[..f.len()].copy_from_slice(&f);
            t.bytes.extend_from_slice(&slot);
            t.lens.push(f.len() as u8);
        }
        t
    }

    fn len(&self) -> usize {
        self.lens.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.bytes[i * STRIDE..i * STRIDE + usize::from(self.lens[i])]
    }
}

/// Feeds frames in bursts, recycling transmitted buffers; returns (packets, elapsed, forwarded).
fn run(
    w: &mut Worker<VecFrame>,
    templates: &Templates,
    packets: usize,
    now: &mut u64,
    clock_step_per_burst: u64,
) -> (usize, Duration, u64, usize) {
    let mut pool: Vec<VecFrame> = (0..BURST * 2).map(|_| VecFrame::empty()).collect();
    let mut out = Output::new(false);
    let mut alloc = VecAlloc;
    let mut burst: Vec<VecFrame> = Vec::with_capacity(BURST);
    let tx_before = w.stats.tx_packets;
    let start = Instant::now();
    let mut sent = 0;
    let mut records = 0;
    let mut t = 0;
    while sent < packets {
        for _ in 0..BURST {
            let mut f = pool.pop().unwrap_or_else(VecFrame::empty);
            f.reset(templates.get(t));
            t += 1;
            if t == templates.len() {
                t = 0;
            }
            burst.push(f);
        }
        *now += clock_step_per_burst;
        w.process(*now, 0, burst.drain(..), &mut alloc, &mut out);
        sent += BURST;
        pool.extend(out.tx.drain(..).map(|(_, f)| f));
        records += out.sync.len();
        out.clear();
    }
    let el = start.elapsed();
    (sent, el, w.stats.tx_packets - tx_before, records)
}

/// A shuffled sample of `n` of the `conns` flows to port `dport`.
fn sample(conns: u32, n: usize, v6: bool, dport: u16) -> Templates {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    Templates::new((0..n).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sg = Seg {
            dport,
            seq: 2,
            ack: 1,
        };
        frame_to((x % u64::from(conns)) as u32, v6, 0x10, sg)
    }))
}

/// Distinct frames the established benchmarks cycle through by default: one per connection, at least 1k and at
/// most [`WIDE_INPUT`].
fn input_frames(conns: u32) -> usize {
    (conns as usize).clamp(1024, WIDE_INPUT)
}

/// The input of the large tables: 1M distinct frames, 128 MiB of templates read once per cycle. At 1k
/// connections this input costs 9–23 ns a packet more than 1k frames on this VM (`docs/benchmarks.md`): the
/// stream pushes the table's lines out of the caches (prefetching the templates did not help).
/// `fnat44_established_1k_wide_input` pays the same, so that the big tables' ratios to it measure the table.
const WIDE_INPUT: usize = 1 << 20;

fn established(name: &str, conns: u32, v6: bool, packets: usize) -> f64 {
    established_with(name, conns, v6, packets, None)
}

/// The established benchmark; with `sync` (on or off), the clock advances 1 ms per burst so that connections
/// pass the sync threshold and their refresh comes round, in both cases alike.
fn established_with(name: &str, conns: u32, v6: bool, packets: usize, sync: Option<bool>) -> f64 {
    established_input(name, conns, input_frames(conns), v6, packets, sync)
}

/// [`established_with`] over `frames` distinct frames of the `conns` connections.
fn established_input(
    name: &str,
    conns: u32,
    frames: usize,
    v6: bool,
    packets: usize,
    sync: Option<bool>,
) -> f64 {
    let mut w = worker_with(conns.next_power_of_two().max(1024), "1h", sync == Some(true));
    let mut now = 1_000;
    // Open every connection with a SYN.
    let t0 = Instant::now();
    let mut opened = 0u32;
    let mut pool: Vec<VecFrame> = Vec::new();
    let mut out = Output::new(false);
    let mut alloc = VecAlloc;
    while opened < conns {
        let n = (conns - opened).min(BURST as u32);
        let burst: Vec<VecFrame> = (opened..opened + n)
            .map(|i| {
                let mut f = pool.pop().unwrap_or_else(VecFrame::empty);
                f.reset(&frame(i, v6, 0x02));
                f
            })
            .collect();
        w.process(now, 0, burst, &mut alloc, &mut out);
        pool.extend(out.tx.drain(..).map(|(_, f)| f));
        out.clear();
        opened += n;
    }
    assert_eq!(w.conns().len() as u32, conns, "{name}: every connection opened");
    eprintln!(
        "{name}: opened {conns} connections in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let templates = sample(conns, frames, v6, 80);
    measure(name, &mut w, &templates, packets, &mut now, sync)
}

/// Established packets of `templates` through `w`: a warm-up, then rounds; this machine shares its cores, so
/// the median round is reported (Mpps, also returned).
fn measure(
    name: &str,
    w: &mut Worker<VecFrame>,
    templates: &Templates,
    packets: usize,
    now: &mut u64,
    sync: Option<bool>,
) -> f64 {
    let step = u64::from(sync.is_some());
    run(w, templates, packets / 10, now, step);
    let mut rounds = Vec::new();
    let (mut records, mut sent) = (0, 0);
    for _ in 0..ROUNDS {
        let (n, el, fwd, r) = run(w, templates, packets / ROUNDS, now, step);
        assert_eq!(fwd as usize, n, "{name}: every packet forwarded");
        rounds.push(el.as_nanos() as f64 / n as f64);
        (records, sent) = (records + r, sent + n);
    }
    if sync == Some(true) {
        assert!(records > 0, "{name}: no connection was synced");
        println!(
            "BENCH {name}_records_per_packet {:.4} records",
            records as f64 / sent as f64
        );
    }
    rounds.sort_by(f64::total_cmp);
    let ns = rounds[ROUNDS / 2];
    eprintln!("{name}: rounds (ns/packet) {rounds:.1?}");
    println!("BENCH {name}_mpps {:.2} Mpps", 1e3 / ns);
    println!("BENCH {name}_ns_per_packet {:.1} ns", ns);
    black_box(&*w);
    1e3 / ns
}

/// A backend's reply on connection `c`: backend → local address, ACK, 64 bytes, arriving on the inside port.
fn reply_frame(c: &Conn) -> Vec<u8> {
    let b = |a: &[u8; 16]| [a[12], a[13], a[14], a[15]];
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&IN_MAC);
    f.extend_from_slice(&[2, 0, 0, 0, 0xbe, 1]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let sg = Seg {
        dport: c.lport,
        seq: 1,
        ack: 2,
    };
    f.extend_from_slice(&ipv4_tcp(
        b(&c.backend()),
        b(&c.lip()),
        tcp_header(c.bport, 0x10, sg),
    ));
    f.resize(60, 0);
    f
}

/// Reply steering with two workers (issue 19), all on this one core so that the figure is the CPU a reply
/// costs in all: `conns` established connections opened half on each worker (clients spread by RSS), then
/// backends' replies, each owned by the worker whose port slice its local port is in. Three placements of the
/// replies, alternated three times: every reply on its owner's queue (rte_flow rules, or the owner's port
/// slice steered by the NIC); the queue a hash picks (RSS: half land on the other worker, which finds the
/// owner from the port and hands them over, and the owner takes them in a burst of their own, as from its
/// ring); and every reply on the wrong queue. The rings' own cost is not in these figures (see the DPDK bench).
fn steering(conns: u32, packets: usize) {
    let mut ws = workers(conns.next_power_of_two().max(1024) * 2, "1h", false, 2);
    let mut now = 1_000;
    let (mut out, mut alloc) = (Output::new(false), VecAlloc);
    for start in (0..conns).step_by(BURST) {
        let end = (start + BURST as u32).min(conns);
        for flags in [0x02, 0x10] {
            for (k, w) in ws.iter_mut().enumerate() {
                let burst = (start..end).filter(|i| *i as usize % 2 == k).map(|i| {
                    let mut f = VecFrame::empty();
                    f.reset(&frame(i, false, flags));
                    f
                });
                w.process(now, 0, burst, &mut alloc, &mut out);
                out.clear();
            }
        }
    }
    let owned: Vec<Vec<Vec<u8>>> = ws
        .iter()
        .map(|w| w.conns().iter().map(|(_, c)| reply_frame(c)).collect())
        .collect();
    assert_eq!(
        owned.iter().map(Vec::len).sum::<usize>(),
        conns as usize,
        "every connection opened"
    );
    // Queue k's replies under each placement: its own, alternately its own and the other's, the other's.
    let place = |mix: usize, k: usize| -> Templates {
        let n = owned[0].len().min(owned[1].len());
        Templates::new((0..n).map(|i| {
            let from = match mix {
                0 => k,
                1 => (k + i) % 2,
                _ => 1 - k,
            };
            owned[from][i].clone()
        }))
    };
    let names = ["owner", "rss", "wrong"];
    let queues: Vec<[Templates; 2]> = (0..3).map(|m| [place(m, 0), place(m, 1)]).collect();
    let mut ns: [Vec<f64>; 3] = Default::default();
    for _ in 0..3 {
        for (m, q) in queues.iter().enumerate() {
            let before: u64 = ws.iter().map(|w| w.stats.tx_packets).sum();
            let (n, el) = run_two(&mut ws, q, packets, &mut now);
            let fwd = ws.iter().map(|w| w.stats.tx_packets).sum::<u64>() - before;
            assert_eq!(fwd as usize, n, "steering_{}: every reply forwarded", names[m]);
            ns[m].push(el.as_nanos() as f64 / n as f64);
        }
    }
    for (m, v) in ns.iter_mut().enumerate() {
        v.sort_by(f64::total_cmp);
        eprintln!("steering_{}: runs (ns/packet) {v:.1?}", names[m]);
        println!("BENCH steering_{}_ns_per_packet {:.1} ns", names[m], v[1]);
    }
    println!("BENCH steering_rss_over_owner {:.3} ratio", ns[0][1] / ns[1][1]);
    println!("BENCH steering_wrong_over_owner {:.3} ratio", ns[0][1] / ns[2][1]);
}

/// Bursts from each worker's queue in turn; frames a worker hands to the other go to it as a burst of their
/// own, as the runtime's ring does. Returns the packets received from the queues and the time taken.
fn run_two(
    ws: &mut [Worker<VecFrame>],
    q: &[Templates; 2],
    packets: usize,
    now: &mut u64,
) -> (usize, Duration) {
    let mut pool: Vec<VecFrame> = (0..BURST * 4).map(|_| VecFrame::empty()).collect();
    let (mut out, mut alloc) = (Output::new(false), VecAlloc);
    let mut handed: Vec<VecFrame> = Vec::with_capacity(BURST);
    let mut t = [0usize; 2];
    let start = Instant::now();
    let mut sent = 0;
    while sent < packets {
        for k in 0..2 {
            let burst = (0..BURST).map(|_| {
                let mut f = pool.pop().unwrap_or_else(VecFrame::empty);
                f.reset(q[k].get(t[k]));
                t[k] = (t[k] + 1) % q[k].len();
                f
            });
            ws[k].process(*now, 1, burst, &mut alloc, &mut out);
            sent += BURST;
            handed.extend(out.redirect.drain(..).map(|(_, f)| f));
            pool.extend(out.tx.drain(..).map(|(_, f)| f));
            out.clear();
            if !handed.is_empty() {
                ws[1 - k].process(*now, 1, handed.drain(..), &mut alloc, &mut out);
                pool.extend(out.tx.drain(..).map(|(_, f)| f));
                out.clear();
            }
        }
    }
    (sent, start.elapsed())
}

/// Established packets with connection sync on against off, alternated three times in one run; prints each
/// rate and the ratio of the medians.
fn sync_cost(name: &str, conns: u32, packets: usize) {
    alternated(
        &format!("{name}_sync_on_over_off"),
        |i| {
            let name = format!("{name}_sync_off_{i}");
            established_with(&name, conns, false, packets, Some(false))
        },
        |i| {
            let name = format!("{name}_sync_on_{i}");
            established_with(&name, conns, false, packets, Some(true))
        },
    );
}

/// Runs `base` and `other` (each printing and returning a rate for round `i`) alternated three times, then
/// prints `BENCH {ratio}`: the median of `other`'s rates over the median of `base`'s.
fn alternated(ratio: &str, mut base: impl FnMut(usize) -> f64, mut other: impl FnMut(usize) -> f64) {
    let (mut b, mut o) = (Vec::new(), Vec::new());
    for i in 0..3 {
        b.push(base(i));
        o.push(other(i));
    }
    b.sort_by(f64::total_cmp);
    o.sort_by(f64::total_cmp);
    println!("BENCH {ratio} {:.3} ratio", o[1] / b[1]);
}

/// SYNs of spoofed sources to the SYN-proxy service: each answered with a SYN-ACK carrying a cookie, nothing
/// kept.
fn syn_cookies(packets: usize) {
    let mut w = worker(1 << 16, "1s");
    let mut now = 1_000;
    let sg = Seg {
        dport: 8080,
        seq: 1,
        ack: 0,
    };
    let templates = Templates::new((0..1u32 << 20).map(|i| frame_to(i * 7, false, 0x02, sg)));
    run(&mut w, &templates, 1 << 16, &mut now, 1);
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let (n, el, answered, _) = run(&mut w, &templates, packets / ROUNDS, &mut now, 1);
        assert_eq!(answered as usize, n, "every SYN answered");
        rounds.push(n as f64 / el.as_secs_f64());
    }
    assert_eq!(w.conns().len(), 0, "a SYN-proxy keeps nothing for a SYN");
    rounds.sort_by(f64::total_cmp);
    eprintln!("syn_cookies: rounds (SYN-ACKs/s) {rounds:.0?}");
    println!("BENCH syn_cookies_per_second {:.2} M/s", rounds[ROUNDS / 2] / 1e6);
}

/// The backend's SYN-ACK to the SYN frame `syn` (IPv4) the worker sent it.
fn answer_syn(syn: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&syn[6..12]);
    f.extend_from_slice(&syn[0..6]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let addr = |at: usize| [syn[at], syn[at + 1], syn[at + 2], syn[at + 3]];
    let seq = u32::from_be_bytes(addr(38));
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&syn[36..38]);
    t[2..4].copy_from_slice(&syn[34..36]);
    t[4..8].copy_from_slice(&70_000u32.to_be_bytes());
    t[8..12].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
    t[12] = 0x50;
    t[13] = 0x12;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    f.extend_from_slice(&ipv4_tcp(addr(30), addr(26), t));
    f.resize(60, 0);
    f
}

/// Established packets of `conns` SYN-proxied connections (each opened by SYN, cookie ACK and the backend's
/// SYN-ACK): every segment gets the sequence shift.
fn spliced_established(name: &str, conns: u32, packets: usize) -> f64 {
    let mut w = worker(conns.next_power_of_two().max(1024), "1h");
    let mut now = 1_000;
    let mut out = Output::new(false);
    let mut alloc = VecAlloc;
    let mut one = |w: &mut Worker<VecFrame>, port: u16, f: Vec<u8>| {
        w.process(now, port, [VecFrame::from_bytes(&f)], &mut alloc, &mut out);
        // TCP frames only (the first call also sends the gratuitous announcements).
        let tx: Vec<Vec<u8>> = out
            .tx
            .drain(..)
            .map(|(_, f)| f.data().to_vec())
            .filter(|d| d.len() > 23 && d[12..14] == [8, 0] && d[23] == 6)
            .collect();
        out.clear();
        tx
    };
    for i in 0..conns {
        let syn = Seg {
            dport: 8080,
            seq: 1,
            ack: 0,
        };
        let synack = one(&mut w, 0, frame_to(i, false, 0x02, syn));
        let cookie = u32::from_be_bytes(synack[0][38..42].try_into().expect("4 bytes"));
        let ack = Seg {
            dport: 8080,
            seq: 2,
            ack: cookie.wrapping_add(1),
        };
        let to_backend = one(&mut w, 0, frame_to(i, false, 0x10, ack));
        let held = one(&mut w, 1, answer_syn(&to_backend[0]));
        assert_eq!(held.len(), 1, "{name}: the held ACK goes on");
    }
    assert_eq!(w.conns().len() as u32, conns, "{name}: every connection opened");
    let templates = sample(conns, input_frames(conns), false, 8080);
    measure(name, &mut w, &templates, packets, &mut now, None)
}

/// Spliced against plain established connections, alternated three times in one run; prints each rate and
/// the ratio of the medians.
fn syn_proxy_cost(conns: u32, packets: usize) {
    alternated(
        "fnat44_syn_proxied_over_plain",
        |i| established_with(&format!("fnat44_plain_{i}"), conns, false, packets, None),
        |i| spliced_established(&format!("fnat44_syn_proxied_{i}"), conns, packets),
    );
}

fn new_connections(packets: usize) {
    // SYN_RECV times out after 1s; the clock advances 1ms per burst of 32, so ~32k connections stay live and
    // expiry releases ports as fast as new ones are taken.
    let mut w = worker(1 << 20, "1s");
    let mut now = 1_000;
    let templates = Templates::new(
        (0..4_000_000u32)
            .step_by(3)
            .take(1 << 20)
            .map(|i| frame(i, false, 0x02)),
    );
    run(&mut w, &templates, 1 << 16, &mut now, 1);
    let base_new = w.stats.new_connections;
    let (n, el, _, _) = run(&mut w, &templates, packets, &mut now, 1);
    let created = w.stats.new_connections - base_new;
    assert!(created as usize >= n * 9 / 10, "new connections {created} of {n}");
    println!(
        "BENCH new_connections_per_second {:.0} conn/s",
        created as f64 / el.as_secs_f64()
    );
    println!(
        "BENCH new_connection_ns {:.1} ns",
        el.as_nanos() as f64 / created as f64
    );
    println!("BENCH new_connections_live_at_end {} conns", w.conns().len());
    println!(
        "BENCH bytes_per_connection {} bytes",
        w.conns().bytes_per_connection()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `profile44` / `profile64` (1k connections), `profile44_1m` (1M): a short single run for callgrind;
    // `profile44_10m` (10M) runs ten times as many packets, for a comparison of the 10M figure alone;
    // `profile44_wide` is 1k connections over the large tables' input; `profile44_long` (and `profile64_long`)
    // runs 1k connections for a hundred times as many packets, for a sampling profile of the steady state.
    if let Some(which) = args.iter().find(|a| a.starts_with("profile")) {
        let (conns, frames, packets) = match which.rsplit('_').next() {
            Some("1m") => (1_000_000, WIDE_INPUT, 200_000),
            Some("10m") => (10_000_000, WIDE_INPUT, 2_000_000),
            Some("wide") => (1_000, WIDE_INPUT, 200_000),
            Some("long") => (1_000, input_frames(1_000), 20_000_000),
            _ => (1_000, input_frames(1_000), 200_000),
        };
        established_input(which, conns, frames, which.contains("64"), packets, None);
        return;
    }
    let quick = args.iter().any(|a| a == "quick");
    // `steering`: the reply-steering figures alone.
    if args.iter().any(|a| a == "steering") {
        steering(65_536, 2_000_000);
        return;
    }
    // `syn_proxy`: the SYN-proxy figures alone.
    if args.iter().any(|a| a == "syn_proxy") {
        syn_cookies(2_000_000);
        syn_proxy_cost(1_000, 2_000_000);
        return;
    }
    let (p, big) = if quick {
        (2_000_000, false)
    } else {
        (20_000_000, true)
    };
    let k1 = established("fnat44_established_1k", 1_000, false, p);
    established("fnat64_established_1k", 1_000, true, p);
    let m1 = established("fnat44_established_1m", 1_000_000, false, p);
    established("fnat64_established_1m", 1_000_000, true, p);
    // The large tables against 1k connections, over the cache-sized input of the 1k figure and over the same
    // wide input as theirs, measured next to them.
    let wide = |name: &str| established_input(name, 1_000, WIDE_INPUT, false, p, None);
    let k1_wide = wide("fnat44_established_1k_wide_input");
    println!("BENCH fnat44_1m_over_1k {:.3} ratio", m1 / k1);
    println!("BENCH fnat44_1m_over_1k_same_input {:.3} ratio", m1 / k1_wide);
    if big {
        let m10 = established("fnat44_established_10m", 10_000_000, false, p);
        // Against the faster of the two 1k measurements over the wide input, so that drift errs low.
        let k1_wide_again = wide("fnat44_established_1k_wide_input_again");
        println!("BENCH fnat44_10m_over_1k {:.3} ratio", m10 / k1);
        println!(
            "BENCH fnat44_10m_over_1k_same_input {:.3} ratio",
            m10 / k1_wide.max(k1_wide_again)
        );
    }
    new_connections(if quick { 1_000_000 } else { 4_000_000 });
    sync_cost("fnat44_1k", 1_000, p);
    sync_cost("fnat44_1m", 1_000_000, p);
    syn_cookies(p);
    syn_proxy_cost(1_000, p);
    steering(65_536, p / 4);
}
