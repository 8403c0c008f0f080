//! The DPDK runtime's configuration from the topology: cores, EAL arguments, ports, queue and pool sizes.
//! The topology's other half for the dataplane, services, pools, routes and neighbours, is compiled into each
//! [`Snapshot`](crate::snapshot::Snapshot) by [`snapshot::Builder`](crate::snapshot::Builder).

use anylb_conf::NodeConfig;

use crate::dpdk::{Config, PortSpec};

impl Config {
    /// The runtime of node `cfg`. `instance` makes the EAL's file prefix unique (the process id, say) unless
    /// the topology's EAL arguments name one; `exception_taps` false disables TAP exception interfaces.
    pub fn from_topology(cfg: &NodeConfig, instance: &str, exception_taps: bool) -> Config {
        let dp = &cfg.node.dataplane;
        let mut eal_args = dp.eal_args.clone();
        if !eal_args.iter().any(|x| x.starts_with("--file-prefix")) {
            eal_args.push(format!("--file-prefix=anylb-{}-{instance}", cfg.node.name));
        }
        Config {
            workers: dp.workers.clone(),
            main_core: dp.main_core.unwrap_or(0),
            eal_args,
            ports: dp
                .ports
                .iter()
                .map(|p| PortSpec {
                    name: p.name.clone(),
                    device: p.device.clone(),
                    mtu: p.mtu(),
                    addresses: p.addresses.iter().map(|n| (n.addr(), n.prefix_len())).collect(),
                    exception: p.exception.unwrap_or_default(),
                })
                .collect(),
            descriptors: dp.descriptors(),
            mbufs: dp.mbufs(),
            exception_taps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TOPOLOGY;

    #[test]
    fn queue_and_pool_sizes_come_from_the_topology_or_are_derived() {
        let topo = anylb_conf::load_str(TOPOLOGY, "t.toml").unwrap();
        let cfg = topo.resolve("lb1").unwrap();
        let c = Config::from_topology(&cfg, "7", true);
        assert_eq!(c.descriptors, 1024);
        // 2 × 1024 × 2 workers × 2 ports + 2 × 1280 + 1024 = 11,776 → the 16,383 floor.
        assert_eq!(c.mbufs, 16383);
        assert_eq!(c.eal_args, ["--no-huge", "--file-prefix=anylb-lb1-7"]);
        assert_eq!(c.ports[1].mtu, 9000);
        let big = TOPOLOGY.replace("workers = [1, 2]", "workers = [1, 2]\ndescriptors = 4096");
        let topo = anylb_conf::load_str(&big, "t.toml").unwrap();
        let c = Config::from_topology(&topo.resolve("lb1").unwrap(), "7", true);
        // 2 × 4096 × 2 × 2 + 2560 + 1024 = 36,352 → 65,535.
        assert_eq!((c.descriptors, c.mbufs), (4096, 65535));
    }
}
