//! The DPDK path against `anylb replay`: the same capture, fed to `anylb run` through net_pcap vdevs, must
//! produce the same frames on every port as the offline replay. Needs root and libdpdk (CI has both).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anylb_dataplane::pcap::{self, Record};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dataplane/tests/golden")
        .join(name)
}

const UP_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 0];
const IN_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];

/// Client-side frames of the golden scenarios (those addressed to the uplink or broadcast from its side).
fn client_frames() -> Vec<Record> {
    let mut v = Vec::new();
    for s in ["tcp44", "udp", "arp_ns", "echo", "all_drained", "tcp66", "tcp64"] {
        for r in pcap::read(std::fs::File::open(golden(&format!("{s}.in.pcap"))).unwrap()).unwrap() {
            if r.data[..6] != IN_MAC {
                v.push(r);
            }
        }
    }
    for (i, r) in v.iter_mut().enumerate() {
        r.ts_ns = 1_700_000_000_000_000_000 + i as u64 * 1_000_000;
    }
    v
}

fn by_port(records: &[Record], mac: [u8; 6]) -> Vec<Vec<u8>> {
    records
        .iter()
        .filter(|r| r.data[6..12] == mac)
        .map(|r| r.data.clone())
        .collect()
}

#[test]
fn dpdk_net_pcap_output_equals_replay_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    let empty = dir.path().join("empty.pcap");
    let (out_up, out_in) = (dir.path().join("up.pcap"), dir.path().join("in0.pcap"));
    let frames = client_frames();
    pcap::write(std::fs::File::create(&input).unwrap(), &frames).unwrap();
    pcap::write(std::fs::File::create(&empty).unwrap(), &[]).unwrap();

    let topo = std::fs::read_to_string(golden("lab.toml"))
        .unwrap()
        .replace(
            "device = \"net_null0\"",
            &format!("device = \"net_pcap0,rx_pcap={},tx_pcap={}\"", input.display(), out_up.display()),
        )
        .replace(
            "device = \"net_null1\"",
            &format!("device = \"net_pcap1,rx_pcap={},tx_pcap={}\"", empty.display(), out_in.display()),
        )
        .replace(
            "connections_per_worker = 1024",
            "connections_per_worker = 1024\neal_args = [\"--no-huge\", \"--no-shconf\", \"--no-pci\", \"-m\", \"256\", \"--log-level\", \"lib.eal:error\"]",
        );
    let cfg_path = dir.path().join("lab.toml");
    std::fs::write(&cfg_path, topo).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_anylb"))
        .args([
            "run",
            "--config",
            cfg_path.to_str().unwrap(),
            "--node",
            "lb1",
            "--no-tap",
            "--stats-interval",
            "0",
        ])
        .spawn()
        .unwrap();
    // net_pcap reads the whole file at once; give the worker a moment, then stop (net_pcap flushes on stop).
    std::thread::sleep(Duration::from_secs(3));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("anylb run did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "anylb run exited with {status}");

    let dpdk_up = pcap::read(std::fs::File::open(&out_up).unwrap()).unwrap();
    let dpdk_in = pcap::read(std::fs::File::open(&out_in).unwrap()).unwrap();

    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg = anylb_conf::load_str(&text, "lab.toml")
        .unwrap()
        .resolve("lb1")
        .unwrap();
    let replayed = anylb_dataplane::replay::run(&cfg, &frames, None).unwrap();
    let want_up = by_port(&replayed.output, UP_MAC);
    let want_in = by_port(&replayed.output, IN_MAC);
    assert!(!want_up.is_empty() && !want_in.is_empty());
    let got_up: Vec<Vec<u8>> = dpdk_up.into_iter().map(|r| r.data).collect();
    let got_in: Vec<Vec<u8>> = dpdk_in.into_iter().map(|r| r.data).collect();
    assert_eq!(got_up.len(), want_up.len(), "frames sent on the uplink");
    assert_eq!(got_in.len(), want_in.len(), "frames sent on the inside port");
    for (i, (g, w)) in got_up.iter().zip(&want_up).enumerate() {
        assert_eq!(g, w, "uplink frame {i}");
    }
    for (i, (g, w)) in got_in.iter().zip(&want_in).enumerate() {
        assert_eq!(g, w, "inside frame {i}");
    }
}
