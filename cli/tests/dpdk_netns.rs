//! Real TCP through the DPDK dataplane in network namespaces: a client namespace, the node on two
//! net_af_packet ports, a server namespace. With one worker, and with two (replies that land on the other
//! worker are passed over rings: the software steering path). And the TAP exception path: a TCP connection to
//! the node's own address over a DPDK-owned port reaches a kernel socket. Needs root (CI is root).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use topology_tests::netns::{unique_prefix, veth, Netns};

const ECHO_SERVER: &str = r#"
import socket, sys, threading, time
addr, port, life = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(64); s.settimeout(0.5)
end = time.time() + life
def serve(c):
    c.settimeout(5)
    try:
        while True:
            d = c.recv(4096)
            if not d: break
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
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Wait (bounded) until the path works, then make n connections.
deadline = time.time() + 20
while True:
    try:
        c = socket.create_connection((addr, port), timeout=1); c.close(); break
    except OSError:
        if time.time() > deadline: print("never reachable"); sys.exit(2)
        time.sleep(0.2)
ok = 0
for i in range(n):
    c = socket.create_connection((addr, port), timeout=3)
    msg = ("hello %d" % i).encode()
    c.sendall(msg)
    got = b""
    while len(got) < len(msg) + 5:
        d = c.recv(4096)
        if not d: break
        got += d
    c.close()
    if got == b"echo:" + msg: ok += 1
print("ok", ok)
sys.exit(0 if ok == n else 1)
"#;

/// DPDK workers busy-poll: the tests of this file take turns so that they do not starve each other's cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Lab {
    _turn: std::sync::MutexGuard<'static, ()>,
    c: Netns,
    lb: Netns,
    s: Netns,
    dir: tempfile::TempDir,
}

fn lab(tag: &str) -> Lab {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let p = unique_prefix(tag);
    let c = Netns::new(&format!("{p}c")).unwrap();
    let lb = Netns::new(&format!("{p}lb")).unwrap();
    let s = Netns::new(&format!("{p}s")).unwrap();
    veth(&c, "eth0", &lb, "up0").unwrap();
    veth(&lb, "in0", &s, "eth0").unwrap();
    c.ip(&["addr", "add", "192.0.2.2/28", "dev", "eth0"]).unwrap();
    c.ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.11"])
        .unwrap();
    s.ip(&["addr", "add", "198.51.100.101/24", "dev", "eth0"])
        .unwrap();
    Lab {
        _turn: turn,
        c,
        lb,
        s,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn topology(workers: &str, exception: &str) -> String {
    format!(
        r#"
[cluster]
name = "t"
[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
[nodes.dataplane]
workers = {workers}
main_core = 0
eal_args = ["--no-huge", "--no-shconf", "--no-pci", "-m", "256", "--log-level", "lib.eal:error"]
[[nodes.dataplane.ports]]
name = "up0"
device = "net_af_packet0,iface=up0"
addresses = ["192.0.2.11/28"]
exception = "{exception}"
[[nodes.dataplane.ports]]
name = "in0"
device = "net_af_packet1,iface=in0"
addresses = ["198.51.100.1/24"]
[[nodes.local_addresses]]
prefix = "198.51.100.16/31"
port = "in0"
[[services]]
name = "echo"
vip = "203.0.113.10"
port = 80
protocol = "tcp"
backends = [{{ address = "198.51.100.101", port = 8080 }}]
"#
    )
}

/// Starts `anylb run` in the node namespace; returns its pid and log path.
fn start_node(l: &mut Lab, topo: &str) -> (u32, std::path::PathBuf) {
    let cfg = l.dir.path().join("t.toml");
    std::fs::write(&cfg, topo).unwrap();
    let log = l.dir.path().join("anylb.log");
    let pid =
        l.lb.spawn(
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
    (pid, log)
}

fn through_vip(workers: &str, connections: u32) -> String {
    let mut l = lab(if workers.contains(',') { "w2" } else { "w1" });
    // The kernel sees the af_packet interfaces itself: it owns the node's addresses there.
    l.lb.ip(&["addr", "add", "192.0.2.11/28", "dev", "up0"]).unwrap();
    l.lb.ip(&["addr", "add", "198.51.100.1/24", "dev", "in0"])
        .unwrap();
    l.s.spawn(
        &["python3", "-c", ECHO_SERVER, "198.51.100.101", "8080", "60"],
        None,
    )
    .unwrap();
    let (pid, log) = start_node(&mut l, &topology(workers, "auto"));
    let out = l.c.exec(&[
        "timeout",
        "60",
        "python3",
        "-c",
        CLIENT,
        "203.0.113.10",
        "80",
        &connections.to_string(),
    ]);
    let stopped = l.lb.stop(pid, Duration::from_secs(20));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let out = out.unwrap_or_else(|e| panic!("client failed: {e}\nnode log:\n{text}"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("ok {connections}")),
        "{:?}\n{text}",
        out
    );
    assert!(stopped, "anylb run did not stop cleanly on SIGTERM:\n{text}");
    text
}

#[test]
fn tcp_through_the_vip_with_one_worker() {
    let log = through_vip("[1]", 20);
    assert!(log.contains("steering=SingleWorker"), "{log}");
}

#[test]
fn tcp_through_the_vip_with_two_workers_uses_software_steering() {
    let log = through_vip("[0, 1]", 40);
    assert!(log.contains("steering=Software"), "{log}");
    let redirected: u64 = log
        .lines()
        .filter(|l| l.contains("final counters"))
        .filter_map(|l| l.split("redirected=").nth(1))
        .filter_map(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .sum();
    assert!(
        redirected > 0,
        "no reply needed the other worker in 40 connections:\n{log}"
    );
}

#[test]
fn tap_exception_path_reaches_a_kernel_socket_on_the_node() {
    let mut l = lab("tp");
    // The kernel must not take frames from up0 itself: only what the dataplane hands it through the TAP.
    l.lb.sysctl("net.ipv4.conf.all.rp_filter", "1").unwrap();
    l.lb.sysctl("net.ipv4.conf.up0.rp_filter", "1").unwrap();
    l.lb.sysctl("net.ipv4.conf.up0.arp_ignore", "1").unwrap();
    l.lb.ip(&["addr", "add", "198.51.100.1/24", "dev", "in0"])
        .unwrap();
    let (pid, log) = start_node(&mut l, &topology("[1]", "tap"));
    // The node's own address lives on the TAP interface the runtime created; a kernel socket listens there.
    let ready = anylb_dataplane_wait(|| {
        l.lb.sh("ip -br addr show dev al-up0")
            .is_ok_and(|s| s.contains("192.0.2.11"))
    });
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ready, "no TAP interface with the node address:\n{}", text());
    l.lb.spawn(&["python3", "-c", ECHO_SERVER, "192.0.2.11", "2222", "60"], None)
        .unwrap();
    let out = l.c.exec(&[
        "timeout",
        "60",
        "python3",
        "-c",
        CLIENT,
        "192.0.2.11",
        "2222",
        "5",
    ]);
    let stopped = l.lb.stop(pid, Duration::from_secs(20));
    let out = out.unwrap_or_else(|e| panic!("client failed: {e}\nnode log:\n{}", text()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok 5"), "{:?}", out);
    assert!(stopped, "{}", text());
    assert!(text().contains("exception=Tap"), "{}", text());
}

fn anylb_dataplane_wait(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
