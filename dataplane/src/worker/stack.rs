//! The small stack: ARP and IPv6 neighbour discovery answered for VIPs and local addresses, neighbours learnt from what arrives, gratuitous ARP and unsolicited NA, solicitations for unresolved next hops, and frames answered in place.

use super::pkt::{drop, pseudo6, write_v6_header, Pkt};
use super::{Output, Verdict, Worker};
use crate::flow::{is_v4, to_v4, v4, Addr};
use crate::frame::{Frame, FrameAlloc};
use crate::snapshot::Local;
use crate::stats::DropReason;
use crate::wire::ethernet::{self, ethertype, Mac};
use crate::wire::icmp::{self};
use crate::wire::{arp, ipv6, ndp, proto};

impl<F: Frame> Worker<F> {
    pub(super) fn arp(&mut self, in_port: u16, mut f: F, l3: usize, out: &mut Output<F>) -> Verdict {
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

    pub(super) fn ndp(&mut self, p: &Pkt, mut f: F, out: &mut Output<F>) -> Verdict {
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
    pub(super) fn announcement<A: FrameAlloc<F = F>>(
        &mut self,
        alloc: &mut A,
        port: u16,
        a: &Addr,
    ) -> Option<F> {
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
    pub(super) fn solicitation<A: FrameAlloc<F = F>>(
        &mut self,
        alloc: &mut A,
        port: u16,
        target: &Addr,
    ) -> Option<F> {
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
    pub(super) fn set_vlan(&self, f: &mut F, port: u16) {
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

    pub(super) fn flush_held(&mut self, port: u16, mac: Mac, frames: Vec<F>, out: &mut Output<F>) {
        for mut f in frames {
            ethernet::Frame::new_unchecked(f.data_mut()).set_dst(mac);
            self.tx(port, f, out);
        }
    }

    /// Sends a frame answered in place back to the MAC it came from.
    pub(super) fn reply_to_sender(&mut self, in_port: u16, mut f: F, out: &mut Output<F>) -> Verdict {
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

/// The IPv6 all-nodes multicast address.
pub(super) const ALL_NODES: Addr = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// A broadcast ARP request from `mac`/`spa` for `tpa` (a gratuitous ARP when they are equal).
pub(super) fn arp_request<A: FrameAlloc>(alloc: &mut A, mac: Mac, spa: &Addr, tpa: &Addr) -> Option<A::F> {
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
pub(super) fn ndp_frame<A: FrameAlloc>(
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
