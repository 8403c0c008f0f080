//! dpdk-sys: bindings to DPDK 22.11 (issue 4).
//!
//! Not built yet: this crate only holds its place in the workspace.
