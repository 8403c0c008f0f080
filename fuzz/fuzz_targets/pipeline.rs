//! Fuzzes the packet pipeline: the input is split into frames (2-byte length prefixes, the top bit choosing
//! the port) and fed to one worker of the golden-test topology. Any frame must get a verdict, never a panic,
//! and the worker's counters must account for every frame.
#![no_main]

use std::sync::{Arc, OnceLock};

use anylb_dataplane::frame::{VecAlloc, VecFrame};
use anylb_dataplane::snapshot::{Builder, Overrides, Snapshot};
use anylb_dataplane::worker::{Output, Worker};
use libfuzzer_sys::fuzz_target;

fn snapshot() -> Arc<Snapshot> {
    static SNAP: OnceLock<Arc<Snapshot>> = OnceLock::new();
    SNAP.get_or_init(|| {
        let text = include_str!("../../dataplane/tests/golden/lab.toml");
        let cfg = anylb_conf::load_str(text, "lab.toml").expect("topology").resolve("lb1").expect("node");
        let macs = [[2, 0, 0, 0, 0x0b, 0], [2, 0, 0, 0, 0x0b, 1]];
        Arc::new(Builder::default().build(&cfg, &macs, 2, &Overrides::default()).expect("snapshot"))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut w: Worker<VecFrame> = Worker::new(0, snapshot());
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
