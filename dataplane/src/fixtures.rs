//! Fixtures shared by the crate's unit tests.

/// A node with two workers and two ports (the second with a 9000-byte MTU), a fallback static route and a
/// plain one.
pub const TOPOLOGY: &str = r#"
[cluster]
name = "t"
asn = 65010
[[nodes]]
name = "lb1"
router_id = "192.0.2.11"
[nodes.dataplane]
workers = [1, 2]
eal_args = ["--no-huge"]
[[nodes.dataplane.ports]]
name = "p0"
device = "net_null0"
addresses = ["192.0.2.11/28"]
[[nodes.dataplane.ports]]
name = "p1"
device = "net_null1"
mtu = 9000
[[nodes.routes]]
prefix = "192.0.2.128/26"
via = ["192.0.2.1"]
fallback = true
[[nodes.routes]]
prefix = "198.51.100.0/24"
via = ["192.0.2.1"]
"#;
