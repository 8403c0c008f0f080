//! The end-to-end scenarios on the demo cluster (topology-tests/topologies/demo.clab.yml) brought up from
//! network namespaces: ECMP at the upstream, traffic over every backend and both nodes, a reload while a
//! connection stays open, a node drain without failed requests, a backend failure and recovery, every backend
//! down, and a node killed. Needs root, libdpdk and frr (CI has them).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use topology_tests::clab::{copy_dir, Lab};
use topology_tests::demo::{
    anylb_cli, big_udp_traffic, conns, flood_with_requests, ready, route, route_to, traffic, traffic_to,
    udp_traffic, wait, Flood,
};
use topology_tests::frr::Frr;

/// IP fragments both nodes handled so far.
/// Counter `key` of `anylb stats`, summed over both nodes.
fn total(anylb: &Path, key: &str) -> u64 {
    ["lb1", "lb2"]
        .iter()
        .map(|n| {
            serde_json::from_str::<serde_json::Value>(&anylb_cli(anylb, n, &["-j", "stats"]))
                .ok()
                .and_then(|v| v["total"][key].as_u64())
                .unwrap_or(0)
        })
        .sum()
}

fn fragments(anylb: &Path) -> u64 {
    total(anylb, "fragments")
}

const HOLD_OPEN: &str = r#"
import socket, sys, time
c = socket.create_connection(("203.0.113.10", 80), timeout=5)
time.sleep(float(sys.argv[1]))
c.sendall(b"GET / HTTP/1.0\r\n\r\n")
data = b""
while True:
    d = c.recv(4096)
    if not d: break
    data += d
print("held", data.split(b"\r\n\r\n", 1)[-1].strip().decode())
"#;

#[test]
fn demo_cluster_scenarios() {
    let anylb = Path::new(env!("CARGO_BIN_EXE_anylb"));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology-tests/topologies");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&src, dir.path()).unwrap();
    let file = dir.path().join("demo.clab.yml");
    let _ = Lab::down(&file);
    let mut lab = Lab::up(&file, anylb, &dir.path().join("logs")).unwrap();
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

    // What the nodes counted, for the message of a failed traffic check.
    // What to print when traffic fails: each node's counters, backends and neighbours, and r1's routes and
    // neighbours (the path the failed requests could have taken).
    let r1_ns = lab.ns("r1").unwrap().name().to_owned();
    let counters = || {
        let nodes = ["lb1", "lb2"].iter().map(|n| {
            format!(
                "--- {n} stats\n{}--- {n} backends\n{}--- {n} neighbours\n{}",
                anylb_cli(anylb, n, &["stats"]),
                anylb_cli(anylb, n, &["backends"]),
                anylb_cli(anylb, n, &["neigh"])
            )
        });
        let r1 = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &r1_ns,
                "sh",
                "-c",
                "ip route; ip -6 route; ip neigh; ip -6 neigh",
            ])
            .output()
            .map(|o| {
                format!(
                    "--- r1 routes and neighbours\n{}",
                    String::from_utf8_lossy(&o.stdout)
                )
            })
            .unwrap_or_default();
        nodes.chain(std::iter::once(r1)).collect::<Vec<_>>().join("\n")
    };

    // 1. Both nodes' BGP sessions are up and FRR installs the VIP with two next hops.
    wait("two next hops", Duration::from_secs(60), || {
        route(&lab).contains("192.0.2.11") && route(&lab).contains("192.0.2.27")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    ready(&lab, anylb).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    // BFD came up once on every session of both nodes, IPv4 and IPv6 (no flap at start).
    for n in ["lb1", "lb2"] {
        let bfd_once = || {
            let v: serde_json::Value =
                serde_json::from_str(&anylb_cli(anylb, n, &["-j", "bfd"])).unwrap_or_default();
            let all = v.as_array().cloned().unwrap_or_default();
            all.len() == 2 && all.iter().all(|b| b["state"] == "Up")
        };
        wait("BFD up on both sessions", Duration::from_secs(15), bfd_once)
            .unwrap_or_else(|e| panic!("{e}: {}", anylb_cli(anylb, n, &["bfd"])));
        let v: serde_json::Value = serde_json::from_str(&anylb_cli(anylb, n, &["-j", "bfd"])).unwrap();
        for b in v.as_array().unwrap() {
            assert_eq!(
                (b["up_count"].as_u64(), b["down_count"].as_u64()),
                (Some(1), Some(0)),
                "{n}: {b}"
            );
        }
    }

    // 2. 1000 requests all succeed; every backend serves some; both nodes carry traffic.
    let (c1, c2) = (conns(anylb, "lb1"), conns(anylb, "lb2"));
    let v = traffic(&lab, 1000).unwrap();
    assert_eq!(
        (v["ok"].as_u64(), v["failed"].as_u64()),
        (Some(1000), Some(0)),
        "{v}\n{}",
        counters()
    );
    for b in ["be1", "be2", "be3"] {
        assert!(
            v["by_backend"][b].as_u64().unwrap_or(0) > 0,
            "{b} served nothing: {v}"
        );
    }
    let (d1, d2) = (conns(anylb, "lb1") - c1, conns(anylb, "lb2") - c2);
    assert!(d1 > 100 && d2 > 100, "lb1 {d1}, lb2 {d2}");

    // 6. IPv6 Full-NAT, TCP and UDP (seed use case 1): every request succeeds, every backend serves some.
    let v = traffic_to(&lab, "2001:db8:f::10", 300).unwrap();
    assert_eq!(
        (v["ok"].as_u64(), v["failed"].as_u64()),
        (Some(300), Some(0)),
        "{v}\n{}",
        counters()
    );
    let u = udp_traffic(&lab, "2001:db8:f::10", 53, 150).unwrap();
    assert_eq!(
        (u["ok"].as_u64(), u["failed"].as_u64()),
        (Some(150), Some(0)),
        "{u}\n{}",
        counters()
    );
    // 6b. Large UDP datagrams cross the nodes fragmented, over IPv4, IPv6 and NAT64; the client's and the
    //     backends' kernels fragment and reassemble. IPv6 fragments (4000 bytes) are forwarded as fragments.
    //     The lab's af_packet ports hand the nodes IPv4 fragments already reassembled (DPDK's af_packet PMD
    //     asks the kernel to, for its fanout hash) and only up to its frame size: 1800-byte datagrams then
    //     leave the node fragmented again by the egress fragmentation, towards IPv4 and (NAT64) IPv6.
    let frags_before = fragments(anylb);
    for (vip, size) in [
        ("203.0.113.10", 1800),
        ("2001:db8:f::10", 4000),
        ("2001:db8:f::64", 1800),
    ] {
        let b = big_udp_traffic(&lab, vip, 53, 20, size).unwrap();
        assert_eq!(
            (b["ok"].as_u64(), b["failed"].as_u64()),
            (Some(20), Some(0)),
            "{vip}: {b}\n{}",
            counters()
        );
    }
    // IPv6: 20 exchanges of 3 fragments each way; NAT64: 20 queries of 2 fragments.
    assert!(fragments(anylb) - frags_before >= 160, "{}", counters());
    // 7. NAT64 (seed use case 2): IPv6 clients reach the IPv4 backends.
    let n64 = traffic_to(&lab, "2001:db8:f::64", 300).unwrap();
    assert_eq!(
        (n64["ok"].as_u64(), n64["failed"].as_u64()),
        (Some(300), Some(0)),
        "{n64}\n{}",
        counters()
    );
    for b in ["be1", "be2", "be3"] {
        for (what, r) in [("IPv6 TCP", &v), ("IPv6 UDP", &u), ("NAT64", &n64)] {
            assert!(
                r["by_backend"][b].as_u64().unwrap_or(0) > 0,
                "{what}: {b} served nothing: {r}"
            );
        }
    }

    // 7b. A flood of 20,000 spoofed SYNs at the SYN-proxy service (web-sp, 203.0.113.10:8080) while 300 real
    //     requests run: every request succeeds, the nodes answer the flood with cookies and keep nothing of it,
    //     and the connections made are the real clients' alone.
    let client = lab.ns("client").unwrap();
    let at = |k: &str| total(anylb, k);
    let (cookies0, proxied0, made0, table0) = (
        at("syn_cookies"),
        at("syn_proxied"),
        at("new_connections"),
        at("connections"),
    );
    let flood = Flood {
        vip: "203.0.113.10",
        port: 8080,
        syns: 20_000,
        pps: 4_000,
        secs: 10,
    };
    let (sent, real) = flood_with_requests(&lab, flood, 300, Duration::from_millis(500)).unwrap();
    let sent: u64 = sent.unwrap().parse().unwrap();
    let real = real.unwrap();
    let (cookies, proxied, made, table) = (
        at("syn_cookies") - cookies0,
        at("syn_proxied") - proxied0,
        at("new_connections") - made0,
        at("connections"),
    );
    println!(
        "SYN flood: {sent} spoofed SYNs, {cookies} cookies sent, {proxied} connections by cookie, {made} made; table {table0} -> {table}; real {real}"
    );
    assert_eq!(
        (real["ok"].as_u64(), real["failed"].as_u64()),
        (Some(300), Some(0)),
        "{real}\n{}",
        counters()
    );
    assert!(sent >= 15_000, "the flood sent only {sent}");
    assert!(
        cookies >= sent * 9 / 10,
        "{cookies} cookies for {sent} SYNs\n{}",
        counters()
    );
    assert!((300..=310).contains(&proxied), "{proxied} connections by cookie");
    assert!(made <= proxied, "{made} connections made, {proxied} by cookie");
    assert!(table <= table0 + 310, "the table grew from {table0} to {table}");
    // The operator sees them as SYN-proxied, spliced with their backends.
    let listed: Vec<String> = ["lb1", "lb2"]
        .iter()
        .map(|n| anylb_cli(anylb, n, &["-j", "conns", "--service", "web-sp"]))
        .collect();
    let proxied_rows: usize = listed
        .iter()
        .map(|text| {
            let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            let rows = v["connections"].as_array().cloned().unwrap_or_default();
            assert!(rows.iter().all(|r| r["syn_proxy"] == "spliced"), "{v}");
            rows.len()
        })
        .sum();
    assert!(proxied_rows > 0, "no web-sp connection listed: {listed:?}");

    // 9. A reload adding a backend and changing a weight leaves a held-open connection working.
    let held = std::thread::scope(|s| {
        let h = s.spawn(|| client.exec(&["timeout", "30", "python3", "-c", HOLD_OPEN, "4"]));
        std::thread::sleep(Duration::from_secs(1));
        let cluster = dir.path().join("demo/cluster.toml");
        let text = std::fs::read_to_string(&cluster).unwrap().replace(
            "  { address = \"198.51.100.103\", port = 8080 },",
            "  { address = \"198.51.100.103\", port = 8080, weight = 50 },\n  { address = \"198.51.100.104\", port = 8080 },",
        );
        std::fs::write(&cluster, text).unwrap();
        for n in ["lb1", "lb2"] {
            let out = anylb_cli(anylb, n, &["reload"]);
            assert!(
                out.contains("changes applied") && out.contains("198.51.100.104:8080 added"),
                "{out}"
            );
        }
        h.join().unwrap()
    });
    let held = held.unwrap();
    assert!(
        String::from_utf8_lossy(&held.stdout).starts_with("held be"),
        "{held:?}"
    );
    assert!(anylb_cli(anylb, "lb1", &["backends", "web"]).contains("198.51.100.104:8080"));

    // 8. Draining lb1 loses no request: traffic runs while lb1 withdraws gracefully.
    let drained = std::thread::scope(|s| {
        let h = s.spawn(|| traffic(&lab, 600));
        std::thread::sleep(Duration::from_millis(300));
        let out = anylb_cli(anylb, "lb1", &["node", "drain"]);
        (out, h.join().unwrap().unwrap())
    });
    assert!(drained.0.contains("drained"), "{}", drained.0);
    assert_eq!(
        drained.1["failed"].as_u64(),
        Some(0),
        "{}\n{}",
        drained.1,
        counters()
    );
    assert!(!route(&lab).contains("192.0.2.11"), "{}", route(&lab));
    anylb_cli(anylb, "lb1", &["node", "undrain"]);
    wait("lb1 back", Duration::from_secs(15), || {
        route(&lab).contains("192.0.2.11")
    })
    .unwrap();

    // 3. A backend dies: after fall × interval no request fails; it recovers and gets traffic again.
    lab.stop("be2");
    wait("be2 down", Duration::from_secs(10), || {
        ["lb1", "lb2"]
            .iter()
            .all(|n| web_healthy(&anylb_cli(anylb, n, &["services"]), "2/4"))
    })
    .unwrap();
    let v = traffic(&lab, 300).unwrap();
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}\n{}", counters());
    assert!(v["by_backend"].get("be2").is_none(), "{v}");
    lab.start("be2").unwrap();
    wait("be2 up", Duration::from_secs(10), || {
        ["lb1", "lb2"]
            .iter()
            .all(|n| web_healthy(&anylb_cli(anylb, n, &["services"]), "3/4"))
    })
    .unwrap();
    let v = traffic(&lab, 300).unwrap();
    assert!(v["by_backend"]["be2"].as_u64().unwrap_or(0) > 0, "{v}");

    // 5. Every backend down: both nodes withdraw the VIP.
    for b in ["be1", "be2", "be3"] {
        lab.stop(b);
    }
    wait("VIP withdrawn", Duration::from_secs(15), || {
        route(&lab).trim().is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: {}", route(&lab)));
    for b in ["be1", "be2", "be3"] {
        lab.start(b).unwrap();
    }
    wait("VIP back", Duration::from_secs(20), || {
        route(&lab).contains("192.0.2.11") && route(&lab).contains("192.0.2.27")
    })
    .unwrap();

    // 10. r1's link to lb1 is cut (carrier stays up on lb1's side): BFD takes both sessions down and the
    // routes lb1 learned over them leave its table within a second, the fallback static routes taking their
    // place; the link returns, the BGP routes return, and the lab survives the flap (r1 keeps its IPv6
    // address and installs both next hops again), so both nodes carry traffic again.
    let origin = |prefix: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&anylb_cli(anylb, "lb1", &["-j", "route"])).unwrap_or_default();
        v.as_array()
            .into_iter()
            .flatten()
            .find(|r| r["prefix"] == prefix)
            .and_then(|r| r["origin"].as_str())
            .unwrap_or("none")
            .to_owned()
    };
    let r1 = lab.ns("r1").unwrap();
    assert_eq!(
        (origin("192.0.2.128/26"), origin("2001:db8:c::/64")),
        ("bgp".into(), "bgp".into())
    );
    r1.sh("ip link set eth2 down").unwrap();
    let gone = wait(
        "lb1's BGP routes replaced by the fallbacks",
        Duration::from_secs(10),
        || origin("192.0.2.128/26") == "fallback" && origin("2001:db8:c::/64") == "fallback",
    );
    r1.sh("ip link set eth2 up").unwrap();
    let gone = gone.unwrap_or_else(|e| panic!("{e}: {}", anylb_cli(anylb, "lb1", &["route"])));
    println!("lb1's routes from r1 left its table {gone:?} after the cut");
    assert!(gone < Duration::from_secs(1), "took {gone:?}");
    wait("lb1's BGP routes back", Duration::from_secs(30), || {
        origin("192.0.2.128/26") == "bgp" && origin("2001:db8:c::/64") == "bgp"
    })
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", anylb_cli(anylb, "lb1", &["route"]), logs()));
    wait(
        "both next hops at r1 after the flap",
        Duration::from_secs(30),
        || {
            let (v4, v6) = (route(&lab), route_to(&lab, "2001:db8:f::10"));
            v4.contains("192.0.2.11")
                && v4.contains("192.0.2.27")
                && v6.contains("2001:db8:1::11")
                && v6.contains("2001:db8:2::27")
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", route(&lab), route_to(&lab, "2001:db8:f::10")));
    let (c1, c2) = (conns(anylb, "lb1"), conns(anylb, "lb2"));
    let v = traffic(&lab, 400).unwrap();
    assert_eq!(v["failed"].as_u64(), Some(0), "{v}\n{}", counters());
    let (d1, d2) = (conns(anylb, "lb1") - c1, conns(anylb, "lb2") - c2);
    assert!(
        d1 > 40 && d2 > 40,
        "after the flap both nodes carry traffic: lb1 {d1}, lb2 {d2}"
    );

    // 4a. A node hangs (SIGSTOP: its kernel keeps the BGP TCP session open, so only BFD can tell): FRR's BFD
    // takes the session down and removes the node within a second; hold time (3 s) would take longer.
    let pid = lab.pids["lb1"];
    let frr = Frr::attach(lab.ns("r1").unwrap().name());
    let bfd_up = || {
        frr.json("show bfd peers json")
            .ok()
            .and_then(|v| v.as_array().cloned())
            .map_or(0, |peers| peers.iter().filter(|p| p["status"] == "up").count())
    };
    wait("BFD up with both nodes at r1", Duration::from_secs(15), || {
        bfd_up() >= 2
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", frr.vtysh("show bfd peers"), logs()));
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
    };
    signal("-STOP");
    let t = wait("hung lb1 removed", Duration::from_secs(10), || {
        !route(&lab).contains("192.0.2.11") && route(&lab).contains("192.0.2.27")
    });
    signal("-CONT");
    let t = t.unwrap();
    assert!(t < Duration::from_secs(1), "BFD took {t:?}");
    wait("lb1 back after it resumed", Duration::from_secs(20), || {
        route(&lab).contains("192.0.2.11") && route(&lab).contains("192.0.2.27")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    // 4. A node is killed: FRR removes it within a second; new requests succeed through the other node.
    let pid = lab.pids["lb1"];
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let t = wait("lb1 gone", Duration::from_secs(10), || {
        !route(&lab).contains("192.0.2.11") && route(&lab).contains("192.0.2.27")
    })
    .unwrap();
    assert!(t < Duration::from_secs(1), "FRR took {t:?}");
    let v = traffic(&lab, 200).unwrap();
    assert_eq!(
        (v["ok"].as_u64(), v["failed"].as_u64()),
        (Some(200), Some(0)),
        "{v}"
    );

    drop(lab);
    Lab::down(&file).unwrap();
}

/// Whether the `web` service's row of `anylb services` shows `healthy` (healthy/backends): web-sp has the same
/// four backends, checked at other moments, so a match anywhere in the table could be web-sp's alone.
fn web_healthy(services: &str, healthy: &str) -> bool {
    services
        .lines()
        .any(|l| l.split_whitespace().next() == Some("web") && l.contains(healthy))
}
