//! FRR routers in network namespaces: zebra and bgpd started with `-N <namespace>`, configured from a text,
//! queried with `vtysh -N <namespace>`. Their files go under `/etc/frr/<ns>` and `/var/run/frr/<ns>` and are
//! removed on drop (the daemons die with the namespace).

use std::io;
use std::path::PathBuf;
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

    /// Removes the files of the instance in namespace `name`.
    pub fn remove(name: &str) {
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/frr").join(name));
        let _ = std::fs::remove_dir_all(PathBuf::from("/var/run/frr").join(name));
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
        let _ = std::fs::remove_dir_all(&self.conf_dir);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
