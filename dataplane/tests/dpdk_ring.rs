//! The worker loop over net_ring loopback ports (what a port sends comes back on its receive side): frames
//! injected into a worker are forwarded through DPDK, loop back and are processed again; the announcements of
//! a new snapshot loop back and are answered; a published snapshot that drains the backend takes effect.
//! Needs root and libdpdk (CI has both).

#![allow(clippy::unwrap_used)]
#![cfg(feature = "dpdk")]

mod common;

use std::time::Duration;

use anylb_dataplane::dpdk::{wait_for, Config, PortSpec, Runtime};
use anylb_dataplane::snapshot::{Builder, Overrides};
use anylb_dataplane::stats::DropReason;
use common::*;

#[test]
fn worker_loop_over_net_ring_loopback() {
    let topo = TOPOLOGY.replace(
        "connections_per_worker = 1024",
        "connections_per_worker = 1024\nmain_core = 0",
    );
    let t = anylb_conf::load_str(&topo, "lab.toml").unwrap();
    let node = t.resolve("lb1").unwrap();
    let port = |name: &str, dev: &str| PortSpec {
        name: name.into(),
        device: dev.into(),
        mtu: 1500,
        addresses: vec![],
        exception: anylb_conf::ExceptionPath::None,
    };
    let cfg = Config {
        workers: vec![1],
        main_core: 0,
        eal_args: [
            "--no-huge",
            "--no-shconf",
            "--no-pci",
            "-m",
            "256",
            "--log-level",
            "lib.eal:error",
            "--file-prefix=anylb-ringtest",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ports: vec![port("up0", "net_ring0"), port("in0", "net_ring1")],
        descriptors: 256,
        mbufs: 4095,
        exception_taps: false,
    };
    let mut builder = Builder::default();
    let rt = Runtime::start(&cfg, |macs| builder.build(&node, macs, 1, &Overrides::default())).unwrap();
    assert_eq!(rt.ports().len(), 2);

    // The first snapshot's gratuitous ARPs/NAs loop back: the ARP requests for our own VIPs are answered.
    assert!(
        wait_for(Duration::from_secs(5), || rt.stats()[0].stack_replies > 0),
        "{:?}",
        rt.stats()
    );

    // A client SYN handed to the worker is translated and sent to the backend port; it loops back and, being
    // addressed to the backend's MAC (not to this node), is dropped as another station's frame.
    let macs: Vec<[u8; 6]> = rt.ports().iter().map(|p| parse_mac(&p.mac)).collect();
    let before = rt.stats()[0].clone();
    let syn = tcp(
        ROUTER_MAC,
        macs[0],
        ("192.0.2.100", 40000),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    assert_eq!(rt.inject(0, 0, &[syn]), 1);
    assert!(wait_for(Duration::from_secs(5), || rt.stats()[0].new_connections
        == before.new_connections + 1));
    assert!(wait_for(Duration::from_secs(5), || rt.stats()[0]
        .drops_of(DropReason::OtherMac)
        > before.drops_of(DropReason::OtherMac)));
    // A frame to another MAC is not forwarded even though it is for the VIP.
    let other = tcp(
        ROUTER_MAC,
        [0x02, 0, 0, 0, 0x0e, 0x0e],
        ("192.0.2.100", 40002),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    let drops = rt.stats()[0].drops_of(DropReason::OtherMac);
    rt.inject(0, 0, &[other]);
    assert!(wait_for(Duration::from_secs(5), || rt.stats()[0]
        .drops_of(DropReason::OtherMac)
        > drops));
    assert_eq!(rt.stats()[0].new_connections, before.new_connections + 1);
    let in0 = rt.ports().into_iter().find(|p| p.name == "in0").unwrap();
    assert!(in0.opackets >= 1 && in0.ipackets >= 1, "{in0:?}");

    // Publishing a snapshot that drains every backend of the service stops new connections.
    let mut ov = Overrides::default();
    for b in ["198.51.100.101", "198.51.100.102"] {
        ov.weights.insert(("web4".into(), b.parse().unwrap(), 8080), 0);
    }
    rt.publish(builder.build(&node, &macs, 1, &ov).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    let syn2 = tcp(
        ROUTER_MAC,
        macs[0],
        ("192.0.2.100", 40001),
        ("203.0.113.10", 80),
        "S",
        1,
        None,
        b"",
    );
    rt.inject(0, 0, &[syn2]);
    assert!(
        wait_for(Duration::from_secs(5), || rt.stats()[0]
            .drops_of(DropReason::NoBackend)
            == 1),
        "{:?}",
        rt.stats()
    );
    assert!(rt.heartbeat_ages_ms()[0] < 1000);
    rt.stop();
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(p, 16).unwrap();
    }
    m
}
