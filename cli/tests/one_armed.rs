//! Second chance on one-armed nodes, in a lab (topology-tests/topologies/one-armed.clab.yml): two nodes with one
//! dataplane port each, no connection sync, a router with a static route to the VIP. 20 keep-alive connections
//! run through lb1; the router moves the VIP to lb2, which knows none of them and hands their segments back out
//! of the same port to lb1: every connection continues. Needs root and libdpdk (CI has them).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use topology_tests::clab::{copy_dir, Lab};
use topology_tests::demo::{anylb_cli, traffic, wait};
use topology_tests::keepalive::Keepalive;

/// Segments `node` handed to a peer node.
fn to_peers(anylb: &Path, node: &str) -> u64 {
    serde_json::from_str::<Value>(&anylb_cli(anylb, node, &["-j", "stats"]))
        .ok()
        .and_then(|v| v["total"]["peer_forwarded"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_one_armed_node_hands_connections_it_does_not_know_to_its_peer() {
    let anylb = Path::new(env!("CARGO_BIN_EXE_anylb"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology-tests/topologies");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&src, dir.path()).unwrap();
    let file = dir.path().join("one-armed.clab.yml");
    let _ = Lab::down(&file);
    let lab = Lab::up(&file, anylb, &dir.path().join("logs")).unwrap();
    let logs = || {
        ["lb1", "lb2"]
            .iter()
            .map(|n| {
                format!(
                    "--- {n}\n{}",
                    std::fs::read_to_string(dir.path().join(format!("logs/{n}.log"))).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (lb1, lb2) = ("onearm-lb1", "onearm-lb2");
    wait("the VIP answers through lb1", Duration::from_secs(30), || {
        traffic(&lab, 5).is_ok_and(|v| v["ok"] == 5)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    let ka = Keepalive::start(&lab, "203.0.113.10", 20, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(to_peers(anylb, lb2), 0, "lb2 has seen nothing yet");
    lab.ns("r1")
        .unwrap()
        .ip(&["route", "replace", "203.0.113.10/32", "via", "198.51.100.12"])
        .unwrap();
    let v = ka.finish().unwrap();
    println!("after the router moved the VIP to lb2: {v}");
    assert_eq!(
        (v["connections"].as_u64(), v["alive"].as_u64()),
        (Some(20), Some(20)),
        "{v}\n{}",
        logs()
    );
    let handed = to_peers(anylb, lb2);
    println!("lb2 handed {handed} segments to lb1");
    assert!(handed > 100, "lb2 handed only {handed} segments to its peer");
    assert_eq!(
        to_peers(anylb, lb1),
        0,
        "a peer's frames are never handed on again"
    );
    // New connections now open on lb2 itself.
    let v = traffic(&lab, 20).unwrap();
    assert_eq!(v["ok"], 20, "{v}");

    drop(lab);
    Lab::down(&file).unwrap();
}
