//! FRR instances leave nothing behind on the machine: stopped on drop, each daemon removes the directory it keeps
//! under `/var/tmp/frr`, and the directories of daemons killed with their namespace are removed as well. Needs
//! root and frr (CI has both).

#![allow(clippy::unwrap_used)]

use topology_tests::frr::{is_running, temp_dir, Frr};
use topology_tests::netns::{unique_prefix, Netns};

const CONFIG: &str = "frr defaults traditional\nrouter bgp 65000\n bgp router-id 192.0.2.1\n";

/// FRR (zebra and bgpd) in a new namespace, its daemons, each checked to keep its directory while it runs.
fn started(tag: &str) -> (Netns, Frr, Vec<(String, u32)>) {
    let ns = Netns::new(&format!("{}{tag}", unique_prefix("ff"))).unwrap();
    let frr = Frr::start(&ns, CONFIG).unwrap();
    let daemons = frr.daemons();
    let names: Vec<&str> = daemons.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(names, ["bgpd", "zebra"]);
    for (d, pid) in &daemons {
        assert!(
            temp_dir(d, *pid).is_some(),
            "{d} keeps its directory while it runs"
        );
    }
    (ns, frr, daemons)
}

#[test]
fn a_dropped_instance_stops_its_daemons_and_leaves_no_directory_behind() {
    let (_ns, frr, daemons) = started("a");
    drop(frr);
    for (d, pid) in &daemons {
        assert!(!is_running(d, *pid), "{d} stopped");
        assert_eq!(temp_dir(d, *pid), None, "{d}'s directory is gone");
    }
}

#[test]
fn directories_of_daemons_killed_with_their_namespace_are_removed() {
    let (ns, frr, daemons) = started("b");
    // The namespace goes first: its processes are killed, and cannot clean up after themselves.
    drop(ns);
    for (d, pid) in &daemons {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while is_running(d, *pid) && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!is_running(d, *pid), "{d} killed");
        assert!(temp_dir(d, *pid).is_some(), "a killed {d} left its directory");
    }
    drop(frr);
    for (d, pid) in &daemons {
        assert_eq!(temp_dir(d, *pid), None, "{d}'s directory removed");
    }
}

#[test]
fn a_crashed_daemon_is_gone_and_so_is_its_directory() {
    let (_ns, frr, daemons) = started("c");
    let &(_, bgpd) = daemons.iter().find(|(d, _)| d == "bgpd").unwrap();
    frr.crash("bgpd").unwrap();
    assert!(!is_running("bgpd", bgpd), "bgpd killed");
    assert_eq!(temp_dir("bgpd", bgpd), None, "its directory removed");
    assert!(frr.vtysh("show version").is_ok(), "zebra goes on");
    assert!(frr.crash("ospfd").is_err(), "no such daemon");
}
