//! The client-address options of Full-NAT: for TCP, TOA in the first data segment and the PROXY v2 header in
//! front of the first byte, with the sequence-number shift the header brings; for UDP, the UOA IP option or a
//! PROXY v2 header in the first datagrams of a flow (or every one).

use super::pkt::{clamp_mss, Egress, Layout};
use super::Worker;
use crate::client_addr;
use crate::conn::{
    CLA_NONE, CLA_PP_ACKED, CLA_PP_PENDING, CLA_PP_SENT, CLA_PP_UDP, CLA_TOA, CLA_TOA_DONE, CLA_UOA,
    FLAG_CLIENT_V6,
};
use crate::frame::Frame;
use crate::stats::DropReason;
use crate::tcp_state::Dir;
use crate::wire::tcp;

impl<F: Frame> Worker<F> {
    /// TOA and PROXY v2 on a translated segment of connection `idx` (headers at `at`): the option or header
    /// goes into the client's segments at its first sequence number until the backend acknowledges past them;
    /// after a PROXY header, client sequence numbers move up by its length and the backend's acknowledgements
    /// (and SACK blocks) down. SYNs get their MSS lowered so that a full segment still fits with the addition.
    pub(super) fn client_address(
        &mut self,
        idx: u32,
        dir: Dir,
        f: &mut F,
        at: Layout,
        eg: &Egress,
    ) -> Result<(), DropReason> {
        let c = *self.conns.get(idx);
        if matches!(c.cla, CLA_UOA | CLA_PP_UDP) {
            return self.udp_client_address(idx, dir, f, at, eg);
        }
        let Layout { l3, l4 } = at;
        let (out_v6, mtu) = (eg.v6, eg.mtu);
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
                            &client_addr::toa(&c.client(), c.cport),
                            true,
                        );
                    }
                    CLA_PP_PENDING | CLA_PP_SENT if seq == start => {
                        let h = client_addr::proxy_v2(&c.client(), c.cport, &c.vip(), c.vport, false);
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
                        client_addr::set_u32(
                            &mut f.data_mut()[l4..],
                            client_addr::SEQ,
                            seq.wrapping_add(extra as u32),
                        );
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
                    client_addr::set_u32(seg, client_addr::ACK, map(ack));
                    client_addr::map_sack(seg, map);
                }
                _ => {}
            },
            Dir::Reply => {}
        }
        Ok(())
    }
}

impl<F: Frame> Worker<F> {
    /// UOA or PROXY v2 on a translated client datagram of connection `idx`, while the connection has
    /// datagrams left to mark (`cla_seq`, counted down unless every datagram is marked). A UOA option that
    /// would not fit the egress MTU is left out of that datagram (the next one carries it); a PROXY header that
    /// would not fit drops the datagram (`too_big`), since the backend reads it as part of the payload.
    fn udp_client_address(
        &mut self,
        idx: u32,
        dir: Dir,
        f: &mut F,
        at: Layout,
        eg: &Egress,
    ) -> Result<(), DropReason> {
        let c = *self.conns.get(idx);
        if dir != Dir::Inbound || c.cla_seq == 0 {
            return Ok(());
        }
        let Layout { l3, l4 } = at;
        let len = f.data().len() - l3;
        let done = match c.cla {
            CLA_UOA if !eg.v6 => {
                let o = client_addr::uoa(&c.client(), c.cport);
                len + o.len() <= eg.mtu && client_addr::insert_ipv4_option(f, l3, &o)
            }
            CLA_PP_UDP => {
                let h = client_addr::proxy_v2(&c.client(), c.cport, &c.vip(), c.vport, true);
                if len + h.len() > eg.mtu {
                    return Err(DropReason::TooBig);
                }
                if !client_addr::insert_udp_payload(f, l3, l4, eg.v6, &h) {
                    return Err(DropReason::NoBuffer);
                }
                true
            }
            _ => false,
        };
        if done && c.cla_seq != u32::MAX {
            let cm = self.conns.get_mut(idx);
            cm.cla_seq -= 1;
            if cm.cla_seq == 0 {
                cm.cla = CLA_NONE;
            }
        }
        Ok(())
    }
}

/// `a` is strictly after `b` in sequence space.
pub(super) fn seq_after(a: u32, b: u32) -> bool {
    a != b && client_addr::seq_ge(a, b)
}
