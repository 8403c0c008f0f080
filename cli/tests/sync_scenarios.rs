//! Stateless-equivalent nodes on the demo cluster (connection sync on, `docs/cluster.md`): 200 keep-alive
//! connections through the VIP, a request on each every 200 ms, spread over both nodes by r1's ECMP, survive
//! sync datagrams lost in bursts while they are synced (resent, nothing lost) and then `kill -9` of one node's
//! `anylb`, its restart (resync, its local addresses taken back), and a rolling restart
//! of both nodes; a sync datagram sealed with another key is refused and counted. Needs root, libdpdk and frr
//! (CI has them).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use topology_tests::clab::{copy_dir, Lab};
use topology_tests::demo::{anylb_cli, ready, route, wait};
use topology_tests::keepalive::Keepalive;

/// Loses lb2's datagrams to lb1's sync address in bursts for about 3 s (each shorter than `dead_after`): the
/// neighbour entry for lb1 points at a MAC nobody has, then is deleted (resolved again at once).
const LOSSY: &str = "for i in 1 2 3 4 5 6 7 8 9 10; do \
    ip neigh replace 198.51.100.11 lladdr 02:00:5e:00:53:01 dev in0 nud permanent; sleep 0.2; \
    ip neigh del 198.51.100.11 dev in0; sleep 0.1; done";

/// A heartbeat sealed with a key that is not the cluster's, sent to lb1's sync port from lb2's address.
const WRONG_KEY: &str = r#"
import hashlib, hmac, socket, struct
body = b"ALS1" + struct.pack(">BBHIIIH", 2, 0, 1, 7, 0, 0, 0)
tag = hmac.new(b"not the cluster's key at all", body, hashlib.sha256).digest()[:16]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.12", 0))
for _ in range(3):
    s.sendto(body + tag, ("198.51.100.11", 7946))
"#;

fn cluster(anylb: &Path, node: &str) -> Value {
    serde_json::from_str(&anylb_cli(anylb, node, &["-j", "cluster"])).unwrap_or_default()
}

/// `node`'s view of `peer`.
fn peer(anylb: &Path, node: &str, peer: &str) -> Value {
    cluster(anylb, node)["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == peer).cloned())
        .unwrap_or_default()
}

/// Connections in `node`'s tables now.
fn table(anylb: &Path, node: &str) -> u64 {
    serde_json::from_str::<Value>(&anylb_cli(anylb, node, &["-j", "stats"]))
        .ok()
        .and_then(|v| v["total"]["connections"].as_u64())
        .unwrap_or(0)
}

/// Both nodes ready, each alive to the other, and r1 with both next hops for the VIP.
fn both_serving(lab: &Lab, anylb: &Path) -> bool {
    ["lb1", "lb2"].iter().all(|n| cluster(anylb, n)["ready"] == true)
        && peer(anylb, "lb1", "lb2")["alive"] == true
        && peer(anylb, "lb2", "lb1")["alive"] == true
        && route(lab).contains("192.0.2.11")
        && route(lab).contains("192.0.2.27")
}

/// The keep-alive run's verdict: every connection alive at the end and no stall of 2 s.
fn assert_survived(what: &str, v: &Value, logs: &dyn Fn() -> String) {
    println!("{what}: {v}");
    assert_eq!(
        (v["connections"].as_u64(), v["alive"].as_u64()),
        (Some(200), Some(200)),
        "{what}: connections broke: {v}\n{}",
        logs()
    );
    let stall = v["max_stall_s"].as_f64().unwrap();
    assert!(stall < 2.0, "{what}: longest stall {stall} s: {v}\n{}", logs());
}

#[test]
fn connections_survive_a_node_killed_restarted_and_a_rolling_restart() {
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
                let log =
                    std::fs::read_to_string(dir.path().join(format!("logs/{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                format!(
                    "--- {n} (last lines)\n{}\n--- {n} cluster\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                    anylb_cli(anylb, n, &["cluster"])
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    ready(&lab, anylb).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    wait("both nodes ready and synced", Duration::from_secs(20), || {
        both_serving(&lab, anylb)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    // 1. A datagram sealed with another key is refused and counted; the peers stay alive.
    lab.ns("lb2")
        .unwrap()
        .exec(&["python3", "-c", WRONG_KEY])
        .unwrap();
    wait("the wrong-key datagrams counted", Duration::from_secs(5), || {
        cluster(anylb, "lb1")["bad_tag"].as_u64() >= Some(3)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(peer(anylb, "lb1", "lb2")["alive"], true);
    // The sync's figures are on /metrics, served on the control socket too; /v1/ lists the endpoints.
    let curl = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--unix-socket", "/run/anylb/lb1.sock"])
            .arg(format!("http://anylb{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let metrics = curl("/metrics");
    for line in [
        "anylb_sync_ready 1",
        "anylb_sync_peer_alive{peer=\"lb2\"} 1",
        "anylb_sync_datagrams_refused_total{reason=\"bad_tag\"} 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in /metrics:\n{metrics}"
        );
    }
    assert!(curl("/v1/").contains("\"/v1/cluster\""), "{}", curl("/v1/"));

    // 2. 200 connections run over both nodes; lb2's sync datagrams to lb1 are lost in bursts while the
    //    connections pass the threshold: lb2 sends them again and nothing stays unacknowledged. Then kill -9 of
    //    lb2: lb1 takes lb2's connections and local addresses over, and every connection continues.
    let resent = |n: &str, p: &str| peer(anylb, n, p)["counters"]["resent"].as_u64().unwrap_or(0);
    let resent_before = resent("lb2", "lb1");
    let ka = Keepalive::start(&lab, "203.0.113.10", 200, Duration::from_secs(16)).unwrap();
    lab.ns("lb2").unwrap().exec(&["sh", "-c", LOSSY]).unwrap();
    wait("lb2's sync caught up", Duration::from_secs(5), || {
        peer(anylb, "lb2", "lb1")["in_flight"] == 0
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let lost = resent("lb2", "lb1") - resent_before;
    println!("datagrams lb2 sent lb1 again after the losses: {lost}");
    assert!(lost > 0, "no datagram was resent\n{}", logs());
    assert_eq!(
        peer(anylb, "lb1", "lb2")["alive"],
        true,
        "a burst of losses is not a death"
    );
    let (on1, on2) = (table(anylb, "lb1"), table(anylb, "lb2"));
    let held = peer(anylb, "lb1", "lb2")["records_held"].as_u64().unwrap_or(0);
    println!("before the kill: lb1 {on1} connections, lb2 {on2}; lb1 holds {held} of lb2's records");
    assert!(
        on2 >= 40,
        "ECMP gave lb2 only {on2} of the connections\n{}",
        logs()
    );
    assert!(held >= 40, "lb1 holds {held} of lb2's records\n{}", logs());
    let pid = lab.pids["lb2"];
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    wait("lb1 serving lb2's addresses", Duration::from_secs(5), || {
        peer(anylb, "lb1", "lb2")["taken_over"] == true
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_survived("kill -9 of lb2", &ka.finish().unwrap(), &logs);
    assert_eq!(cluster(anylb, "lb1")["takeovers"].as_u64(), Some(1));

    // 3. lb2 comes back while connections run (all on lb1 now): it resyncs, takes its local addresses back
    //    and announces again; the connections ECMP moves back to it continue.
    let ka = Keepalive::start(&lab, "203.0.113.10", 200, Duration::from_secs(16)).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    lab.start("lb2").unwrap();
    wait("lb2 back and ready", Duration::from_secs(20), || {
        both_serving(&lab, anylb)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(peer(anylb, "lb1", "lb2")["taken_over"], false);
    assert_survived("restart of lb2", &ka.finish().unwrap(), &logs);

    // 4. Rolling restart (the upgrade): lb1 then lb2, each stopped and started again once the other serves.
    let ka = Keepalive::start(&lab, "203.0.113.10", 200, Duration::from_secs(40)).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    for n in ["lb1", "lb2"] {
        assert!(lab.stop(n), "{n} did not stop");
        std::thread::sleep(Duration::from_secs(2));
        lab.start(n).unwrap();
        wait(&format!("{n} back and ready"), Duration::from_secs(20), || {
            both_serving(&lab, anylb)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
        // Connections opened on the other node meanwhile are synced past the threshold.
        std::thread::sleep(Duration::from_secs(3));
    }
    let v = ka.finish().unwrap();
    assert_survived("rolling restart", &v, &logs);
    assert!(v["requests"].as_u64().unwrap() > 200 * 100, "{v}");

    drop(lab);
    Lab::down(&file).unwrap();
}
