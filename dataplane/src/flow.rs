//! Flow tuples and the hash the connection table and ECMP use.
//!
//! Addresses are kept as 16 bytes (IPv4 as IPv4-mapped IPv6, `::ffff:a.b.c.d`), so one tuple type serves
//! IPv4, IPv6 and NAT64 flows. The hash is a fixed, seeded multiply-xorshift: fast, and the same on every node.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A 16-byte address: IPv6, or IPv4 mapped into IPv6.
pub type Addr = [u8; 16];

/// Maps an IPv4 address into 16 bytes.
#[inline]
pub fn v4(a: Ipv4Addr) -> Addr {
    a.to_ipv6_mapped().octets()
}

/// Maps any IP address into 16 bytes.
#[inline]
pub fn addr(a: IpAddr) -> Addr {
    match a {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Whether a 16-byte address is an IPv4-mapped one.
#[inline]
pub fn is_v4(a: &Addr) -> bool {
    u128::from_be_bytes(*a) >> 32 == 0xffff
}

/// The IPv4 address inside a mapped one.
#[inline]
pub fn to_v4(a: &Addr) -> Ipv4Addr {
    Ipv4Addr::new(a[12], a[13], a[14], a[15])
}

/// The address as an `IpAddr`.
pub fn to_ip(a: &Addr) -> IpAddr {
    if is_v4(a) {
        IpAddr::V4(to_v4(a))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

/// A transport flow as seen on the wire: protocol, source and destination address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Source address.
    pub src: Addr,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: Addr,
    /// Destination port.
    pub dport: u16,
}

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xbf58_476d_1ce4_e5b9;
const K2: u64 = 0x94d0_49bb_1331_11eb;

#[inline]
fn mix(a: u64, b: u64) -> u64 {
    let m = u128::from(a ^ K1).wrapping_mul(u128::from(b ^ K2));
    (m as u64) ^ ((m >> 64) as u64)
}

#[inline]
fn word(a: &Addr, i: usize) -> u64 {
    u64::from_le_bytes([
        a[i],
        a[i + 1],
        a[i + 2],
        a[i + 3],
        a[i + 4],
        a[i + 5],
        a[i + 6],
        a[i + 7],
    ])
}

impl Tuple {
    /// Seeded 64-bit hash of the tuple: Maglev's choice of backend and ECMP's of next hop, the same on every
    /// node (see [`table_hash`](Self::table_hash) for the connection table's).
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        let ports = (u64::from(self.sport) << 32) | (u64::from(self.dport) << 16) | u64::from(self.proto);
        let a = mix(word(&self.src, 0) ^ seed, word(&self.src, 8) ^ K0);
        let b = mix(
            word(&self.dst, 0) ^ ports,
            word(&self.dst, 8) ^ seed.rotate_left(32),
        );
        mix(a, b ^ ports.rotate_left(17))
    }

    /// Seeded 64-bit hash of the tuple for the connection table: two rounds of the multiply-and-fold mixer
    /// where [`hash`](Self::hash) takes three. The source address is mixed under the seed first and the
    /// result folded into the second round with the ports and destination, so a sender who picks its
    /// addresses and ports still cannot pick their hashes. Only the table uses it, and only within the node;
    /// `hash`, which also picks Maglev backends and ECMP next hops, must agree across nodes and versions and
    /// stays as it is.
    #[inline]
    pub fn table_hash(&self, seed: u64) -> u64 {
        let ports = (u64::from(self.sport) << 32) | (u64::from(self.dport) << 16) | u64::from(self.proto);
        let a = mix(word(&self.src, 0) ^ seed, word(&self.src, 8) ^ K0);
        mix(
            a ^ word(&self.dst, 0) ^ ports,
            word(&self.dst, 8) ^ seed.rotate_left(32),
        )
    }

    /// The tuple of the opposite direction.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// A flow of plain IPv4 (no options) as read straight from a frame, addresses as their four bytes: the
/// established fast path's key, which spares it the 16-byte addresses of a [`Tuple`]. Its hash is that of the
/// same flow as a `Tuple` (addresses mapped), so both find the same connection-table entries.
///
/// Aligned to 8 bytes, which makes it 16 bytes long: at its natural 14 the compiler copied it as two
/// overlapping 8-byte moves, and reading such a copy back from the stack waited for both stores, every
/// frame (a sampling profile put 12% of the worker's time on the instruction after that load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(align(8))]
pub struct Tuple4 {
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Source address.
    pub src: [u8; 4],
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: [u8; 4],
    /// Destination port.
    pub dport: u16,
}

impl Tuple4 {
    /// [`Tuple::table_hash`] of the mapped tuple, without mapping it: a mapped address's first eight bytes are
    /// zero and its last eight are `00 00 ff ff` and the four.
    #[inline]
    pub fn table_hash(&self, seed: u64) -> u64 {
        let low_half = |a: [u8; 4]| 0xffff_0000 | u64::from(u32::from_le_bytes(a)) << 32;
        let ports = (u64::from(self.sport) << 32) | (u64::from(self.dport) << 16) | u64::from(self.proto);
        let a = mix(seed, low_half(self.src) ^ K0);
        mix(a ^ ports, low_half(self.dst) ^ seed.rotate_left(32))
    }

    /// The same flow with mapped addresses.
    pub fn tuple(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: v4(Ipv4Addr::from(self.src)),
            sport: self.sport,
            dst: v4(Ipv4Addr::from(self.dst)),
            dport: self.dport,
        }
    }
}

/// Seeded hash of one address (source hashing, Maglev keys, ECMP on addresses only).
#[inline]
pub fn hash_addr(a: &Addr, seed: u64) -> u64 {
    mix(word(a, 0) ^ seed, word(a, 8) ^ K0)
}

/// Seeded hash of bytes (Maglev backend keys).
pub fn hash_bytes(data: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ K0 ^ (data.len() as u64);
    for chunk in data.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(w));
    }
    h
}

/// A fast, non-cryptographic hasher for the dataplane's maps keyed by addresses and ports. The maps it
/// serves are built from configuration or bounded in size, so hash flooding cannot grow them.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K0);
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let x = self.0 ^ (self.0 >> 29);
        x.wrapping_mul(K1) ^ (x >> 32)
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// An exact-match table of addresses for the per-packet "is this address ours, and what is it?" question:
/// open addressing over a power-of-two array at most half full, one multiply to hash, 16-byte keys compared
/// as one integer. Built once per snapshot from the configuration, never grown.
#[derive(Debug, Clone)]
pub struct AddrTable<V: Copy> {
    slots: Vec<Option<(u128, V)>>,
    shift: u32,
}

impl<V: Copy> AddrTable<V> {
    /// A table holding `entries` (a later duplicate key replaces an earlier one).
    pub fn new(entries: impl IntoIterator<Item = (Addr, V)>) -> AddrTable<V> {
        let entries: Vec<(Addr, V)> = entries.into_iter().collect();
        let cap = (entries.len() * 2).next_power_of_two().max(16);
        let mut t = AddrTable {
            slots: vec![None; cap],
            shift: 64 - cap.trailing_zeros(),
        };
        for (a, v) in entries {
            let k = u128::from_ne_bytes(a);
            let mut i = t.home(k);
            loop {
                match &mut t.slots[i] {
                    Some((key, val)) if *key == k => {
                        *val = v;
                        break;
                    }
                    Some(_) => i = (i + 1) & (cap - 1),
                    empty => {
                        *empty = Some((k, v));
                        break;
                    }
                }
            }
        }
        t
    }

    #[inline(always)]
    fn home(&self, k: u128) -> usize {
        let x = (k as u64) ^ ((k >> 64) as u64).rotate_left(29);
        (x.wrapping_mul(K0) >> self.shift) as usize
    }

    /// Every (address, value), in table order.
    pub fn iter(&self) -> impl Iterator<Item = (Addr, V)> + '_ {
        self.slots.iter().flatten().map(|&(k, v)| (k.to_ne_bytes(), v))
    }

    /// The value stored for `a`.
    #[inline]
    pub fn get(&self, a: &Addr) -> Option<V> {
        let k = u128::from_ne_bytes(*a);
        let mask = self.slots.len() - 1;
        let mut i = self.home(k);
        loop {
            match self.slots.get(i)? {
                Some((key, v)) if *key == k => return Some(*v),
                Some(_) => i = (i + 1) & mask,
                None => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_round_trip() {
        let a = v4(Ipv4Addr::new(192, 0, 2, 1));
        assert!(is_v4(&a));
        assert_eq!(to_v4(&a), Ipv4Addr::new(192, 0, 2, 1));
        let b = addr("2001:db8::1".parse().unwrap());
        assert!(!is_v4(&b));
        assert_eq!(to_ip(&b), "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hash_depends_on_every_field_and_seed() {
        let t = Tuple {
            proto: 6,
            src: v4(Ipv4Addr::new(192, 0, 2, 1)),
            sport: 1000,
            dst: v4(Ipv4Addr::new(203, 0, 113, 10)),
            dport: 80,
        };
        let (mut src, mut dst) = (t, t);
        src.src[15] ^= 1;
        dst.dst[15] ^= 1;
        for hash in [Tuple::hash, Tuple::table_hash] {
            let h = hash(&t, 1);
            assert_ne!(h, hash(&t, 2));
            assert_ne!(h, hash(&Tuple { sport: 1001, ..t }, 1));
            assert_ne!(h, hash(&Tuple { dport: 81, ..t }, 1));
            assert_ne!(h, hash(&Tuple { proto: 17, ..t }, 1));
            assert_ne!(h, hash(&t.reversed(), 1));
            assert_ne!(h, hash(&src, 1));
            assert_ne!(h, hash(&dst, 1));
            assert_eq!(h, hash(&t, 1));
        }
    }

    proptest::proptest! {
        #[test]
        fn a_v4_key_hashes_as_its_mapped_tuple(
            proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seed: u64,
        ) {
            let k = Tuple4 { proto, src, sport, dst, dport };
            let t = k.tuple();
            proptest::prop_assert!(is_v4(&t.src) && is_v4(&t.dst));
            proptest::prop_assert_eq!(to_v4(&t.src).octets(), src);
            proptest::prop_assert_eq!(k.table_hash(seed), t.table_hash(seed));
        }
    }

    #[test]
    fn addr_table_finds_every_entry_and_nothing_else() {
        let addrs: Vec<Addr> = (0..300u32)
            .map(|i| {
                let mut a = [0u8; 16];
                if i % 2 == 0 {
                    a[10] = 0xff;
                    a[11] = 0xff;
                    a[12..].copy_from_slice(&(0xc000_0200u32 + i).to_be_bytes());
                } else {
                    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                    a[12..].copy_from_slice(&i.to_be_bytes());
                }
                a
            })
            .collect();
        let t = AddrTable::new(addrs.iter().enumerate().map(|(i, a)| (*a, i)));
        for (i, a) in addrs.iter().enumerate() {
            assert_eq!(t.get(a), Some(i));
        }
        let mut other = addrs[0];
        other[12..].copy_from_slice(&[198, 51, 100, 1]);
        assert_eq!(t.get(&other), None);
        assert_eq!(t.get(&[0; 16]), None);
        // A later duplicate replaces the earlier value; an empty table answers nothing.
        let t = AddrTable::new([(addrs[1], 1), (addrs[1], 2)]);
        assert_eq!(t.get(&addrs[1]), Some(2));
        assert_eq!(AddrTable::<u8>::new([]).get(&addrs[1]), None);
    }
}
