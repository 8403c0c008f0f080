//! `anylb replay` as an operator runs it: golden input in, the stored output out, a verdict per frame.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn anylb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anylb"))
        .args(args)
        .output()
        .expect("run anylb")
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dataplane/tests/golden")
        .join(name)
}

#[test]
fn replay_writes_the_golden_output_and_prints_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    let o = anylb(&[
        "replay",
        "--config",
        golden("lab.toml").to_str().unwrap(),
        "--node",
        "lb1",
        "--input",
        golden("tcp44.in.pcap").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(golden("tcp44.out.pcap")).unwrap()
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("forward in0"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("8 frames in"), "{text}");

    let o = anylb(&[
        "replay",
        "--config",
        golden("lab.toml").to_str().unwrap(),
        "--node",
        "lb1",
        "--input",
        golden("all_drained.in.pcap").to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["packets"][0]["verdict"]["verdict"], "drop");
    assert_eq!(v["packets"][0]["verdict"]["reason"], "no_backend");
}

#[test]
fn a_syn_proxy_capture_replays_without_the_nodes_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    let o = anylb(&[
        "replay",
        "--config",
        golden("syn_proxy.toml").to_str().unwrap(),
        "--node",
        "lb1",
        "--input",
        golden("syn_proxy.in.pcap").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cluster.syn_proxy.key_file") && err.contains("keyed by the cluster's name"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(golden("syn_proxy.out.pcap")).unwrap()
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("spliced") && text.contains("drop bad_cookie"),
        "{text}"
    );
}

#[test]
fn replay_reports_bad_input_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pcap");
    std::fs::write(&bad, b"this is not a capture at all").unwrap();
    let o = anylb(&[
        "replay",
        "--config",
        golden("lab.toml").to_str().unwrap(),
        "--node",
        "lb1",
        "--input",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a pcap file"));
    let o = anylb(&[
        "replay",
        "--config",
        golden("lab.toml").to_str().unwrap(),
        "--node",
        "nope",
        "--input",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no node named"));
}
