//! The DPDK runtime: the engine's workers on pinned lcores over real ports (PCI devices or vdevs), one RX and
//! one TX queue per worker per port, RSS across workers, Full-NAT replies steered to the worker that owns the
//! connection, and the kernel exception path.
//!
//! This is the one dataplane module that uses dpdk-sys; dpdk-sys exposes safe wrappers, so no `unsafe` is
//! needed here either.
//!
//! - **Steering.** A reply's owner is its destination port's low bits (see [`crate::pool`]). With more than one
//!   worker the runtime first tries an rte_flow rule per (port, local address, protocol, worker slice) sending
//!   the slice to that worker's queue; when a port refuses, replies that land on the wrong worker are passed to
//!   the owner over a single-producer/single-consumer ring (one ring per ordered pair of workers). The log and
//!   [`Runtime::steering`] say which path is in use.
//! - **Exception path.** Frames with the to-kernel verdict go to a TAP interface per port (a `net_tap` vdev named
//!   `al-<port>`) that carries the port's MAC; the runtime gives it the node's addresses, and what the kernel sends
//!   on it leaves through the port. With `net_af_packet` the kernel already sees every frame of the interface, so
//!   there is no TAP and to-kernel frames are simply released (the kernel has its own copy).
//! - **Configuration.** The control thread publishes snapshots with [`Runtime::publish`]; workers check a
//!   generation counter once per loop and switch between bursts.
//! - **Counters.** Each worker publishes its [`Stats`] to atomics about every millisecond; [`Runtime::stats`]
//!   reads them without locks on the fast path.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dpdk_sys::{Eal, FlowRule, Mbuf, Mempool, Port, PortConfig, Ring};

use crate::cluster::record::Record;
use crate::counters::{merge, NodeCounters, WorkerCounters};
use crate::flow::{to_ip, Addr};
use crate::frame::{Frame, FrameAlloc};
use crate::snapshot::Snapshot;
use crate::stats::{Stats, DROP_REASONS};
use crate::wire::ethernet::Mac;

mod ask;
mod conns;
mod lcore;

pub use conns::{ConnFilter, ConnInfo};

use ask::{Answer, Question};
use lcore::Lcore;

impl Frame for Mbuf {
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }

    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }

    fn prepend(&mut self, n: usize) -> bool {
        Mbuf::prepend(self, n)
    }

    fn adj(&mut self, n: usize) -> bool {
        Mbuf::adj(self, n)
    }

    // Always: left to the compiler, this was a call from the fast path on some builds and inlined on others
    // (callgrind: 6 instructions a frame for the call).
    #[inline(always)]
    fn truncate(&mut self, len: usize) {
        let cur = self.len();
        if cur > len {
            self.trim(cur - len);
        }
    }

    fn append(&mut self, n: usize) -> bool {
        Mbuf::append(self, n)
    }

    fn rx_checksums_verified(&self) -> bool {
        self.rx_checksums_good()
    }
}

/// Allocates frames from a mempool.
#[derive(Debug, Clone)]
pub struct PoolAlloc(pub Arc<Mempool>);

impl FrameAlloc for PoolAlloc {
    type F = Mbuf;

    fn alloc(&mut self) -> Option<Mbuf> {
        self.0.alloc()
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A DPDK call failed.
    #[error(transparent)]
    Dpdk(#[from] dpdk_sys::Error),
    /// No worker core is configured.
    #[error("at least one worker core is needed")]
    NoWorkers,
    /// A port cannot give every worker a queue.
    #[error("port {port} ({driver}) has {have} RX queues, {need} workers need one each")]
    TooFewQueues {
        /// The port's name.
        port: String,
        /// Its driver.
        driver: String,
        /// Queues it has.
        have: u16,
        /// Queues needed.
        need: usize,
    },
    /// The first snapshot cannot be built from the topology.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::BuildError),
    /// Setting up the kernel interface failed.
    #[error("exception interface {iface}: {source}")]
    Tap {
        /// Interface name.
        iface: String,
        /// The `ip` command that failed.
        source: IpCmdError,
    },
}

/// An `ip` command that failed.
#[derive(Debug, thiserror::Error)]
pub enum IpCmdError {
    /// It could not be run.
    #[error("ip {command}: {source}")]
    Spawn {
        /// Its arguments.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("ip {command}: {stderr}")]
    Failed {
        /// Its arguments.
        command: String,
        /// What it printed.
        stderr: String,
    },
}

/// How the kernel sees a port's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exception {
    /// A TAP interface carries the node's addresses; to-kernel frames go there.
    Tap,
    /// The kernel sees the interface itself (`net_af_packet`); to-kernel frames are released.
    KernelSees,
    /// No kernel path (e.g. `net_null`, `net_pcap`, `net_ring`): to-kernel frames are released.
    None,
}

/// One port to open.
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// Name from the topology.
    pub name: String,
    /// PCI address or vdev string.
    pub device: String,
    /// MTU.
    pub mtu: u16,
    /// The node's own addresses with prefix length (given to the TAP interface).
    pub addresses: Vec<(IpAddr, u8)>,
    /// The exception path asked for.
    pub exception: anylb_conf::ExceptionPath,
}

/// How to start the runtime.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker cores.
    pub workers: Vec<u16>,
    /// Core of the main (control) thread.
    pub main_core: u16,
    /// Extra EAL arguments from the topology.
    pub eal_args: Vec<String>,
    /// Ports, in topology order.
    pub ports: Vec<PortSpec>,
    /// Descriptors per queue.
    pub descriptors: u16,
    /// Buffers in the pool.
    pub mbufs: u32,
    /// Allow TAP exception interfaces (ports set to `auto` or `tap`); false disables them everywhere.
    pub exception_taps: bool,
}

/// How Full-NAT replies reach their worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Steering {
    /// One worker: nothing to steer.
    SingleWorker,
    /// rte_flow rules send each worker's port slice to its queue.
    Flow,
    /// Replies on the wrong worker are passed over rings.
    Software,
}

/// A port as the runtime opened it.
#[derive(Debug)]
struct OpenPort {
    name: String,
    port: Port,
    mac: Mac,
    exception: Exception,
    tap: Option<Port>,
    /// TAP interface name.
    tap_iface: Option<String>,
}

/// Counters of one worker, published as atomics.
#[derive(Debug)]
struct Published {
    vals: Vec<AtomicU64>,
    heartbeat: AtomicU64,
}

const FIXED: usize = 18;

impl Published {
    fn new() -> Self {
        Published {
            vals: (0..FIXED + DROP_REASONS).map(|_| AtomicU64::new(0)).collect(),
            heartbeat: AtomicU64::new(0),
        }
    }

    fn store(&self, s: &Stats, now_ms: u64) {
        let fixed = [
            s.rx_packets,
            s.rx_bytes,
            s.tx_packets,
            s.tx_bytes,
            s.to_kernel,
            s.redirected,
            s.peer_forwarded,
            s.new_connections,
            s.expired_connections,
            s.stack_replies,
            s.icmp_errors,
            s.fast_path,
            s.connections,
            s.quic_routed,
            s.fragments,
            s.syn_cookies,
            s.syn_proxied,
            s.peer_forwarded_closed,
        ];
        for (a, v) in self.vals.iter().zip(fixed.iter().chain(s.drops.iter())) {
            a.store(*v, Ordering::Relaxed);
        }
        self.heartbeat.store(now_ms, Ordering::Release);
    }

    fn load(&self) -> Stats {
        let v: Vec<u64> = self.vals.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        let mut drops = [0u64; DROP_REASONS];
        drops.copy_from_slice(&v[FIXED..FIXED + DROP_REASONS]);
        Stats {
            rx_packets: v[0],
            rx_bytes: v[1],
            tx_packets: v[2],
            tx_bytes: v[3],
            to_kernel: v[4],
            redirected: v[5],
            peer_forwarded: v[6],
            new_connections: v[7],
            expired_connections: v[8],
            stack_replies: v[9],
            icmp_errors: v[10],
            fast_path: v[11],
            connections: v[12],
            quic_routed: v[13],
            fragments: v[14],
            syn_cookies: v[15],
            syn_proxied: v[16],
            peer_forwarded_closed: v[17],
            drops,
        }
    }
}

/// State shared by the control thread and the workers.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    generation: AtomicU64,
    snapshot: Mutex<Arc<Snapshot>>,
    published: Vec<Published>,
    /// rings[from][to]: frames worker `from` hands to worker `to`.
    rings: Vec<Vec<Option<Ring>>>,
    /// Topology port names, by port number.
    port_names: Vec<String>,
    /// Frames injected by the control thread, per worker.
    inject: Vec<Ring>,
    started: Instant,
    /// Wall-clock milliseconds since the Unix epoch at `started` (SYN cookies' time slots).
    started_wall_ms: u64,
    tx_refused: AtomicU64,
    /// Neighbours learnt by one worker, sent to every other one.
    neighbors: Vec<mpsc::Sender<(u16, Addr, Mac)>>,
    /// Other nodes' connection records, to every worker.
    sync_in: Vec<mpsc::Sender<Record>>,
    /// This node's connection records, from every worker.
    sync_out: mpsc::Sender<Record>,
    /// Per worker: send the records of all its synced connections again.
    sync_all: Vec<AtomicBool>,
    /// Worker 0: announce every VIP and local address again.
    reannounce: AtomicBool,
    /// Per worker: the control thread's question (0: none; see [`ask`]) and the worker's answer, with the
    /// number of the question it answers.
    ask_req: Vec<AtomicU64>,
    ask_resp: Vec<Mutex<Option<ask::Numbered>>>,
    /// The filter of a connection question (set under the runtime's question lock).
    conn_filter: Mutex<ConnFilter>,
}

/// A neighbour as the CLI shows it, merged over the workers' tables.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NeighInfo {
    /// Topology port name.
    pub port: String,
    /// Address.
    pub address: IpAddr,
    /// MAC, once resolved.
    pub mac: Option<String>,
    /// "static", "reachable" or "incomplete".
    pub state: &'static str,
    /// Workers whose table holds it.
    pub workers: usize,
    /// Frames waiting for its resolution, over all workers.
    pub held: usize,
}

/// A running dataplane.
#[derive(Debug)]
pub struct Runtime {
    // Fields drop in this order: everything that belongs to DPDK goes before the EAL is cleaned up.
    shared: Arc<Shared>,
    _rules: Vec<FlowRule>,
    ports: Arc<Vec<OpenPort>>,
    pool: Arc<Mempool>,
    lcores: Vec<u32>,
    steering: Steering,
    inject_lock: Mutex<()>,
    /// The workers' connection records, for the node's sync task.
    sync_collected: Mutex<mpsc::Receiver<Record>>,
    /// One question at a time; the number of the last one asked.
    ask_lock: Mutex<u16>,
    stopped: bool,
    eal: Eal,
}

/// A port's description for the CLI.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PortStatus {
    /// Topology name.
    pub name: String,
    /// DPDK port id.
    pub id: u16,
    /// MAC.
    pub mac: String,
    /// Link up.
    pub link_up: bool,
    /// Speed.
    pub speed_mbps: u32,
    /// Exception path.
    pub exception: Exception,
    /// TAP interface, if any.
    pub tap: Option<String>,
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Frames missed (RX queue full).
    pub imissed: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Receive buffer allocation failures.
    pub rx_nombuf: u64,
}

/// The vdev driver name of a device string ("net_af_packet0,iface=x" → "net_af_packet0"), or none for PCI.
fn vdev_name(device: &str) -> Option<&str> {
    let name = device.split(',').next().unwrap_or(device);
    name.starts_with("net_").then_some(name)
}

/// The TAP interface name for a port (at most 15 characters).
fn tap_iface(port: &str) -> String {
    let mut s = format!("al-{port}");
    s.truncate(15);
    s
}

fn mac_str(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Runs `ip` with arguments; an error names the command.
fn ip_cmd(args: &[&str]) -> Result<(), IpCmdError> {
    let command = args.join(" ");
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| IpCmdError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(IpCmdError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

impl Runtime {
    /// The EAL arguments for `cfg`: cores, main lcore, the topology's extra arguments and one device argument per
    /// port (vdevs with `qpairs` matching the worker count for net_af_packet), plus the TAP vdevs.
    pub fn eal_args(cfg: &Config) -> Vec<String> {
        // lcore 0 is the main thread, lcores 1..=N the workers, each mapped to its configured CPU, so that a
        // worker may share a CPU with the main thread (which mostly sleeps) on small machines.
        let mut map = vec![format!("0@{}", cfg.main_core)];
        map.extend(
            cfg.workers
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{}@{c}", i + 1)),
        );
        let mut args = vec![
            format!("--lcores={}", map.join(",")),
            "--main-lcore".to_owned(),
            "0".to_owned(),
        ];
        args.extend(cfg.eal_args.iter().cloned());
        let queues = cfg.workers.len().max(1);
        for (i, p) in cfg.ports.iter().enumerate() {
            match vdev_name(&p.device) {
                Some(name) => {
                    let mut dev = p.device.clone();
                    if name.starts_with("net_af_packet") && !dev.contains("qpairs=") {
                        dev.push_str(&format!(",qpairs={queues}"));
                    }
                    args.push(format!("--vdev={dev}"));
                }
                None => {
                    args.push("-a".to_owned());
                    args.push(p.device.clone());
                }
            }
            if Self::exception_of(cfg, p) == Exception::Tap {
                args.push(format!("--vdev=net_tap{i},iface={}", tap_iface(&p.name)));
            }
        }
        args
    }

    /// The exception path a port gets.
    fn exception_of(cfg: &Config, p: &PortSpec) -> Exception {
        use anylb_conf::ExceptionPath as E;
        let af_packet = vdev_name(&p.device).is_some_and(|n| n.starts_with("net_af_packet"));
        match (p.exception, cfg.exception_taps) {
            (E::None, _) | (_, false) if af_packet => Exception::KernelSees,
            (E::None, _) | (_, false) => Exception::None,
            (E::Tap, true) => Exception::Tap,
            (E::Auto, true) if af_packet => Exception::KernelSees,
            (E::Auto, true) => {
                // Vdevs without a wire (null, ring, pcap) have nothing to exchange with a kernel.
                let wireless = vdev_name(&p.device).is_some_and(|n| {
                    ["net_null", "net_ring", "net_pcap"]
                        .iter()
                        .any(|x| n.starts_with(x))
                });
                if wireless {
                    Exception::None
                } else {
                    Exception::Tap
                }
            }
        }
    }

    /// Initialises the EAL, opens and starts every port, installs steering, and launches the workers with
    /// `first` as their snapshot builder: `first(macs)` builds the first snapshot from the ports' MACs.
    pub fn start(
        cfg: &Config,
        first: impl FnOnce(&[Mac]) -> Result<Snapshot, crate::snapshot::BuildError>,
    ) -> Result<Runtime, Error> {
        if cfg.workers.is_empty() {
            return Err(Error::NoWorkers);
        }
        let args = Self::eal_args(cfg);
        tracing::info!(args = %args.join(" "), "initialising the DPDK EAL");
        let eal = Eal::init(&args)?;
        let nworkers = cfg.workers.len();
        let pool = Arc::new(Mempool::new(
            &eal,
            "anylb_pool",
            cfg.mbufs,
            256,
            2048 + 128,
            dpdk_sys::socket_id(),
        )?);
        let ports = cfg
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| Self::open_port(&eal, cfg, i, p, &pool))
            .collect::<Result<Vec<_>, Error>>()?;
        let macs: Vec<Mac> = ports.iter().map(|p| p.mac).collect();
        let snap = Arc::new(first(&macs)?);

        // Steering of replies.
        let mut rules = Vec::new();
        let steering = if nworkers == 1 {
            Steering::SingleWorker
        } else {
            match Self::install_rules(&ports, &snap, nworkers) {
                Ok(r) => {
                    rules = r;
                    Steering::Flow
                }
                Err(e) => {
                    tracing::info!(reason = %e, "rte_flow steering not available; replies reach their worker over rings");
                    Steering::Software
                }
            }
        };
        tracing::info!(steering = ?steering, workers = nworkers, "reply steering");

        let rings = Self::rings(&eal, nworkers)?;
        let inject = (0..nworkers)
            .map(|w| Ring::new(&eal, &format!("al_inj{w}"), 1024))
            .collect::<Result<Vec<_>, _>>()?;
        let (senders, mut receivers): (Vec<_>, Vec<_>) = (0..nworkers).map(|_| mpsc::channel()).unzip();
        let (sync_in, mut sync_rxs): (Vec<_>, Vec<_>) = (0..nworkers).map(|_| mpsc::channel()).unzip();
        let (sync_out, sync_collected) = mpsc::channel();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(snap.generation),
            snapshot: Mutex::new(snap.clone()),
            published: (0..nworkers).map(|_| Published::new()).collect(),
            rings,
            inject,
            started: Instant::now(),
            started_wall_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            tx_refused: AtomicU64::new(0),
            neighbors: senders,
            sync_in,
            sync_out,
            sync_all: (0..nworkers).map(|_| AtomicBool::new(false)).collect(),
            reannounce: AtomicBool::new(false),
            port_names: cfg.ports.iter().map(|p| p.name.clone()).collect(),
            ask_req: (0..nworkers).map(|_| AtomicU64::new(0)).collect(),
            ask_resp: (0..nworkers).map(|_| Mutex::new(None)).collect(),
            conn_filter: Mutex::new(ConnFilter::default()),
        });
        let ports = Arc::new(ports);
        let mut lcores = Vec::new();
        for wid in 0..nworkers {
            let (shared, ports, pool, snap) = (shared.clone(), ports.clone(), pool.clone(), snap.clone());
            let lcore = wid as u32 + 1;
            let learned = receivers.remove(0);
            let synced = sync_rxs.remove(0);
            eal.launch(
                lcore,
                Box::new(move || Lcore::new(wid as u16, shared, ports, pool, snap, learned, synced).run()),
            )?;
            lcores.push(lcore);
        }
        Ok(Runtime {
            shared,
            _rules: rules,
            ports,
            pool,
            lcores,
            steering,
            inject_lock: Mutex::new(()),
            sync_collected: Mutex::new(sync_collected),
            ask_lock: Mutex::new(0),
            stopped: false,
            eal,
        })
    }

    /// Opens port `i` of the topology (`p`): one RX and TX queue per worker, MTU, promiscuous mode, and the TAP
    /// exception interface when it has one.
    fn open_port(eal: &Eal, cfg: &Config, i: usize, p: &PortSpec, pool: &Mempool) -> Result<OpenPort, Error> {
        let nworkers = cfg.workers.len();
        let name = match vdev_name(&p.device) {
            Some(n) => n.to_owned(),
            None => p.device.clone(),
        };
        let port = Port::by_name(eal, &name)?;
        let info = port.info()?;
        let pc = PortConfig {
            rx_queues: nworkers as u16,
            tx_queues: nworkers as u16,
            rss: true,
            rx_checksum: true,
            descriptors: cfg.descriptors,
        };
        if usize::from(info.max_rx_queues) < nworkers {
            return Err(Error::TooFewQueues {
                port: p.name.clone(),
                driver: info.driver.clone(),
                have: info.max_rx_queues,
                need: nworkers,
            });
        }
        let (rss, rx_csum) = port.configure(&pc, pool)?;
        if let Err(e) = port.set_mtu(p.mtu) {
            tracing::warn!(port = %p.name, error = %e, "MTU not set");
        }
        let _ = port.promiscuous();
        port.start()?;
        let mac = port.mac()?;
        let exception = Self::exception_of(cfg, p);
        let (tap, tap_name) = if exception == Exception::Tap {
            let iface = tap_iface(&p.name);
            let tap = Port::by_name(eal, &format!("net_tap{i}"))?;
            tap.configure(
                &PortConfig {
                    rx_queues: 1,
                    tx_queues: nworkers as u16,
                    rss: false,
                    rx_checksum: false,
                    descriptors: cfg.descriptors,
                },
                pool,
            )?;
            tap.start()?;
            Self::setup_tap(&iface, &mac, p).map_err(|source| Error::Tap {
                iface: iface.clone(),
                source,
            })?;
            (Some(tap), Some(iface))
        } else {
            (None, None)
        };
        tracing::info!(port = %p.name, driver = %info.driver, mac = %mac_str(&mac), rss, rx_checksum_offload = rx_csum,
            tx_checksum_offload_available = info.tx_checksum, exception = ?exception, "port started");
        Ok(OpenPort {
            name: p.name.clone(),
            port,
            mac,
            exception,
            tap,
            tap_iface: tap_name,
        })
    }

    /// One ring per ordered pair of workers, for frames one hands to another.
    fn rings(eal: &Eal, nworkers: usize) -> Result<Vec<Vec<Option<Ring>>>, Error> {
        let mut rings = Vec::new();
        for from in 0..nworkers {
            let mut row = Vec::new();
            for to in 0..nworkers {
                row.push(if from == to {
                    None
                } else {
                    Some(Ring::new(eal, &format!("al_r{from}_{to}"), 4096)?)
                });
            }
            rings.push(row);
        }
        Ok(rings)
    }

    /// Gives TAP interface `iface` the port's MAC, MTU and addresses, and brings it up.
    fn setup_tap(iface: &str, mac: &Mac, p: &PortSpec) -> Result<(), IpCmdError> {
        ip_cmd(&["link", "set", "dev", iface, "address", &mac_str(mac)])?;
        ip_cmd(&["link", "set", "dev", iface, "mtu", &p.mtu.to_string()])?;
        for (a, len) in &p.addresses {
            ip_cmd(&["addr", "replace", &format!("{a}/{len}"), "dev", iface])?;
        }
        ip_cmd(&["link", "set", "dev", iface, "up"])
    }

    fn install_rules(
        ports: &[OpenPort],
        snap: &Snapshot,
        workers: usize,
    ) -> Result<Vec<FlowRule>, dpdk_sys::Error> {
        let mask = snap.mask;
        let mut rules = Vec::new();
        for p in ports {
            for (lip, _, _) in &snap.lips {
                for proto in [6u8, 17] {
                    for w in 0..workers as u16 {
                        rules.push(p.port.steer(to_ip(lip), proto, mask, w, w)?);
                    }
                }
            }
        }
        Ok(rules)
    }

    /// How replies reach their worker.
    pub fn steering(&self) -> Steering {
        self.steering
    }

    /// Publishes a new snapshot; workers switch to it between bursts.
    pub fn publish(&self, snap: Snapshot) {
        let g = snap.generation;
        if let Ok(mut s) = self.shared.snapshot.lock() {
            *s = Arc::new(snap);
        }
        self.shared.generation.store(g, Ordering::Release);
    }

    /// The snapshot the workers forward with.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.shared.snapshot.lock().ok().map(|s| s.clone())
    }

    /// Counters of every worker.
    pub fn stats(&self) -> Vec<Stats> {
        self.shared.published.iter().map(Published::load).collect()
    }

    /// Milliseconds since each worker last published (a stalled worker's age grows).
    pub fn heartbeat_ages_ms(&self) -> Vec<u64> {
        let now = self.shared.started.elapsed().as_millis() as u64;
        self.heartbeats().iter().map(|b| now.saturating_sub(*b)).collect()
    }

    /// Each worker's last heartbeat, in milliseconds since the runtime started (it advances about every
    /// millisecond while the worker runs).
    pub fn heartbeats(&self) -> Vec<u64> {
        self.shared
            .published
            .iter()
            .map(|p| p.heartbeat.load(Ordering::Acquire))
            .collect()
    }

    /// The connection records the workers produced since the last call (for the node's sync task).
    pub fn sync_records(&self) -> Vec<Record> {
        self.sync_collected
            .lock()
            .map(|rx| rx.try_iter().collect())
            .unwrap_or_default()
    }

    /// Asks every worker for the records of all its synced connections again (a holder came back empty).
    pub fn resync_all(&self) {
        for f in &self.shared.sync_all {
            f.store(true, Ordering::Relaxed);
        }
    }

    /// Announces every VIP and local address again (gratuitous ARP / unsolicited NA): a node that served this
    /// one's addresses for a while is back to its own.
    pub fn announce_again(&self) {
        self.shared.reannounce.store(true, Ordering::Relaxed);
    }

    /// Gives other nodes' connection records to every worker (each applies them to its own table).
    pub fn apply_synced(&self, records: &[Record]) {
        for tx in &self.shared.sync_in {
            for r in records {
                let _ = tx.send(*r);
            }
        }
    }

    /// Frames the NIC refused to send (TX queue full), all workers.
    pub fn tx_refused(&self) -> u64 {
        self.shared.tx_refused.load(Ordering::Relaxed)
    }

    /// Ports with link state and NIC counters.
    pub fn ports(&self) -> Vec<PortStatus> {
        self.ports
            .iter()
            .map(|p| {
                let link = p.port.link().unwrap_or(dpdk_sys::Link {
                    up: false,
                    speed_mbps: 0,
                });
                let s = p.port.stats().unwrap_or_default();
                PortStatus {
                    name: p.name.clone(),
                    id: p.port.id(),
                    mac: mac_str(&p.mac),
                    link_up: link.up,
                    speed_mbps: link.speed_mbps,
                    exception: p.exception,
                    tap: p.tap_iface.clone(),
                    ipackets: s.ipackets,
                    opackets: s.opackets,
                    imissed: s.imissed,
                    ibytes: s.ibytes,
                    obytes: s.obytes,
                    ierrors: s.ierrors,
                    oerrors: s.oerrors,
                    rx_nombuf: s.rx_nombuf,
                }
            })
            .collect()
    }

    /// Asks every worker `q` (each answers between bursts); waits at most 500 ms, and logs which workers it
    /// leaves out then. One question at a time; a late answer to an earlier question is dropped, not taken for
    /// this one's.
    fn ask(&self, q: Question, filter: Option<ConnFilter>) -> Vec<Answer> {
        let mut last = self.ask_lock.lock().unwrap_or_else(|e| e.into_inner());
        *last = last.wrapping_add(1);
        let seq = *last;
        if let (Some(f), Ok(mut slot)) = (filter, self.shared.conn_filter.lock()) {
            *slot = f;
        }
        let n = self.shared.ask_req.len();
        for r in &self.shared.ask_req {
            r.store(q.encode(seq), Ordering::Release);
        }
        let mut out = Vec::new();
        let mut got = vec![false; n];
        let end = Instant::now() + Duration::from_millis(500);
        while got.iter().any(|g| !g) && Instant::now() < end {
            for (i, slot) in self.shared.ask_resp.iter().enumerate() {
                if got[i] {
                    continue;
                }
                if let Some(a) = ask::take(slot, seq) {
                    out.push(a);
                    got[i] = true;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let missing: Vec<usize> = (0..n).filter(|&i| !got[i]).collect();
        if !missing.is_empty() {
            tracing::warn!(question = ?q, workers = ?missing, "workers did not answer within 500 ms; the answer leaves them out");
        }
        out
    }

    /// Up to `limit` connections that match `filter` over every worker, and how many match in all.
    pub fn connections(&self, filter: ConnFilter, limit: usize) -> (Vec<ConnInfo>, usize) {
        let q = Question::Conns(u32::try_from(limit.max(1)).unwrap_or(u32::MAX));
        let mut out = Vec::new();
        let mut matched = 0;
        for a in self.ask(q, Some(filter)) {
            if let Answer::Conns(v, m) = a {
                out.extend(v);
                matched += m;
            }
        }
        out.truncate(limit);
        (out, matched)
    }

    /// Services' and backends' connections and traffic, and the local addresses' ports, over all workers.
    pub fn counters(&self) -> NodeCounters {
        let workers: Vec<WorkerCounters> = self
            .ask(Question::Counters, None)
            .into_iter()
            .filter_map(|a| match a {
                Answer::Counters(c) => Some(c),
                _ => None,
            })
            .collect();
        match self.current() {
            Some(snap) => merge(&snap, &workers),
            None => NodeCounters::default(),
        }
    }

    /// The neighbour tables of all workers, merged by port and address (resolved if any worker resolved it).
    pub fn neighbors(&self) -> Vec<NeighInfo> {
        let mut merged: Vec<NeighInfo> = Vec::new();
        for a in self.ask(Question::Neighbors, None) {
            let Answer::Neighbors(v) = a else { continue };
            for n in v {
                match merged
                    .iter_mut()
                    .find(|m| m.port == n.port && m.address == n.address)
                {
                    Some(m) => {
                        m.workers += 1;
                        m.held += n.held;
                        if m.mac.is_none() {
                            m.mac = n.mac;
                            m.state = n.state;
                        }
                    }
                    None => merged.push(n),
                }
            }
        }
        merged.sort_by(|a, b| (&a.port, a.address).cmp(&(&b.port, b.address)));
        merged
    }

    /// Hands frames to worker `worker` as if received on topology port `port` (control-plane injection and
    /// tests). Returns how many were queued.
    pub fn inject(&self, worker: usize, port: u16, frames: &[Vec<u8>]) -> usize {
        let _g = self.inject_lock.lock();
        let Some(ring) = self.shared.inject.get(worker) else {
            return 0;
        };
        let Some(dpdk_port) = self.ports.get(usize::from(port)).map(|p| p.port.id()) else {
            return 0;
        };
        let mut batch = Vec::new();
        for f in frames {
            let Some(mut m) = self.pool.alloc() else { break };
            if !m.append(f.len()) {
                continue;
            }
            m.data_mut().copy_from_slice(f);
            m.set_port(dpdk_port);
            batch.push(m);
        }
        ring.enqueue(&mut batch)
    }

    /// Stops the workers and the ports.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.shared.stop.store(true, Ordering::SeqCst);
        for &l in &self.lcores {
            let r = self.eal.wait(l);
            tracing::info!(lcore = l, exit = r, "worker stopped");
        }
        for p in self.ports.iter() {
            let _ = p.port.stop();
            if let Some(t) = &p.tap {
                let _ = t.stop();
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Waits up to `timeout` for `f` to hold, polling every 10 ms.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
