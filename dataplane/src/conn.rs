//! The per-worker connection table.
//!
//! A preallocated arena of [`Conn`] records (plain data, no pointers: they can be copied to a backup node) and
//! one open-addressing index (linear probing, backward-shift deletion) holding two keys per connection: the
//! inbound tuple (client → VIP) and the reply tuple (backend → local address). The capacity is hard: when the
//! arena is full, [`ConnTable::insert`] fails and existing entries are untouched.
//!
//! Expiry uses a hashed timing wheel threaded through the records (doubly linked). Refreshing a connection only
//! stores its new expiry; a wheel slot that fires re-files entries whose expiry moved later, and an expiry
//! moved earlier (RST) re-files the entry at once. [`ConnTable::expire`] does a bounded amount of work per
//! call, so there is never a stop-the-world scan.

use crate::flow::{is_v4, Addr, Tuple, Tuple4};
use crate::tcp_state::{Dir, State};

/// A vector of `n` copies of `v` whose memory the kernel is asked to back with transparent huge pages before
/// it is first written: the records and index of a table of millions of connections are read at random, and
/// 2 MiB pages spare most of the TLB misses 4 KiB pages would cost. Without huge pages it is an ordinary
/// vector.
fn huge_vec<T: Copy>(n: usize, v: T) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    if size_of::<T>() * n >= 1 << 21 {
        // A hint only: refused (a kernel without transparent huge pages), the table works the same.
        let _ = os_sys::advise_huge_pages(out.spare_capacity_mut());
    }
    out.resize(n, v);
    out
}

/// Marks an unused link or slot.
const NIL: u32 = u32::MAX;

/// Index slots [`ConnTable::warm_record`] looks at for a signature (one cache line of slots).
const WARM_PROBES: usize = 8;

/// Wheel slots (a power of two).
const WHEEL: u32 = 1 << 14;

/// A connection: the four endpoints of a Full-NAT translation and its bookkeeping, in exactly two cache lines
/// (128 bytes, aligned to 128 so the two are a pair the memory system fetches together).
///
/// ```text
///  line 0 (every packet)                              line 1 (IPv6 addresses, rarer bookkeeping)
/// +-------------------+-------+------------------+    +-----------------------------+-------------------+
/// | addresses, part 1 | ports | expiry, sync,    |    | addresses, part 2           | wheel tick and    |
/// | 16 bytes          | 4 x 2 | next hops, state |    | 48 bytes                    | links, sp_delta   |
/// +-------------------+-------+------------------+    +-----------------------------+-------------------+
/// ```
///
/// When all four addresses are IPv4 they fit in part 1 (4 bytes each) and the established path of the
/// connection reads the first line only: one cache miss fewer per packet in a table larger than the cache.
/// Otherwise part 1 holds the client's 16 bytes and part 2 the other three. The addresses are read with
/// [`client`](Self::client) and its siblings and written with [`set_addrs`](Self::set_addrs), which picks
/// the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(128))]
pub struct Conn {
    /// Addresses, part 1 (see the type's documentation); `pub(crate)` only so that records can be built with
    /// `..Conn::addressed(…)` in the crate (a struct update needs every field visible).
    pub(crate) addr_lo: [u8; 16],
    /// Client port.
    pub cport: u16,
    /// VIP port.
    pub vport: u16,
    /// Local port.
    pub lport: u16,
    /// Backend port.
    pub bport: u16,
    /// Expiry, in table ticks.
    pub expires: u32,
    /// Stable id of the backend (see [`crate::snapshot::Builder`]).
    pub uid: u32,
    /// Table tick its record was last sent to the holders (0: never).
    pub synced: u32,
    /// Table tick the connection was made at (here, or its record applied).
    pub born: u32,
    /// The client's first sequence number after its SYN (TOA and PROXY header bookkeeping).
    pub cla_seq: u32,
    /// Service index in the snapshot of generation `svc_gen`.
    pub service: u16,
    /// Cached next hop towards the backend (neighbour slot), valid for `route_gen`.
    pub nh_fwd: u16,
    /// Cached next hop towards the client.
    pub nh_rev: u16,
    /// Route generation of the cached next hops.
    pub route_gen: u16,
    /// Low bits of the snapshot generation `service` indexes.
    pub svc_gen: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`State`] as a byte.
    pub state: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Port the client's packets arrived on.
    pub in_port: u8,
    /// `CLA_*`: where telling the backend the client's address stands.
    pub cla: u8,
    /// `SP_*`: where a SYN-proxied connection's two handshakes stand.
    pub sp: u8,
    /// Backend windows towards the client: backend's scale (high nibble), the scale the client was offered
    /// (low nibble).
    pub sp_win_reply: u8,
    /// Client windows towards a backend that declined window scaling: the client's scale (0: as they are).
    pub sp_win_in: u8,
    /// The state it was last synced in.
    pub synced_state: u8,
    /// 0: the four addresses are IPv4, in part 1; 1: they are 16 bytes each, across both parts.
    pub(crate) wide: u8,
    /// Addresses, part 2.
    pub(crate) addr_hi: [u8; 48],
    /// Wheel tick the entry is filed under.
    pub(crate) slot_tick: u32,
    /// Pending: the cookie (the node's initial sequence number towards the client). Spliced: how far the
    /// backend's sequence numbers are ahead of the cookie's.
    pub sp_delta: u32,
    /// Wheel links (or the free-list link when unused).
    pub(crate) next: u32,
    pub(crate) prev: u32,
}

// The layout the type's documentation draws: the second line starts with the second part of the addresses.
const _: () = assert!(size_of::<Conn>() == 128 && std::mem::offset_of!(Conn, addr_hi) == 64);

/// The entry is in use.
pub const FLAG_USED: u8 = 0x01;
/// The client side is IPv6.
pub const FLAG_CLIENT_V6: u8 = 0x02;
/// The backend side is IPv6.
pub const FLAG_BACKEND_V6: u8 = 0x04;
/// The local address/port came from the pool and must be released on expiry.
pub const FLAG_POOLED: u8 = 0x08;
/// A connection of another node, from its sync record: its local address and port are not ours to give back,
/// and it is not synced on.
pub const FLAG_SYNCED: u8 = 0x80;
/// A source-NAT gateway flow: `lip:lport` came from the rule's pool; `vip:vport` and `backend:bport` are the
/// server the client talks to.
pub const FLAG_SNAT: u8 = 0x40;
/// Not SYN-proxied.
pub const SP_NONE: u8 = 0;
/// The client completed its handshake with the node; the backend's SYN-ACK is awaited, the client's segments
/// are held meanwhile.
pub const SP_PENDING: u8 = 1;
/// The two handshakes are spliced: sequence numbers are shifted by `sp_delta` for the life of the connection.
pub const SP_SPLICED: u8 = 2;
/// No client address is passed on.
pub const CLA_NONE: u8 = 0;
/// TOA goes into client segments at the first sequence number until the backend acknowledges beyond it.
pub const CLA_TOA: u8 = 1;
/// The backend acknowledged client data: TOA is done.
pub const CLA_TOA_DONE: u8 = 2;
/// The PROXY v2 header is still to be sent.
pub const CLA_PP_PENDING: u8 = 3;
/// The PROXY v2 header went out; it is resent with a segment at the first sequence number until acknowledged.
pub const CLA_PP_SENT: u8 = 4;
/// The backend acknowledged the PROXY v2 header.
pub const CLA_PP_ACKED: u8 = 5;
/// UDP: the UOA option goes into the next `cla_seq` client datagrams (`u32::MAX`: every one).
pub const CLA_UOA: u8 = 6;
/// UDP: the PROXY v2 header goes before the payload of the next `cla_seq` client datagrams (`u32::MAX`: every
/// one).
pub const CLA_PP_UDP: u8 = 7;
/// Forwarding-mode bits of `flags`.
pub const MODE_MASK: u8 = 0x30;
/// Full-NAT: both addresses rewritten, `lip:lport` from the pool.
pub const MODE_FULLNAT: u8 = 0x00;
/// NAT (DNAT): the destination is rewritten, `lip:lport` is the client itself; replies pass through the node.
pub const MODE_NAT: u8 = 0x10;
/// Direct routing: the frame goes to the backend's MAC unchanged; replies bypass the node.
pub const MODE_DR: u8 = 0x20;
/// Tunnel: IP-in-IP to the backend with outer source `lip`; replies bypass the node.
pub const MODE_TUNNEL: u8 = 0x30;

impl Conn {
    /// An unused record (all zero).
    pub const EMPTY: Conn = Conn {
        addr_lo: [0; 16],
        cport: 0,
        vport: 0,
        lport: 0,
        bport: 0,
        expires: 0,
        uid: 0,
        synced: 0,
        born: 0,
        cla_seq: 0,
        service: 0,
        nh_fwd: 0,
        nh_rev: 0,
        route_gen: 0,
        svc_gen: 0,
        proto: 0,
        state: 0,
        flags: 0,
        in_port: 0,
        cla: 0,
        sp: SP_NONE,
        sp_win_reply: 0,
        sp_win_in: 0,
        synced_state: 0,
        wide: 1,
        addr_hi: [0; 48],
        slot_tick: 0,
        sp_delta: 0,
        next: 0,
        prev: 0,
    };

    /// An unused record with these addresses (all zero otherwise), to build a record from with `..`.
    pub fn addressed(client: Addr, vip: Addr, lip: Addr, backend: Addr) -> Conn {
        let mut c = Conn::EMPTY;
        c.set_addrs(client, vip, lip, backend);
        c
    }

    /// Stores the four addresses, in one cache line when all are IPv4.
    pub fn set_addrs(&mut self, client: Addr, vip: Addr, lip: Addr, backend: Addr) {
        let all = [client, vip, lip, backend];
        if all.iter().all(is_v4) {
            for (part, a) in self.addr_lo.chunks_exact_mut(4).zip(all) {
                part.copy_from_slice(&a[12..]);
            }
            self.addr_hi = [0; 48];
            self.wide = 0;
        } else {
            self.addr_lo = client;
            for (part, a) in self.addr_hi.chunks_exact_mut(16).zip(&all[1..]) {
                part.copy_from_slice(a);
            }
            self.wide = 1;
        }
    }

    /// The IPv4 address `i` (0 client, 1 VIP, 2 local, 3 backend), when all four are IPv4 (kept as 4 bytes
    /// each in the first line).
    #[inline(always)]
    pub fn v4_addr(&self, i: usize) -> Option<[u8; 4]> {
        if self.wide != 0 {
            return None;
        }
        let mut a = [0; 4];
        a.copy_from_slice(self.addr_lo.get(4 * i..4 * i + 4)?);
        Some(a)
    }

    /// Address `i` (0 client, 1 VIP, 2 local, 3 backend) as the little-endian number of its 16 bytes, which
    /// compares and converts back in registers: a narrow one is the IPv4-mapped prefix (`::ffff:0:0`) with
    /// its four bytes on top.
    #[inline(always)]
    fn addr_bits(&self, i: usize) -> u128 {
        const MAPPED: u128 = 0xffff << 80;
        if let Some(v4) = self.v4_addr(i) {
            MAPPED | u128::from(u32::from_le_bytes(v4)) << 96
        } else if i == 0 {
            u128::from_le_bytes(self.addr_lo)
        } else {
            let mut a = [0; 16];
            a.copy_from_slice(&self.addr_hi[16 * (i - 1)..16 * i]);
            u128::from_le_bytes(a)
        }
    }

    /// Address `i` (see [`addr_bits`](Self::addr_bits)).
    #[inline(always)]
    fn addr(&self, i: usize) -> Addr {
        self.addr_bits(i).to_le_bytes()
    }

    /// Client address.
    #[inline]
    pub fn client(&self) -> Addr {
        self.addr(0)
    }

    /// VIP.
    #[inline]
    pub fn vip(&self) -> Addr {
        self.addr(1)
    }

    /// Local address (Full-NAT source towards the backend).
    #[inline]
    pub fn lip(&self) -> Addr {
        self.addr(2)
    }

    /// Backend address.
    #[inline]
    pub fn backend(&self) -> Addr {
        self.addr(3)
    }

    /// The tuple of the client's packets.
    pub fn inbound_tuple(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.client(),
            sport: self.cport,
            dst: self.vip(),
            dport: self.vport,
        }
    }

    /// The tuple of the backend's packets.
    pub fn reply_tuple(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.backend(),
            sport: self.bport,
            dst: self.lip(),
            dport: self.lport,
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        State::from_u8(self.state)
    }

    /// [`matches`](Self::matches) for a plain IPv4 key: compared with the four-byte addresses when the record
    /// keeps them so, else with the mapped tuple.
    #[inline(always)]
    fn matches_v4(&self, dir: Dir, t: &Tuple4) -> bool {
        if self.wide != 0 {
            return self.matches_mapped(dir, t);
        }
        let a = &self.addr_lo;
        self.proto == t.proto
            && match dir {
                Dir::Inbound => {
                    self.cport == t.sport && self.vport == t.dport && a[0..4] == t.src && a[4..8] == t.dst
                }
                Dir::Reply => {
                    self.bport == t.sport && self.lport == t.dport && a[12..16] == t.src && a[8..12] == t.dst
                }
            }
    }

    /// [`matches_v4`](Self::matches_v4) for a record with 16-byte addresses (a NAT64 connection's IPv4 side):
    /// out of line, so that the mapped key it builds is not built ahead of every probe of the narrow case.
    #[cold]
    #[inline(never)]
    fn matches_mapped(&self, dir: Dir, t: &Tuple4) -> bool {
        self.matches(dir, &t.tuple())
    }

    #[inline(always)]
    fn matches(&self, dir: Dir, t: &Tuple) -> bool {
        let (src, dst) = (u128::from_le_bytes(t.src), u128::from_le_bytes(t.dst));
        self.proto == t.proto
            && match dir {
                Dir::Inbound => {
                    self.cport == t.sport
                        && self.vport == t.dport
                        && self.addr_bits(0) == src
                        && self.addr_bits(1) == dst
                }
                Dir::Reply => {
                    self.bport == t.sport
                        && self.lport == t.dport
                        && self.addr_bits(3) == src
                        && self.addr_bits(2) == dst
                }
            }
    }
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The arena is at capacity.
    Full,
    /// A connection with the same inbound or reply tuple exists.
    Exists,
}

/// The connection table of one worker.
#[derive(Debug)]
pub struct ConnTable {
    arena: Vec<Conn>,
    /// First never-used record.
    high: u32,
    /// Head of the free list of released records.
    free: u32,
    len: u32,
    index: Vec<u64>,
    mask: u64,
    seed: u64,
    wheel: Vec<u32>,
    /// Next tick the wheel will process.
    cursor: u32,
}

/// Index slot: signature (32 bits, never 0) then record number and direction.
#[inline]
fn slot(sig: u32, idx: u32, dir: Dir) -> u64 {
    (u64::from(sig) << 32) | (u64::from(idx) << 1) | u64::from(dir == Dir::Reply)
}

#[inline]
fn sig_of(h: u64) -> u32 {
    (h as u32) | 1
}

#[inline]
fn home_of(h: u64, mask: u64) -> u64 {
    (h >> 32) & mask
}

/// The record number and direction an index slot holds.
#[inline(always)]
fn entry_of(s: u64) -> (u32, Dir) {
    let dir = if s & 1 == 1 { Dir::Reply } else { Dir::Inbound };
    (((s as u32) >> 1) & 0x7fff_ffff, dir)
}

impl ConnTable {
    /// A table for at most `capacity` connections, hashing with `seed`.
    pub fn new(capacity: u32, seed: u64) -> Self {
        let capacity = capacity.clamp(1, (u32::MAX >> 2) - 1);
        let want = (u64::from(capacity) * 2 * 10).div_ceil(7);
        let slots = want.next_power_of_two().max(16);
        ConnTable {
            arena: huge_vec(capacity as usize, Conn::EMPTY),
            high: 0,
            free: NIL,
            len: 0,
            index: huge_vec(slots as usize, 0),
            mask: slots - 1,
            seed,
            wheel: vec![NIL; WHEEL as usize],
            cursor: 0,
        }
    }

    /// Connections in use.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no connection is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most connections the table holds.
    pub fn capacity(&self) -> usize {
        self.arena.len()
    }

    /// Bytes of memory per connection of capacity (records plus index).
    pub fn bytes_per_connection(&self) -> usize {
        (self.arena.len() * size_of::<Conn>() + self.index.len() * 8 + self.wheel.len() * 4)
            / self.arena.len()
    }

    /// The hash used for `t`.
    #[inline]
    pub fn hash(&self, t: &Tuple) -> u64 {
        t.table_hash(self.seed)
    }

    /// Touches the index slot a tuple of hash `h` would start probing at, so that a burst can overlap its cache
    /// misses.
    #[inline]
    pub fn warm(&self, h: u64) {
        if let Some(s) = self.index.get(home_of(h, self.mask) as usize) {
            os_sys::prefetch(s);
        }
    }

    /// Touches the record an entry of hash `h` points to, once its index line is in cache
    /// ([`warm`](Self::warm)): the first slot from home with `h`'s signature, within `WARM_PROBES` (8) slots;
    /// returns that record's number and the direction the slot gives it, a candidate for
    /// [`lookup_from`](Self::lookup_from). Trusting the home slot alone warmed the wrong record for the third of
    /// entries a collision had pushed along, and those packets then waited on memory. Only the record's first
    /// line is asked for when the packet is IPv4 (`v4`): the connection is most likely IPv4 on both sides and
    /// then that line is all it reads; an IPv6 packet asks for both.
    #[inline]
    pub fn warm_record(&self, h: u64, v4: bool) -> Option<(u32, Dir)> {
        let sig = sig_of(h);
        let mut i = home_of(h, self.mask);
        for _ in 0..WARM_PROBES {
            let s = *self.index.get(i as usize)?;
            if s == 0 {
                return None;
            }
            if (s >> 32) as u32 == sig {
                let (idx, dir) = entry_of(s);
                let c = self.arena.get(idx as usize)?;
                os_sys::prefetch(&c.addr_lo);
                if !v4 {
                    os_sys::prefetch(&c.addr_hi);
                }
                return Some((idx, dir));
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Finds the connection of a packet with tuple `t` (hash `h`), and which direction it travels.
    #[inline(always)]
    pub fn lookup(&self, t: &Tuple, h: u64) -> Option<(u32, Dir)> {
        // Marked: the compiler left this comparison a call per probe (the IPv4 key's, smaller, is inlined).
        self.probe(
            h,
            #[inline(always)]
            |c, dir| c.matches(dir, t),
        )
    }

    /// [`lookup_from`](Self::lookup_from) for a plain IPv4 packet's key (hash `h`, [`Tuple4::table_hash`] with
    /// this table's seed, which is the mapped tuple's): `cand` first, if warming found one, else the probe.
    #[inline(always)]
    pub fn lookup_v4(&self, t: &Tuple4, h: u64, cand: Option<(u32, Dir)>) -> Option<(u32, Dir)> {
        self.probe_from(
            h,
            cand,
            #[inline(always)]
            |c, dir| c.matches_v4(dir, t),
        )
    }

    /// [`lookup`](Self::lookup) that first tries `cand`, the entry [`warm_record`](Self::warm_record) found
    /// for the same hash, without probing the index again. The candidate is taken only if its record is in
    /// use and has `t` as its tuple that way: a tuple is in the table at most once, so such a record is the
    /// connection even if the table changed since the candidate was found (a record removed, its number
    /// reused); anything else (a signature shared with another entry, a record since removed) probes as
    /// `lookup` does.
    #[inline(always)]
    pub fn lookup_from(&self, t: &Tuple, h: u64, cand: Option<(u32, Dir)>) -> Option<(u32, Dir)> {
        self.probe_from(
            h,
            cand,
            #[inline(always)]
            |c, dir| c.matches(dir, t),
        )
    }

    /// `cand` if its record is in use and `is` the one that way, else [`probe`](Self::probe).
    #[inline(always)]
    fn probe_from(
        &self,
        h: u64,
        cand: Option<(u32, Dir)>,
        is: impl Fn(&Conn, Dir) -> bool,
    ) -> Option<(u32, Dir)> {
        if let Some((idx, dir)) = cand {
            let c = self.arena.get(idx as usize);
            if c.is_some_and(|c| c.flags & FLAG_USED != 0 && is(c, dir)) {
                return cand;
            }
        }
        self.probe(h, is)
    }

    /// Probes the index from `h`'s home slot for an entry with its signature whose record `is` the one.
    #[inline(always)]
    fn probe(&self, h: u64, is: impl Fn(&Conn, Dir) -> bool) -> Option<(u32, Dir)> {
        let sig = sig_of(h);
        let mut i = home_of(h, self.mask);
        loop {
            let s = self.index[i as usize];
            if s == 0 {
                return None;
            }
            if (s >> 32) as u32 == sig {
                let (idx, dir) = entry_of(s);
                if is(&self.arena[idx as usize], dir) {
                    return Some((idx, dir));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The hash of a plain IPv4 packet's key, as [`hash`](Self::hash) of its mapped tuple.
    #[inline]
    pub fn hash_v4(&self, t: &Tuple4) -> u64 {
        t.table_hash(self.seed)
    }

    /// The record `idx`.
    #[inline]
    pub fn get(&self, idx: u32) -> &Conn {
        &self.arena[idx as usize]
    }

    /// The record `idx`, mutable. Changing its tuples corrupts the index: only bookkeeping fields may change.
    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut Conn {
        &mut self.arena[idx as usize]
    }

    /// Adds a connection expiring at tick `c.expires`; returns its record number.
    pub fn insert(&mut self, mut c: Conn) -> Result<u32, InsertError> {
        let (hi, hr) = (self.hash(&c.inbound_tuple()), self.hash(&c.reply_tuple()));
        if self.lookup(&c.inbound_tuple(), hi).is_some() || self.lookup(&c.reply_tuple(), hr).is_some() {
            return Err(InsertError::Exists);
        }
        let idx = if self.free != NIL {
            let i = self.free;
            self.free = self.arena[i as usize].next;
            i
        } else if (self.high as usize) < self.arena.len() {
            self.high += 1;
            self.high - 1
        } else {
            return Err(InsertError::Full);
        };
        c.flags |= FLAG_USED;
        self.arena[idx as usize] = c;
        self.index_insert(hi, idx, Dir::Inbound);
        self.index_insert(hr, idx, Dir::Reply);
        self.len += 1;
        let at = c.expires.max(self.cursor);
        self.file(idx, at);
        Ok(idx)
    }

    fn index_insert(&mut self, h: u64, idx: u32, dir: Dir) {
        let mut i = home_of(h, self.mask);
        while self.index[i as usize] != 0 {
            i = (i + 1) & self.mask;
        }
        self.index[i as usize] = slot(sig_of(h), idx, dir);
    }

    fn index_remove(&mut self, h: u64, idx: u32, dir: Dir) {
        let want = slot(sig_of(h), idx, dir);
        let mut i = home_of(h, self.mask);
        loop {
            let s = self.index[i as usize];
            if s == 0 {
                return;
            }
            if s == want {
                break;
            }
            i = (i + 1) & self.mask;
        }
        // Backward-shift deletion: move later entries of the cluster into the hole when their home allows.
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        loop {
            let s = self.index[j as usize];
            if s == 0 {
                break;
            }
            let (other, dir) = entry_of(s);
            let c = &self.arena[other as usize];
            let t = match dir {
                Dir::Reply => c.reply_tuple(),
                Dir::Inbound => c.inbound_tuple(),
            };
            let home = home_of(t.table_hash(self.seed), self.mask);
            // The entry may move to the hole if its home is not cyclically within (hole, j].
            let dist_home = j.wrapping_sub(home) & self.mask;
            let dist_hole = j.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.index[hole as usize] = s;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.index[hole as usize] = 0;
    }

    /// Files record `idx` in the wheel slot of tick `at`.
    fn file(&mut self, idx: u32, at: u32) {
        let at = at.min(self.cursor.wrapping_add(WHEEL - 1)).max(self.cursor);
        let s = (at & (WHEEL - 1)) as usize;
        let head = self.wheel[s];
        {
            let c = &mut self.arena[idx as usize];
            c.slot_tick = at;
            c.prev = NIL;
            c.next = head;
        }
        if head != NIL {
            self.arena[head as usize].prev = idx;
        }
        self.wheel[s] = idx;
    }

    fn unfile(&mut self, idx: u32) {
        let (prev, next, tick) = {
            let c = &self.arena[idx as usize];
            (c.prev, c.next, c.slot_tick)
        };
        if prev != NIL {
            self.arena[prev as usize].next = next;
        } else {
            self.wheel[(tick & (WHEEL - 1)) as usize] = next;
        }
        if next != NIL {
            self.arena[next as usize].prev = prev;
        }
    }

    /// Sets a connection's expiry; an earlier expiry than the one it is filed for re-files it now.
    #[inline]
    pub fn set_expiry(&mut self, idx: u32, expires: u32) {
        let c = &mut self.arena[idx as usize];
        // The filed tick is at most the old expiry, or the cursor of the moment for one already due (which
        // the wheel then handles with the new expiry): only a shorter expiry needs the look at the filed
        // tick, in the second line, and a refresh leaves that line alone.
        let shorter = expires < c.expires;
        c.expires = expires;
        if shorter && expires < c.slot_tick {
            self.unfile(idx);
            self.file(idx, expires);
        }
    }

    /// Removes connection `idx`.
    pub fn remove(&mut self, idx: u32) -> Conn {
        let c = self.arena[idx as usize];
        self.unfile(idx);
        self.index_remove(self.hash(&c.inbound_tuple()), idx, Dir::Inbound);
        self.index_remove(self.hash(&c.reply_tuple()), idx, Dir::Reply);
        let r = &mut self.arena[idx as usize];
        r.flags = 0;
        r.next = self.free;
        self.free = idx;
        self.len -= 1;
        c
    }

    /// Advances the wheel to tick `now`, removing at most `budget` expired connections and handing each to
    /// `on_expire`. Returns how many were removed; call again next burst if the budget ran out.
    pub fn expire(&mut self, now: u32, budget: usize, mut on_expire: impl FnMut(&Conn)) -> usize {
        let mut removed = 0;
        // A long pause (or a jump in a replayed capture) never needs more than one lap of the wheel.
        if now.wrapping_sub(self.cursor) > WHEEL && now > self.cursor {
            let lap_start = now - WHEEL;
            self.refile_all(lap_start);
        }
        while self.cursor <= now {
            let s = (self.cursor & (WHEEL - 1)) as usize;
            let mut idx = self.wheel[s];
            while idx != NIL {
                let next = self.arena[idx as usize].next;
                let c = self.arena[idx as usize];
                if c.slot_tick == self.cursor {
                    if c.expires <= now {
                        if removed == budget {
                            return removed;
                        }
                        let gone = self.remove(idx);
                        on_expire(&gone);
                        removed += 1;
                    } else {
                        self.unfile(idx);
                        self.file(idx, c.expires);
                    }
                }
                idx = next;
            }
            if self.cursor == u32::MAX {
                break;
            }
            self.cursor += 1;
        }
        removed
    }

    /// Moves the cursor to `to`, re-filing every entry (used only after a pause longer than the wheel).
    fn refile_all(&mut self, to: u32) {
        let mut all = Vec::new();
        for s in 0..WHEEL as usize {
            let mut idx = self.wheel[s];
            while idx != NIL {
                all.push(idx);
                idx = self.arena[idx as usize].next;
            }
            self.wheel[s] = NIL;
        }
        self.cursor = to;
        for idx in all {
            let at = self.arena[idx as usize].expires;
            self.file(idx, at);
        }
    }

    /// Every connection in use (for the CLI and for syncing to a backup).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Conn)> {
        self.arena[..self.high as usize]
            .iter()
            .enumerate()
            .filter(|(_, c)| c.flags & FLAG_USED != 0)
            .map(|(i, c)| (i as u32, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::v4;
    use std::net::Ipv4Addr;

    fn conn(i: u32, expires: u32) -> Conn {
        Conn {
            cport: 1000 + (i as u16),
            vport: 80,
            lport: 2000 + (i as u16),
            bport: 8080,
            expires,
            proto: 6,
            ..Conn::addressed(
                v4(Ipv4Addr::from(0xc000_0200 + i)),
                v4(Ipv4Addr::new(203, 0, 113, 10)),
                v4(Ipv4Addr::new(198, 51, 100, 16)),
                v4(Ipv4Addr::new(198, 51, 100, 101)),
            )
        }
    }

    #[test]
    fn warming_finds_entries_pushed_along_by_collisions() {
        // 1,000 connections, two index entries each, in 4,096 slots: about a quarter pushed along.
        let mut t = ConnTable::new(1000, 7);
        let idxs: Vec<u32> = (0..1000).map(|i| t.insert(conn(i, 10)).unwrap()).collect();
        let (mut found, mut away) = (0, 0);
        for (i, &idx) in idxs.iter().enumerate() {
            let c = conn(i as u32, 10);
            for tu in [c.inbound_tuple(), c.reply_tuple()] {
                let h = t.hash(&tu);
                if t.index[home_of(h, t.mask) as usize] >> 32 != u64::from(sig_of(h)) {
                    away += 1;
                }
                match t.warm_record(h, true) {
                    Some((w, _)) => {
                        assert_eq!(w, idx, "warmed another record");
                        found += 1;
                    }
                    None => assert!(t.lookup(&tu, h).is_some()),
                }
            }
        }
        assert!(away > 100, "too few collisions to test: {away}");
        assert!(found > 1800, "warmed {found} of 2000");
        // A tuple that is not there warms nothing.
        let absent = conn(5000, 10).inbound_tuple();
        assert_eq!(t.warm_record(t.hash(&absent), true), None);
    }

    #[test]
    fn a_warmed_candidate_is_taken_only_for_its_own_tuple() {
        let mut t = ConnTable::new(1000, 7);
        let idxs: Vec<u32> = (0..1000).map(|i| t.insert(conn(i, 10)).unwrap()).collect();
        let key = |tu: &Tuple| Tuple4 {
            proto: tu.proto,
            src: crate::flow::to_v4(&tu.src).octets(),
            sport: tu.sport,
            dst: crate::flow::to_v4(&tu.dst).octets(),
            dport: tu.dport,
        };
        // Every tuple with its own candidate, with another record's, and with none: all as the probe finds.
        for (i, &idx) in idxs.iter().enumerate() {
            let c = conn(i as u32, 10);
            for (tu, dir) in [(c.inbound_tuple(), Dir::Inbound), (c.reply_tuple(), Dir::Reply)] {
                let h = t.hash(&tu);
                let other = idxs[(i + 1) % idxs.len()];
                let flipped = match dir {
                    Dir::Inbound => Dir::Reply,
                    Dir::Reply => Dir::Inbound,
                };
                for cand in [
                    t.warm_record(h, true),
                    Some((other, dir)),
                    Some((idx, flipped)),
                    None,
                ] {
                    assert_eq!(t.lookup_from(&tu, h, cand), Some((idx, dir)));
                    assert_eq!(t.lookup_v4(&key(&tu), h, cand), Some((idx, dir)));
                }
            }
        }
        // A candidate found before its record was removed: the record still holds the tuple, but is free.
        let gone = conn(3, 10).inbound_tuple();
        let h = t.hash(&gone);
        let cand = t.warm_record(h, true);
        assert_eq!(cand, Some((idxs[3], Dir::Inbound)));
        t.remove(idxs[3]);
        assert_eq!(t.lookup_from(&gone, h, cand), None);
        assert_eq!(t.lookup_v4(&key(&gone), h, cand), None);
        // Its number reused by another connection: found for the new tuple, not for the old one.
        let reused = t.insert(conn(4000, 10)).unwrap();
        assert_eq!(reused, idxs[3]);
        assert_eq!(t.lookup_from(&gone, h, cand), None);
        let new = conn(4000, 10).inbound_tuple();
        let hn = t.hash(&new);
        assert_eq!(t.lookup_from(&new, hn, cand), Some((reused, Dir::Inbound)));
        assert_eq!(t.lookup_v4(&key(&new), hn, cand), Some((reused, Dir::Inbound)));
        // An out-of-range candidate probes.
        assert_eq!(
            t.lookup_from(&new, hn, Some((u32::MAX >> 1, Dir::Inbound))),
            Some((reused, Dir::Inbound))
        );
    }

    #[test]
    fn v4_keys_find_what_their_mapped_tuples_find() {
        // Narrow records, and NAT64 ones (IPv6 client and VIP: a wide record whose reply side is IPv4).
        let mut t = ConnTable::new(1000, 7);
        let mut idxs = Vec::new();
        for i in 0..1000u32 {
            let mut c = conn(i, 10);
            if i % 2 == 1 {
                let mut client = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                client[12..].copy_from_slice(&i.to_be_bytes());
                let vip = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
                c.set_addrs(client, vip, c.lip(), c.backend());
            }
            idxs.push((t.insert(c).unwrap(), c));
        }
        let key = |tu: &Tuple| {
            (is_v4(&tu.src) && is_v4(&tu.dst)).then(|| Tuple4 {
                proto: tu.proto,
                src: crate::flow::to_v4(&tu.src).octets(),
                sport: tu.sport,
                dst: crate::flow::to_v4(&tu.dst).octets(),
                dport: tu.dport,
            })
        };
        let mut found = 0;
        for (idx, c) in &idxs {
            for (tu, dir) in [(c.inbound_tuple(), Dir::Inbound), (c.reply_tuple(), Dir::Reply)] {
                let Some(k) = key(&tu) else { continue };
                assert_eq!(t.hash_v4(&k), t.hash(&tu));
                assert_eq!(t.lookup_v4(&k, t.hash_v4(&k), None), Some((*idx, dir)));
                found += 1;
                // Any field changed: found by neither, or by both alike.
                for other in [
                    Tuple4 {
                        sport: k.sport ^ 1,
                        ..k
                    },
                    Tuple4 {
                        dport: k.dport ^ 1,
                        ..k
                    },
                    Tuple4 { proto: 17, ..k },
                    Tuple4 {
                        src: [198, 51, 100, 7],
                        ..k
                    },
                    Tuple4 {
                        dst: [203, 0, 113, 77],
                        ..k
                    },
                ] {
                    let mapped = other.tuple();
                    assert_eq!(
                        t.lookup_v4(&other, t.hash_v4(&other), None),
                        t.lookup(&mapped, t.hash(&mapped))
                    );
                }
            }
        }
        // Both sides of the 500 narrow ones, the reply side of the 500 NAT64 ones.
        assert_eq!(found, 1500);
    }

    #[test]
    fn addresses_are_kept_in_one_line_only_when_all_are_ipv4() {
        let a4 = |i: u8| v4(Ipv4Addr::new(192, 0, 2, i));
        let a6 = |i: u8| {
            let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i];
            a[12] = 0xc0;
            a
        };
        for (addrs, narrow) in [
            ([a4(1), a4(2), a4(3), a4(4)], true),
            ([a6(1), a6(2), a6(3), a6(4)], false),
            ([a6(1), a6(2), a4(3), a4(4)], false),
            ([a4(1), a4(2), a6(3), a6(4)], false),
            ([[0; 16]; 4], false),
        ] {
            let c = Conn::addressed(addrs[0], addrs[1], addrs[2], addrs[3]);
            assert_eq!(c.wide == 0, narrow, "{addrs:?}");
            assert_eq!([c.client(), c.vip(), c.lip(), c.backend()], addrs);
            // The 4-byte forms are there exactly when the record is narrow, and are the addresses' last four.
            for (i, a) in addrs.iter().enumerate() {
                assert_eq!(c.v4_addr(i), narrow.then(|| [a[12], a[13], a[14], a[15]]));
            }
            assert_eq!(c.v4_addr(4), None);
            // Rewriting the addresses switches the form both ways.
            let mut d = Conn::addressed(a6(9), a4(9), a6(8), a4(8));
            d.set_addrs(addrs[0], addrs[1], addrs[2], addrs[3]);
            assert_eq!(d, c);
        }
        assert_eq!(Conn::EMPTY.client(), [0; 16]);
    }

    #[test]
    fn a_narrow_record_matches_only_ipv4_mapped_tuples() {
        let mut t = ConnTable::new(16, 7);
        let c = conn(1, 10);
        assert_eq!(c.wide, 0);
        let idx = t.insert(c).unwrap();
        let it = c.inbound_tuple();
        assert_eq!(t.lookup(&it, t.hash(&it)), Some((idx, Dir::Inbound)));
        // Same last four bytes, not IPv4-mapped: another address.
        let mut other = it;
        other.src[10] = 0;
        assert!(!c.matches(Dir::Inbound, &other));
        other = it;
        other.dst[0] = 0x20;
        assert!(!c.matches(Dir::Inbound, &other));
        let rt = c.reply_tuple();
        assert!(c.matches(Dir::Reply, &rt));
        assert!(!c.matches(Dir::Inbound, &rt));
    }

    #[test]
    fn both_tuples_find_the_same_entry() {
        let mut t = ConnTable::new(16, 7);
        let c = conn(1, 10);
        let idx = t.insert(c).unwrap();
        let it = c.inbound_tuple();
        let rt = c.reply_tuple();
        assert_eq!(t.lookup(&it, t.hash(&it)), Some((idx, Dir::Inbound)));
        assert_eq!(t.lookup(&rt, t.hash(&rt)), Some((idx, Dir::Reply)));
        assert_eq!(t.lookup(&it.reversed(), t.hash(&it.reversed())), None);
        assert_eq!(t.insert(c), Err(InsertError::Exists));
    }

    #[test]
    fn full_table_refuses_new_entries_and_keeps_old_ones() {
        let mut t = ConnTable::new(4, 7);
        for i in 0..4 {
            t.insert(conn(i, 100)).unwrap();
        }
        assert_eq!(t.insert(conn(9, 100)), Err(InsertError::Full));
        for i in 0..4 {
            let tu = conn(i, 100).inbound_tuple();
            assert!(t.lookup(&tu, t.hash(&tu)).is_some());
        }
    }

    #[test]
    fn expiry_removes_only_due_entries_within_budget() {
        let mut t = ConnTable::new(100, 7);
        for i in 0..50 {
            t.insert(conn(i, 10 + (i % 5))).unwrap();
        }
        assert_eq!(t.expire(9, 1000, |_| {}), 0);
        assert_eq!(t.expire(10, 1000, |_| {}), 10);
        assert_eq!(t.expire(12, 5, |_| {}), 5);
        assert_eq!(t.expire(12, 1000, |_| {}), 15);
        assert_eq!(t.len(), 20);
        assert_eq!(t.expire(100, 1000, |_| {}), 20);
        assert!(t.is_empty());
    }

    #[test]
    fn refreshed_entries_live_on_and_earlier_expiry_refiles() {
        let mut t = ConnTable::new(10, 7);
        let a = t.insert(conn(1, 10)).unwrap();
        let b = t.insert(conn(2, 1000)).unwrap();
        t.set_expiry(a, 20);
        t.set_expiry(b, 15);
        assert_eq!(t.expire(14, 100, |_| {}), 0);
        let mut gone = Vec::new();
        assert_eq!(t.expire(16, 100, |c| gone.push(c.cport)), 1);
        assert_eq!(gone, [1002]);
        assert_eq!(t.expire(20, 100, |_| {}), 1);
    }

    #[test]
    fn timeouts_longer_than_the_wheel_are_refiled() {
        let mut t = ConnTable::new(10, 7);
        t.insert(conn(1, WHEEL * 3)).unwrap();
        assert_eq!(t.expire(WHEEL * 2, 10, |_| {}), 0);
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(WHEEL * 3, 10, |_| {}), 1);
    }

    #[test]
    fn removal_keeps_every_other_entry_reachable() {
        let mut t = ConnTable::new(2000, 3);
        let mut ids = Vec::new();
        for i in 0..2000 {
            ids.push(t.insert(conn(i, 50)).unwrap());
        }
        for i in (0..2000).step_by(3) {
            t.remove(ids[i as usize]);
        }
        for i in 0..2000u32 {
            let c = conn(i, 50);
            let (it, rt) = (c.inbound_tuple(), c.reply_tuple());
            let found = t.lookup(&it, t.hash(&it)).is_some() && t.lookup(&rt, t.hash(&rt)).is_some();
            assert_eq!(found, i % 3 != 0, "entry {i}");
        }
        // Freed records are reused.
        for i in 5000..5600 {
            t.insert(conn(i, 60)).unwrap();
        }
        assert_eq!(t.len(), 2000 - 667 + 600);
    }

    #[test]
    fn records_are_small() {
        assert!(size_of::<Conn>() <= 128, "{}", size_of::<Conn>());
        let t = ConnTable::new(1 << 20, 1);
        assert!(t.bytes_per_connection() <= 160, "{}", t.bytes_per_connection());
    }
}
