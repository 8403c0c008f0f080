//! The two-minute soak of the demo lab (the five-minute one is `anylb-lab soak FILE`, its output in
//! docs/reliability.md): load from 16 client threads while every fault of the schedule happens once. Fails on a
//! failed request outside the expected windows (a dying backend until the health checks take it out; r1's own
//! `clear bgp *` while FRR re-announces) or on memory growth after warm-up. Needs root, libdpdk and frr.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use topology_tests::clab::{copy_dir, Lab};
use topology_tests::demo::ready;

#[test]
fn two_minutes_of_load_and_faults_fail_no_request_outside_the_expected_windows() {
    let anylb = Path::new(env!("CARGO_BIN_EXE_anylb"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology-tests/topologies");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&src, dir.path()).unwrap();
    let file = dir.path().join("demo.clab.yml");
    let _ = Lab::down(&file);
    let mut lab = Lab::up(&file, anylb, &dir.path().join("logs")).unwrap();
    ready(&lab, anylb).unwrap();
    let report =
        topology_tests::soak::run(&mut lab, anylb, &dir.path().join("demo/cluster.toml"), 120, 16).unwrap();
    println!("{}", report.table());
    drop(lab);
    Lab::down(&file).unwrap();
    assert!(report.ok > 10_000, "{}", report.table());
    let problems = report.problems(32 * 1024);
    // On a failure the nodes' last log lines (BGP, BFD, sync and health events with their times) say what
    // happened around it.
    let logs = || {
        ["lb1", "lb2"]
            .iter()
            .map(|n| {
                let text =
                    std::fs::read_to_string(dir.path().join(format!("logs/{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                format!(
                    "--- {n}.log (last 40 lines)\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        problems.is_empty(),
        "{problems:?}\n{}\n{}",
        report.table(),
        logs()
    );
}
