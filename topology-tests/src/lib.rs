//! topology-tests: the namespace plumbing that end-to-end tests and the demo run on ([`netns`]); the
//! containerlab topologies and their runner arrive with issue 8.

pub mod frr;
pub mod netns;
