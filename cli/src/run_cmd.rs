//! `anylb run`: the arguments of one node of the cluster; [`crate::node`] runs it. The node starts its DPDK
//! dataplane from the topology and its BGP speaker, which announces the VIPs of the services the node serves
//! and its local-address pools; routes received from upstreams become the dataplane's route table (with
//! ECMP). SIGTERM or SIGINT shut down gracefully: the routes are re-announced with the GRACEFUL_SHUTDOWN
//! community (RFC 8326), the node waits `shutdown_wait`, then closes its sessions with a shutdown
//! communication and stops the dataplane. SIGHUP reloads the topology.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::node;

/// Arguments of `anylb run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Topology file.
    #[arg(long)]
    config: PathBuf,
    /// This node's name in the topology.
    #[arg(long)]
    node: String,
    /// Seconds between counter lines in the log (0: none).
    #[arg(long, default_value_t = 10)]
    stats_interval: u64,
    /// Do not create TAP exception interfaces (the kernel then sees only what it sees by itself).
    #[arg(long)]
    no_tap: bool,
}

/// Runs a node until a signal asks it to stop.
pub fn run(a: RunArgs) -> ExitCode {
    let opts = node::Options {
        stats_interval: a.stats_interval,
        taps: !a.no_tap,
    };
    node::run(&a.config, &a.node, &opts)
}
