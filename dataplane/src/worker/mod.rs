//! One worker's pipeline: a burst of Ethernet frames in; frames to transmit, frames for the kernel, frames for
//! other workers and counted drops out. Sans-IO: the caller owns the clock and the packet I/O, so the same code
//! runs under DPDK, in tests and in `anylb replay`.
//!
//! Per frame: Ethernet (one 802.1Q tag) → ARP, IPv4 or IPv6 (extension headers walked) → for a VIP or a local
//! address, the connection table: an existing connection is translated and forwarded; a new TCP SYN or UDP flow
//! to a service gets a backend from the scheduler and a local address and port from the pool. The small stack
//! answers ARP and neighbour solicitations for VIPs and local addresses and echo requests to them, resolves next
//! hops (holding a few frames meanwhile), sends ICMP time-exceeded and too-big errors, and translates ICMP
//! errors about NATed flows back to the client. Everything addressed to the node's own addresses, or to nothing
//! the dataplane serves, goes to the kernel.

use std::sync::Arc;

use crate::conn::{Conn, ConnTable, FLAG_POOLED, FLAG_SNAT};
use crate::flow::{Addr, FastMap, Tuple};
use crate::frag::{FragTable, Limits};
use crate::frame::{Frame, FrameAlloc};
use crate::neigh::Neighbors;
use crate::pool::Pools;
use crate::sched::{self};
use crate::snapshot::{Local, Snapshot, TICK_MS};
use crate::stats::{BackendCounters, DropReason, Stats};
use crate::tcp_state::Dir;
use crate::wire::ethernet::{self, ethertype, Mac};

mod admit;
mod cla;
mod counters;
mod direct;
mod fast;
mod frag;
mod fullnat;
mod held;
mod icmp_in;
mod icmp_msg;
mod ip;
mod output;
mod peer;
mod pkt;
mod setup;
mod snat;
mod stack;
mod sync;
mod synproxy;

pub use output::{Output, Verdict};
use pkt::{drop, Hop, ICMP_BURST, NO_HOP};

/// Most connections expired per burst.
const EXPIRE_BUDGET: usize = 256;
/// One worker.
#[derive(Debug)]
pub struct Worker<F: Frame> {
    /// Worker number (its port slice).
    pub id: u16,
    snap: Arc<Snapshot>,
    conns: ConnTable,
    pools: Pools,
    /// One pool per source-NAT rule, parallel to `Snapshot::snat`.
    snat_pools: Vec<Pools>,
    neigh: Neighbors<F>,
    sched: Vec<sched::State>,
    backends: Vec<BackendCounters>,
    /// Which connection the fragments of each datagram in flight belong to.
    frags: FragTable<F>,
    frags_swept: u64,
    /// New-connection buckets by service index, and by (service, client) for per-client limits.
    buckets: Vec<Option<admit::Bucket>>,
    client_buckets: FastMap<(u16, Addr), admit::Bucket>,
    /// Backends (by uid) over their upper threshold and not yet back under their lower one.
    overload: Vec<bool>,
    /// New flows refused, by service.
    refused: FastMap<crate::counters::ServiceKey, crate::counters::Refused>,
    persist: FastMap<(u16, Addr), (u16, u32)>,
    /// Client segments of SYN-proxied connections waiting for their backend's SYN-ACK.
    held: held::Held<F>,
    /// Wall-clock milliseconds since the Unix epoch at clock 0 (SYN cookies' time slots).
    wall_ms_at_zero: u64,
    /// Counters.
    pub stats: Stats,
    epoch_ms: Option<u64>,
    now_ms: u64,
    tick: u32,
    ident: u16,
    route_gen: u16,
    announce: Vec<(u16, Addr)>,
    icmp_tokens: u32,
    icmp_refill_ms: u64,
    burst: Vec<F>,
    /// What warming read of each frame of the current burst (keys and hashes; the tuples of frames other than
    /// plain IPv4), and the position in it.
    hints: Vec<fast::Hint>,
    hint_tuples: Vec<Tuple>,
    cur: usize,
    /// Whether a plain IPv4 destination is a VIP or local address here, the last one asked for in each
    /// direction (inbound, reply), for the current snapshot.
    local_v4: [Option<([u8; 4], bool)>; 2],
    /// Whether established packets may take [`Worker::fast`] (tests compare both paths).
    fast_path: bool,
    /// Whether unicast frames for other MACs are dropped (off in `anylb replay`, whose captures carry the real
    /// NIC's MAC).
    mac_filter: bool,
}

impl<F: Frame> Worker<F> {
    /// Worker `id` with the first snapshot; its connection table is sized from the snapshot.
    pub fn new(id: u16, snap: Arc<Snapshot>) -> Self {
        let conns = ConnTable::new(snap.conn_capacity, snap.seed ^ 0x636f_6e6e);
        let mut w = Worker {
            id,
            pools: Pools::default(),
            snat_pools: Vec::new(),
            conns,
            neigh: Neighbors::default(),
            sched: Vec::new(),
            backends: Vec::new(),
            frags: FragTable::new(Limits::default()),
            frags_swept: 0,
            buckets: Vec::new(),
            client_buckets: FastMap::default(),
            overload: Vec::new(),
            refused: FastMap::default(),
            persist: FastMap::default(),
            held: held::Held::default(),
            wall_ms_at_zero: 0,
            stats: Stats::default(),
            epoch_ms: None,
            now_ms: 0,
            tick: 0,
            ident: 0,
            route_gen: 0,
            announce: Vec::new(),
            icmp_tokens: ICMP_BURST,
            icmp_refill_ms: 0,
            burst: Vec::new(),
            hints: Vec::new(),
            hint_tuples: Vec::new(),
            cur: 0,
            local_v4: [None; 2],
            fast_path: true,
            mac_filter: true,
            snap: snap.clone(),
        };
        w.apply(None, &snap);
        w.snap = snap;
        w
    }

    /// Sets the wall-clock time (ms since the Unix epoch) at which the clock given to
    /// [`process`](Self::process) reads 0; 0 (the default) takes that clock as wall-clock time itself (replay).
    pub fn set_wall_clock(&mut self, wall_ms_at_zero: u64) {
        self.wall_ms_at_zero = wall_ms_at_zero;
    }

    /// Lets established packets take the fast path (the default) or sends every packet through the general
    /// path; both must give the same result, which the tests check.
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// Drops unicast frames addressed to other MACs (the default), or takes every frame (offline replay of a
    /// capture taken on a NIC whose MAC the topology does not name).
    pub fn set_mac_filter(&mut self, on: bool) {
        self.mac_filter = on;
    }

    /// Switches to a new snapshot. Connections keep their translations; local addresses that remain keep their
    /// ports; new VIPs and local addresses are announced (gratuitous ARP / unsolicited NA) by worker 0.
    pub fn set_snapshot(&mut self, snap: Arc<Snapshot>) {
        let old = self.snap.clone();
        self.apply(Some(&old), &snap);
        self.snap = snap;
        self.local_v4 = [None; 2];
    }

    fn apply(&mut self, old: Option<&Snapshot>, snap: &Snapshot) {
        self.frags.set_limits(snap.fragments);
        if old.is_none_or(|o| o.lips != snap.lips) {
            self.pools.update(&snap.lips, self.id, snap.mask);
        }
        self.snat_pools.resize_with(snap.snat.len(), Pools::default);
        for (pool, rule) in self.snat_pools.iter_mut().zip(&snap.snat) {
            pool.update(&rule.pool, self.id, snap.mask);
        }
        self.sched = vec![sched::State::default(); snap.services.len()];
        if old.is_none_or(|o| o.routes.len() != snap.routes.len() || o.generation != snap.generation) {
            self.route_gen = self.route_gen.wrapping_add(1);
        }
        for &(port, a, mac) in &snap.static_neighbors {
            // Frames held for a neighbour that becomes static are sent with the next resolution attempt.
            let _held = self.neigh.set_static(port, &a, mac);
        }
        if self.id == 0 {
            for (a, kind) in snap.local.iter() {
                // New here, or answered for only now (a local address withheld or released before).
                let fresh = old.is_none_or(|o| o.local(&a) != Some(kind));
                if fresh && matches!(kind, Local::Vip | Local::Lip) {
                    if let Some(port) = self.port_for(snap, &a) {
                        self.announce.push((port, a));
                    }
                }
            }
            self.announce.sort_unstable();
        }
        self.persist.clear();
    }

    /// Announces every VIP and local address again (gratuitous ARP / unsolicited NA) with the next poll: another
    /// node that served them for a while may have pointed the neighbours' caches at itself.
    pub fn announce_all(&mut self) {
        let snap = self.snap.clone();
        for (a, kind) in snap.local.iter() {
            if matches!(kind, Local::Vip | Local::Lip) {
                if let Some(port) = self.port_for(&snap, &a) {
                    self.announce.push((port, a));
                }
            }
        }
        self.announce.sort_unstable();
        self.announce.dedup();
    }

    /// The port whose subnet holds `a`, else the first port.
    fn port_for(&self, snap: &Snapshot, a: &Addr) -> Option<u16> {
        if snap.ports.is_empty() {
            return None;
        }
        Some(
            snap.routes
                .next_hop(a, 0)
                .filter(|h| h.via.is_none())
                .map_or(0, |h| h.port),
        )
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// The connection table.
    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    /// The neighbour table.
    pub fn neighbors(&self) -> &Neighbors<F> {
        &self.neigh
    }

    /// Learns a neighbour another worker resolved; frames held for it are sent.
    pub fn learn_neighbor(&mut self, port: u16, a: &Addr, mac: Mac, out: &mut Output<F>) {
        if let Some((_, frames)) = self.neigh.learn(port, a, mac, false) {
            self.flush_held(port, mac, frames, out);
        }
    }

    /// The connection-table tick of time `now_ms` (for showing expiries).
    pub fn tick_at(&self, now_ms: u64) -> u32 {
        let epoch = self.epoch_ms.unwrap_or(now_ms);
        u32::try_from(now_ms.saturating_sub(epoch) / TICK_MS).unwrap_or(u32::MAX)
    }

    fn set_clock(&mut self, now_ms: u64) {
        let epoch = *self.epoch_ms.get_or_insert(now_ms);
        self.now_ms = now_ms;
        self.tick = u32::try_from(now_ms.saturating_sub(epoch) / TICK_MS).unwrap_or(u32::MAX);
    }

    /// Processes a burst received on `in_port` at `now_ms`, and runs timers (expiry, announcements).
    pub fn process<A: FrameAlloc<F = F>>(
        &mut self,
        now_ms: u64,
        in_port: u16,
        frames: impl IntoIterator<Item = F>,
        alloc: &mut A,
        out: &mut Output<F>,
    ) {
        self.set_clock(now_ms);
        self.timers(alloc, out);
        let mut burst = std::mem::take(&mut self.burst);
        burst.extend(frames);
        self.warm(&burst);
        let port_mac = self.snap.ports.get(usize::from(in_port)).map(|p| p.mac);
        for (i, f) in burst.drain(..).enumerate() {
            self.cur = i;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += f.data().len() as u64;
            let v = if !self.addressed_here(port_mac, f.data()) {
                drop(DropReason::OtherMac)
            } else {
                match self.fast(f, alloc, out) {
                    Ok(v) => v,
                    Err(f) => self.handle(in_port, f, alloc, out),
                }
            };
            if let Verdict::Drop { reason } = v {
                self.stats.drop(reason);
            }
            if out.record {
                out.verdicts.push(v);
            }
        }
        self.burst = burst;
        self.stats.connections = self.conns.len() as u64;
    }

    /// Whether a frame received on a port of MAC `port_mac` is for this node: broadcast, multicast, or unicast
    /// to that MAC. Ports see every frame on their segment (promiscuous, or a switch flooding an unknown
    /// destination); a frame for another station must not be forwarded a second time.
    #[inline]
    fn addressed_here(&self, port_mac: Option<Mac>, d: &[u8]) -> bool {
        match (d.get(..6), port_mac) {
            (Some(dst), Some(mac)) => !self.mac_filter || dst[0] & 1 != 0 || dst == mac,
            // Too short for a MAC (dropped as malformed later) or an unknown port: not this check's business.
            _ => true,
        }
    }

    /// Runs timers without traffic (idle polls).
    pub fn poll<A: FrameAlloc<F = F>>(&mut self, now_ms: u64, alloc: &mut A, out: &mut Output<F>) {
        self.set_clock(now_ms);
        self.timers(alloc, out);
        self.stats.connections = self.conns.len() as u64;
    }

    fn timers<A: FrameAlloc<F = F>>(&mut self, alloc: &mut A, out: &mut Output<F>) {
        let (pools, snat_pools, counts, stats) = (
            &mut self.pools,
            &mut self.snat_pools,
            &mut self.backends,
            &mut self.stats,
        );
        let synced_out = &mut out.sync;
        let sync_on = self.snap.sync.is_some();
        let tick = self.tick;
        let n = self.conns.expire(self.tick, EXPIRE_BUDGET, |c| {
            if sync_on {
                sync::gone(c, tick, synced_out);
            }
            release(c, pools, snat_pools, counts)
        });
        stats.expired_connections += n as u64;
        let tick = self.tick;
        if self.persist.len() > 4096 {
            self.persist.retain(|_, (_, exp)| *exp > tick);
        }
        // Fragment entries and held SYN-proxy segments are swept every 100 ms (their timeouts are seconds).
        if (!self.frags.is_empty() || !self.held.is_empty()) && self.now_ms >= self.frags_swept + 100 {
            self.frags_swept = self.now_ms;
            for _ in self.frags.expire(self.now_ms) {
                self.stats.drop(DropReason::FragmentTimeout);
            }
            self.sweep_held();
        }
        for (port, a) in std::mem::take(&mut self.announce) {
            if let Some(f) = self.announcement(alloc, port, &a) {
                self.tx(port, f, out);
            }
        }
    }

    #[inline(always)]
    fn tx(&mut self, port: u16, f: F, out: &mut Output<F>) {
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += f.data().len() as u64;
        out.tx.push((port, f));
    }

    fn handle<A: FrameAlloc<F = F>>(
        &mut self,
        in_port: u16,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let Ok(eth) = ethernet::Frame::new_checked(f.data()) else {
            return drop(DropReason::Malformed);
        };
        let (l3, et) = (eth.header_len(), eth.ethertype());
        match et {
            ethertype::ARP => self.arp(in_port, f, l3, out),
            ethertype::IPV4 => self.ipv4(in_port, f, l3, alloc, out),
            ethertype::IPV6 => self.ipv6(in_port, f, l3, alloc, out),
            _ => self.kernel(in_port, f, out),
        }
    }

    /// Hands a frame to worker `o`, which owns its connection.
    fn redirect(&mut self, o: u16, f: F, out: &mut Output<F>) -> Verdict {
        self.stats.redirected += 1;
        out.redirect.push((o, f));
        Verdict::Redirect { worker: o }
    }

    /// Hands a frame to the kernel (the exception path).
    fn kernel(&mut self, in_port: u16, f: F, out: &mut Output<F>) -> Verdict {
        self.stats.to_kernel += 1;
        out.kernel.push((in_port, f));
        Verdict::Kernel
    }

    /// The neighbour slot towards `dst` for connection `idx` in direction `dir`, cached in the connection until
    /// the routes change.
    fn next_hop(&mut self, idx: u32, c: &Conn, dir: Dir, dst: &Addr) -> Option<Hop> {
        let cached = match dir {
            Dir::Inbound => c.nh_fwd,
            Dir::Reply => c.nh_rev,
        };
        if cached != NO_HOP && c.route_gen == self.route_gen {
            return self.hop(u32::from(cached));
        }
        let hop = self.resolve(dst, c.inbound_tuple().hash(self.snap.seed))?;
        let s = u16::try_from(hop.slot).unwrap_or(NO_HOP);
        let cm = self.conns.get_mut(idx);
        if cm.route_gen != self.route_gen {
            cm.nh_fwd = NO_HOP;
            cm.nh_rev = NO_HOP;
            cm.route_gen = self.route_gen;
        }
        match dir {
            Dir::Inbound => cm.nh_fwd = s,
            Dir::Reply => cm.nh_rev = s,
        }
        Some(hop)
    }

    /// The hop of neighbour-table slot `slot`.
    fn hop(&self, slot: u32) -> Option<Hop> {
        self.neigh.get(slot).map(|e| Hop { port: e.port, slot })
    }

    /// Route lookup and neighbour slot for `dst`.
    fn resolve(&mut self, dst: &Addr, flow_hash: u64) -> Option<Hop> {
        let hop = self.snap.routes.next_hop(dst, flow_hash)?;
        let nh = hop.via.unwrap_or(*dst);
        let slot = self.neigh.slot(hop.port, &nh)?;
        Some(Hop { port: hop.port, slot })
    }

    /// Writes the Ethernet header (IPv6 or IPv4 after it) before `l3` for the hop's port and sends, or holds the
    /// frame until the hop's neighbour resolves.
    fn emit<A: FrameAlloc<F = F>>(
        &mut self,
        hop: Hop,
        l3: usize,
        v6: bool,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let Hop { port, slot } = hop;
        let et = if v6 { ethertype::IPV6 } else { ethertype::IPV4 };
        let Some(pt) = self.snap.ports.get(usize::from(port)) else {
            return drop(DropReason::NoRoute);
        };
        let (src, vlan) = (pt.mac, pt.vlan);
        let want = if vlan.is_some() {
            ethernet::TAGGED_HEADER_LEN
        } else {
            ethernet::HEADER_LEN
        };
        if l3 > want {
            f.adj(l3 - want);
        } else if l3 < want && !f.prepend(want - l3) {
            return drop(DropReason::NoBuffer);
        }
        let mac = self.neigh.mac(slot);
        ethernet::Repr {
            dst: mac.unwrap_or([0; 6]),
            src,
            vlan,
            ethertype: et,
        }
        .emit(f.data_mut());
        match mac {
            Some(_) => {
                self.tx(port, f, out);
                Verdict::Forward { port }
            }
            None => {
                let target = self.neigh.get(slot).map(|e| e.addr);
                if self.neigh.hold(slot, f).is_err() {
                    return drop(DropReason::Unresolved);
                }
                if let Some(t) = target {
                    if self.neigh.should_solicit(slot, self.now_ms) {
                        if let Some(s) = self.solicitation(alloc, port, &t) {
                            self.tx(port, s, out);
                        }
                    }
                }
                Verdict::Held
            }
        }
    }
}

/// Gives back what a removed connection held: its pool port and its count on the backend.
pub(super) fn release(c: &Conn, pools: &mut Pools, snat_pools: &mut [Pools], counts: &mut [BackendCounters]) {
    if c.flags & FLAG_POOLED != 0 {
        pools.release(&c.lip(), c.proto, c.lport);
    }
    if c.flags & FLAG_SNAT != 0 {
        // Release ignores addresses a pool does not hold.
        for p in snat_pools.iter_mut() {
            p.release(&c.lip(), c.proto, c.lport);
        }
    }
    counters::count_close(c, counts);
}
