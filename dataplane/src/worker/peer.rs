//! Second chance: a segment of a flow this node does not know, from a router, handed to a peer node that may
//! hold it — over another port, or back out of the same one on a one-armed node.

use super::pkt::{drop, Hop, Pkt};
use super::{Output, Verdict, Worker};
use crate::frame::{Frame, FrameAlloc};
use crate::stats::DropReason;

impl<F: Frame> Worker<F> {
    /// Whether frame `f`, received on `port`, comes from one of the routers (a next hop of a route there).
    /// Frames a peer node handed over come from that node's MAC, never a router's, so they are never handed
    /// on again.
    pub(super) fn sent_by_router(&self, port: u16, f: &F) -> bool {
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
    /// router moved the flow when a node was drained, added or came back. Peers on another port than the one
    /// the segment came in on are preferred (two-armed nodes reach them over the backend segment); a one-armed
    /// node hands it back out of the same port to a peer there. Only segments from a router are handed on
    /// (see [`Worker::sent_by_router`]), so nothing loops between nodes.
    pub(super) fn hand_to_peer<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        h: u64,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Verdict {
        let peers = &self.snap.peers;
        let elsewhere = peers.iter().filter(|(port, _)| *port != p.in_port).count();
        let pick = |n: usize| (h % n.max(1) as u64) as usize;
        let chosen = if elsewhere > 0 {
            peers
                .iter()
                .filter(|(port, _)| *port != p.in_port)
                .nth(pick(elsewhere))
        } else {
            peers.get(pick(peers.len()))
        };
        let Some(&(port, peer)) = chosen else {
            return drop(DropReason::NoConnection);
        };
        let Some(slot) = self.neigh.slot(port, &peer) else {
            return drop(DropReason::NoRoute);
        };
        self.stats.peer_forwarded += 1;
        self.emit(Hop { port, slot }, p.l3, p.v6, f, alloc, out)
    }
}
