//! anylb-conf: the declarative TOML topology of an anylb cluster.
//!
//! One file describes every node, service, backend, BGP neighbour and SNAT rule of a cluster. This crate owns
//! its schema ([`model`], [`types`]), loading with every error located by file, line, column and key path
//! ([`load`]), the semantic rules ([`validate`]), the resolved view of one node with defaults filled in
//! ([`resolve`]) and the diff between two topologies for one node ([`diff()`](diff())), which live reload applies.

pub mod diff;
pub mod load;
pub mod model;
pub mod resolve;
pub mod tree;
pub mod types;
pub mod validate;

pub mod json;
pub use diff::{diff, Change};
pub use load::{load_file, load_str, Diagnostic, Diagnostics};
pub use model::*;
pub use resolve::{ClusterSync, NodeConfig, SyncMember};
pub use types::{Community, Duration, LargeCommunity, MacAddr, PortRange, PortSpec};

impl Topology {
    /// Prints the topology back as TOML; loading the text gives an equal topology.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}
