//! The SYN-proxy of a TCP Full-NAT service: the node does the client's handshake itself, with a SYN cookie as
//! its sequence number, and keeps nothing for a SYN. An ACK that returns a valid cookie (minted here or by any
//! node with the cluster's key) opens the connection: the client's SYN is rebuilt from the cookie and sent to
//! the scheduled backend, and the client's segments are held until the backend's SYN-ACK arrives. That SYN-ACK
//! goes no further: it fixes the shift between the cookie and the backend's sequence numbers, which every
//! segment of the connection then gets (sequence numbers towards the client, acknowledgements and SACK blocks
//! towards the backend), with the windows rescaled when the backend scales them otherwise than the client was
//! told.
//!
//! ```text
//!  client                      node                         backend
//!    | SYN seq=x                 |                              |
//!    |-------------------------->|  cookie c (no state)         |
//!    |          SYN-ACK seq=c    |                              |
//!    |<--------------------------|                              |
//!    | ACK ack=c+1               |  valid: connection, held     |
//!    |-------------------------->|  SYN seq=x (client's options)|
//!    |                           |----------------------------->|
//!    |                           |          SYN-ACK seq=y       |
//!    |                           |<-----------------------------|  shift y-c
//!    |                           |  ACK ack=y+1, held segments  |
//!    |                           |----------------------------->|
//! ```
//!
//! Timestamps are declined (the SYN-ACK carries none, so neither side uses them on the connection): the
//! backend's timestamp clock would differ from the node's. Held segments ([`super::held`]) are bounded per
//! connection and per worker; an overflow is dropped (`syn_proxy_held`) and the client sends it again.

use super::held::HeldKey;
use super::pkt::{drop, Pkt, Segment};
use super::{Output, Verdict, Worker};
use crate::client_addr;
use crate::conn::{SP_PENDING, SP_SPLICED};
use crate::flow::is_v4;
use crate::frame::{Frame, FrameAlloc};
use crate::snapshot::SynProxyPolicy;
use crate::stats::DropReason;
use crate::syncookie::{self, Flow, SynOptions};
use crate::tcp_state::Dir;
use crate::wire::checksum;
use crate::wire::tcp::{self, HandshakeOptions, HANDSHAKE_OPTIONS_MAX};

/// A backend that has not answered the SYN in this long gets it again with the client's next segment.
const SYN_RESEND_MS: u64 = 1000;

impl<F: Frame> Worker<F> {
    /// A SYN to a SYN-proxy service: answered from the VIP with a SYN-ACK whose sequence number is a cookie
    /// carrying the client's MSS, window scale and SACK-permitted. Nothing is kept.
    pub(super) fn syn_cookie(&mut self, p: &Pkt, si: u16, mut f: F, out: &mut Output<F>) -> Verdict {
        let Some(policy) = self.snap.syn_proxy else {
            return drop(DropReason::Unsupported);
        };
        let (isn, offered) = {
            let Ok(t) = tcp::Packet::new_checked(&f.data()[p.l4..]) else {
                return drop(DropReason::Malformed);
            };
            (t.seq(), HandshakeOptions::parse(t.options()))
        };
        let o = SynOptions {
            mss: offered.mss.unwrap_or(536),
            wscale: offered.wscale,
            sack: offered.sack_permitted,
        };
        let cookie = syncookie::mint(&policy.key, self.cookie_slot(), &flow_of(p), isn, o);
        let mine = HandshakeOptions {
            mss: Some(self.proxy_mss(p, si)),
            wscale: offered.wscale.map(|_| policy.wscale),
            sack_permitted: offered.sack_permitted,
            timestamps: None,
        };
        let mut opts = [0u8; HANDSHAKE_OPTIONS_MAX];
        let n = mine.emit(&mut opts);
        let seg = Segment {
            seq: cookie,
            ack: isn.wrapping_add(1),
            flags: tcp::flags::SYN | tcp::flags::ACK,
            window: policy.window,
            options: &opts[..n],
            ..Segment::back_to_sender(p)
        };
        if !fit(&mut f, p.l3 + seg.len()) {
            return drop(DropReason::NoBuffer);
        }
        seg.write(&mut f.data_mut()[p.l3..]);
        self.stats.syn_cookies += 1;
        self.reply_to_sender(p.in_port, f, out)
    }

    /// A segment to SYN-proxy service `si` with no connection. An ACK returning a valid cookie opens the
    /// connection: the client's SYN, rebuilt from the cookie, goes to the scheduled backend and this segment
    /// is held until the backend answers. Anything else is handed back (`Err`) for the caller to pass to a
    /// peer node or drop as `bad_cookie`.
    pub(super) fn cookie_ack<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        si: u16,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Result<Verdict, F> {
        let Some(policy) = self.snap.syn_proxy else {
            return Err(f);
        };
        if p.tcp_flags & (tcp::flags::ACK | tcp::flags::SYN | tcp::flags::RST) != tcp::flags::ACK {
            return Err(f);
        }
        let (seq, ack, window) = match tcp::Packet::new_checked(&f.data()[p.l4..]) {
            Ok(t) => (t.seq(), t.ack(), t.window()),
            Err(_) => return Err(f),
        };
        let (isn, cookie) = (seq.wrapping_sub(1), ack.wrapping_sub(1));
        let Some(o) = self.check_cookie(&policy, p, isn, cookie) else {
            return Err(f);
        };
        if !self.verify_l4(p, &f) {
            return Ok(drop(DropReason::BadChecksum));
        }
        let opened = self.schedule(p, si).and_then(|bi| self.open(p, si, bi));
        let idx = match opened {
            Ok(idx) => idx,
            Err(r) => {
                self.count_refusal(si, r);
                return Ok(drop(r));
            }
        };
        self.stats.syn_proxied += 1;
        {
            let c = self.conns.get_mut(idx);
            c.sp = SP_PENDING;
            c.sp_delta = cookie;
            // What the client was told about scaling (low nibble), until the backend says its own.
            c.sp_win_reply = o.wscale.map_or(0, |_| policy.wscale);
            c.sp_win_in = o.wscale.unwrap_or(0);
        }
        let key = (p.src, p.sport, p.dst, p.dport);
        self.held.open(key, self.now_ms);
        let v = self.hold(key, p.in_port, f);
        // The client's SYN as it was: its sequence number, its options, its window unscaled.
        let w = u32::from(window) << o.wscale.unwrap_or(0).min(14);
        self.backend_syn(p, idx, isn, o, w.min(0xffff) as u16, alloc, out);
        Ok(v)
    }

    /// Rebuilds the client's SYN of connection `idx` (`p` one of its client segments) and forwards it to the
    /// backend through the connection, like any client segment.
    #[allow(clippy::too_many_arguments)]
    fn backend_syn<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        idx: u32,
        isn: u32,
        o: SynOptions,
        window: u16,
        alloc: &mut A,
        out: &mut Output<F>,
    ) {
        let theirs = HandshakeOptions {
            mss: Some(o.mss),
            wscale: o.wscale,
            sack_permitted: o.sack,
            timestamps: None,
        };
        let mut opts = [0u8; HANDSHAKE_OPTIONS_MAX];
        let n = theirs.emit(&mut opts);
        let seg = Segment {
            v6: p.v6,
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
            seq: isn,
            ack: 0,
            flags: tcp::flags::SYN,
            window,
            options: &opts[..n],
        };
        let Some(mut f) = alloc.alloc() else {
            self.stats.drop(DropReason::NoBuffer);
            return;
        };
        if !f.append(p.l3 + seg.len()) {
            self.stats.drop(DropReason::NoBuffer);
            return;
        }
        // The Ethernet header (and tag) of a client frame; the frame leaves with the egress port's own.
        let l4 = {
            let d = f.data_mut();
            d[..p.l3].fill(0);
            d[12..14].copy_from_slice(&if p.v6 { [0x86, 0xdd] } else { [0x08, 0x00] });
            p.l3 + seg.write(&mut d[p.l3..])
        };
        let q = Pkt {
            l4,
            ttl: 64,
            tcp_flags: tcp::flags::SYN,
            frag: None,
            ..*p
        };
        if let Verdict::Drop { reason } = self.forward(&q, idx, Dir::Inbound, f, alloc, out) {
            self.stats.drop(reason);
        }
    }

    /// A packet of connection `idx` while its backend's handshake is pending: the backend's SYN-ACK splices
    /// the two handshakes (and lets the held client segments go); its RST goes on to the client in the cookie's
    /// sequence space; a client segment is held. The rebuilt SYN itself goes on.
    pub(super) fn pending<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        idx: u32,
        dir: Dir,
        f: F,
        alloc: &mut A,
        out: &mut Output<F>,
    ) -> Pending<F> {
        let c = *self.conns.get(idx);
        let key = (c.client(), c.cport, c.vip(), c.vport);
        if dir == Dir::Inbound {
            if p.tcp_flags & tcp::flags::SYN != 0 {
                return Pending::Forward(f);
            }
            let resend = self.held.syn_older(&key, self.now_ms, SYN_RESEND_MS);
            let v = self.hold(key, p.in_port, f);
            if resend {
                self.resend_syn(p, idx, key, alloc, out);
            }
            return Pending::Done(v);
        }
        let (seq, opts) = match tcp::Packet::new_checked(&f.data()[p.l4..]) {
            Ok(t) => (t.seq(), HandshakeOptions::parse(t.options())),
            Err(_) => return Pending::Done(drop(DropReason::Malformed)),
        };
        let cookie = c.sp_delta;
        let syn_ack = tcp::flags::SYN | tcp::flags::ACK;
        if p.tcp_flags & tcp::flags::RST != 0 {
            // Refused: the client gets the RST as if from the node's handshake; nothing held goes on.
            self.held.take(&key);
            let cm = self.conns.get_mut(idx);
            cm.sp = SP_SPLICED;
            cm.sp_delta = seq.wrapping_sub(cookie.wrapping_add(1));
            return Pending::Forward(f);
        }
        if p.tcp_flags & (syn_ack | tcp::flags::FIN) != syn_ack || !self.verify_l4(p, &f) {
            return Pending::Done(drop(DropReason::NoConnection));
        }
        let cm = self.conns.get_mut(idx);
        cm.sp = SP_SPLICED;
        cm.sp_delta = seq.wrapping_sub(cookie);
        // Scaling is on only when both sides offered it: then the backend's shift towards the client (the
        // client was told `offered`); when the backend declined, the client's windows go to it unscaled and
        // its own go to the client as they are.
        let offered = cm.sp_win_reply & 0x0f;
        match opts.wscale {
            Some(b) if c.sp_win_in != 0 || offered != 0 => {
                cm.sp_win_reply = (b.min(14) << 4) | offered;
                cm.sp_win_in = 0;
            }
            // Declined: its windows are unscaled, the client reads them scaled by what it was told.
            _ => cm.sp_win_reply = offered,
        }
        // The backend's SYN-ACK is answered by the client's held ACK; it goes no further itself, but counts.
        self.advance(p, idx, Dir::Reply);
        for (port, f) in self.held.take(&key) {
            if let Verdict::Drop { reason } = self.handle(port, f, alloc, out) {
                self.stats.drop(reason);
            }
        }
        Pending::Done(Verdict::Spliced)
    }

    /// The rest of a spliced connection's shift on its translated segment (transport header at the start of
    /// `seg`; the sequence and acknowledgement numbers were shifted with the translation): SACK blocks towards
    /// the backend, and windows rescaled where the two sides' scales differ.
    #[inline]
    pub(super) fn splice_shift(&mut self, idx: u32, dir: Dir, seg: &mut [u8]) {
        let c = self.conns.get(idx);
        let (delta, win_reply, win_in) = (c.sp_delta, c.sp_win_reply, c.sp_win_in);
        let Ok(t) = tcp::Packet::new_checked(&*seg) else {
            return;
        };
        let (flags, window) = (t.flags(), t.window());
        let options = t.header_len() > tcp::HEADER_LEN;
        match dir {
            Dir::Reply => {
                let (b, o) = (u32::from(win_reply >> 4), u32::from(win_reply & 0x0f));
                if b != o && flags & tcp::flags::SYN == 0 {
                    set_window(seg, window, rescale(window, b, o));
                }
            }
            Dir::Inbound => {
                if options {
                    client_addr::map_sack(seg, |v| v.wrapping_add(delta));
                }
                if win_in != 0 && flags & tcp::flags::SYN == 0 {
                    let w = (u32::from(window) << win_in).min(0xffff) as u16;
                    set_window(seg, window, w);
                }
            }
        }
    }

    /// Holds a client segment of pending connection `key`, within the per-connection and per-worker bounds.
    fn hold(&mut self, key: HeldKey, port: u16, f: F) -> Verdict {
        match self.held.push(&key, port, f) {
            Ok(()) => Verdict::Held,
            Err(_) => drop(DropReason::SynProxyHeld),
        }
    }

    /// The backend has not answered: its SYN again, rebuilt from the client's segment `p` (its sequence number
    /// is one past the client's initial one, the connection's options are what its cookie said).
    fn resend_syn<A: FrameAlloc<F = F>>(
        &mut self,
        p: &Pkt,
        idx: u32,
        key: HeldKey,
        alloc: &mut A,
        out: &mut Output<F>,
    ) {
        let Some(policy) = self.snap.syn_proxy else {
            return;
        };
        let Some(first) = self.held.first(&key) else {
            return;
        };
        let Ok(t) = tcp::Packet::new_checked(first.data().get(p.l4..).unwrap_or_default()) else {
            return;
        };
        let (isn, cookie) = (t.seq().wrapping_sub(1), t.ack().wrapping_sub(1));
        let Some(o) = self.check_cookie(&policy, p, isn, cookie) else {
            return;
        };
        self.held.syn_sent(&key, self.now_ms);
        self.backend_syn(p, idx, isn, o, 0xffff, alloc, out);
    }

    /// Gives up the held segments of connections pending too long (the connections themselves expire);
    /// they count as `syn_proxy_held` drops.
    pub(super) fn sweep_held(&mut self) {
        for _ in 0..self.held.sweep(self.now_ms) {
            self.stats.drop(DropReason::SynProxyHeld);
        }
    }

    /// The options of a cookie returned by client segment `p`, if the current key or (for as long as its
    /// cookies live after a rotation) the previous one minted it.
    fn check_cookie(&self, policy: &SynProxyPolicy, p: &Pkt, isn: u32, cookie: u32) -> Option<SynOptions> {
        let slot = self.cookie_slot();
        let flow = flow_of(p);
        syncookie::check(&policy.key, slot, &flow, isn, cookie).or_else(|| {
            let (old, until) = policy.previous?;
            (slot <= until)
                .then(|| syncookie::check(&old, slot, &flow, isn, cookie))
                .flatten()
        })
    }

    /// The current cookie time slot (wall-clock time).
    fn cookie_slot(&self) -> u64 {
        syncookie::slot_of(self.wall_ms_at_zero + self.now_ms)
    }

    /// The MSS the node's SYN-ACK offers for service `si`: the smallest port MTU less the largest headers its
    /// segments can get (IPv6 on either side), less the client address the backend is told.
    fn proxy_mss(&self, p: &Pkt, si: u16) -> u16 {
        let svc = &self.snap.services[usize::from(si)];
        let mtu = self
            .snap
            .ports
            .iter()
            .map(|pt| usize::from(pt.mtu))
            .min()
            .unwrap_or(1500);
        let v6 = p.v6 || svc.backends.iter().any(|b| !is_v4(&b.addr));
        let hdrs = if v6 { 60 } else { 40 };
        let extra = match svc.client_address {
            anylb_conf::ClientAddress::Toa => client_addr::toa_len(p.v6),
            anylb_conf::ClientAddress::ProxyV2 => client_addr::proxy_len(p.v6),
            _ => 0,
        };
        mtu.saturating_sub(hdrs + extra).clamp(536, 0xffff) as u16
    }
}

/// The flow a cookie binds: the client's segment's addresses and ports.
fn flow_of(p: &Pkt) -> Flow {
    Flow {
        client: p.src,
        cport: p.sport,
        vip: p.dst,
        vport: p.dport,
    }
}

/// Makes the frame exactly `len` bytes long.
fn fit<F: Frame>(f: &mut F, len: usize) -> bool {
    let have = f.data().len();
    if have >= len {
        f.truncate(len);
        true
    } else {
        f.append(len - have)
    }
}

/// A window field scaled by `from` as one scaled by `to`: rounded up, so that a small window does not become
/// a zero one, and at most 65,535.
fn rescale(window: u16, from: u32, to: u32) -> u16 {
    let bytes = u64::from(window) << from;
    (bytes.div_ceil(1 << to)).min(0xffff) as u16
}

/// Sets a TCP segment's window, keeping its checksum valid.
fn set_window(seg: &mut [u8], old: u16, new: u16) {
    if old == new {
        return;
    }
    let mut t = tcp::Packet::new_unchecked(seg);
    t.set_window(new);
    let c = checksum::update_u16(t.checksum(), old, new);
    t.set_checksum(c);
}

/// What became of a packet of a pending connection.
pub(super) enum Pending<F> {
    /// Held, consumed or dropped.
    Done(Verdict),
    /// Goes on through the connection like any packet.
    Forward(F),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_rescaled_with_its_checksum() {
        let mut seg = [0u8; 20];
        {
            let mut t = tcp::Packet::new_unchecked(&mut seg[..]);
            t.set_header_len_flags(20, tcp::flags::ACK);
            t.set_window(1000);
        }
        let pseudo = 0x1234;
        tcp::Packet::new_unchecked(&mut seg[..]).fill_checksum(pseudo);
        set_window(&mut seg, 1000, 4000);
        let t = tcp::Packet::new_unchecked(&seg[..]);
        assert_eq!(t.window(), 4000);
        assert!(t.verify_checksum(pseudo));
    }

    #[test]
    fn windows_are_rescaled_rounding_up() {
        assert_eq!(rescale(100, 9, 7), 400);
        assert_eq!(rescale(100, 0, 7), 1, "100 bytes is not a zero window");
        assert_eq!(rescale(1280, 0, 7), 10);
        assert_eq!(rescale(60000, 14, 0), 0xffff);
    }
}
