//! The dns check: one query (name and type, recursion desired) over UDP, again over TCP when the UDP answer is
//! truncated (RFC 7766 §5). Up when the answer carries the expected rcode and, if one is configured, the
//! expected address among its A/AAAA records.
//!
//! ```text
//! message (RFC 1035 §4.1):
//!  0               2               4               6               8              10              12
//! +---------------+-+----+-+-+-+-+-+---+-------+---------------+---------------+---------------+---------------+
//! |      ID       |Q|Opc |A|T|R|R|Z|AD |RCODE  |    QDCOUNT    |    ANCOUNT    |    NSCOUNT    |    ARCOUNT    |
//! |               |R|ode |A|C|D|A| |CD |       |               |               |               |               |
//! +---------------+-+----+-+-+-+-+-+---+-------+---------------+---------------+---------------+---------------+
//! question: QNAME (labels) QTYPE(2) QCLASS(2)
//! answer:   NAME (labels or a 2-byte pointer 0b11...) TYPE(2) CLASS(2) TTL(4) RDLENGTH(2) RDATA
//! over TCP, each message has a 2-byte length in front.
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::{connect, local_address, Check, CheckError};

/// Type A.
pub const TYPE_A: u16 = 1;
/// Type AAAA.
pub const TYPE_AAAA: u16 = 28;

/// What a DNS check asks and expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsProbe {
    /// The name queried.
    pub name: String,
    /// The query type (1 A, 28 AAAA, ...).
    pub qtype: u16,
    /// The rcode the answer must have (0 NOERROR, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// An address the answer must contain.
    pub address: Option<IpAddr>,
}

/// Why a query could not be built or an answer not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// A label is empty or longer than 63 bytes.
    #[error("bad label in the name")]
    Label,
    /// The name is longer than 255 bytes on the wire.
    #[error("name too long")]
    NameTooLong,
    /// The answer ends inside its header, a name or a record.
    #[error("answer truncated at byte {0}")]
    Short(usize),
    /// The answer is a query (QR clear).
    #[error("not a response")]
    NotResponse,
    /// The answer's ID is not the query's.
    #[error("answer id {got:#06x}, query id {want:#06x}")]
    Id {
        /// The answer's.
        got: u16,
        /// The query's.
        want: u16,
    },
    /// A name with a label type that is neither a label nor a pointer.
    #[error("bad name encoding at byte {0}")]
    Name(usize),
}

/// What the check reads from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The rcode.
    pub rcode: u8,
    /// TC: the answer did not fit (ask again over TCP).
    pub truncated: bool,
    /// The A and AAAA records of the answer section.
    pub addresses: Vec<IpAddr>,
}

/// A query for `name` and `qtype`, class IN, recursion desired.
pub fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(DnsError::Label);
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
    }
    q.push(0);
    if q.len() - 12 > 255 {
        return Err(DnsError::NameTooLong);
    }
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

/// Reads an answer to query `id`: its rcode, TC bit and addresses.
pub fn parse(m: &[u8], id: u16) -> Result<Answer, DnsError> {
    let u16_at = |at: usize| {
        m.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(DnsError::Short(m.len()))
    };
    let got = u16_at(0)?;
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::NotResponse);
    }
    if got != id {
        return Err(DnsError::Id { got, want: id });
    }
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let truncated = flags & 0x0200 != 0;
    let rcode = (flags & 0x000f) as u8;
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(m, at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..an {
        at = skip_name(m, at)?;
        let (rtype, len) = (u16_at(at)?, usize::from(u16_at(at + 8)?));
        let data = m.get(at + 10..at + 10 + len).ok_or(DnsError::Short(m.len()))?;
        match (rtype, data.len()) {
            (TYPE_A, 4) => addresses.push(IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]))),
            (TYPE_AAAA, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(data);
                addresses.push(IpAddr::V6(Ipv6Addr::from(a)));
            }
            _ => {}
        }
        at += 10 + len;
    }
    // A truncated UDP answer may end anywhere after its header; the TC bit is what counts then.
    Ok(Answer {
        rcode,
        truncated,
        addresses,
    })
}

/// The offset after the name at `at` (labels up to a zero, or up to a compression pointer).
fn skip_name(m: &[u8], mut at: usize) -> Result<usize, DnsError> {
    loop {
        let len = *m.get(at).ok_or(DnsError::Short(m.len()))?;
        match len >> 6 {
            0 if len == 0 => return Ok(at + 1),
            0 => at += 1 + usize::from(len),
            3 => return m.get(at + 1).map(|_| at + 2).ok_or(DnsError::Short(m.len())),
            _ => return Err(DnsError::Name(at)),
        }
    }
}

/// The name of an rcode.
pub fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}

/// Query IDs: a counter started from the clock, so that concurrent checks do not share one.
fn next_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u16);
    NEXT.fetch_add(1, Ordering::Relaxed) ^ seed
}

pub(super) async fn check(c: &Check, p: &DnsProbe) -> Result<(), CheckError> {
    let id = next_id();
    let q = query(id, &p.name, p.qtype).map_err(CheckError::Dns)?;
    let mut answer = over_udp(c, &q, id).await?;
    if answer.truncated {
        answer = over_tcp(c, &q, id).await?;
    }
    if answer.rcode != p.rcode {
        return Err(CheckError::Rcode {
            got: answer.rcode,
            want: p.rcode,
        });
    }
    match p.address {
        Some(a) if !answer.addresses.contains(&a) => Err(CheckError::AnswerLacks(a)),
        _ => Ok(()),
    }
}

/// Sends the query and waits for its answer; datagrams that are not (another ID, garbage) are passed over.
async fn over_udp(c: &Check, q: &[u8], id: u16) -> Result<Answer, CheckError> {
    let addr = local_address(c);
    let s = UdpSocket::bind(SocketAddr::new(addr, 0))
        .await
        .map_err(|source| CheckError::Bind { addr, source })?;
    s.connect(c.target).await.map_err(CheckError::Connect)?;
    s.send(q).await.map_err(CheckError::Send)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.recv(&mut buf).await.map_err(CheckError::Receive)?;
        match parse(&buf[..n], id) {
            Err(DnsError::Id { .. } | DnsError::NotResponse) => continue,
            r => return r.map_err(CheckError::Dns),
        }
    }
}

async fn over_tcp(c: &Check, q: &[u8], id: u16) -> Result<Answer, CheckError> {
    let mut s = connect(c).await?;
    let mut framed = Vec::with_capacity(q.len() + 2);
    framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
    framed.extend_from_slice(q);
    s.write_all(&framed).await.map_err(CheckError::Send)?;
    let len = s.read_u16().await.map_err(CheckError::Receive)?;
    let mut m = vec![0u8; usize::from(len)];
    s.read_exact(&mut m).await.map_err(CheckError::Receive)?;
    parse(&m, id).map_err(CheckError::Dns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to query 0x1234 for "a.test" A: NOERROR, one CNAME (skipped), one A by a compression pointer.
    fn answer() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 4, b't', b'e', b's', b't', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 10]);
        m
    }

    #[test]
    fn a_query_is_written_label_by_label() {
        let q = query(0xbeef, "a.test.", TYPE_AAAA).unwrap();
        assert_eq!(
            q,
            [0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 4, b't', b'e', b's', b't', 0, 0, 28, 0, 1]
        );
        assert_eq!(query(1, ".", TYPE_A).unwrap()[12..], [0, 0, 1, 0, 1]);
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(query(1, "a..test", TYPE_A), Err(DnsError::Label));
        assert_eq!(query(1, &"x".repeat(64), TYPE_A), Err(DnsError::Label));
        let long = vec!["y".repeat(60); 5].join(".");
        assert_eq!(query(1, &long, TYPE_A), Err(DnsError::NameTooLong));
    }

    #[test]
    fn an_answer_gives_its_rcode_and_addresses() {
        let a = parse(&answer(), 0x1234).unwrap();
        assert_eq!(
            a,
            Answer {
                rcode: 0,
                truncated: false,
                addresses: vec!["192.0.2.10".parse().unwrap()]
            }
        );
        let mut nx = answer();
        nx[3] = 0x83;
        nx[2] |= 0x02;
        let a = parse(&nx, 0x1234).unwrap();
        assert_eq!((a.rcode, a.truncated, rcode_name(a.rcode)), (3, true, "NXDOMAIN"));
    }

    #[test]
    fn broken_answers_are_errors() {
        let m = answer();
        assert_eq!(
            parse(&m, 0x4321),
            Err(DnsError::Id {
                got: 0x1234,
                want: 0x4321
            })
        );
        let mut q = m.clone();
        q[2] &= 0x7f;
        assert_eq!(parse(&q, 0x1234), Err(DnsError::NotResponse));
        for cut in [5, 14, 30, m.len() - 1] {
            assert!(
                matches!(parse(&m[..cut], 0x1234), Err(DnsError::Short(_))),
                "cut at {cut}"
            );
        }
        let mut bad = m.clone();
        bad[12] = 0x80;
        assert_eq!(parse(&bad, 0x1234), Err(DnsError::Name(12)));
    }
}
