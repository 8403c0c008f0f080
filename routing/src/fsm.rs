//! The BGP finite state machine of RFC 4271 §8, Sans-IO: [`Fsm::process`] takes one event and returns what
//! to do (connect, send, close, start or stop a timer, report). Sockets and timers live in the `tasks` module.
//!
//! States and events keep the RFC's names. Simplifications, all allowed by the RFC: no DelayOpen, no
//! DampPeerOscillations, the OPEN is sent as soon as the TCP connection is up; connection collisions are
//! resolved by the session layer, which owns the connections.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::packet::error::{code, subcode};
use crate::packet::{Capability, Message, Notification, Open, RouteRefresh, Update};

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum State {
    /// Refusing connections.
    Idle,
    /// Waiting for the outgoing TCP connection.
    Connect,
    /// Listening for the peer to connect.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for a KEEPALIVE.
    OpenConfirm,
    /// Exchanging routes.
    Established,
}

impl State {
    /// Name as `show bgp summary` prints it.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// The FSM's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// ConnectRetryTimer.
    ConnectRetry,
    /// HoldTimer.
    Hold,
    /// KeepaliveTimer.
    Keepalive,
}

/// Inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// ManualStart (passive or not per configuration).
    ManualStart,
    /// ManualStop, with an RFC 8203 shutdown message.
    ManualStop(String),
    /// Tcp_CR_Acked / TcpConnectionConfirmed: the TCP connection is up.
    TcpConnected,
    /// TcpConnectionFails.
    TcpFails,
    /// A decoded message.
    Message(Message),
    /// A message that did not decode (BGPHeaderErr, BGPOpenMsgErr, UpdateMsgErr).
    DecodeError(crate::packet::DecodeError),
    /// A timer fired.
    TimerExpired(Timer),
    /// BFD declared the path down: the session drops at once.
    BfdDown,
    /// Received routes exceed the configured maximum.
    MaxPrefixExceeded,
}

/// Why a session left Established or an attempt failed: one value from the FSM to the log, the API and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DownReason {
    /// The peer sent a NOTIFICATION.
    #[error("received notification: {notification}")]
    NotificationReceived {
        /// The NOTIFICATION.
        notification: Notification,
    },
    /// A message did not decode; we sent this NOTIFICATION.
    #[error("sent notification {code}/{subcode}: {detail}")]
    NotificationSent {
        /// Error code sent.
        code: u8,
        /// Subcode sent.
        subcode: u8,
        /// What was wrong.
        detail: String,
    },
    /// No message from the peer within the hold time.
    #[error("hold timer expired")]
    HoldTimerExpired,
    /// The TCP connection closed or failed.
    #[error("connection closed")]
    ConnectionClosed,
    /// BFD declared the forwarding path down.
    #[error("BFD down")]
    BfdDown,
    /// The peer sent more prefixes than allowed.
    #[error("maximum prefixes exceeded")]
    MaxPrefixes,
    /// A message the state does not allow.
    #[error("unexpected {message} in {}", state.name())]
    Unexpected {
        /// The message type.
        message: &'static str,
        /// The state it arrived in.
        state: State,
    },
    /// The peer's OPEN names another AS than configured.
    #[error("peer AS {got} is not the configured {want}")]
    BadPeerAs {
        /// AS in the OPEN.
        got: u32,
        /// AS configured.
        want: u32,
    },
    /// The peer's OPEN carries our BGP identifier.
    #[error("peer has our BGP identifier")]
    BadBgpId,
    /// Stopped here (shutdown, reconfiguration, drain), with the RFC 8203 message.
    #[error("administrative shutdown: {message}")]
    AdminShutdown {
        /// The shutdown communication.
        message: String,
    },
}

impl DownReason {
    /// Whether graceful restart may keep the peer's routes over this loss. RFC 4724 §4.2: a restart shows as
    /// the connection closing or the hold timer expiring; RFC 8538 §3 extends that to any NOTIFICATION when both
    /// sides announced the N bit, except a Hard Reset (Cease/9). Our own shutdown, and BFD declaring the path
    /// down (RFC 5882 §4.3.1, control plane not independent), withdraw at once.
    pub fn allows_graceful_restart(&self, notification_gr: bool) -> bool {
        match self {
            DownReason::ConnectionClosed | DownReason::HoldTimerExpired => true,
            DownReason::NotificationReceived { notification } => {
                notification_gr
                    && !(notification.code == code::CEASE && notification.subcode == subcode::HARD_RESET)
            }
            DownReason::NotificationSent {
                code: c, subcode: s, ..
            } => notification_gr && !(*c == code::CEASE && *s == subcode::HARD_RESET),
            DownReason::BfdDown
            | DownReason::MaxPrefixes
            | DownReason::Unexpected { .. }
            | DownReason::BadPeerAs { .. }
            | DownReason::BadBgpId
            | DownReason::AdminShutdown { .. } => false,
        }
    }
}

/// Outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open an outgoing TCP connection.
    Connect,
    /// Send a message.
    Send(Message),
    /// Close the TCP connection.
    Close,
    /// (Re)start a timer.
    StartTimer(Timer, Duration),
    /// Stop a timer.
    StopTimer(Timer),
    /// The session reached Established with these parameters.
    Established(Negotiated),
    /// The session left Established (or never made it), why.
    Down(DownReason),
    /// An UPDATE to apply to the Adj-RIB-In.
    Update(Box<Update>),
    /// The peer asked for our routes again.
    RouteRefresh(RouteRefresh),
}

/// Local configuration of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Local AS.
    pub local_asn: u32,
    /// Expected remote AS.
    pub remote_asn: u32,
    /// Local BGP identifier.
    pub router_id: Ipv4Addr,
    /// Proposed hold time (0 or ≥ 3 s).
    pub hold_time: Duration,
    /// Keepalive interval wanted (the negotiated one is at most a third of the hold time).
    pub keepalive: Duration,
    /// First connect-retry delay; doubled on each failure, up to 8×.
    pub connect_retry: Duration,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// (AFI, SAFI) offered.
    pub families: Vec<(u16, u8)>,
    /// Graceful restart offered to the peer.
    pub graceful_restart: Option<LocalRestart>,
}

/// What both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Negotiated {
    /// Hold time.
    #[serde(rename = "hold_time_secs", serialize_with = "anylb_conf::json::secs")]
    pub hold_time: Duration,
    /// Keepalive interval.
    #[serde(rename = "keepalive_secs", serialize_with = "anylb_conf::json::secs")]
    pub keepalive: Duration,
    /// Peer's AS.
    pub peer_asn: u32,
    /// Peer's BGP identifier.
    pub peer_router_id: Ipv4Addr,
    /// 4-octet ASNs on the wire.
    pub four_octet_as: bool,
    /// Families both offered.
    #[serde(serialize_with = "family_names")]
    pub families: Vec<(u16, u8)>,
    /// Peer supports route refresh.
    pub route_refresh: bool,
    /// Peer's graceful-restart capability.
    pub peer_graceful_restart: Option<PeerRestart>,
}

/// The graceful-restart capability this speaker sends (RFC 4724 §3, RFC 8538 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRestart {
    /// Restart time in seconds.
    pub time: u16,
    /// Whether forwarding state is kept across a restart: every family is listed (with the F bit when
    /// restarting); otherwise none is (RFC 4724 §3: a receiving speaker only, whose routes peers do not keep).
    pub forwarding: bool,
    /// Whether this start is a restart (R bit).
    pub restarting: bool,
}

/// A peer's graceful-restart capability.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerRestart {
    /// Restart time in seconds.
    pub time: u16,
    /// N bit: routes are kept over NOTIFICATIONs too (RFC 8538).
    pub notification: bool,
    /// (AFI, SAFI, forwarding state kept) per family the peer preserves.
    #[serde(serialize_with = "restart_families")]
    pub families: Vec<(u16, u8, bool)>,
}

/// Families by name (`ipv4_unicast`), as the API writes them.
fn family_names<S: serde::Serializer>(f: &[(u16, u8)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(f.iter().map(|&f| crate::neighbor::family_name(f)))
}

/// `{"family": name, "forwarding": kept}` per family of a graceful-restart capability.
fn restart_families<S: serde::Serializer>(f: &[(u16, u8, bool)], s: S) -> Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Kept {
        family: &'static str,
        forwarding: bool,
    }
    s.collect_seq(f.iter().map(|&(afi, safi, forwarding)| Kept {
        family: crate::neighbor::family_name((afi, safi)),
        forwarding,
    }))
}

/// The state machine of one session.
#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: Config,
    state: State,
    negotiated: Option<Negotiated>,
    /// ConnectRetryCounter.
    retries: u32,
    /// Why the session last went down.
    last_error: Option<DownReason>,
}

impl Fsm {
    /// A session in Idle.
    pub fn new(cfg: Config) -> Fsm {
        Fsm {
            cfg,
            state: State::Idle,
            negotiated: None,
            retries: 0,
            last_error: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Parameters of the current session, when Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the session last went down.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn retry_delay(&self) -> Duration {
        let factor = 1u32 << self.retries.min(3);
        self.cfg.connect_retry * factor
    }

    fn open(&self) -> Message {
        let mut caps: Vec<Capability> = self
            .cfg
            .families
            .iter()
            .map(|&(afi, safi)| Capability::MultiProtocol { afi, safi })
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::FourOctetAs(self.cfg.local_asn));
        if let Some(gr) = self.cfg.graceful_restart {
            caps.push(Capability::GracefulRestart {
                restarting: gr.restarting,
                notification: true,
                time: gr.time,
                families: if gr.forwarding {
                    self.cfg.families.iter().map(|&(a, s)| (a, s, true)).collect()
                } else {
                    Vec::new()
                },
            });
        }
        Message::Open(Open {
            asn: self.cfg.local_asn,
            hold_time: u16::try_from(self.cfg.hold_time.as_secs()).unwrap_or(u16::MAX),
            router_id: self.cfg.router_id,
            capabilities: caps,
        })
    }

    /// Goes to Idle after an error: close, stop timers, schedule the next attempt (RFC 4271 §8.2.1.3: an
    /// automatic restart after a connect-retry delay that backs off).
    fn fail(&mut self, why: DownReason, notify: Option<Notification>) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(n) = notify {
            out.push(Output::Send(Message::Notification(n)));
        }
        out.push(Output::Close);
        out.push(Output::StopTimer(Timer::Hold));
        out.push(Output::StopTimer(Timer::Keepalive));
        let was_up = self.state == State::Established
            || self.state == State::OpenConfirm
            || self.state == State::OpenSent;
        if self.state == State::Established {
            self.retries = 0;
        } else {
            self.retries += 1;
        }
        self.negotiated = None;
        self.last_error = Some(why.clone());
        if was_up || self.state != State::Idle {
            out.push(Output::Down(why));
        }
        // Idle, then start again automatically after the (backed-off) connect-retry delay.
        self.state = if self.cfg.passive {
            State::Active
        } else {
            State::Connect
        };
        out.push(Output::StartTimer(Timer::ConnectRetry, self.retry_delay()));
        out
    }

    /// Processes one event.
    pub fn process(&mut self, ev: Event) -> Vec<Output> {
        use State::*;
        match (self.state, ev) {
            (_, Event::ManualStop(msg)) => self.manual_stop(msg),
            (Idle, Event::ManualStart) => {
                self.retries = 0;
                self.start_connecting()
            }
            (_, Event::ManualStart) => vec![],
            (Connect | Active, Event::TimerExpired(Timer::ConnectRetry)) => self.start_connecting(),
            (Connect | Active, Event::TcpConnected) => {
                self.state = OpenSent;
                // RFC 4271 §8.2.2: a large hold timer (4 minutes) until the OPEN arrives.
                vec![
                    Output::StopTimer(Timer::ConnectRetry),
                    Output::Send(self.open()),
                    Output::StartTimer(Timer::Hold, Duration::from_secs(240)),
                ]
            }
            (Connect | Active, Event::TcpFails) => {
                self.retries += 1;
                if self.cfg.passive {
                    self.state = Active;
                } else {
                    self.state = Connect;
                }
                vec![
                    Output::Close,
                    Output::StartTimer(Timer::ConnectRetry, self.retry_delay()),
                ]
            }
            (OpenSent, Event::Message(Message::Open(o))) => self.on_open(o),
            (OpenConfirm, Event::Message(Message::Keepalive)) => self.establish(),
            (Established, Event::Message(Message::Keepalive)) => self.restart_hold(),
            (Established, Event::Message(Message::Update(u))) => {
                let mut out = self.restart_hold();
                out.push(Output::Update(u));
                out
            }
            (Established, Event::Message(Message::RouteRefresh(r))) => vec![Output::RouteRefresh(r)],
            (OpenSent | OpenConfirm | Established, Event::TimerExpired(Timer::Keepalive)) => self.keepalive(),
            (OpenSent | OpenConfirm | Established, Event::TimerExpired(Timer::Hold)) => self.fail(
                DownReason::HoldTimerExpired,
                Some(Notification {
                    code: code::HOLD_TIMER,
                    subcode: 0,
                    data: vec![],
                }),
            ),
            (_, Event::Message(Message::Notification(n))) => {
                self.fail(DownReason::NotificationReceived { notification: n }, None)
            }
            (_, Event::DecodeError(e)) => {
                let n = Notification {
                    code: e.code,
                    subcode: e.subcode,
                    data: e.data.clone(),
                };
                let why = DownReason::NotificationSent {
                    code: e.code,
                    subcode: e.subcode,
                    detail: e.reason,
                };
                self.fail(why, Some(n))
            }
            (OpenSent | OpenConfirm | Established, Event::TcpFails) => {
                self.fail(DownReason::ConnectionClosed, None)
            }
            (_, Event::BfdDown) if self.state != Idle => self.fail(
                DownReason::BfdDown,
                Some(Notification {
                    code: code::CEASE,
                    subcode: 10,
                    data: vec![],
                }),
            ),
            (Established, Event::MaxPrefixExceeded) => self.fail(
                DownReason::MaxPrefixes,
                Some(Notification {
                    code: code::CEASE,
                    subcode: subcode::MAX_PREFIXES,
                    data: vec![],
                }),
            ),
            (OpenSent | OpenConfirm | Established, Event::Message(m)) => {
                let what = match m {
                    Message::Open(_) => "OPEN",
                    Message::Update(_) => "UPDATE",
                    Message::Keepalive => "KEEPALIVE",
                    Message::RouteRefresh(_) => "ROUTE-REFRESH",
                    Message::Notification(_) => "NOTIFICATION",
                };
                self.fail(
                    DownReason::Unexpected {
                        message: what,
                        state: self.state,
                    },
                    Some(Notification {
                        code: code::FSM,
                        subcode: 0,
                        data: vec![],
                    }),
                )
            }
            _ => vec![],
        }
    }

    /// ManualStop: a Cease with the shutdown communication when a session is open, then Idle.
    fn manual_stop(&mut self, msg: String) -> Vec<Output> {
        use State::*;
        let mut out = Vec::new();
        if matches!(self.state, OpenSent | OpenConfirm | Established) {
            out.push(Output::Send(Message::Notification(Notification::shutdown(&msg))));
        }
        out.extend([
            Output::Close,
            Output::StopTimer(Timer::ConnectRetry),
            Output::StopTimer(Timer::Hold),
            Output::StopTimer(Timer::Keepalive),
        ]);
        if self.state == Established {
            out.push(Output::Down(DownReason::AdminShutdown { message: msg }));
        }
        self.state = Idle;
        self.negotiated = None;
        self.retries = 0;
        out
    }

    /// Connect (and the connect-retry timer), or wait in Active for a passive session.
    fn start_connecting(&mut self) -> Vec<Output> {
        if self.cfg.passive {
            self.state = State::Active;
            return vec![];
        }
        self.state = State::Connect;
        vec![
            Output::Connect,
            Output::StartTimer(Timer::ConnectRetry, self.retry_delay()),
        ]
    }

    /// OpenConfirm and the peer's KEEPALIVE: Established.
    fn establish(&mut self) -> Vec<Output> {
        self.state = State::Established;
        self.retries = 0;
        let mut out = Vec::new();
        if let Some(n) = self.negotiated.clone() {
            if !n.hold_time.is_zero() {
                out.push(Output::StartTimer(Timer::Hold, n.hold_time));
            }
            out.push(Output::Established(n));
        }
        out
    }

    /// The keepalive timer: a KEEPALIVE, and the timer again (none when the hold time is zero).
    fn keepalive(&self) -> Vec<Output> {
        let ka = self
            .negotiated
            .as_ref()
            .map_or(self.cfg.keepalive, |n| n.keepalive);
        if ka.is_zero() {
            return vec![];
        }
        vec![
            Output::Send(Message::Keepalive),
            Output::StartTimer(Timer::Keepalive, ka),
        ]
    }

    fn restart_hold(&self) -> Vec<Output> {
        match &self.negotiated {
            Some(n) if !n.hold_time.is_zero() => vec![Output::StartTimer(Timer::Hold, n.hold_time)],
            _ => vec![],
        }
    }

    fn on_open(&mut self, o: Open) -> Vec<Output> {
        if o.asn != self.cfg.remote_asn {
            let data = if o.asn <= 0xffff {
                (o.asn as u16).to_be_bytes().to_vec()
            } else {
                vec![]
            };
            return self.fail(
                DownReason::BadPeerAs {
                    got: o.asn,
                    want: self.cfg.remote_asn,
                },
                Some(Notification {
                    code: code::OPEN,
                    subcode: subcode::BAD_PEER_AS,
                    data,
                }),
            );
        }
        if o.router_id == self.cfg.router_id && o.asn == self.cfg.local_asn {
            return self.fail(
                DownReason::BadBgpId,
                Some(Notification {
                    code: code::OPEN,
                    subcode: subcode::BAD_BGP_ID,
                    data: vec![],
                }),
            );
        }
        let ours = self.cfg.hold_time.as_secs();
        let hold = Duration::from_secs(ours.min(u64::from(o.hold_time)));
        let keepalive = if hold.is_zero() {
            Duration::ZERO
        } else {
            self.cfg.keepalive.min(hold / 3).max(Duration::from_secs(1))
        };
        // RFC 4760 §8: a peer that sends no multiprotocol capability speaks IPv4 unicast only.
        let peer_mp = o
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::MultiProtocol { .. }));
        let families = self
            .cfg
            .families
            .iter()
            .copied()
            .filter(|&(a, s)| {
                if peer_mp {
                    o.has_family(a, s)
                } else {
                    (a, s) == (1, 1)
                }
            })
            .collect();
        let peer_gr = o.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart {
                time,
                families,
                notification,
                ..
            } => Some(PeerRestart {
                time: *time,
                notification: *notification,
                families: families.clone(),
            }),
            _ => None,
        });
        self.negotiated = Some(Negotiated {
            hold_time: hold,
            keepalive,
            peer_asn: o.asn,
            peer_router_id: o.router_id,
            four_octet_as: o.four_octet_as().is_some(),
            families,
            route_refresh: o.capabilities.contains(&Capability::RouteRefresh),
            peer_graceful_restart: peer_gr,
        });
        self.state = State::OpenConfirm;
        let mut out = vec![Output::Send(Message::Keepalive)];
        if hold.is_zero() {
            out.push(Output::StopTimer(Timer::Hold));
        } else {
            out.push(Output::StartTimer(Timer::Hold, hold));
            out.push(Output::StartTimer(Timer::Keepalive, keepalive));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            local_asn: 65010,
            remote_asn: 65000,
            router_id: Ipv4Addr::new(192, 0, 2, 11),
            hold_time: Duration::from_secs(90),
            keepalive: Duration::from_secs(30),
            connect_retry: Duration::from_secs(5),
            passive: false,
            families: vec![(1, 1), (2, 1)],
            graceful_restart: None,
        }
    }

    fn peer_open(asn: u32, hold: u16) -> Event {
        Event::Message(Message::Open(Open {
            asn,
            hold_time: hold,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: vec![
                Capability::MultiProtocol { afi: 1, safi: 1 },
                Capability::FourOctetAs(asn),
                Capability::RouteRefresh,
            ],
        }))
    }

    #[test]
    fn open_exchange_reaches_established() {
        let mut f = Fsm::new(cfg());
        assert_eq!(f.process(Event::ManualStart)[0], Output::Connect);
        let out = f.process(Event::TcpConnected);
        assert!(matches!(out[1], Output::Send(Message::Open(_))));
        assert_eq!(f.state(), State::OpenSent);
        let out = f.process(peer_open(65000, 9));
        assert_eq!(out[0], Output::Send(Message::Keepalive));
        assert_eq!(f.state(), State::OpenConfirm);
        let out = f.process(Event::Message(Message::Keepalive));
        assert_eq!(f.state(), State::Established);
        let Some(Output::Established(n)) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(n.hold_time, Duration::from_secs(9), "the smaller hold time wins");
        assert_eq!(n.keepalive, Duration::from_secs(3));
        assert_eq!(n.families, vec![(1, 1)], "only families both sides offered");
        assert!(n.four_octet_as && n.route_refresh);
    }

    #[test]
    fn wrong_peer_as_is_refused_with_bad_peer_as() {
        let mut f = Fsm::new(cfg());
        f.process(Event::ManualStart);
        f.process(Event::TcpConnected);
        let out = f.process(peer_open(65001, 90));
        let Output::Send(Message::Notification(n)) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!((n.code, n.subcode), (2, 2));
        assert!(out.contains(&Output::Close));
        assert_eq!(f.state(), State::Connect);
        assert_eq!(
            f.last_error(),
            Some(&DownReason::BadPeerAs {
                got: 65001,
                want: 65000
            })
        );
    }

    #[test]
    fn hold_timer_expiry_sends_notification_and_backs_off() {
        let mut f = Fsm::new(cfg());
        f.process(Event::ManualStart);
        f.process(Event::TcpConnected);
        f.process(peer_open(65000, 90));
        f.process(Event::Message(Message::Keepalive));
        let out = f.process(Event::TimerExpired(Timer::Hold));
        let Output::Send(Message::Notification(n)) = &out[0] else {
            panic!()
        };
        assert_eq!(n.code, 4);
        assert!(out.iter().any(|o| matches!(o, Output::Down(_))));
        // Retries back off: 5s, then 10s, 20s, 40s, 40s.
        let mut delays = Vec::new();
        for _ in 0..5 {
            let out = f.process(Event::TcpFails);
            for o in out {
                if let Output::StartTimer(Timer::ConnectRetry, d) = o {
                    delays.push(d.as_secs());
                }
            }
        }
        assert_eq!(delays, [10, 20, 40, 40, 40]);
    }

    #[test]
    fn updates_and_keepalives_restart_the_hold_timer() {
        let mut f = Fsm::new(cfg());
        f.process(Event::ManualStart);
        f.process(Event::TcpConnected);
        f.process(peer_open(65000, 90));
        f.process(Event::Message(Message::Keepalive));
        let out = f.process(Event::Message(Message::Update(Box::default())));
        assert_eq!(out[0], Output::StartTimer(Timer::Hold, Duration::from_secs(90)));
        assert!(matches!(out[1], Output::Update(_)));
        let out = f.process(Event::TimerExpired(Timer::Keepalive));
        assert_eq!(
            out,
            vec![
                Output::Send(Message::Keepalive),
                Output::StartTimer(Timer::Keepalive, Duration::from_secs(30))
            ]
        );
    }

    #[test]
    fn manual_stop_sends_a_shutdown_communication() {
        let mut f = Fsm::new(cfg());
        f.process(Event::ManualStart);
        f.process(Event::TcpConnected);
        f.process(peer_open(65000, 90));
        f.process(Event::Message(Message::Keepalive));
        let out = f.process(Event::ManualStop("node drain".into()));
        let Output::Send(Message::Notification(n)) = &out[0] else {
            panic!()
        };
        assert_eq!(n.shutdown_message().as_deref(), Some("node drain"));
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn passive_sessions_wait_for_the_peer() {
        let mut c = cfg();
        c.passive = true;
        let mut f = Fsm::new(c);
        assert!(f.process(Event::ManualStart).is_empty());
        assert_eq!(f.state(), State::Active);
        assert!(matches!(
            f.process(Event::TcpConnected)[1],
            Output::Send(Message::Open(_))
        ));
    }

    #[test]
    fn bfd_down_drops_an_established_session() {
        let mut f = Fsm::new(cfg());
        f.process(Event::ManualStart);
        f.process(Event::TcpConnected);
        f.process(peer_open(65000, 90));
        f.process(Event::Message(Message::Keepalive));
        let out = f.process(Event::BfdDown);
        assert!(out.contains(&Output::Close));
        assert!(out.contains(&Output::Down(DownReason::BfdDown)));
    }

    #[test]
    fn unexpected_messages_are_fsm_errors() {
        let mut f = Fsm::new(cfg());
        f.process(Event::ManualStart);
        f.process(Event::TcpConnected);
        let out = f.process(Event::Message(Message::Keepalive));
        let Output::Send(Message::Notification(n)) = &out[0] else {
            panic!()
        };
        assert_eq!(n.code, 5);
    }
}
