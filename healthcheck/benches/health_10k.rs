//! 10,000 backends checked every second against local listeners: the CPU the monitor uses and how evenly the
//! checks are spread in time. TCP checks probe with a SYN on a raw socket (the default); `-- connect` makes
//! them open a connection each, as before.
//!
//! The listeners run in a separate Python process on 127.0.0.1 (so their CPU is not counted here) and record
//! when each connection arrives (SYN probes complete none, so the spread is measured in connect mode only).
//! Run: `cargo bench -p anylb-healthcheck --bench health_10k` (add `-- N` for another backend count, `--
//! connect` for connects). Prints `BENCH health_10k_cpu <percent> %`, `BENCH health_10k_checks_per_second`, and
//! in connect mode `BENCH health_10k_busiest_10ms_vs_mean` (1.0 is perfectly even; a synchronized burst shows
//! as a large ratio).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anylb_healthcheck::monitor::Monitor;

/// Listens on ports BASE..BASE+N of 127.0.0.1; accepts and closes; after `secs` prints the arrival counts per
/// 10 ms over the last `window` seconds as JSON.
const LISTENERS: &str = r#"
import json, selectors, socket, sys, time
base, n, secs, window = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sel = selectors.DefaultSelector()
ok = 0
for p in range(base, base + n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p)); s.listen(64); s.setblocking(False)
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
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    (user / hz, system / hz)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    // `connect`: a full connect per check instead of the SYN probes TCP checks use by default.
    let connect = std::env::args().any(|a| a == "connect");
    let mode = if connect { "connect" } else { "syn" };
    let base = 20_000u16;
    let (warm, window) = (4.0, 10.0);
    let mut server = Command::new("python3")
        .args([
            "-c",
            LISTENERS,
            &base.to_string(),
            &n.to_string(),
            &(warm + window + 1.0).to_string(),
            &window.to_string(),
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
        .map(|i| format!("{{ address = \"127.0.0.1\", port = {} }}", usize::from(base) + i))
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
    let monitor = Monitor::start(&cfg);
    let run_for = |secs: f64| rt.block_on(tokio::time::sleep(Duration::from_secs_f64(secs)));
    eprintln!("{n} backends, warming up {warm} s, measuring {window} s");
    run_for(warm);
    let (c0, t0) = (cpu_seconds(), Instant::now());
    let checks0: u64 = monitor.backends(None).iter().map(|b| b.checks).sum();
    run_for(window);
    let (c1, t1) = (cpu_seconds(), Instant::now());
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
