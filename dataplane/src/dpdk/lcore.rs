//! A worker on its lcore: the burst loop over its RX queues, the TAPs (worker 0), reply steering between
//! workers, snapshot switches, neighbours learnt elsewhere, connection-sync records in and out, the control
//! thread's questions, counter publishing and adaptive idling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use dpdk_sys::{Mbuf, Mempool, Port};

use super::ask::{Answer, Question};
use super::{NeighInfo, OpenPort, PoolAlloc, Shared};
use crate::cluster::record::Record;
use crate::flow::{to_ip, Addr};
use crate::snapshot::Snapshot;
use crate::wire::ethernet::Mac;
use crate::worker::{Output, Worker};

/// Worker 0 reads the TAPs (the kernel's frames) every this many turns of its loop.
const TAP_EVERY: u32 = 8;

/// Empty polls before an idle worker starts napping.
const IDLE_SPINS: u32 = 1024;
/// How long an idle worker naps between polls.
const IDLE_NAP: Duration = Duration::from_micros(100);

/// Frames sent per port and TX queue, or released when the NIC refuses them (counted). Nothing to send, no
/// call: most of a loop's port and TAP queues are empty.
fn send(port: &Port, queue: u16, frames: impl ExactSizeIterator<Item = Mbuf>, failed: &AtomicU64) {
    if frames.len() == 0 {
        return;
    }
    let refused = port.tx_all(queue, frames);
    if refused > 0 {
        failed.fetch_add(refused as u64, Ordering::Relaxed);
    }
}

/// A worker's state on its lcore: the engine, its buffers, and what it shares with the runtime.
pub(super) struct Lcore {
    wid: u16,
    shared: Arc<Shared>,
    ports: Arc<Vec<OpenPort>>,
    learned: mpsc::Receiver<(u16, Addr, Mac)>,
    synced: mpsc::Receiver<Record>,
    /// DPDK port id → topology port index.
    by_id: Vec<u16>,
    generation: u64,
    w: Worker<Mbuf>,
    alloc: PoolAlloc,
    out: Output<Mbuf>,
    rx: Vec<Mbuf>,
    run: Vec<Mbuf>,
    per_port_tx: Vec<Vec<Mbuf>>,
    per_port_kernel: Vec<Vec<Mbuf>>,
    per_worker: Vec<Vec<Mbuf>>,
    last_publish: u64,
    idle: u32,
    loops: u32,
    tap_busy: bool,
}

impl Lcore {
    pub(super) fn new(
        wid: u16,
        shared: Arc<Shared>,
        ports: Arc<Vec<OpenPort>>,
        pool: Arc<Mempool>,
        first: Arc<Snapshot>,
        learned: mpsc::Receiver<(u16, Addr, Mac)>,
        synced: mpsc::Receiver<Record>,
    ) -> Lcore {
        let nports = ports.len();
        let max_id = ports.iter().map(|p| usize::from(p.port.id())).max().unwrap_or(0);
        let mut by_id = vec![u16::MAX; max_id + 1];
        for (i, p) in ports.iter().enumerate() {
            by_id[usize::from(p.port.id())] = i as u16;
        }
        let nworkers = shared.published.len();
        let generation = first.generation;
        let mut w = Worker::new(wid, first);
        w.set_wall_clock(shared.started_wall_ms);
        Lcore {
            wid,
            generation,
            w,
            alloc: PoolAlloc(pool),
            out: Output::new(false),
            rx: Vec::with_capacity(64),
            run: Vec::with_capacity(32),
            per_port_tx: (0..nports).map(|_| Vec::with_capacity(64)).collect(),
            per_port_kernel: (0..nports).map(|_| Vec::with_capacity(64)).collect(),
            per_worker: (0..nworkers).map(|_| Vec::new()).collect(),
            by_id,
            shared,
            ports,
            learned,
            synced,
            last_publish: 0,
            idle: 0,
            loops: 0,
            tap_busy: false,
        }
    }

    /// The worker's loop on its lcore until the runtime stops.
    pub(super) fn run(mut self) -> i32 {
        tracing::info!(worker = self.wid, lcore = dpdk_sys::lcore_id(), "worker running");
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now_ms = self.shared.started.elapsed().as_millis() as u64;
            self.follow_snapshot();
            let busy = self.receive(now_ms) | self.receive_rings(now_ms) | self.forward_taps();
            if !busy {
                self.w.poll(now_ms, &mut self.alloc, &mut self.out);
            }
            self.dispatch();
            self.answer(now_ms);
            self.pace(busy);
        }
        let now_ms = self.shared.started.elapsed().as_millis() as u64;
        self.shared.published[usize::from(self.wid)].store(&self.w.stats, now_ms);
        0
    }

    /// Switches to the newest published snapshot.
    fn follow_snapshot(&mut self) {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            if let Ok(s) = self.shared.snapshot.lock() {
                self.w.set_snapshot(s.clone());
            }
            self.generation = g;
        }
    }

    /// A burst from this worker's queue of every port; whether anything came.
    fn receive(&mut self, now_ms: u64) -> bool {
        let mut busy = false;
        for (pi, p) in self.ports.iter().enumerate() {
            self.rx.clear();
            if p.port.rx_burst(self.wid, &mut self.rx, 32) > 0 {
                busy = true;
                self.w.process(
                    now_ms,
                    pi as u16,
                    self.rx.drain(..),
                    &mut self.alloc,
                    &mut self.out,
                );
            }
        }
        busy
    }

    /// Frames from other workers and from the control thread; they keep their input port in the mbuf.
    fn receive_rings(&mut self, now_ms: u64) -> bool {
        let mut busy = false;
        let wid = usize::from(self.wid);
        let sources = self
            .shared
            .rings
            .iter()
            .filter_map(|row| row[wid].as_ref())
            .chain(std::iter::once(&self.shared.inject[wid]));
        for ring in sources {
            self.rx.clear();
            if ring.dequeue(&mut self.rx, 32) > 0 {
                busy = true;
                // One engine call per run of frames from the same port (timers run once per call).
                let mut frames = self.rx.drain(..).peekable();
                while let Some(first) = frames.next() {
                    let port = self.by_id.get(usize::from(first.port())).copied().unwrap_or(0);
                    let id = first.port();
                    self.run.push(first);
                    while let Some(m) = frames.next_if(|m| m.port() == id) {
                        self.run.push(m);
                    }
                    self.w
                        .process(now_ms, port, self.run.drain(..), &mut self.alloc, &mut self.out);
                }
            }
        }
        busy
    }

    /// The kernel's frames leave through their port (worker 0 polls the TAPs). Reading a TAP is a system call,
    /// so it is polled every TAP_EVERY turns of the loop, and again at once while it has frames.
    fn forward_taps(&mut self) -> bool {
        self.loops = self.loops.wrapping_add(1);
        if self.wid != 0 || !(self.tap_busy || self.loops % TAP_EVERY == 0) {
            return false;
        }
        self.tap_busy = false;
        for p in self.ports.iter() {
            if let Some(tap) = &p.tap {
                self.rx.clear();
                if tap.rx_burst(0, &mut self.rx, 32) > 0 {
                    self.tap_busy = true;
                    send(&p.port, self.wid, self.rx.drain(..), &self.shared.tx_refused);
                }
            }
        }
        self.tap_busy
    }

    /// Sends what the engine produced: frames by port, the kernel's to the TAPs, other workers' over rings,
    /// learnt neighbours to the other workers (and theirs into this one).
    fn dispatch(&mut self) {
        let wid = usize::from(self.wid);
        // A burst's frames nearly always leave by one port: then they go straight from the engine's output to
        // the NIC, else they are grouped by port first.
        let one_port = match self.out.tx.first() {
            Some(&(p, _)) if self.out.tx.iter().all(|&(q, _)| q == p) => self.ports.get(usize::from(p)),
            _ => None,
        };
        if let Some(p) = one_port {
            send(
                &p.port,
                self.wid,
                self.out.tx.drain(..).map(|(_, f)| f),
                &self.shared.tx_refused,
            );
        }
        for (port, f) in self.out.tx.drain(..) {
            if let Some(v) = self.per_port_tx.get_mut(usize::from(port)) {
                v.push(f);
            }
        }
        for (port, f) in self.out.kernel.drain(..) {
            if let Some(v) = self.per_port_kernel.get_mut(usize::from(port)) {
                v.push(f);
            }
        }
        for (to, f) in self.out.redirect.drain(..) {
            if let Some(v) = self.per_worker.get_mut(usize::from(to)) {
                v.push(f);
            }
        }
        for n in self.out.learned.drain(..) {
            for (i, tx) in self.shared.neighbors.iter().enumerate() {
                if i != wid {
                    let _ = tx.send(n);
                }
            }
        }
        // Read first: a swap on every loop would take the cache line from the control thread each time.
        let reannounce = &self.shared.reannounce;
        if self.wid == 0 && reannounce.load(Ordering::Relaxed) && reannounce.swap(false, Ordering::Relaxed) {
            self.w.announce_all();
        }
        let resync = &self.shared.sync_all[usize::from(self.wid)];
        if resync.load(Ordering::Relaxed) && resync.swap(false, Ordering::Relaxed) {
            self.w.resync_all(&mut self.out);
        }
        for r in self.out.sync.drain(..) {
            let _ = self.shared.sync_out.send(r);
        }
        while let Ok(r) = self.synced.try_recv() {
            self.w.apply_synced(&r);
        }
        while let Ok((port, a, mac)) = self.learned.try_recv() {
            self.w.learn_neighbor(port, &a, mac, &mut self.out);
        }
        for (pi, p) in self.ports.iter().enumerate() {
            send(
                &p.port,
                self.wid,
                self.per_port_tx[pi].drain(..),
                &self.shared.tx_refused,
            );
            match &p.tap {
                Some(tap) => send(
                    tap,
                    self.wid,
                    self.per_port_kernel[pi].drain(..),
                    &self.shared.tx_refused,
                ),
                None => self.per_port_kernel[pi].clear(),
            }
        }
        for (to, frames) in self.per_worker.iter_mut().enumerate() {
            if frames.is_empty() {
                continue;
            }
            if let Some(Some(ring)) = self.shared.rings[wid].get(to) {
                ring.enqueue(frames);
            }
            frames.clear();
        }
    }

    /// Answers the control thread's question, if any, and publishes the counters once a millisecond.
    fn answer(&mut self, now_ms: u64) {
        let wid = usize::from(self.wid);
        // Read first: the workers' request words share a cache line, and a swap on every turn of the loop
        // would write it, taking the line from the other workers each time.
        let req = &self.shared.ask_req[wid];
        let asked = if req.load(Ordering::Relaxed) == 0 {
            None
        } else {
            Question::decode(req.swap(0, Ordering::AcqRel))
        };
        if let Some((seq, q)) = asked {
            let answer = match q {
                Question::Neighbors => Answer::Neighbors(sample_neighbors(&self.w, &self.shared.port_names)),
                Question::Counters => Answer::Counters(self.w.counters()),
                Question::Conns(limit) => {
                    let filter = self
                        .shared
                        .conn_filter
                        .lock()
                        .map(|f| f.clone())
                        .unwrap_or_default();
                    let (v, matched) =
                        super::conns::sample(&self.w, self.wid, &filter, limit as usize, now_ms);
                    Answer::Conns(v, matched)
                }
            };
            if let Ok(mut slot) = self.shared.ask_resp[wid].lock() {
                *slot = Some((seq, answer));
            }
        }
        if now_ms != self.last_publish {
            self.shared.published[wid].store(&self.w.stats, now_ms);
            self.last_publish = now_ms;
        }
    }

    /// Adaptive idle: a worker with nothing to do for a while naps briefly, so that on shared cores (small
    /// machines, several nodes on one host) the kernel, FRR and the backends get CPU. A busy worker never
    /// sleeps; an idle one answers within about IDLE_NAP.
    fn pace(&mut self, busy: bool) {
        if busy {
            self.idle = 0;
        } else {
            self.idle += 1;
            if self.idle >= IDLE_SPINS {
                std::thread::sleep(IDLE_NAP);
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// A worker's neighbour table, for the CLI.
fn sample_neighbors(w: &Worker<Mbuf>, port_names: &[String]) -> Vec<NeighInfo> {
    w.neighbors()
        .entries()
        .map(|e| NeighInfo {
            port: port_names
                .get(usize::from(e.port))
                .cloned()
                .unwrap_or_else(|| e.port.to_string()),
            address: to_ip(&e.addr),
            mac: e
                .mac
                .map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")),
            state: match (e.is_static, e.mac) {
                (true, _) => "static",
                (false, Some(_)) => "reachable",
                (false, None) => "incomplete",
            },
            workers: 1,
            held: e.held(),
        })
        .collect()
}
