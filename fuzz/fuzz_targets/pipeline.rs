//! Fuzzes the packet pipeline: the first byte picks one of the golden-test topologies (Full-NAT, DR/tunnel/NAT,
//! SNAT gateway, TOA/PROXY v2, GUE, two nodes with second chance, SYN-proxy), the rest is split into frames (2-byte
//! length prefixes, the top bit choosing the port) and fed to one worker. Any frame must get a verdict, never a
//! panic, and the worker's counters must account for every frame. Seeds (`seeds/pipeline`) are the golden
//! captures, so the fuzzer starts from real conversations.
#![no_main]

use std::sync::{Arc, OnceLock};

use anylb_dataplane::frame::{VecAlloc, VecFrame};
use anylb_dataplane::snapshot::{Builder, Overrides, Snapshot};
use anylb_dataplane::worker::{Output, Worker};
use libfuzzer_sys::fuzz_target;

const TOPOLOGIES: [(&str, &str); 7] = [
    ("lab.toml", include_str!("../../dataplane/tests/golden/lab.toml")),
    ("modes.toml", include_str!("../../dataplane/tests/golden/modes.toml")),
    ("snat.toml", include_str!("../../dataplane/tests/golden/snat.toml")),
    ("client.toml", include_str!("../../dataplane/tests/golden/client.toml")),
    ("gue.toml", include_str!("../../dataplane/tests/golden/gue.toml")),
    ("peers.toml", include_str!("../../dataplane/tests/golden/peers.toml")),
    ("syn_proxy.toml", include_str!("../../dataplane/tests/golden/syn_proxy.toml")),
];

fn snapshot(i: usize) -> Arc<Snapshot> {
    static SNAPS: OnceLock<Vec<Arc<Snapshot>>> = OnceLock::new();
    SNAPS
        .get_or_init(|| {
            TOPOLOGIES
                .iter()
                .map(|(name, text)| {
                    let cfg = anylb_conf::load_str(text, name).expect("topology").resolve("lb1").expect("node");
                    let macs = [[2, 0, 0, 0, 0x0b, 0], [2, 0, 0, 0, 0x0b, 1]];
                    Arc::new(Builder::default().build(&cfg, &macs, 2, &Overrides::default()).expect("snapshot"))
                })
                .collect()
        })[i % TOPOLOGIES.len()]
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    let mut w: Worker<VecFrame> = Worker::new(0, snapshot(usize::from(which)));
    // The seeds carry other MACs than these ports'; the pipeline behind the MAC check is what is explored.
    w.set_mac_filter(false);
    let mut out = Output::new(true);
    let mut rest = data;
    let mut now = 1_000u64;
    let mut frames = 0u64;
    while rest.len() >= 2 {
        let head = u16::from_be_bytes([rest[0], rest[1]]);
        let port = head >> 15;
        let len = usize::from(head & 0x7fff).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        rest = &rest[2 + len..];
        now += 37;
        w.process(now, port, [VecFrame::from_bytes(frame)], &mut VecAlloc, &mut out);
        frames += 1;
    }
    assert_eq!(out.verdicts.len() as u64, frames);
    assert_eq!(w.stats.rx_packets, frames);
});
