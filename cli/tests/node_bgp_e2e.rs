//! A node end to end: `anylb run` with its DPDK dataplane (net_af_packet) and BGP speaker behind a real FRR
//! router. FRR learns the VIP and installs it; the node learns the client subnet from FRR and puts it in the
//! dataplane's route table; a real TCP client reaches a real server through FRR and the VIP; when the only
//! backend fails its health check the VIP is withdrawn, and announced again when it recovers; on SIGTERM the
//! node first re-announces with GRACEFUL_SHUTDOWN, then withdraws. Needs root, libdpdk and frr (CI has them).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use topology_tests::frr::Frr;
use topology_tests::netns::{unique_prefix, veth, Netns};

const ECHO_SERVER: &str = r#"
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64); s.settimeout(0.5)
end = time.time() + 90
def serve(c):
    c.settimeout(5)
    try:
        d = c.recv(4096)
        c.sendall(b"echo:" + d)
    except OSError: pass
    c.close()
while time.time() < end:
    try: c, _ = s.accept()
    except socket.timeout: continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

const CLIENT: &str = r#"
import socket, sys, time
deadline = time.time() + 40
while True:
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1); c.close(); break
    except OSError:
        if time.time() > deadline: print("never reachable"); sys.exit(2)
        time.sleep(0.3)
ok = 0
for i in range(int(sys.argv[3])):
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    c.sendall(b"hi %d" % i)
    if c.recv(100) == b"echo:hi %d" % i: ok += 1
    c.close()
print("ok", ok)
"#;

const TOPOLOGY: &str = r#"
[cluster]
name = "e2e"
asn = 65010

[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
control_socket = "SOCKET"
metrics_listen = "127.0.0.1:9810"
[nodes.dataplane]
workers = [1]
main_core = 0
eal_args = ["--no-huge", "--no-shconf", "--no-pci", "-m", "256", "--log-level", "lib.eal:error"]
[[nodes.dataplane.ports]]
name = "up0"
device = "net_af_packet0,iface=up0"
addresses = ["192.0.2.11/28"]
[[nodes.dataplane.ports]]
name = "in0"
device = "net_af_packet1,iface=in0"
addresses = ["198.51.100.1/24"]
[[nodes.local_addresses]]
prefix = "198.51.100.16/31"
port = "in0"
announce = false
[nodes.bgp]
shutdown_wait = "4s"
[[nodes.bgp.neighbors]]
address = "192.0.2.1"
asn = 65000
hold_time = "9s"
keepalive = "3s"

[[services]]
name = "echo"
vip = "203.0.113.10"
port = 80
protocol = "tcp"
communities = ["65010:80"]
health = { kind = "tcp", interval = "300ms", timeout = "200ms", rise = 2, fall = 2 }
backends = [{ address = "198.51.100.101", port = 8080 }]
"#;

#[test]
fn node_announces_its_vip_to_frr_serves_traffic_through_it_and_shuts_down_gracefully() {
    let p = unique_prefix("ne");
    let c = Netns::new(&format!("{p}c")).unwrap();
    let r = Netns::new(&format!("{p}r")).unwrap();
    let mut lb = Netns::new(&format!("{p}l")).unwrap();
    let mut s = Netns::new(&format!("{p}s")).unwrap();
    veth(&c, "eth0", &r, "eth0").unwrap();
    veth(&r, "eth1", &lb, "up0").unwrap();
    veth(&lb, "in0", &s, "eth0").unwrap();
    c.ip(&["addr", "add", "192.0.2.130/26", "dev", "eth0"]).unwrap();
    c.ip(&["route", "add", "default", "via", "192.0.2.129"]).unwrap();
    r.ip(&["addr", "add", "192.0.2.129/26", "dev", "eth0"]).unwrap();
    r.ip(&["addr", "add", "192.0.2.1/28", "dev", "eth1"]).unwrap();
    r.sysctl("net.ipv4.ip_forward", "1").unwrap();
    lb.ip(&["addr", "add", "192.0.2.11/28", "dev", "up0"]).unwrap();
    lb.ip(&["addr", "add", "198.51.100.1/24", "dev", "in0"]).unwrap();
    s.ip(&["addr", "add", "198.51.100.101/24", "dev", "eth0"])
        .unwrap();
    let frr = Frr::start(
        &r,
        "frr defaults traditional\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
         neighbor 192.0.2.11 remote-as 65010\n neighbor 192.0.2.11 timers 3 9\n\
         address-family ipv4 unicast\n  network 192.0.2.128/26\n exit-address-family\n",
    )
    .unwrap();
    let server = s
        .spawn(&["python3", "-c", ECHO_SERVER, "198.51.100.101", "8080"], None)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("e2e.toml");
    let sock = dir.path().join("lb1.sock");
    std::fs::write(&cfg, TOPOLOGY.replace("SOCKET", sock.to_str().unwrap())).unwrap();
    let log = dir.path().join("anylb.log");
    let pid = lb
        .spawn(
            &[
                env!("CARGO_BIN_EXE_anylb"),
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--node",
                "lb1",
                "--stats-interval",
                "0",
            ],
            Some(&log),
        )
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();

    // FRR learns the VIP with the service's community and installs it towards the node.
    assert!(
        frr.wait(Duration::from_secs(30), |_| r
            .sh("ip route show 203.0.113.10")
            .is_ok_and(|x| x.contains("192.0.2.11"))),
        "{}\n{}",
        frr.vtysh("show bgp summary").unwrap_or_default(),
        text()
    );
    let v = frr.json("show bgp ipv4 unicast 203.0.113.10/32 json").unwrap();
    assert_eq!(v["paths"][0]["community"]["string"], "65010:80", "{v}");
    // The node learnt the client subnet and serves clients through FRR.
    let out = c
        .exec(&[
            "timeout",
            "60",
            "python3",
            "-c",
            CLIENT,
            "203.0.113.10",
            "80",
            "10",
        ])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok 10"),
        "{:?}\n{}",
        out,
        text()
    );
    assert!(text().contains("received routes changed"), "{}", text());

    // The operator's view through the control socket.
    let cli = |args: &[&str]| {
        let mut v = vec!["-s", sock.to_str().unwrap()];
        v.extend_from_slice(args);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_anylb"))
            .args(&v)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "anylb {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let summary = cli(&["bgp", "summary"]);
    assert!(
        summary.starts_with("BGP router identifier 192.0.2.11, local AS number 65010\n"),
        "{summary}"
    );
    let head: Vec<&str> = summary
        .lines()
        .find(|l| l.starts_with("Neighbor"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        head,
        [
            "Neighbor",
            "V",
            "AS",
            "MsgRcvd",
            "MsgSent",
            "Up/Down",
            "State/PfxRcd",
            "PfxSnt",
            "Desc"
        ],
        "{summary}"
    );
    // An unknown neighbour is an error, not an empty table.
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_anylb"))
        .args([
            "-s",
            sock.to_str().unwrap(),
            "bgp",
            "routes",
            "received",
            "--neighbor",
            "10.0.0.1",
        ])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no BGP neighbour 10.0.0.1"),
        "{unknown:?}"
    );
    assert!(
        summary.contains("192.0.2.1") && summary.contains("65000"),
        "{summary}"
    );
    let services = cli(&["services"]);
    assert!(
        services.contains("203.0.113.10:80") && services.contains("1/1") && services.contains("yes"),
        "{services}"
    );
    let received: serde_json::Value =
        serde_json::from_str(&cli(&["-j", "bgp", "routes", "received"])).unwrap();
    assert_eq!(received[0]["prefix"], "192.0.2.128/26", "{received}");
    assert!(
        cli(&["route"])
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["B", "192.0.2.128/26", "via", "192.0.2.1", "dev", "up0"]),
        "{}",
        cli(&["route"])
    );
    // The neighbour table: the backend and the router resolved, with their MACs.
    let neigh = cli(&["neigh"]);
    let row = |addr: &str| {
        neigh
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(addr))
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let backend = row("198.51.100.101");
    assert_eq!(backend.first().map(String::as_str), Some("in0"), "{neigh}");
    assert_eq!(backend.get(3).map(String::as_str), Some("reachable"), "{neigh}");
    assert_eq!(backend.get(2).map(|m| m.len()), Some(17), "a MAC: {neigh}");
    assert_eq!(
        row("192.0.2.1").get(3).map(String::as_str),
        Some("reachable"),
        "{neigh}"
    );
    let neigh_json: serde_json::Value = serde_json::from_str(&cli(&["-j", "neigh"])).unwrap();
    assert!(
        neigh_json.as_array().is_some_and(|a| a
            .iter()
            .any(|n| n["address"] == "198.51.100.101" && n["mac"].is_string())),
        "{neigh_json}"
    );
    // FRR sends our own VIP back (AS path 65000 65010): a loop, never used.
    assert!(
        !cli(&["route"]).contains("203.0.113.10/32"),
        "{}",
        cli(&["route"])
    );
    let stats: serde_json::Value = serde_json::from_str(&cli(&["--json", "stats"])).unwrap();
    assert!(
        stats["total"]["new_connections"].as_u64().unwrap() >= 10,
        "{stats}"
    );
    // Data segments of established connections took the fast path (the handshakes did not).
    let fast = stats["total"]["fast_path"].as_u64().unwrap();
    assert!(
        fast > 0 && fast < stats["total"]["tx_packets"].as_u64().unwrap(),
        "{stats}"
    );
    let per_worker = cli(&["stats", "--per-worker"]);
    assert!(per_worker.contains("FastPath"), "{per_worker}");
    // Golden outputs of the show commands, table and JSON, with what changes from run to run masked: numbers
    // (counters, timers, ASNs), times, MACs and ephemeral ports. `ANYLB_BLESS=1` rewrites them.
    // The daemon's rates need two of its samples (2 s apart): wait for them so that the goldens show rates.
    assert!(
        frr.wait(Duration::from_secs(10), |_| {
            serde_json::from_str::<serde_json::Value>(&cli(&["-j", "stats"]))
                .is_ok_and(|v| !v["rates"].is_null())
        }),
        "no rates in stats"
    );
    let st = cli(&["stats"]);
    assert!(
        st.contains("not for us") && st.contains("(rates over") && !st.contains("(-)"),
        "{st}"
    );
    for (name, args) in [
        ("services_stats", &["services", "--stats"][..]),
        ("services_rate", &["services", "--rate"][..]),
        ("pools", &["pools"][..]),
        ("ports", &["ports"][..]),
        ("bgp_summary", &["bgp", "summary"][..]),
        ("bgp_neighbor", &["bgp", "neighbor", "192.0.2.1"][..]),
        ("bgp_routes_advertised", &["bgp", "routes", "advertised"][..]),
        ("bgp_routes_received", &["bgp", "routes", "received"][..]),
        ("route", &["route"][..]),
        ("services", &["services"][..]),
        ("backends", &["backends"][..]),
        ("health", &["health", "echo"][..]),
        ("node", &["node"][..]),
        ("neigh", &["neigh"][..]),
        ("bfd", &["bfd"][..]),
    ] {
        golden(&format!("{name}.txt"), &cli(args));
        let json = cli(&[&["-j"][..], args].concat());
        let v: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}: {json}"));
        golden(
            &format!("{name}.json"),
            &serde_json::to_string_pretty(&mask_json(v)).unwrap(),
        );
    }
    let health = cli(&["health", "echo"]);
    assert!(
        health.contains("198.51.100.101:8080") && health.contains("-> up"),
        "{health}"
    );
    let curl = std::process::Command::new("curl")
        .args([
            "-s",
            "--unix-socket",
            sock.to_str().unwrap(),
            "http://anylb/v1/status",
        ])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&curl.stdout).unwrap();
    assert_eq!(st["node"], "lb1");
    let metrics = lb.sh("curl -s http://127.0.0.1:9810/metrics").unwrap();
    assert!(
        metrics.contains("anylb_bgp_session_established{neighbor=\"192.0.2.1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("anylb_service_announced{service=\"echo\"} 1"),
        "{metrics}"
    );
    // The live page, with BGP, BFD, ports and health, passes Prometheus's own parsers.
    let mut parse = std::process::Command::new("/usr/bin/python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/parse_metrics.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut parse.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let parsed = parse.wait_with_output().unwrap();
    assert!(
        parsed.status.success(),
        "{}\n{metrics}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    for name in [
        "anylb_port_packets_total",
        "anylb_bgp_prefixes",
        "anylb_health_check_duration_seconds_count",
    ] {
        assert!(
            String::from_utf8_lossy(&parsed.stdout).contains(&format!("\"name\": \"{name}\"")),
            "no {name} in\n{metrics}"
        );
    }
    // A held-open connection shows in `anylb conns`.
    let conns: serde_json::Value = serde_json::from_str(&cli(&["-j", "conns", "--service", "echo"])).unwrap();
    let listed = conns["connections"].as_array().map_or(0, Vec::len);
    assert!(
        listed > 0 && conns["matched"].as_u64() >= Some(listed as u64),
        "{conns}"
    );
    // Filters: a state no connection is in matches none; the table says "N of M".
    let none: serde_json::Value = serde_json::from_str(&cli(&[
        "-j",
        "conns",
        "--state",
        "TIME_WAIT",
        "--client",
        "192.0.2.254",
    ]))
    .unwrap();
    assert_eq!(none["matched"], 0, "{none}");
    assert!(
        cli(&["conns", "--limit", "1"]).contains(" of "),
        "conns table ends with N of M"
    );
    // Piped into a reader that stops early, the commands end quietly like Unix tools (no broken-pipe panic).
    for cmd in ["conns --limit 1000", "-j bgp summary", "services --stats"] {
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} -s {} {cmd} | head -c 1 >/dev/null",
                env!("CARGO_BIN_EXE_anylb"),
                sock.display()
            ))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{cmd}: {err}"
        );
    }

    // Node drain withdraws the VIP at FRR after the graceful-shutdown wait; undrain announces it again.
    assert!(cli(&["node", "drain"]).contains("drained"));
    assert!(
        frr.wait(Duration::from_secs(10), |_| r
            .sh("ip route show 203.0.113.10")
            .is_ok_and(|x| x.trim().is_empty())),
        "{}",
        text()
    );
    assert!(cli(&["node", "undrain"]).contains("undrained"));
    assert!(
        frr.wait(Duration::from_secs(10), |_| r
            .sh("ip route show 203.0.113.10")
            .is_ok_and(|x| x.contains("192.0.2.11"))),
        "{}",
        text()
    );

    // The only backend dies: the health check takes it down and the node withdraws the VIP; it comes back.
    s.stop(server, Duration::from_secs(5));
    assert!(
        frr.wait(Duration::from_secs(10), |_| r
            .sh("ip route show 203.0.113.10")
            .is_ok_and(|x| x.trim().is_empty())),
        "{}",
        text()
    );
    s.spawn(&["python3", "-c", ECHO_SERVER, "198.51.100.101", "8080"], None)
        .unwrap();
    assert!(
        frr.wait(Duration::from_secs(10), |_| r
            .sh("ip route show 203.0.113.10")
            .is_ok_and(|x| x.contains("192.0.2.11"))),
        "{}",
        text()
    );
    let out = c
        .exec(&[
            "timeout",
            "60",
            "python3",
            "-c",
            CLIENT,
            "203.0.113.10",
            "80",
            "3",
        ])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok 3"),
        "{:?}\n{}",
        out,
        text()
    );

    // Graceful shutdown: first the community, then the withdrawal.
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let gshut = frr.wait(Duration::from_secs(5), |f| {
        f.json("show bgp ipv4 unicast 203.0.113.10/32 json")
            .is_ok_and(|v| {
                let t = v.to_string();
                t.contains("graceful-shutdown") || t.contains("gshut") || t.contains("65535:0")
            })
    });
    assert!(
        gshut,
        "{}\n{}",
        frr.vtysh("show bgp ipv4 unicast 203.0.113.10/32")
            .unwrap_or_default(),
        text()
    );
    assert!(
        frr.wait(Duration::from_secs(15), |_| r
            .sh("ip route show 203.0.113.10")
            .is_ok_and(|x| x.trim().is_empty())),
        "{}",
        text()
    );
    assert!(
        lb.stop(pid, Duration::from_secs(10)) || text().contains("final counters"),
        "{}",
        text()
    );
}

/// Masks what changes from run to run in a table: integers (also with an s or ms unit) and times become `N` and
/// `T`, MACs `M`, ephemeral and BGP ports of `address:port` `P`, temporary paths; runs of spaces collapse
/// (column widths follow the values).
fn mask_text(t: &str) -> String {
    t.lines()
        // Whether the first connection attempt collided with FRR's depends on timing.
        .map(|l| {
            if l.trim_start().starts_with("Last reset") {
                "  Last reset R"
            } else {
                l
            }
        })
        .map(|l| {
            l.split_whitespace()
                .map(|tok| {
                    let bare = tok.trim_end_matches([',', ')', ';']).trim_start_matches('(');
                    // Units and rates: 12ms, 3s, 1.2K, 4M, 5/s.
                    let digits = bare.trim_end_matches(['s', 'm', 'K', 'M', 'G', '/']);
                    // Integers and decimals (not addresses: one dot at most).
                    let number = digits.starts_with(|c: char| c.is_ascii_digit())
                        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
                        && digits.matches('.').count() <= 1;
                    if number {
                        tok.replacen(digits, "N", 1)
                    } else if anylb_conf::json::parse_rfc3339(bare).is_some() {
                        "T".to_owned()
                    } else if bare.starts_with("/tmp/") {
                        "<temporary path>".to_owned()
                    } else if bare.len() == 8
                        && bare.chars().filter(|&c| c == ':').count() == 2
                        && bare.replace(':', "").chars().all(|c| c.is_ascii_digit())
                    {
                        "T".to_owned()
                    } else if bare.len() == 17 && bare.chars().filter(|&c| c == ':').count() == 5 {
                        "M".to_owned()
                    } else {
                        mask_port(tok)
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn mask_port(tok: &str) -> String {
    let bare = tok.trim_end_matches([',', ')', ';']);
    match bare.rsplit_once(':') {
        // Ephemeral ports, and BGP's: which side connected decides which end has 179.
        Some((a, p)) if a.contains('.') && p.parse::<u16>().is_ok_and(|p| p > 1023 || p == 179) => {
            tok.replacen(bare, &format!("{a}:P"), 1)
        }
        _ => tok.to_owned(),
    }
}

/// Masks a JSON answer: every number becomes 0; strings are masked like table tokens.
fn mask_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(_) => Value::from(0),
        Value::String(s) => Value::String(mask_text(&s).trim_end().to_owned()),
        Value::Array(a) => Value::Array(a.into_iter().map(mask_json).collect()),
        // Whether the first connection attempt collided with FRR's depends on timing.
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| {
                    let v = if k == "last_reset" {
                        Value::from("R")
                    } else {
                        mask_json(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

/// Compares `text` (masked) with `tests/golden/cli/NAME`, or writes it with `ANYLB_BLESS=1`.
fn golden(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/cli")
        .join(name);
    let masked = if name.ends_with(".json") {
        text.to_owned() + "\n"
    } else {
        mask_text(text)
    };
    if std::env::var_os("ANYLB_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &masked).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        masked,
        want,
        "{name} differs from {} (unmasked:\n{text})",
        path.display()
    );
}
