//! The DR, tunnel and NAT forwarding modes with real TCP through the DPDK dataplane in network namespaces, and
//! the source-NAT gateway with TCP, UDP and ping, and PROXY v2 / TOA telling a real server the client address.
//!
//! A client namespace reaches the node over `up0`; the server namespace sits behind `in0` and has a direct
//! return link to the client (`ret`), as DR and tunnel backends answer clients without the balancer. The server
//! holds the DR and tunnel VIPs on its loopback; this kernel has no ipip module, so a small user-space tunnel
//! endpoint (a raw socket for IP protocol 4 feeding a TUN device) decapsulates. NAT replies go back through the
//! node, the server's gateway for the NAT client's address. The echo server answers with the addresses it saw,
//! which shows each mode kept what it must: DR and tunnel keep the VIP as destination, NAT rewrites it, and
//! none rewrites the client's address. Then SIGHUP reloads the topology with a Full-NAT service added. Needs root
//! (CI is root).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use topology_tests::netns::{unique_prefix, veth, Netns};

/// Answers each connection's data with "<peer address> <local address> <data>".
const SERVER: &str = r#"
import socket, sys, threading, time
port, life = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(64); s.settimeout(0.5)
end = time.time() + life
def serve(c):
    c.settimeout(5)
    try:
        d = c.recv(4096)
        c.sendall(("%s %s " % (c.getpeername()[0], c.getsockname()[0])).encode() + d)
    except OSError: pass
    c.close()
while time.time() < end:
    try: c, _ = s.accept()
    except socket.timeout: continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A user-space tunnel endpoint: IP-in-IP (a raw socket for protocol 4, outer header off) or GUE variant 1 (a
/// UDP socket on the GUE port, the payload is the inner packet); inner packets go into a TUN device the kernel
/// reads.
const DECAP: &str = r#"
import fcntl, os, select, socket, struct, subprocess, sys, time
life, mode, name = float(sys.argv[1]), sys.argv[2], sys.argv[3]
tun = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(tun, 0x400454ca, struct.pack("16sH", name.encode(), 0x0001 | 0x1000))
subprocess.run(["ip", "link", "set", name, "up"], check=True)
if mode == "gue":
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sock.bind(("0.0.0.0", 6080))
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
print("ready", flush=True)
end = time.time() + life
while time.time() < end:
    r, _, _ = select.select([sock], [], [], 0.5)
    if not r: continue
    d = sock.recv(65535)
    os.write(tun, d if mode == "gue" else d[(d[0] & 15) * 4:])
"#;

/// `n` connections from `src` to `addr:port`, each sending "hello"; prints every answer, one per line.
const CLIENT: &str = r#"
import socket, sys, time
src, addr, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def once():
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(3)
    c.bind((src, 0)); c.connect((addr, port)); c.sendall(b"hello")
    got = b""
    while True:
        d = c.recv(4096)
        if not d: break
        got += d
    c.close()
    return got.decode()
deadline = time.time() + 20
while True:
    try: once(); break
    except OSError:
        if time.time() > deadline: print("never reachable"); sys.exit(2)
        time.sleep(0.2)
for i in range(n):
    print(once())
"#;

const TOPOLOGY: &str = r#"
[cluster]
name = "modes"
[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
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

[[services]]
name = "dr"
vip = "203.0.113.20"
port = 8080
protocol = "tcp"
forwarding = "dr"
backends = [{ address = "198.51.100.101" }]

[[services]]
name = "tunnel"
vip = "203.0.113.21"
port = 8080
protocol = "tcp"
forwarding = "tunnel"
backends = [{ address = "198.51.100.101" }]

[[services]]
name = "gue"
vip = "203.0.113.24"
port = 8080
protocol = "tcp"
forwarding = "tunnel"
encapsulation = "gue"
backends = [{ address = "198.51.100.101" }]

[[services]]
name = "nat"
vip = "203.0.113.22"
port = 80
protocol = "tcp"
forwarding = "nat"
backends = [{ address = "198.51.100.101", port = 8080 }]
"#;

/// Writes `topology` to `dir/file` and starts `anylb run` for `node` in `ns`; returns the file, the log and the
/// pid.
fn start_node(
    ns: &mut Netns,
    dir: &std::path::Path,
    file: &str,
    topology: &str,
    node: &str,
) -> (std::path::PathBuf, std::path::PathBuf, u32) {
    let cfg = dir.join(file);
    std::fs::write(&cfg, topology).unwrap();
    let log = dir.join("anylb.log");
    let args = [
        env!("CARGO_BIN_EXE_anylb"),
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--node",
        node,
        "--stats-interval",
        "0",
    ];
    let pid = ns.spawn(&args, Some(&log)).unwrap();
    (cfg, log, pid)
}

/// Three namespaces in a row, `a` — node — `b`: the node's `a_if` faces `a`'s eth0, its `b_if` faces `b`'s eth0.
/// The node's kernel holds its addresses (192.0.2.11/28 on up0, 198.51.100.1/24 on in0): it sees the
/// af_packet interfaces itself.
fn namespaces(tag: &str, a_if: &str, b_if: &str) -> (Netns, Netns, Netns) {
    let p = unique_prefix(tag);
    let a = Netns::new(&format!("{p}a")).unwrap();
    let lb = Netns::new(&format!("{p}lb")).unwrap();
    let b = Netns::new(&format!("{p}b")).unwrap();
    veth(&a, "eth0", &lb, a_if).unwrap();
    veth(&lb, b_if, &b, "eth0").unwrap();
    lb.sh("ip addr add 192.0.2.11/28 dev up0 && ip addr add 198.51.100.1/24 dev in0")
        .unwrap();
    (a, lb, b)
}

/// DPDK workers busy-poll: the tests of this file take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn dr_tunnel_and_nat_deliver_real_tcp_connections() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (c, mut lb, mut s) = namespaces("md", "up0", "in0");
    veth(&c, "ret", &s, "ret").unwrap();
    for cmd in [
        "ip addr add 192.0.2.2/28 dev eth0",
        "ip addr add 192.0.2.3/28 dev eth0",
        "ip addr add 192.0.2.129/30 dev ret",
        "ip route add 203.0.113.0/24 via 192.0.2.11 src 192.0.2.2",
        "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.ret.rp_filter=0",
    ] {
        c.sh(cmd).unwrap();
    }
    for cmd in [
        "ip addr add 198.51.100.101/24 dev eth0",
        "ip addr add 192.0.2.130/30 dev ret",
        "ip addr add 203.0.113.20/32 dev lo",
        "ip addr add 203.0.113.21/32 dev lo",
        "ip addr add 203.0.113.24/32 dev lo",
        // NAT: the node is the gateway for the NAT client; DR and tunnel answer over the direct link.
        "ip route add 192.0.2.3/32 via 198.51.100.1",
        "ip route add 192.0.2.0/28 via 192.0.2.129 dev ret",
        "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
        "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2",
    ] {
        s.sh(cmd).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let decap_log = dir.path().join("decap.log");
    s.spawn(&["python3", "-c", SERVER, "8080", "90"], None).unwrap();
    s.spawn(&["python3", "-c", DECAP, "90", "ipip", "dec0"], Some(&decap_log))
        .unwrap();
    s.spawn(&["python3", "-c", DECAP, "90", "gue", "dec1"], None)
        .unwrap();
    let (cfg, log, pid) = start_node(&mut lb, dir.path(), "modes.toml", TOPOLOGY, "lb1");
    let node_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let run = |src: &str, vip: &str, port: &str| -> Vec<String> {
        let out = c
            .exec(&["timeout", "60", "python3", "-c", CLIENT, src, vip, port, "10"])
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "client {src} → {vip}:{port}: {text}{}\ndecap: {}\nnode log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&decap_log).unwrap_or_default(),
            node_log()
        );
        text.lines().map(str::to_owned).collect()
    };

    // DR: the server's socket is the VIP itself, the peer the real client.
    let dr = run("192.0.2.2", "203.0.113.20", "8080");
    assert_eq!(dr.len(), 10);
    assert!(dr.iter().all(|l| l == "192.0.2.2 203.0.113.20 hello"), "{dr:?}");
    // Tunnel: the same after decapsulation.
    let tun = run("192.0.2.2", "203.0.113.21", "8080");
    assert_eq!(tun.len(), 10);
    assert!(tun.iter().all(|l| l == "192.0.2.2 203.0.113.21 hello"), "{tun:?}");
    // GUE: the same through a UDP tunnel.
    let gue = run("192.0.2.2", "203.0.113.24", "8080");
    assert_eq!(gue.len(), 10);
    assert!(gue.iter().all(|l| l == "192.0.2.2 203.0.113.24 hello"), "{gue:?}");
    // NAT: destination rewritten to the backend, the client address kept, replies back through the node.
    let nat = run("192.0.2.3", "203.0.113.22", "80");
    assert_eq!(nat.len(), 10);
    assert!(
        nat.iter().all(|l| l == "192.0.2.3 198.51.100.101 hello"),
        "{nat:?}"
    );

    // SIGHUP reloads the topology: a Full-NAT service added to the file starts serving, and the server now sees
    // one of the node's local addresses instead of the client.
    let added = format!(
        "{TOPOLOGY}\n[[services]]\nname = \"fnat\"\nvip = \"203.0.113.23\"\nport = 80\nprotocol = \"tcp\"\n\
         backends = [{{ address = \"198.51.100.101\", port = 8080 }}]\n"
    );
    std::fs::write(&cfg, added).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let fnat = run("192.0.2.2", "203.0.113.23", "80");
    assert_eq!(fnat.len(), 10);
    assert!(
        fnat.iter()
            .all(|l| l == "198.51.100.16 198.51.100.101 hello" || l == "198.51.100.17 198.51.100.101 hello"),
        "{fnat:?}"
    );
    assert!(node_log().contains("reloaded on SIGHUP"), "{}", node_log());
    // The NAT service still works after the reload.
    assert_eq!(run("192.0.2.3", "203.0.113.22", "80").len(), 10);

    assert!(lb.stop(pid, Duration::from_secs(20)), "{}", node_log());
}

/// TCP and UDP echo servers on `addr` (ports 7000 and 7001) answering "<peer address> <data>".
const WAN_SERVER: &str = r#"
import socket, sys, threading, time
addr, life = sys.argv[1], float(sys.argv[2])
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((addr, 7000)); t.listen(16); t.settimeout(0.5)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((addr, 7001)); u.settimeout(0.5)
end = time.time() + life
def udp():
    while time.time() < end:
        try: d, peer = u.recvfrom(4096)
        except socket.timeout: continue
        u.sendto(("%s " % peer[0]).encode() + d, peer)
threading.Thread(target=udp, daemon=True).start()
while time.time() < end:
    try: c, peer = t.accept()
    except socket.timeout: continue
    c.settimeout(5)
    try: c.sendall(("%s " % peer[0]).encode() + c.recv(4096))
    except OSError: pass
    c.close()
"#;

/// From the LAN: one TCP and one UDP exchange with the WAN server; prints both answers.
const LAN_CLIENT: &str = r#"
import socket, sys, time
addr = sys.argv[1]
deadline = time.time() + 20
while True:
    try:
        c = socket.create_connection((addr, 7000), timeout=2); break
    except OSError:
        if time.time() > deadline: print("never reachable"); sys.exit(2)
        time.sleep(0.2)
c.sendall(b"tcp"); print(c.recv(4096).decode()); c.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
for _ in range(5):
    u.sendto(b"udp", (addr, 7001))
    try: print(u.recv(4096).decode()); break
    except socket.timeout: continue
"#;

#[test]
fn snat_gateway_lets_a_lan_client_reach_a_wan_server_by_tcp_udp_and_ping() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (lan, mut lb, mut wan) = namespaces("sn", "in0", "up0");
    lan.sh("ip addr add 198.51.100.50/24 dev eth0 && ip route add default via 198.51.100.1")
        .unwrap();
    // The WAN server has no route back to the LAN: only translated traffic can be answered.
    wan.sh("ip addr add 192.0.2.2/28 dev eth0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    wan.spawn(&["python3", "-c", WAN_SERVER, "192.0.2.2", "90"], None)
        .unwrap();
    let topology = r#"
[cluster]
name = "gw"
[[nodes]]
name = "gw1"
router_id = "192.0.2.11"
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

[[snat]]
name = "lan"
sources = ["198.51.100.0/24"]
out_port = "up0"
pool = ["192.0.2.12/32"]
ports = "20000-29999"
"#;
    let (_, log, pid) = start_node(&mut lb, dir.path(), "gw.toml", topology, "gw1");
    let node_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let out = lan
        .exec(&["timeout", "60", "python3", "-c", LAN_CLIENT, "192.0.2.2"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["192.0.2.12 tcp", "192.0.2.12 udp"],
        "the server sees the gateway's WAN address\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node_log()
    );
    let ping = lan
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.0.2.2"])
        .unwrap();
    assert!(
        ping.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ping.stdout),
        node_log()
    );
    assert!(
        String::from_utf8_lossy(&ping.stdout).contains("3 received"),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert!(lb.stop(pid, Duration::from_secs(20)), "{}", node_log());
}

/// A PROXY v2 server: parses the header strictly (signature, version and command, family, length), then
/// answers "<client address>:<client port> <data>"; a connection without a valid header gets "no header".
const PROXY_SERVER: &str = r#"
import socket, struct, sys, threading, time, ipaddress
port, life = int(sys.argv[1]), float(sys.argv[2])
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
def read(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d: raise EOFError
        b += d
    return b
def serve(c):
    c.settimeout(5)
    try:
        h = read(c, 16)
        if h[:12] != SIG or h[12] != 0x21:
            c.sendall(b"no header"); return
        fam, ln = h[13], struct.unpack("!H", h[14:16])[0]
        body = read(c, ln)
        if fam == 0x11:
            src = str(ipaddress.IPv4Address(body[0:4])); sport = struct.unpack("!H", body[8:10])[0]
        elif fam == 0x21:
            src = str(ipaddress.IPv6Address(body[0:16])); sport = struct.unpack("!H", body[32:34])[0]
        else:
            c.sendall(b"bad family"); return
        data = c.recv(4096)
        c.sendall(("%s:%d " % (src, sport)).encode() + data)
    except (OSError, EOFError): pass
    finally: c.close()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(64); s.settimeout(0.5)
end = time.time() + life
while time.time() < end:
    try: c, _ = s.accept()
    except socket.timeout: continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `n` connections to `addr:port`, each from a known local port, sending "hello"; prints "<local port> <answer>".
const PROXY_CLIENT: &str = r#"
import socket, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.time() + 20
while True:
    try:
        c = socket.create_connection((addr, port), timeout=2); c.sendall(b"x"); c.recv(100); c.close(); break
    except OSError:
        if time.time() > deadline: print("never reachable"); sys.exit(2)
        time.sleep(0.2)
for i in range(n):
    c = socket.create_connection((addr, port), timeout=3)
    c.sendall(b"hello")
    got = b""
    while True:
        d = c.recv(4096)
        if not d: break
        got += d
    print(c.getsockname()[1], got.decode())
    c.close()
"#;

/// Watches `iface` for TCP segments to `port` and prints the TOA option of each (kind 254, 8 bytes: port,
/// IPv4 address) as "toa <address>:<port>".
const TOA_SNIFFER: &str = r#"
import socket, sys, time
iface, port, life = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((iface, 0)); s.settimeout(0.5)
print("sniffing", flush=True)
end = time.time() + life
while time.time() < end:
    try: f = s.recv(65535)
    except socket.timeout: continue
    ip = f[14:]
    if len(ip) < 40 or ip[9] != 6: continue
    t = ip[(ip[0] & 15) * 4:]
    if int.from_bytes(t[2:4], "big") != port: continue
    opts, i = t[20:(t[12] >> 4) * 4], 0
    while i < len(opts):
        k = opts[i]
        if k == 0: break
        if k == 1: i += 1; continue
        if i + 1 >= len(opts) or opts[i + 1] < 2: break
        l = opts[i + 1]
        if k == 254 and l == 8:
            print("toa %s:%d" % (socket.inet_ntoa(opts[i + 4:i + 8]), int.from_bytes(opts[i + 2:i + 4], "big")), flush=True)
        i += l
"#;

#[test]
fn proxy_v2_tells_a_real_server_the_client_address_and_toa_reaches_it() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (c, mut lb, mut s) = namespaces("pp", "up0", "in0");
    c.sh("ip addr add 192.0.2.2/28 dev eth0 && ip route add 203.0.113.0/24 via 192.0.2.11")
        .unwrap();
    s.sh("ip addr add 198.51.100.101/24 dev eth0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    s.spawn(&["python3", "-c", PROXY_SERVER, "8080", "90"], None)
        .unwrap();
    s.spawn(&["python3", "-c", SERVER, "8081", "90"], None).unwrap();
    let sniff_log = dir.path().join("sniff.log");
    s.spawn(
        &["python3", "-c", TOA_SNIFFER, "eth0", "8081", "60"],
        Some(&sniff_log),
    )
    .unwrap();
    let topology = TOPOLOGY.split("\n[[services]]").next().unwrap().to_owned()
        + r#"
[[services]]
name = "pp"
vip = "203.0.113.30"
port = 80
protocol = "tcp"
client_address = "proxy_v2"
backends = [{ address = "198.51.100.101", port = 8080 }]

[[services]]
name = "toa"
vip = "203.0.113.31"
port = 80
protocol = "tcp"
client_address = "toa"
backends = [{ address = "198.51.100.101", port = 8081 }]
"#;
    let (_, log, pid) = start_node(&mut lb, dir.path(), "pp.toml", &topology, "lb1");
    let node_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let sniffed = || std::fs::read_to_string(&sniff_log).unwrap_or_default();
    for _ in 0..100 {
        if sniffed().contains("sniffing") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = c
        .exec(&[
            "timeout",
            "60",
            "python3",
            "-c",
            PROXY_CLIENT,
            "203.0.113.30",
            "80",
            "10",
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}\n{}", node_log());
    for l in &lines {
        // "<client's local port> <client address>:<port the server was told> hello"
        let (port, answer) = l.split_once(' ').unwrap();
        assert_eq!(answer, format!("192.0.2.2:{port} hello"), "{text}");
    }

    // TOA: the segments the server received carry option 254 with the client's port and address.
    let toa = c
        .exec(&[
            "timeout",
            "30",
            "python3",
            "-c",
            CLIENT,
            "192.0.2.2",
            "203.0.113.31",
            "80",
            "3",
        ])
        .unwrap();
    assert!(toa.status.success(), "{toa:?}\n{}", node_log());
    let found = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        sniffed().contains("toa 192.0.2.2:")
    });
    assert!(
        found,
        "no TOA option reached the server:\n{}\n{}",
        sniffed(),
        node_log()
    );
    assert!(lb.stop(pid, Duration::from_secs(20)), "{}", node_log());
}
