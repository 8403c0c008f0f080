//! Scalar value types of the topology that TOML has no native form for: durations ("250ms", "1m30s"), port
//! ranges ("1024-65535"), MAC addresses, BGP communities ("65010:100", "graceful-shutdown") and large
//! communities ("65010:1:2"), and a service port that may be "all".
//!
//! Every type parses from and prints back to the same string, so a printed topology loads back unchanged.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements `Serialize` as `Display` and `Deserialize` through `FromStr` for a string-shaped type.
macro_rules! string_serde {
    ($ty:ty, $expecting:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse()
                            .map_err(|e: ParseError| E::custom(format!("{e}; expected {}", $expecting)))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// Why a scalar string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// A length of time written as one or more `<number><unit>` parts: "250ms", "1s", "1m30s", "2h".
/// Units: ns, us, ms, s, m, h, d.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// A duration of whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    /// A duration of whole milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// The standard library value.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds, saturating.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

/// Nanoseconds per unit, longest suffix first so "ms" wins over "m" and "s".
const UNITS: [(&str, u128); 7] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

impl FromStr for Duration {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError(format!("invalid duration {s:?}"));
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            let (_, mult) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
            total = total
                .checked_add(n.checked_mul(*mult).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            rest = &rest[unit_len..];
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
        // The remainder of a division by 1e9 always fits in u32.
        let nanos = (total % 1_000_000_000) as u32;
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut n = self.0.as_nanos();
        if n == 0 {
            return f.write_str("0s");
        }
        // Print exact parts from the largest unit down, skipping those that would need fractions of "s" and
        // above when a smaller unit divides evenly ("1500ms" rather than "1s500ms").
        if n % 1_000_000_000 != 0 {
            for (unit, mult) in [("ms", 1_000_000u128), ("us", 1_000), ("ns", 1)] {
                if n % mult == 0 {
                    return write!(f, "{}{unit}", n / mult);
                }
            }
        }
        for (unit, mult) in UNITS.iter().rev() {
            if *mult >= 1_000_000_000 && n >= *mult {
                write!(f, "{}{unit}", n / mult)?;
                n %= mult;
            }
        }
        Ok(())
    }
}

string_serde!(Duration, "a duration such as \"250ms\", \"1s\" or \"1m30s\"");

/// An inclusive range of transport ports, written "1024-65535" (or one port, "8080").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub start: u16,
    /// Last port of the range, inclusive.
    pub end: u16,
}

impl PortRange {
    /// The default range for local-address pools, as Linux's ip_local_port_range upper part.
    pub const DEFAULT_POOL: PortRange = PortRange {
        start: 1024,
        end: 65535,
    };

    /// Number of ports in the range (0 when the range is inverted).
    pub fn len(&self) -> u32 {
        if self.end < self.start {
            0
        } else {
            u32::from(self.end) - u32::from(self.start) + 1
        }
    }

    /// Whether the range holds no port.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the range is well formed: non-empty and not starting at port 0.
    pub fn is_valid(&self) -> bool {
        self.start >= 1 && self.start <= self.end
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::DEFAULT_POOL
    }
}

impl FromStr for PortRange {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError(format!("invalid port range {s:?}"));
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        Ok(PortRange {
            start: a.parse().map_err(|_| bad())?,
            end: b.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

string_serde!(PortRange, "a port range such as \"1024-65535\"");

/// An Ethernet MAC address, written "02:00:00:00:00:01".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError(format!("invalid MAC address {s:?}"));
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

string_serde!(MacAddr, "a MAC address such as \"02:00:00:00:00:01\"");

/// A standard BGP community (RFC 1997), written "ASN:VALUE" or by its well-known name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// GRACEFUL_SHUTDOWN, RFC 8326.
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xFFFF_0000);
    /// NO_EXPORT, RFC 1997.
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    /// NO_ADVERTISE, RFC 1997.
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    /// BLACKHOLE, RFC 7999.
    pub const BLACKHOLE: Community = Community(0xFFFF_029A);

    const NAMES: [(&'static str, Community); 4] = [
        ("graceful-shutdown", Self::GRACEFUL_SHUTDOWN),
        ("no-export", Self::NO_EXPORT),
        ("no-advertise", Self::NO_ADVERTISE),
        ("blackhole", Self::BLACKHOLE),
    ];
}

impl FromStr for Community {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        if let Some((_, c)) = Self::NAMES.iter().find(|(n, _)| *n == s) {
            return Ok(*c);
        }
        let bad = || ParseError(format!("invalid community {s:?}"));
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        let a: u16 = a.parse().map_err(|_| bad())?;
        let b: u16 = b.parse().map_err(|_| bad())?;
        Ok(Community((u32::from(a) << 16) | u32::from(b)))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((n, _)) = Self::NAMES.iter().find(|(_, c)| c == self) {
            return f.write_str(n);
        }
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

string_serde!(
    Community,
    "a community such as \"65010:100\" or \"graceful-shutdown\""
);

/// A large BGP community (RFC 8092), written "GLOBAL:LOCAL1:LOCAL2".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity(pub u32, pub u32, pub u32);

impl FromStr for LargeCommunity {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError(format!("invalid large community {s:?}"));
        let mut it = s.split(':').map(|p| p.parse::<u32>().map_err(|_| bad()));
        let c = LargeCommunity(
            it.next().ok_or_else(bad)??,
            it.next().ok_or_else(bad)??,
            it.next().ok_or_else(bad)??,
        );
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(c)
    }
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.0, self.1, self.2)
    }
}

string_serde!(LargeCommunity, "a large community such as \"65010:1:2\"");

/// The port a service listens on: one port, or every port of the VIP ("all", as `ipvsadm` port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortSpec {
    /// Every port.
    All,
    /// One port (1-65535).
    One(u16),
}

impl PortSpec {
    /// Whether two specs share a port.
    pub fn overlaps(self, other: PortSpec) -> bool {
        match (self, other) {
            (PortSpec::One(a), PortSpec::One(b)) => a == b,
            _ => true,
        }
    }

    /// The concrete port, if one.
    pub fn port(self) -> Option<u16> {
        match self {
            PortSpec::All => None,
            PortSpec::One(p) => Some(p),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::All => f.write_str("all"),
            PortSpec::One(p) => write!(f, "{p}"),
        }
    }
}

impl Serialize for PortSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PortSpec::All => s.serialize_str("all"),
            PortSpec::One(p) => s.serialize_u16(*p),
        }
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number 1-65535 or \"all\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortSpec, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(PortSpec::One(p)),
                    _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortSpec, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortSpec, E> {
                match v {
                    "all" | "*" => Ok(PortSpec::All),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        for (s, ms) in [
            ("250ms", 250),
            ("1s", 1000),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
            ("1500ms", 1500),
        ] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.as_millis(), ms, "{s}");
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "1m30s");
    }

    #[test]
    fn bad_durations_are_rejected() {
        for s in ["", "1", "s", "1x", "-1s", "1.5s", "99999999999999999999999d"] {
            assert!(s.parse::<Duration>().is_err(), "{s}");
        }
    }

    #[test]
    fn port_ranges_parse_and_check() {
        let r: PortRange = "1024-2047".parse().unwrap();
        assert_eq!((r.start, r.end, r.len()), (1024, 2047, 1024));
        assert!(r.is_valid());
        assert!(!"2000-1000".parse::<PortRange>().unwrap().is_valid());
        assert!(!"0-10".parse::<PortRange>().unwrap().is_valid());
        assert!("70000".parse::<PortRange>().is_err());
        assert_eq!("80".parse::<PortRange>().unwrap().to_string(), "80");
    }

    #[test]
    fn mac_addresses_round_trip() {
        let m: MacAddr = "02:AB:00:00:00:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:00:00:00:01");
        assert!("02:ab:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:ab:00:00:00:01:02".parse::<MacAddr>().is_err());
    }

    #[test]
    fn communities_round_trip() {
        let c: Community = "65010:100".parse().unwrap();
        assert_eq!(c.0, (65010 << 16) | 100);
        assert_eq!(c.to_string(), "65010:100");
        assert_eq!(
            "graceful-shutdown".parse::<Community>().unwrap(),
            Community::GRACEFUL_SHUTDOWN
        );
        assert!("70000:1".parse::<Community>().is_err());
        let l: LargeCommunity = "4200000000:1:2".parse().unwrap();
        assert_eq!(l.to_string(), "4200000000:1:2");
        assert!("1:2".parse::<LargeCommunity>().is_err());
    }
}
