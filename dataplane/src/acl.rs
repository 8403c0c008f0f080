//! Client prefix lists: longest-prefix match over thousands of IPv4 and IPv6 prefixes.
//!
//! Per family, one hash set of masked addresses per prefix length that occurs in the list; a lookup masks the
//! address at each of those lengths, longest first, until one is present. The work is bounded by the number
//! of distinct lengths (at most 33 for IPv4, 129 for IPv6; a handful in practice), not by the number of
//! prefixes, and building a list from the topology is one pass.

use crate::flow::{is_v4, Addr, FastMap};

/// The prefixes of one family, by length, longest first.
type ByLen = Vec<(u8, FastMap<u128, ()>)>;

/// A list of prefixes of either family.
#[derive(Debug, Clone, Default)]
pub struct PrefixList {
    v4: ByLen,
    v6: ByLen,
    len: usize,
}

/// The mask of the first `len` bits of a `width`-bit address, as a 128-bit number.
fn mask(len: u8, width: u8) -> u128 {
    let keep = u32::from(len.min(width));
    if keep == 0 {
        return 0;
    }
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    // 0 to 127: `keep` is at least 1.
    let low = u32::from(width) - keep;
    all & !((1u128 << low) - 1)
}

/// `a` as a number of its family's width: the IPv4 address itself (32 bits), or the IPv6 one (128).
fn value(a: &Addr) -> (u128, u8, bool) {
    if is_v4(a) {
        (
            u128::from(u32::from_be_bytes([a[12], a[13], a[14], a[15]])),
            32,
            true,
        )
    } else {
        (u128::from_be_bytes(*a), 128, false)
    }
}

impl PrefixList {
    /// A list of `(address, prefix length)`, lengths counted in the address's own family.
    pub fn new<'a>(prefixes: impl IntoIterator<Item = (&'a Addr, u8)>) -> PrefixList {
        let mut l = PrefixList::default();
        for (a, len) in prefixes {
            let (v, width, v4) = value(a);
            let len = len.min(width);
            let table = if v4 { &mut l.v4 } else { &mut l.v6 };
            let i = match table.iter().position(|(x, _)| *x == len) {
                Some(i) => i,
                None => {
                    table.push((len, FastMap::default()));
                    table.len() - 1
                }
            };
            if table[i].1.insert(v & mask(len, width), ()).is_none() {
                l.len += 1;
            }
        }
        l.v4.sort_by_key(|e| std::cmp::Reverse(e.0));
        l.v6.sort_by_key(|e| std::cmp::Reverse(e.0));
        l
    }

    /// Prefixes in the list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The length of the longest prefix of the list covering `a`, in `a`'s family.
    pub fn longest(&self, a: &Addr) -> Option<u8> {
        let (v, width, v4) = value(a);
        let table = if v4 { &self.v4 } else { &self.v6 };
        table
            .iter()
            .find(|(len, set)| set.contains_key(&(v & mask(*len, width))))
            .map(|(len, _)| *len)
    }

    /// Whether a prefix of the list covers `a`.
    pub fn contains(&self, a: &Addr) -> bool {
        self.longest(a).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::v4;

    fn six(s: &str) -> Addr {
        s.parse::<std::net::Ipv6Addr>()
            .map(|a| a.octets())
            .unwrap_or([0; 16])
    }

    #[test]
    fn the_longest_covering_prefix_wins() {
        let a = v4([192, 0, 2, 0].into());
        let b = v4([192, 0, 2, 128].into());
        let c = six("2001:db8::");
        let l = PrefixList::new([(&a, 24), (&b, 25), (&c, 32), (&a, 24)]);
        assert_eq!(l.len(), 3, "a prefix listed twice counts once");
        assert_eq!(l.longest(&v4([192, 0, 2, 200].into())), Some(25));
        assert_eq!(l.longest(&v4([192, 0, 2, 7].into())), Some(24));
        assert_eq!(l.longest(&v4([198, 51, 100, 1].into())), None);
        assert!(l.contains(&six("2001:db8:1::5")));
        assert!(!l.contains(&six("2001:db9::5")));
    }

    #[test]
    fn families_do_not_mix_and_zero_length_covers_its_family() {
        let any4 = v4([0, 0, 0, 0].into());
        let l = PrefixList::new([(&any4, 0)]);
        assert!(l.contains(&v4([203, 0, 113, 9].into())));
        assert!(!l.contains(&six("2001:db8::1")));
        let any6 = six("::");
        let l = PrefixList::new([(&any6, 0)]);
        assert!(l.contains(&six("2001:db8::1")));
        assert!(!l.contains(&v4([203, 0, 113, 9].into())));
        assert_eq!(mask(24, 32), 0xffff_ff00);
        assert_eq!(mask(128, 128), u128::MAX);
    }

    #[test]
    fn ten_thousand_prefixes_are_found() {
        let addrs: Vec<Addr> = (0..10_000u32)
            .map(|i| v4((0x0a00_0000 | (i << 8)).into()))
            .collect();
        let l = PrefixList::new(addrs.iter().map(|a| (a, 24)));
        assert_eq!(l.len(), 10_000);
        assert!((0..10_000u32).all(|i| l.contains(&v4((0x0a00_0000 | (i << 8) | 7).into()))));
        assert!(!l.contains(&v4(0x0b00_0001.into())));
    }
}
