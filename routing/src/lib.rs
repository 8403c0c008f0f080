//! anylb-routing: the embedded BGP speaker.
//!
//! [`packet`] is the codec. The Sans-IO state machine, sessions, RIBs, the announce/withdraw handle and BFD
//! build on it.

pub mod bfd;
pub mod fsm;
pub mod packet;
pub mod rib;
pub mod speaker;
pub mod tasks;
