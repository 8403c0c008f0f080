//! Sockets of the speaker: the listener with every neighbour's TCP-MD5 key and GTSM floor, outgoing
//! connections (bound address, key, TTL), and the options a session's connection gets (no Nagle, TTL for eBGP,
//! multihop or GTSM).

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config::NeighborConfig;

/// Binds the BGP listener, with every neighbour's TCP-MD5 key installed before any SYN can arrive (an IPv6
/// neighbour is skipped on an IPv4 listener).
pub(crate) async fn listener(addr: SocketAddr, neighbors: &[NeighborConfig]) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    // A GTSM neighbour drops our SYN-ACK unless it leaves with TTL 255; the accepted connection then gets its
    // own neighbour's TTL in `prepare`.
    if neighbors.iter().any(|n| n.gtsm_hops.is_some()) {
        set_ttl(&s, addr.is_ipv6(), 255)?;
    }
    // When every neighbour uses GTSM, the listener itself refuses SYNs from too far away, so a distant host
    // cannot even complete a handshake (otherwise the minimum TTL applies from the accepted connection on).
    let floors: Option<Vec<u8>> = neighbors.iter().map(|n| n.gtsm_hops.map(gtsm_min_ttl)).collect();
    if let Some(min) = floors.and_then(|f| f.into_iter().min()) {
        os_sys::set_min_ttl(&s, min).map_err(|e| annotate(e, "GTSM on the listener"))?;
    }
    for n in neighbors {
        if let Some(k) = &n.md5_key {
            if addr.is_ipv4() && n.address.is_ipv6() {
                continue;
            }
            os_sys::set_tcp_md5(&s, n.address, k.bytes())
                .map_err(|e| annotate(e, &format!("TCP-MD5 key for {} on the listener", n.address)))?;
        }
    }
    s.bind(addr)?;
    s.listen(64)
}

/// An address with an IPv4-mapped IPv6 address turned into IPv4.
pub(crate) fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A socket address with an IPv4-mapped IPv6 address turned into IPv4 (a dual-stack listener reports those).
pub(crate) fn canonical_sa(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

/// The error with what was being done.
fn annotate(e: std::io::Error, what: &str) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Opens the TCP connection to neighbour `n` (port 179), with its key, bound address and GTSM.
pub(crate) async fn connect(n: &NeighborConfig) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::new(n.address, 179);
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(l) = n.local_address {
        s.bind(SocketAddr::new(l, 0))?;
    }
    if let Some(k) = &n.md5_key {
        os_sys::set_tcp_md5(&s, n.address, k.bytes()).map_err(|e| annotate(e, "TCP-MD5 key"))?;
    }
    // GTSM applies from the SYN on: our SYN leaves with TTL 255 and the SYN-ACK must arrive with enough.
    if let Some(hops) = n.gtsm_hops {
        set_ttl(&s, addr.is_ipv6(), 255)?;
        os_sys::set_min_ttl(&s, gtsm_min_ttl(hops)).map_err(|e| annotate(e, "GTSM"))?;
    }
    let stream = tokio::time::timeout(std::time::Duration::from_secs(10), s.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    Ok(stream)
}

/// The smallest TTL accepted from a GTSM neighbour `hops` away (RFC 5082: 255 for a directly connected one).
fn gtsm_min_ttl(hops: u8) -> u8 {
    255 - hops.clamp(1, 255) + 1
}

/// Sets the TTL or hop limit of outgoing packets.
fn set_ttl(s: &impl std::os::fd::AsFd, v6: bool, ttl: u32) -> std::io::Result<()> {
    let s = socket2::SockRef::from(s);
    if v6 {
        s.set_unicast_hops_v6(ttl)?;
    }
    // A dual-stack socket may carry IPv4 (mapped) traffic, which uses the IPv4 TTL.
    s.set_ttl_v4(ttl)
}

/// Readies a connection of neighbour `n`: no Nagle, the TTL (1 for eBGP, the multihop TTL, or 255 with GTSM)
/// and, with GTSM, the minimum TTL accepted. An accepted connection gets GTSM here, after its handshake
/// (the listener serves every neighbour); a failure closes the connection rather than run unprotected.
pub(crate) fn prepare(stream: &TcpStream, n: &NeighborConfig, ebgp: bool) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let v6 = stream.local_addr().is_ok_and(|a| a.is_ipv6());
    match n.gtsm_hops {
        Some(hops) => {
            set_ttl(stream, v6, 255)?;
            os_sys::set_min_ttl(stream, gtsm_min_ttl(hops)).map_err(|e| annotate(e, "GTSM"))
        }
        None => set_ttl(
            stream,
            v6,
            n.ttl.map(u32::from).unwrap_or(if ebgp { 1 } else { 64 }),
        ),
    }
}
