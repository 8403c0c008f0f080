//! `anylb config check|show|diff`: offline commands over topology files.

use std::path::PathBuf;
use std::process::ExitCode;

use anylb_conf::{Diagnostics, Topology};
use clap::Subcommand;
use serde::Serialize;

/// Topology file commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Load and validate a topology; print a summary or every error (exit 1).
    Check {
        /// Topology file.
        file: PathBuf,
        /// Also resolve this node and summarise it.
        #[arg(long)]
        node: Option<String>,
    },
    /// Print the resolved configuration of one node, defaults filled in (TOML, or JSON with --json).
    Show {
        /// Topology file.
        file: PathBuf,
        /// Node to resolve.
        #[arg(long)]
        node: String,
    },
    /// What changes for one node between two topology files (what `anylb reload` would apply).
    Diff {
        /// The running topology.
        old: PathBuf,
        /// The new topology.
        new: PathBuf,
        /// Node to compare.
        #[arg(long)]
        node: String,
    },
}

/// Counts printed by `config check`.
#[derive(Debug, Serialize)]
struct Summary {
    file: String,
    cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    nodes: usize,
    services: usize,
    backends: usize,
    neighbors: usize,
    local_pools: usize,
    snat_rules: usize,
}

impl Summary {
    fn new(file: String, t: &Topology, node: Option<&str>) -> Option<Summary> {
        let nodes: Vec<_> = match node {
            Some(n) => vec![t.node(n)?],
            None => t.nodes.iter().collect(),
        };
        let served = |name: Option<&str>, s: &anylb_conf::Service| name.is_none_or(|n| s.served_by(n));
        let services: Vec<_> = t.services.iter().filter(|s| served(node, s)).collect();
        Some(Summary {
            file,
            cluster: t.cluster.name.clone(),
            node: node.map(str::to_owned),
            nodes: nodes.len(),
            services: services.len(),
            backends: services.iter().map(|s| s.backends.len()).sum(),
            neighbors: nodes
                .iter()
                .filter_map(|n| n.bgp.as_ref())
                .map(|b| b.neighbors.len())
                .sum(),
            local_pools: nodes.iter().map(|n| n.local_addresses.len()).sum(),
            snat_rules: t
                .snat
                .iter()
                .filter(|r| node.is_none_or(|n| r.served_by(n)))
                .count(),
        })
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ok: cluster {}", self.file, self.cluster)?;
        if let Some(n) = &self.node {
            write!(f, ", node {n}")?;
        }
        write!(
            f,
            ": {} nodes, {} services, {} backends, {} neighbors, {} local pools, {} snat rules",
            self.nodes, self.services, self.backends, self.neighbors, self.local_pools, self.snat_rules
        )
    }
}

/// Prints load errors and returns exit code 1.
fn report(errors: &Diagnostics, json: bool) -> ExitCode {
    if json {
        let v = serde_json::json!({ "ok": false, "errors": errors.0 });
        println!("{v:#}");
    } else {
        for d in &errors.0 {
            eprintln!("error: {d}");
        }
        eprintln!(
            "{} error{}",
            errors.0.len(),
            if errors.0.len() == 1 { "" } else { "s" }
        );
    }
    ExitCode::from(1)
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

fn load(file: &std::path::Path, json: bool) -> Result<Topology, ExitCode> {
    anylb_conf::load_file(file).map_err(|e| report(&e, json))
}

/// Runs one `config` subcommand.
pub fn run(cmd: ConfigCmd, json: bool) -> ExitCode {
    match cmd {
        ConfigCmd::Check { file, node } => {
            let t = match load(&file, json) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let Some(summary) = Summary::new(file.display().to_string(), &t, node.as_deref()) else {
                return fail(&format!(
                    "{}: no node named {:?}",
                    file.display(),
                    node.unwrap_or_default()
                ));
            };
            if json {
                println!("{:#}", serde_json::json!({ "ok": true, "summary": summary }));
            } else {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        ConfigCmd::Show { file, node } => {
            let t = match load(&file, json) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let Some(resolved) = t.resolve(&node) else {
                return fail(&format!("{}: no node named {node:?}", file.display()));
            };
            let text = if json {
                serde_json::to_string_pretty(&resolved).map_err(|e| e.to_string())
            } else {
                toml::to_string_pretty(&resolved).map_err(|e| e.to_string())
            };
            match text {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("cannot print the configuration: {e}")),
            }
        }
        ConfigCmd::Diff { old, new, node } => {
            let (a, b) = match (load(&old, json), load(&new, json)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            if a.node(&node).is_none() && b.node(&node).is_none() {
                return fail(&format!("no node named {node:?} in either file"));
            }
            let changes = anylb_conf::diff(&a, &b, &node);
            if json {
                println!("{:#}", serde_json::json!({ "node": node, "changes": changes }));
            } else if changes.is_empty() {
                println!("node {node}: no changes");
            } else {
                for c in &changes {
                    let mark = if c.needs_restart() { " (restart)" } else { "" };
                    println!("node {node}: {c}{mark}");
                }
            }
            ExitCode::SUCCESS
        }
    }
}
