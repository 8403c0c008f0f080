//! ICMP and ICMPv6 echo over raw sockets (root), with socket2 on a blocking thread bounded by a read timeout:
//! one request, the matching reply by identifier and sequence.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};

use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::checker::CheckError;

static SEQ: AtomicU16 = AtomicU16::new(1);

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Sends an echo request to `dst` and waits up to `timeout` for the matching reply.
pub async fn echo(dst: IpAddr, src: Option<IpAddr>, timeout: Duration) -> Result<(), CheckError> {
    tokio::task::spawn_blocking(move || echo_blocking(dst, src, timeout))
        .await
        .map_err(|e| CheckError::Thread(e.to_string()))?
}

fn echo_blocking(dst: IpAddr, src: Option<IpAddr>, timeout: Duration) -> Result<(), CheckError> {
    let v6 = dst.is_ipv6();
    let (domain, proto, req, rep) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8)
    } else {
        (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8)
    };
    let sock = Socket::new(domain, Type::RAW, Some(proto)).map_err(CheckError::Socket)?;
    let end = Instant::now() + timeout;
    if let Some(s) = src {
        sock.bind(&SocketAddr::new(s, 0).into())
            .map_err(|source| CheckError::Bind { addr: s, source })?;
    }
    let id = (std::process::id() as u16) ^ 0x414c;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut msg = vec![req, 0, 0, 0];
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(b"anylb-healthcheck");
    if !v6 {
        // The kernel fills in the ICMPv6 checksum; ICMPv4's is ours.
        let c = checksum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
    sock.send_to(&msg, &SocketAddr::new(dst, 0).into())
        .map_err(CheckError::Send)?;
    let mut buf = [0u8; 1500];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CheckError::NoEchoReply);
        }
        sock.set_read_timeout(Some(left)).map_err(CheckError::Receive)?;
        let n = match (&sock).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(CheckError::NoEchoReply)
            }
            Err(e) => return Err(CheckError::Receive(e)),
        };
        // IPv4 raw sockets deliver the IP header too; IPv6 ones do not.
        let icmp = if v6 {
            &buf[..n]
        } else {
            let ihl = usize::from(buf.first().copied().unwrap_or(0) & 0x0f) * 4;
            let from = IpAddr::from([buf[12], buf[13], buf[14], buf[15]]);
            if from != dst || n < ihl + 8 {
                continue;
            }
            &buf[ihl..n]
        };
        if icmp.len() >= 8
            && icmp[0] == rep
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(());
        }
    }
}
