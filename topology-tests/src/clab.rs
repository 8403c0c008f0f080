//! Containerlab topology files, brought up without Docker: every node becomes a network namespace named
//! `<prefix><node>`, every link a veth pair, every `kind: bridge` node a namespace with a Linux bridge, every
//! `exec` line runs in its node, and the `anylb.role` label says what to start:
//!
//! - `frr`: zebra and bgpd with the `frr.conf` the node binds to `/etc/frr/frr.conf`;
//! - `anylb`: `anylb run` with the topology file bound to the node and its `anylb.node` label;
//! - anything else with a `cmd`: that command, with bound container paths replaced by the host files.
//!
//! Bind paths are relative to the topology file, as containerlab reads them.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::frr::Frr;
use crate::netns::{veth, Netns};

/// A containerlab file (the fields the runner uses; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Clab {
    /// Lab name.
    pub name: String,
    /// Nodes and links.
    pub topology: Topology,
}

/// The `topology` section.
#[derive(Debug, Clone, Deserialize)]
pub struct Topology {
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeDef>,
    /// Links.
    #[serde(default)]
    pub links: Vec<LinkDef>,
}

/// A node.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct NodeDef {
    /// `linux`, `bridge`, …
    #[serde(default)]
    pub kind: String,
    /// The container image (the runner ignores it; containerlab runs it).
    #[serde(default)]
    pub image: Option<String>,
    /// Files bound into the container, `host:container`.
    #[serde(default)]
    pub binds: Vec<String>,
    /// Labels (`anylb.role`, `anylb.node`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Commands run after the links are up.
    #[serde(default)]
    pub exec: Vec<String>,
    /// The container's command.
    #[serde(default)]
    pub cmd: Option<String>,
}

/// A link.
#[derive(Debug, Clone, Deserialize)]
pub struct LinkDef {
    /// `node:interface` twice.
    pub endpoints: [String; 2],
}

impl Clab {
    /// Reads a file.
    pub fn load(path: &Path) -> io::Result<Clab> {
        let text = std::fs::read_to_string(path)?;
        serde_yaml_ng::from_str(&text).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
    }

    /// The namespace prefix of this lab ("al" and 4 characters of the lab name).
    pub fn prefix(&self) -> String {
        let mut p: String = self
            .name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(4)
            .collect();
        p.insert_str(0, "al");
        p
    }
}

/// A running lab.
#[derive(Debug)]
pub struct Lab {
    /// The file.
    pub clab: Clab,
    dir: PathBuf,
    prefix: String,
    /// Namespaces by node name.
    pub nodes: BTreeMap<String, Netns>,
    /// FRR instances by node name.
    pub frr: BTreeMap<String, Frr>,
    /// Process ids of started commands by node name.
    pub pids: BTreeMap<String, u32>,
    /// Where logs go.
    pub logs: PathBuf,
    /// The `anylb` binary run for `anylb` nodes.
    anylb: PathBuf,
}

fn split_endpoint(e: &str) -> io::Result<(&str, &str)> {
    e.split_once(':')
        .ok_or_else(|| io::Error::other(format!("endpoint {e:?} is not node:interface")))
}

impl Lab {
    /// The host file bound to `container_path` on `node`.
    fn bind(&self, node: &NodeDef, container_path: &str) -> Option<PathBuf> {
        node.binds.iter().find_map(|b| {
            let (host, cont) = b.split_once(':')?;
            (cont.split(':').next() == Some(container_path)).then(|| self.dir.join(host))
        })
    }

    /// Brings the lab up: namespaces, links, bridges, exec lines, then the processes. `anylb` is the binary
    /// to run for `anylb` nodes; logs go to `logs`.
    pub fn up(path: &Path, anylb: &Path, logs: &Path) -> io::Result<Lab> {
        let clab = Clab::load(path)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let prefix = clab.prefix();
        std::fs::create_dir_all(logs)?;
        let mut lab = Lab {
            clab: clab.clone(),
            dir,
            prefix: prefix.clone(),
            nodes: BTreeMap::new(),
            frr: BTreeMap::new(),
            pids: BTreeMap::new(),
            logs: logs.to_path_buf(),
            anylb: anylb.to_path_buf(),
        };
        for name in clab.topology.nodes.keys() {
            lab.nodes
                .insert(name.clone(), Netns::new(&format!("{prefix}{name}"))?);
        }
        for l in &clab.topology.links {
            let (a, ai) = split_endpoint(&l.endpoints[0])?;
            let (b, bi) = split_endpoint(&l.endpoints[1])?;
            let (na, nb) = (lab.ns(a)?, lab.ns(b)?);
            veth(na, ai, nb, bi)?;
        }
        for (name, def) in &clab.topology.nodes {
            let ns = lab.ns(name)?;
            if def.kind == "bridge" {
                ns.ip(&["link", "add", "br0", "type", "bridge"])?;
                for l in &clab.topology.links {
                    for e in &l.endpoints {
                        let (n, i) = split_endpoint(e)?;
                        if n == name {
                            ns.ip(&["link", "set", i, "master", "br0"])?;
                        }
                    }
                }
                ns.ip(&["link", "set", "br0", "up"])?;
            }
            for line in &def.exec {
                let words: Vec<&str> = line.split_whitespace().collect();
                ns.exec(&words)?;
            }
        }
        for (name, def) in clab.topology.nodes.clone() {
            let role = def.labels.get("anylb.role").cloned().unwrap_or_default();
            match role.as_str() {
                "frr" => {
                    let conf = lab
                        .bind(&def, "/etc/frr/frr.conf")
                        .ok_or_else(|| io::Error::other(format!("{name}: no frr.conf bound")))?;
                    let text = std::fs::read_to_string(conf)?;
                    let f = Frr::start(lab.ns(&name)?, &text)?;
                    lab.frr.insert(name.clone(), f);
                }
                "anylb" => {
                    lab.start(&name)?;
                }
                _ => {
                    if def.cmd.is_some() {
                        lab.start(&name)?;
                    }
                }
            }
        }
        Ok(lab)
    }

    /// Starts (again) the process of a node that is not FRR: `anylb run` for an `anylb` node, else its `cmd`
    /// with bound paths replaced by host files; returns its pid. Its output goes to `logs/NAME.log` (appended).
    pub fn start(&mut self, name: &str) -> io::Result<u32> {
        let def = self
            .clab
            .topology
            .nodes
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("no node {name:?}")))?;
        if def.labels.get("anylb.role").map(String::as_str) == Some("anylb") {
            return self.start_anylb(name, &def);
        }
        let cmd = def
            .cmd
            .clone()
            .ok_or_else(|| io::Error::other(format!("{name} has no cmd")))?;
        let words: Vec<String> = cmd
            .split_whitespace()
            .map(|w| {
                self.bind(&def, w)
                    .map_or_else(|| w.to_owned(), |p| p.display().to_string())
            })
            .collect();
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        let log = self.logs.join(format!("{name}.log"));
        let ns = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| io::Error::other("node vanished"))?;
        let pid = ns.spawn(&args, Some(&log))?;
        self.pids.insert(name.to_owned(), pid);
        Ok(pid)
    }

    /// Starts `anylb run` for an `anylb` node with the topology file bound to it.
    fn start_anylb(&mut self, name: &str, def: &NodeDef) -> io::Result<u32> {
        let conf = self
            .bind(def, "/etc/anylb/cluster.toml")
            .ok_or_else(|| io::Error::other(format!("{name}: no cluster.toml bound")))?;
        let node = def
            .labels
            .get("anylb.node")
            .cloned()
            .unwrap_or_else(|| name.to_owned());
        let log = self.logs.join(format!("{name}.log"));
        let (conf_s, anylb) = (conf.display().to_string(), self.anylb.display().to_string());
        let args = [
            anylb.as_str(),
            "run",
            "--config",
            conf_s.as_str(),
            "--node",
            node.as_str(),
            "--stats-interval",
            "0",
        ];
        let ns = self
            .nodes
            .get_mut(name)
            .ok_or_else(|| io::Error::other("node vanished"))?;
        let pid = ns.spawn(&args, Some(&log))?;
        self.pids.insert(name.to_owned(), pid);
        Ok(pid)
    }

    /// Stops the started process of a node (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self, name: &str) -> bool {
        let Some(pid) = self.pids.remove(name) else {
            return false;
        };
        self.nodes
            .get_mut(name)
            .is_some_and(|ns| ns.stop(pid, std::time::Duration::from_secs(5)))
    }

    /// The namespace of `node`.
    pub fn ns(&self, node: &str) -> io::Result<&Netns> {
        self.nodes
            .get(node)
            .ok_or_else(|| io::Error::other(format!("no node {node:?} in the lab")))
    }

    /// Leaves everything running when this value is dropped.
    pub fn keep(mut self) {
        for n in self.nodes.values_mut() {
            n.keep();
        }
        for f in self.frr.values_mut() {
            f.keep();
        }
    }

    /// Removes the namespaces and FRR files of the lab in `path` (whatever state it is in): its processes get
    /// SIGTERM and 5 s to stop (anylb withdraws its routes gracefully), then SIGKILL.
    pub fn down(path: &Path) -> io::Result<()> {
        let clab = Clab::load(path)?;
        let prefix = clab.prefix();
        let names: Vec<String> = clab
            .topology
            .nodes
            .keys()
            .map(|n| format!("{prefix}{n}"))
            .collect();
        Netns::stop_all(&names, std::time::Duration::from_secs(5));
        for ns in &names {
            Netns::remove(ns);
            Frr::remove(ns);
        }
        Ok(())
    }

    /// The namespace name of `node` in the lab of `path`.
    pub fn ns_name(path: &Path, node: &str) -> io::Result<String> {
        Ok(format!("{}{node}", Clab::load(path)?.prefix()))
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Copies directory `from` into `to`, recursively (a lab's topology files into a scratch directory, so that a
/// test may edit them).
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()))?;
        } else {
            std::fs::copy(&p, to.join(e.file_name()))?;
        }
    }
    Ok(())
}
