//! All socket and timer I/O of the speaker: the accept loop, and one task per neighbour that owns its TCP
//! connection and timers, drives its [`Fsm`] with what happens, and carries out what the FSM and the pure
//! decisions of [`crate::neighbor`] and [`crate::rib`] ask for.
//!
//! Connection collisions (RFC 4271 §6.8): an incoming connection is taken when the session has none; when it
//! already has one past Connect, the connection opened by the speaker with the higher BGP identifier survives
//! (the peer's identifier is remembered from earlier OPENs); when it is not known yet, the incoming
//! connection is refused with Cease / connection collision resolution.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::fsm::{
    Config, DownReason, Event, Fsm, LocalRestart, Negotiated, Output, PeerRestart, State, Timer,
};
use crate::neighbor::{self, family_name, family_of, Cmd, LastReset, Neighbor, Shared, Stale};
use crate::network::{canonical, canonical_sa, connect, prepare};
use crate::packet::attribute::{AFI_IPV4, AFI_IPV6, SAFI_UNICAST};
use crate::packet::error::{code, subcode};
use crate::packet::message::frame_len;
use crate::packet::{Codec, Message, Notification, Update, WithdrawReason};
use crate::rib;

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

/// One neighbour's session until the speaker stops it.
pub(crate) async fn session(shared: Arc<Shared>, n: Arc<Neighbor>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut s = Session::new(shared, n);
    let mut outputs = s.fsm.process(Event::ManualStart);
    loop {
        s.carry_out(outputs).await;
        if s.stopped && s.conn.is_none() {
            return;
        }
        outputs = Vec::new();
        // Frames already buffered are decoded before waiting for anything new: a peer that sent its OPEN and
        // KEEPALIVE in one segment must not wait for its next message.
        if !s.pending() {
            if let Some(e) = s.wait(&mut rx).await {
                outputs.extend(s.fsm.process(e));
            }
        }
        outputs.extend(s.read_messages());
    }
}

/// The connection of a session.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    local: SocketAddr,
}

type ConnectFut = Pin<Box<dyn std::future::Future<Output = std::io::Result<TcpStream>> + Send>>;

/// One neighbour's session: its FSM, connection and timers, and what graceful restart holds of its routes.
struct Session {
    shared: Arc<Shared>,
    n: Arc<Neighbor>,
    ebgp: bool,
    fsm: Fsm,
    conn: Option<Conn>,
    connecting: Option<ConnectFut>,
    timers: HashMap<Timer, Instant>,
    codec: Codec,
    peer_router_id: Option<Ipv4Addr>,
    /// The peer's graceful-restart capability from the last OPEN.
    peer_restart: Option<PeerRestart>,
    /// Every down event since the session was last Established (none while it is).
    loss: Option<Vec<DownReason>>,
    /// Routes kept as stale while the peer restarts, and when the rest goes.
    stale: Option<(Stale, Instant)>,
    /// Prefixes announced on this session now.
    sent: HashSet<IpNet>,
    stopped: bool,
}

impl Session {
    fn new(shared: Arc<Shared>, n: Arc<Neighbor>) -> Session {
        let c = &n.cfg;
        let ebgp = c.remote_asn != shared.cfg.local_asn;
        let families = [(c.ipv4, AFI_IPV4), (c.ipv6, AFI_IPV6)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, afi)| (afi, SAFI_UNICAST))
            .collect();
        let fsm = Fsm::new(Config {
            local_asn: shared.cfg.local_asn,
            remote_asn: c.remote_asn,
            router_id: shared.cfg.router_id,
            hold_time: c.hold_time,
            keepalive: c.keepalive,
            connect_retry: c.connect_retry,
            passive: c.passive,
            families,
            graceful_restart: shared.cfg.graceful_restart.map(|time| LocalRestart {
                time,
                forwarding: shared.cfg.keeps_forwarding,
                restarting: shared.cfg.restarting,
            }),
        });
        Session {
            shared,
            n,
            ebgp,
            fsm,
            conn: None,
            connecting: None,
            timers: HashMap::new(),
            codec: Codec::default(),
            peer_router_id: None,
            peer_restart: None,
            loss: None,
            stale: None,
            sent: HashSet::new(),
            stopped: false,
        }
    }

    /// Carries out what the FSM asked for; sending can fail, which is one more event.
    async fn carry_out(&mut self, mut outputs: Vec<Output>) {
        while !outputs.is_empty() {
            let mut next = Vec::new();
            for o in std::mem::take(&mut outputs) {
                let failed = match o {
                    Output::Connect => {
                        if self.conn.is_none() {
                            let cfg = self.n.cfg.clone();
                            self.connecting = Some(Box::pin(async move { connect(&cfg).await }));
                        }
                        false
                    }
                    Output::Send(m) => !self.send(&[m]).await,
                    Output::Close => {
                        self.close().await;
                        false
                    }
                    Output::StartTimer(t, d) => {
                        self.timers.insert(t, Instant::now() + d);
                        false
                    }
                    Output::StopTimer(t) => {
                        self.timers.remove(&t);
                        false
                    }
                    Output::Established(neg) => !self.on_established(neg).await,
                    Output::Down(why) => {
                        self.on_down(why);
                        false
                    }
                    Output::Update(u) => {
                        if self.on_update(*u) {
                            next.extend(self.fsm.process(Event::MaxPrefixExceeded));
                        }
                        false
                    }
                    Output::RouteRefresh(_) => !self.replay(false).await,
                };
                if failed {
                    next.extend(self.fsm.process(Event::TcpFails));
                }
            }
            let state = self.fsm.state();
            self.n.with_status(|s| s.state = state);
            outputs = next;
        }
    }

    /// Writes messages; false when the connection failed.
    async fn send(&mut self, msgs: &[Message]) -> bool {
        let Some(cn) = self.conn.as_mut() else {
            return true;
        };
        let mut b = Vec::new();
        for m in msgs {
            self.codec.encode(m, &mut b);
        }
        if cn.stream.write_all(&b).await.is_err() {
            return false;
        }
        self.n.with_status(|s| s.msgs_sent += msgs.len() as u64);
        true
    }

    async fn close(&mut self) {
        if let Some(mut cn) = self.conn.take() {
            let _ = cn.stream.shutdown().await;
        }
        self.connecting = None;
        self.codec = Codec::default();
        self.sent.clear();
        self.n.with_status(|s| {
            s.connection = None;
            s.prefixes_sent = 0;
            s.prefixes_sent_by_family.clear();
        });
    }

    /// The session is up: the stale routes get a new deadline, and the whole Adj-RIB-Out goes out with
    /// End-of-RIB markers. False when sending failed.
    async fn on_established(&mut self, neg: Negotiated) -> bool {
        let c = &self.n.cfg;
        self.codec = Codec {
            four_octet_as: neg.four_octet_as,
        };
        self.peer_router_id = Some(neg.peer_router_id);
        self.peer_restart = neg.peer_graceful_restart.clone();
        self.loss = None;
        if let Some((st, until)) = self.stale.as_mut() {
            // Back in time: families it did not keep forwarding go now; what it re-announces is fresh; the rest
            // goes at its End-of-RIB or at the deadline.
            let gone = st.on_reestablished(self.peer_restart.as_ref());
            *until = (*until).max(Instant::now() + Duration::from_secs(10));
            if st.is_empty() {
                self.stale = None;
            }
            self.flush(&gone);
        }
        tracing::info!(neighbor = %c.address, asn = neg.peer_asn, hold = ?neg.hold_time, "BGP session established");
        self.n.with_status(|s| {
            s.state = State::Established;
            s.since = Some(SystemTime::now());
            s.negotiated = Some(neg.clone());
        });
        self.n.established.send_replace(true);
        self.replay(true).await
    }

    /// Sends the whole Adj-RIB-Out again (after establishment with End-of-RIB, or on ROUTE-REFRESH).
    async fn replay(&mut self, eor: bool) -> bool {
        let all: Vec<IpNet> = self
            .shared
            .rib_out
            .lock()
            .map(|o| o.routes().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        self.send_changes(&all, eor).await
    }

    /// Sends the current state of `prefixes` from the Adj-RIB-Out; false when the connection failed.
    async fn send_changes(&mut self, prefixes: &[IpNet], eor: bool) -> bool {
        let Some(neg) = self.fsm.negotiated().cloned() else {
            return true;
        };
        let local = self.conn.as_ref().map(|x| x.local.ip());
        let to = rib::ExportTo {
            local_asn: self.shared.cfg.local_asn,
            neighbor: &self.n.cfg,
            negotiated: &neg,
            local,
            codec: self.codec,
        };
        let Ok(out) = self
            .shared
            .rib_out
            .lock()
            .map(|o| rib::outgoing(&o, prefixes, &to, eor))
        else {
            return true;
        };
        if out.no_next_hop > 0 {
            tracing::warn!(neighbor = %self.n.cfg.address, prefixes = out.no_next_hop, "no next hop of the prefixes' family on this session (set next_hop / ipv6_next_hop); not announced");
        }
        let msgs: Vec<Message> = out
            .updates
            .into_iter()
            .map(|u| Message::Update(Box::new(u)))
            .collect();
        if !self.send(&msgs).await {
            return false;
        }
        for p in &out.withdrawn {
            self.sent.remove(p);
        }
        self.sent.extend(out.announced);
        let mut by_family = std::collections::BTreeMap::new();
        for p in &self.sent {
            *by_family.entry(family_name(family_of(p)).to_owned()).or_insert(0) += 1;
        }
        let total = self.sent.len();
        self.n.with_status(|s| {
            s.prefixes_sent = total;
            s.prefixes_sent_by_family = by_family;
        });
        true
    }

    /// The session left Established, or an event of the same loss followed: the peer's routes are kept as
    /// stale per family or flushed, decided over every event of the loss (see [`neighbor::after_loss`]).
    fn on_down(&mut self, why: DownReason) {
        let c = &self.n.cfg;
        // A loss starts when the session leaves Established; later down events (failed attempts to come back,
        // BFD) belong to it until the session is Established again.
        let was_up = self.n.status.lock().is_ok_and(|s| s.negotiated.is_some());
        if self.loss.is_none() && !was_up {
            tracing::info!(neighbor = %c.address, reason = %why, "BGP connection attempt failed");
            self.n.with_status(|s| {
                s.last_reset = Some(LastReset {
                    message: why.to_string(),
                    reason: why.clone(),
                    at: SystemTime::now(),
                })
            });
            return;
        }
        tracing::info!(neighbor = %c.address, reason = %why, "BGP session down");
        let first = self.loss.is_none();
        self.n.established.send_replace(false);
        let now = SystemTime::now();
        self.n.with_status(|s| {
            s.since = Some(now);
            s.negotiated = None;
            if first {
                s.flaps += 1;
            }
            s.last_reset = Some(LastReset {
                message: why.to_string(),
                reason: why.clone(),
                at: now,
            });
        });
        let loss = self.loss.get_or_insert_with(Vec::new);
        loss.push(why);
        let held = match (first, self.stale.as_ref()) {
            (true, _) => self.n.rib_in.lock().map(|r| r.prefixes()).unwrap_or_default(),
            (false, Some((st, _))) => st.prefixes.values().flatten().copied().collect(),
            (false, None) => return,
        };
        let (stale, flush, retention) = neighbor::after_loss(&held, self.peer_restart.as_ref(), loss);
        if !stale.is_empty() {
            tracing::info!(neighbor = %c.address, prefixes = stale.len(), restart_time = ?stale.until, "peer restarting: keeping its routes as stale");
        }
        self.stale = match self.stale.take() {
            _ if stale.is_empty() => None,
            Some((_, until)) => Some((stale, until)),
            None => {
                let until = Instant::now() + stale.until;
                Some((stale, until))
            }
        };
        self.n.with_status(|s| s.graceful_restart = retention);
        self.flush(&flush);
    }

    /// Drops `prefixes` from the Adj-RIB-In and the best paths.
    fn flush(&self, prefixes: &[IpNet]) {
        let removed = self
            .n
            .rib_in
            .lock()
            .map(|mut r| r.remove_all(prefixes))
            .unwrap_or_default();
        self.update_counts();
        self.shared.recompute(&removed);
    }

    /// Publishes the Adj-RIB-In's size and the stale prefixes.
    fn update_counts(&self) {
        let len = self.n.rib_in.lock().map(|r| r.len()).unwrap_or(0);
        let stale = self.stale.as_ref().map_or(0, |(s, _)| s.len());
        if let Ok(mut set) = self.n.stale.lock() {
            *set = self
                .stale
                .as_ref()
                .map(|(s, _)| s.prefixes.values().flatten().copied().collect())
                .unwrap_or_default();
        }
        self.n.with_status(|s| {
            s.prefixes_rcvd = len;
            s.prefixes_stale = stale;
        });
    }

    /// An UPDATE: screened, stale routes refreshed or flushed at End-of-RIB, applied to the Adj-RIB-In and
    /// the best paths. Returns whether the maximum-prefix limit is exceeded.
    fn on_update(&mut self, mut u: Update) -> bool {
        let c = &self.n.cfg;
        if let Some((st, _)) = self.stale.as_mut() {
            let gone = st.on_update(&u);
            if st.is_empty() {
                self.stale = None;
            }
            self.flush(&gone);
        }
        neighbor::screen(&mut u, self.shared.cfg.local_asn);
        match u.treat_as_withdraw {
            Some(WithdrawReason::AsPathLoop) => {
                tracing::debug!(neighbor = %c.address, "AS path loop: the UPDATE's prefixes are not used");
            }
            Some(why) => {
                tracing::warn!(neighbor = %c.address, reason = %why, "malformed UPDATE treated as withdraw (RFC 7606)");
            }
            None => {}
        }
        if let Some(why) = u.treat_as_withdraw {
            self.n.with_status(|s| {
                s.updates_withdrawn += 1;
                s.last_withdrawn = Some(why);
            });
        }
        let Ok(applied) = self.n.rib_in.lock().map(|mut r| r.apply(&u)) else {
            return false;
        };
        self.update_counts();
        if applied.over_limit {
            tracing::warn!(neighbor = %c.address, max = ?c.max_prefix, "maximum prefixes exceeded");
            return true;
        }
        let touched: Vec<IpNet> = applied.changed.into_iter().chain(applied.removed).collect();
        self.shared.recompute(&touched);
        false
    }

    /// Whether a complete message (or a framing error) is already buffered.
    fn pending(&self) -> bool {
        self.conn.as_ref().is_some_and(|cn| {
            matches!(frame_len(&cn.buf), Ok(Some(l)) if cn.buf.len() >= l) || frame_len(&cn.buf).is_err()
        })
    }

    /// Waits for the next thing to happen: a command, the outgoing connection, bytes from the peer, the end
    /// of the stale routes' time, or a timer.
    async fn wait(&mut self, rx: &mut mpsc::UnboundedReceiver<Cmd>) -> Option<Event> {
        let deadline = self.timers.iter().min_by_key(|(_, t)| **t).map(|(k, t)| (*k, *t));
        let stale_until = self.stale.as_ref().map(|(_, t)| *t);
        tokio::select! {
            cmd = rx.recv() => self.command(cmd).await,
            res = async { match self.connecting.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                self.connecting = None;
                self.connected(res)
            }
            r = async { match self.conn.as_mut() { Some(cn) => cn.stream.read_buf(&mut cn.buf).await, None => std::future::pending().await } } => {
                match r {
                    Ok(0) | Err(_) => Some(Event::TcpFails),
                    Ok(_) => None,
                }
            }
            _ = async { match stale_until { Some(t) => sleep_until(t).await, None => std::future::pending().await } } => {
                if let Some((mut st, _)) = self.stale.take() {
                    tracing::info!(neighbor = %self.n.cfg.address, prefixes = st.len(), "restart time over: dropping stale routes");
                    self.flush(&st.take_all());
                }
                None
            }
            _ = async { match deadline { Some((_, t)) => sleep_until(t).await, None => std::future::pending().await } } => {
                let (k, _) = deadline?;
                self.timers.remove(&k);
                Some(Event::TimerExpired(k))
            }
        }
    }

    /// A command from the speaker.
    async fn command(&mut self, cmd: Option<Cmd>) -> Option<Event> {
        match cmd {
            None => {
                self.stopped = true;
                Some(Event::ManualStop("speaker stopped".into()))
            }
            Some(Cmd::Stop(msg)) => {
                self.stopped = true;
                Some(Event::ManualStop(msg))
            }
            Some(Cmd::BfdDown) => Some(Event::BfdDown),
            Some(Cmd::Changed(prefixes)) => {
                let up = self.fsm.state() == State::Established;
                (up && !self.send_changes(&prefixes, false).await).then_some(Event::TcpFails)
            }
            Some(Cmd::Incoming(stream)) => self.incoming(stream).await,
        }
    }

    /// A connection the peer opened: taken or refused by collision resolution.
    async fn incoming(&mut self, mut stream: TcpStream) -> Option<Event> {
        let take = match self.fsm.state() {
            State::Idle => false,
            State::Connect | State::Active => true,
            s => {
                self.peer_router_id.is_some_and(|p| p > self.shared.cfg.router_id) && s != State::Established
            }
        };
        let collision = |b: &mut Vec<u8>| {
            Codec::default().encode(
                &Message::Notification(Notification {
                    code: code::CEASE,
                    subcode: subcode::COLLISION,
                    data: vec![],
                }),
                b,
            )
        };
        let mut b = Vec::new();
        collision(&mut b);
        if !take {
            let _ = stream.write_all(&b).await;
            return None;
        }
        if let Some(mut old) = self.conn.take() {
            let _ = old.stream.write_all(&b).await;
        }
        self.connecting = None;
        let event = self.adopt(stream, "incoming connection closed");
        if event.is_some() {
            // A new connection restarts the handshake from Active.
            self.fsm = restart_fsm(&self.fsm);
        }
        event
    }

    /// The outgoing connection completed or failed.
    fn connected(&mut self, res: std::io::Result<TcpStream>) -> Option<Event> {
        match res {
            Ok(stream) => self.adopt(stream, "connection closed").or(Some(Event::TcpFails)),
            Err(e) => {
                tracing::debug!(neighbor = %self.n.cfg.address, error = %e, "connect failed");
                Some(Event::TcpFails)
            }
        }
    }

    /// Takes `stream` as the session's connection once its socket options are set.
    fn adopt(&mut self, stream: TcpStream, what: &str) -> Option<Event> {
        let c = &self.n.cfg;
        let ready = prepare(&stream, c, self.ebgp)
            .inspect_err(|e| tracing::warn!(neighbor = %c.address, error = %e, "{what}"));
        let (local, remote) = (
            stream.local_addr().ok().map(canonical_sa),
            stream.peer_addr().ok().map(canonical_sa),
        );
        let (Ok(()), Some(l), Some(r)) = (ready, local, remote) else {
            return None;
        };
        self.conn = Some(Conn {
            stream,
            buf: Vec::with_capacity(8192),
            local: l,
        });
        self.n.with_status(|s| s.connection = Some((l, r)));
        Some(Event::TcpConnected)
    }

    /// Decodes every complete message in the buffer into FSM events; stops at the first that asks for
    /// something (the FSM may close the connection).
    fn read_messages(&mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        while let Some(cn) = self.conn.as_mut() {
            let len = match frame_len(&cn.buf) {
                Ok(Some(l)) if cn.buf.len() >= l => l,
                Ok(_) => break,
                Err(e) => {
                    outputs.extend(self.fsm.process(Event::DecodeError(e)));
                    break;
                }
            };
            let frame: Vec<u8> = cn.buf.drain(..len).collect();
            self.n.with_status(|s| s.msgs_rcvd += 1);
            let ev = match self.codec.decode(&frame) {
                Ok(Message::Open(o)) => {
                    self.peer_router_id = Some(o.router_id);
                    self.codec = Codec {
                        four_octet_as: o.four_octet_as().is_some(),
                    };
                    Event::Message(Message::Open(o))
                }
                Ok(m) => Event::Message(m),
                Err(e) => Event::DecodeError(e),
            };
            outputs.extend(self.fsm.process(ev));
            if !outputs.is_empty() {
                break;
            }
        }
        outputs
    }
}

/// A fresh FSM with the same configuration, ready to take a connection (the outputs of its start, an
/// outgoing connect, are not wanted: the connection is already there).
fn restart_fsm(old: &Fsm) -> Fsm {
    let mut f = Fsm::new(old.config().clone());
    let _ = f.process(Event::ManualStart);
    f
}
