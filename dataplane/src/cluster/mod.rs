//! Cluster state for stateless-equivalent nodes (see `docs/cluster.md`): which nodes hold a node's
//! connections and which one takes its local addresses over ([`owner`]), the connection record that travels
//! between nodes ([`record`]), and the reliable, authenticated sync channel that carries records ([`sync`]).
//! All of it is pure: the node's sync task owns the sockets and timers.

pub mod owner;
pub mod record;
pub mod sync;
