//! The BGP-4 codec: messages ([`message`]), path attributes ([`attribute`]) and decoding errors with the
//! NOTIFICATION each one maps to ([`error`]). Decoding never panics on any input.

pub mod attribute;
pub mod error;
pub mod message;

pub use attribute::{AsPath, Attrs, MpNextHop, MpReach, MpUnreach, Origin, Segment};
pub use error::{DecodeError, WithdrawReason};
pub use message::{Capability, Codec, Message, Notification, Open, RouteRefresh, Update};
