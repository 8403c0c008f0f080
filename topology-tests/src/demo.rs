//! The README's demo on a lab brought up from `demo.clab.yml`: sessions, services, traffic spread over nodes and
//! backends, a backend failure, a node failure — each with what the operator sees.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::clab::Lab;

/// The client's HTTP load: `n` requests with fresh connections to `vip` (port 80, or the third argument);
/// prints one JSON line of counts by backend.
pub const CLIENT: &str = r#"
import json, socket, sys, time
vip, n = sys.argv[1], int(sys.argv[2])
port = int(sys.argv[3]) if len(sys.argv) > 3 else 80
counts, failed, errors = {}, 0, {}
for i in range(n):
    try:
        c = socket.create_connection((vip, port), timeout=5)
        c.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        data = b""
        while True:
            d = c.recv(4096)
            if not d: break
            data += d
        c.close()
        name = data.split(b"\r\n\r\n", 1)[1].strip().decode()
        counts[name] = counts.get(name, 0) + 1
    except Exception as e:
        failed += 1
        key = "%s (errno %s) at request %d" % (type(e).__name__, getattr(e, "errno", None), i) if len(errors) < 5 else type(e).__name__
        errors[key] = errors.get(key, 0) + 1
print(json.dumps({"ok": sum(counts.values()), "failed": failed, "by_backend": counts, "errors": errors}))
"#;

fn say(s: &str) {
    println!("\n=== {s}");
}

/// Runs the anylb CLI against `node`'s socket; stdout and stderr.
pub fn anylb_cli(anylb: &Path, node: &str, args: &[&str]) -> String {
    let sock = format!("/run/anylb/{node}.sock");
    let mut v = vec!["-s", sock.as_str()];
    v.extend_from_slice(args);
    match std::process::Command::new(anylb).args(&v).output() {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("(anylb {args:?}: {e})"),
    }
}

/// The client's UDP load: `n` datagrams to `vip:port`, one answer awaited each; prints one JSON line of counts
/// by the backend that answered.
pub const UDP_CLIENT: &str = r#"
import json, socket, sys
vip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
counts, failed = {}, 0
for i in range(n):
    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2)
    try:
        s.sendto(b"query %d" % i, (vip, port))
        name = s.recv(4096).decode()
        counts[name] = counts.get(name, 0) + 1
    except OSError:
        failed += 1
    s.close()
print(json.dumps({"ok": sum(counts.values()), "failed": failed, "by_backend": counts}))
"#;

/// A UDP client of large datagrams: `n` exchanges of `size` bytes ("echo " and a pattern) with `vip:port`, each
/// answered with the backend's name and the same bytes; the kernels fragment and reassemble them. Prints
/// {"ok", "failed", "by_backend"}.
pub const BIG_UDP_CLIENT: &str = r#"
import json, socket, sys
vip, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
counts, failed = {}, 0
for i in range(n):
    data = bytes((i + j) % 251 for j in range(size))
    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2)
    try:
        s.sendto(b"echo " + data, (vip, port))
        answer = s.recv(65535)
        name, _, back = answer.partition(b" ")
        if back == data:
            counts[name.decode()] = counts.get(name.decode(), 0) + 1
        else:
            failed += 1
    except OSError:
        failed += 1
    s.close()
print(json.dumps({"ok": sum(counts.values()), "failed": failed, "by_backend": counts}))
"#;

/// `n` exchanges of `size`-byte UDP datagrams with `vip:port` from the client (fragmented both ways).
pub fn big_udp_traffic(
    lab: &Lab,
    vip: &str,
    port: u16,
    n: u32,
    size: usize,
) -> io::Result<serde_json::Value> {
    client_json(
        lab,
        &[
            "python3",
            "-c",
            BIG_UDP_CLIENT,
            vip,
            &port.to_string(),
            &n.to_string(),
            &size.to_string(),
        ],
    )
}

/// r1's kernel route to the VIP.
pub fn route(lab: &Lab) -> String {
    route_to(lab, "203.0.113.10")
}

/// r1's kernel route to `vip` (IPv4 or IPv6).
pub fn route_to(lab: &Lab, vip: &str) -> String {
    let cmd = if vip.contains(':') {
        "ip -6 route show"
    } else {
        "ip route show"
    };
    lab.ns("r1")
        .and_then(|r| r.sh(&format!("{cmd} {vip}")))
        .unwrap_or_default()
}

/// Polls `f` until it holds; how long it took.
pub fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> io::Result<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return Ok(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(io::Error::other(format!("timed out waiting for {what}")))
}

/// `n` HTTP requests from the client: {ok, failed, by_backend}.
pub fn traffic(lab: &Lab, n: u32) -> io::Result<serde_json::Value> {
    traffic_to(lab, "203.0.113.10", n)
}

/// `n` HTTP requests from the client to `vip` port 80; counts by backend, failures.
pub fn traffic_to(lab: &Lab, vip: &str, n: u32) -> io::Result<serde_json::Value> {
    traffic_to_port(lab, vip, 80, n)
}

/// `n` HTTP requests from the client to `vip:port`; counts by backend, failures.
pub fn traffic_to_port(lab: &Lab, vip: &str, port: u16, n: u32) -> io::Result<serde_json::Value> {
    client_json(
        lab,
        &["python3", "-c", CLIENT, vip, &n.to_string(), &port.to_string()],
    )
}

/// A flood of spoofed TCP SYNs from the client's namespace: `n` SYNs to `vip:port` from random sources in
/// 192.0.2.140-190 (on the client's link, owned by nobody) and random ports, at most `pps` a second and for at
/// most `secs` seconds; prints the number sent.
pub const SYN_FLOOD: &str = r#"
import random, socket, struct, sys, time
vip, port, n, pps, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
dst = socket.inet_aton(vip)
rnd = random.Random(7)
start, sent = time.time(), 0
while sent < n and time.time() - start < secs:
    src = socket.inet_aton("192.0.2.%d" % rnd.randint(140, 190))
    sport = rnd.randint(1024, 65535)
    tcp = struct.pack("!HHIIBBHHH", sport, port, rnd.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, 20) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, rnd.getrandbits(16), 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    s.sendto(ip + tcp, (vip, 0))
    sent += 1
    ahead = sent / pps - (time.time() - start)
    if ahead > 0: time.sleep(ahead)
print(sent)
"#;

/// A SYN flood for [`flood_with_requests`]: `syns` spoofed SYNs to `vip:port`, at most `pps` a second, for at
/// most `secs` seconds.
#[derive(Debug, Clone, Copy)]
pub struct Flood<'a> {
    /// VIP.
    pub vip: &'a str,
    /// Service port.
    pub port: u16,
    /// SYNs at most.
    pub syns: u32,
    /// SYNs a second at most.
    pub pps: u32,
    /// Seconds at most.
    pub secs: u32,
}

/// Runs `flood` ([`SYN_FLOOD`]) from the client while `requests` real requests go to the same service,
/// starting `after` into the flood; returns what the flood printed (the SYNs it sent) and the requests'
/// result (as [`traffic_to_port`]).
pub fn flood_with_requests(
    lab: &Lab,
    flood: Flood<'_>,
    requests: u32,
    after: Duration,
) -> io::Result<(io::Result<String>, io::Result<serde_json::Value>)> {
    let client = lab.ns("client")?;
    Ok(std::thread::scope(|s| {
        let f = s.spawn(|| {
            let (port, syns, pps, secs) = (
                flood.port.to_string(),
                flood.syns.to_string(),
                flood.pps.to_string(),
                flood.secs.to_string(),
            );
            client.exec(&[
                "timeout", "30", "python3", "-c", SYN_FLOOD, flood.vip, &port, &syns, &pps, &secs,
            ])
        });
        std::thread::sleep(after);
        let r = traffic_to_port(lab, flood.vip, flood.port, requests);
        let sent = f
            .join()
            .map_err(|_| io::Error::other("the flood's thread panicked"))
            .and_then(|out| out)
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        (sent, r)
    }))
}

/// `n` UDP queries from the client to `vip:port`; counts by backend, failures.
pub fn udp_traffic(lab: &Lab, vip: &str, port: u16, n: u32) -> io::Result<serde_json::Value> {
    client_json(
        lab,
        &[
            "python3",
            "-c",
            UDP_CLIENT,
            vip,
            &port.to_string(),
            &n.to_string(),
        ],
    )
}

fn client_json(lab: &Lab, cmd: &[&str]) -> io::Result<serde_json::Value> {
    let mut full = vec!["timeout", "120"];
    full.extend_from_slice(cmd);
    let out = lab.ns("client")?.exec(&full)?;
    serde_json::from_slice(&out.stdout).map_err(|e| io::Error::other(format!("client output: {e}")))
}

/// Connections `node` created so far.
pub fn conns(anylb: &Path, node: &str) -> u64 {
    let j = anylb_cli(anylb, node, &["-j", "stats"]);
    serde_json::from_str::<serde_json::Value>(&j)
        .ok()
        .and_then(|v| v["total"]["new_connections"].as_u64())
        .unwrap_or(0)
}

/// Waits until both nodes can serve: each has the client's prefix from r1 in its dataplane routes (replies
/// need it; r1 may install the VIP before the nodes hear its own announcement) and all three backends are
/// healthy (rise × interval).
pub fn ready(lab: &Lab, anylb: &Path) -> io::Result<Duration> {
    wait(
        "the client prefixes at both nodes",
        Duration::from_secs(30),
        || {
            ["lb1", "lb2"].iter().all(|n| {
                // Learned over BGP ("B"), not only the fallback static routes ("F").
                let r = anylb_cli(anylb, n, &["route"]);
                let bgp = |p: &str| r.lines().any(|l| l.starts_with("B ") && l.contains(p));
                bgp("192.0.2.128/26") && bgp("2001:db8:c::/64")
            })
        },
    )?;
    wait(
        "the IPv6 VIPs at r1 with two next hops",
        Duration::from_secs(30),
        || {
            ["2001:db8:f::10", "2001:db8:f::64"].iter().all(|v| {
                let r = route_to(lab, v);
                r.contains("2001:db8:1::11") && r.contains("2001:db8:2::27")
            })
        },
    )?;
    // Every service has its three backends up, on both nodes.
    wait("three healthy backends", Duration::from_secs(20), || {
        ["lb1", "lb2"]
            .iter()
            .all(|n| every_service_at(&anylb_cli(anylb, n, &["-j", "services"]), 3))
    })
}

/// Whether `anylb -j services` printed (`json`) lists at least one service and every one of them with
/// `healthy` backends up. An error or an empty list is not.
fn every_service_at(json: &str, healthy: u64) -> bool {
    let v = serde_json::from_str::<serde_json::Value>(json).unwrap_or_default();
    v.as_array()
        .is_some_and(|list| !list.is_empty() && list.iter().all(|s| s["healthy"].as_u64() == Some(healthy)))
}

/// Runs the demo on an up lab. Returns an error (and the caller tears down) when a step fails.
pub fn run(lab: &mut Lab, anylb: &Path) -> io::Result<()> {
    say("waiting for BGP: r1 must learn 203.0.113.10/32 from both anylb nodes (ECMP)");
    let t = wait("two next hops at r1", Duration::from_secs(60), || {
        let r = route(lab);
        r.contains("192.0.2.11") && r.contains("192.0.2.27")
    })?;
    println!(
        "after {:.1}s, r1's kernel has:\n{}",
        t.as_secs_f64(),
        route(lab).trim_end()
    );

    // Both sessions of each node are up once the client's IPv4 and IPv6 prefixes came over BGP.
    ready(lab, anylb)?;
    say("anylb bgp summary (lb1)");
    print!("{}", anylb_cli(anylb, "lb1", &["bgp", "summary"]));
    say("anylb services (lb1)");
    print!("{}", anylb_cli(anylb, "lb1", &["services"]));

    say("1000 HTTP requests from the client to http://203.0.113.10/");
    let (c1, c2) = (conns(anylb, "lb1"), conns(anylb, "lb2"));
    let v = traffic(lab, 1000)?;
    let (d1, d2) = (conns(anylb, "lb1") - c1, conns(anylb, "lb2") - c2);
    println!(
        "ok {} failed {}; by backend {}",
        v["ok"], v["failed"], v["by_backend"]
    );
    println!("by node: lb1 {d1} connections, lb2 {d2} connections");
    say("anylb services --stats (lb1): connections, packets and bytes per service and backend, as ipvsadm");
    // The header, service web and its three backends.
    for line in anylb_cli(anylb, "lb1", &["services", "--stats"]).lines().take(5) {
        println!("{line}");
    }

    say("IPv6: Full-NAT to http://[2001:db8:f::10]/ and udp/53, NAT64 to http://[2001:db8:f::64]/ (IPv4 backends)");
    for (what, v) in [
        ("IPv6 TCP, 200 requests", traffic_to(lab, "2001:db8:f::10", 200)?),
        (
            "IPv6 UDP, 100 queries",
            udp_traffic(lab, "2001:db8:f::10", 53, 100)?,
        ),
        ("NAT64, 200 requests", traffic_to(lab, "2001:db8:f::64", 200)?),
    ] {
        println!(
            "{what}: ok {} failed {}; by backend {}",
            v["ok"], v["failed"], v["by_backend"]
        );
    }

    say("SYN flood: 10,000 spoofed SYNs at the SYN-proxy service web-sp (203.0.113.10:8080) while 200 requests run");
    let flood = Flood {
        vip: "203.0.113.10",
        port: 8080,
        syns: 10_000,
        pps: 4_000,
        secs: 5,
    };
    let (sent, real) = flood_with_requests(lab, flood, 200, Duration::ZERO)?;
    let sent = sent.unwrap_or_default();
    let real = real?;
    println!(
        "{sent} spoofed SYNs sent; requests ok {} failed {}",
        real["ok"], real["failed"]
    );
    for n in ["lb1", "lb2"] {
        let stats = anylb_cli(anylb, n, &["stats"]);
        let line = stats.lines().find(|l| l.starts_with("syn-proxy"));
        println!("({n}) {}", line.unwrap_or("syn-proxy: -"));
    }

    say("backend be2 fails");
    lab.stop("be2");
    let t = wait("be2 down on both nodes", Duration::from_secs(20), || {
        ["lb1", "lb2"]
            .iter()
            .all(|n| every_service_at(&anylb_cli(anylb, n, &["-j", "services"]), 2))
    })?;
    println!(
        "both nodes took be2 out after {:.1}s (fall 2 × interval 500ms + check time)",
        t.as_secs_f64()
    );
    print!("{}", anylb_cli(anylb, "lb1", &["health", "web"]));
    let v = traffic(lab, 300)?;
    println!(
        "300 requests: ok {} failed {}; by backend {}",
        v["ok"], v["failed"], v["by_backend"]
    );

    say("100 keep-alive connections (a request on each every 200 ms), then node lb1 is killed");
    let ka = crate::keepalive::Keepalive::start(lab, "203.0.113.10", 100, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(4));
    println!("connection sync as lb2 sees it before the kill:");
    print!("{}", anylb_cli(anylb, "lb2", &["cluster"]));
    let pid = *lab
        .pids
        .get("lb1")
        .ok_or_else(|| io::Error::other("lb1 not started"))?;
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let t = wait("r1 to drop lb1", Duration::from_secs(20), || {
        let r = route(lab);
        !r.contains("192.0.2.11") && r.contains("192.0.2.27")
    })?;
    println!(
        "r1 removed lb1's next hop after {:.2}s:\n{}",
        t.as_secs_f64(),
        route(lab).trim_end()
    );
    let v = ka.finish()?;
    println!(
        "keep-alive connections alive at the end: {} of {} (lb2 serves lb1's from the synced records); longest stall {} s",
        v["alive"], v["connections"], v["max_stall_s"]
    );
    print!("{}", anylb_cli(anylb, "lb2", &["cluster"]));
    let v = traffic(lab, 300)?;
    println!(
        "300 new requests: ok {} failed {}; by backend {}",
        v["ok"], v["failed"], v["by_backend"]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::every_service_at;

    const LIST: &str = r#"[
        {"name": "web", "healthy": 2, "backends": 3},
        {"name": "web-sp", "healthy": 2, "backends": 3},
        {"name": "dns64", "healthy": 2, "backends": 3}
    ]"#;

    #[test]
    fn every_service_must_show_the_count() {
        assert!(every_service_at(LIST, 2));
        assert!(!every_service_at(LIST, 3));
        // One service still at 3 (its checks not yet at their fall count) is not enough.
        let lagging = LIST.replacen("\"healthy\": 2", "\"healthy\": 3", 1);
        assert!(!every_service_at(&lagging, 2));
        // No service, or the CLI's error instead of a list.
        assert!(!every_service_at("[]", 2));
        assert!(!every_service_at(
            "error: connect /run/anylb/lb1.sock: No such file",
            2
        ));
        assert!(!every_service_at("", 2));
    }
}
