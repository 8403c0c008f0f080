//! Bidirectional Forwarding Detection for BGP neighbours: RFC 5880 asynchronous mode over single-hop UDP
//! (RFC 5881), no authentication and no echo function.
//!
//! [`Session`] is the Sans-IO state machine (packets in, packets out, a clock passed in); [`run`] drives one
//! session per neighbour over tokio UDP sockets and reports when a session that was up goes down, so that the
//! BGP session can be dropped at once instead of at hold-time expiry.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// UDP port of single-hop BFD control packets (RFC 5881).
pub const PORT: u16 = 3784;

/// Session state (RFC 5880 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum State {
    /// Administratively down.
    AdminDown = 0,
    /// Down.
    Down = 1,
    /// Init (the peer is heard, the three-way handshake goes on).
    Init = 2,
    /// Up.
    Up = 3,
}

impl State {
    fn from_bits(v: u8) -> State {
        match v & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

/// Diagnostic codes used here.
mod diag {
    pub const NONE: u8 = 0;
    pub const DETECTION_EXPIRED: u8 = 1;
    pub const NEIGHBOR_DOWN: u8 = 3;
}

/// The name of a diagnostic code (RFC 5880 §4.1), as FRR prints it.
pub fn diag_name(d: u8) -> &'static str {
    match d {
        0 => "none",
        1 => "control detection time expired",
        2 => "echo function failed",
        3 => "neighbor signaled session down",
        4 => "forwarding plane reset",
        5 => "path down",
        6 => "concatenated path down",
        7 => "administratively down",
        8 => "reverse concatenated path down",
        _ => "unknown",
    }
}

/// A control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Diagnostic.
    pub diag: u8,
    /// Sender's state.
    pub state: State,
    /// Poll bit.
    pub poll: bool,
    /// Final bit.
    pub fin: bool,
    /// Control Plane Independent bit: the sender's BFD survives a restart of its control plane.
    pub cpi: bool,
    /// Detection multiplier.
    pub detect_mult: u8,
    /// Sender's discriminator.
    pub my_disc: u32,
    /// The discriminator the sender knows for us (0 if none).
    pub your_disc: u32,
    /// Desired minimum transmit interval, µs.
    pub desired_min_tx: u32,
    /// Required minimum receive interval, µs.
    pub required_min_rx: u32,
}

/// Why a received packet is discarded (RFC 5880 §6.8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    /// Shorter than 24 bytes, or shorter than its length field.
    #[error("short packet")]
    Short,
    /// Version other than 1.
    #[error("version is not 1")]
    Version,
    /// Zero detection multiplier, multipoint bit, or zero discriminator.
    #[error("invalid field")]
    Invalid,
    /// Authentication present (not configured here).
    #[error("authentication not configured")]
    Auth,
}

impl Packet {
    /// Encoded length (no authentication section).
    pub const LEN: usize = 24;

    /// Parses a control packet, applying the validity checks that do not need session state.
    pub fn parse(b: &[u8]) -> Result<Packet, Discard> {
        if b.len() < Self::LEN || usize::from(b[3]) < Self::LEN || usize::from(b[3]) > b.len() {
            return Err(Discard::Short);
        }
        if b[0] >> 5 != 1 {
            return Err(Discard::Version);
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let p = Packet {
            diag: b[0] & 0x1f,
            state: State::from_bits(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            fin: b[1] & 0x10 != 0,
            cpi: b[1] & 0x08 != 0,
            detect_mult: b[2],
            my_disc: u32_at(4),
            your_disc: u32_at(8),
            desired_min_tx: u32_at(12),
            required_min_rx: u32_at(16),
        };
        if b[1] & 0x04 != 0 {
            return Err(Discard::Auth);
        }
        if p.detect_mult == 0 || b[1] & 0x01 != 0 || p.my_disc == 0 {
            return Err(Discard::Invalid);
        }
        if p.your_disc == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(Discard::Invalid);
        }
        Ok(p)
    }

    /// Encodes the packet.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = 1 << 5 | (self.diag & 0x1f);
        b[1] = (self.state as u8) << 6
            | u8::from(self.poll) << 5
            | u8::from(self.fin) << 4
            | u8::from(self.cpi) << 3;
        b[2] = self.detect_mult;
        b[3] = Self::LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b
    }
}

/// Session parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Desired minimum transmit interval.
    pub min_tx: Duration,
    /// Required minimum receive interval.
    pub min_rx: Duration,
    /// Detection multiplier.
    pub multiplier: u8,
}

/// What a call into the session produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Out {
    /// Packets to send now.
    pub send: Vec<Packet>,
    /// The state changed to this.
    pub changed: Option<State>,
}

/// One BFD session (Sans-IO).
#[derive(Debug)]
pub struct Session {
    params: Params,
    state: State,
    diag: u8,
    local_disc: u32,
    remote_disc: u32,
    remote_state: State,
    remote_min_rx: Duration,
    remote_min_tx: Duration,
    remote_mult: u8,
    remote_cpi: bool,
    last_rx: Option<Instant>,
    next_tx: Instant,
    rng: u32,
    /// A Poll Sequence is under way (our advertised timers changed; packets carry P until an F comes back).
    polling: bool,
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    /// A session in Down state with local discriminator `disc` (non-zero).
    pub fn new(params: Params, disc: u32, now: Instant) -> Session {
        Session {
            params,
            state: State::Down,
            diag: diag::NONE,
            local_disc: disc.max(1),
            remote_disc: 0,
            remote_state: State::Down,
            remote_min_rx: Duration::from_micros(1),
            remote_min_tx: Duration::ZERO,
            remote_mult: 0,
            remote_cpi: false,
            last_rx: None,
            next_tx: now,
            rng: disc.max(1),
            polling: false,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The detection time: the remote multiplier times the slower of our receive and its transmit interval.
    pub fn detection_time(&self) -> Duration {
        self.params.min_rx.max(self.remote_min_tx) * u32::from(self.remote_mult.max(1))
    }

    /// The transmit interval we advertise (bfd.DesiredMinTxInterval): the configured one while up, at least
    /// 1 s otherwise (RFC 5880 §6.8.3). Advertising the fast value while still sending slowly would let an up
    /// peer expire its detection time between our packets.
    fn advertised_tx(&self) -> Duration {
        if self.state == State::Up {
            self.params.min_tx
        } else {
            self.params.min_tx.max(Duration::from_secs(1))
        }
    }

    /// Transmit interval: the slower of what we advertise and what the peer can receive.
    fn tx_interval(&self) -> Duration {
        self.advertised_tx().max(self.remote_min_rx)
    }

    fn packet(&self, fin: bool) -> Packet {
        Packet {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !fin,
            fin,
            // Our BFD runs in the control plane's process: it shares its fate.
            cpi: false,
            detect_mult: self.params.multiplier,
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx: us(self.advertised_tx()),
            required_min_rx: us(self.params.min_rx),
        }
    }

    /// Changes state, tells the peer at once and schedules the next packet at the new state's rate. Going up
    /// or down changes the advertised transmit interval, which starts a Poll Sequence (RFC 5880 §6.8.3).
    fn set(&mut self, s: State, diag: u8, now: Instant, out: &mut Out) {
        if s != self.state {
            let before = self.advertised_tx();
            self.state = s;
            self.diag = diag;
            out.changed = Some(s);
            if self.advertised_tx() != before && s != State::Down {
                self.polling = true;
            }
            if s == State::Down {
                self.polling = false;
            }
            out.send.push(self.packet(false));
            self.next_tx = now + self.tx_interval() * 3 / 4;
        }
    }

    /// A received control packet (RFC 5880 §6.8.6).
    pub fn receive(&mut self, p: &Packet, now: Instant) -> Out {
        let mut out = Out::default();
        if p.your_disc != 0 && p.your_disc != self.local_disc {
            return out;
        }
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx.max(1)));
        self.remote_min_tx = Duration::from_micros(u64::from(p.desired_min_tx));
        self.remote_mult = p.detect_mult;
        self.remote_cpi = p.cpi;
        self.last_rx = Some(now);
        if p.fin {
            self.polling = false;
        }
        if self.state == State::AdminDown {
            return out;
        }
        match (self.state, p.state) {
            (State::Down | State::Init | State::Up, State::AdminDown) if self.state != State::Down => {
                self.set(State::Down, diag::NEIGHBOR_DOWN, now, &mut out);
            }
            (State::Down, State::Down) => self.set(State::Init, diag::NONE, now, &mut out),
            (State::Down, State::Init) => self.set(State::Up, diag::NONE, now, &mut out),
            (State::Init, State::Init | State::Up) => self.set(State::Up, diag::NONE, now, &mut out),
            (State::Up, State::Down) => self.set(State::Down, diag::NEIGHBOR_DOWN, now, &mut out),
            _ => {}
        }
        if p.poll {
            out.send.push(self.packet(true));
        }
        // A faster interval allowed now (the peer lowered its Required Min RX, or we came up) takes effect at
        // once: a packet scheduled at the old, slower rate would arrive after the peer's detection time.
        let soonest = now + self.tx_interval() * 3 / 4;
        if self.next_tx > soonest {
            self.next_tx = soonest;
        }
        out
    }

    /// Timers: periodic transmission and detection-time expiry.
    pub fn poll(&mut self, now: Instant) -> Out {
        let mut out = Out::default();
        if matches!(self.state, State::Init | State::Up) {
            if let Some(last) = self.last_rx {
                if now.duration_since(last) > self.detection_time() {
                    self.remote_disc = 0;
                    self.set(State::Down, diag::DETECTION_EXPIRED, now, &mut out);
                }
            }
        }
        if now >= self.next_tx {
            out.send.push(self.packet(false));
            // Jitter: 75-100 % of the interval (RFC 5880 §6.8.7).
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 17;
            self.rng ^= self.rng << 5;
            let i = self.tx_interval();
            let jitter = 75 + self.rng % 26;
            self.next_tx = now + i * jitter / 100;
        }
        out
    }

    /// What the session knows now, for `anylb bfd`.
    pub fn info(&self) -> Info {
        Info {
            state: self.state,
            remote_state: self.remote_state,
            local_disc: self.local_disc,
            remote_disc: self.remote_disc,
            diag: diag_name(self.diag),
            tx_interval_us: us(self.tx_interval()),
            rx_interval_us: us(self.params.min_rx.max(self.remote_min_tx)),
            multiplier: self.params.multiplier,
            remote_multiplier: self.remote_mult,
            detection_time_us: us(self.detection_time()),
            remote_control_plane_independent: self.remote_cpi,
        }
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn next_event(&self) -> Instant {
        match (self.state, self.last_rx) {
            (State::Init | State::Up, Some(last)) => self.next_tx.min(last + self.detection_time()),
            _ => self.next_tx,
        }
    }
}

/// A session's state and timers as it knows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Info {
    /// Local state.
    pub state: State,
    /// The peer's state in its last packet.
    pub remote_state: State,
    /// Our discriminator.
    pub local_disc: u32,
    /// The peer's discriminator (0 while unknown).
    pub remote_disc: u32,
    /// Our diagnostic: why the session last left Up.
    pub diag: &'static str,
    /// Interval we transmit at, µs.
    pub tx_interval_us: u32,
    /// Interval we expect packets at, µs.
    pub rx_interval_us: u32,
    /// Our detection multiplier.
    pub multiplier: u8,
    /// The peer's detection multiplier.
    pub remote_multiplier: u8,
    /// Time without a packet after which the session goes down, µs.
    pub detection_time_us: u32,
    /// The peer's Control Plane Independent bit (RFC 5880 §4.1).
    pub remote_control_plane_independent: bool,
}

/// Why and when a session last went down from up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastDown {
    /// The diagnostic.
    pub reason: String,
    /// When.
    #[serde(serialize_with = "anylb_conf::json::time")]
    pub at: SystemTime,
}

/// What `anylb bfd` shows of one session (as FRR's `show bfd peers`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// The neighbour.
    pub peer: IpAddr,
    /// Our address on the link.
    pub local: IpAddr,
    /// State, discriminators and timers.
    #[serde(flatten)]
    pub info: Info,
    /// When the state last changed.
    #[serde(serialize_with = "anylb_conf::json::opt_time")]
    pub since: Option<SystemTime>,
    /// Times the session came up.
    pub up_count: u64,
    /// Times it went down from up.
    pub down_count: u64,
    /// Why it last went down from up, and when.
    pub last_down: Option<LastDown>,
}

impl Status {
    /// A session not started yet.
    pub fn new(peer: &Peer, s: &Session) -> Status {
        Status {
            peer: peer.address,
            local: peer.local,
            info: s.info(),
            since: None,
            up_count: 0,
            down_count: 0,
            last_down: None,
        }
    }

    /// Records the session after an event; `changed` is its new state if it changed.
    pub fn record(&mut self, s: &Session, changed: Option<State>, now: SystemTime) {
        let was_up = self.info.state == State::Up;
        self.info = s.info();
        if let Some(state) = changed {
            self.since = Some(now);
            match state {
                State::Up => self.up_count += 1,
                _ if was_up => {
                    self.down_count += 1;
                    self.last_down = Some(LastDown {
                        reason: self.info.diag.to_owned(),
                        at: now,
                    });
                }
                _ => {}
            }
        }
    }
}

/// A neighbour to run BFD with.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The neighbour's address.
    pub address: IpAddr,
    /// Our address on the link (the source of our packets).
    pub local: IpAddr,
    /// Timers.
    pub params: Params,
}

/// A session that was up went down (the path to `address` failed), or came up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The neighbour.
    pub address: IpAddr,
    /// Its new state.
    pub state: State,
}

/// Runs one session: sends from `peer.local` (source port in 49152-65535, TTL 255) and receives on port 3784
/// of `peer.local`; reports state changes on `changes` until the receiver is gone.
pub async fn run(
    peer: Peer,
    disc: u32,
    changes: mpsc::UnboundedSender<Change>,
    status: Arc<Mutex<Status>>,
) -> std::io::Result<()> {
    let rx = UdpSocket::bind(SocketAddr::new(peer.local, PORT)).await?;
    os_sys::set_recv_ttl(&rx)?;
    let mut tx = None;
    for port in 49152 + (disc % 16000) as u16..=65535 {
        if let Ok(s) = UdpSocket::bind(SocketAddr::new(peer.local, port)).await {
            tx = Some(s);
            break;
        }
    }
    let tx = tx.ok_or_else(|| std::io::Error::other("no free source port for BFD"))?;
    // RFC 5881 §5: TTL / hop limit 255, so a receiver can tell the packet was not routed.
    match peer.address {
        IpAddr::V4(_) => tx.set_ttl(255)?,
        IpAddr::V6(_) => socket2::SockRef::from(&tx).set_unicast_hops_v6(255)?,
    }
    let dst = SocketAddr::new(peer.address, PORT);
    let mut s = Session::new(peer.params, disc, Instant::now());
    if let Ok(mut st) = status.lock() {
        st.info = s.info();
    }
    let mut buf = [0u8; 512];
    loop {
        let now = Instant::now();
        let out = s.poll(now);
        record(&status, &s, &out);
        if emit(&tx, dst, &peer, out, &changes).await.is_err() {
            return Ok(());
        }
        let wait = s.next_event().saturating_duration_since(Instant::now());
        tokio::select! {
            r = rx.async_io(Interest::READABLE, || os_sys::recv_with_ttl(&rx, &mut buf)) => {
                let Ok(got) = r else { continue };
                if got.from.ip() != peer.address {
                    continue;
                }
                // RFC 5881 §5: a packet that did not arrive with TTL / hop limit 255 was routed here (or
                // forged from afar) and is discarded.
                if got.ttl != Some(255) {
                    tracing::debug!(neighbor = %peer.address, ttl = ?got.ttl, "BFD packet discarded: TTL is not 255");
                    continue;
                }
                match Packet::parse(&buf[..got.len]) {
                    Ok(p) => {
                        let out = s.receive(&p, Instant::now());
                        record(&status, &s, &out);
                        if emit(&tx, dst, &peer, out, &changes).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => tracing::debug!(neighbor = %peer.address, reason = %e, "BFD packet discarded"),
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = changes.closed() => return Ok(()),
        }
    }
}

/// Updates the shared status after an event of session `s`.
fn record(status: &Mutex<Status>, s: &Session, out: &Out) {
    if let Ok(mut st) = status.lock() {
        st.record(s, out.changed, SystemTime::now());
    }
}

/// Sends `out`'s packets and reports its state change; an error when nobody listens any more.
async fn emit(
    tx: &UdpSocket,
    dst: SocketAddr,
    peer: &Peer,
    out: Out,
    changes: &mpsc::UnboundedSender<Change>,
) -> Result<(), ()> {
    for p in out.send {
        if let Err(e) = tx.send_to(&p.encode(), dst).await {
            tracing::debug!(neighbor = %peer.address, error = %e, "BFD send failed");
        }
    }
    if let Some(state) = out.changed {
        tracing::info!(neighbor = %peer.address, state = ?state, "BFD session changed");
        changes
            .send(Change {
                address: peer.address,
                state,
            })
            .map_err(|_| ())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            min_tx: Duration::from_millis(300),
            min_rx: Duration::from_millis(300),
            multiplier: 3,
        }
    }

    #[test]
    fn packet_round_trip_and_checks() {
        let p = Packet {
            diag: 1,
            state: State::Up,
            poll: true,
            fin: false,
            cpi: false,
            detect_mult: 3,
            my_disc: 7,
            your_disc: 9,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
        };
        assert_eq!(Packet::parse(&p.encode()), Ok(p));
        let mut b = p.encode();
        b[0] = 2 << 5;
        assert_eq!(Packet::parse(&b), Err(Discard::Version));
        let mut b = p.encode();
        b[2] = 0;
        assert_eq!(Packet::parse(&b), Err(Discard::Invalid));
        assert_eq!(Packet::parse(&p.encode()[..20]), Err(Discard::Short));
        let mut b = p.encode();
        b[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(
            Packet::parse(&b),
            Err(Discard::Invalid),
            "Up without your discriminator"
        );
    }

    /// Two sessions at `t0`, and a's first packet (Down).
    fn pair(t0: Instant) -> (Session, Session, Packet) {
        let mut a = Session::new(params(), 1, t0);
        let b = Session::new(params(), 2, t0);
        let pa = a.poll(t0).send.pop().unwrap();
        (a, b, pa)
    }

    #[test]
    fn three_way_handshake_then_detection_expiry() {
        let t0 = Instant::now();
        // a sends Down; b goes Init; a goes Up on Init; b goes Up on Up.
        let (mut a, mut b, pa) = pair(t0);
        let ob = b.receive(&pa, t0);
        assert_eq!(ob.changed, Some(State::Init));
        let oa = a.receive(&ob.send[0], t0);
        assert_eq!(oa.changed, Some(State::Up));
        let ob = b.receive(&oa.send[0], t0);
        assert_eq!(ob.changed, Some(State::Up));
        // b's Up packet brings its fast timers (a Poll, which a answers with a Final).
        let oa = a.receive(&ob.send[0], t0);
        assert!(oa.send.iter().any(|p| p.fin));
        // Silence longer than 3 × 300 ms takes a down.
        let out = a.poll(t0 + Duration::from_millis(850));
        assert_eq!(out.changed, None);
        let out = a.poll(t0 + Duration::from_millis(950));
        assert_eq!(out.changed, Some(State::Down));
        assert_eq!(out.send[0].diag, diag::DETECTION_EXPIRED);
    }

    #[test]
    fn slow_until_up_then_the_fast_timers_by_a_poll_sequence() {
        let t0 = Instant::now();
        let (mut a, mut b, pa) = pair(t0);
        // Not up: at least 1 s advertised (RFC 5880 §6.8.3), no poll.
        assert_eq!((pa.desired_min_tx, pa.poll), (1_000_000, false));
        let ob = b.receive(&pa, t0);
        assert_eq!(ob.send[0].desired_min_tx, 1_000_000);
        let oa = a.receive(&ob.send[0], t0);
        // Up: the configured 300 ms advertised, in a Poll sequence, and the next packet comes at that rate.
        let up = &oa.send[0];
        assert_eq!((up.state, up.desired_min_tx, up.poll), (State::Up, 300_000, true));
        assert!(a.next_event() <= t0 + Duration::from_millis(300));
        // A peer that lowers its Required Min RX gets our packets at the faster rate at once.
        let mut slow = params();
        slow.min_tx = Duration::from_millis(100);
        let mut c = Session::new(slow, 3, t0);
        let mut init = ob.send[0];
        init.your_disc = 3;
        init.required_min_rx = 1_000_000;
        assert_eq!(c.receive(&init, t0).changed, Some(State::Up));
        assert!(
            c.next_event() >= t0 + Duration::from_millis(700),
            "the peer still wants 1 s"
        );
        let mut fast = init;
        fast.state = State::Up;
        fast.required_min_rx = 100_000;
        c.receive(&fast, t0 + Duration::from_millis(10));
        assert!(
            c.next_event() <= t0 + Duration::from_millis(85),
            "{:?}",
            c.next_event() - t0
        );
        let out = a.poll(t0 + Duration::from_millis(300));
        assert!(
            out.send.first().is_some_and(|p| p.poll),
            "polling until a Final comes"
        );
        // b answers the poll with a Final: the sequence ends.
        let ob = b.receive(up, t0);
        let fin = ob.send.iter().find(|p| p.fin).expect("a Final");
        a.receive(fin, t0 + Duration::from_millis(310));
        let out = a.poll(t0 + Duration::from_millis(600));
        assert!(
            out.send.first().is_some_and(|p| !p.poll),
            "no poll after the Final"
        );
    }

    #[test]
    fn neighbor_signalling_down_takes_the_session_down() {
        let t0 = Instant::now();
        let mut a = Session::new(params(), 1, t0);
        let init = Packet {
            diag: 0,
            state: State::Init,
            poll: false,
            fin: false,
            cpi: false,
            detect_mult: 3,
            my_disc: 5,
            your_disc: 1,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
        };
        assert_eq!(a.receive(&init, t0).changed, Some(State::Up));
        let down = Packet {
            state: State::Down,
            your_disc: 0,
            ..init
        };
        assert_eq!(a.receive(&down, t0).changed, Some(State::Down));
        // A packet for another session is ignored.
        let other = Packet {
            your_disc: 99,
            ..init
        };
        assert_eq!(a.receive(&other, t0), Out::default());
    }

    #[test]
    fn poll_bit_is_answered_with_final() {
        let t0 = Instant::now();
        let mut a = Session::new(params(), 1, t0);
        let p = Packet {
            diag: 0,
            state: State::Down,
            poll: true,
            fin: false,
            cpi: false,
            detect_mult: 3,
            my_disc: 5,
            your_disc: 0,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
        };
        let out = a.receive(&p, t0);
        assert!(out.send.iter().any(|x| x.fin));
    }

    /// The real socket path on loopback: a peer at 127.0.0.3 answering the session at 127.0.0.2. Its packets
    /// are ignored while they come with TTL 64 and bring the session up once they come with TTL 255.
    #[tokio::test]
    async fn packets_that_did_not_arrive_with_ttl_255_are_discarded() {
        let (local, remote) = ("127.0.0.2".parse().expect("ip"), "127.0.0.3".parse().expect("ip"));
        let far = UdpSocket::bind(SocketAddr::new(remote, PORT))
            .await
            .expect("bind peer");
        let (changes, mut changed) = mpsc::unbounded_channel();
        let fast = Params {
            min_tx: Duration::from_millis(50),
            min_rx: Duration::from_millis(50),
            multiplier: 3,
        };
        let peer = Peer {
            address: remote,
            local,
            params: fast,
        };
        let status = Arc::new(Mutex::new(Status::new(
            &peer,
            &Session::new(fast, 77, Instant::now()),
        )));
        let session = tokio::spawn(run(peer, 77, changes, status.clone()));
        let mut b = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), far.recv_from(&mut b))
            .await
            .expect("the session transmits")
            .expect("recv");
        let theirs = Packet::parse(&b[..n]).expect("a BFD packet").my_disc;
        let reply = Packet {
            diag: 0,
            state: State::Init,
            poll: false,
            fin: false,
            cpi: false,
            detect_mult: 3,
            my_disc: 5,
            your_disc: theirs,
            desired_min_tx: 50_000,
            required_min_rx: 50_000,
        }
        .encode();
        let to = SocketAddr::new(local, PORT);
        let sender = UdpSocket::bind(SocketAddr::new(remote, 49152))
            .await
            .expect("bind sender");
        for (ttl, comes_up) in [(64, false), (254, false), (255, true)] {
            sender.set_ttl(ttl).expect("ttl");
            let mut up = false;
            for _ in 0..20 {
                sender.send_to(&reply, to).await.expect("send");
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Ok(c) = changed.try_recv() {
                    assert_eq!((c.address, c.state), (remote, State::Up));
                    up = true;
                    break;
                }
            }
            assert_eq!(up, comes_up, "TTL {ttl}");
        }
        // What `anylb bfd` shows: up once, the peer's discriminator, the agreed timers.
        let st = status.lock().expect("status").clone();
        assert_eq!((st.info.state, st.up_count, st.down_count), (State::Up, 1, 0));
        assert_eq!((st.info.local_disc, st.info.remote_disc), (77, 5));
        assert_eq!(st.info.detection_time_us, 150_000);
        assert!(!st.info.remote_control_plane_independent);
        session.abort();
    }

    #[test]
    fn the_status_counts_ups_and_downs_and_keeps_the_last_down_reason() {
        let t0 = Instant::now();
        let (mut a, mut b, pa) = pair(t0);
        let init = b.receive(&pa, t0).send[0];
        let peer = Peer {
            address: "192.0.2.1".parse().expect("ip"),
            local: "192.0.2.11".parse().expect("ip"),
            params: params(),
        };
        let mut st = Status::new(&peer, &a);
        let out = a.receive(&init, t0);
        st.record(&a, out.changed, SystemTime::now());
        assert_eq!((st.info.state, st.up_count), (State::Up, 1));
        let later = t0 + Duration::from_secs(10);
        let out = a.poll(later);
        st.record(&a, out.changed, SystemTime::now());
        assert_eq!((st.info.state, st.down_count), (State::Down, 1));
        assert_eq!(
            st.last_down.map(|d| d.reason).as_deref(),
            Some("control detection time expired")
        );
    }

    #[test]
    fn the_control_plane_independent_bit_round_trips() {
        let p = Packet {
            diag: 0,
            state: State::Up,
            poll: false,
            fin: false,
            cpi: true,
            detect_mult: 3,
            my_disc: 1,
            your_disc: 2,
            desired_min_tx: 100_000,
            required_min_rx: 100_000,
        };
        let b = p.encode();
        assert_eq!(b[1] & 0x08, 0x08);
        assert_eq!(Packet::parse(&b), Ok(p));
    }
}
