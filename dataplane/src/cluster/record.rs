//! A connection as it travels between nodes: plain data, no pointers, no node-local ids (the backend is named by
//! address and port; the receiving node finds its service and backend again), and small — 37 bytes for an IPv4
//! connection, 85 for an IPv6 one.
//!
//! ```text
//!  0       1       2       3       4       5       7       9       11      13          17          21
//! +-------+-------+-------+-------+-------+-------+-------+-------+-------+-----------+-----------+
//! |  op   | proto | state | flags |  cla  | cport | vport | lport | bport |  cla_seq  |  ttl_ms   |
//! +-------+-------+-------+-------+-------+-------+-------+-------+-------+-----------+-----------+
//! | client | vip   (4 bytes each, 16 when the client side is IPv6)                                 |
//! | lip    | backend (4 bytes each, 16 when the backend side is IPv6)                              |
//! +----------------------------------------------------------------------------------------------+
//! ```
//!
//! A SYN-proxied connection (bit 0x01 of the flags byte, which connections do not carry) has 7 more bytes
//! after the addresses: `sp`, `sp_win_reply`, `sp_win_in` and `sp_delta` (4), its sequence shift.

use crate::conn::{Conn, FLAG_BACKEND_V6, FLAG_CLIENT_V6, FLAG_POOLED, FLAG_SNAT, FLAG_USED, SP_NONE};
use crate::flow::Addr;

/// What a record says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The connection exists with this state (first sync, state change, refresh).
    Upsert = 1,
    /// The connection is gone.
    Delete = 2,
}

/// One connection's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// What it says.
    pub op: Op,
    /// IP protocol.
    pub proto: u8,
    /// TCP state as the table stores it.
    pub state: u8,
    /// Family and mode bits of the connection (`FLAG_CLIENT_V6`, `FLAG_BACKEND_V6`, mode).
    pub flags: u8,
    /// Where telling the backend the client's address stands.
    pub cla: u8,
    /// Client, VIP, local address and backend.
    pub client: Addr,
    /// VIP.
    pub vip: Addr,
    /// Local address.
    pub lip: Addr,
    /// Backend.
    pub backend: Addr,
    /// Ports, in the same order.
    pub cport: u16,
    /// VIP port.
    pub vport: u16,
    /// Local port.
    pub lport: u16,
    /// Backend port.
    pub bport: u16,
    /// The client's first sequence number (client-address options).
    pub cla_seq: u32,
    /// Milliseconds the connection has left before it expires on the sender.
    pub ttl_ms: u32,
    /// SYN-proxy: where its handshakes stand, window rescaling and sequence shift (see [`Conn`]).
    pub sp: u8,
    /// Backend window scaling towards the client.
    pub sp_win_reply: u8,
    /// Client window scaling towards the backend.
    pub sp_win_in: u8,
    /// Sequence shift.
    pub sp_delta: u32,
}

/// Why a record did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the record needs.
    #[error("record cut short")]
    Short,
    /// An operation this version does not know.
    #[error("unknown record operation {0}")]
    Op(u8),
}

/// Bytes of the fixed part.
const FIXED: usize = 21;
/// Bytes of the SYN-proxy trailer.
const SP_LEN: usize = 7;
/// Flags-byte bit of a record with the SYN-proxy trailer.
const WITH_SP: u8 = 0x01;
/// The flag bits a record carries.
const CARRIED: u8 = FLAG_CLIENT_V6 | FLAG_BACKEND_V6 | FLAG_POOLED | FLAG_SNAT | crate::conn::MODE_MASK;

impl Record {
    /// The record of connection `c` with `ttl_ms` left.
    pub fn of(op: Op, c: &Conn, ttl_ms: u32) -> Record {
        Record {
            op,
            proto: c.proto,
            state: c.state,
            flags: c.flags & CARRIED,
            cla: c.cla,
            client: c.client(),
            vip: c.vip(),
            lip: c.lip(),
            backend: c.backend(),
            cport: c.cport,
            vport: c.vport,
            lport: c.lport,
            bport: c.bport,
            cla_seq: c.cla_seq,
            ttl_ms,
            sp: c.sp,
            sp_win_reply: c.sp_win_reply,
            sp_win_in: c.sp_win_in,
            // Carried only with the SYN-proxy trailer; not read otherwise (it sits in the record's second
            // cache line, which an IPv4 connection's established path does not touch).
            sp_delta: if c.sp != SP_NONE { c.sp_delta } else { 0 },
        }
    }

    /// The connection to insert on the receiving node (expiry, backend id, service and cached next hops are
    /// the receiver's to fill).
    pub fn conn(&self) -> Conn {
        Conn {
            cport: self.cport,
            vport: self.vport,
            lport: self.lport,
            bport: self.bport,
            proto: self.proto,
            state: self.state,
            flags: (self.flags & CARRIED) | FLAG_USED,
            cla: self.cla,
            cla_seq: self.cla_seq,
            sp: self.sp,
            sp_win_reply: self.sp_win_reply,
            sp_win_in: self.sp_win_in,
            sp_delta: self.sp_delta,
            ..Conn::addressed(self.client, self.vip, self.lip, self.backend)
        }
    }

    fn addr_len(v6: bool) -> usize {
        if v6 {
            16
        } else {
            4
        }
    }

    /// Encoded size.
    pub fn len(&self) -> usize {
        FIXED
            + 2 * Self::addr_len(self.flags & FLAG_CLIENT_V6 != 0)
            + 2 * Self::addr_len(self.flags & FLAG_BACKEND_V6 != 0)
            + if self.sp != SP_NONE { SP_LEN } else { 0 }
    }

    /// Never empty (for the `len` convention).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let sp_bit = if self.sp != SP_NONE { WITH_SP } else { 0 };
        out.extend_from_slice(&[
            self.op as u8,
            self.proto,
            self.state,
            self.flags | sp_bit,
            self.cla,
        ]);
        for p in [self.cport, self.vport, self.lport, self.bport] {
            out.extend_from_slice(&p.to_be_bytes());
        }
        out.extend_from_slice(&self.cla_seq.to_be_bytes());
        out.extend_from_slice(&self.ttl_ms.to_be_bytes());
        let put =
            |out: &mut Vec<u8>, a: &Addr, v6: bool| out.extend_from_slice(if v6 { &a[..] } else { &a[12..] });
        let (c6, b6) = (
            self.flags & FLAG_CLIENT_V6 != 0,
            self.flags & FLAG_BACKEND_V6 != 0,
        );
        put(out, &self.client, c6);
        put(out, &self.vip, c6);
        put(out, &self.lip, b6);
        put(out, &self.backend, b6);
        if sp_bit != 0 {
            out.extend_from_slice(&[self.sp, self.sp_win_reply, self.sp_win_in]);
            out.extend_from_slice(&self.sp_delta.to_be_bytes());
        }
    }

    /// Decodes one record from the start of `b`; returns it and its length.
    pub fn decode(b: &[u8]) -> Result<(Record, usize), RecordError> {
        let fixed = b.get(..FIXED).ok_or(RecordError::Short)?;
        let op = match fixed[0] {
            1 => Op::Upsert,
            2 => Op::Delete,
            o => return Err(RecordError::Op(o)),
        };
        let u16_at = |i: usize| u16::from_be_bytes([fixed[i], fixed[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let flags = fixed[3] & CARRIED;
        let (c6, b6) = (flags & FLAG_CLIENT_V6 != 0, flags & FLAG_BACKEND_V6 != 0);
        let (cl, bl) = (Self::addr_len(c6), Self::addr_len(b6));
        let sp_len = if fixed[3] & WITH_SP != 0 { SP_LEN } else { 0 };
        let rest = b
            .get(FIXED..FIXED + 2 * cl + 2 * bl + sp_len)
            .ok_or(RecordError::Short)?;
        let sp = &rest[2 * cl + 2 * bl..];
        let addr = |s: &[u8]| -> Addr {
            let mut a = crate::flow::v4(std::net::Ipv4Addr::UNSPECIFIED);
            if s.len() == 16 {
                a.copy_from_slice(s);
            } else {
                a[12..].copy_from_slice(s);
            }
            a
        };
        let r = Record {
            op,
            proto: fixed[1],
            state: fixed[2],
            flags,
            cla: fixed[4],
            cport: u16_at(5),
            vport: u16_at(7),
            lport: u16_at(9),
            bport: u16_at(11),
            cla_seq: u32_at(13),
            ttl_ms: u32_at(17),
            client: addr(&rest[..cl]),
            vip: addr(&rest[cl..2 * cl]),
            lip: addr(&rest[2 * cl..2 * cl + bl]),
            backend: addr(&rest[2 * cl + bl..2 * cl + 2 * bl]),
            sp: sp.first().copied().unwrap_or(SP_NONE),
            sp_win_reply: sp.get(1).copied().unwrap_or(0),
            sp_win_in: sp.get(2).copied().unwrap_or(0),
            sp_delta: sp
                .get(3..7)
                .map_or(0, |d| u32::from_be_bytes([d[0], d[1], d[2], d[3]])),
        };
        Ok((r, FIXED + 2 * cl + 2 * bl + sp_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::MODE_FULLNAT;
    use crate::flow::{addr, v4};
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn conn(client: IpAddr, backend: IpAddr) -> Conn {
        let mut flags = FLAG_USED | FLAG_POOLED | MODE_FULLNAT;
        if client.is_ipv6() {
            flags |= FLAG_CLIENT_V6;
        }
        if backend.is_ipv6() {
            flags |= FLAG_BACKEND_V6;
        }
        let vip = if client.is_ipv6() {
            "2001:db8:f::10".parse().unwrap()
        } else {
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10))
        };
        let lip = if backend.is_ipv6() {
            "2001:db8:20::a00".parse().unwrap()
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 32))
        };
        Conn {
            cport: 40000,
            vport: 80,
            lport: 2049,
            bport: 8080,
            proto: 6,
            state: 1,
            flags,
            cla_seq: 7,
            ..Conn::addressed(addr(client), addr(vip), addr(lip), addr(backend))
        }
    }

    #[test]
    fn a_syn_proxied_record_carries_its_sequence_shift() {
        let c = Conn {
            sp: crate::conn::SP_SPLICED,
            sp_win_reply: 0x97,
            sp_win_in: 0,
            sp_delta: 0xdead_beef,
            ..conn("192.0.2.130".parse().unwrap(), "2001:db8:20::5".parse().unwrap())
        };
        let r = Record::of(Op::Upsert, &c, 1000);
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!((b.len(), r.len()), (37 + 24 + 7, 37 + 24 + 7));
        let (d, n) = Record::decode(&b).unwrap();
        assert_eq!((d, n), (r, b.len()));
        let back = d.conn();
        assert_eq!(
            (back.sp, back.sp_win_reply, back.sp_delta),
            (c.sp, 0x97, 0xdead_beef)
        );
        assert!(
            Record::decode(&b[..b.len() - 1]).is_err(),
            "a cut trailer is short"
        );
    }

    #[test]
    fn an_ipv4_record_is_37_bytes_and_decodes_to_the_same_connection() {
        let c = conn("192.0.2.130".parse().unwrap(), "198.51.100.101".parse().unwrap());
        let r = Record::of(Op::Upsert, &c, 899_000);
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!((b.len(), r.len()), (37, 37));
        let (d, n) = Record::decode(&b).unwrap();
        assert_eq!((d, n), (r, 37));
        let back = d.conn();
        assert_eq!(
            (back.client(), back.lip(), back.lport, back.state),
            (c.client(), c.lip(), c.lport, c.state)
        );
        assert_eq!(back.flags, c.flags);
    }

    #[test]
    fn a_nat64_record_carries_each_side_in_its_family() {
        let c = conn(
            "2001:db8:c::2".parse().unwrap(),
            "198.51.100.101".parse().unwrap(),
        );
        let r = Record::of(Op::Delete, &c, 0);
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(b.len(), 21 + 32 + 8);
        assert_eq!(Record::decode(&b).unwrap().0, r);
        assert_eq!(r.conn().lip(), v4(Ipv4Addr::new(198, 51, 100, 32)));
    }

    #[test]
    fn short_or_unknown_records_are_errors_not_panics() {
        let c = conn("192.0.2.130".parse().unwrap(), "198.51.100.101".parse().unwrap());
        let mut b = Vec::new();
        Record::of(Op::Upsert, &c, 1).encode(&mut b);
        for n in 0..b.len() {
            assert_eq!(Record::decode(&b[..n]), Err(RecordError::Short), "{n} bytes");
        }
        b[0] = 9;
        assert_eq!(Record::decode(&b), Err(RecordError::Op(9)));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok((r, n)) = Record::decode(&b) {
                prop_assert!(n <= b.len());
                let mut again = Vec::new();
                r.encode(&mut again);
                prop_assert_eq!(again.len(), n);
                prop_assert_eq!(Record::decode(&again).map(|(x, _)| x), Ok(r));
            }
        }
    }
}
