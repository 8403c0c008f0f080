//! Connection sync in the worker: the records of this node's long-lived Full-NAT connections go out to its
//! holders (once a connection has lived past the threshold, on each later state change, and every refresh
//! period), a removed synced connection goes out as a delete, and other nodes' records come in as connections
//! marked synced — they translate like any other, age like any other, and are never synced on.

use super::pkt::NO_HOP;
use super::{Output, Worker};
use crate::cluster::record::{Op, Record};
use crate::conn::{Conn, FLAG_POOLED, FLAG_SNAT, FLAG_SYNCED, MODE_FULLNAT, MODE_MASK};
use crate::frame::Frame;
use crate::snapshot::TICK_MS;
use crate::tcp_state::{Dir, State};

impl<F: Frame> Worker<F> {
    /// Sends connection `idx`'s record when it is due (the caller checked that sync is on).
    #[inline]
    pub(super) fn sync_due(&mut self, idx: u32, out: &mut Output<F>) {
        let Some(policy) = self.snap.sync else {
            return;
        };
        let tick = self.tick;
        let c = self.conns.get(idx);
        if c.flags & (FLAG_SYNCED | FLAG_SNAT | MODE_MASK) != MODE_FULLNAT {
            return;
        }
        let due = if c.synced == 0 {
            matches!(c.state(), State::Established | State::Udp)
                && tick.wrapping_sub(c.born) >= policy.threshold
        } else {
            c.state != c.synced_state || tick.wrapping_sub(c.synced) >= policy.refresh
        };
        if !due {
            return;
        }
        out.sync.push(record(Op::Upsert, c, tick));
        let c = self.conns.get_mut(idx);
        c.synced = tick.max(1);
        c.synced_state = c.state;
    }

    /// Sends the records of every connection of ours already synced (a holder came back with an empty table).
    pub fn resync_all(&mut self, out: &mut Output<F>) {
        let tick = self.tick;
        out.sync.extend(
            self.conns
                .iter()
                .filter(|(_, c)| c.synced != 0 && c.flags & FLAG_SYNCED == 0)
                .map(|(_, c)| record(Op::Upsert, c, tick)),
        );
    }

    /// Applies another node's record: a new connection marked synced, an update of one, or its removal.
    pub fn apply_synced(&mut self, r: &Record) {
        let t = r.conn().inbound_tuple();
        let hit = self.conns.lookup(&t, self.conns.hash(&t));
        let ttl = u32::try_from(u64::from(r.ttl_ms) / TICK_MS)
            .unwrap_or(u32::MAX)
            .max(1);
        match (r.op, hit) {
            (Op::Upsert, Some((idx, Dir::Inbound))) => {
                if self.conns.get(idx).flags & FLAG_SYNCED == 0 {
                    // Our own connection (a record of ours bounced back): ours is the truth.
                    return;
                }
                let c = self.conns.get_mut(idx);
                c.state = r.state;
                (c.sp, c.sp_win_reply, c.sp_win_in, c.sp_delta) =
                    (r.sp, r.sp_win_reply, r.sp_win_in, r.sp_delta);
                self.conns.set_expiry(idx, self.tick.saturating_add(ttl));
            }
            (Op::Upsert, _) => {
                let mut c = r.conn();
                c.flags = (c.flags & !FLAG_POOLED) | FLAG_SYNCED;
                c.expires = self.tick.saturating_add(ttl);
                c.born = self.tick;
                c.nh_fwd = NO_HOP;
                c.nh_rev = NO_HOP;
                c.route_gen = self.route_gen;
                let si = self.snap.service(&c.vip(), c.proto, c.vport);
                c.service = si.unwrap_or(u16::MAX);
                c.svc_gen = self.snap.generation as u16;
                c.uid = si
                    .and_then(|si| self.snap.services.get(usize::from(si)))
                    .and_then(|s| {
                        s.backends
                            .iter()
                            .find(|b| b.addr == c.backend() && (b.port == c.bport || b.port == 0))
                    })
                    .map_or(u32::MAX, |b| b.uid);
                if self.conns.insert(c).is_ok() {
                    self.count_open(&c, false);
                }
            }
            (Op::Delete, Some((idx, _))) if self.conns.get(idx).flags & FLAG_SYNCED != 0 => {
                let mut ignored = Output::new(false);
                self.forget(idx, &mut ignored);
            }
            (Op::Delete, _) => {}
        }
    }
}

/// The record of connection `c` at tick `now`, with the time it has left.
fn record(op: Op, c: &Conn, now: u32) -> Record {
    let left = u64::from(c.expires.saturating_sub(now)) * TICK_MS;
    Record::of(op, c, u32::try_from(left).unwrap_or(u32::MAX))
}

/// A removed connection of ours that was synced: a delete for the holders.
pub(super) fn gone(c: &Conn, now: u32, out: &mut Vec<Record>) {
    if c.synced != 0 && c.flags & FLAG_SYNCED == 0 {
        out.push(record(Op::Delete, c, now));
    }
}
