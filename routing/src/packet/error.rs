//! Decoding errors and the NOTIFICATION each maps to (RFC 4271 §6), plus the RFC 7606 outcome for UPDATE
//! errors: most attribute errors withdraw the routes of that UPDATE ("treat-as-withdraw") instead of resetting
//! the session.

/// NOTIFICATION error codes (RFC 4271 §4.5).
pub mod code {
    /// Message header error.
    pub const HEADER: u8 = 1;
    /// OPEN message error.
    pub const OPEN: u8 = 2;
    /// UPDATE message error.
    pub const UPDATE: u8 = 3;
    /// Hold timer expired.
    pub const HOLD_TIMER: u8 = 4;
    /// Finite state machine error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH message error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Subcodes used here.
pub mod subcode {
    /// Header: connection not synchronised (bad marker).
    pub const NOT_SYNCHRONIZED: u8 = 1;
    /// Header: bad message length.
    pub const BAD_LENGTH: u8 = 2;
    /// Header: bad message type.
    pub const BAD_TYPE: u8 = 3;
    /// OPEN: unsupported version number.
    pub const UNSUPPORTED_VERSION: u8 = 1;
    /// OPEN: bad peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// OPEN: bad BGP identifier.
    pub const BAD_BGP_ID: u8 = 3;
    /// OPEN: unsupported optional parameter.
    pub const UNSUPPORTED_PARAM: u8 = 4;
    /// OPEN: unacceptable hold time.
    pub const UNACCEPTABLE_HOLD: u8 = 6;
    /// UPDATE: malformed attribute list.
    pub const MALFORMED_ATTR_LIST: u8 = 1;
    /// UPDATE: attribute flags error.
    pub const ATTR_FLAGS: u8 = 4;
    /// UPDATE: attribute length error.
    pub const ATTR_LENGTH: u8 = 5;
    /// UPDATE: invalid ORIGIN.
    pub const INVALID_ORIGIN: u8 = 6;
    /// UPDATE: invalid NEXT_HOP.
    pub const INVALID_NEXT_HOP: u8 = 8;
    /// UPDATE: optional attribute error.
    pub const OPTIONAL_ATTR: u8 = 9;
    /// UPDATE: invalid network field.
    pub const INVALID_NETWORK: u8 = 10;
    /// UPDATE: malformed AS_PATH.
    pub const MALFORMED_AS_PATH: u8 = 11;
    /// Cease: maximum number of prefixes reached (RFC 4486).
    pub const MAX_PREFIXES: u8 = 1;
    /// Cease: administrative shutdown (RFC 4486, message per RFC 8203).
    pub const ADMIN_SHUTDOWN: u8 = 2;
    /// Cease: peer de-configured.
    pub const PEER_DECONFIGURED: u8 = 3;
    /// Cease: administrative reset.
    pub const ADMIN_RESET: u8 = 4;
    /// Cease: connection rejected.
    pub const CONNECTION_REJECTED: u8 = 5;
    /// Cease: connection collision resolution.
    pub const COLLISION: u8 = 7;
    /// Cease: hard reset (RFC 8538).
    pub const HARD_RESET: u8 = 9;
}

/// Why the routes of an UPDATE are not used: RFC 7606 treat-as-withdraw, or a loop through our own AS. From
/// the decoder to the session, the API and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "attribute", rename_all = "snake_case")]
pub enum WithdrawReason {
    /// A recognised attribute's value is malformed (its type code).
    #[error("malformed {}", attr_name(*.0))]
    Malformed(u8),
    /// A recognised attribute carries the wrong optional or transitive flag (RFC 7606 §3(c)).
    #[error("wrong flags on {}", attr_name(*.0))]
    Flags(u8),
    /// A well-known mandatory attribute is missing (RFC 7606 §3(d)).
    #[error("missing {}", attr_name(*.0))]
    Missing(u8),
    /// An attribute's length overruns the path attributes, or too few octets are left for one (RFC 7606 §4).
    #[error("attribute lengths overrun the path attributes")]
    Overrun,
    /// The AS path holds the local AS (RFC 4271 §9.1.2).
    #[error("AS path loop")]
    AsPathLoop,
}

/// The name of a path attribute type code, as RFCs spell it.
pub fn attr_name(kind: u8) -> &'static str {
    match kind {
        1 => "ORIGIN",
        2 => "AS_PATH",
        3 => "NEXT_HOP",
        4 => "MULTI_EXIT_DISC",
        5 => "LOCAL_PREF",
        6 => "ATOMIC_AGGREGATE",
        7 => "AGGREGATOR",
        8 => "COMMUNITIES",
        14 => "MP_REACH_NLRI",
        15 => "MP_UNREACH_NLRI",
        17 => "AS4_PATH",
        18 => "AS4_AGGREGATOR",
        32 => "LARGE_COMMUNITY",
        _ => "attribute",
    }
}

/// A message could not be decoded; the session answers with this NOTIFICATION and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (notification {code}/{subcode})")]
pub struct DecodeError {
    /// NOTIFICATION code.
    pub code: u8,
    /// NOTIFICATION subcode.
    pub subcode: u8,
    /// Data for the NOTIFICATION.
    pub data: Vec<u8>,
    /// What was wrong, for logs.
    pub reason: String,
}

impl DecodeError {
    /// An error with empty data.
    pub fn new(code: u8, subcode: u8, reason: impl Into<String>) -> Self {
        DecodeError {
            code,
            subcode,
            data: Vec::new(),
            reason: reason.into(),
        }
    }
}

/// Result of decoding.
pub type Result<T> = std::result::Result<T, DecodeError>;
