//! anylb-dataplane: the per-core packet engine (issue 3) and its DPDK runtime (issue 4).
//!
//! Not built yet: this crate only holds its place in the workspace.
