//! Packet header views in the style of smoltcp's `wire`: a `Packet<T: AsRef<[u8]>>` view per header with a
//! private `field` module of byte ranges, accessors that never panic once `check_len` passed, and a `Repr`
//! with `parse` and `emit`. One [`checksum`] module serves them all.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod ndp;
pub mod quic;
pub mod tcp;
pub mod udp;

/// Why a header did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header or the length it claims.
    #[error("truncated")]
    Truncated,
    /// A field has an impossible value.
    #[error("malformed")]
    Malformed,
    /// A checksum is wrong.
    #[error("bad checksum")]
    Checksum,
    /// Well formed, but not something this dataplane handles.
    #[error("unsupported")]
    Unsupported,
}

/// Result of parsing.
pub type Result<T> = std::result::Result<T, Error>;

/// IP protocol numbers.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IPv4-in-IP.
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6-in-IP.
    pub const IPV6: u8 = 41;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}
