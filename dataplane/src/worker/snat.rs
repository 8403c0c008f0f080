//! The source-NAT gateway: TCP, UDP and ICMP echo flows from inside leave from a pool address, and their
//! replies come back.

use super::pkt::{drop, insert_error, IcmpKind, Pkt, NO_HOP};
use super::{Output, Verdict, Worker};
use crate::conn::{Conn, FLAG_BACKEND_V6, FLAG_CLIENT_V6, FLAG_SNAT, MODE_FULLNAT};
use crate::flow::Tuple;
use crate::frame::{Frame, FrameAlloc};
use crate::nat::{self, Endpoints};
use crate::pool::owner;
use crate::snapshot::Local;
use crate::stats::DropReason;
use crate::tcp_state::{Dir, State};
use crate::wire::icmp::v4 as icmp4;
use crate::wire::proto;

impl<F: Frame> Worker<F> {
    /// The first source-NAT rule for a flow from `p.src` over `p.proto` whose destination leaves through the
    /// rule's port.
    pub(super) fn snat_rule(&self, p: &Pkt) -> Option<usize> {
        let snap = &self.snap;
        let out_port = snap.routes.next_hop(&p.dst, 0)?.port;
        snap.snat
            .iter()
            .position(|r| r.out_port == out_port && r.matches(&p.src, p.proto))
    }

    /// A connection for a new flow through source-NAT rule `ri` (`p.sport`/`p.dport` are the ICMP echo
    /// identifier and 0 for pings).
    pub(super) fn snat_insert(&mut self, p: &Pkt, ri: usize) -> Result<u32, DropReason> {
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
            ..Conn::addressed(p.src, p.dst, lip, p.dst)
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
                Err(insert_error(e))
            }
        }
    }

    /// The first packet of a TCP or UDP flow through the source-NAT gateway.
    pub(super) fn snat_flow<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        ri: usize,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        if p.proto == proto::TCP && !p.opens() {
            return drop(DropReason::NoConnection);
        }
        if !self.verify_l4(p, &f) {
            return drop(DropReason::BadChecksum);
        }
        match self.snat_insert(p, ri) {
            Ok(idx) => self.forward(p, idx, Dir::Inbound, f, alloc, out),
            Err(r) => drop(r),
        }
    }

    /// ICMP echo through the source-NAT gateway, translated by identifier: requests out (a new flow when a rule
    /// matches), replies back. Gives the frame back when it is not such an echo (the caller handles it).
    pub(super) fn snat_echo<A: FrameAlloc<F = F>>(
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
                    return Ok(self.redirect(o, f, out));
                }
                return Err(f);
            }
            None => return Err(f),
        };
        Ok(self.forward_echo(&p, idx, dir, f, alloc, out))
    }

    /// Translates and sends an echo of source-NAT connection `idx`.
    pub(super) fn forward_echo<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        idx: u32,
        dir: Dir,
        mut f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        if p.ttl <= 1 {
            return self.icmp_error(p, f, IcmpKind::TimeExceeded, DropReason::Ttl, alloc, out);
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
                    src: c.lip(),
                    sport: 0,
                    dst: c.backend(),
                    dport: 0,
                    seq_add: 0,
                    ack_add: 0,
                },
                c.lport,
            ),
            Dir::Reply => (
                Endpoints {
                    src: c.vip(),
                    sport: 0,
                    dst: c.client(),
                    dport: 0,
                    seq_add: 0,
                    ack_add: 0,
                },
                c.cport,
            ),
        };
        let Some(hop) = self.next_hop(idx, &c, dir, &e.dst) else {
            return drop(DropReason::NoRoute);
        };
        let ihl = p.l4 - p.l3;
        if !nat::rewrite_echo_v4(&mut f.data_mut()[p.l3..], ihl, &e, id) {
            return drop(DropReason::Malformed);
        }
        self.emit(hop, p.l3, false, f, alloc, out)
    }
}
