//! `anylb run`: one node of the cluster. For now it starts the node's DPDK dataplane from the topology and
//! runs it until SIGTERM or SIGINT, logging its counters; BGP and health checking join in their own issues.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anylb_dataplane::dpdk::{Config, PortSpec, Runtime};
use anylb_dataplane::snapshot::{Builder, Overrides};
use clap::Args;

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
    let topo = match anylb_conf::load_file(&a.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let Some(cfg) = topo.resolve(&a.node) else {
        eprintln!("error: {}: no node named {:?}", a.config.display(), a.node);
        return ExitCode::from(1);
    };
    let dp = &cfg.node.dataplane;
    let mut eal_args = dp.eal_args.clone();
    if !eal_args.iter().any(|x| x.starts_with("--file-prefix")) {
        eal_args.push(format!(
            "--file-prefix=anylb-{}-{}",
            cfg.node.name,
            std::process::id()
        ));
    }
    let rcfg = Config {
        workers: dp.workers.clone(),
        main_core: dp.main_core.unwrap_or(0),
        eal_args,
        ports: dp
            .ports
            .iter()
            .map(|p| PortSpec {
                name: p.name.clone(),
                device: p.device.clone(),
                mtu: p.mtu(),
                addresses: p.addresses.iter().map(|n| (n.addr(), n.prefix_len())).collect(),
                exception: p.exception.unwrap_or_default(),
            })
            .collect(),
        descriptors: 1024,
        mbufs: 16383,
        exception_taps: !a.no_tap,
    };
    let workers = dp.workers.len();
    let mut builder = Builder::default();
    let runtime = match Runtime::start(&rcfg, |macs| {
        builder
            .build(&cfg, macs, workers, &Overrides::default())
            .map_err(|e| e.to_string())
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the dataplane of {}: {e}", cfg.node.name);
            return ExitCode::from(1);
        }
    };
    tracing::info!(node = %cfg.node.name, workers, steering = ?runtime.steering(), "dataplane running");
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("error: cannot install a signal handler: {e}");
            runtime.stop();
            return ExitCode::from(1);
        }
    }
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if a.stats_interval > 0 && last.elapsed() >= Duration::from_secs(a.stats_interval) {
            last = Instant::now();
            for (i, s) in runtime.stats().iter().enumerate() {
                tracing::info!(
                    worker = i,
                    rx = s.rx_packets,
                    tx = s.tx_packets,
                    kernel = s.to_kernel,
                    new_conns = s.new_connections,
                    drops = s.total_drops(),
                    redirected = s.redirected,
                    "worker counters"
                );
            }
        }
    }
    tracing::info!("stopping");
    for (i, s) in runtime.stats().iter().enumerate() {
        tracing::info!(
            worker = i,
            rx = s.rx_packets,
            tx = s.tx_packets,
            new_conns = s.new_connections,
            drops = s.total_drops(),
            redirected = s.redirected,
            kernel = s.to_kernel,
            "final counters"
        );
    }
    runtime.stop();
    ExitCode::SUCCESS
}
