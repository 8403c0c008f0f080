//! topology-tests: containerlab topologies and their namespace runner (issue 8).
//!
//! Not built yet: this crate only holds its place in the workspace.
