//! anylb-dataplane: the per-core packet engine.
//!
//! [`wire`] holds the header views, [`flow`] the tuples and hashes, [`conn`] the per-worker connection table
//! and [`tcp_state`] the state tracking that sets its timeouts.

pub mod acl;
pub mod client_addr;
pub mod cluster;
#[cfg(feature = "dpdk")]
pub mod config;
pub mod conn;
pub mod counters;
#[cfg(feature = "dpdk")]
pub mod dpdk;
#[cfg(test)]
mod fixtures;
pub mod flow;
pub mod frag;
pub mod frame;
pub mod nat;
pub mod neigh;
pub mod pcap;
pub mod pool;
pub mod replay;
pub mod route;
pub mod sched;
pub mod snapshot;
pub mod stats;
pub mod syncookie;
pub mod tcp_state;
pub mod wire;
pub mod worker;
