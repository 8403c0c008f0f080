//! Who may open a connection, and to which backend: the node's and the service's deny lists, the service's
//! allow list, its new-connection rate limit (a token bucket per service or per client, this worker's share
//! of the rate), and the backends' connection thresholds (IPVS `-x/-y`). Only new flows are judged: the
//! connections already in the table keep going whatever a reload changes.

use super::pkt::{drop, Pkt, Segment};
use super::{Output, Verdict, Worker};
use crate::frame::Frame;
use crate::snapshot::{Backend, RateLimit};
use crate::stats::DropReason;
use crate::wire::{proto, tcp};

/// Client buckets kept per worker; when full, buckets idle long enough to be full again are forgotten.
const CLIENT_BUCKETS: usize = 65_536;

/// A token bucket, in thousandths of a token so that a low rate still refills every millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bucket {
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    /// A full bucket.
    pub(super) fn full(rl: &RateLimit, now_ms: u64) -> Bucket {
        Bucket {
            milli: u64::from(rl.burst) * 1000,
            at_ms: now_ms,
        }
    }

    /// Refills for the time since the last take, then takes a token if there is one.
    pub(super) fn take(&mut self, rl: &RateLimit, now_ms: u64) -> bool {
        let cap = u64::from(rl.burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.milli = (self.milli + elapsed * u64::from(rl.per_sec)).min(cap);
        self.at_ms = now_ms;
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether, refilled to `now_ms`, it would be full (its client idle long enough to be forgotten).
    fn idle(&self, rl: &RateLimit, now_ms: u64) -> bool {
        let refill = now_ms.saturating_sub(self.at_ms) * u64::from(rl.per_sec);
        self.milli + refill >= u64::from(rl.burst) * 1000
    }
}

impl<F: Frame> Worker<F> {
    /// Whether the first packet of a flow from `p.src` to service `si` may open a connection: the reason it
    /// may not.
    pub(super) fn admission(&mut self, p: &Pkt, si: u16) -> Result<(), DropReason> {
        if self.snap.deny.contains(&p.src) {
            return Err(DropReason::DeniedNode);
        }
        let svc = &self.snap.services[usize::from(si)];
        if svc.deny.contains(&p.src) {
            return Err(DropReason::Denied);
        }
        if !svc.allow.is_empty() && !svc.allow.contains(&p.src) {
            return Err(DropReason::NotAllowed);
        }
        let Some(rl) = svc.rate_limit else {
            return Ok(());
        };
        let now = self.now_ms;
        let ok = if rl.per_client {
            if self.client_buckets.len() >= CLIENT_BUCKETS && !self.client_buckets.contains_key(&(si, p.src))
            {
                self.client_buckets.retain(|_, b| !b.idle(&rl, now));
            }
            if self.client_buckets.len() >= CLIENT_BUCKETS && !self.client_buckets.contains_key(&(si, p.src))
            {
                // Every client is busy: the newcomer waits for room like an empty bucket.
                false
            } else {
                self.client_buckets
                    .entry((si, p.src))
                    .or_insert_with(|| Bucket::full(&rl, now))
                    .take(&rl, now)
            }
        } else {
            let i = usize::from(si);
            if self.buckets.len() <= i {
                self.buckets.resize(i + 1, None);
            }
            self.buckets[i]
                .get_or_insert_with(|| Bucket::full(&rl, now))
                .take(&rl, now)
        };
        if ok {
            Ok(())
        } else {
            Err(DropReason::RateLimited)
        }
    }

    /// A new flow refused by [`admission`](Self::admission): dropped, or for a TCP SYN over the rate of a
    /// service that says so, answered with a RST from the VIP.
    pub(super) fn refuse(
        &mut self,
        p: &Pkt,
        si: u16,
        reason: DropReason,
        f: F,
        out: &mut Output<F>,
    ) -> Verdict {
        self.count_refusal(si, reason);
        let reset = reason == DropReason::RateLimited
            && p.proto == proto::TCP
            && self.snap.services[usize::from(si)]
                .rate_limit
                .is_some_and(|rl| rl.reset);
        if !reset {
            return drop(reason);
        }
        self.stats.drop(reason);
        self.reset(p, f, out)
    }

    /// Counts a refused new flow on its service (by VIP, protocol and port, which reloads keep).
    pub(super) fn count_refusal(&mut self, si: u16, reason: DropReason) {
        let mut one = crate::counters::Refused::default();
        if let (true, Some(s)) = (one.count(reason), self.snap.services.get(usize::from(si))) {
            self.refused
                .entry((s.vip, s.proto, s.port))
                .or_default()
                .add(&one);
        }
    }

    /// Answers the TCP segment of `p` with a RST from where it was sent to (RFC 9293 §3.10.7.1: ACK of the
    /// segment's sequence space, no data, no options), back through the port and MAC it came from.
    fn reset(&mut self, p: &Pkt, mut f: F, out: &mut Output<F>) -> Verdict {
        let (seq, len, flags) = {
            let Ok(t) = tcp::Packet::new_checked(&f.data()[p.l4..]) else {
                return drop(DropReason::Malformed);
            };
            (t.seq(), t.payload().len() as u32, t.flags())
        };
        let ack = seq
            .wrapping_add(len)
            .wrapping_add(u32::from(flags & tcp::flags::SYN != 0) + u32::from(flags & tcp::flags::FIN != 0));
        let seg = Segment {
            ack,
            flags: tcp::flags::RST | tcp::flags::ACK,
            ..Segment::back_to_sender(p)
        };
        // The IP header is written again where it was: after an IPv4 header with options, the TCP header
        // moves up.
        f.truncate(p.l3 + seg.len());
        seg.write(&mut f.data_mut()[p.l3..]);
        self.reply_to_sender(p.in_port, f, out)
    }

    /// Whether backend `b` of the service is at its upper threshold on this worker, or has not yet come back
    /// under its lower one since it was.
    pub(super) fn overloaded(&mut self, b: &Backend) -> bool {
        if b.upper == 0 {
            return false;
        }
        let conns = self.backends.get(b.uid as usize).map_or(0, |c| c.connections);
        let i = b.uid as usize;
        if self.overload.len() <= i {
            self.overload.resize(i + 1, false);
        }
        let over = &mut self.overload[i];
        if conns >= b.upper {
            *over = true;
        } else if conns <= b.lower {
            *over = false;
        }
        *over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_its_burst_and_refills_at_its_rate() {
        let rl = RateLimit {
            per_sec: 10,
            burst: 3,
            per_client: false,
            reset: false,
        };
        let mut b = Bucket::full(&rl, 0);
        assert!((0..3).all(|_| b.take(&rl, 0)), "the burst at once");
        assert!(!b.take(&rl, 0));
        assert!(!b.take(&rl, 99), "a tenth of a second: 0.99 token");
        assert!(b.take(&rl, 100));
        assert!(b.take(&rl, 10_000) && b.take(&rl, 10_000) && b.take(&rl, 10_000));
        assert!(!b.take(&rl, 10_000), "refilled to the burst, not beyond");
        assert!(b.idle(&rl, 10_300));
        assert!(!b.idle(&rl, 10_200));
    }
}
