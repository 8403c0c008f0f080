//! TCP checks by half-open probes, as Katran's health checker does: one SYN on a raw socket, and a SYN-ACK
//! that acknowledges it means the port is open (a RST means it is closed). The kernel, which has no socket
//! for the probe, answers the SYN-ACK with a RST itself, so the server's half-open entry goes at once. A
//! check costs one packet out and one in, instead of a socket, a handshake, a close and their wake-ups.
//!
//! One raw socket per family serves every check of the node: a task reads it and hands each answer to the
//! probe waiting for it, matched by (server address, server port, probe port). Probes are bounded in time
//! by a sweeper, not a timer each: every `SWEEP` while probes wait, those past their deadline are dropped,
//! and each of them ends as timed out (up to `SWEEP` late). At 10,000 checks a second a timer per probe,
//! set and cleared at every check, was a visible share of the checker's CPU. Probe ports come from
//! 61000-65535, above Linux's default ephemeral range, so no socket of the host is on them. Raw sockets need
//! CAP_NET_RAW; without it (or for checks that send or expect bytes) the connect checker is used.
//!
//! ```text
//! probe:  SYN     probe port → server port, seq = ISN, MSS 1460
//! answer: SYN|ACK server port → probe port, ack = ISN + 1   → up
//!         RST     server port → probe port                   → refused
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustc_hash::FxHashMap;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::checker::{Check, CheckError};

/// The lowest probe port.
const FIRST_PORT: u16 = 61_000;

/// How often probes past their deadline are looked for (while any wait).
const SWEEP: Duration = Duration::from_millis(10);

/// What came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A SYN-ACK acknowledging the probe.
    Open,
    /// A RST.
    Refused,
}

type Key = (IpAddr, u16, u16);

/// A probe waiting for its answer: its ISN, where the answer goes, and until when it waits.
#[derive(Debug)]
struct Pending {
    isn: u32,
    reply: Reply,
    deadline: Instant,
}

/// The outcomes of a batch of probes ([`Prober::start_all`]): each probe's token, and its answer (`None`: it
/// timed out).
pub type Outcomes = mpsc::UnboundedSender<(u64, Option<Answer>)>;

/// Where a probe's outcome goes. Dropped unanswered (past its deadline, or with its prober), either kind ends
/// its probe as timed out.
#[derive(Debug)]
enum Reply {
    /// A probe awaited in place ([`Prober::probe`]): the dropped sender wakes it.
    Once(oneshot::Sender<Answer>),
    /// A probe of a batch ([`Prober::start_all`]).
    Batch(Batched),
}

/// A batch probe's way back: its token and answer go to the batch's channel once, a timeout (`None`) if it is
/// dropped unanswered.
#[derive(Debug)]
struct Batched(Option<(Outcomes, u64)>);

impl Batched {
    // A send fails only when the batch's scheduler has stopped: nothing to tell.
    fn send(&mut self, answer: Option<Answer>) {
        if let Some((tx, token)) = self.0.take() {
            let _ = tx.send((token, answer));
        }
    }
}

impl Drop for Batched {
    fn drop(&mut self) {
        self.send(None);
    }
}

impl Reply {
    /// Makes the reply silent: dropped, it reports nothing (its probe's error is reported instead).
    fn disarm(&mut self) {
        if let Reply::Batch(b) = self {
            b.0 = None;
        }
    }

    fn answer(self, a: Answer) {
        match self {
            Reply::Once(tx) => {
                // Fails only when the probe's future is gone.
                let _ = tx.send(a);
            }
            Reply::Batch(mut b) => b.send(Some(a)),
        }
    }
}

/// A registered probe's SYN, to be sent (or to wait for room when the socket's send buffer was full).
struct Outgoing {
    seg: [u8; 24],
    to: SocketAddr,
    /// The probe's deadline.
    deadline: Instant,
}

impl Outgoing {
    /// Sends the SYN once the socket has room; `None` when none came before the probe's deadline.
    async fn send(self, sock: &UdpSocket) -> Option<std::io::Result<usize>> {
        tokio::time::timeout_at(self.deadline, sock.send_to(&self.seg, self.to))
            .await
            .ok()
    }
}

/// What the result of a probe is, from its answer (`None`: none came within `timeout`).
pub fn result_of(answer: Option<Answer>, timeout: Duration) -> Result<(), CheckError> {
    match answer {
        Some(Answer::Open) => Ok(()),
        Some(Answer::Refused) => Err(CheckError::Connect(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))),
        None => Err(CheckError::Timeout(timeout)),
    }
}

/// Probes waiting for their answer. Fx hashing (a lookup per answer, an insert and a removal per probe): an
/// answer's key is partly the sender's, but only probes insert, so a flood of forged answers cannot grow it.
type Waiting = Arc<Mutex<FxHashMap<Key, Pending>>>;

/// One family's socket, the probes waiting on it, and the sweeper's wake-up (a probe that finds no other
/// waiting).
#[derive(Debug)]
struct Family {
    sock: Arc<UdpSocket>,
    waiting: Waiting,
    sweep: Arc<Notify>,
    /// The reading task and the sweeper.
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Family {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The node's prober (its sockets have no families when raw sockets cannot be had).
#[derive(Debug)]
pub struct Prober {
    v4: Option<Family>,
    v6: Option<Family>,
    next: AtomicU32,
    locals: Mutex<FxHashMap<IpAddr, IpAddr>>,
}

/// A TCP SYN from `src:sport` to `dst:dport` with sequence `isn` and an MSS option, its checksum filled in.
pub fn syn_segment(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, isn: u32) -> [u8; 24] {
    let mut s = [0u8; 24];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[4..8].copy_from_slice(&isn.to_be_bytes());
    s[12] = 6 << 4;
    s[13] = 0x02;
    s[14..16].copy_from_slice(&65_535u16.to_be_bytes());
    s[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            add(&a.octets());
            add(&b.octets());
        }
        _ => {
            add(&v6(src));
            add(&v6(dst));
        }
    }
    add(&[0, 6, 0, 24]);
    add(&s);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    s[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    s
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// Reads an answer: the TCP segment `seg` from `from` → (key, acknowledgement, what it says), for SYN-ACKs and
/// RSTs to a probe port.
pub fn read_answer(from: IpAddr, seg: &[u8]) -> Option<(Key, u32, Answer)> {
    if seg.len() < 20 {
        return None;
    }
    let (sport, dport) = (
        u16::from_be_bytes([seg[0], seg[1]]),
        u16::from_be_bytes([seg[2], seg[3]]),
    );
    if dport < FIRST_PORT {
        return None;
    }
    let ack = u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]);
    let answer = match seg[13] & 0x17 {
        0x12 => Answer::Open,
        f if f & 0x04 != 0 => Answer::Refused,
        _ => return None,
    };
    Some(((from, sport, dport), ack, answer))
}

impl Prober {
    /// The node's prober, opened on first use inside a tokio runtime, and opened again when the runtime its
    /// reading tasks ran on has gone (a process that runs one runtime after another, as tests do).
    pub fn get() -> Arc<Prober> {
        static P: Mutex<Option<Arc<Prober>>> = Mutex::new(None);
        let mut p = P.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*p {
            Some(prober) if prober.alive() => prober.clone(),
            _ => {
                let prober = Arc::new(Prober::open());
                *p = Some(prober.clone());
                prober
            }
        }
    }

    /// A prober with its sockets and their tasks on the current runtime (none outside one, or without
    /// CAP_NET_RAW).
    fn open() -> Prober {
        Prober {
            v4: Family::open(false),
            v6: Family::open(true),
            next: AtomicU32::new(std::process::id().wrapping_mul(2_654_435_761)),
            locals: Mutex::new(FxHashMap::default()),
        }
    }

    /// Whether its reading tasks still run (a prober without raw sockets stays as it is).
    fn alive(&self) -> bool {
        [&self.v4, &self.v6]
            .into_iter()
            .flatten()
            .all(|f| !f.tasks.iter().any(|t| t.is_finished()))
    }

    /// Whether probes of `target`'s family can be sent.
    pub fn usable(&self, target: &SocketAddr) -> bool {
        if target.is_ipv4() {
            self.v4.is_some()
        } else {
            self.v6.is_some()
        }
    }

    /// The source address towards `dst`: the check's, or the one the kernel's route picks (cached).
    fn local(&self, dst: IpAddr, src: Option<IpAddr>) -> Result<IpAddr, CheckError> {
        if let Some(s) = src {
            return Ok(s);
        }
        if let Some(a) = self.locals.lock().ok().and_then(|m| m.get(&dst).copied()) {
            return Ok(a);
        }
        let unspecified: IpAddr = if dst.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let u = std::net::UdpSocket::bind(SocketAddr::new(unspecified, 0)).map_err(CheckError::Socket)?;
        u.connect(SocketAddr::new(dst, 9)).map_err(CheckError::Connect)?;
        let a = u.local_addr().map_err(CheckError::Socket)?.ip();
        if let Ok(mut m) = self.locals.lock() {
            m.insert(dst, a);
        }
        Ok(a)
    }

    /// One half-open probe of `c.target`, bounded by `c.timeout` (by the sweeper, up to `SWEEP` late).
    pub async fn probe(&self, c: &Check) -> Result<(), CheckError> {
        let fam = self.family(c)?;
        let (tx, rx) = oneshot::channel();
        let (key, blocked) = self.launch(fam, c, Reply::Once(tx))?;
        let mut unregister = Unregister(&fam.waiting, Some(key));
        if let Some(b) = blocked {
            // Wait for room, within the check's time.
            match b.send(&fam.sock).await {
                Some(r) => r.map(drop).map_err(CheckError::Send)?,
                None => return Err(CheckError::Timeout(c.timeout)),
            }
        }
        let answer = rx.await.ok();
        // Answered, or dropped by the sweeper or with the prober: either way the entry is gone.
        unregister.1 = None;
        result_of(answer, c.timeout)
    }

    /// Sends a probe of each check of `probes`, whose outcome goes to `outcomes` with its token (a scheduler's
    /// batch, none of them a task of its own). Returns the probes that could not be sent, with why; no outcome
    /// comes for those. A SYN that finds the socket's buffer full waits for room in a task of its own; if none
    /// comes in time, the sweeper ends the probe.
    pub fn start_all<'a>(
        &self,
        probes: impl IntoIterator<Item = (&'a Check, u64)>,
        outcomes: &Outcomes,
    ) -> Vec<(u64, CheckError)> {
        let mut failed = Vec::new();
        for (c, token) in probes {
            let sent = self.family(c).and_then(|fam| {
                let local = self.local(c.target.ip(), c.source)?;
                // The reply is made only once nothing before the probe's registration can fail: a reply dropped
                // on the way would report a timeout besides the error.
                let reply = Reply::Batch(Batched(Some((outcomes.clone(), token))));
                let (key, syn) = self.register(fam, c, local, reply);
                Ok((fam, fam.try_send(key, syn)?))
            });
            match sent {
                Ok((fam, Some(b))) => {
                    let sock = fam.sock.clone();
                    tokio::spawn(async move {
                        let _ = b.send(&sock).await;
                    });
                }
                Ok((_, None)) => {}
                Err(e) => failed.push((token, e)),
            }
        }
        failed
    }

    /// The family of `c.target`, if its raw socket could be opened.
    fn family(&self, c: &Check) -> Result<&Family, CheckError> {
        match c.target {
            SocketAddr::V4(_) => self.v4.as_ref(),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
        .ok_or_else(|| CheckError::Socket(std::io::Error::other("no raw socket for SYN probes")))
    }

    /// Registers a probe of `c.target` from `local` (its outcome to `reply`, its deadline `c.timeout` from
    /// now) and builds its SYN.
    fn register(&self, fam: &Family, c: &Check, local: IpAddr, reply: Reply) -> (Key, Outgoing) {
        let n = self.next.fetch_add(0x9e37_79b9, Ordering::Relaxed);
        let port = FIRST_PORT + (n % u32::from(65_535 - FIRST_PORT)) as u16;
        let isn = n.rotate_left(13);
        let key = (c.target.ip(), c.target.port(), port);
        let deadline = Instant::now() + c.timeout;
        if let Ok(mut w) = fam.waiting.lock() {
            if w.is_empty() {
                fam.sweep.notify_one();
            }
            w.insert(key, Pending { isn, reply, deadline });
        }
        let seg = syn_segment(local, port, c.target.ip(), c.target.port(), isn);
        let to = SocketAddr::new(c.target.ip(), 0);
        (key, Outgoing { seg, to, deadline })
    }

    /// Registers a probe of `c.target` (its outcome to `reply`) and sends its SYN; returns its key, and the SYN
    /// when the socket had no room for it.
    fn launch(&self, fam: &Family, c: &Check, reply: Reply) -> Result<(Key, Option<Outgoing>), CheckError> {
        let local = self.local(c.target.ip(), c.source)?;
        let (key, syn) = self.register(fam, c, local, reply);
        Ok((key, fam.try_send(key, syn)?))
    }
}

/// Removes a probe from the waiting ones when its future is dropped before the answer came; `None` once it
/// came or the probe timed out, since the reading task or the sweeper removed the entry then.
struct Unregister<'a>(&'a Waiting, Option<Key>);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut w)) = (self.1, self.0.lock()) {
            w.remove(&key);
        }
    }
}

impl Family {
    /// The raw TCP socket of a family and its reading task; none without CAP_NET_RAW or a runtime.
    fn open(v6: bool) -> Option<Family> {
        // Outside a runtime there is no reactor to register the socket with (tokio would panic).
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let sock = Socket::new(domain, Type::RAW, Some(Protocol::TCP)).ok()?;
        sock.set_nonblocking(true).ok()?;
        // Only answers to probes reach the socket, not every TCP segment of the host. Without the filter
        // the socket still works, at more cost.
        let _ = sock.attach_filter(&answers_only(v6));
        // A datagram socket's sendto and recvfrom are what a raw socket needs, in safe code.
        let sock = Arc::new(UdpSocket::from_std(std::net::UdpSocket::from(sock)).ok()?);
        let waiting: Waiting = Arc::new(Mutex::new(FxHashMap::default()));
        let sweep = Arc::new(Notify::new());
        let tasks = [
            handle.spawn(read_loop(sock.clone(), waiting.clone(), v6)),
            handle.spawn(sweep_loop(waiting.clone(), sweep.clone())),
        ];
        Some(Family {
            sock,
            waiting,
            sweep,
            tasks,
        })
    }

    /// Sends a registered probe's SYN; returns it when the socket had no room for it. A SYN the kernel refuses
    /// ends its probe with the error, and no outcome.
    fn try_send(&self, key: Key, syn: Outgoing) -> Result<Option<Outgoing>, CheckError> {
        match self.sock.try_send_to(&syn.seg, syn.to) {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Some(syn)),
            Err(e) => {
                self.forget(key);
                Err(CheckError::Send(e))
            }
        }
    }

    /// Removes a probe that was not sent, without reporting an outcome for it (its caller reports the error).
    fn forget(&self, key: Key) {
        if let Some(mut p) = self.waiting.lock().ok().and_then(|mut w| w.remove(&key)) {
            p.reply.disarm();
        }
    }
}

/// Drops the probes past their deadline every `SWEEP` while any wait (each then ends as timed out), and
/// sleeps until a probe arrives when none does.
async fn sweep_loop(waiting: Waiting, wake: Arc<Notify>) {
    loop {
        let idle = waiting.lock().map(|w| w.is_empty()).unwrap_or(true);
        if idle {
            wake.notified().await;
        }
        tokio::time::sleep(SWEEP).await;
        if let Ok(mut w) = waiting.lock() {
            expire(&mut w, Instant::now());
        }
    }
}

/// Removes the probes whose deadline is not after `now`, each ending as timed out.
fn expire(w: &mut FxHashMap<Key, Pending>, now: Instant) {
    w.retain(|_, p| p.deadline > now);
}

/// A classic BPF program passing SYN-ACKs and RSTs to a probe port (61000 and up) and nothing else. An IPv4
/// raw socket's packets start at the IP header (the TCP header is found past its length), an IPv6 one's at
/// the TCP header.
fn answers_only(v6: bool) -> Vec<SockFilter> {
    // Opcodes of <linux/filter.h>.
    const LDX_MSH: u16 = 0xb1; // X = 4 * (pkt[k] & 0xf)
    const LDH_IND: u16 = 0x48; // A = u16 at pkt[X + k]
    const LDB_IND: u16 = 0x50; // A = u8 at pkt[X + k]
    const LDX_IMM: u16 = 0x01; // X = k
    const JGE: u16 = 0x35;
    const JSET: u16 = 0x45;
    const JEQ: u16 = 0x15;
    const AND: u16 = 0x54;
    const RET: u16 = 0x06;
    vec![
        // 0: X = the TCP header's offset.
        if v6 {
            SockFilter::new(LDX_IMM, 0, 0, 0)
        } else {
            SockFilter::new(LDX_MSH, 0, 0, 0)
        },
        // 1, 2: the destination port must be a probe port, else reject (8).
        SockFilter::new(LDH_IND, 0, 0, 2),
        SockFilter::new(JGE, 0, 5, u32::from(FIRST_PORT)),
        // 3, 4: RST → accept (7).
        SockFilter::new(LDB_IND, 0, 0, 13),
        SockFilter::new(JSET, 2, 0, 0x04),
        // 5, 6: SYN and ACK → accept, else reject.
        SockFilter::new(AND, 0, 0, 0x12),
        SockFilter::new(JEQ, 0, 1, 0x12),
        SockFilter::new(RET, 0, 0, 0xffff),
        SockFilter::new(RET, 0, 0, 0),
    ]
}

/// Reads every TCP segment the host receives and hands SYN-ACKs and RSTs to the probes waiting for them.
async fn read_loop(sock: Arc<UdpSocket>, waiting: Waiting, v6: bool) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // IPv4 raw sockets deliver the IP header too; IPv6 ones the segment alone.
        let at = if v6 { 0 } else { usize::from(buf[0] & 0x0f) * 4 };
        let Some((key, ack, answer)) = buf.get(at..n).and_then(|seg| read_answer(from.ip(), seg)) else {
            continue;
        };
        if let Ok(mut w) = waiting.lock() {
            let ours = w
                .get(&key)
                .is_some_and(|p| answer == Answer::Refused || ack == p.isn.wrapping_add(1));
            if ours {
                if let Some(p) = w.remove(&key) {
                    p.reply.answer(answer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_a_syn_with_a_valid_checksum() {
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap_or(IpAddr::from([0; 4])),
            IpAddr::from([198, 51, 100, 7]),
        );
        let s = syn_segment(a, 61_234, b, 80, 0x0102_0304);
        assert_eq!((s[13], s[12] >> 4), (0x02, 6), "SYN, 24-byte header");
        assert_eq!(&s[20..24], &[2, 4, 0x05, 0xb4], "MSS 1460");
        // The one's complement sum over pseudo-header and segment is all ones.
        let mut sum: u32 = [0xc000u32, 0x0201, 0xc633, 0x6407, 6, 24].iter().sum();
        for c in s.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn the_kernel_takes_the_answer_filter() {
        // Raw sockets need root, as the tests run.
        for (domain, v6) in [(Domain::IPV4, false), (Domain::IPV6, true)] {
            let sock = Socket::new(domain, Type::RAW, Some(Protocol::TCP)).map_err(|e| e.to_string());
            let attached = sock.and_then(|s| s.attach_filter(&answers_only(v6)).map_err(|e| e.to_string()));
            assert_eq!(attached, Ok(()), "v6 {v6}");
        }
    }

    #[test]
    fn answers_are_read_by_their_flags() {
        let from = IpAddr::from([198, 51, 100, 7]);
        let mut seg = [0u8; 20];
        seg[0..2].copy_from_slice(&80u16.to_be_bytes());
        seg[2..4].copy_from_slice(&61_234u16.to_be_bytes());
        seg[8..12].copy_from_slice(&0x0102_0305u32.to_be_bytes());
        seg[13] = 0x12;
        assert_eq!(
            read_answer(from, &seg),
            Some(((from, 80, 61_234), 0x0102_0305, Answer::Open))
        );
        seg[13] = 0x14;
        assert_eq!(read_answer(from, &seg).map(|a| a.2), Some(Answer::Refused));
        seg[13] = 0x10;
        assert_eq!(read_answer(from, &seg), None, "a bare ACK is nobody's answer");
        seg[2..4].copy_from_slice(&443u16.to_be_bytes());
        seg[13] = 0x12;
        assert_eq!(read_answer(from, &seg), None, "not to a probe port");
        assert_eq!(read_answer(from, &seg[..12]), None);
    }

    fn pending(w: &Waiting, port: u16, deadline: Instant) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        let key = (IpAddr::from([198, 51, 100, 7]), 80, port);
        if let Ok(mut w) = w.lock() {
            w.insert(
                key,
                Pending {
                    isn: 1,
                    reply: Reply::Once(tx),
                    deadline,
                },
            );
        }
        rx
    }

    #[test]
    fn only_probes_past_their_deadline_are_dropped() {
        let w: Waiting = Arc::new(Mutex::new(FxHashMap::default()));
        let now = Instant::now();
        let mut past = pending(&w, 61_001, now - Duration::from_millis(1));
        let mut due = pending(&w, 61_002, now);
        let mut later = pending(&w, 61_003, now + Duration::from_secs(1));
        if let Ok(mut m) = w.lock() {
            expire(&mut m, now);
        }
        assert_eq!(w.lock().map(|m| m.len()).ok(), Some(1));
        assert_eq!(past.try_recv(), Err(oneshot::error::TryRecvError::Closed));
        assert_eq!(due.try_recv(), Err(oneshot::error::TryRecvError::Closed));
        assert_eq!(later.try_recv(), Err(oneshot::error::TryRecvError::Empty));
    }

    #[test]
    fn a_prober_is_alive_while_the_runtime_of_its_tasks_runs() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        };
        let Ok(a) = runtime() else {
            panic!("no tokio runtime");
        };
        // `Prober::get` keeps the node's prober while this holds and opens another once it does not (the
        // shared prober itself is not used here: tests run side by side).
        let first = a.block_on(async { Prober::open() });
        // Raw sockets need root, as the tests run.
        assert!(first.v4.is_some() && first.v6.is_some() && first.alive());
        drop(a);
        assert!(!first.alive(), "its reading tasks went with their runtime");
        // A prober opened outside a runtime has no sockets and stays as it is.
        let none = Prober::open();
        assert!(none.v4.is_none() && none.alive());
    }

    #[test]
    fn a_batch_probe_past_its_deadline_reports_a_timeout_with_its_token() {
        let w: Waiting = Arc::new(Mutex::new(FxHashMap::default()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        if let Ok(mut m) = w.lock() {
            for (port, token, deadline) in [(61_001, 7, now), (61_002, 8, now + Duration::from_secs(1))] {
                let reply = Reply::Batch(Batched(Some((tx.clone(), token))));
                m.insert(
                    (IpAddr::from([198, 51, 100, 7]), 80, port),
                    Pending {
                        isn: 1,
                        reply,
                        deadline,
                    },
                );
            }
            expire(&mut m, now);
        }
        assert_eq!(rx.try_recv().ok(), Some((7, None)));
        assert!(rx.try_recv().is_err(), "the other probe still waits");
        assert!(matches!(
            result_of(None, Duration::from_secs(1)),
            Err(CheckError::Timeout(_))
        ));
        assert!(result_of(Some(Answer::Open), Duration::from_secs(1)).is_ok());
    }

    #[tokio::test]
    async fn a_probe_that_cannot_be_sent_is_reported_once_as_its_error() {
        // Raw sockets need root, as the tests run.
        let p = Prober::open();
        let (tx, mut rx) = mpsc::unbounded_channel();
        // No source address is given and UDP may not connect to the broadcast address without
        // SO_BROADCAST, so finding the source fails before anything is sent.
        let check = |target: &str| Check {
            probe: crate::checker::Probe::Tcp(Default::default()),
            target: target.parse().unwrap_or_else(|e| panic!("{target}: {e}")),
            source: None,
            timeout: Duration::from_millis(20),
        };
        let (bad, good) = (check("255.255.255.255:80"), check("127.0.0.1:9"));
        let failed = p.start_all([(&bad, 5), (&good, 6)], &tx);
        assert!(matches!(failed[..], [(5, CheckError::Connect(_))]), "{failed:?}");
        // The other probe ends (refused by loopback's RST, or timed out), and nothing comes for the failed one:
        // a second report of it would make its scheduler file the backend twice.
        let first = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(matches!(first, Ok(Some((6, _)))), "{first:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "no outcome for the probe that failed");
    }

    #[test]
    fn forgetting_an_unsent_probe_reports_nothing() {
        let p = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(async { Prober::open() }));
        let Some(fam) = p.as_ref().ok().and_then(|p| p.v4.as_ref()) else {
            panic!("no raw socket (the tests run as root)");
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let key = (IpAddr::from([198, 51, 100, 7]), 80, 61_001);
        if let Ok(mut w) = fam.waiting.lock() {
            let reply = Reply::Batch(Batched(Some((tx.clone(), 9))));
            let deadline = Instant::now() + Duration::from_secs(1);
            w.insert(
                key,
                Pending {
                    isn: 1,
                    reply,
                    deadline,
                },
            );
        }
        fam.forget(key);
        assert_eq!(fam.waiting.lock().map(|w| w.len()).ok(), Some(0));
        assert!(rx.try_recv().is_err(), "a forgotten probe is silent");
    }

    #[tokio::test]
    async fn the_sweeper_ends_a_silent_probe_soon_after_its_deadline_and_then_idles() {
        let w: Waiting = Arc::new(Mutex::new(FxHashMap::default()));
        let wake = Arc::new(Notify::new());
        tokio::spawn(sweep_loop(w.clone(), wake.clone()));
        // Twice: the second probe arrives after the sweeper found the map empty and went to sleep.
        for port in [61_001, 61_002] {
            let started = Instant::now();
            let rx = pending(&w, port, started + Duration::from_millis(30));
            wake.notify_one();
            let r = tokio::time::timeout(Duration::from_secs(2), rx).await;
            let took = started.elapsed();
            assert!(
                matches!(r, Ok(Err(_))),
                "port {port}: dropped, not answered or left waiting"
            );
            assert!(
                took >= Duration::from_millis(30),
                "port {port}: ended early, {took:?}"
            );
            assert!(
                took < Duration::from_millis(500),
                "port {port}: ended late, {took:?}"
            );
            assert_eq!(w.lock().map(|m| m.len()).ok(), Some(0));
        }
    }
}
