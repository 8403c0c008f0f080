//! Network namespaces, veth pairs and processes inside them, for tests and demos that must not touch the
//! root namespace. Everything is created inside namespaces the caller owns and removed on drop — also when a
//! test panics — so nothing is left behind.

use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a command, turning a non-zero exit into an error that shows the command and its stderr.
pub fn run(cmd: &[&str]) -> io::Result<Output> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// A network namespace, deleted (with every process in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    children: Vec<Child>,
    keep: bool,
}

impl Netns {
    /// Creates namespace `name` (a stale one of the same name is removed first), with loopback up.
    pub fn new(name: &str) -> io::Result<Netns> {
        if name.len() > 15 || name.contains('/') {
            return Err(io::Error::other(format!("bad namespace name {name:?}")));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
            children: Vec::new(),
            keep: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut v = vec!["ip", "-n", self.name.as_str()];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Runs a command inside the namespace and waits for it.
    pub fn exec(&self, cmd: &[&str]) -> io::Result<Output> {
        let mut v = vec!["ip", "netns", "exec", self.name.as_str()];
        v.extend_from_slice(cmd);
        run(&v)
    }

    /// Runs a shell script inside the namespace; returns its stdout.
    pub fn sh(&self, script: &str) -> io::Result<String> {
        let out = self.exec(&["sh", "-c", script])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Starts a process inside the namespace; it is killed when the namespace is dropped. Its output goes to
    /// `log` when given (appended to, so a restarted process keeps the earlier run's lines), else is discarded.
    pub fn spawn(&mut self, cmd: &[&str], log: Option<&std::path::Path>) -> io::Result<u32> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name.as_str()])
            .args(cmd)
            .stdin(Stdio::null());
        match log {
            Some(p) => {
                let f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
                c.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = c.spawn()?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Sends SIGTERM to a process started with [`spawn`](Self::spawn) and waits up to `timeout` for it;
    /// returns whether it exited by itself with success.
    pub fn stop(&mut self, pid: u32, timeout: Duration) -> bool {
        let Some(i) = self.children.iter().position(|c| c.id() == pid) else {
            return false;
        };
        let mut child = self.children.remove(i);
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(s)) = child.try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Netns {
    /// Leaves the namespace and its processes in place when this value is dropped (`anylb-lab up`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The processes in namespace `name`.
    pub fn pids(name: &str) -> Vec<String> {
        Command::new("ip")
            .args(["netns", "pids", name])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asks every process in the namespaces `names` to stop (SIGTERM: anylb withdraws its routes, FRR and the
    /// backends exit) and waits up to `grace` for them to be gone.
    pub fn stop_all(names: &[String], grace: Duration) {
        for n in names {
            for pid in Self::pids(n) {
                let _ = Command::new("kill").args(["-TERM", &pid]).status();
            }
        }
        let end = Instant::now() + grace;
        while Instant::now() < end && names.iter().any(|n| !Self::pids(n).is_empty()) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills every process left in namespace `name` and deletes it (`anylb-lab down`, after [`stop_all`]).
    ///
    /// [`stop_all`]: Self::stop_all
    pub fn remove(name: &str) {
        for pid in Self::pids(name) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Anything else still running in the namespace (e.g. forked daemons) goes too.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Connects `a:a_if` and `b:b_if` with a veth pair created directly inside the namespaces, brings both ends
/// up and turns off checksum and segmentation offloads (a DPDK port on a veth sees frames as sent: partial
/// checksums or 64 KB super-frames would be wrong there).
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> io::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    for (ns, i) in [(a, a_if), (b, b_if)] {
        ns.exec(&[
            "ethtool", "-K", i, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
        ])?;
        ns.ip(&["link", "set", i, "up"])?;
    }
    Ok(())
}

/// A prefix unique to this process, for namespace and interface names (at most 6 characters).
pub fn unique_prefix(tag: &str) -> String {
    let mut t = tag.to_owned();
    t.truncate(2);
    format!("{t}{}", std::process::id() % 10000)
}
