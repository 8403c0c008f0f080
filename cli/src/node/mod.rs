//! One node of the cluster at run time: [`assemble`] turns the topology into every engine's configuration,
//! [`control`] is the loop that turns health, BGP and operator actions into dataplane snapshots and BGP
//! announcements, [`api`] the control API on the node's Unix socket and [`metrics`] the Prometheus page.
//! [`run`] starts them in that order and stops them in reverse.

pub mod api;
pub mod assemble;
pub mod control;
pub mod metrics;
pub mod rates;
pub mod selfcheck;
pub mod sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anylb_conf::NodeConfig;
use anylb_dataplane::dpdk::Runtime;
use anylb_dataplane::snapshot::{Builder, Overrides};
use anylb_healthcheck::monitor::Monitor;
use anylb_routing::rib::Announcement;
use anylb_routing::speaker::Speaker;
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};

use control::ReloadError;

/// Requests from the API to the control loop.
#[derive(Debug)]
pub enum Control {
    /// Re-read the topology and apply the difference.
    Reload(oneshot::Sender<Result<Vec<String>, ReloadError>>),
    /// Drain or undrain the whole node.
    NodeDrain(bool, oneshot::Sender<String>),
    /// Something changed; rebuild.
    Dirty,
}

/// Everything the API reads.
#[derive(Debug)]
pub struct Node {
    /// Topology file.
    pub config_path: PathBuf,
    /// Current resolved configuration.
    pub cfg: Mutex<NodeConfig>,
    /// Start time.
    pub started: Instant,
    /// The dataplane.
    pub runtime: Arc<Runtime>,
    /// The BGP speaker.
    pub speaker: Option<Speaker>,
    /// The health monitor (replaced on reload).
    pub monitor: Mutex<Monitor>,
    /// What is announced now.
    pub announced: Mutex<BTreeMap<IpNet, Announcement>>,
    /// Drained by hand.
    pub drained: AtomicBool,
    /// Workers forwarding.
    pub forwarding: AtomicBool,
    /// To the control loop.
    pub control: mpsc::UnboundedSender<Control>,
    /// The connection sync, when on.
    pub sync: Option<sync::Handle>,
    /// The last two samples of the counters, for rates.
    pub rates: Mutex<rates::Window>,
    /// Reloads applied and refused.
    pub reloads: [AtomicU64; 2],
}

impl Node {
    /// The health monitor now (it is replaced on reload).
    pub fn monitor(&self) -> Option<Monitor> {
        self.monitor.lock().ok().map(|m| m.clone())
    }
}

/// What `anylb run` was asked for besides the topology.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds between counter lines in the log (0: none).
    pub stats_interval: u64,
    /// Create TAP exception interfaces where the topology asks for them.
    pub taps: bool,
}

/// Runs node `node` of topology file `path` until a signal asks it to stop.
pub fn run(path: &Path, node: &str, opts: &Options) -> ExitCode {
    let a = match assemble::assemble(path, node, opts.taps) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let cfg = a.cfg;
    let workers = cfg.node.dataplane.workers.len();
    let mut builder = Builder::default();
    if let Some(k) = a.cookie_secret {
        builder.set_cookie_secret(k, control::unix_ms());
    }
    let mut macs = Vec::new();
    let runtime = match Runtime::start(&a.dataplane, |m| {
        macs = m.to_vec();
        // With connection sync, the node's local addresses wait for its resync (the sync releases them).
        let first = Overrides {
            withhold_lips: cfg.sync.is_some(),
            ..Overrides::default()
        };
        builder.build(&cfg, m, workers, &first)
    }) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("error: cannot start the dataplane of {}: {e}", cfg.node.name);
            return ExitCode::from(1);
        }
    };
    tracing::info!(node = %cfg.node.name, workers, steering = ?runtime.steering(), "dataplane running");
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        let speaker = match a.speaker {
            Some(sc) => match Speaker::start(sc).await {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("error: cannot start the BGP speaker: {e}");
                    return ExitCode::from(1);
                }
            },
            None => None,
        };
        let bfd = speaker.as_ref().map(|s| s.attach_bfd(a.bfd, 0x616c_0001));
        let (sync, sync_task) = match (cfg.sync.clone(), a.sync) {
            (Some(sc), Some((key, me))) => match sync::start(sc, me, &key, runtime.clone()).await {
                Ok((handle, task)) => (Some(handle), Some(task)),
                Err(e) => {
                    eprintln!("error: cannot start the connection sync: {e}");
                    return ExitCode::from(1);
                }
            },
            _ => (None, None),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let node = Arc::new(Node {
            config_path: path.to_owned(),
            cfg: Mutex::new(cfg.clone()),
            started: Instant::now(),
            runtime: runtime.clone(),
            speaker,
            monitor: Mutex::new(Monitor::start(&cfg)),
            announced: Mutex::new(BTreeMap::new()),
            drained: AtomicBool::new(false),
            forwarding: AtomicBool::new(true),
            control: tx,
            sync,
            rates: Mutex::new(rates::Window::default()),
            reloads: [AtomicU64::new(0), AtomicU64::new(0)],
        });
        let socket = cfg.node.control_socket();
        let api = tokio::spawn(api::serve(node.clone(), socket.clone()));
        let sampler = tokio::spawn(rates::run(node.clone()));
        let metrics = cfg
            .node
            .metrics_listen
            .map(|addr| tokio::spawn(metrics::serve(node.clone(), addr)));
        control::run(node.clone(), rx, builder, macs, opts.stats_interval).await;
        api.abort();
        sampler.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        for t in bfd.into_iter().flatten().chain(sync_task) {
            t.abort();
        }
        let _ = std::fs::remove_file(&socket);
        ExitCode::SUCCESS
    });
    drop(rt);
    match Arc::try_unwrap(runtime) {
        Ok(r) => r.stop(),
        Err(still_shared) => drop(still_shared),
    }
    code
}
