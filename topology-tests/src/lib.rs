//! topology-tests: containerlab topologies for anylb ([`clab`]), brought up on network namespaces
//! ([`netns`]) with FRR routers ([`frr`]), the README demo ([`demo`]) and the end-to-end scenarios.

pub mod clab;
pub mod demo;
pub mod frr;
pub mod keepalive;
pub mod netns;
pub mod soak;
