//! The Internet checksum (RFC 1071): one's-complement sums over bytes, pseudo-headers for TCP/UDP/ICMPv6, and
//! incremental updates (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')) for rewriting addresses and ports without
//! summing the payload again.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte padded with zero), folded to
/// 16 bits so that callers can add several sums without overflow.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // 32-bit words summed in 64 bits: 2^16 = 1 (mod 0xffff), so folding gives the 16-bit one's-complement sum.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let r = chunks.remainder();
    let mut last = [0u8; 4];
    last[..r.len()].copy_from_slice(r);
    acc += u64::from(u32::from_be_bytes(last));
    u32::from(fold64(acc))
}

/// Whether a 20-byte IPv4 header (no options) has a valid checksum: five 32-bit words summed, folded.
///
/// The words are read in the machine's byte order: a one's-complement sum of byte-swapped words is the
/// byte-swapped sum (RFC 1071, 2(B)), and the only value it is compared with, 0xffff, reads the same either way.
/// This spares the five byte swaps of a big-endian reading.
#[inline(always)]
pub fn ipv4_header_ok(h: &[u8; 20]) -> bool {
    let word = |i: usize| u64::from(ne32(h, i));
    fold64(word(0) + word(4) + word(8) + word(12) + word(16)) == 0xffff
}

/// The 32-bit word at `i` in the machine's byte order (for sums that are byte-order independent).
#[inline(always)]
pub fn ne32(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Folds a 64-bit sum of 16- or 32-bit words to 16 bits (without complementing): 2^16 = 1 (mod 0xffff), so
/// a 32-bit word counts as its two halves. Each step adds the two halves with the carry brought round (an
/// add and an add-with-carry): the 32-bit halves' sum is at most 2^33 - 2, so its low half plus the carry
/// cannot carry again, and the same holds for the 16-bit step. Zero only for zero.
#[inline(always)]
pub fn fold64(acc: u64) -> u16 {
    let (s, c) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let x = s + u32::from(c);
    let (s, c) = (x as u16).overflowing_add((x >> 16) as u16);
    s + u16::from(c)
}

/// Folds a sum to 16 bits (without complementing). Two folds always suffice for 32 bits: the first leaves
/// at most 0x1fffe, the second at most 0xffff.
#[inline(always)]
pub fn fold(acc: u32) -> u16 {
    let acc = (acc & 0xffff) + (acc >> 16);
    ((acc & 0xffff) + (acc >> 16)) as u16
}

/// The checksum field value for data whose sum is `acc`.
pub fn finish(acc: u32) -> u16 {
    !fold(acc)
}

/// Sum of the IPv4 pseudo-header (RFC 793 §3.1).
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + u32::from(proto) + u32::from(len)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1).
pub fn pseudo_v6(src: &Ipv6Addr, dst: &Ipv6Addr, proto: u8, len: u32) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + u32::from(proto) + (len >> 16) + (len & 0xffff)
}

/// RFC 1624 incremental update of checksum field `hc` when the bytes `old` become `new` (equal, even
/// lengths, 16-bit aligned in the summed data).
pub fn update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u32::from(!hc);
    acc += u32::from(!fold(sum(old)));
    acc += sum(new);
    !fold(acc)
}

/// Incremental update for one 16-bit word.
pub fn update_u16(hc: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!hc) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// Adjusts checksum `hc` for a change of the summed data from sum `old_sum` to `new_sum` (both unfolded).
pub fn update_sums(hc: u16, old_sum: u32, new_sum: u32) -> u16 {
    let acc = u32::from(!hc) + u32::from(!fold(old_sum)) + new_sum;
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_check_agrees_with_the_general_sum() {
        let mut h = [
            0x45, 0, 0, 0x3c, 0x1c, 0x46, 0x40, 0, 0x40, 0x06, 0, 0, 0xac, 0x10, 0x0a, 0x63, 0xac, 0x10,
            0x0a, 0x0c,
        ];
        let c = finish(sum(&h));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(ipv4_header_ok(&h));
        for i in 0..20 {
            let mut bad = h;
            bad[i] ^= 0x01;
            assert!(!ipv4_header_ok(&bad), "byte {i}");
        }
        let all = [0xff; 20];
        assert_eq!(ipv4_header_ok(&all), fold(sum(&all)) == 0xffff);
    }

    /// Folding one 16-bit carry at a time, for comparison.
    fn slow_fold(mut a: u64) -> u16 {
        while a > 0xffff {
            a = (a & 0xffff) + (a >> 16);
        }
        a as u16
    }

    #[test]
    fn folding_matches_the_loop_for_edge_values() {
        for a in [
            0,
            1,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0x1_ffff,
            0xfffe_ffff,
            0xffff_0000,
            0xffff_fffe,
            u32::MAX,
        ] {
            assert_eq!(fold(a), slow_fold(a.into()), "{a:#x}");
        }
        for a in [
            0x1_ffff_fffe,
            0x2_fffd,
            0x1_0001,
            0xffff_ffff_0000_0000,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(fold64(a), slow_fold(a), "{a:#x}");
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(fold(x as u32), slow_fold(x & 0xffff_ffff), "{x:#x}");
            assert_eq!(fold64(x), slow_fold(x), "{x:#x}");
            // Sums of a few 32-bit words, as the rewrites make them.
            let small = x >> 29;
            assert_eq!(fold64(small), slow_fold(small), "{small:#x}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(
            fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[0xff, 0xff, 0xff, 0xff, 0x00, 0x01]), 0x0001);
    }

    #[test]
    fn word_sum_matches_a_plain_16_bit_sum() {
        let data: Vec<u8> = (0..1500u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in [0, 1, 2, 3, 5, 20, 40, 64, 1499, 1500] {
            let mut plain: u64 = 0;
            for c in data[..len].chunks(2) {
                plain += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            while plain > 0xffff {
                plain = (plain & 0xffff) + (plain >> 16);
            }
            assert_eq!(u64::from(fold(sum(&data[..len]))), plain, "len {len}");
        }
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        let mut data = [
            0x45u8, 0, 0, 40, 0x12, 0x34, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, 203, 0, 113, 10,
        ];
        let c = finish(sum(&data));
        let new_dst = [198, 51, 100, 7];
        let updated = update(c, &data[16..20], &new_dst);
        data[16..20].copy_from_slice(&new_dst);
        assert_eq!(updated, finish(sum(&data)));
        assert_eq!(update_u16(c, 0x1234, 0x1234), c);
    }
}
