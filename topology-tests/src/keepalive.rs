//! Long-lived keep-alive connections through a VIP, for the scenarios where connections must survive a node's
//! death, restart or upgrade: `n` HTTP/1.1 connections opened at the start, a request on each every 200 ms
//! until the time is up (bounded in time, and in count: one request per period). The result says, per run, how
//! many connections lived to the end, the longest stall (the gap between two answers on one connection, less the
//! period) and where it happened, the backends that answered, and the first errors.

use std::io;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::clab::Lab;

/// The client: prints one JSON object when the time is up.
const CLIENT: &str = r#"
import json, socket, sys, threading, time
vip, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
period = 0.2
t0 = time.monotonic()
res = [None] * n
def answer(f):
    status = f.readline()
    if not status.startswith(b"HTTP/1.1 200"):
        raise Exception("bad status %r" % status[:40])
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""): break
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length": length = int(v)
    return f.read(length).strip().decode()
def conn(i):
    r = {"ok": 0, "stall": 0.0, "stall_at": None, "error": None, "backend": None}
    res[i] = r
    try:
        c = socket.create_connection((vip, 80), timeout=10)
        c.settimeout(10)
        f = c.makefile("rb")
    except Exception as x:
        r["error"] = "connect: %s" % x
        return
    last = None
    while time.monotonic() - t0 < seconds:
        try:
            c.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            r["backend"] = answer(f)
        except Exception as x:
            r["error"] = "%s (%s) at %.1f s" % (type(x).__name__, x, time.monotonic() - t0)
            return
        now = time.monotonic()
        if last is not None and now - last - period > r["stall"]:
            r["stall"], r["stall_at"] = now - last - period, round(now - t0, 2)
        last = now
        r["ok"] += 1
        time.sleep(period)
    c.close()
threads = [threading.Thread(target=conn, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
    time.sleep(0.005)
for t in threads:
    t.join()
alive = [r for r in res if r["error"] is None and r["ok"] > 0]
worst = max(res, key=lambda r: r["stall"])
backends = {}
for r in alive:
    backends[r["backend"]] = backends.get(r["backend"], 0) + 1
errors = {}
for r in res:
    if r["error"] and len(errors) < 10:
        errors[r["error"]] = errors.get(r["error"], 0) + 1
print(json.dumps({"connections": n, "alive": len(alive), "requests": sum(r["ok"] for r in res),
    "max_stall_s": round(worst["stall"], 3), "max_stall_at_s": worst["stall_at"], "by_backend": backends,
    "errors": errors}))
"#;

/// Keep-alive connections running on the lab's client.
#[derive(Debug)]
pub struct Keepalive {
    child: Child,
}

impl Keepalive {
    /// Opens `n` connections to `vip` port 80 from the lab's client and keeps them busy for `time`.
    pub fn start(lab: &Lab, vip: &str, n: u32, time: Duration) -> io::Result<Keepalive> {
        let ns = lab.ns("client")?.name().to_owned();
        // The client stops by itself; `timeout` bounds it if a connection hangs.
        let bound = (time.as_secs() + 30).to_string();
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns, "timeout", &bound, "python3", "-c", CLIENT, vip,
            ])
            .args([n.to_string(), time.as_secs_f64().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Keepalive { child })
    }

    /// Waits for the end: `{connections, alive, requests, max_stall_s, max_stall_at_s, by_backend, errors}`.
    pub fn finish(self) -> io::Result<serde_json::Value> {
        let out = self.child.wait_with_output()?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            io::Error::other(format!(
                "keep-alive client output: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        })
    }
}
