//! The DPDK path on one worker against dpdk-testpmd on the same vdevs, printing `BENCH` lines.
//!
//! Run as root: `cargo bench -p anylb-dataplane --bench dpdk` (add `-- quick` for 2-second runs; `-- --captures
//! DIR` writes the captures, and `-- --one NAME CAPTURE` runs one measurement, as under callgrind in
//! `docs/benchmarks.md`).
//!
//! Source: `net_pcap` replaying a capture forever (`infinite_rx=1`) of 64-byte TCP frames of 1024 flows to a
//! Full-NAT VIP (each flow's SYN, then 3 ACKs; and a second capture with 7 ACKs per SYN); sink: `net_null`
//! (`no-rx=1`). anylb forwards them through Full-NAT to the backend port, each capture in a child process (one
//! EAL per process); testpmd does plain `io` forwarding between the same two vdevs in the same run, and the
//! engine alone (no DPDK) processes the established capture's frames in the same run, so that what the DPDK
//! path adds around the engine is printed (`dpdk_path_minus_engine_minus_testpmd`). Two workers are set
//! against one, and testpmd on two forwarding cores against one on the same vdevs: the scaling these devices
//! allow (`dpdk_testpmd_two_cores_over_one`).

use std::time::{Duration, Instant};

use std::sync::Arc;

use anylb_dataplane::dpdk::{Config, PortSpec, Runtime};
use anylb_dataplane::frame::{VecAlloc, VecFrame};
use anylb_dataplane::pcap::{self, Record};
use anylb_dataplane::snapshot::{Builder, Overrides};
use anylb_dataplane::worker::{Output, Worker};

const TOPOLOGY: &str = r#"
[cluster]
name = "bench"
[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
[nodes.dataplane]
workers = [1]
main_core = 0
[[nodes.dataplane.ports]]
name = "up0"
device = "unused"
mac = "02:00:00:00:0b:00"
addresses = ["192.0.2.11/24"]
[[nodes.dataplane.ports]]
name = "in0"
device = "unused"
mac = "02:00:00:00:0b:01"
addresses = ["198.51.100.1/24"]
[[nodes.local_addresses]]
prefix = "198.51.100.16/30"
port = "in0"
[[nodes.neighbors]]
address = "198.51.100.101"
mac = "02:00:00:00:be:01"
port = "in0"
[[services]]
name = "web"
vip = "203.0.113.10"
port = 80
protocol = "tcp"
backends = [{ address = "198.51.100.101", port = 8080 }]
"#;

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn frame(flow: u32, flags: u8) -> Vec<u8> {
    let src = [192, 0, 2, 100 + (flow % 100) as u8];
    let dst = [203, 0, 113, 10];
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&(10_000 + flow as u16).to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut ps = src.to_vec();
    ps.extend_from_slice(&dst);
    ps.extend_from_slice(&[0, 6, 0, 20]);
    ps.extend_from_slice(&t);
    let c = csum(&ps);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![2, 0, 0, 0, 0x0b, 0, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&ip);
    f.extend_from_slice(&t);
    f.resize(60, 0);
    f
}

/// testpmd's `io` forwarding between the same vdevs on `cores` forwarding cores (1 or 2), each with an RX
/// queue of its own replaying `input`; its main lcore shares the first CPU, as anylb's main thread does.
fn testpmd_mpps(input: &str, secs: u64, cores: u16) -> Option<f64> {
    let rx = (0..cores)
        .map(|_| format!("rx_pcap={input}"))
        .collect::<Vec<_>>()
        .join(",");
    let (lcores, queues) = if cores == 1 {
        ("0@0,1@1", "--nb-cores=1")
    } else {
        ("0@0,1@0,2@1", "--nb-cores=2")
    };
    let out = std::process::Command::new("timeout")
        .args([
            &format!("{}", secs + 2),
            "dpdk-testpmd",
            "--no-huge",
            "--no-shconf",
            "--no-pci",
            "-m",
            "256",
            &format!("--lcores={lcores}"),
            "--log-level",
            "lib.eal:error",
            "--file-prefix=anylb-bench-testpmd",
            &format!("--vdev=net_pcap0,{rx},infinite_rx=1"),
            "--vdev=net_null0,no-rx=1",
            "--",
            "--forward-mode=io",
            "--auto-start",
            "--stats-period=1",
            queues,
            &format!("--rxq={cores}"),
            &format!("--txq={cores}"),
            &format!("--total-num-mbufs={}", 16384 * u32::from(cores)),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The last non-zero Tx-pps line is the sink port's steady rate.
    text.lines()
        .rev()
        .filter_map(|l| l.trim().strip_prefix("Tx-pps:"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .find(|&v| v > 0.0)
        .map(|pps| pps / 1e6)
}

/// A capture of 1024 flows: each flow's SYN, then `acks` rounds of one ACK per flow.
fn capture(dir: &std::path::Path, acks: usize) -> String {
    let input = dir.join(format!("flows-{acks}.pcap"));
    let mut records = Vec::new();
    for f in 0..1024 {
        records.push(Record {
            ts_ns: 0,
            data: frame(f, 0x02),
        });
    }
    for _ in 0..acks {
        for f in 0..1024 {
            records.push(Record {
                ts_ns: 0,
                data: frame(f, 0x10),
            });
        }
    }
    pcap::write(std::fs::File::create(&input).expect("pcap"), &records).expect("write pcap");
    input.display().to_string()
}

/// Runs anylb's `workers` workers over `input` (one RX queue of it each) for `secs` seconds; prints the
/// aggregate rate (one EAL per process, so the parent runs each measurement in a child of its own).
fn anylb(input_s: &str, secs: u64, name: &str, workers: u16) {
    let topo = anylb_conf::load_str(TOPOLOGY, "bench.toml").unwrap_or_else(|e| panic!("{e}"));
    let node = topo.resolve("lb1").expect("node");
    let rx = (0..workers)
        .map(|_| format!("rx_pcap={input_s}"))
        .collect::<Vec<_>>()
        .join(",");
    let cfg = Config {
        workers: if workers == 1 {
            vec![1]
        } else {
            (0..workers).collect()
        },
        main_core: 0,
        eal_args: [
            "--no-huge",
            "--no-shconf",
            "--no-pci",
            "-m",
            "256",
            "--log-level",
            "lib.eal:error",
            "--file-prefix=anylb-bench",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ports: vec![
            PortSpec {
                name: "up0".into(),
                device: format!("net_pcap0,{rx},infinite_rx=1"),
                mtu: 1500,
                addresses: vec![],
                exception: anylb_conf::ExceptionPath::None,
            },
            PortSpec {
                name: "in0".into(),
                device: "net_null0,no-rx=1".into(),
                mtu: 1500,
                addresses: vec![],
                exception: anylb_conf::ExceptionPath::None,
            },
        ],
        descriptors: 1024,
        // net_pcap holds its whole capture in mbufs, once per RX queue.
        mbufs: 16383 * u32::from(workers) + 8192,
        exception_taps: false,
    };
    let mut builder = Builder::default();
    let n = usize::from(workers);
    let rt =
        Runtime::start(&cfg, |macs| builder.build(&node, macs, n, &Overrides::default())).expect("runtime");
    let total = |rt: &Runtime| {
        let mut s = anylb_dataplane::stats::Stats::default();
        for w in rt.stats() {
            s.add(&w);
        }
        s
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = total(&rt);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after = total(&rt);
    let el = t0.elapsed().as_secs_f64();
    let forwarded = (after.tx_packets - before.tx_packets) as f64;
    let mpps = forwarded / el / 1e6;
    let drops = after.total_drops() - before.total_drops();
    let fast = after.fast_path - before.fast_path;
    let conns = after.new_connections;
    rt.stop();
    println!("BENCH {name}_mpps {mpps:.2} Mpps");
    println!("BENCH {name}_ns_per_packet {:.1} ns", 1e3 / mpps);
    eprintln!("{name}: {forwarded} frames forwarded in {el:.2}s ({fast} by the fast path), {drops} drops, {conns} connections; {} frames forwarded in all", after.tx_packets);
}

/// The engine alone over the frames of `input` (no DPDK): each frame copied into a recycled buffer (as
/// net_pcap copies it into an mbuf) and processed in bursts of 32, for `secs` seconds on this thread; ns per
/// frame (every frame must be forwarded).
fn engine_ns(input: &str, secs: u64) -> f64 {
    let records = pcap::read(std::fs::File::open(input).expect("capture")).expect("read capture");
    let node = anylb_conf::load_str(TOPOLOGY, "bench.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .resolve("lb1")
        .expect("node");
    let macs = [[2, 0, 0, 0, 0x0b, 0], [2, 0, 0, 0, 0x0b, 1]];
    let snap = Builder::default()
        .build(&node, &macs, 1, &Overrides::default())
        .expect("snapshot");
    let mut w: Worker<VecFrame> = Worker::new(0, Arc::new(snap));
    let (mut out, mut alloc) = (Output::new(false), VecAlloc);
    let mut pool: Vec<VecFrame> = (0..64).map(|_| VecFrame::empty()).collect();
    let mut burst: Vec<VecFrame> = Vec::with_capacity(32);
    let (mut i, mut sent, mut now) = (0usize, 0u64, 1_000u64);
    let mut round = |w: &mut Worker<VecFrame>, now: u64| {
        for _ in 0..32 {
            let mut f = pool.pop().unwrap_or_else(VecFrame::empty);
            f.reset(&records[i].data);
            i = (i + 1) % records.len();
            burst.push(f);
        }
        w.process(now, 0, burst.drain(..), &mut alloc, &mut out);
        pool.extend(out.tx.drain(..).map(|(_, f)| f));
        out.clear();
    };
    // A first pass opens the connections; the clock moves as the DPDK runtime's would (milliseconds).
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        round(&mut w, now);
    }
    let tx0 = w.stats.tx_packets;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        for _ in 0..64 {
            round(&mut w, now);
            sent += 32;
        }
        now = 1_000 + t0.elapsed().as_millis() as u64;
    }
    let el = t0.elapsed();
    assert_eq!(w.stats.tx_packets - tx0, sent, "engine: every frame forwarded");
    el.as_nanos() as f64 / sent as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    let secs = if quick { 2 } else { 5 };
    // The two captures written to DIR (`--captures DIR`), for running one measurement by hand, for instance
    // under callgrind.
    if let Some(i) = args.iter().position(|a| a == "--captures") {
        let dir = std::path::Path::new(&args[i + 1]);
        std::fs::create_dir_all(dir).expect("capture dir");
        println!("{}\n{}", capture(dir, 3), capture(dir, 7));
        return;
    }
    // Child: one anylb measurement (`--one NAME CAPTURE`, `--two NAME CAPTURE` for two workers).
    for (flag, workers) in [("--one", 1), ("--two", 2)] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            anylb(&args[i + 2], secs, &args[i + 1], workers);
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("anylb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The reference mix (a SYN and 3 ACKs per flow, as since session 1), and a mostly established one (a SYN
    // and 7 ACKs; net_pcap holds the whole capture in mbufs, so it cannot grow much): the capture loops, so
    // its SYNs meet existing connections and take the general path.
    let reference = capture(&dir, 3);
    let established = capture(&dir, 7);
    let child = |flag: &str, name: &str, input: &str| -> Option<f64> {
        let mut cmd = std::process::Command::new(&args[0]);
        if quick {
            cmd.arg("quick");
        }
        let out = cmd.args([flag, name, input]).output().expect("child bench");
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        text.lines().find_map(|l| {
            l.strip_prefix(&format!("BENCH {name}_mpps "))?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
    };
    let mpps = child("--one", "dpdk_fnat44_one_worker", &reference);
    let one = child("--one", "dpdk_fnat44_established_one_worker", &established);
    // Two workers on the two CPUs (the main thread, asleep, shares the first), each with its own RX queue of
    // the same capture: the aggregate against one worker, in the same run.
    let two = child("--two", "dpdk_fnat44_established_two_workers", &established);
    if let (Some(one), Some(two)) = (one, two) {
        println!("BENCH dpdk_two_workers_over_one {:.3} ratio", two / one);
    }
    // The same vdevs' own scaling: testpmd on two forwarding cores against one, on the established capture.
    if let (Some(t1), Some(t2)) = (
        testpmd_mpps(&established, secs, 1),
        testpmd_mpps(&established, secs, 2),
    ) {
        println!("BENCH dpdk_testpmd_two_cores_mpps {t2:.2} Mpps");
        println!("BENCH dpdk_testpmd_two_cores_over_one {:.3} ratio", t2 / t1);
    }
    // The engine alone over the established capture, in this run: what the DPDK path adds around it.
    let engine = engine_ns(&established, secs);
    println!("BENCH dpdk_engine_alone_established_ns_per_packet {engine:.1} ns");
    match (testpmd_mpps(&reference, secs, 1), mpps) {
        (Some(base), Some(m)) => {
            println!("BENCH dpdk_testpmd_io_mpps {base:.2} Mpps");
            println!("BENCH dpdk_fnat44_to_testpmd_ratio {:.3} ratio", m / base);
            if let Some(one) = one {
                // Goal: the DPDK path costs at most the engine, testpmd's own receive and transmit, and 10 ns.
                let extra = 1e3 / one - engine - 1e3 / base;
                println!("BENCH dpdk_path_minus_engine_minus_testpmd {extra:.1} ns (goal <= 10)");
                println!(
                    "BENCH dpdk_fnat44_established_to_testpmd_ratio {:.3} ratio",
                    one / base
                );
            }
        }
        _ => eprintln!("dpdk-testpmd did not run (install dpdk-dev), or anylb did not; no baseline"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
