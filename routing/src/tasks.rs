//! All socket and timer I/O of the speaker: the listener, and one task per neighbour that owns its TCP
//! connection and timers and drives its [`Fsm`] with what happens.
//!
//! Connection collisions (RFC 4271 §6.8): an incoming connection is taken when the session has none; when it
//! already has one past Connect, the connection opened by the speaker with the higher BGP identifier survives
//! (the peer's identifier is remembered from earlier OPENs); when it is not known yet, the incoming
//! connection is refused with Cease / connection collision resolution.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::fsm::{Config, Event, Fsm, Negotiated, Output, State, Timer};
use crate::packet::attribute::{AsPath, MpNextHop, Origin, AFI_IPV4, AFI_IPV6, SAFI_UNICAST};
use crate::packet::error::{code, subcode};
use crate::packet::message::{frame_len, pack_mp, pack_mp_withdraw, pack_v4, pack_v4_withdraw};
use crate::packet::{Attrs, Codec, Message, Notification, Update};
use crate::rib::Announcement;
use crate::speaker::{Cmd, Neighbor, NeighborConfig, Shared};

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

/// Accepts connections and hands each to its neighbour's task; unknown peers are closed.
pub(crate) async fn accept_loop(shared: Arc<Shared>, l: TcpListener) {
    loop {
        let Ok((stream, peer)) = l.accept().await else {
            continue;
        };
        let ip = canonical(peer.ip());
        match shared.neighbors.iter().find(|n| n.cfg.address == ip) {
            Some(n) => {
                let _ = n.cmd.send(Cmd::Incoming(stream));
            }
            None => tracing::info!(peer = %ip, "connection from an unconfigured peer refused"),
        }
    }
}

fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A socket address with an IPv4-mapped IPv6 address turned into IPv4 (a dual-stack listener reports those).
fn canonical_sa(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

fn annotate(e: std::io::Error, what: &str) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

async fn connect(n: &NeighborConfig) -> std::io::Result<TcpStream> {
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
fn prepare(stream: &TcpStream, n: &NeighborConfig, ebgp: bool) -> std::io::Result<()> {
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

/// The connection of a session.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    local: SocketAddr,
}

type ConnectFut = Pin<Box<dyn std::future::Future<Output = std::io::Result<TcpStream>> + Send>>;

/// One neighbour's session.
pub(crate) async fn session(shared: Arc<Shared>, n: Arc<Neighbor>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let c = &n.cfg;
    let ebgp = c.remote_asn != shared.cfg.local_asn;
    let mut families = Vec::new();
    if c.ipv4 {
        families.push((AFI_IPV4, SAFI_UNICAST));
    }
    if c.ipv6 {
        families.push((AFI_IPV6, SAFI_UNICAST));
    }
    let mut fsm = Fsm::new(Config {
        local_asn: shared.cfg.local_asn,
        remote_asn: c.remote_asn,
        router_id: shared.cfg.router_id,
        hold_time: c.hold_time,
        keepalive: c.keepalive,
        connect_retry: c.connect_retry,
        passive: c.passive,
        families,
        graceful_restart: shared
            .cfg
            .graceful_restart
            .map(|t| (t, true, shared.cfg.restarting)),
    });
    let mut conn: Option<Conn> = None;
    let mut connecting: Option<ConnectFut> = None;
    let mut timers: HashMap<Timer, Instant> = HashMap::new();
    let mut codec = Codec::default();
    let mut peer_router_id: Option<Ipv4Addr> = None;
    let mut stopped = false;
    // Graceful-restart helper (RFC 4724): the peer's restart time while established, and after it went down the
    // prefixes kept as stale with the time they are dropped unless the peer announces them again.
    let mut peer_restart: Option<std::time::Duration> = None;
    let mut stale: Option<(std::collections::HashSet<IpNet>, Instant)> = None;
    let mut outputs = fsm.process(Event::ManualStart);
    loop {
        // Carry out what the FSM asked for; sending can fail, which is one more event.
        while !outputs.is_empty() {
            let mut next = Vec::new();
            for o in std::mem::take(&mut outputs) {
                match o {
                    Output::Connect => {
                        if conn.is_none() {
                            let cfg = c.clone();
                            connecting = Some(Box::pin(async move { connect(&cfg).await }));
                        }
                    }
                    Output::Send(m) => {
                        if let Some(cn) = conn.as_mut() {
                            let mut b = Vec::new();
                            codec.encode(&m, &mut b);
                            if cn.stream.write_all(&b).await.is_err() {
                                next.extend(fsm.process(Event::TcpFails));
                            } else if let Ok(mut s) = n.status.lock() {
                                s.msgs_sent += 1;
                            }
                        }
                    }
                    Output::Close => {
                        if let Some(mut cn) = conn.take() {
                            let _ = cn.stream.shutdown().await;
                        }
                        connecting = None;
                        codec = Codec::default();
                        if let Ok(mut s) = n.status.lock() {
                            s.connection = None;
                        }
                    }
                    Output::StartTimer(t, d) => {
                        timers.insert(t, Instant::now() + d);
                    }
                    Output::StopTimer(t) => {
                        timers.remove(&t);
                    }
                    Output::Established(neg) => {
                        codec = Codec {
                            four_octet_as: neg.four_octet_as,
                        };
                        peer_router_id = Some(neg.peer_router_id);
                        peer_restart = neg
                            .peer_graceful_restart
                            .as_ref()
                            .map(|(t, _)| std::time::Duration::from_secs(u64::from(*t)));
                        if let Some((_, until)) = stale.as_mut() {
                            // Back in time: what it re-announces is fresh; the rest goes at its End-of-RIB or
                            // at the deadline.
                            *until = (*until).max(Instant::now() + std::time::Duration::from_secs(10));
                        }
                        tracing::info!(neighbor = %c.address, asn = neg.peer_asn, hold = ?neg.hold_time, "BGP session established");
                        let local = conn.as_ref().map(|x| x.local.ip());
                        if let Ok(mut s) = n.status.lock() {
                            s.state = State::Established;
                            s.since = Some(SystemTime::now());
                            s.negotiated = Some(neg.clone());
                            s.last_error = None;
                        }
                        let all: Vec<IpNet> = shared
                            .rib_out
                            .lock()
                            .map(|o| o.routes().map(|(p, _)| *p).collect())
                            .unwrap_or_default();
                        let sent =
                            send_changes(&shared, &n, &neg, local, &codec, conn.as_mut(), &all, true).await;
                        if !sent {
                            next.extend(fsm.process(Event::TcpFails));
                        }
                    }
                    Output::Down(why) => {
                        tracing::info!(neighbor = %c.address, reason = %why, "BGP session down");
                        // RFC 4724: a restart shows as the connection closing or timing out; a NOTIFICATION either
                        // way or our own shutdown means the routes go now.
                        let restart = !why.contains("notification") && !why.starts_with("administrative");
                        let gr = peer_restart.take().filter(|_| restart);
                        if let Ok(mut s) = n.status.lock() {
                            s.since = Some(SystemTime::now());
                            s.negotiated = None;
                            s.last_error = Some(why);
                            s.prefixes_sent = 0;
                        }
                        // As a graceful-restart helper, keep the peer's routes while it restarts; otherwise flush.
                        if let Some(t) = gr {
                            let held = n.rib_in.lock().map(|r| r.prefixes()).unwrap_or_default();
                            tracing::info!(neighbor = %c.address, prefixes = held.len(), restart_time = ?t, "peer restarting: keeping its routes as stale");
                            stale = Some((held, Instant::now() + t));
                        } else {
                            stale = None;
                            if let Ok(mut r) = n.rib_in.lock() {
                                r.clear();
                            }
                            if let Ok(mut s) = n.status.lock() {
                                s.prefixes_rcvd = 0;
                            }
                            shared.recompute_fib();
                        }
                    }
                    Output::Update(mut u) => {
                        if let Some((set, _)) = stale.as_mut() {
                            for p in &u.nlri {
                                set.remove(&IpNet::V4(*p));
                            }
                            for p in u.mp_reach.iter().flat_map(|m| &m.nlri) {
                                set.remove(p);
                            }
                            let eor = u.nlri.is_empty()
                                && u.withdrawn.is_empty()
                                && u.mp_reach.is_none()
                                && u.mp_unreach.as_ref().is_none_or(|m| m.withdrawn.is_empty());
                            if eor {
                                if let Some((set, _)) = stale.take() {
                                    flush_stale(&shared, &n, &set);
                                }
                            }
                        }
                        // A path through our own AS is a loop (RFC 4271 §9.1.2): it replaces nothing and is not
                        // used; an earlier path of the same prefixes from this neighbour is withdrawn.
                        if u.treat_as_withdraw.is_none() && u.attrs.as_path.contains(shared.cfg.local_asn) {
                            tracing::debug!(neighbor = %c.address, "AS path loop: the UPDATE's prefixes are not used");
                            u.treat_as_withdraw = Some("AS path loop".into());
                        }
                        let applied = n.rib_in.lock().map(|mut r| {
                            let a = r.apply(&u);
                            (a, r.len())
                        });
                        if let Ok((a, len)) = applied {
                            if let Some(why) = u.treat_as_withdraw.as_ref().filter(|w| *w != "AS path loop") {
                                tracing::warn!(neighbor = %c.address, reason = %why, "malformed UPDATE treated as withdraw (RFC 7606)");
                            }
                            if let Ok(mut s) = n.status.lock() {
                                s.prefixes_rcvd = len;
                            }
                            if a.over_limit {
                                tracing::warn!(neighbor = %c.address, max = ?c.max_prefix, "maximum prefixes exceeded");
                                next.extend(fsm.process(Event::MaxPrefixExceeded));
                            } else if !a.changed.is_empty() || !a.removed.is_empty() {
                                shared.recompute_fib();
                            }
                        }
                    }
                    Output::RouteRefresh(_) => {
                        if let Some(neg) = fsm.negotiated().cloned() {
                            let local = conn.as_ref().map(|x| x.local.ip());
                            let all: Vec<IpNet> = shared
                                .rib_out
                                .lock()
                                .map(|o| o.routes().map(|(p, _)| *p).collect())
                                .unwrap_or_default();
                            if !send_changes(&shared, &n, &neg, local, &codec, conn.as_mut(), &all, false)
                                .await
                            {
                                next.extend(fsm.process(Event::TcpFails));
                            }
                        }
                    }
                }
            }
            if let Ok(mut s) = n.status.lock() {
                s.state = fsm.state();
            }
            outputs = next;
        }
        if stopped && conn.is_none() {
            return;
        }
        let deadline = timers.iter().min_by_key(|(_, t)| **t).map(|(k, t)| (*k, *t));
        // Frames already buffered are decoded before waiting for anything new: a peer that sent its OPEN and
        // KEEPALIVE in one segment must not wait for its next message.
        let pending = conn.as_ref().is_some_and(|cn| {
            matches!(frame_len(&cn.buf), Ok(Some(l)) if cn.buf.len() >= l) || frame_len(&cn.buf).is_err()
        });
        let ev = if pending {
            None
        } else {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => { stopped = true; Some(Event::ManualStop("speaker stopped".into())) }
                    Some(Cmd::Stop(msg)) => { stopped = true; Some(Event::ManualStop(msg)) }
                    Some(Cmd::BfdDown) => Some(Event::BfdDown),
                    Some(Cmd::Changed(prefixes)) => {
                        if let (State::Established, Some(neg)) = (fsm.state(), fsm.negotiated().cloned()) {
                            let local = conn.as_ref().map(|x| x.local.ip());
                            if !send_changes(&shared, &n, &neg, local, &codec, conn.as_mut(), &prefixes, false).await {
                                Some(Event::TcpFails)
                            } else { None }
                        } else { None }
                    }
                    Some(Cmd::Incoming(stream)) => {
                        let take = match fsm.state() {
                            State::Idle => false,
                            State::Connect | State::Active => true,
                            _ => peer_router_id.is_some_and(|p| p > shared.cfg.router_id) && fsm.state() != State::Established,
                        };
                        if take {
                            if let Some(mut old) = conn.take() {
                                let mut b = Vec::new();
                                Codec::default().encode(&Message::Notification(Notification { code: code::CEASE, subcode: subcode::COLLISION, data: vec![] }), &mut b);
                                let _ = old.stream.write_all(&b).await;
                            }
                            connecting = None;
                            let ready = prepare(&stream, c, ebgp).inspect_err(|e| tracing::warn!(neighbor = %c.address, error = %e, "incoming connection closed"));
                            let (local, remote) = (stream.local_addr().ok().map(canonical_sa), stream.peer_addr().ok().map(canonical_sa));
                            if let (Ok(()), Some(l), Some(r)) = (ready, local, remote) {
                                conn = Some(Conn { stream, buf: Vec::with_capacity(8192), local: l });
                                if let Ok(mut s) = n.status.lock() { s.connection = Some((l, r)); }
                                // A new connection restarts the handshake from Active.
                                fsm = restart_fsm(fsm);
                                Some(Event::TcpConnected)
                            } else { None }
                        } else {
                            let mut stream = stream;
                            let mut b = Vec::new();
                            Codec::default().encode(&Message::Notification(Notification { code: code::CEASE, subcode: subcode::COLLISION, data: vec![] }), &mut b);
                            let _ = stream.write_all(&b).await;
                            None
                        }
                    }
                },
                res = async { match connecting.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    connecting = None;
                    match res {
                        Ok(stream) => {
                            let ready = prepare(&stream, c, ebgp).inspect_err(|e| tracing::warn!(neighbor = %c.address, error = %e, "connection closed"));
                            match (ready, stream.local_addr().map(canonical_sa), stream.peer_addr().map(canonical_sa)) {
                                (Ok(()), Ok(l), Ok(r)) => {
                                    conn = Some(Conn { stream, buf: Vec::with_capacity(8192), local: l });
                                    if let Ok(mut s) = n.status.lock() { s.connection = Some((l, r)); }
                                    Some(Event::TcpConnected)
                                }
                                _ => Some(Event::TcpFails),
                            }
                        }
                        Err(e) => {
                            tracing::debug!(neighbor = %c.address, error = %e, "connect failed");
                            Some(Event::TcpFails)
                        }
                    }
                }
                r = async { match conn.as_mut() { Some(cn) => cn.stream.read_buf(&mut cn.buf).await, None => std::future::pending().await } } => {
                    match r {
                        Ok(0) | Err(_) => Some(Event::TcpFails),
                        Ok(_) => None,
                    }
                }
                _ = async { match stale.as_ref() { Some((_, t)) => sleep_until(*t).await, None => std::future::pending().await } } => {
                    if let Some((set, _)) = stale.take() {
                        tracing::info!(neighbor = %c.address, prefixes = set.len(), "restart time over: dropping stale routes");
                        flush_stale(&shared, &n, &set);
                    }
                    None
                }
                _ = async { match deadline { Some((_, t)) => sleep_until(t).await, None => std::future::pending().await } } => {
                    let (k, _) = deadline.unwrap_or((Timer::Hold, Instant::now()));
                    timers.remove(&k);
                    Some(Event::TimerExpired(k))
                }
            }
        };
        if let Some(e) = ev {
            outputs.extend(fsm.process(e));
        }
        // Decode every complete message in the buffer.
        while let Some(cn) = conn.as_mut() {
            let len = match frame_len(&cn.buf) {
                Ok(Some(l)) if cn.buf.len() >= l => l,
                Ok(_) => break,
                Err(e) => {
                    outputs.extend(fsm.process(Event::DecodeError(e)));
                    break;
                }
            };
            let frame: Vec<u8> = cn.buf.drain(..len).collect();
            if let Ok(mut s) = n.status.lock() {
                s.msgs_rcvd += 1;
            }
            let ev = match codec.decode(&frame) {
                Ok(Message::Open(o)) => {
                    peer_router_id = Some(o.router_id);
                    codec = Codec {
                        four_octet_as: o.four_octet_as().is_some(),
                    };
                    Event::Message(Message::Open(o))
                }
                Ok(m) => Event::Message(m),
                Err(e) => Event::DecodeError(e),
            };
            outputs.extend(fsm.process(ev));
            if !outputs.is_empty() {
                // Act on what the message caused before reading on (the FSM may close the connection).
                break;
            }
        }
    }
}

/// A fresh FSM with the same configuration, ready to take a connection (the outputs of its start, an
/// outgoing connect, are not wanted: the connection is already there).
fn restart_fsm(old: Fsm) -> Fsm {
    let mut f = Fsm::new(old.config().clone());
    let _ = f.process(Event::ManualStart);
    f
}

/// The attributes sent to this neighbour for an announcement.
fn export(
    shared: &Shared,
    n: &Neighbor,
    neg: &Negotiated,
    a: &Announcement,
    local: Option<IpAddr>,
    v6: bool,
) -> (Attrs, Option<MpNextHop>) {
    let c = &n.cfg;
    let me = shared.cfg.local_asn;
    let ebgp = neg.peer_asn != me;
    let mut path = Vec::new();
    if ebgp {
        path.push(me);
    }
    for _ in 0..(usize::from(c.prepend) + usize::from(a.prepend)) {
        path.push(me);
    }
    let mut communities = a.communities.clone();
    for x in &c.communities {
        if !communities.contains(x) {
            communities.push(*x);
        }
    }
    let mut large = a.large_communities.clone();
    for x in &c.large_communities {
        if !large.contains(x) {
            large.push(*x);
        }
    }
    let v4_nh = c.next_hop.or(match local {
        Some(IpAddr::V4(l)) => Some(l),
        _ => None,
    });
    let attrs = Attrs {
        origin: Some(Origin::Igp),
        as_path: AsPath::sequence(path),
        next_hop: if v6 { None } else { v4_nh },
        med: a.med.or(c.med),
        local_pref: if ebgp {
            None
        } else {
            Some(c.local_pref.unwrap_or(100))
        },
        communities,
        large_communities: large,
        ..Attrs::default()
    };
    let mp_nh = if v6 {
        let global = c.ipv6_next_hop.or(match local {
            Some(IpAddr::V6(l)) => Some(l),
            _ => None,
        });
        global.map(|g| MpNextHop::V6 {
            global: g,
            link_local: None,
        })
    } else {
        None
    };
    (attrs, mp_nh)
}

/// Drops the stale routes of a neighbour that restarted (not announced again in time, or missing from its
/// End-of-RIB).
fn flush_stale(shared: &Shared, n: &Neighbor, set: &std::collections::HashSet<IpNet>) {
    let (removed, len) = n
        .rib_in
        .lock()
        .map(|mut r| (r.remove_all(set), r.len()))
        .unwrap_or((0, 0));
    if let Ok(mut s) = n.status.lock() {
        s.prefixes_rcvd = len;
    }
    if removed > 0 {
        shared.recompute_fib();
    }
}

/// Sends the current state of `prefixes` from the Adj-RIB-Out: announcements grouped by attributes and
/// packed, withdrawals for those no longer there. With `eor`, End-of-RIB markers follow. Returns false when
/// the connection failed.
#[allow(clippy::too_many_arguments)]
async fn send_changes(
    shared: &Shared,
    n: &Neighbor,
    neg: &Negotiated,
    local: Option<IpAddr>,
    codec: &Codec,
    conn: Option<&mut Conn>,
    prefixes: &[IpNet],
    eor: bool,
) -> bool {
    let Some(cn) = conn else { return true };
    let has = |afi: u16| neg.families.contains(&(afi, SAFI_UNICAST));
    // Group announcements by their exported attributes; collect withdrawals.
    let mut groups: Vec<(Attrs, Option<MpNextHop>, bool, Vec<IpNet>)> = Vec::new();
    let (mut w4, mut w6) = (Vec::new(), Vec::new());
    let mut no_next_hop = 0usize;
    let snapshot: Vec<(IpNet, Option<Announcement>)> = match shared.rib_out.lock() {
        Ok(o) => prefixes.iter().map(|p| (*p, o.get(p).cloned())).collect(),
        Err(_) => return true,
    };
    for (p, a) in snapshot {
        let v6 = matches!(p, IpNet::V6(_));
        if !has(if v6 { AFI_IPV6 } else { AFI_IPV4 }) {
            continue;
        }
        match a {
            None => {
                if v6 {
                    w6.push(p)
                } else if let IpNet::V4(p4) = p {
                    w4.push(p4)
                }
            }
            Some(a) => {
                let (attrs, mp_nh) = export(shared, n, neg, &a, local, v6);
                if !v6 && attrs.next_hop.is_none() || v6 && mp_nh.is_none() {
                    no_next_hop += 1;
                    continue;
                }
                match groups
                    .iter_mut()
                    .find(|g| g.0 == attrs && g.1 == mp_nh && g.2 == v6)
                {
                    Some(g) => g.3.push(p),
                    None => groups.push((attrs, mp_nh, v6, vec![p])),
                }
            }
        }
    }
    if no_next_hop > 0 {
        tracing::warn!(neighbor = %n.cfg.address, prefixes = no_next_hop, "no next hop of the prefixes' family on this session (set next_hop / ipv6_next_hop); not announced");
    }
    let mut msgs: Vec<Update> = Vec::new();
    msgs.extend(pack_v4_withdraw(&w4));
    msgs.extend(pack_mp_withdraw(AFI_IPV6, &w6));
    for (attrs, mp_nh, v6, ps) in &groups {
        if *v6 {
            if let Some(nh) = mp_nh {
                msgs.extend(pack_mp(attrs, AFI_IPV6, *nh, ps, *codec));
            }
        } else {
            let v4: Vec<_> = ps
                .iter()
                .filter_map(|p| if let IpNet::V4(x) = p { Some(*x) } else { None })
                .collect();
            msgs.extend(pack_v4(attrs, &v4, *codec));
        }
    }
    if eor {
        if has(AFI_IPV4) {
            msgs.push(Update::default());
        }
        if has(AFI_IPV6) {
            msgs.push(Update {
                mp_unreach: Some(crate::packet::MpUnreach {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                    withdrawn: vec![],
                }),
                ..Update::default()
            });
        }
    }
    let count = msgs.len() as u64;
    let mut buf = Vec::with_capacity(msgs.len() * 512);
    for m in msgs {
        codec.encode(&Message::Update(Box::new(m)), &mut buf);
    }
    if cn.stream.write_all(&buf).await.is_err() {
        return false;
    }
    let sent = shared.rib_out.lock().map(|o| o.len()).unwrap_or(0);
    if let Ok(mut s) = n.status.lock() {
        s.msgs_sent += count;
        s.prefixes_sent = sent;
    }
    true
}
