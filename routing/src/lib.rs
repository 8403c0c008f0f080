//! anylb-routing: the embedded BGP speaker and BFD.
//!
//! The holo-bgp split: [`packet`] is the codec (messages, attributes, errors); [`fsm`] the Sans-IO session
//! state machine; [`neighbor`] the neighbours, the state they share and the pure decisions a session makes
//! about routes; [`rib`] the Adj-RIB-In, best paths, Adj-RIB-Out and export policy; [`network`] the sockets
//! and their options; `tasks` only the I/O loops; [`speaker`] the handle the node uses; [`bfd`] BFD.

pub mod bfd;
pub mod config;
pub mod fsm;
pub mod neighbor;
pub mod network;
pub mod packet;
pub mod rib;
pub mod speaker;
mod tasks;
