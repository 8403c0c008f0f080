//! os-sys: the Linux system calls anylb needs that std, tokio and socket2 do not offer safely — the socket
//! options of the BGP speaker and BFD, and huge-page advice for the dataplane's large tables.
//!
//! - [`set_tcp_md5`]: RFC 2385 TCP-MD5 signatures (`TCP_MD5SIG`), one key per peer address, on a listener
//!   (before the peer's SYN arrives) or on a socket before `connect`.
//! - [`set_min_ttl`]: GTSM (RFC 5082) — the kernel drops TCP segments that arrive with a smaller TTL / hop
//!   limit (`IP_MINTTL`, `IPV6_MINHOPCOUNT`). Linux checks it for TCP only.
//! - [`set_recv_ttl`] and [`recv_with_ttl`]: the TTL / hop limit of each received datagram (`IP_RECVTTL`,
//!   `IPV6_RECVHOPLIMIT` and `recvmsg`), which BFD (RFC 5881 §5) must check itself since Linux ignores the
//!   minimum TTL on UDP sockets.
//! - [`default_sigpipe`]: the default action for `SIGPIPE` (Rust programs start with it ignored), so that a
//!   command whose output goes to a pipe that closes (`anylb conns | head`) ends quietly as Unix tools do
//!   instead of failing on its next write.
//! - [`advise_huge_pages`]: `madvise(MADV_HUGEPAGE)` on memory about to be filled, so that tables of millions
//!   of entries sit on 2 MiB pages (far fewer TLB misses per random access) without the operator setting
//!   `GLIBC_TUNABLES`.
//!
//! As in dpdk-sys, the raw calls stay private and every `unsafe` block says why it is sound; the kernel
//! structures are built and read as plain bytes, so only the system calls themselves are unsafe.

#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

/// Longest TCP-MD5 key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY: usize = 80;

/// Size of `struct sockaddr_storage`.
const SOCKADDR_STORAGE: usize = 128;

/// `struct tcp_md5sig` from `<linux/tcp.h>`: a sockaddr_storage, flags, prefix length, key length, interface
/// index and the key.
#[repr(C, align(8))]
struct Md5Sig {
    addr: [u8; SOCKADDR_STORAGE],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MD5_MAX_KEY],
}

/// A `struct sockaddr_storage` as bytes, aligned as the kernel expects.
#[repr(C, align(8))]
struct SockaddrBuf([u8; SOCKADDR_STORAGE]);

impl SockaddrBuf {
    /// `addr` in the layout of `sockaddr_in` or `sockaddr_in6` (port 0), and the length that matters.
    fn from_ip(addr: IpAddr) -> (SockaddrBuf, usize) {
        let mut b = [0u8; SOCKADDR_STORAGE];
        match addr {
            IpAddr::V4(a) => {
                b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                b[4..8].copy_from_slice(&a.octets());
                (SockaddrBuf(b), 16)
            }
            IpAddr::V6(a) => {
                b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                b[8..24].copy_from_slice(&a.octets());
                (SockaddrBuf(b), 28)
            }
        }
    }

    /// The socket address these bytes hold, if IPv4 or IPv6.
    fn to_socket_addr(&self) -> Option<SocketAddr> {
        let b = &self.0;
        let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
        let port = u16::from_be_bytes([b[2], b[3]]);
        if family == libc::AF_INET {
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        } else if family == libc::AF_INET6 {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                port,
                flow,
                scope,
            )))
        } else {
            None
        }
    }
}

/// Whether the socket is an IPv6 one (`SO_DOMAIN`).
fn is_v6(fd: &impl AsFd) -> io::Result<bool> {
    Ok(get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? == libc::AF_INET6)
}

fn set_int(fd: &impl AsFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed (open for the call); the option value is a live c_int and the length
    // passed is its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_int(fd: &impl AsFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: the descriptor is borrowed; value and len are live locals the kernel writes at most `len`
    // bytes to.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs (or, with an empty key, removes) the TCP-MD5 key for segments to and from `peer` on a TCP
/// socket. On an IPv6 socket an IPv4 peer is given as its IPv4-mapped address, as the kernel wants for
/// dual-stack listeners. Keys longer than [`MD5_MAX_KEY`] bytes are refused.
pub fn set_tcp_md5(fd: &impl AsFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP-MD5 key of {} bytes; at most {MD5_MAX_KEY}", key.len()),
        ));
    }
    let peer = match peer {
        IpAddr::V4(a) if is_v6(fd)? => IpAddr::V6(a.to_ipv6_mapped()),
        p => p,
    };
    let mut sig = Md5Sig {
        addr: SockaddrBuf::from_ip(peer).0 .0,
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY],
    };
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: the descriptor is borrowed; `sig` has the layout of `struct tcp_md5sig` (repr(C), same field
    // types and order, 8-byte aligned like sockaddr_storage) and lives across the call; the kernel only
    // reads `size_of::<Md5Sig>()` bytes of it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::from_ref(&sig).cast(),
            size_of::<Md5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the smallest TTL (IPv4) or hop limit (IPv6) a TCP segment may arrive with. On an IPv6 socket both
/// are set, so IPv4-mapped peers of a dual-stack socket are covered too.
pub fn set_min_ttl(fd: &impl AsFd, min: u8) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_IP, libc::IP_MINTTL, i32::from(min))?;
    if is_v6(fd)? {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, i32::from(min))?;
    }
    Ok(())
}

/// Asks the kernel to report each received datagram's TTL / hop limit to [`recv_with_ttl`].
pub fn set_recv_ttl(fd: &impl AsFd) -> io::Result<()> {
    if is_v6(fd)? {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
    }
    // An IPv6 socket may also receive IPv4 (mapped) datagrams; IPv4 sockets only these.
    set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
}

/// One datagram received by [`recv_with_ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes written to the buffer.
    pub len: usize,
    /// The sender.
    pub from: SocketAddr,
    /// Its TTL / hop limit, when the kernel reported one (after [`set_recv_ttl`]).
    pub ttl: Option<u8>,
}

/// Control-message buffer, aligned for `struct cmsghdr`.
#[repr(C, align(8))]
struct ControlBuf([u8; 128]);

/// Receives one datagram without blocking (`MSG_DONTWAIT`), with its sender and TTL / hop limit. A would-block
/// error comes back as such, for use inside tokio's `async_io`.
pub fn recv_with_ttl(fd: &impl AsFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut name = SockaddrBuf([0; SOCKADDR_STORAGE]);
    let mut control = ControlBuf([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid (empty) value, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = std::ptr::from_mut(&mut name).cast();
    msg.msg_namelen = SOCKADDR_STORAGE as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = std::ptr::from_mut(&mut control).cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: the descriptor is borrowed; msg points at the live, exclusively borrowed name, iovec (over
    // `buf`) and control buffers with their true lengths, so the kernel writes only inside them.
    let n = unsafe { libc::recvmsg(fd.as_fd().as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = name
        .to_socket_addr()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from a non-IP sender"))?;
    let used = msg.msg_controllen.min(control.0.len());
    Ok(Received {
        len: n as usize,
        from,
        ttl: ttl_from_control(&control.0[..used]),
    })
}

/// Finds the IP_TTL or IPV6_HOPLIMIT control message in the bytes `recvmsg` returned: each is a `cmsghdr`
/// (length as usize, level, type as c_int) followed by its data, and the next one starts at the length
/// rounded up to the size of usize.
fn ttl_from_control(mut c: &[u8]) -> Option<u8> {
    const W: usize = size_of::<usize>();
    const HDR: usize = W + 8;
    while c.len() >= HDR {
        let len = usize::from_ne_bytes(c[..W].try_into().ok()?);
        let level = i32::from_ne_bytes(c[W..W + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(c[W + 4..W + 8].try_into().ok()?);
        if len < HDR || len > c.len() {
            return None;
        }
        let data = &c[HDR..len];
        let is_ttl = (level == libc::IPPROTO_IP && kind == libc::IP_TTL)
            || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT);
        if is_ttl && data.len() >= 4 {
            let v = i32::from_ne_bytes(data[..4].try_into().ok()?);
            return u8::try_from(v).ok();
        }
        let next = len.div_ceil(W) * W;
        c = c.get(next..)?;
    }
    None
}

/// Size of a base page.
const PAGE: usize = 4096;

/// Asks the kernel to back `region` with transparent huge pages where it can (`MADV_HUGEPAGE`). Meant for
/// freshly reserved, not yet written memory such as a `Vec`'s spare capacity: pages touched afterwards come
/// as 2 MiB pages when the kernel has them. Only the whole base pages inside the region are advised; a region
/// smaller than one page is left alone. Contents are never changed.
pub fn advise_huge_pages<T>(region: &mut [MaybeUninit<T>]) -> io::Result<()> {
    let start = region.as_mut_ptr() as usize;
    let end = start + size_of_val(region);
    let first = start.next_multiple_of(PAGE);
    let last = end - end % PAGE;
    if last <= first {
        return Ok(());
    }
    // SAFETY: [first, last) lies inside `region`, which this call borrows exclusively, and is page aligned as
    // madvise requires; MADV_HUGEPAGE only changes how the kernel backs the range, never its contents or
    // mapping, so no Rust value is affected.
    let rc = unsafe { libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the CPU to bring the cache line holding `r` into all cache levels, without waiting for it: a hint that
/// lets a loop start the memory loads of later items while it works on earlier ones. No-op where the target has
/// no prefetch instruction.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, part of every x86_64 target) never faults and changes no memory or register
    // state; `r` is a valid reference in any case.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((r as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Restores the default action for `SIGPIPE`: the process ends when it writes to a pipe with no reader.
pub fn default_sigpipe() {
    // SAFETY: `signal` with a valid signal number and `SIG_DFL` only changes this process's disposition for
    // SIGPIPE; no handler code runs and no memory is passed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::UdpSocket;

    fn udp_pair(bind: &str) -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind(bind).expect("bind");
        let tx = UdpSocket::bind(bind).expect("bind");
        (rx, tx)
    }

    fn wait_recv(rx: &UdpSocket, buf: &mut [u8]) -> Received {
        for _ in 0..200 {
            match recv_with_ttl(rx, buf) {
                Ok(r) => return r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        panic!("nothing received in 1 s");
    }

    #[test]
    fn received_ttl_is_reported_for_ipv4_datagrams() {
        let (rx, tx) = udp_pair("127.0.0.1:0");
        set_recv_ttl(&rx).expect("IP_RECVTTL");
        let mut buf = [0u8; 16];
        for ttl in [255u32, 64, 1] {
            tx.set_ttl(ttl).expect("ttl");
            tx.send_to(b"bfd", rx.local_addr().expect("addr")).expect("send");
            let r = wait_recv(&rx, &mut buf);
            assert_eq!((r.len, &buf[..3]), (3, &b"bfd"[..]));
            assert_eq!(r.from, tx.local_addr().expect("addr"));
            assert_eq!(r.ttl, Some(ttl as u8));
        }
    }

    #[test]
    fn received_hop_limit_is_reported_for_ipv6_datagrams() {
        let (rx, tx) = udp_pair("[::1]:0");
        set_recv_ttl(&rx).expect("IPV6_RECVHOPLIMIT");
        let mut buf = [0u8; 16];
        for hops in [255u32, 7] {
            socket2::SockRef::from(&tx)
                .set_unicast_hops_v6(hops)
                .expect("hops");
            tx.send_to(b"x", rx.local_addr().expect("addr")).expect("send");
            let r = wait_recv(&rx, &mut buf);
            assert_eq!(r.ttl, Some(hops as u8));
            assert_eq!(r.from.ip(), "::1".parse::<IpAddr>().expect("ip"));
        }
    }

    #[test]
    fn without_the_option_no_ttl_is_reported() {
        let (rx, tx) = udp_pair("127.0.0.1:0");
        tx.send_to(b"x", rx.local_addr().expect("addr")).expect("send");
        assert_eq!(wait_recv(&rx, &mut [0u8; 4]).ttl, None);
    }

    #[test]
    fn malformed_control_bytes_yield_no_ttl() {
        assert_eq!(ttl_from_control(&[]), None);
        assert_eq!(ttl_from_control(&[0xff; 40]), None);
        let mut short = vec![0u8; 16];
        short[..8].copy_from_slice(&4usize.to_ne_bytes());
        assert_eq!(ttl_from_control(&short), None);
    }

    #[test]
    fn md5_keys_install_on_v4_and_dual_stack_sockets_and_long_keys_are_refused() {
        let v4 = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        set_tcp_md5(&v4, "192.0.2.1".parse().expect("ip"), b"secret").expect("md5 v4");
        set_tcp_md5(&v4, "192.0.2.1".parse().expect("ip"), b"").expect("md5 removed");
        let v6 = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        set_tcp_md5(&v6, "2001:db8::1".parse().expect("ip"), b"secret").expect("md5 v6");
        set_tcp_md5(&v6, "192.0.2.1".parse().expect("ip"), b"secret").expect("md5 mapped");
        let long = [b'k'; MD5_MAX_KEY + 1];
        let e = set_tcp_md5(&v4, "192.0.2.1".parse().expect("ip"), &long).expect_err("too long");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("81 bytes"), "{e}");
    }

    #[test]
    fn min_ttl_is_set_on_both_families() {
        let v4 = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        set_min_ttl(&v4, 254).expect("minttl");
        assert_eq!(get_int(&v4, libc::IPPROTO_IP, libc::IP_MINTTL).expect("get"), 254);
        let v6 = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        set_min_ttl(&v6, 255).expect("minhop");
        assert_eq!(
            get_int(&v6, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT).expect("get"),
            255
        );
        assert_eq!(get_int(&v6, libc::IPPROTO_IP, libc::IP_MINTTL).expect("get"), 255);
    }

    /// A loopback TCP connection attempt from a client with `client_key` and `ttl` to a listener with
    /// `server_key` and `min_ttl`: whether the handshake completed within 300 ms.
    fn connects(server_key: &[u8], client_key: &[u8], min_ttl: Option<u8>, ttl: u32) -> bool {
        let l = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        if !server_key.is_empty() {
            set_tcp_md5(&l, lo, server_key).expect("server key");
        }
        if let Some(m) = min_ttl {
            set_min_ttl(&l, m).expect("min ttl");
        }
        l.bind(&SocketAddr::new(lo, 0).into()).expect("bind");
        l.listen(4).expect("listen");
        let to = l.local_addr().expect("addr");
        let c = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        if !client_key.is_empty() {
            set_tcp_md5(&c, lo, client_key).expect("client key");
        }
        c.set_ttl_v4(ttl).expect("ttl");
        c.connect_timeout(&to, std::time::Duration::from_millis(300))
            .is_ok()
    }

    #[test]
    fn tcp_md5_lets_the_right_key_through_and_drops_a_wrong_or_missing_one() {
        assert!(connects(b"s3cret", b"s3cret", None, 64));
        assert!(!connects(b"s3cret", b"wrong", None, 64));
        assert!(!connects(b"s3cret", b"", None, 64));
        assert!(!connects(b"", b"s3cret", None, 64));
    }

    #[test]
    fn min_ttl_drops_segments_that_arrive_with_a_smaller_ttl() {
        assert!(connects(b"", b"", Some(255), 255));
        assert!(!connects(b"", b"", Some(255), 254));
        assert!(connects(b"", b"", Some(250), 250));
    }

    #[test]
    fn huge_page_advice_covers_the_whole_pages_of_a_region() {
        // 8 MiB of spare capacity: advised, then filled; the values are untouched by the advice.
        let mut v: Vec<u64> = Vec::with_capacity(1 << 20);
        advise_huge_pages(v.spare_capacity_mut()).expect("madvise");
        v.resize(1 << 20, 7);
        assert!(v.iter().all(|&x| x == 7));
        // Smaller than a page: nothing to advise, not an error.
        let mut small: Vec<u8> = Vec::with_capacity(100);
        advise_huge_pages(small.spare_capacity_mut()).expect("small region");
        let mut empty: Vec<u8> = Vec::new();
        advise_huge_pages(empty.spare_capacity_mut()).expect("empty region");
    }
}
