//! The sync channel between two nodes, Sans-IO: records batched into authenticated UDP datagrams with sequence
//! numbers, cumulative acknowledgements and resend after a timeout (as conntrackd's FTFW), a bounded window and
//! a rate bound; heartbeats that tell the peer we are alive and what we have received; and a bulk-resync
//! request a returning node sends before it announces anything.
//!
//! ```text
//!  0        4    5      6        8         12        16        20      22
//! +--------+----+------+--------+---------+---------+---------+-------+-----------+----------------+
//! | "ALS1" |kind| gen  | sender | epoch   | seq     | ack     | count | records … | HMAC-SHA256/16 |
//! +--------+----+------+--------+---------+---------+---------+-------+-----------+----------------+
//! ```
//!
//! `sender` is the sending node's index in the topology, `epoch` a value chosen at each start (a restarted node
//! begins a new sequence), `gen` the sender's sequence generation (it starts its sequence again, under the same
//! epoch, when the receiver restarted and cannot acknowledge the old one), `seq` the datagram's number (data; in an acknowledgement, the bitmap of the nodes
//! 0–31 whose local addresses the sender serves, having taken them over), `ack` the highest sequence received
//! in order from the receiver's current epoch and generation. The tag covers everything before it; a datagram without a valid
//! tag is dropped and counted, as is one that is malformed. Records are idempotent state (an upsert or a
//! delete of a connection), so a datagram applied twice or out of order does no harm.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ring::hmac;

use super::record::{Record, RecordError};

const MAGIC: &[u8; 4] = b"ALS1";
/// Header bytes before the records.
const HEADER: usize = 22;
/// Bytes of the tag.
const TAG: usize = 16;
/// Largest datagram (fits a 1500-byte MTU with IPv6 and UDP headers).
pub const MAX_DATAGRAM: usize = 1400;

/// What a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Records.
    Data = 1,
    /// An acknowledgement (and a heartbeat: the sender is alive).
    Ack = 2,
    /// A returning node asks for every record the receiver holds for it and every one of its own.
    Resync = 3,
    /// The sender is stopping (a planned restart or upgrade): its successor takes over now, not after
    /// `dead_after`.
    Leave = 4,
}

/// A datagram that passed its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// What it is.
    pub kind: Kind,
    /// The sending node's index.
    pub sender: u16,
    /// The sender's epoch.
    pub epoch: u32,
    /// The sender's sequence generation.
    pub generation: u8,
    /// Sequence number (data).
    pub seq: u32,
    /// Cumulative acknowledgement of our data.
    pub ack: u32,
    /// The records (data).
    pub records: Vec<Record>,
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Too short, wrong magic or kind, or records that do not add up.
    #[error("malformed sync datagram")]
    Malformed,
    /// The tag does not match: another key, or altered on the way.
    #[error("sync datagram with a bad tag")]
    BadTag,
    /// A record inside did not decode.
    #[error("sync datagram with a bad record: {0}")]
    Record(#[from] RecordError),
}

/// The shared key every datagram is authenticated with.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<hidden>)")
    }
}

impl Key {
    /// A key from the topology's secret.
    pub fn new(secret: &[u8]) -> Key {
        Key(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }
}

/// The fixed part of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What it is.
    pub kind: Kind,
    /// The sending node's index.
    pub sender: u16,
    /// The sender's epoch.
    pub epoch: u32,
    /// The sender's sequence generation.
    pub generation: u8,
    /// Sequence number (data).
    pub seq: u32,
    /// Cumulative acknowledgement of the other direction.
    pub ack: u32,
}

/// Writes a datagram: header, `count` encoded records, tag.
pub fn seal(key: &Key, h: &Header, records: &[u8], count: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + records.len() + TAG);
    b.extend_from_slice(MAGIC);
    b.push(h.kind as u8);
    b.push(h.generation);
    b.extend_from_slice(&h.sender.to_be_bytes());
    b.extend_from_slice(&h.epoch.to_be_bytes());
    b.extend_from_slice(&h.seq.to_be_bytes());
    b.extend_from_slice(&h.ack.to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(records);
    let tag = hmac::sign(&key.0, &b);
    b.extend_from_slice(&tag.as_ref()[..TAG]);
    b
}

/// Checks and reads a datagram.
pub fn open(key: &Key, b: &[u8]) -> Result<Datagram, DatagramError> {
    if b.len() < HEADER + TAG || &b[..4] != MAGIC {
        return Err(DatagramError::Malformed);
    }
    let (body, tag) = b.split_at(b.len() - TAG);
    let want = hmac::sign(&key.0, body);
    // Constant-time comparison of the truncated tag.
    if !want.as_ref()[..TAG]
        .iter()
        .zip(tag)
        .fold(true, |ok, (a, b)| ok & (a == b))
    {
        return Err(DatagramError::BadTag);
    }
    let kind = match body[4] {
        1 => Kind::Data,
        2 => Kind::Ack,
        3 => Kind::Resync,
        4 => Kind::Leave,
        _ => return Err(DatagramError::Malformed),
    };
    let u32_at = |i: usize| u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
    let count = usize::from(u16::from_be_bytes([body[20], body[21]]));
    let mut records = Vec::with_capacity(count);
    let mut at = HEADER;
    for _ in 0..count {
        let (r, n) = Record::decode(&body[at..])?;
        records.push(r);
        at += n;
    }
    if at != body.len() {
        return Err(DatagramError::Malformed);
    }
    Ok(Datagram {
        kind,
        sender: u16::from_be_bytes([body[6], body[7]]),
        epoch: u32_at(8),
        generation: body[5],
        seq: u32_at(12),
        ack: u32_at(16),
        records,
    })
}

/// Counters of one direction of a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Records queued to send.
    pub records_queued: u64,
    /// Records sent (first transmissions).
    pub records_sent: u64,
    /// Records acknowledged.
    pub records_acked: u64,
    /// Datagrams sent again after their timeout.
    pub resent: u64,
    /// Records dropped because the window was full and the rate bound reached (the periodic refresh sends them
    /// again).
    pub overflow: u64,
    /// Datagrams received and accepted.
    pub received: u64,
    /// Datagrams received a second time (already applied).
    pub duplicates: u64,
}

/// A datagram waiting for its acknowledgement.
#[derive(Debug)]
struct Pending {
    seq: u32,
    bytes: Vec<u8>,
    records: u64,
    sent: Instant,
}

/// Settings of a channel.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Resend an unacknowledged datagram after this long.
    pub rto: Duration,
    /// Most datagrams in flight.
    pub window: usize,
    /// Most datagrams sent per second (first transmissions and resends).
    pub rate: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            rto: Duration::from_millis(200),
            window: 1024,
            rate: 20_000,
        }
    }
}

/// Our side of the channel to one peer: what we send it, and what we have received from it.
#[derive(Debug)]
pub struct Channel {
    key: Key,
    me: u16,
    epoch: u32,
    settings: Settings,
    next_seq: u32,
    batch: Vec<u8>,
    batch_count: u16,
    unacked: VecDeque<Pending>,
    tokens: f64,
    refilled: Option<Instant>,
    /// Our sequence generation.
    generation: u8,
    /// The peer's epoch, its sequence (epoch and generation), the highest sequence received from it in order,
    /// and those above it.
    peer_epoch: Option<u32>,
    peer_sequence: Option<(u32, u8)>,
    in_order: u32,
    above: BTreeSet<u32>,
    /// Counters.
    pub counters: Counters,
}

impl Channel {
    /// The channel of node `me` (its index), started with `epoch`.
    pub fn new(key: Key, me: u16, epoch: u32, settings: Settings) -> Channel {
        Channel {
            key,
            me,
            epoch,
            settings,
            next_seq: 1,
            batch: Vec::with_capacity(MAX_DATAGRAM),
            batch_count: 0,
            unacked: VecDeque::new(),
            tokens: f64::from(settings.rate) / 10.0,
            refilled: None,
            generation: 0,
            peer_epoch: None,
            peer_sequence: None,
            in_order: 0,
            above: BTreeSet::new(),
            counters: Counters::default(),
        }
    }

    /// Queues a record; a full batch becomes a datagram in `out`.
    pub fn push(&mut self, r: &Record, now: Instant, out: &mut Vec<Vec<u8>>) {
        self.counters.records_queued += 1;
        if self.batch.len() + r.len() > MAX_DATAGRAM - HEADER - TAG {
            self.flush(now, out);
        }
        r.encode(&mut self.batch);
        self.batch_count += 1;
    }

    /// Sends the partial batch now (the sync task calls it every few milliseconds).
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        if self.batch_count == 0 {
            return;
        }
        let records = u64::from(self.batch_count);
        if self.unacked.len() >= self.settings.window || !self.take_token(now) {
            self.counters.overflow += records;
        } else {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            let bytes = seal(
                &self.key,
                &self.header(Kind::Data, seq),
                &self.batch,
                self.batch_count,
            );
            out.push(bytes.clone());
            self.unacked.push_back(Pending {
                seq,
                bytes,
                records,
                sent: now,
            });
            self.counters.records_sent += records;
        }
        self.batch.clear();
        self.batch_count = 0;
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = self
            .refilled
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.refilled = Some(now);
        let cap = f64::from(self.settings.rate) / 10.0;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * f64::from(self.settings.rate)).min(cap.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Timers: datagrams unacknowledged past the timeout go again (oldest first, within the rate bound).
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        let rto = self.settings.rto;
        let due: Vec<usize> = self
            .unacked
            .iter()
            .enumerate()
            .filter(|(_, p)| now.saturating_duration_since(p.sent) >= rto)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            if !self.take_token(now) {
                break;
            }
            if let Some(p) = self.unacked.get_mut(i) {
                out.push(p.bytes.clone());
                p.sent = now;
                self.counters.resent += 1;
            }
        }
    }

    /// An acknowledgement heartbeat for the peer: what we have received from it in order, and the bitmap of
    /// the nodes whose local addresses we serve.
    pub fn heartbeat(&self, adopted: u32) -> Vec<u8> {
        seal(&self.key, &self.header(Kind::Ack, adopted), &[], 0)
    }

    fn header(&self, kind: Kind, seq: u32) -> Header {
        Header {
            kind,
            sender: self.me,
            epoch: self.epoch,
            generation: self.generation,
            seq,
            ack: self.in_order,
        }
    }

    /// A bulk-resync request (a returning node sends it before announcing anything).
    pub fn resync_request(&self) -> Vec<u8> {
        seal(&self.key, &self.header(Kind::Resync, 0), &[], 0)
    }

    /// A datagram from the peer: acknowledgements free our window; data is acknowledged. Returns the datagram
    /// when its records are new (apply them), `None` for a duplicate or an acknowledgement.
    pub fn receive(&mut self, d: Datagram) -> Option<Datagram> {
        self.on_ack(d.ack);
        self.counters.received += 1;
        if self.peer_epoch.is_some_and(|e| e != d.epoch) {
            // The peer restarted and has nothing of ours: our sequence starts again in a new generation (the
            // node sends it all its records again), so that it does not wait for what it will never get.
            self.generation = self.generation.wrapping_add(1);
            self.next_seq = 1;
            self.unacked.clear();
        }
        self.peer_epoch = Some(d.epoch);
        if self.peer_sequence != Some((d.epoch, d.generation)) {
            // A new sequence from the peer.
            self.peer_sequence = Some((d.epoch, d.generation));
            self.in_order = 0;
            self.above.clear();
        }
        match d.kind {
            Kind::Data => {
                if d.seq <= self.in_order || self.above.contains(&d.seq) {
                    self.counters.duplicates += 1;
                    return None;
                }
                self.above.insert(d.seq);
                while self.above.remove(&(self.in_order + 1)) {
                    self.in_order += 1;
                }
                Some(d)
            }
            Kind::Ack => None,
            Kind::Resync | Kind::Leave => Some(d),
        }
    }

    fn on_ack(&mut self, ack: u32) {
        while self.unacked.front().is_some_and(|p| p.seq <= ack) {
            if let Some(p) = self.unacked.pop_front() {
                self.counters.records_acked += p.records;
            }
        }
    }

    /// Datagrams waiting for an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.unacked.len()
    }

    /// What we have received from the peer in order.
    pub fn received_in_order(&self) -> u32 {
        self.in_order
    }

    /// The datagram that tells the peer we are stopping.
    pub fn leave(&self) -> Vec<u8> {
        seal(&self.key, &self.header(Kind::Leave, 0), &[], 0)
    }

    /// The peer's epoch as last seen (it changes when the peer restarts).
    pub fn peer_epoch(&self) -> Option<u32> {
        self.peer_epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::record::Op;
    use crate::conn::{Conn, FLAG_USED};
    use crate::flow::v4;
    use std::net::Ipv4Addr;

    fn record(i: u16) -> Record {
        let c = Conn {
            cport: i,
            vport: 80,
            lport: 1024 + i,
            bport: 8080,
            proto: 6,
            state: 1,
            flags: FLAG_USED,
            ..Conn::addressed(
                v4(Ipv4Addr::new(192, 0, 2, 130)),
                v4(Ipv4Addr::new(203, 0, 113, 10)),
                v4(Ipv4Addr::new(198, 51, 100, 32)),
                v4(Ipv4Addr::new(198, 51, 100, 101)),
            )
        };
        Record::of(Op::Upsert, &c, 900_000)
    }

    fn pair() -> (Channel, Channel) {
        let k = Key::new(b"cluster secret");
        (
            Channel::new(k.clone(), 0, 11, Settings::default()),
            Channel::new(k, 1, 22, Settings::default()),
        )
    }

    #[test]
    fn records_arrive_batched_and_acknowledged() {
        let (mut a, mut b) = pair();
        let (t0, mut out) = (Instant::now(), Vec::new());
        for i in 0..100 {
            a.push(&record(i), t0, &mut out);
        }
        a.flush(t0, &mut out);
        assert_eq!(out.len(), 3, "100 records of 37 bytes in 1400-byte datagrams");
        let key = Key::new(b"cluster secret");
        let mut got = 0;
        for d in &out {
            let d = b.receive(open(&key, d).unwrap()).unwrap();
            got += d.records.len();
        }
        assert_eq!(got, 100);
        // b's heartbeat acknowledges everything.
        a.receive(open(&key, &b.heartbeat(0)).unwrap());
        assert_eq!((a.in_flight(), a.counters.records_acked), (0, 100));
    }

    #[test]
    fn a_lost_datagram_is_sent_again_and_duplicates_are_not_applied_twice() {
        let (mut a, mut b) = pair();
        let key = Key::new(b"cluster secret");
        let (t0, mut out) = (Instant::now(), Vec::new());
        for i in 0..80 {
            a.push(&record(i), t0, &mut out);
        }
        a.flush(t0, &mut out);
        assert_eq!(out.len(), 3);
        // The first datagram is lost; the others arrive out of order.
        for d in [&out[2], &out[1]] {
            assert!(b.receive(open(&key, d).unwrap()).is_some());
        }
        assert_eq!(b.received_in_order(), 0);
        a.receive(open(&key, &b.heartbeat(0)).unwrap());
        assert_eq!(a.in_flight(), 3, "nothing acknowledged in order yet");
        let mut again = Vec::new();
        a.poll(t0 + Duration::from_millis(100), &mut again);
        assert!(again.is_empty(), "not before the timeout");
        a.poll(t0 + Duration::from_millis(250), &mut again);
        assert_eq!(again.len(), 3);
        assert!(
            b.receive(open(&key, &again[0]).unwrap()).is_some(),
            "the lost one is new"
        );
        assert!(b.receive(open(&key, &again[1]).unwrap()).is_none(), "a duplicate");
        assert_eq!(b.received_in_order(), 3);
        a.receive(open(&key, &b.heartbeat(0)).unwrap());
        assert_eq!(
            (a.in_flight(), a.counters.resent, b.counters.duplicates),
            (0, 3, 1)
        );
    }

    #[test]
    fn a_wrong_key_or_a_flipped_bit_is_refused() {
        let (mut a, _) = pair();
        let (t0, mut out) = (Instant::now(), Vec::new());
        a.push(&record(1), t0, &mut out);
        a.flush(t0, &mut out);
        let d = &out[0];
        assert_eq!(open(&Key::new(b"another secret"), d), Err(DatagramError::BadTag));
        let key = Key::new(b"cluster secret");
        for i in [0, 5, 30, d.len() - 1] {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            assert!(open(&key, &bad).is_err(), "bit flipped at {i}");
        }
        assert_eq!(open(&key, &d[..10]), Err(DatagramError::Malformed));
    }

    #[test]
    fn a_restarted_peer_starts_a_new_sequence() {
        let key = Key::new(b"cluster secret");
        let (mut a, mut b) = pair();
        let (t0, mut out) = (Instant::now(), Vec::new());
        a.push(&record(1), t0, &mut out);
        a.flush(t0, &mut out);
        b.receive(open(&key, &out[0]).unwrap());
        assert_eq!(b.received_in_order(), 1);
        let mut a2 = Channel::new(key.clone(), 0, 12, Settings::default());
        let mut out2 = Vec::new();
        a2.push(&record(2), t0, &mut out2);
        a2.flush(t0, &mut out2);
        assert!(
            b.receive(open(&key, &out2[0]).unwrap()).is_some(),
            "seq 1 of a new epoch is new"
        );
        assert_eq!(b.received_in_order(), 1);
    }

    #[test]
    fn a_restarted_receiver_gets_a_new_sequence_from_us() {
        let key = Key::new(b"cluster secret");
        let (mut a, mut b) = pair();
        let (t0, mut out) = (Instant::now(), Vec::new());
        for i in 0..3 {
            a.push(&record(i), t0, &mut out);
            a.flush(t0, &mut out);
        }
        for d in &out {
            b.receive(open(&key, d).unwrap());
        }
        a.receive(open(&key, &b.heartbeat(0)).unwrap());
        // b restarts and hears from a in the middle of a's sequence: it would wait for seq 1 forever.
        let mut b2 = Channel::new(key.clone(), 1, 23, Settings::default());
        out.clear();
        a.push(&record(9), t0, &mut out);
        a.flush(t0, &mut out);
        assert!(b2.receive(open(&key, &out[0]).unwrap()).is_some());
        assert_eq!(b2.received_in_order(), 0, "seq 4 of an epoch it never saw");
        // a hears b2's new epoch and starts a new sequence of its own.
        a.receive(open(&key, &b2.heartbeat(0)).unwrap());
        assert_eq!(a.in_flight(), 0);
        out.clear();
        a.push(&record(10), t0, &mut out);
        a.flush(t0, &mut out);
        assert!(b2.receive(open(&key, &out[0]).unwrap()).is_some());
        assert_eq!(b2.received_in_order(), 1);
        a.receive(open(&key, &b2.heartbeat(0)).unwrap());
        assert_eq!(a.in_flight(), 0, "acknowledged in the new sequence");
    }

    #[test]
    fn the_rate_bound_and_the_window_hold_records_back_and_count_them() {
        let key = Key::new(b"k");
        let mut a = Channel::new(
            key,
            0,
            1,
            Settings {
                rto: Duration::from_millis(200),
                window: 2,
                rate: 1_000,
            },
        );
        let (t0, mut out) = (Instant::now(), Vec::new());
        for i in 0..200 {
            a.push(&record(i), t0, &mut out);
        }
        a.flush(t0, &mut out);
        assert_eq!(out.len(), 2, "the window holds two datagrams");
        assert!(a.counters.overflow > 0);
        assert_eq!(a.counters.records_queued, 200);
    }
}
