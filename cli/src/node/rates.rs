//! Rates over the last seconds, as `ipvsadm --rate` and `dpip link show -s` give them without a watch: a task
//! samples the counters every [`EVERY`], and a rate is the difference between the last two samples over the
//! time between them. Counters read between samples stay exact; only rates are this old.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anylb_dataplane::counters::NodeCounters;
use anylb_dataplane::dpdk::PortStatus;
use anylb_dataplane::stats::{BackendCounters, Stats};

use super::Node;
use crate::api;

/// Time between samples.
pub const EVERY: Duration = Duration::from_secs(2);

/// One sample of every counter that has a rate.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    total: Stats,
    /// (service, backend address, port) → counters; a service's own sum under address `None`.
    traffic: HashMap<(String, Option<(IpAddr, u16)>), BackendCounters>,
    ports: HashMap<String, (u64, u64, u64, u64)>,
}

impl Sample {
    /// Reads the node's counters now.
    pub fn take(workers: &[Stats], counters: &NodeCounters, ports: &[PortStatus]) -> Sample {
        let mut total = Stats::default();
        for w in workers {
            total.add(w);
        }
        let mut traffic = HashMap::new();
        for s in &counters.services {
            traffic.insert((s.name.clone(), None), s.counters);
            for b in &s.backends {
                traffic.insert((s.name.clone(), Some((b.address, b.port))), b.counters);
            }
        }
        Sample {
            at: Instant::now(),
            total,
            traffic,
            ports: ports
                .iter()
                .map(|p| (p.name.clone(), (p.ipackets, p.opackets, p.ibytes, p.obytes)))
                .collect(),
        }
    }
}

/// The last two samples.
#[derive(Debug, Clone, Default)]
pub struct Window {
    prev: Option<Sample>,
    last: Option<Sample>,
}

/// `(new - old) / secs`, 0 when a counter went back (a restart of what counts it).
fn per_sec(old: u64, new: u64, secs: f64) -> f64 {
    new.saturating_sub(old) as f64 / secs
}

impl Window {
    /// Adds a sample, forgetting the oldest.
    pub fn push(&mut self, s: Sample) {
        self.prev = self.last.take();
        self.last = Some(s);
    }

    /// The two samples and the seconds between them.
    fn pair(&self) -> Option<(&Sample, &Sample, f64)> {
        let (a, b) = (self.prev.as_ref()?, self.last.as_ref()?);
        let secs = b.at.duration_since(a.at).as_secs_f64();
        (secs > 0.0).then_some((a, b, secs))
    }

    /// The node's rates: frames each way, new connections, drops.
    pub fn node(&self) -> Option<api::NodeRates> {
        let (a, b, secs) = self.pair()?;
        let r = |f: fn(&Stats) -> u64| per_sec(f(&a.total), f(&b.total), secs);
        Some(api::NodeRates {
            over_secs: secs,
            rx_packets_per_sec: r(|s| s.rx_packets),
            tx_packets_per_sec: r(|s| s.tx_packets),
            rx_bytes_per_sec: r(|s| s.rx_bytes),
            tx_bytes_per_sec: r(|s| s.tx_bytes),
            new_connections_per_sec: r(|s| s.new_connections),
            dropped_per_sec: r(Stats::total_drops),
        })
    }

    /// A service's (`backend` None) or backend's rates.
    pub fn traffic(&self, service: &str, backend: Option<(IpAddr, u16)>) -> Option<api::TrafficRates> {
        let (a, b, secs) = self.pair()?;
        let key = (service.to_owned(), backend);
        let (x, y) = (a.traffic.get(&key)?, b.traffic.get(&key)?);
        Some(api::TrafficRates {
            connections_per_sec: per_sec(x.created, y.created, secs),
            in_packets_per_sec: per_sec(x.in_packets, y.in_packets, secs),
            out_packets_per_sec: per_sec(x.out_packets, y.out_packets, secs),
            in_bytes_per_sec: per_sec(x.in_bytes, y.in_bytes, secs),
            out_bytes_per_sec: per_sec(x.out_bytes, y.out_bytes, secs),
        })
    }

    /// A port's rates: (rx, tx) packets and bytes per second.
    pub fn port(&self, name: &str) -> Option<api::PortRates> {
        let (a, b, secs) = self.pair()?;
        let (x, y) = (a.ports.get(name)?, b.ports.get(name)?);
        Some(api::PortRates {
            rx_packets_per_sec: per_sec(x.0, y.0, secs),
            tx_packets_per_sec: per_sec(x.1, y.1, secs),
            rx_bytes_per_sec: per_sec(x.2, y.2, secs),
            tx_bytes_per_sec: per_sec(x.3, y.3, secs),
        })
    }
}

/// Samples the node's counters every [`EVERY`] until aborted.
pub async fn run(n: Arc<Node>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let rt = n.runtime.clone();
        // The workers answer between bursts: read them off the async thread.
        let sample =
            tokio::task::spawn_blocking(move || Sample::take(&rt.stats(), &rt.counters(), &rt.ports())).await;
        if let (Ok(s), Ok(mut w)) = (sample, n.rates.lock()) {
            w.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_over_the_time_between_samples() {
        let mut w = Window::default();
        assert!(w.node().is_none(), "one sample has no rate");
        let mut s = Sample {
            at: Instant::now(),
            total: Stats::default(),
            traffic: HashMap::new(),
            ports: HashMap::new(),
        };
        w.push(s.clone());
        assert!(w.node().is_none());
        s.at += Duration::from_secs(2);
        s.total.rx_packets = 1_000;
        s.total.new_connections = 10;
        w.push(s.clone());
        let r = w.node().unwrap_or_else(|| panic!("two samples"));
        assert_eq!(
            (r.rx_packets_per_sec, r.new_connections_per_sec, r.over_secs),
            (500.0, 5.0, 2.0)
        );
        // A counter that went back (the dataplane restarted) gives 0, not a huge number.
        s.at += Duration::from_secs(2);
        s.total.rx_packets = 10;
        w.push(s);
        assert_eq!(w.node().map(|r| r.rx_packets_per_sec), Some(0.0));
    }
}
