//! Connection setup for a new flow to a service, in every forwarding mode: the checks a first packet must
//! pass, the backend (persistence, then the service's scheduler), the translation's local side (a pool address
//! and port for Full-NAT, the client's own for NAT and DR, a tunnel source), and the record in the table.

use anylb_conf::{ClientAddress, Forwarding};

use super::pkt::{drop, insert_error, IcmpKind, Pkt, NO_HOP};
use super::{release, Output, Verdict, Worker};
use crate::conn::{
    Conn, CLA_NONE, CLA_PP_PENDING, CLA_PP_UDP, CLA_TOA, CLA_UOA, FLAG_BACKEND_V6, FLAG_CLIENT_V6,
    FLAG_POOLED, MODE_DR, MODE_FULLNAT, MODE_NAT, MODE_TUNNEL,
};
use crate::flow::is_v4;
use crate::frame::{Frame, FrameAlloc};
use crate::sched::{self, Candidates};
use crate::stats::DropReason;
use crate::tcp_state::{Dir, State};
use crate::wire::{proto, quic, udp};

impl<F: Frame> Worker<F> {
    /// The first packet of a flow to a VIP: opens a connection and forwards the packet through it.
    pub(super) fn new_conn<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let Some(si) = self.snap.service(&p.dst, p.proto, p.dport) else {
            return drop(DropReason::NoService);
        };
        if self.snap.services[usize::from(si)].forwarding == Forwarding::Nat {
            // The backend's replies are addressed to the client's port: keep the connection on the worker
            // they are steered to.
            let o = self.nat_owner(p.sport);
            if o != self.id {
                return self.redirect(o, f, out);
            }
        }
        if p.proto == proto::TCP && !p.opens() {
            return drop(DropReason::NoConnection);
        }
        // A first fragment's checksum covers fragments not seen yet: the backend checks it.
        if p.frag.is_none() && !self.verify_l4(p, &f) {
            return drop(DropReason::BadChecksum);
        }
        if p.ttl <= 1 {
            return self.icmp_error(p, f, IcmpKind::TimeExceeded, DropReason::Ttl, alloc, out);
        }
        if let Err(r) = self.admission(p, si) {
            return self.refuse(p, si, r, f, out);
        }
        if p.proto == proto::TCP && self.snap.services[usize::from(si)].syn_proxy {
            return self.syn_cookie(p, si, f, out);
        }
        let opened = match self.quic_backend(p, si, &f) {
            Some(bi) => Ok(bi),
            None => self.schedule(p, si),
        }
        .and_then(|bi| self.open(p, si, bi));
        match opened {
            Ok(idx) => self.forward(p, idx, Dir::Inbound, f, alloc, out),
            Err(r) => {
                self.count_refusal(si, r);
                drop(r)
            }
        }
    }

    /// For a QUIC service, the backend a short-header packet's connection ID names, if that backend takes
    /// connections: a connection that migrated to a new client address or port stays where it is. Handshake
    /// packets (long headers) and unknown or unavailable server IDs are for the scheduler.
    fn quic_backend(&mut self, p: &Pkt, si: u16, f: &F) -> Option<u16> {
        let svc = self.snap.services.get(usize::from(si))?;
        let q = svc.quic.as_ref()?;
        if p.proto != proto::UDP {
            return None;
        }
        let payload = f.data().get(p.l4 + udp::HEADER_LEN..)?;
        let id = quic::Packet::new_checked(payload)
            .ok()?
            .server_id(q.offset, q.len)?;
        let bi = *q.ids.get(&id)?;
        if svc.weights.get(usize::from(bi)).copied().unwrap_or(0) == 0 {
            return None;
        }
        self.stats.quic_routed += 1;
        Some(bi)
    }

    /// The backend of service `si` for a new flow: the client's persisted one while it lasts and still has
    /// weight, else the scheduler's choice (remembered when the service persists).
    pub(super) fn schedule(&mut self, p: &Pkt, si: u16) -> Result<u16, DropReason> {
        let snap = self.snap.clone();
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
                    .map(|b| self.backends.get(b.uid as usize).map_or(0, |c| c.connections))
                    .collect();
                let c = Candidates {
                    weights: &svc.weights,
                    conns: &conns,
                    maglev: &svc.maglev,
                };
                let mh = p.tuple().hash(snap.seed);
                sched::pick(
                    svc.sched,
                    &mut self.sched[usize::from(si)],
                    &c,
                    mh,
                    &p.src,
                    snap.seed,
                )
                .ok_or(DropReason::NoBackend)?
            }
        };
        let bi = self.below_threshold(svc, bi, p.tuple().hash(snap.seed))?;
        if let Some(ticks) = svc.persistence {
            self.persist
                .insert(persist_key, (bi, self.tick.saturating_add(ticks)));
        }
        Ok(bi)
    }

    /// `bi`, or when it is at its upper connection threshold the next backend that is not: along the Maglev
    /// table from the flow's slot (Maglev and sh keep their spread), else in backend order.
    fn below_threshold(
        &mut self,
        svc: &crate::snapshot::Service,
        bi: u16,
        h: u64,
    ) -> Result<u16, DropReason> {
        if svc.backends.iter().all(|b| b.upper == 0) {
            return Ok(bi);
        }
        let usable = |w: &mut Self, i: u16| {
            let i = usize::from(i);
            svc.weights.get(i).is_some_and(|&wt| wt > 0) && !w.overloaded(&svc.backends[i])
        };
        if usable(self, bi) {
            return Ok(bi);
        }
        let table = svc.maglev.entries();
        let n = svc.backends.len();
        let order: Box<dyn Iterator<Item = u16>> = match svc.sched {
            sched::Kind::Maglev | sched::Kind::Sh if !table.is_empty() => {
                let start = (h % table.len() as u64) as usize;
                Box::new((1..=table.len()).map(move |k| table[(start + k) % table.len()]))
            }
            _ => Box::new((1..=n).map(move |k| ((usize::from(bi) + k) % n) as u16)),
        };
        for i in order {
            if usize::from(i) < n && usable(self, i) {
                return Ok(i);
            }
        }
        Err(DropReason::Overloaded)
    }

    /// Inserts the connection of a new flow to backend `bi` of service `si`; returns its index.
    pub(super) fn open(&mut self, p: &Pkt, si: u16, bi: u16) -> Result<u32, DropReason> {
        let snap = self.snap.clone();
        let svc = &snap.services[usize::from(si)];
        let b = &svc.backends[usize::from(bi)];
        let backend_v6 = !is_v4(&b.addr);
        let (lip, lport, mut flags) = match svc.forwarding {
            Forwarding::Fullnat | Forwarding::Snat => {
                let (lip, lport) = self
                    .pools
                    .alloc(backend_v6, p.proto)
                    .ok_or(DropReason::PoolExhausted)?;
                (lip, lport, FLAG_POOLED | MODE_FULLNAT)
            }
            Forwarding::Nat => (p.src, p.sport, MODE_NAT),
            Forwarding::Dr => (p.src, p.sport, MODE_DR),
            Forwarding::Tunnel => {
                let src = self
                    .tunnel_source(&b.addr, p.tuple().hash(snap.seed))
                    .ok_or(DropReason::NoRoute)?;
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
        let cla = match (svc.forwarding, svc.client_address, p.proto) {
            (Forwarding::Fullnat, ClientAddress::Toa, proto::TCP) => CLA_TOA,
            (Forwarding::Fullnat, ClientAddress::ProxyV2, proto::TCP) => CLA_PP_PENDING,
            (Forwarding::Fullnat, ClientAddress::Uoa, proto::UDP) => CLA_UOA,
            (Forwarding::Fullnat, ClientAddress::ProxyV2, proto::UDP) => CLA_PP_UDP,
            _ => CLA_NONE,
        };
        // UDP: the datagrams still to carry the client's address (TCP sets its first sequence number here).
        let cla_seq = if matches!(cla, CLA_UOA | CLA_PP_UDP) {
            svc.client_address_datagrams
        } else {
            0
        };
        let c = Conn {
            cla,
            cla_seq,
            cport: p.sport,
            vport: p.dport,
            lport,
            bport: if b.port == 0 { p.dport } else { b.port },
            expires: self.tick.saturating_add(svc.timeouts.of(state)),
            born: self.tick,
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
            ..Conn::addressed(p.src, p.dst, lip, b.addr)
        };
        let idx = self.conns.insert(c).map_err(|e| {
            if flags & FLAG_POOLED != 0 {
                self.pools.release(&lip, p.proto, lport);
            }
            insert_error(e)
        })?;
        self.count_open(&c, true);
        self.stats.new_connections += 1;
        Ok(idx)
    }

    /// Removes connection `idx` now, giving back its local port and its count on the backend (and telling the
    /// holders, when it was synced).
    pub(super) fn forget(&mut self, idx: u32, out: &mut Output<F>) {
        let c = self.conns.remove(idx);
        if self.snap.sync.is_some() {
            super::sync::gone(&c, self.tick, &mut out.sync);
        }
        release(&c, &mut self.pools, &mut self.snat_pools, &mut self.backends);
    }
}
