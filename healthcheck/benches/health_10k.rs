//! 10,000 backends checked every second against local listeners: the CPU the monitor uses and how evenly the
//! checks are spread in time. TCP checks probe with a SYN on a raw socket (the default); `-- connect` makes
//! them open a connection each, as before.
//!
//! The listeners run in a separate Python process and record when each connection arrives (SYN probes
//! complete none, so the spread is measured in connect mode only). By default (root) they are where remote
//! backends would be: in a network namespace of their own on the second CPU, behind a veth pair, with the
//! monitor in another namespace pinned to the first CPU; receive processing of each side is steered (RPS) to
//! its own CPU, so the listeners' handshakes no longer run on the checker's core. Besides the monitor
//! process's CPU, the whole first core is measured (`/proc/stat`: the process, its softirqs and whatever else
//! ran there). `-- loopback` puts both on 127.0.0.1 in the current namespace, as before, where loopback
//! charges both ends of every handshake to the checker.
//!
//! Run: `cargo bench -p anylb-healthcheck --bench health_10k` (add `-- N` for another backend count, `--
//! connect` for connects, `-- loopback`). Prints `BENCH health_10k_cpu <percent> %` (the process),
//! `BENCH health_10k_core_cpu` (the whole core; namespaces only), `BENCH health_10k_core_idle_cpu` (that core
//! in the 4 s before the checks start, with nothing of the benchmark running on it) and
//! `BENCH health_10k_core_cpu_over_idle` (the difference), `BENCH health_10k_checks_per_second`, and in
//! connect mode `BENCH health_10k_busiest_10ms_vs_mean` (1.0 is perfectly even; a synchronized burst shows as
//! a large ratio).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anylb_healthcheck::monitor::Monitor;

/// Listens on ports BASE..BASE+N of ADDRESS; accepts and closes; after `secs` prints the arrival counts per
/// 10 ms over the last `window` seconds as JSON.
const LISTENERS: &str = r#"
import json, selectors, socket, sys, time
base, n, secs, window = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
address = sys.argv[5]
sel = selectors.DefaultSelector()
ok = 0
for p in range(base, base + n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((address, p)); s.listen(64); s.setblocking(False)
    except OSError:
        s.close(); continue
    sel.register(s, selectors.EVENT_READ); ok += 1
print("ready", ok, flush=True)
start = time.time(); end = start + secs
arrivals = []
while time.time() < end:
    for key, _ in sel.select(timeout=0.05):
        try:
            c, _ = key.fileobj.accept(); c.close()
        except OSError:
            continue
        arrivals.append(time.time())
lo = end - window
buckets = [0] * int(window * 100)
for t in arrivals:
    if t >= lo:
        i = int((t - lo) * 100)
        if i < len(buckets): buckets[i] += 1
print(json.dumps(buckets), flush=True)
"#;

/// (utime, stime) of this process, in seconds.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (user, system): (f64, f64) = (f[11].parse().unwrap(), f[12].parse().unwrap());
    let hz = clock_ticks();
    (user / hz, system / hz)
}

/// Clock ticks per second of `/proc` times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// The namespaces and veth pair of the default mode; removed on drop (also when the benchmark panics).
const CHECKER_NS: &str = "alhc-chk";
const SERVER_NS: &str = "alhc-srv";
const CHECKER_ADDR: &str = "192.0.2.1";
const SERVER_ADDR: &str = "192.0.2.2";
/// Set in the re-executed benchmark running inside the checker's namespace.
const INSIDE: &str = "ANYLB_BENCH_INSIDE";

struct Namespaces;

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {}", args.join(" "));
}

/// Writes `mask` to the RPS CPU mask of `dev`'s receive queue, inside namespace `ns`.
fn rps(ns: &str, dev: &str, mask: &str) {
    let path = format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus");
    ip(&["netns", "exec", ns, "sh", "-c", &format!("echo {mask} > {path}")]);
}

impl Namespaces {
    fn create() -> Namespaces {
        Namespaces::remove();
        let ns = Namespaces;
        for n in [CHECKER_NS, SERVER_NS] {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ip(&[
            "link", "add", "alhc-c", "netns", CHECKER_NS, "type", "veth", "peer", "name", "alhc-s", "netns",
            SERVER_NS,
        ]);
        for (n, dev, a) in [
            (CHECKER_NS, "alhc-c", CHECKER_ADDR),
            (SERVER_NS, "alhc-s", SERVER_ADDR),
        ] {
            ip(&["-n", n, "addr", "add", &format!("{a}/24"), "dev", dev]);
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        rps(CHECKER_NS, "alhc-c", "1");
        rps(SERVER_NS, "alhc-s", "2");
        ns
    }

    fn remove() {
        for n in [CHECKER_NS, SERVER_NS] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        Namespaces::remove();
    }
}

/// Idle time of CPU 0 in seconds (idle and iowait of `/proc/stat`). With tickless idle these are measured
/// exactly, while a CPU's user and system fields are sampled at ticks and miss a process that wakes 10,000
/// times a second between them; so the core's busy time is the wall-clock time less this.
fn core0_idle() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let line = stat.lines().find(|l| l.starts_with("cpu0 ")).unwrap();
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    (v[3] + v[4]) / clock_ticks()
}

fn main() {
    let loopback = std::env::args().any(|a| a == "loopback");
    if !loopback && std::env::var_os(INSIDE).is_none() {
        let _ns = Namespaces::create();
        let exe = std::env::current_exe().unwrap();
        let st = Command::new("ip")
            .args(["netns", "exec", CHECKER_NS, "taskset", "-c", "0"])
            .arg(exe)
            .args(std::env::args().skip(1))
            .env(INSIDE, "1")
            .status()
            .unwrap();
        assert!(st.success(), "benchmark in {CHECKER_NS}: {st}");
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    // `connect`: a full connect per check instead of the SYN probes TCP checks use by default.
    let connect = std::env::args().any(|a| a == "connect");
    let mode = if connect { "connect" } else { "syn" };
    let base = 20_000u16;
    // `idle`: the checker's core measured before any check starts, so that what the core does without the
    // checker (this host's own daemons) can be told from what the checks cost; only the namespaced run
    // measures its core (loopback shares it with the listeners).
    let idle = if loopback { 0.0 } else { 4.0 };
    let (warm, window) = (4.0, 10.0);
    let (addr, mut server) = if loopback {
        ("127.0.0.1", Command::new("python3"))
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", SERVER_NS, "taskset", "-c", "1", "python3"]);
        (SERVER_ADDR, c)
    };
    let mut server = server
        .args([
            "-c",
            LISTENERS,
            &base.to_string(),
            &n.to_string(),
            &(idle + warm + window + 1.0).to_string(),
            &window.to_string(),
            addr,
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let listening: usize = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    assert!(
        listening * 10 >= n * 9,
        "only {listening} of {n} ports could be bound: {line}"
    );
    let backends: Vec<String> = (0..n)
        .map(|i| format!("{{ address = \"{addr}\", port = {} }}", usize::from(base) + i))
        .collect();
    let topology = format!(
        r#"[cluster]
name = "bench"
[[nodes]]
name = "n1"
router_id = "192.0.2.1"
[nodes.dataplane]
workers = [1]
[[nodes.dataplane.ports]]
name = "p0"
device = "net_null0"
addresses = ["192.0.2.1/24"]
[[nodes.local_addresses]]
prefix = "198.51.100.16/30"
[[services]]
name = "many"
vip = "203.0.113.10"
port = 80
protocol = "tcp"
health = {{ kind = "tcp", syn = {syn}, interval = "1s", timeout = "500ms", rise = 1, fall = 3 }}
backends = [{}]
"#,
        backends.join(", "),
        syn = !connect
    );
    let cfg = anylb_conf::load_str(&topology, "bench.toml")
        .unwrap()
        .resolve("n1")
        .unwrap();
    // One thread, as `anylb run` runs its control plane.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let idle_core = (!loopback).then(|| {
        eprintln!("measuring the checker's core for {idle} s before any check");
        let (i0, t0) = (core0_idle(), Instant::now());
        std::thread::sleep(Duration::from_secs_f64(idle));
        (1.0 - (core0_idle() - i0) / t0.elapsed().as_secs_f64()) * 100.0
    });
    let monitor = Monitor::start(&cfg);
    let run_for = |secs: f64| rt.block_on(tokio::time::sleep(Duration::from_secs_f64(secs)));
    eprintln!("{n} backends, warming up {warm} s, measuring {window} s");
    run_for(warm);
    let (c0, t0, k0) = (cpu_seconds(), Instant::now(), core0_idle());
    let checks0: u64 = monitor.backends(None).iter().map(|b| b.checks).sum();
    run_for(window);
    let (c1, t1, k1) = (cpu_seconds(), Instant::now(), core0_idle());
    let checks1: u64 = monitor.backends(None).iter().map(|b| b.checks).sum();
    let wall = t1.duration_since(t0).as_secs_f64();
    let user = (c1.0 - c0.0) / wall * 100.0;
    let system = (c1.1 - c0.1) / wall * 100.0;
    let cpu = user + system;
    let rate = (checks1 - checks0) as f64 / wall;
    let up = monitor
        .backends(None)
        .iter()
        .filter(|b| b.effective_weight > 0)
        .count();
    line.clear();
    out.read_line(&mut line).unwrap();
    let buckets: Vec<u64> = serde_json::from_str(line.trim()).unwrap_or_default();
    let _ = server.wait();
    let mean = buckets.iter().sum::<u64>() as f64 / buckets.len().max(1) as f64;
    let max = buckets.iter().copied().max().unwrap_or(0) as f64;
    let _ = std::io::stdout().flush();
    println!(
        "BENCH health_10k_cpu {cpu:.1} % (of one core: user {user:.1}, kernel {system:.1}; {mode} checks)"
    );
    if let Some(idle_core) = idle_core {
        let core = (1.0 - (k1 - k0) / wall) * 100.0;
        println!(
            "BENCH health_10k_core_cpu {core:.1} % (all of the checker's core: process, softirqs, other)"
        );
        println!(
            "BENCH health_10k_core_idle_cpu {idle_core:.1} % (the same core for {idle} s before the checks)"
        );
        println!(
            "BENCH health_10k_core_cpu_over_idle {:.1} % (the whole core less what it did before the checks)",
            core - idle_core
        );
    }
    println!("BENCH health_10k_checks_per_second {rate:.0} checks/s");
    println!("BENCH health_10k_backends_up {up} of {n}");
    if connect {
        println!(
            "BENCH health_10k_busiest_10ms_vs_mean {:.2} ({max} vs {mean:.1} arrivals per 10 ms)",
            max / mean.max(1e-9)
        );
    }
    monitor.stop();
}
