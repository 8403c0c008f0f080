//! anylb-dataplane: the per-core packet engine.
//!
//! [`wire`] holds the header views, [`flow`] the tuples and hashes, [`conn`] the per-worker connection table
//! and [`tcp_state`] the state tracking that sets its timeouts.

pub mod conn;
pub mod flow;
pub mod frame;
pub mod pool;
pub mod sched;
pub mod tcp_state;
pub mod wire;
