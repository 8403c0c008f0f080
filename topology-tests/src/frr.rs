//! FRR routers in network namespaces: zebra and bgpd started with `-N <namespace>`, configured from a text,
//! queried with `vtysh -N <namespace>`. Their files go under `/etc/frr/<ns>` and `/var/run/frr/<ns>` and are
//! removed on drop. The daemons are stopped on drop too (SIGTERM): each keeps a directory of its own under
//! `/var/tmp/frr` while it runs and removes it when it exits by itself, so one killed with its namespace would
//! leave it behind on the machine for good; any a killed daemon left is removed.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::{run, Netns};

/// A running FRR instance.
#[derive(Debug)]
pub struct Frr {
    name: String,
    conf_dir: PathBuf,
    run_dir: PathBuf,
    keep: bool,
}

impl Frr {
    /// Starts zebra and bgpd (and bfdd when the configuration has BFD) inside `ns` with `config` (an frr.conf).
    pub fn start(ns: &Netns, config: &str) -> io::Result<Frr> {
        let name = ns.name().to_owned();
        let conf_dir = PathBuf::from("/etc/frr").join(&name);
        let run_dir = PathBuf::from("/var/run/frr").join(&name);
        std::fs::create_dir_all(&conf_dir)?;
        std::fs::create_dir_all(&run_dir)?;
        std::fs::write(conf_dir.join("frr.conf"), config)?;
        std::fs::write(conf_dir.join("vtysh.conf"), "")?;
        for d in [&conf_dir, &run_dir] {
            run(&["chown", "-R", "frr:frr", &d.display().to_string()])?;
        }
        let frr = Frr {
            name: name.clone(),
            conf_dir,
            run_dir,
            keep: false,
        };
        // bfdd only when the configuration uses BFD.
        let daemons: &[&str] = if config
            .lines()
            .any(|l| l.trim_start().starts_with("bfd") || l.contains(" bfd"))
        {
            &["zebra", "bfdd", "bgpd"]
        } else {
            &["zebra", "bgpd"]
        };
        for daemon in daemons {
            ns.exec(&[
                &format!("/usr/lib/frr/{daemon}"),
                "-N",
                &name,
                "-d",
                "-F",
                "traditional",
            ])?;
        }
        // Wait until vtysh can reach bgpd, then load the configuration.
        let end = Instant::now() + Duration::from_secs(10);
        while frr.vtysh("show version").is_err() {
            if Instant::now() > end {
                return Err(io::Error::other("FRR did not start"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        run(&["vtysh", "-N", &name, "-b"])?;
        Ok(frr)
    }

    /// Runs one vtysh command.
    pub fn vtysh(&self, cmd: &str) -> io::Result<String> {
        let out = run(&["vtysh", "-N", &self.name, "-c", cmd])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies configuration lines (as typed after `configure terminal`) to the running instance.
    pub fn configure(&self, lines: &[&str]) -> io::Result<()> {
        let mut args = vec!["vtysh", "-N", &self.name, "-c", "configure terminal"];
        for l in lines {
            args.extend(["-c", l]);
        }
        run(&args).map(drop)
    }

    /// Runs a vtysh command ending in `json` and parses the output.
    pub fn json(&self, cmd: &str) -> io::Result<serde_json::Value> {
        let text = self.vtysh(cmd)?;
        serde_json::from_str(&text).map_err(|e| io::Error::other(format!("{cmd}: {e}: {text}")))
    }

    /// Waits up to `timeout` for `f(self)` to hold.
    pub fn wait(&self, timeout: Duration, mut f: impl FnMut(&Frr) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if f(self) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the BGP session with `peer` is Established.
    pub fn established(&self, peer: &str) -> bool {
        self.json(&format!("show bgp neighbors {peer} json"))
            .ok()
            .and_then(|v| {
                v.get(peer)
                    .and_then(|n| n.get("bgpState"))
                    .and_then(|s| s.as_str())
                    .map(|s| s == "Established")
            })
            .unwrap_or(false)
    }

    /// Number of prefixes FRR holds for an address family ("ipv4" or "ipv6").
    pub fn prefix_count(&self, afi: &str) -> usize {
        self.json(&format!("show bgp {afi} unicast json"))
            .ok()
            .and_then(|v| v.get("routes").and_then(|r| r.as_object()).map(|m| m.len()))
            .unwrap_or(0)
    }
}

impl Frr {
    /// Leaves the files in place when dropped (`anylb-lab up`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Stops the daemons of the instance in namespace `name` and removes its files.
    pub fn remove(name: &str) {
        let run_dir = PathBuf::from("/var/run/frr").join(name);
        stop_daemons(&daemons(&run_dir));
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/frr").join(name));
        let _ = std::fs::remove_dir_all(run_dir);
    }

    /// Kills the instance's `daemon` without warning (SIGKILL, a crash as its peers see it), waits for it to
    /// be gone and removes the directory it could not remove itself.
    pub fn crash(&self, daemon: &str) -> io::Result<()> {
        let pid = daemons(&self.run_dir)
            .into_iter()
            .find(|(d, _)| d == daemon)
            .map(|(_, pid)| pid)
            .filter(|&pid| is_running(daemon, pid))
            .ok_or_else(|| io::Error::other(format!("no {daemon} running in {}", self.name)))?;
        signal("-KILL", pid);
        // Waits for it to be gone, and removes what it left.
        stop_daemons(&[(daemon.to_owned(), pid)]);
        Ok(())
    }

    /// The instance's daemons, by name and process id (from their pid files).
    pub fn daemons(&self) -> Vec<(String, u32)> {
        daemons(&self.run_dir)
    }

    /// An instance started earlier in namespace `name`, for queries.
    pub fn attach(name: &str) -> Frr {
        Frr {
            name: name.to_owned(),
            conf_dir: PathBuf::from("/etc/frr").join(name),
            run_dir: PathBuf::from("/var/run/frr").join(name),
            keep: true,
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        stop_daemons(&daemons(&self.run_dir));
        let _ = std::fs::remove_dir_all(&self.conf_dir);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// How long the daemons get to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The daemons whose pid files (`<daemon>.pid`) are in `run_dir`.
fn daemons(run_dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, u32)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            if path.extension()? != "pid" {
                return None;
            }
            let daemon = path.file_stem()?.to_str()?.to_owned();
            let pid = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            Some((daemon, pid))
        })
        .collect();
    v.sort();
    v
}

/// The directory FRR's daemon `daemon` with process id `pid` keeps while it runs, if it is there. It is named
/// `<daemon>.<id of the process before it forked into the background>` and holds a log buffer per thread,
/// `logbuf.<thread id>`, the first of them `logbuf.<pid>`.
pub fn temp_dir(daemon: &str, pid: u32) -> Option<PathBuf> {
    let prefix = format!("{daemon}.");
    std::fs::read_dir("/var/tmp/frr")
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
        .map(|e| e.path())
        .find(|dir| dir.join(format!("logbuf.{pid}")).exists())
}

/// Whether process `pid` is FRR's `daemon` and has not exited (a pid file can outlive its process, the number
/// can be reused, and an exited daemon stays a zombie until its parent, init here, reaps it).
pub fn is_running(daemon: &str, pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state …`; the name is in parentheses and may itself hold spaces.
    match (stat.find('('), stat.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            &stat[open + 1..close] == daemon && !stat[close + 1..].trim_start().starts_with('Z')
        }
        _ => false,
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// Stops `daemons` (SIGTERM, and SIGCONT for one a test froze), waits up to [`STOP_GRACE`] for them to exit,
/// kills any left, and removes the directories under `/var/tmp/frr` of those that did not remove their own.
fn stop_daemons(daemons: &[(String, u32)]) {
    for (d, pid) in daemons {
        if is_running(d, *pid) {
            signal("-TERM", *pid);
            signal("-CONT", *pid);
        }
    }
    let end = Instant::now() + STOP_GRACE;
    while Instant::now() < end && daemons.iter().any(|(d, pid)| is_running(d, *pid)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (d, pid) in daemons {
        if is_running(d, *pid) {
            signal("-KILL", *pid);
        }
        if let Some(dir) = temp_dir(d, *pid) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
