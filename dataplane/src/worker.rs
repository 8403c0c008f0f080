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

use anylb_conf::{ClientAddress, Forwarding};

use crate::client_addr;
use crate::conn::{
    Conn, ConnTable, InsertError, CLA_NONE, CLA_PP_ACKED, CLA_PP_PENDING, CLA_PP_SENT, CLA_TOA, CLA_TOA_DONE,
    FLAG_BACKEND_V6, FLAG_CLIENT_V6, FLAG_POOLED, FLAG_SNAT, MODE_DR, MODE_FULLNAT, MODE_MASK, MODE_NAT,
    MODE_TUNNEL,
};
use crate::flow::{is_v4, to_v4, v4, Addr, FastMap, Tuple};
use crate::frame::{Frame, FrameAlloc};
use crate::nat::{self, Endpoints};
use crate::neigh::Neighbors;
use crate::pool::{owner, Pools};
use crate::sched::{self, Candidates};
use crate::snapshot::{Encap, Local, Snapshot, TICK_MS};
use crate::stats::{DropReason, Stats};
use crate::tcp_state::{self, Dir, State};
use crate::wire::ethernet::{self, ethertype, Mac};
use crate::wire::icmp::{self, v4 as icmp4, v6 as icmp6};
use crate::wire::{arp, checksum, ipv4, ipv6, ndp, proto, tcp, udp};

/// What happened to one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Translated and sent on `port`.
    Forward { port: u16 },
    /// Answered by the small stack (ARP, ND, echo) on `port`.
    Reply { port: u16 },
    /// An ICMP error about it was sent on `port`; the frame itself was not forwarded.
    IcmpError { port: u16, reason: DropReason },
    /// Handed to the kernel.
    Kernel,
    /// Sent to the worker that owns its connection.
    Redirect { worker: u16 },
    /// Waiting for its next hop to resolve.
    Held,
    /// Dropped.
    Drop { reason: DropReason },
}

/// Everything one call to [`Worker::process`] produced.
#[derive(Debug)]
pub struct Output<F> {
    /// Frames to transmit, by port.
    pub tx: Vec<(u16, F)>,
    /// Frames for the kernel, by the port they arrived on.
    pub kernel: Vec<(u16, F)>,
    /// Frames for other workers.
    pub redirect: Vec<(u16, F)>,
    /// Neighbours learnt (port, address, MAC), to share with the other workers.
    pub learned: Vec<(u16, Addr, Mac)>,
    /// One verdict per received frame, when `record` is set.
    pub verdicts: Vec<Verdict>,
    /// Whether to record verdicts.
    pub record: bool,
}

impl<F> Output<F> {
    /// An empty output; `record` keeps per-frame verdicts (replay and tests).
    pub fn new(record: bool) -> Self {
        Output {
            tx: Vec::new(),
            kernel: Vec::new(),
            redirect: Vec::new(),
            learned: Vec::new(),
            verdicts: Vec::new(),
            record,
        }
    }

    /// Empties every list.
    pub fn clear(&mut self) {
        self.tx.clear();
        self.kernel.clear();
        self.redirect.clear();
        self.learned.clear();
        self.verdicts.clear();
    }
}

/// Most connections expired per burst.
const EXPIRE_BUDGET: usize = 256;
/// ICMP errors a worker may send in a burst, and per millisecond after it (RFC 1812 §4.3.2.8 rate limit).
const ICMP_BURST: u32 = 100;
/// Marks an unresolved cached next hop.
const NO_HOP: u32 = u32::MAX;

/// Parsed layer 3 and 4 of a frame being forwarded.
#[derive(Debug, Clone, Copy)]
struct Pkt {
    in_port: u16,
    l3: usize,
    l4: usize,
    v6: bool,
    proto: u8,
    src: Addr,
    dst: Addr,
    sport: u16,
    dport: u16,
    ttl: u8,
    tcp_flags: u8,
}

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
    backend_conns: Vec<u32>,
    persist: FastMap<(u16, Addr), (u16, u32)>,
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
    /// Tuples and hashes (0 = none) computed while warming the current burst, and the position in it.
    hint_tuples: Vec<Tuple>,
    hint_hashes: Vec<u64>,
    cur: usize,
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
            backend_conns: Vec::new(),
            persist: FastMap::default(),
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
            hint_tuples: Vec::new(),
            hint_hashes: Vec::new(),
            cur: 0,
            fast_path: true,
            mac_filter: true,
            snap: snap.clone(),
        };
        w.apply(None, &snap);
        w.snap = snap;
        w
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
    }

    fn apply(&mut self, old: Option<&Snapshot>, snap: &Snapshot) {
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
                let fresh = old.is_none_or(|o| o.local(&a).is_none());
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
        for (i, f) in burst.drain(..).enumerate() {
            self.cur = i;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += f.data().len() as u64;
            let v = if !self.addressed_here(in_port, f.data()) {
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
    }

    /// Whether a frame received on `in_port` is for this node: broadcast, multicast, or unicast to the port's
    /// MAC. Ports see every frame on their segment (promiscuous, or a switch flooding an unknown destination);
    /// a frame for another station must not be forwarded a second time.
    #[inline]
    fn addressed_here(&self, in_port: u16, d: &[u8]) -> bool {
        match (d.get(..6), self.snap.ports.get(usize::from(in_port))) {
            (Some(dst), Some(port)) => !self.mac_filter || dst[0] & 1 != 0 || dst == port.mac,
            // Too short for a MAC (dropped as malformed later) or an unknown port: not this check's business.
            _ => true,
        }
    }

    /// Loads the connection-table index slots, then the records, of a whole burst before processing it, so
    /// that their cache misses overlap instead of stalling one packet at a time.
    fn warm(&mut self, frames: &[F]) {
        const EMPTY: Tuple = Tuple {
            proto: 0,
            src: [0; 16],
            sport: 0,
            dst: [0; 16],
            dport: 0,
        };
        let n = frames.len();
        self.hint_tuples.resize(n, EMPTY);
        self.hint_hashes.resize(n, 0);
        // Tuples and hashes first (computation only), then the index slots in a tight loop of independent
        // loads, then the records they point to: a burst of misses in flight at once.
        for ((f, t), h) in frames
            .iter()
            .zip(self.hint_tuples.iter_mut())
            .zip(self.hint_hashes.iter_mut())
        {
            match quick_tuple(f.data()) {
                Some(q) => {
                    *h = self.conns.hash(&q);
                    *t = q;
                }
                None => *h = 0,
            }
        }
        let mut slots = [0u64; 64];
        for (slot, &h) in slots.iter_mut().zip(&self.hint_hashes) {
            if h != 0 {
                *slot = self.conns.warm(h);
            }
        }
        for &s in &slots[..n.min(64)] {
            if s != 0 {
                self.conns.warm_slot(s);
            }
        }
    }

    /// The established fast path: an untagged TCP segment or UDP datagram, IPv4 without options or IPv6
    /// without extension headers, of a Full-NAT connection (IPv4, IPv6 or NAT64) whose TCP state does not
    /// change (no SYN, FIN or RST), whose service and next hop are cached for the current snapshot and routes,
    /// and whose next hop is resolved. It does what `handle` would do for such a packet (same checks, same
    /// translation, same counters) without the general parsing; every condition is checked before the frame
    /// is touched, and anything else is handed back for `handle`.
    #[inline]
    fn fast<A: FrameAlloc<F = F>>(
        &mut self,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Result<Verdict, F> {
        const L3: usize = ethernet::HEADER_LEN;
        let h = match (self.hint_hashes.get(self.cur), self.hint_tuples.get(self.cur)) {
            (Some(&h), Some(_)) if h != 0 && self.fast_path => h,
            _ => return Err(f),
        };
        let t = &self.hint_tuples[self.cur];
        let d = f.data();
        // (IPv6?, transport offset, network length, TTL or hop limit, protocol)
        let (v6, l4, total, ttl, p) = match (d.get(12..14), d.get(L3..L3 + ipv4::HEADER_LEN)) {
            (Some([0x08, 0x00]), Some(ip)) => {
                let Ok(ip) = <&[u8; 20]>::try_from(ip) else {
                    return Err(f);
                };
                if ip[0] != 0x45
                    || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0
                    || (!f.rx_checksums_verified() && !checksum::ipv4_header_ok(ip))
                {
                    return Err(f);
                }
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                if total < ipv4::HEADER_LEN {
                    return Err(f);
                }
                (false, L3 + ipv4::HEADER_LEN, total, ip[8], ip[9])
            }
            (Some([0x86, 0xdd]), Some(_)) => {
                let Some(ip) = d.get(L3..L3 + ipv6::HEADER_LEN) else {
                    return Err(f);
                };
                if ip[0] >> 4 != 6 {
                    return Err(f);
                }
                let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                (true, L3 + ipv6::HEADER_LEN, ipv6::HEADER_LEN + plen, ip[7], ip[6])
            }
            _ => return Err(f),
        };
        if ttl <= 1 || d.len() < L3 + total {
            return Err(f);
        }
        let seg = &d[l4..L3 + total];
        let flags = match p {
            proto::TCP if seg.len() >= 20 && (20..=seg.len()).contains(&(usize::from(seg[12] >> 4) * 4)) => {
                seg[13]
            }
            proto::UDP
                if seg.len() >= 8
                    && (8..=seg.len()).contains(&usize::from(u16::from_be_bytes([seg[4], seg[5]]))) =>
            {
                0
            }
            _ => return Err(f),
        };
        if flags & (tcp::flags::SYN | tcp::flags::FIN | tcp::flags::RST) != 0
            || !matches!(self.snap.local(&t.dst), Some(Local::Vip | Local::Lip))
        {
            return Err(f);
        }
        let Some((idx, dir)) = self.conns.lookup(t, h) else {
            return Err(f);
        };
        let c = self.conns.get(idx);
        let slot = match dir {
            Dir::Inbound => c.nh_fwd,
            Dir::Reply => c.nh_rev,
        };
        let (e, out_v6) = outbound(c, dir);
        if c.flags & (MODE_MASK | FLAG_SNAT) != MODE_FULLNAT
            || !matches!(c.cla, CLA_NONE | CLA_TOA_DONE)
            || c.svc_gen != self.snap.generation as u16
            || c.route_gen != self.route_gen
            || slot == NO_HOP
        {
            return Err(f);
        }
        let state = c.state();
        if p == proto::TCP && tcp_state::next(state, dir, flags) != state {
            return Err(f);
        }
        let (Some(svc), Some(entry)) = (
            self.snap.services.get(usize::from(c.service)),
            self.neigh.get(slot),
        ) else {
            return Err(f);
        };
        let (Some(mac), port) = (entry.mac, entry.port) else {
            return Err(f);
        };
        let Some(pt) = self.snap.ports.get(usize::from(port)) else {
            return Err(f);
        };
        let mtu = usize::from(pt.mtu);
        if pt.vlan.is_some() || translated_len(total, l4 - L3, (v6, out_v6)) > mtu {
            return Err(f);
        }
        // Committed: expiry, translation, Ethernet header, transmission.
        let src_mac = pt.mac;
        let exp = self.tick.saturating_add(svc.timeouts.of(state));
        let client_port = c.in_port;
        if exp != c.expires {
            self.conns.set_expiry(idx, exp);
        }
        f.truncate(L3 + total);
        let l3 = match self.translate(&mut f, (v6, out_v6), (L3, l4), p, false, &e, client_port, mtu) {
            Ok(l3) => l3,
            Err(r) => return Ok(drop(r)),
        };
        self.stats.fast_path += 1;
        if l3 != L3 {
            let et = if out_v6 { ethertype::IPV6 } else { ethertype::IPV4 };
            return Ok(self.emit(port, slot, l3, et, f, alloc, out));
        }
        let d = f.data_mut();
        d[0..6].copy_from_slice(&mac);
        d[6..12].copy_from_slice(&src_mac);
        self.tx(port, f, out);
        Ok(Verdict::Forward { port })
    }

    /// Runs timers without traffic (idle polls).
    pub fn poll<A: FrameAlloc<F = F>>(&mut self, now_ms: u64, alloc: &mut A, out: &mut Output<F>) {
        self.set_clock(now_ms);
        self.timers(alloc, out);
    }

    fn timers<A: FrameAlloc<F = F>>(&mut self, alloc: &mut A, out: &mut Output<F>) {
        let (pools, snat_pools, counts, stats) = (
            &mut self.pools,
            &mut self.snat_pools,
            &mut self.backend_conns,
            &mut self.stats,
        );
        let n = self.conns.expire(self.tick, EXPIRE_BUDGET, |c| {
            release(c, pools, snat_pools, counts)
        });
        stats.expired_connections += n as u64;
        let tick = self.tick;
        if self.persist.len() > 4096 {
            self.persist.retain(|_, (_, exp)| *exp > tick);
        }
        for (port, a) in std::mem::take(&mut self.announce) {
            if let Some(f) = self.announcement(alloc, port, &a) {
                self.tx(port, f, out);
            }
        }
    }

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

    fn kernel(&mut self, in_port: u16, f: F, out: &mut Output<F>) -> Verdict {
        self.stats.to_kernel += 1;
        out.kernel.push((in_port, f));
        Verdict::Kernel
    }

    // ---- ARP and ND -------------------------------------------------------------------------------------

    fn arp(&mut self, in_port: u16, mut f: F, l3: usize, out: &mut Output<F>) -> Verdict {
        let Ok(r) = arp::Repr::parse(&arp::Packet::new_unchecked(&f.data()[l3..])) else {
            return drop(DropReason::Malformed);
        };
        let target = v4(r.tpa);
        let sender = v4(r.spa);
        let ours = matches!(self.snap.local(&target), Some(Local::Vip | Local::Lip));
        let asked_us = r.op == arp::Operation::Request && self.snap.local(&target).is_some();
        if !r.spa.is_unspecified() {
            if let Some((_, frames)) = self.neigh.learn(in_port, &sender, r.sha, asked_us) {
                out.learned.push((in_port, sender, r.sha));
                self.flush_held(in_port, r.sha, frames, out);
            }
        }
        if !(ours && r.op == arp::Operation::Request) {
            // The kernel answers for the node's own addresses and may have asked itself.
            return self.kernel(in_port, f, out);
        }
        let Some(port) = self.snap.ports.get(usize::from(in_port)) else {
            return drop(DropReason::Unsupported);
        };
        let mac = port.mac;
        let reply = arp::Repr {
            op: arp::Operation::Reply,
            sha: mac,
            spa: r.tpa,
            tha: r.sha,
            tpa: r.spa,
        };
        let d = f.data_mut();
        reply.emit(&mut d[l3..]);
        let mut e = ethernet::Frame::new_unchecked(&mut d[..]);
        e.set_dst(r.sha);
        e.set_src(mac);
        f.truncate(l3 + arp::LEN);
        self.stats.stack_replies += 1;
        self.tx(in_port, f, out);
        Verdict::Reply { port: in_port }
    }

    fn ndp(&mut self, p: &Pkt, mut f: F, out: &mut Output<F>) -> Verdict {
        let msg = &f.data()[p.l4..];
        if !icmp::Packet::new_unchecked(msg).verify_checksum(pseudo6(
            &f.data()[p.l3..],
            proto::ICMPV6,
            msg.len(),
        )) {
            return drop(DropReason::BadChecksum);
        }
        let Ok(r) = ndp::Repr::parse(msg) else {
            return drop(DropReason::Malformed);
        };
        match r {
            ndp::Repr::Advert {
                target,
                target_mac: Some(mac),
                ..
            } => {
                let a = target.octets();
                if let Some((_, frames)) = self.neigh.learn(p.in_port, &a, mac, false) {
                    out.learned.push((p.in_port, a, mac));
                    self.flush_held(p.in_port, mac, frames, out);
                }
                self.kernel(p.in_port, f, out)
            }
            ndp::Repr::Solicit { target, source_mac } => {
                let t = target.octets();
                let unspecified = p.src == [0; 16];
                if let (Some(mac), false) = (source_mac, unspecified) {
                    let asked_us = self.snap.local(&t).is_some();
                    if self.neigh.learn(p.in_port, &p.src, mac, asked_us).is_some() {
                        out.learned.push((p.in_port, p.src, mac));
                    }
                }
                if !matches!(self.snap.local(&t), Some(Local::Vip | Local::Lip)) {
                    return self.kernel(p.in_port, f, out);
                }
                let Some(port) = self.snap.ports.get(usize::from(p.in_port)) else {
                    return drop(DropReason::Unsupported);
                };
                let mymac = port.mac;
                let (dst, flags) = if unspecified {
                    (ALL_NODES, ndp::flags::OVERRIDE)
                } else {
                    (p.src, ndp::flags::SOLICITED | ndp::flags::OVERRIDE)
                };
                let eth_dst = if unspecified {
                    ndp::multicast_mac(&ALL_NODES.into())
                } else {
                    ethernet::Frame::new_unchecked(f.data()).src()
                };
                let na = ndp::Repr::Advert {
                    flags,
                    target,
                    target_mac: Some(mymac),
                };
                let need = (p.l4 + na.len()).saturating_sub(f.data().len());
                if need > 0 && !f.append(need) {
                    return drop(DropReason::NoBuffer);
                }
                f.truncate(p.l4 + na.len());
                let d = f.data_mut();
                na.emit(&mut d[p.l4..]);
                write_v6_header(&mut d[p.l3..], &t, &dst, proto::ICMPV6, na.len(), 255);
                let ps = pseudo6(&d[p.l3..], proto::ICMPV6, na.len());
                icmp::Packet::new_unchecked(&mut d[p.l4..]).fill_checksum(ps);
                let mut e = ethernet::Frame::new_unchecked(&mut d[..]);
                e.set_dst(eth_dst);
                e.set_src(mymac);
                self.stats.stack_replies += 1;
                self.tx(p.in_port, f, out);
                Verdict::Reply { port: p.in_port }
            }
            _ => self.kernel(p.in_port, f, out),
        }
    }

    /// A gratuitous ARP or unsolicited NA for `a` on `port`.
    fn announcement<A: FrameAlloc<F = F>>(&mut self, alloc: &mut A, port: u16, a: &Addr) -> Option<F> {
        let mac = self.snap.ports.get(usize::from(port))?.mac;
        let mut f = if is_v4(a) {
            arp_request(alloc, mac, a, a)?
        } else {
            let na = ndp::Repr::Advert {
                flags: ndp::flags::OVERRIDE,
                target: (*a).into(),
                target_mac: Some(mac),
            };
            ndp_frame(alloc, mac, a, &ALL_NODES, &na)?
        };
        self.set_vlan(&mut f, port);
        Some(f)
    }

    /// A solicitation (ARP request or NS) for `target` on `port`.
    fn solicitation<A: FrameAlloc<F = F>>(&mut self, alloc: &mut A, port: u16, target: &Addr) -> Option<F> {
        let mac = self.snap.ports.get(usize::from(port))?.mac;
        let src = self.snap.port_addr(port, is_v4(target))?;
        let mut f = if is_v4(target) {
            arp_request(alloc, mac, &src, target)?
        } else {
            let ns = ndp::Repr::Solicit {
                target: (*target).into(),
                source_mac: Some(mac),
            };
            let group = ndp::solicited_node(&(*target).into()).octets();
            ndp_frame(alloc, mac, &src, &group, &ns)?
        };
        self.set_vlan(&mut f, port);
        Some(f)
    }

    /// Tags a frame built untagged when its port is tagged.
    fn set_vlan(&self, f: &mut F, port: u16) {
        if let Some(vlan) = self.snap.ports.get(usize::from(port)).and_then(|p| p.vlan) {
            let et = ethernet::Frame::new_unchecked(f.data()).ethertype();
            if f.prepend(4) {
                let d = f.data_mut();
                d.copy_within(4..16, 0);
                d[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
                d[14..16].copy_from_slice(&(vlan & 0x0fff).to_be_bytes());
                d[16..18].copy_from_slice(&et.to_be_bytes());
            }
        }
    }

    fn flush_held(&mut self, port: u16, mac: Mac, frames: Vec<F>, out: &mut Output<F>) {
        for mut f in frames {
            ethernet::Frame::new_unchecked(f.data_mut()).set_dst(mac);
            self.tx(port, f, out);
        }
    }

    // ---- IP ---------------------------------------------------------------------------------------------

    fn ipv4<A: FrameAlloc<F = F>>(
        &mut self,
        in_port: u16,
        mut f: F,
        l3: usize,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let Ok(ip) = ipv4::Packet::new_checked(&d[l3..]) else {
            return drop(DropReason::Malformed);
        };
        if ip.version() != 4 {
            return drop(DropReason::Malformed);
        }
        let dst = v4(ip.dst());
        let local = match self.snap.local(&dst) {
            None if (self.snap.transit && matches!(ip.protocol(), proto::TCP | proto::UDP))
                || (!self.snap.snat.is_empty()
                    && matches!(ip.protocol(), proto::TCP | proto::UDP | proto::ICMP)) =>
            {
                Local::Transit
            }
            Some(Local::Own(_)) | None => return self.kernel(in_port, f, out),
            Some(l) => l,
        };
        if !f.rx_checksums_verified() && !ip.verify_checksum() {
            return drop(DropReason::BadChecksum);
        }
        if ip.is_fragment() {
            return drop(DropReason::Fragment);
        }
        let (ihl, total, p, ttl, src) = (
            ip.header_len(),
            usize::from(ip.total_len()),
            ip.protocol(),
            ip.ttl(),
            v4(ip.src()),
        );
        f.truncate(l3 + total);
        let pkt = Pkt {
            in_port,
            l3,
            l4: l3 + ihl,
            v6: false,
            proto: p,
            src,
            dst,
            sport: 0,
            dport: 0,
            ttl,
            tcp_flags: 0,
        };
        match p {
            proto::TCP | proto::UDP => self.transport(pkt, local, f, alloc, out),
            proto::ICMP => self.icmp4(pkt, local, f, alloc, out),
            _ => drop(DropReason::Unsupported),
        }
    }

    fn ipv6<A: FrameAlloc<F = F>>(
        &mut self,
        in_port: u16,
        mut f: F,
        l3: usize,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let Ok(ip) = ipv6::Packet::new_checked(&d[l3..]) else {
            return drop(DropReason::Malformed);
        };
        if ip.version() != 6 {
            return drop(DropReason::Malformed);
        }
        let Ok(ul) = ip.upper_layer() else {
            return drop(DropReason::Malformed);
        };
        let dst = ip.dst().octets();
        let src = ip.src().octets();
        let (plen, hop) = (usize::from(ip.payload_len()), ip.hop_limit());
        let pkt = Pkt {
            in_port,
            l3,
            l4: l3 + ul.offset,
            v6: true,
            proto: ul.protocol,
            src,
            dst,
            sport: 0,
            dport: 0,
            ttl: hop,
            tcp_flags: 0,
        };
        let icmp_type = d.get(l3 + ul.offset).copied();
        f.truncate(l3 + ipv6::HEADER_LEN + plen);
        if ul.protocol == proto::ICMPV6 && ul.fragment.is_none() {
            let ty = icmp_type;
            if matches!(ty, Some(icmp6::NEIGHBOR_SOLICIT | icmp6::NEIGHBOR_ADVERT)) {
                if hop != 255 {
                    return drop(DropReason::Malformed);
                }
                return self.ndp(&pkt, f, out);
            }
        }
        let local = match self.snap.local(&dst) {
            None if (self.snap.transit || !self.snap.snat.is_empty())
                && matches!(ul.protocol, proto::TCP | proto::UDP) =>
            {
                Local::Transit
            }
            Some(Local::Own(_)) | None => return self.kernel(in_port, f, out),
            Some(l) => l,
        };
        if ul.fragment.is_some() {
            return drop(DropReason::Fragment);
        }
        match ul.protocol {
            proto::TCP | proto::UDP => self.transport(pkt, local, f, alloc, out),
            proto::ICMPV6 => self.icmp6(pkt, f, alloc, out),
            _ => drop(DropReason::Unsupported),
        }
    }

    // ---- TCP and UDP through the connection table -------------------------------------------------------

    fn transport<A: FrameAlloc<F = F>>(
        &mut self,
        mut p: Pkt,
        local: Local,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let l4 = &d[p.l4..];
        if p.proto == proto::TCP {
            let Ok(t) = tcp::Packet::new_checked(l4) else {
                return drop(DropReason::Malformed);
            };
            p.sport = t.src_port();
            p.dport = t.dst_port();
            p.tcp_flags = t.flags();
        } else {
            let Ok(u) = udp::Packet::new_checked(l4) else {
                return drop(DropReason::Malformed);
            };
            p.sport = u.src_port();
            p.dport = u.dst_port();
        }
        let t = Tuple {
            proto: p.proto,
            src: p.src,
            sport: p.sport,
            dst: p.dst,
            dport: p.dport,
        };
        let h = match (self.hint_hashes.get(self.cur), self.hint_tuples.get(self.cur)) {
            (Some(&h), Some(ht)) if h != 0 && *ht == t => h,
            _ => self.conns.hash(&t),
        };
        let hit = match self.conns.lookup(&t, h) {
            // A new SYN on a finished connection (the client reused its port): forget the old one and
            // schedule afresh, so the flow does not stick to a backend that may be gone (IPVS conn_reuse_mode).
            Some((idx, Dir::Inbound))
                if local == Local::Vip
                    && p.tcp_flags & (tcp::flags::SYN | tcp::flags::ACK) == tcp::flags::SYN
                    && matches!(self.conns.get(idx).state(), State::TimeWait | State::Close) =>
            {
                self.forget(idx);
                None
            }
            other => other,
        };
        match hit {
            Some((idx, dir)) => self.forward(p, idx, dir, f, alloc, out),
            None => match local {
                Local::Vip
                    if p.proto == proto::TCP
                        && p.tcp_flags & (tcp::flags::SYN | tcp::flags::ACK | tcp::flags::RST)
                            != tcp::flags::SYN
                        && self.snap.peers.iter().any(|(port, _)| *port != p.in_port)
                        && self.sent_by_router(p.in_port, &f) =>
                {
                    self.hand_to_peer(&p, h, f, alloc, out)
                }
                Local::Vip => self.new_conn(p, f, alloc, out),
                Local::Transit => {
                    // Not known here: perhaps a NAT-mode reply on the worker that owns the client's port; else
                    // the start of a flow through the source-NAT gateway; else the kernel routes it.
                    let o = self.nat_owner(p.dport);
                    if self.snap.transit && o != self.id {
                        self.stats.redirected += 1;
                        out.redirect.push((o, f));
                        Verdict::Redirect { worker: o }
                    } else if let Some(ri) = self.snat_rule(&p) {
                        self.snat_flow(p, ri, f, alloc, out)
                    } else {
                        self.kernel(p.in_port, f, out)
                    }
                }
                _ => {
                    let o = owner(p.dport, self.snap.mask);
                    if o != self.id && usize::from(o) < self.snap.workers {
                        self.stats.redirected += 1;
                        out.redirect.push((o, f));
                        Verdict::Redirect { worker: o }
                    } else {
                        drop(DropReason::NoConnection)
                    }
                }
            },
        }
    }

    fn verify_l4(&self, p: &Pkt, f: &F) -> bool {
        if f.rx_checksums_verified() {
            return true;
        }
        let d = f.data();
        let seg = &d[p.l4..];
        let pseudo = if p.v6 {
            pseudo6(&d[p.l3..], p.proto, seg.len())
        } else {
            checksum::pseudo_v4(to_v4(&p.src), to_v4(&p.dst), p.proto, seg.len() as u16)
        };
        if p.proto == proto::TCP {
            tcp::Packet::new_unchecked(seg).verify_checksum(pseudo)
        } else {
            let u = udp::Packet::new_unchecked(seg);
            if p.v6 && u.checksum() == 0 {
                return false;
            }
            u.verify_checksum(pseudo)
        }
    }

    fn new_conn<A: FrameAlloc<F = F>>(
        &mut self,
        p: Pkt,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let snap = self.snap.clone();
        let Some(si) = snap.service(&p.dst, p.proto, p.dport) else {
            return drop(DropReason::NoService);
        };
        let forwarding = snap.services[usize::from(si)].forwarding;
        if forwarding == Forwarding::Nat {
            // The backend's replies are addressed to the client's port: keep the connection on the worker
            // they are steered to.
            let o = self.nat_owner(p.sport);
            if o != self.id {
                self.stats.redirected += 1;
                out.redirect.push((o, f));
                return Verdict::Redirect { worker: o };
            }
        }
        if p.proto == proto::TCP
            && p.tcp_flags & (tcp::flags::SYN | tcp::flags::ACK | tcp::flags::RST) != tcp::flags::SYN
        {
            return drop(DropReason::NoConnection);
        }
        if !self.verify_l4(&p, &f) {
            return drop(DropReason::BadChecksum);
        }
        if p.ttl <= 1 {
            return self.icmp_error(&p, f, IcmpKind::TimeExceeded, DropReason::Ttl, alloc, out);
        }
        let svc = &snap.services[usize::from(si)];
        let persist_key = (si, p.src);
        let persisted = svc
            .persistence
            .and_then(|_| self.persist.get(&persist_key))
            .filter(|(b, exp)| *exp > self.tick && svc.weights.get(usize::from(*b)).is_some_and(|&w| w > 0));
        let bi = match persisted {
            Some(&(b, _)) => b,
            None => {
                let conns: Vec<u32> = svc
                    .backends
                    .iter()
                    .map(|b| self.backend_conns.get(b.uid as usize).copied().unwrap_or(0))
                    .collect();
                let c = Candidates {
                    weights: &svc.weights,
                    conns: &conns,
                    maglev: &svc.maglev,
                };
                let inbound = Tuple {
                    proto: p.proto,
                    src: p.src,
                    sport: p.sport,
                    dst: p.dst,
                    dport: p.dport,
                };
                let mh = inbound.hash(snap.seed);
                let Some(b) = sched::pick(
                    svc.sched,
                    &mut self.sched[usize::from(si)],
                    &c,
                    mh,
                    &p.src,
                    snap.seed,
                ) else {
                    return drop(DropReason::NoBackend);
                };
                b
            }
        };
        if let Some(ticks) = svc.persistence {
            self.persist
                .insert(persist_key, (bi, self.tick.saturating_add(ticks)));
        }
        let b = &svc.backends[usize::from(bi)];
        let bport = if b.port == 0 { p.dport } else { b.port };
        let backend_v6 = !is_v4(&b.addr);
        let (lip, lport, mut flags) = match forwarding {
            Forwarding::Fullnat | Forwarding::Snat => {
                let Some((lip, lport)) = self.pools.alloc(backend_v6, p.proto) else {
                    return drop(DropReason::PoolExhausted);
                };
                (lip, lport, FLAG_POOLED | MODE_FULLNAT)
            }
            Forwarding::Nat => (p.src, p.sport, MODE_NAT),
            Forwarding::Dr => (p.src, p.sport, MODE_DR),
            Forwarding::Tunnel => {
                let h = Tuple {
                    proto: p.proto,
                    src: p.src,
                    sport: p.sport,
                    dst: p.dst,
                    dport: p.dport,
                }
                .hash(snap.seed);
                let Some(src) = self.tunnel_source(&b.addr, h) else {
                    return drop(DropReason::NoRoute);
                };
                (src, p.sport, MODE_TUNNEL)
            }
        };
        let state = if p.proto == proto::TCP {
            State::SynRecv
        } else {
            State::Udp
        };
        if p.v6 {
            flags |= FLAG_CLIENT_V6;
        }
        if backend_v6 {
            flags |= FLAG_BACKEND_V6;
        }
        let cla = match (forwarding, svc.client_address, p.proto) {
            (Forwarding::Fullnat, ClientAddress::Toa, proto::TCP) => CLA_TOA,
            (Forwarding::Fullnat, ClientAddress::ProxyV2, proto::TCP) => CLA_PP_PENDING,
            _ => CLA_NONE,
        };
        let c = Conn {
            client: p.src,
            vip: p.dst,
            lip,
            backend: b.addr,
            cla,
            cport: p.sport,
            vport: p.dport,
            lport,
            bport,
            expires: self.tick.saturating_add(svc.timeouts.of(state)),
            proto: p.proto,
            state: state as u8,
            flags,
            in_port: p.in_port as u8,
            nh_fwd: NO_HOP,
            nh_rev: NO_HOP,
            route_gen: self.route_gen,
            uid: b.uid,
            service: si,
            svc_gen: snap.generation as u16,
            ..Conn::EMPTY
        };
        let idx = match self.conns.insert(c) {
            Ok(i) => i,
            Err(e) => {
                if flags & FLAG_POOLED != 0 {
                    self.pools.release(&lip, p.proto, lport);
                }
                return drop(match e {
                    InsertError::Full => DropReason::TableFull,
                    InsertError::Exists => DropReason::NoConnection,
                });
            }
        };
        let uid = b.uid as usize;
        if self.backend_conns.len() <= uid {
            self.backend_conns.resize(uid + 1, 0);
        }
        self.backend_conns[uid] += 1;
        self.stats.new_connections += 1;
        self.forward(p, idx, Dir::Inbound, f, alloc, out)
    }

    fn forward<A: FrameAlloc<F = F>>(
        &mut self,
        p: Pkt,
        idx: u32,
        dir: Dir,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        if p.ttl <= 1 {
            return self.icmp_error(&p, f, IcmpKind::TimeExceeded, DropReason::Ttl, alloc, out);
        }
        let c = *self.conns.get(idx);
        let mode = c.flags & MODE_MASK;
        if matches!(mode, MODE_DR | MODE_TUNNEL) && dir == Dir::Reply {
            // Direct-return modes never see replies: this is a stray packet that happens to match.
            return drop(DropReason::NoConnection);
        }
        let snap_gen = self.snap.generation as u16;
        // State and expiry.
        let old = c.state();
        let new = if p.proto == proto::TCP {
            tcp_state::next(old, dir, p.tcp_flags)
        } else {
            State::Udp
        };
        let svc = if c.flags & FLAG_SNAT != 0 {
            None
        } else if c.svc_gen == snap_gen {
            Some(c.service)
        } else {
            // The snapshot changed since: find the service again by its VIP, protocol and port.
            let s = self.snap.service(&c.vip, c.proto, c.vport);
            if let Some(si) = s {
                let cm = self.conns.get_mut(idx);
                cm.service = si;
                cm.svc_gen = snap_gen;
            }
            s
        };
        let timeouts = svc
            .and_then(|si| self.snap.services.get(usize::from(si)))
            .map(|s| s.timeouts);
        let timeout = match timeouts {
            Some(t) => t.of(new),
            None if c.flags & FLAG_SNAT != 0 => self.snap.default_timeouts.of(new),
            None => 300_000 / TICK_MS as u32,
        };
        if new != old {
            self.conns.get_mut(idx).state = new as u8;
        }
        let exp = self.tick.saturating_add(timeout);
        if exp != c.expires {
            self.conns.set_expiry(idx, exp);
        }
        if matches!(mode, MODE_DR | MODE_TUNNEL) {
            let encap = match mode {
                MODE_DR => None,
                _ => Some(
                    svc.and_then(|si| self.snap.services.get(usize::from(si)))
                        .map_or(Encap::Ip, |s| s.encap),
                ),
            };
            return self.forward_direct(&p, idx, &c, encap, f, alloc, out);
        }
        let (e, out_v6) = outbound(&c, dir);
        let Some(slot) = self.next_hop(idx, &c, dir, &e.dst) else {
            return drop(DropReason::NoRoute);
        };
        let Some(entry) = self.neigh.get(slot) else {
            return drop(DropReason::NoRoute);
        };
        let out_port = entry.port;
        let mtu = self
            .snap
            .ports
            .get(usize::from(out_port))
            .map_or(1500, |pt| usize::from(pt.mtu));
        // Too big for the egress port after translation? The sender learns its own MTU (RFC 1191, RFC 8201).
        let in_len = f.data().len() - p.l3;
        let out_len = translated_len(in_len, p.l4 - p.l3, (p.v6, out_v6));
        if out_len > mtu {
            let dont_frag = p.v6 || f.data()[p.l3 + 6] & 0x40 != 0;
            if !dont_frag {
                return drop(DropReason::TooBig);
            }
            let sender_mtu = (mtu + in_len)
                .saturating_sub(out_len)
                .max(if p.v6 { 1280 } else { 68 });
            return self.icmp_error(
                &p,
                f,
                IcmpKind::TooBig(sender_mtu),
                DropReason::TooBig,
                alloc,
                out,
            );
        }
        // Translate.
        let syn = p.tcp_flags & tcp::flags::SYN != 0;
        let l3 = match self.translate(
            &mut f,
            (p.v6, out_v6),
            (p.l3, p.l4),
            p.proto,
            syn,
            &e,
            c.in_port,
            mtu,
        ) {
            Ok(l3) => l3,
            Err(r) => return drop(r),
        };
        if c.cla != CLA_NONE {
            let l4 = match (p.v6, out_v6) {
                (false, false) | (true, true) => p.l4,
                (true, false) => l3 + ipv4::HEADER_LEN,
                (false, true) => l3 + ipv6::HEADER_LEN,
            };
            if let Err(r) = self.client_address(idx, &c, dir, &mut f, l3, l4, out_v6, mtu) {
                return drop(r);
            }
        }
        self.emit(
            out_port,
            slot,
            l3,
            if out_v6 { ethertype::IPV6 } else { ethertype::IPV4 },
            f,
            alloc,
            out,
        )
    }

    /// Rewrites a Full-NAT packet in place to endpoints `e`: within its family, or translated between IPv6 and
    /// IPv4 (NAT64, with the MSS of a SYN lowered for the larger or the other side's header). `families` is
    /// (packet is IPv6, output is IPv6), `at` the offsets of its network and transport headers, `client_port` the
    /// port the connection's client is behind. Returns where the network header now starts.
    #[allow(clippy::too_many_arguments)]
    fn translate(
        &mut self,
        f: &mut F,
        families: (bool, bool),
        at: (usize, usize),
        proto: u8,
        syn: bool,
        e: &Endpoints,
        client_port: u8,
        mtu: usize,
    ) -> Result<usize, DropReason> {
        let (l3, l4) = at;
        match families {
            (false, false) => {
                if !nat::rewrite_v4(&mut f.data_mut()[l3..], l4 - l3, e) {
                    return Err(DropReason::Malformed);
                }
                Ok(l3)
            }
            (true, true) => {
                if !nat::rewrite_v6(&mut f.data_mut()[l3..], l4 - l3, proto, e) {
                    return Err(DropReason::Malformed);
                }
                Ok(l3)
            }
            (true, false) => {
                self.ident = self.ident.wrapping_add(1);
                if proto == proto::TCP && syn {
                    clamp_mss(&mut f.data_mut()[l4..], mtu.saturating_sub(40) as u16);
                }
                nat::v6_to_v4(f.data_mut(), l3, l4, proto, e, self.ident).ok_or(DropReason::Malformed)
            }
            (false, true) => {
                let (mut l3, mut l4) = (l3, l4);
                if l4 < 40 {
                    let grow = 40 - l4;
                    if !f.prepend(grow) {
                        return Err(DropReason::NoBuffer);
                    }
                    l4 += grow;
                    l3 += grow;
                }
                if proto == proto::TCP && syn {
                    let client_mtu = self
                        .snap
                        .ports
                        .get(usize::from(client_port))
                        .map_or(1500, |pt| usize::from(pt.mtu));
                    clamp_mss(&mut f.data_mut()[l4..], client_mtu.saturating_sub(60) as u16);
                }
                nat::v4_to_v6(f.data_mut(), l3, l4, proto, e).ok_or(DropReason::Malformed)
            }
        }
    }

    /// TOA and PROXY v2 on a translated segment of connection `idx` (TCP header at `l4`): the option or header
    /// goes into the client's segments at its first sequence number until the backend acknowledges past them;
    /// after a PROXY header, client sequence numbers move up by its length and the backend's acknowledgements
    /// (and SACK blocks) down. SYNs get their MSS lowered so that a full segment still fits with the addition.
    #[allow(clippy::too_many_arguments)]
    fn client_address(
        &mut self,
        idx: u32,
        c: &Conn,
        dir: Dir,
        f: &mut F,
        l3: usize,
        l4: usize,
        out_v6: bool,
        mtu: usize,
    ) -> Result<(), DropReason> {
        let client_v6 = c.flags & FLAG_CLIENT_V6 != 0;
        let d = f.data();
        let Ok(t) = tcp::Packet::new_checked(&d[l4..]) else {
            return Err(DropReason::Malformed);
        };
        let (seq, ack, flags) = (t.seq(), t.ack(), t.flags());
        let toa = matches!(c.cla, CLA_TOA | CLA_TOA_DONE);
        let extra = if toa {
            client_addr::toa_len(client_v6)
        } else {
            client_addr::proxy_len(client_v6)
        };
        let start = c.cla_seq;
        match dir {
            Dir::Inbound if flags & tcp::flags::SYN != 0 => {
                self.conns.get_mut(idx).cla_seq = seq.wrapping_add(1);
                let hdrs = if out_v6 { 60 } else { 40 };
                clamp_mss(&mut f.data_mut()[l4..], mtu.saturating_sub(hdrs + extra) as u16);
            }
            Dir::Inbound => {
                let fits = f.data().len() - l3 + extra <= mtu;
                match c.cla {
                    CLA_TOA if seq == start && fits => {
                        // No room in the TCP header: the segment goes on without it (counted nowhere else).
                        let _ = client_addr::insert(
                            f,
                            l3,
                            l4,
                            out_v6,
                            &client_addr::toa(&c.client, c.cport),
                            true,
                        );
                    }
                    CLA_PP_PENDING | CLA_PP_SENT if seq == start => {
                        let h = client_addr::proxy_v2(&c.client, c.cport, &c.vip, c.vport);
                        if !fits {
                            return Err(DropReason::TooBig);
                        }
                        if !client_addr::insert(f, l3, l4, out_v6, &h, false) {
                            return Err(DropReason::NoBuffer);
                        }
                        self.conns.get_mut(idx).cla = CLA_PP_SENT;
                    }
                    // Data beyond the first byte before the header went out: the client resends it later.
                    CLA_PP_PENDING => return Err(DropReason::NoConnection),
                    CLA_PP_SENT | CLA_PP_ACKED => {
                        client_addr::set_u32(&mut f.data_mut()[l4..], 4, seq.wrapping_add(extra as u32));
                    }
                    _ => {}
                }
            }
            Dir::Reply if flags & tcp::flags::ACK != 0 => match c.cla {
                CLA_TOA if seq_after(ack, start) => self.conns.get_mut(idx).cla = CLA_TOA_DONE,
                CLA_PP_SENT | CLA_PP_ACKED => {
                    let end = start.wrapping_add(extra as u32);
                    if c.cla == CLA_PP_SENT && client_addr::seq_ge(ack, end) {
                        self.conns.get_mut(idx).cla = CLA_PP_ACKED;
                    }
                    // Backend sequence space → client's: past the header, minus its length; inside it, the start.
                    let map = |v: u32| {
                        if client_addr::seq_ge(v, end) {
                            v.wrapping_sub(extra as u32)
                        } else if seq_after(v, start) {
                            start
                        } else {
                            v
                        }
                    };
                    let seg = &mut f.data_mut()[l4..];
                    client_addr::set_u32(seg, 8, map(ack));
                    client_addr::map_sack(seg, map);
                }
                _ => {}
            },
            Dir::Reply => {}
        }
        Ok(())
    }

    /// The neighbour slot towards `dst` for connection `idx` in direction `dir`, cached in the connection until
    /// the routes change.
    fn next_hop(&mut self, idx: u32, c: &Conn, dir: Dir, dst: &Addr) -> Option<u32> {
        let cached = match dir {
            Dir::Inbound => c.nh_fwd,
            Dir::Reply => c.nh_rev,
        };
        if cached != NO_HOP && c.route_gen == self.route_gen {
            return Some(cached);
        }
        let s = self.resolve(dst, c.inbound_tuple().hash(self.snap.seed))?;
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
        Some(s)
    }

    /// Direct routing (`encap` none: the frame as received, to the backend's MAC) and tunnelling (IP-in-IP or
    /// IPv6-in-IPv6, or GUE, from the connection's outer source to the backend). Replies go from the backend
    /// straight to the client.
    #[allow(clippy::too_many_arguments)]
    fn forward_direct<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        idx: u32,
        c: &Conn,
        encap: Option<Encap>,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let Some(slot) = self.next_hop(idx, c, Dir::Inbound, &c.backend) else {
            return drop(DropReason::NoRoute);
        };
        let Some(entry) = self.neigh.get(slot) else {
            return drop(DropReason::NoRoute);
        };
        let out_port = entry.port;
        let et = if p.v6 { ethertype::IPV6 } else { ethertype::IPV4 };
        let Some(encap) = encap else {
            return self.emit(out_port, slot, p.l3, et, f, alloc, out);
        };
        let mtu = self
            .snap
            .ports
            .get(usize::from(out_port))
            .map_or(1500, |pt| usize::from(pt.mtu));
        let ip_len = if p.v6 { ipv6::HEADER_LEN } else { ipv4::HEADER_LEN };
        let outer = match encap {
            Encap::Ip => ip_len,
            Encap::Gue(_) => ip_len + udp::HEADER_LEN,
        };
        let in_len = f.data().len() - p.l3;
        if in_len + outer > mtu {
            let dont_frag = p.v6 || f.data()[p.l3 + 6] & 0x40 != 0;
            if !dont_frag {
                return drop(DropReason::TooBig);
            }
            let sender_mtu = mtu.saturating_sub(outer).max(if p.v6 { 1280 } else { 68 });
            return self.icmp_error(p, f, IcmpKind::TooBig(sender_mtu), DropReason::TooBig, alloc, out);
        }
        if p.proto == proto::TCP && p.tcp_flags & tcp::flags::SYN != 0 {
            let l3l4 = if p.v6 { 60 } else { 40 };
            clamp_mss(&mut f.data_mut()[p.l4..], mtu.saturating_sub(outer + l3l4) as u16);
        }
        if !f.prepend(outer) {
            return drop(DropReason::NoBuffer);
        }
        // The inner packet now starts at `l3 + outer`; the outer headers go in front of it.
        let l3 = p.l3;
        let hash = c.inbound_tuple().hash(self.snap.seed);
        let (next, ip_payload) = match (encap, p.v6) {
            (Encap::Gue(_), _) => (proto::UDP, in_len + udp::HEADER_LEN),
            (Encap::Ip, true) => (proto::IPV6, in_len),
            (Encap::Ip, false) => (proto::IPIP, in_len),
        };
        let d = f.data_mut();
        if let Encap::Gue(port) = encap {
            // GUE variant 1: the inner IP packet right after the UDP header. The source port spreads flows.
            let u = l3 + ip_len;
            let sport = 0xc000 | (hash as u16 & 0x3fff);
            d[u..u + 2].copy_from_slice(&sport.to_be_bytes());
            d[u + 2..u + 4].copy_from_slice(&port.to_be_bytes());
            d[u + 4..u + 6].copy_from_slice(&(ip_payload as u16).to_be_bytes());
            d[u + 6..u + 8].copy_from_slice(&[0, 0]);
            if p.v6 {
                // IPv6 needs a UDP checksum.
                let mut sum = checksum::sum(&c.lip) + checksum::sum(&c.backend);
                sum += u32::from(proto::UDP) + ip_payload as u32 + checksum::sum(&d[u..u + ip_payload]);
                let ck = checksum::finish(sum);
                let ck = if ck == 0 { 0xffff } else { ck };
                d[u + 6..u + 8].copy_from_slice(&ck.to_be_bytes());
            }
        }
        if p.v6 {
            let label = (hash & 0xf_ffff) as u32;
            let tclass = (d[l3 + outer] & 0x0f) << 4 | d[l3 + outer + 1] >> 4;
            ipv6::Repr {
                src: c.lip.into(),
                dst: c.backend.into(),
                next_header: next,
                payload_len: ip_payload,
                hop_limit: 64,
                traffic_class: tclass,
                flow_label: label,
            }
            .emit(&mut d[l3..]);
        } else {
            self.ident = self.ident.wrapping_add(1);
            let inner = l3 + outer;
            ipv4::Repr {
                src: to_v4(&c.lip),
                dst: to_v4(&c.backend),
                protocol: next,
                payload_len: ip_payload,
                ttl: 64,
                tos: d[inner + 1],
                ident: self.ident,
                dont_frag: d[inner + 6] & 0x40 != 0,
            }
            .emit(&mut d[l3..]);
        }
        self.emit(out_port, slot, l3, et, f, alloc, out)
    }

    /// The outer source of a tunnelled flow with hash `h` to `backend`: one of the local addresses of the
    /// backend's family chosen by the hash (so the backend's RSS spreads flows), else the egress port's address.
    fn tunnel_source(&self, backend: &Addr, h: u64) -> Option<Addr> {
        let fam = is_v4(backend);
        let n = self.snap.lips.iter().filter(|(a, _, _)| is_v4(a) == fam).count();
        if n > 0 {
            return self
                .snap
                .lips
                .iter()
                .filter(|(a, _, _)| is_v4(a) == fam)
                .nth((h % n as u64) as usize)
                .map(|(a, _, _)| *a);
        }
        let hop = self.snap.routes.next_hop(backend, h)?;
        self.snap.port_addr(hop.port, fam)
    }

    /// Removes connection `idx` now, giving back its local port and its count on the backend.
    fn forget(&mut self, idx: u32) {
        let c = self.conns.remove(idx);
        release(&c, &mut self.pools, &mut self.snat_pools, &mut self.backend_conns);
    }

    /// Whether frame `f`, received on `port`, comes from one of the routers (a next hop of a route there).
    /// Frames a peer node handed over come from that node's MAC, never a router's, so they are never handed
    /// on again.
    fn sent_by_router(&self, port: u16, f: &F) -> bool {
        let Some(src) = f.data().get(6..12) else {
            return false;
        };
        self.snap
            .routers
            .iter()
            .filter(|(p, _)| *p == port)
            .any(|(p, a)| self.neigh.mac_of(*p, a).is_some_and(|m| m[..] == *src))
    }

    /// "Second chance": a TCP segment to a VIP that no connection here knows, arriving from outside, goes
    /// unchanged to another node (chosen by the flow hash `h`), which may hold the connection — the upstream
    /// router moved the flow when a node was drained, added or came back. Only segments from a router are
    /// handed on (see [`Worker::sent_by_router`]), so nothing loops between nodes.
    fn hand_to_peer<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        h: u64,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let n = self
            .snap
            .peers
            .iter()
            .filter(|(port, _)| *port != p.in_port)
            .count();
        let Some(&(port, peer)) = self
            .snap
            .peers
            .iter()
            .filter(|(port, _)| *port != p.in_port)
            .nth((h % n.max(1) as u64) as usize)
        else {
            return drop(DropReason::NoConnection);
        };
        let Some(slot) = self.neigh.slot(port, &peer) else {
            return drop(DropReason::NoRoute);
        };
        self.stats.peer_forwarded += 1;
        let et = if p.v6 { ethertype::IPV6 } else { ethertype::IPV4 };
        self.emit(port, slot, p.l3, et, f, alloc, out)
    }

    /// The first source-NAT rule for a flow from `p.src` over `p.proto` whose destination leaves through the
    /// rule's port.
    fn snat_rule(&self, p: &Pkt) -> Option<usize> {
        let snap = &self.snap;
        let out_port = snap.routes.next_hop(&p.dst, 0)?.port;
        snap.snat
            .iter()
            .position(|r| r.out_port == out_port && r.matches(&p.src, p.proto))
    }

    /// A connection for a new flow through source-NAT rule `ri` (`p.sport`/`p.dport` are the ICMP echo
    /// identifier and 0 for pings).
    fn snat_insert(&mut self, p: &Pkt, ri: usize) -> Result<u32, DropReason> {
        let v6 = p.v6;
        let pool = self.snat_pools.get_mut(ri).ok_or(DropReason::NoService)?;
        let (lip, lport) = pool.alloc(v6, p.proto).ok_or(DropReason::PoolExhausted)?;
        let state = if p.proto == proto::TCP {
            State::SynRecv
        } else {
            State::Udp
        };
        let v6_flags = if v6 { FLAG_CLIENT_V6 | FLAG_BACKEND_V6 } else { 0 };
        let c = Conn {
            client: p.src,
            vip: p.dst,
            lip,
            backend: p.dst,
            cport: p.sport,
            vport: p.dport,
            lport,
            bport: p.dport,
            expires: self.tick.saturating_add(self.snap.default_timeouts.of(state)),
            proto: p.proto,
            state: state as u8,
            flags: FLAG_SNAT | MODE_FULLNAT | v6_flags,
            in_port: p.in_port as u8,
            nh_fwd: NO_HOP,
            nh_rev: NO_HOP,
            route_gen: self.route_gen,
            uid: u32::MAX,
            service: u16::MAX,
            svc_gen: self.snap.generation as u16,
            ..Conn::EMPTY
        };
        match self.conns.insert(c) {
            Ok(i) => {
                self.stats.new_connections += 1;
                Ok(i)
            }
            Err(e) => {
                if let Some(pool) = self.snat_pools.get_mut(ri) {
                    pool.release(&lip, p.proto, lport);
                }
                Err(match e {
                    InsertError::Full => DropReason::TableFull,
                    InsertError::Exists => DropReason::NoConnection,
                })
            }
        }
    }

    /// The first packet of a TCP or UDP flow through the source-NAT gateway.
    fn snat_flow<A: FrameAlloc<F = F>>(
        &mut self,
        p: Pkt,
        ri: usize,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        if p.proto == proto::TCP
            && p.tcp_flags & (tcp::flags::SYN | tcp::flags::ACK | tcp::flags::RST) != tcp::flags::SYN
        {
            return drop(DropReason::NoConnection);
        }
        if !self.verify_l4(&p, &f) {
            return drop(DropReason::BadChecksum);
        }
        match self.snat_insert(&p, ri) {
            Ok(idx) => self.forward(p, idx, Dir::Inbound, f, alloc, out),
            Err(r) => drop(r),
        }
    }

    /// ICMP echo through the source-NAT gateway, translated by identifier: requests out (a new flow when a rule
    /// matches), replies back. Gives the frame back when it is not such an echo (the caller handles it).
    fn snat_echo<A: FrameAlloc<F = F>>(
        &mut self,
        mut p: Pkt,
        local: Local,
        ty: u8,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Result<Verdict, F> {
        let d = f.data();
        let Some(idb) = d.get(p.l4 + 4..p.l4 + 6) else {
            return Err(f);
        };
        let id = u16::from_be_bytes([idb[0], idb[1]]);
        let request = ty == icmp4::ECHO_REQUEST;
        (p.sport, p.dport) = if request { (id, 0) } else { (0, id) };
        let t = Tuple {
            proto: proto::ICMP,
            src: p.src,
            sport: p.sport,
            dst: p.dst,
            dport: p.dport,
        };
        let h = self.conns.hash(&t);
        let (idx, dir) = match self.conns.lookup(&t, h) {
            Some(hit) => hit,
            None if request && local == Local::Transit => {
                let Some(ri) = self.snat_rule(&p) else {
                    return Err(f);
                };
                match self.snat_insert(&p, ri) {
                    Ok(idx) => (idx, Dir::Inbound),
                    Err(r) => return Ok(drop(r)),
                }
            }
            None if !request && local == Local::Lip => {
                let o = owner(id, self.snap.mask);
                if o != self.id && usize::from(o) < self.snap.workers {
                    self.stats.redirected += 1;
                    out.redirect.push((o, f));
                    return Ok(Verdict::Redirect { worker: o });
                }
                return Err(f);
            }
            None => return Err(f),
        };
        Ok(self.forward_echo(p, idx, dir, f, alloc, out))
    }

    /// Translates and sends an echo of source-NAT connection `idx`.
    fn forward_echo<A: FrameAlloc<F = F>>(
        &mut self,
        p: Pkt,
        idx: u32,
        dir: Dir,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        if p.ttl <= 1 {
            return self.icmp_error(&p, f, IcmpKind::TimeExceeded, DropReason::Ttl, alloc, out);
        }
        let c = *self.conns.get(idx);
        let exp = self
            .tick
            .saturating_add(self.snap.default_timeouts.of(State::Udp));
        if exp != c.expires {
            self.conns.set_expiry(idx, exp);
        }
        let (e, id) = match dir {
            Dir::Inbound => (
                Endpoints {
                    src: c.lip,
                    sport: 0,
                    dst: c.backend,
                    dport: 0,
                },
                c.lport,
            ),
            Dir::Reply => (
                Endpoints {
                    src: c.vip,
                    sport: 0,
                    dst: c.client,
                    dport: 0,
                },
                c.cport,
            ),
        };
        let Some(slot) = self.next_hop(idx, &c, dir, &e.dst) else {
            return drop(DropReason::NoRoute);
        };
        let Some(port) = self.neigh.get(slot).map(|n| n.port) else {
            return drop(DropReason::NoRoute);
        };
        let ihl = p.l4 - p.l3;
        if !nat::rewrite_echo_v4(&mut f.data_mut()[p.l3..], ihl, &e, id) {
            return drop(DropReason::Malformed);
        }
        self.emit(port, slot, p.l3, ethertype::IPV4, f, alloc, out)
    }

    /// The worker that keeps NAT-mode connections of client port `port` (their replies are addressed to it).
    fn nat_owner(&self, port: u16) -> u16 {
        (usize::from(port) % self.snap.workers.max(1)) as u16
    }

    /// Route lookup and neighbour slot for `dst`.
    fn resolve(&mut self, dst: &Addr, flow_hash: u64) -> Option<u32> {
        let hop = self.snap.routes.next_hop(dst, flow_hash)?;
        let nh = hop.via.unwrap_or(*dst);
        self.neigh.slot(hop.port, &nh)
    }

    /// Writes the Ethernet header before `l3` for `port` and sends, or holds the frame until the neighbour in
    /// `slot` resolves.
    #[allow(clippy::too_many_arguments)]
    fn emit<A: FrameAlloc<F = F>>(
        &mut self,
        port: u16,
        slot: u32,
        l3: usize,
        et: u16,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
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

    // ---- ICMP -------------------------------------------------------------------------------------------

    fn icmp4<A: FrameAlloc<F = F>>(
        &mut self,
        p: Pkt,
        local: Local,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let Ok(m) = icmp::Packet::new_checked(&d[p.l4..]) else {
            return drop(DropReason::Malformed);
        };
        if !f.rx_checksums_verified() && !m.verify_checksum(0) {
            return drop(DropReason::BadChecksum);
        }
        let ty = m.msg_type();
        let f = if !self.snap.snat.is_empty() && matches!(ty, icmp4::ECHO_REQUEST | icmp4::ECHO_REPLY) {
            match self.snat_echo(p, local, ty, f, alloc, out) {
                Ok(v) => return v,
                Err(f) => f,
            }
        } else {
            f
        };
        if local == Local::Transit {
            return self.kernel(p.in_port, f, out);
        }
        let mut f = f;
        if ty == icmp4::ECHO_REQUEST {
            let d = f.data_mut();
            let old = u16::from_be_bytes([d[p.l4], d[p.l4 + 1]]);
            d[p.l4] = icmp4::ECHO_REPLY;
            let new = u16::from_be_bytes([d[p.l4], d[p.l4 + 1]]);
            let c = checksum::update_u16(u16::from_be_bytes([d[p.l4 + 2], d[p.l4 + 3]]), old, new);
            d[p.l4 + 2..p.l4 + 4].copy_from_slice(&c.to_be_bytes());
            let mut ip = ipv4::Packet::new_unchecked(&mut d[p.l3..]);
            ip.set_src(to_v4(&p.dst));
            ip.set_dst(to_v4(&p.src));
            ip.set_ttl(64);
            ip.fill_checksum();
            return self.reply_to_sender(p.in_port, f, out);
        }
        if icmp::v4_is_error(ty) {
            return self.icmp_error_in(p, f, alloc, out);
        }
        drop(DropReason::Unsupported)
    }

    fn icmp6<A: FrameAlloc<F = F>>(
        &mut self,
        p: Pkt,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let msg = &d[p.l4..];
        let Ok(m) = icmp::Packet::new_checked(msg) else {
            return drop(DropReason::Malformed);
        };
        if !f.rx_checksums_verified() && !m.verify_checksum(pseudo6(&d[p.l3..], proto::ICMPV6, msg.len())) {
            return drop(DropReason::BadChecksum);
        }
        let ty = m.msg_type();
        if ty == icmp6::ECHO_REQUEST {
            let len = msg.len();
            let d = f.data_mut();
            d[p.l4] = icmp6::ECHO_REPLY;
            let mut ip = ipv6::Packet::new_unchecked(&mut d[p.l3..]);
            ip.set_src(&p.dst.into());
            ip.set_dst(&p.src.into());
            ip.set_hop_limit(64);
            let ps = pseudo6(&d[p.l3..], proto::ICMPV6, len);
            icmp::Packet::new_unchecked(&mut d[p.l4..]).fill_checksum(ps);
            return self.reply_to_sender(p.in_port, f, out);
        }
        if icmp::v6_is_error(ty) {
            return self.icmp_error_in(p, f, alloc, out);
        }
        drop(DropReason::Unsupported)
    }

    /// Whether an ICMP error may be sent now (token bucket: a burst of 100, then one per millisecond).
    fn icmp_allowed(&mut self) -> bool {
        let elapsed = self.now_ms.saturating_sub(self.icmp_refill_ms);
        if elapsed > 0 {
            self.icmp_tokens =
                (self.icmp_tokens + u32::try_from(elapsed).unwrap_or(u32::MAX)).min(ICMP_BURST);
            self.icmp_refill_ms = self.now_ms;
        }
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// Turns the frame into an ICMP error about itself, sent back to its source, and counts `reason`.
    fn icmp_error<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        mut f: F,
        kind: IcmpKind,
        reason: DropReason,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        self.stats.drop(reason);
        if !self.icmp_allowed() {
            return Verdict::Drop { reason };
        }
        let from = self.snap.port_addr(p.in_port, !p.v6).unwrap_or(p.dst);
        let (hdr, limit) = if p.v6 {
            (ipv6::HEADER_LEN + 8, 1280)
        } else {
            (ipv4::HEADER_LEN + 8, 576)
        };
        let quote = (f.data().len() - p.l3).min(limit - hdr);
        f.truncate(p.l3 + quote);
        if !f.prepend(hdr) {
            return Verdict::Drop { reason };
        }
        let (ty, code, rest) = match (kind, p.v6) {
            (IcmpKind::TimeExceeded, false) => (icmp4::TIME_EXCEEDED, icmp4::CODE_TTL_EXCEEDED, [0; 4]),
            (IcmpKind::TimeExceeded, true) => (icmp6::TIME_EXCEEDED, 0, [0; 4]),
            (IcmpKind::TooBig(mtu), false) => {
                let m = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
                (
                    icmp4::DEST_UNREACHABLE,
                    icmp4::CODE_FRAG_NEEDED,
                    [0, 0, m[0], m[1]],
                )
            }
            (IcmpKind::TooBig(mtu), true) => (
                icmp6::PACKET_TOO_BIG,
                0,
                u32::try_from(mtu).unwrap_or(u32::MAX).to_be_bytes(),
            ),
        };
        let l3 = p.l3;
        let msg_len = 8 + quote;
        let d = f.data_mut();
        icmp::Repr {
            msg_type: ty,
            code,
            rest,
        }
        .emit(&mut d[l3 + hdr - 8..]);
        if p.v6 {
            write_v6_header(&mut d[l3..], &from, &p.src, proto::ICMPV6, msg_len, 64);
            let ps = pseudo6(&d[l3..], proto::ICMPV6, msg_len);
            icmp::Packet::new_unchecked(&mut d[l3 + ipv6::HEADER_LEN..]).fill_checksum(ps);
        } else {
            ipv4::Repr {
                src: to_v4(&from),
                dst: to_v4(&p.src),
                protocol: proto::ICMP,
                payload_len: msg_len,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: false,
            }
            .emit(&mut d[l3..]);
            icmp::Packet::new_unchecked(&mut d[l3 + ipv4::HEADER_LEN..]).fill_checksum(0);
        }
        let et = if p.v6 { ethertype::IPV6 } else { ethertype::IPV4 };
        let Some(slot) = self.resolve(&p.src, 0) else {
            return Verdict::Drop { reason };
        };
        let port = self.neigh.get(slot).map_or(p.in_port, |e| e.port);
        self.stats.icmp_errors += 1;
        match self.emit(port, slot, l3, et, f, alloc, out) {
            Verdict::Forward { port } | Verdict::Reply { port } => Verdict::IcmpError { port, reason },
            Verdict::Held => Verdict::IcmpError { port, reason },
            _ => Verdict::Drop { reason },
        }
    }

    /// An ICMP error received about a NATed flow: translated for the other side of the connection (the client
    /// when a backend-side router or the backend complains, the backend when the client side does), between
    /// ICMPv4 and ICMPv6 for NAT64 (RFC 7915 §4.2, §5.2).
    fn icmp_error_in<A: FrameAlloc<F = F>>(
        &mut self,
        p: Pkt,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let d = f.data();
        let msg = &d[p.l4..];
        let (ty, code, rest) = (msg[0], msg[1], [msg[4], msg[5], msg[6], msg[7]]);
        let inner = &msg[8..];
        // The quoted packet: its header, protocol, addresses, and the offset of its transport header.
        let (e_proto, e_src, e_dst, e_l4) = if p.v6 {
            let Ok(ip) = ipv6::Packet::new_checked(inner).or_else(|_| {
                if inner.len() >= ipv6::HEADER_LEN {
                    Ok(ipv6::Packet::new_unchecked(inner))
                } else {
                    Err(())
                }
            }) else {
                return drop(DropReason::Malformed);
            };
            (
                ip.next_header(),
                ip.src().octets(),
                ip.dst().octets(),
                ipv6::HEADER_LEN,
            )
        } else {
            if inner.len() < ipv4::HEADER_LEN {
                return drop(DropReason::Malformed);
            }
            let ip = ipv4::Packet::new_unchecked(inner);
            let ihl = ip.header_len();
            if ihl < ipv4::HEADER_LEN {
                return drop(DropReason::Malformed);
            }
            (ip.protocol(), v4(ip.src()), v4(ip.dst()), ihl)
        };
        if !matches!(e_proto, proto::TCP | proto::UDP) || inner.len() < e_l4 + 8 {
            return drop(DropReason::Unsupported);
        }
        let e_sport = u16::from_be_bytes([inner[e_l4], inner[e_l4 + 1]]);
        let e_dport = u16::from_be_bytes([inner[e_l4 + 2], inner[e_l4 + 3]]);
        // The quoted packet is one we sent: its reverse is a packet of the connection.
        let t = Tuple {
            proto: e_proto,
            src: e_dst,
            sport: e_dport,
            dst: e_src,
            dport: e_sport,
        };
        let Some((idx, dir)) = self.conns.lookup(&t, self.conns.hash(&t)) else {
            return drop(DropReason::NoConnection);
        };
        let c = *self.conns.get(idx);
        // Towards the client (the error came from the backend side) or towards the backend.
        let (outer_src, outer_dst, q_src, q_sport, q_dst, q_dport, out_v6) = match dir {
            Dir::Reply => (
                c.vip,
                c.client,
                c.client,
                c.cport,
                c.vip,
                c.vport,
                c.flags & FLAG_CLIENT_V6 != 0,
            ),
            Dir::Inbound => (
                c.lip,
                c.backend,
                c.backend,
                c.bport,
                c.lip,
                c.lport,
                c.flags & FLAG_BACKEND_V6 != 0,
            ),
        };
        let Some((nty, ncode, nrest)) = map_icmp(p.v6, out_v6, ty, code, rest) else {
            return drop(DropReason::Unsupported);
        };
        // Rebuild: outer header, ICMP header, quoted header, quoted transport bytes (as many as fit).
        let q_l4 = &inner[e_l4..];
        let (outer_len, q_hdr_len, limit) = if out_v6 {
            (ipv6::HEADER_LEN, ipv6::HEADER_LEN, 1280)
        } else {
            (ipv4::HEADER_LEN, ipv4::HEADER_LEN, 576)
        };
        let q_len = q_l4.len().min(limit - outer_len - 8 - q_hdr_len);
        let mut quoted = q_l4[..q_len].to_vec();
        // Fix the quoted ports and, when quoted, its transport checksum.
        let old_sum =
            checksum::sum(&strip(&e_src)) + checksum::sum(&strip(&e_dst)) + checksum::sum(&quoted[0..4]);
        quoted[0..2].copy_from_slice(&q_sport.to_be_bytes());
        quoted[2..4].copy_from_slice(&q_dport.to_be_bytes());
        let qs = if out_v6 {
            q_src.to_vec()
        } else {
            q_src[12..].to_vec()
        };
        let qd = if out_v6 {
            q_dst.to_vec()
        } else {
            q_dst[12..].to_vec()
        };
        let new_sum = checksum::sum(&qs) + checksum::sum(&qd) + checksum::sum(&quoted[0..4]);
        let co = if e_proto == proto::TCP { 16 } else { 6 };
        if quoted.len() >= co + 2 {
            let old_c = u16::from_be_bytes([quoted[co], quoted[co + 1]]);
            if !(e_proto == proto::UDP && old_c == 0) {
                let nc = checksum::update_sums(old_c, old_sum, new_sum);
                quoted[co..co + 2].copy_from_slice(&nc.to_be_bytes());
            }
        }
        let q_total = q_hdr_len + quoted.len();
        let msg_len = 8 + q_total;
        let l3 = p.l3;
        let mut f = f;
        f.truncate(l3);
        if !f.append(outer_len + msg_len) {
            return drop(DropReason::NoBuffer);
        }
        let dm = f.data_mut();
        let m0 = l3 + outer_len;
        icmp::Repr {
            msg_type: nty,
            code: ncode,
            rest: nrest,
        }
        .emit(&mut dm[m0..]);
        let qh = m0 + 8;
        if out_v6 {
            write_v6_header(&mut dm[qh..], &q_src, &q_dst, e_proto, quoted.len(), 64);
        } else {
            ipv4::Repr {
                src: to_v4(&q_src),
                dst: to_v4(&q_dst),
                protocol: e_proto,
                payload_len: quoted.len(),
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: true,
            }
            .emit(&mut dm[qh..]);
        }
        dm[qh + q_hdr_len..qh + q_total].copy_from_slice(&quoted);
        if out_v6 {
            write_v6_header(&mut dm[l3..], &outer_src, &outer_dst, proto::ICMPV6, msg_len, 64);
            let ps = pseudo6(&dm[l3..], proto::ICMPV6, msg_len);
            icmp::Packet::new_unchecked(&mut dm[m0..m0 + msg_len]).fill_checksum(ps);
        } else {
            ipv4::Repr {
                src: to_v4(&outer_src),
                dst: to_v4(&outer_dst),
                protocol: proto::ICMP,
                payload_len: msg_len,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: false,
            }
            .emit(&mut dm[l3..]);
            icmp::Packet::new_unchecked(&mut dm[m0..m0 + msg_len]).fill_checksum(0);
        }
        let Some(slot) = self.resolve(&outer_dst, c.inbound_tuple().hash(self.snap.seed)) else {
            return drop(DropReason::NoRoute);
        };
        let port = self.neigh.get(slot).map_or(p.in_port, |e| e.port);
        self.stats.icmp_errors += 1;
        self.emit(
            port,
            slot,
            l3,
            if out_v6 { ethertype::IPV6 } else { ethertype::IPV4 },
            f,
            alloc,
            out,
        )
    }

    /// Sends a frame answered in place back to the MAC it came from.
    fn reply_to_sender(&mut self, in_port: u16, mut f: F, out: &mut Output<F>) -> Verdict {
        let Some(pt) = self.snap.ports.get(usize::from(in_port)) else {
            return drop(DropReason::Unsupported);
        };
        let mac = pt.mac;
        let mut e = ethernet::Frame::new_unchecked(f.data_mut());
        let src = e.src();
        e.set_dst(src);
        e.set_src(mac);
        self.stats.stack_replies += 1;
        self.tx(in_port, f, out);
        Verdict::Reply { port: in_port }
    }
}

/// The transport tuple of a plain TCP/UDP frame (no IPv6 extension headers), for warming caches only.
#[inline]
fn quick_tuple(d: &[u8]) -> Option<Tuple> {
    let mut l3 = ethernet::HEADER_LEN;
    let mut et = u16::from_be_bytes([*d.get(12)?, *d.get(13)?]);
    if et == ethertype::VLAN {
        et = u16::from_be_bytes([*d.get(16)?, *d.get(17)?]);
        l3 = ethernet::TAGGED_HEADER_LEN;
    }
    let ip = d.get(l3..)?;
    let (p, src, dst, l4) = match et {
        ethertype::IPV4 => {
            let h = ip.get(..ipv4::HEADER_LEN)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let src = v4(std::net::Ipv4Addr::new(h[12], h[13], h[14], h[15]));
            let dst = v4(std::net::Ipv4Addr::new(h[16], h[17], h[18], h[19]));
            (h[9], src, dst, ihl)
        }
        ethertype::IPV6 => {
            let h = ip.get(..ipv6::HEADER_LEN)?;
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&h[8..24]);
            dst.copy_from_slice(&h[24..40]);
            (h[6], src, dst, ipv6::HEADER_LEN)
        }
        _ => return None,
    };
    if p != proto::TCP && p != proto::UDP {
        return None;
    }
    let ports = ip.get(l4..l4 + 4)?;
    Some(Tuple {
        proto: p,
        src,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dst,
        dport: u16::from_be_bytes([ports[2], ports[3]]),
    })
}

/// Where a Full-NAT packet of connection `c` travelling `dir` goes: its new endpoints, and whether that side is
/// IPv6.
#[inline]
fn outbound(c: &Conn, dir: Dir) -> (Endpoints, bool) {
    match dir {
        Dir::Inbound => (
            Endpoints {
                src: c.lip,
                sport: c.lport,
                dst: c.backend,
                dport: c.bport,
            },
            c.flags & FLAG_BACKEND_V6 != 0,
        ),
        Dir::Reply => (
            Endpoints {
                src: c.vip,
                sport: c.vport,
                dst: c.client,
                dport: c.cport,
            },
            c.flags & FLAG_CLIENT_V6 != 0,
        ),
    }
}

/// The network-layer length of a packet of `len` bytes (network header `hdr` bytes) once translated between
/// `families` (it is IPv6, the output is IPv6).
#[inline]
fn translated_len(len: usize, hdr: usize, families: (bool, bool)) -> usize {
    match families {
        (false, false) | (true, true) => len,
        (true, false) => len - hdr + ipv4::HEADER_LEN,
        (false, true) => len - hdr + ipv6::HEADER_LEN,
    }
}

/// The IPv6 all-nodes multicast address.
const ALL_NODES: Addr = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// `a` is strictly after `b` in sequence space.
fn seq_after(a: u32, b: u32) -> bool {
    a != b && client_addr::seq_ge(a, b)
}

/// Gives back what a removed connection held: its pool port and its count on the backend.
fn release(c: &Conn, pools: &mut Pools, snat_pools: &mut [Pools], counts: &mut [u32]) {
    if c.flags & FLAG_POOLED != 0 {
        pools.release(&c.lip, c.proto, c.lport);
    }
    if c.flags & FLAG_SNAT != 0 {
        // Release ignores addresses a pool does not hold.
        for p in snat_pools.iter_mut() {
            p.release(&c.lip, c.proto, c.lport);
        }
    }
    if let Some(x) = counts.get_mut(c.uid as usize) {
        *x = x.saturating_sub(1);
    }
}

/// A broadcast ARP request from `mac`/`spa` for `tpa` (a gratuitous ARP when they are equal).
fn arp_request<A: FrameAlloc>(alloc: &mut A, mac: Mac, spa: &Addr, tpa: &Addr) -> Option<A::F> {
    let mut f = alloc.alloc()?;
    if !f.append(ethernet::HEADER_LEN + arp::LEN) {
        return None;
    }
    let d = f.data_mut();
    ethernet::Repr {
        dst: ethernet::BROADCAST,
        src: mac,
        vlan: None,
        ethertype: ethertype::ARP,
    }
    .emit(d);
    arp::Repr {
        op: arp::Operation::Request,
        sha: mac,
        spa: to_v4(spa),
        tha: [0; 6],
        tpa: to_v4(tpa),
    }
    .emit(&mut d[ethernet::HEADER_LEN..]);
    Some(f)
}

/// A neighbour-discovery message from `mac`/`src` to the multicast group `dst` (hop limit 255, checksum
/// filled).
fn ndp_frame<A: FrameAlloc>(
    alloc: &mut A,
    mac: Mac,
    src: &Addr,
    dst: &Addr,
    msg: &ndp::Repr,
) -> Option<A::F> {
    let mut f = alloc.alloc()?;
    let l4 = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    if !f.append(l4 + msg.len()) {
        return None;
    }
    let d = f.data_mut();
    ethernet::Repr {
        dst: ndp::multicast_mac(&(*dst).into()),
        src: mac,
        vlan: None,
        ethertype: ethertype::IPV6,
    }
    .emit(d);
    msg.emit(&mut d[l4..]);
    write_v6_header(
        &mut d[ethernet::HEADER_LEN..],
        src,
        dst,
        proto::ICMPV6,
        msg.len(),
        255,
    );
    let ps = pseudo6(&d[ethernet::HEADER_LEN..], proto::ICMPV6, msg.len());
    icmp::Packet::new_unchecked(&mut d[l4..]).fill_checksum(ps);
    Some(f)
}

/// Drops are counted by the caller of `handle`; this only names the reason.
fn drop(reason: DropReason) -> Verdict {
    Verdict::Drop { reason }
}

/// Sum of the IPv6 pseudo-header for the IPv6 header at the start of `ip6`.
fn pseudo6(ip6: &[u8], p: u8, len: usize) -> u32 {
    checksum::sum(&ip6[8..40]) + u32::from(p) + (len as u32 >> 16) + (len as u32 & 0xffff)
}

fn write_v6_header(buf: &mut [u8], src: &Addr, dst: &Addr, next: u8, payload: usize, hop: u8) {
    ipv6::Repr {
        src: (*src).into(),
        dst: (*dst).into(),
        next_header: next,
        payload_len: payload,
        hop_limit: hop,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(buf);
}

/// Lowers a SYN's MSS option (checksum kept valid).
fn clamp_mss(seg: &mut [u8], max: u16) {
    if let Ok(mut t) = tcp::Packet::new_checked(seg) {
        t.clamp_mss(max);
    }
}

/// An address as the bytes its family sums in a pseudo-header.
fn strip(a: &Addr) -> Vec<u8> {
    if is_v4(a) {
        a[12..].to_vec()
    } else {
        a.to_vec()
    }
}

/// Maps an ICMP error between families (RFC 7915 §4.2 and §5.2); same family keeps it. The MTU of a
/// too-big message is adjusted by the 20-byte header difference.
fn map_icmp(from_v6: bool, to_v6: bool, ty: u8, code: u8, rest: [u8; 4]) -> Option<(u8, u8, [u8; 4])> {
    match (from_v6, to_v6) {
        (false, false) | (true, true) => Some((ty, code, rest)),
        (false, true) => match (ty, code) {
            (icmp4::DEST_UNREACHABLE, icmp4::CODE_FRAG_NEEDED) => {
                let mtu = u32::from(u16::from_be_bytes([rest[2], rest[3]])) + 20;
                Some((icmp6::PACKET_TOO_BIG, 0, mtu.max(1280).to_be_bytes()))
            }
            (icmp4::DEST_UNREACHABLE, icmp4::CODE_PORT_UNREACHABLE) => {
                Some((icmp6::DEST_UNREACHABLE, icmp6::CODE_PORT_UNREACHABLE, [0; 4]))
            }
            (icmp4::DEST_UNREACHABLE, 9 | 10 | 13) => {
                Some((icmp6::DEST_UNREACHABLE, icmp6::CODE_ADMIN_PROHIBITED, [0; 4]))
            }
            (icmp4::DEST_UNREACHABLE, 0 | 1 | 5..=8 | 11 | 12) => {
                Some((icmp6::DEST_UNREACHABLE, icmp6::CODE_NO_ROUTE, [0; 4]))
            }
            (icmp4::TIME_EXCEEDED, c) => Some((icmp6::TIME_EXCEEDED, c, [0; 4])),
            _ => None,
        },
        (true, false) => match (ty, code) {
            (icmp6::PACKET_TOO_BIG, _) => {
                let mtu = u32::from_be_bytes(rest)
                    .saturating_sub(20)
                    .min(u32::from(u16::MAX)) as u16;
                let m = mtu.to_be_bytes();
                Some((
                    icmp4::DEST_UNREACHABLE,
                    icmp4::CODE_FRAG_NEEDED,
                    [0, 0, m[0], m[1]],
                ))
            }
            (icmp6::DEST_UNREACHABLE, icmp6::CODE_PORT_UNREACHABLE) => {
                Some((icmp4::DEST_UNREACHABLE, icmp4::CODE_PORT_UNREACHABLE, [0; 4]))
            }
            (icmp6::DEST_UNREACHABLE, icmp6::CODE_ADMIN_PROHIBITED) => {
                Some((icmp4::DEST_UNREACHABLE, 10, [0; 4]))
            }
            (icmp6::DEST_UNREACHABLE, _) => Some((icmp4::DEST_UNREACHABLE, 1, [0; 4])),
            (icmp6::TIME_EXCEEDED, c) => Some((icmp4::TIME_EXCEEDED, c, [0; 4])),
            _ => None,
        },
    }
}

/// An ICMP error the worker originates.
#[derive(Debug, Clone, Copy)]
enum IcmpKind {
    /// TTL / hop limit exceeded in transit.
    TimeExceeded,
    /// Larger than this MTU.
    TooBig(usize),
}
