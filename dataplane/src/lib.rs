//! anylb-dataplane: the per-core packet engine.
//!
//! [`wire`] holds the header views. The engine built on them (Full-NAT, connection tables, schedulers,
//! local-address pools, the small stack) and its DPDK runtime come in the following modules.

pub mod wire;
