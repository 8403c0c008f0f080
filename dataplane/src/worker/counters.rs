//! Per-backend counters of a worker: connections in the table and how many are established, connections
//! scheduled, and packets and bytes each way. Indexed by the backend's stable uid (dense, from the snapshot
//! builder), so they survive reloads; a connection whose backend left the topology (uid `u32::MAX`) counts
//! nowhere.

use super::Worker;
use crate::conn::Conn;
use crate::counters::WorkerCounters;
use crate::frame::Frame;
use crate::stats::BackendCounters;
use crate::tcp_state::{Dir, State};

/// Uids beyond this are not counted (the builder hands them out densely from 0; this bounds the table if a
/// record ever carried a wild one).
const MAX_UID: u32 = 1 << 20;

/// The counters of backend `uid` in `v`, grown to hold it.
#[inline(always)]
fn slot(v: &mut Vec<BackendCounters>, uid: u32) -> Option<&mut BackendCounters> {
    if uid >= MAX_UID {
        return None;
    }
    let i = uid as usize;
    if v.len() <= i {
        v.resize(i + 1, BackendCounters::default());
    }
    v.get_mut(i)
}

impl<F: Frame> Worker<F> {
    /// A connection entered the table: scheduled here (`created`) or applied from a peer's sync record.
    pub(super) fn count_open(&mut self, c: &Conn, created: bool) {
        if let Some(b) = slot(&mut self.backends, c.uid) {
            b.connections += 1;
            b.active += u32::from(c.state() == State::Established);
            b.created += u64::from(created);
        }
    }

    /// Connection of backend `uid` moved from `old` to `new`.
    #[inline]
    pub(super) fn count_state(&mut self, uid: u32, old: State, new: State) {
        if old == new {
            return;
        }
        if let Some(b) = slot(&mut self.backends, uid) {
            match (old == State::Established, new == State::Established) {
                (false, true) => b.active += 1,
                (true, false) => b.active = b.active.saturating_sub(1),
                _ => {}
            }
        }
    }

    /// A packet of a connection of backend `uid` travelling `dir`, `bytes` long from its IP header on.
    #[inline]
    pub(super) fn count_packet(&mut self, uid: u32, dir: Dir, bytes: usize) {
        if let Some(b) = slot(&mut self.backends, uid) {
            match dir {
                Dir::Inbound => {
                    b.in_packets += 1;
                    b.in_bytes += bytes as u64;
                }
                Dir::Reply => {
                    b.out_packets += 1;
                    b.out_bytes += bytes as u64;
                }
            }
        }
    }

    /// This worker's backend and local-address counters, for [`crate::counters::merge`].
    pub fn counters(&self) -> WorkerCounters {
        WorkerCounters {
            backends: self.backends.clone(),
            pools: self.pools.usage(),
            exhausted: self.pools.exhausted(),
            refused: self.refused.iter().map(|(k, r)| (*k, *r)).collect(),
        }
    }
}

/// A connection left the table.
pub(super) fn count_close(c: &Conn, counts: &mut [BackendCounters]) {
    if let Some(b) = counts.get_mut(c.uid as usize) {
        b.connections = b.connections.saturating_sub(1);
        if c.state() == State::Established {
            b.active = b.active.saturating_sub(1);
        }
    }
}
