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
    a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff
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
    /// Seeded 64-bit hash of the tuple.
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
        let h = t.hash(1);
        assert_ne!(h, t.hash(2));
        assert_ne!(h, Tuple { sport: 1001, ..t }.hash(1));
        assert_ne!(h, Tuple { dport: 81, ..t }.hash(1));
        assert_ne!(h, Tuple { proto: 17, ..t }.hash(1));
        assert_ne!(h, t.reversed().hash(1));
        assert_eq!(h, t.hash(1));
    }
}
