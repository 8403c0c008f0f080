//! SYN cookies: the SYN-proxy's sequence number, which carries the client's handshake options and a keyed
//! check of the flow, so that the node keeps no state for a SYN and opens a connection only for an ACK that
//! returns a cookie it (or any node with the same key) minted within the last two time slots.
//!
//! ```text
//!  31    29 28  26 25  24      21 20                                  0
//! +--------+------+---+----------+-------------------------------------+
//! |  slot  | mss  | S |  wscale  |  MAC (21 bits)                      |
//! +--------+------+---+----------+-------------------------------------+
//! slot:   low 3 bits of the 64-second time slot the cookie was minted in
//! mss:    index into MSS_TABLE (the largest entry not above the client's MSS)
//! S:      the client offered SACK-permitted
//! wscale: the client's window scale, 15 when it offered none
//! MAC:    SipHash-2-4 (cluster key) of the full slot, the client and VIP addresses and ports, the client's
//!         initial sequence number and the 11 bits above, truncated
//! ```
//!
//! The MAC covers the option bits, so a forged ACK cannot change them; a guess passes with probability
//! 2⁻²¹ per ACK, about Linux's own margin. The slot is wall-clock time, the same on every node.

use std::hash::Hasher;

use siphasher::sip::SipHasher24;

use crate::flow::Addr;

/// Seconds a time slot lasts; a cookie is accepted in its slot and the next one (64 to 128 s).
pub const SLOT_SECS: u64 = 64;

/// The MSS values a cookie can carry.
pub const MSS_TABLE: [u16; 8] = [536, 1200, 1360, 1400, 1440, 1452, 1460, 8960];

/// Wscale bits meaning "none offered".
const NO_WSCALE: u32 = 15;
const MAC_BITS: u32 = 21;
const MAC_MASK: u32 = (1 << MAC_BITS) - 1;

/// The key every node mints and checks cookies with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    /// The key derived from a shared secret of any length (SHA-256, split in two).
    pub fn new(secret: &[u8]) -> CookieKey {
        let d = ring::digest::digest(&ring::digest::SHA256, secret);
        let b = d.as_ref();
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        CookieKey {
            k0: word(0),
            k1: word(8),
        }
    }
}

/// The handshake options of a client's SYN that its cookie keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynOptions {
    /// Maximum segment size (536 when the client sent none, RFC 9293 §3.7.1).
    pub mss: u16,
    /// Window scale, when offered.
    pub wscale: Option<u8>,
    /// SACK-permitted was offered.
    pub sack: bool,
}

/// The flow a cookie is bound to: client and VIP, addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Client address.
    pub client: Addr,
    /// Client port.
    pub cport: u16,
    /// VIP.
    pub vip: Addr,
    /// VIP port.
    pub vport: u16,
}

/// The time slot of a wall-clock time in milliseconds since the Unix epoch.
pub fn slot_of(unix_ms: u64) -> u64 {
    unix_ms / 1000 / SLOT_SECS
}

/// The cookie for a SYN of `flow` with initial sequence number `isn` and options `o`, in slot `slot`. An MSS
/// is rounded down to the table (an MSS below its first entry becomes that entry, as Linux does).
pub fn mint(key: &CookieKey, slot: u64, flow: &Flow, isn: u32, o: SynOptions) -> u32 {
    let mss = MSS_TABLE.iter().rposition(|&m| m <= o.mss).unwrap_or(0) as u32;
    let ws = o.wscale.map_or(NO_WSCALE, |w| u32::from(w.min(14)));
    let high = ((slot as u32 & 7) << 29) | (mss << 26) | (u32::from(o.sack) << 25) | (ws << 21);
    high | (mac(key, slot, flow, isn, high) & MAC_MASK)
}

/// The options of a cookie `cookie` returned for `flow` whose SYN had initial sequence number `isn`, if it is
/// genuine and was minted in slot `now_slot` or the one before.
pub fn check(key: &CookieKey, now_slot: u64, flow: &Flow, isn: u32, cookie: u32) -> Option<SynOptions> {
    let bits = u64::from(cookie >> 29);
    // The newest slot with these low bits that is not after now: now, or the one before.
    let back = (now_slot.wrapping_sub(bits)) & 7;
    if back > 1 {
        return None;
    }
    let slot = now_slot.checked_sub(back)?;
    let high = cookie & !MAC_MASK;
    if mac(key, slot, flow, isn, high) & MAC_MASK != cookie & MAC_MASK {
        return None;
    }
    let ws = (cookie >> 21) & 0xf;
    Some(SynOptions {
        mss: MSS_TABLE[((cookie >> 26) & 7) as usize],
        wscale: (ws != NO_WSCALE).then_some(ws as u8),
        sack: cookie & (1 << 25) != 0,
    })
}

fn mac(key: &CookieKey, slot: u64, flow: &Flow, isn: u32, high: u32) -> u32 {
    let mut h = SipHasher24::new_with_keys(key.k0, key.k1);
    let mut m = [0u8; 48];
    m[..16].copy_from_slice(&flow.client);
    m[16..32].copy_from_slice(&flow.vip);
    m[32..34].copy_from_slice(&flow.cport.to_be_bytes());
    m[34..36].copy_from_slice(&flow.vport.to_be_bytes());
    m[36..40].copy_from_slice(&isn.to_be_bytes());
    m[40..44].copy_from_slice(&high.to_be_bytes());
    m[44..48].copy_from_slice(&(slot as u32).to_be_bytes());
    h.write(&m);
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::v4;

    fn flow() -> Flow {
        Flow {
            client: v4([198, 51, 100, 7].into()),
            cport: 40000,
            vip: v4([203, 0, 113, 10].into()),
            vport: 80,
        }
    }

    const OPTS: SynOptions = SynOptions {
        mss: 1460,
        wscale: Some(7),
        sack: true,
    };

    #[test]
    fn a_cookie_returns_the_options_it_was_minted_with() {
        let k = CookieKey::new(b"secret of the cluster");
        let c = mint(&k, 1000, &flow(), 12345, OPTS);
        assert_eq!(check(&k, 1000, &flow(), 12345, c), Some(OPTS));
        let none = SynOptions {
            mss: 1300,
            wscale: None,
            sack: false,
        };
        let c = mint(&k, 1000, &flow(), 12345, none);
        assert_eq!(
            check(&k, 1000, &flow(), 12345, c),
            Some(SynOptions { mss: 1200, ..none }),
            "the MSS rounds down to the table"
        );
        let jumbo = mint(&k, 1000, &flow(), 1, SynOptions { mss: 9000, ..OPTS });
        assert_eq!(check(&k, 1000, &flow(), 1, jumbo).map(|o| o.mss), Some(8960));
        let tiny = mint(&k, 1000, &flow(), 1, SynOptions { mss: 100, ..OPTS });
        assert_eq!(check(&k, 1000, &flow(), 1, tiny).map(|o| o.mss), Some(536));
    }

    #[test]
    fn a_cookie_lives_its_slot_and_the_next() {
        let k = CookieKey::new(b"secret of the cluster");
        let c = mint(&k, 1000, &flow(), 7, OPTS);
        assert!(check(&k, 1001, &flow(), 7, c).is_some());
        assert!(check(&k, 1002, &flow(), 7, c).is_none());
        assert!(
            check(&k, 1008, &flow(), 7, c).is_none(),
            "slot bits wrap: the MAC still refuses"
        );
        assert!(check(&k, 999, &flow(), 7, c).is_none(), "not from the future");
    }

    #[test]
    fn another_flow_isn_or_key_is_refused() {
        let k = CookieKey::new(b"secret of the cluster");
        let c = mint(&k, 5, &flow(), 7, OPTS);
        assert!(check(&k, 5, &flow(), 8, c).is_none());
        assert!(check(
            &k,
            5,
            &Flow {
                cport: 40001,
                ..flow()
            },
            7,
            c
        )
        .is_none());
        assert!(check(&CookieKey::new(b"another secret"), 5, &flow(), 7, c).is_none());
        // A changed option bit is caught by the MAC.
        assert!(check(&k, 5, &flow(), 7, c ^ (1 << 25)).is_none());
        assert_eq!(
            CookieKey::new(b"secret of the cluster"),
            k,
            "the same secret gives every node the same key"
        );
    }

    #[test]
    fn forged_cookies_pass_at_about_one_in_two_million() {
        let k = CookieKey::new(b"secret of the cluster");
        let passed = (0..1_000_000u32)
            .filter(|&i| check(&k, 5, &flow(), 7, i.wrapping_mul(2_654_435_761)).is_some())
            .count();
        assert!(passed <= 5, "{passed} of a million random cookies passed");
    }
}
