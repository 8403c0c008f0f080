//! The counter views of a running node: `anylb stats` (the dataplane's totals and drops), `anylb services
//! --stats/--rate` (ipvsadm's service and real-server counters), `anylb pools` (the local addresses' ports, as
//! DPVS's `ipvsadm -G`) and `anylb ports` (NIC counters, as `dpip link show -s`). Rates are the daemon's,
//! over its last two samples a few seconds apart, so a single run shows them; `stats --watch` computes its
//! own over the watch interval.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::api::{self, ClientError};
use crate::show_cmd::{get, host_port, out, table};

/// Which counters `anylb services` shows (without either flag it shows health and announcement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceView {
    /// Connections, packets and bytes (`ipvsadm -Ln --stats`).
    Stats,
    /// Rates (`ipvsadm -Ln --rate`).
    Rate,
}

/// A typed answer (the JSON as the daemon sent it is kept for `-j`).
fn typed<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, ClientError> {
    serde_json::from_value(v.clone()).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// A count as people read it: exact below 100,000, then K, M, G with one decimal (as ipvsadm does).
pub fn count(n: f64) -> String {
    const UNITS: [(f64, &str); 3] = [(1e9, "G"), (1e6, "M"), (1e3, "K")];
    if n < 1e5 {
        return format!("{}", n.round() as u64);
    }
    UNITS
        .iter()
        .find(|(u, _)| n >= *u)
        .map_or_else(|| format!("{n:.0}"), |(u, x)| format!("{:.1}{x}", n / u))
}

/// `anylb stats`.
pub fn stats(sock: &Path, json: bool, per_worker: bool, watch: Option<u64>) -> Result<ExitCode, ClientError> {
    let mut prev: Option<(Instant, api::WorkerStats)> = None;
    loop {
        let v = get(sock, "/v1/stats")?;
        if json {
            println!("{v:#}");
        } else {
            let st: api::Stats = typed(&v)?;
            let t = &st.total;
            // Rates: over the watch interval when watching, else the daemon's last seconds.
            let rates = match &prev {
                Some((at, p)) => {
                    let dt = at.elapsed().as_secs_f64().max(1e-3);
                    let r = |a: u64, b: u64| b.saturating_sub(a) as f64 / dt;
                    Some((
                        r(p.rx_packets, t.rx_packets),
                        r(p.tx_packets, t.tx_packets),
                        r(p.new_connections, t.new_connections),
                        dt,
                    ))
                }
                None => st.rates.as_ref().map(|r| {
                    (
                        r.rx_packets_per_sec,
                        r.tx_packets_per_sec,
                        r.new_connections_per_sec,
                        r.over_secs,
                    )
                }),
            };
            let rate = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{}/s", count(x)));
            println!(
                "rx {} ({})  tx {} ({}, fast path {})  kernel {}  redirected {}  to peers {} ({} on closed entries)  connections {} new {} ({}) expired {}  dropped {}  not for us {}  tx refused {}{}",
                t.rx_packets,
                rate(rates.map(|r| r.0)),
                t.tx_packets,
                rate(rates.map(|r| r.1)),
                t.fast_path,
                t.to_kernel,
                t.redirected,
                t.peer_forwarded,
                t.peer_forwarded_closed,
                t.connections,
                t.new_connections,
                rate(rates.map(|r| r.2)),
                t.expired_connections,
                t.dropped,
                t.not_for_us,
                st.tx_refused,
                rates.map_or_else(String::new, |r| format!("  (rates over {:.1}s)", r.3)),
            );
            let drops: Vec<String> = st
                .drops
                .iter()
                .filter(|(r, n)| **n > 0 && r.as_str() != "other_mac")
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            if !drops.is_empty() {
                println!("dropped: {}", drops.join(", "));
            }
            if t.syn_cookies > 0 {
                println!(
                    "syn-proxy: {} SYNs answered with cookies, {} connections opened by a valid cookie",
                    t.syn_cookies, t.syn_proxied
                );
            }
            if per_worker {
                let rows: Vec<Vec<String>> = st
                    .workers
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        vec![
                            i.to_string(),
                            w.rx_packets.to_string(),
                            w.tx_packets.to_string(),
                            w.fast_path.to_string(),
                            w.connections.to_string(),
                            w.new_connections.to_string(),
                            w.redirected.to_string(),
                            w.dropped.to_string(),
                            w.not_for_us.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "Worker",
                        "Rx",
                        "Tx",
                        "FastPath",
                        "Conns",
                        "NewConns",
                        "Redirected",
                        "Dropped",
                        "NotForUs",
                    ],
                    &rows,
                );
            }
            prev = Some((Instant::now(), st.total));
        }
        let Some(every) = watch else {
            return Ok(ExitCode::SUCCESS);
        };
        std::thread::sleep(Duration::from_secs(every.max(1)));
    }
}

/// `anylb services --stats` and `--rate`: each service, then its backends indented, as ipvsadm lists them;
/// `--stats` adds the new flows each service refused (deny and allow lists, rate limit, thresholds; `-j` has
/// them by reason).
pub fn services(sock: &Path, json: bool, view: ServiceView) -> Result<ExitCode, ClientError> {
    let v = get(sock, "/v1/stats/services")?;
    let list: Vec<api::ServiceStats> = typed(&v)?;
    Ok(out(json, &v, |_| {
        let mut rows = Vec::new();
        for s in &list {
            let port = if s.port == 0 {
                "all".to_owned()
            } else {
                s.port.to_string()
            };
            let name = format!(
                "{} {} ({})",
                s.protocol.to_uppercase(),
                host_port(&s.vip.to_string(), &port),
                s.name
            );
            let mut row = cells(name, &s.traffic, s.rates.as_ref(), view);
            if view == ServiceView::Stats {
                let r = &s.refused;
                row.push(count(
                    (r.denied_node + r.denied + r.not_allowed + r.rate_limited + r.overloaded) as f64,
                ));
            }
            rows.push(row);
            for b in &s.backends {
                let port = if b.port == 0 {
                    "*".to_owned()
                } else {
                    b.port.to_string()
                };
                let name = format!("  -> {}", host_port(&b.address.to_string(), &port));
                rows.push(cells(name, &b.traffic, b.rates.as_ref(), view));
            }
        }
        let header: &[&str] = match view {
            ServiceView::Rate => &["Service / backend", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"],
            ServiceView::Stats => &[
                "Service / backend",
                "ActConn",
                "InActConn",
                "Conns",
                "InPkts",
                "OutPkts",
                "InBytes",
                "OutBytes",
                "Refused",
            ],
        };
        table(header, &rows);
    }))
}

fn cells(name: String, t: &api::Traffic, r: Option<&api::TrafficRates>, view: ServiceView) -> Vec<String> {
    match view {
        ServiceView::Rate => {
            let f = |g: fn(&api::TrafficRates) -> f64| r.map_or_else(|| "-".into(), |r| count(g(r)));
            vec![
                name,
                f(|r| r.connections_per_sec),
                f(|r| r.in_packets_per_sec),
                f(|r| r.out_packets_per_sec),
                f(|r| r.in_bytes_per_sec),
                f(|r| r.out_bytes_per_sec),
            ]
        }
        ServiceView::Stats => vec![
            name,
            t.active.to_string(),
            t.inactive.to_string(),
            count(t.created as f64),
            count(t.in_packets as f64),
            count(t.out_packets as f64),
            count(t.in_bytes as f64),
            count(t.out_bytes as f64),
        ],
    }
}

/// `anylb pools`.
pub fn pools(sock: &Path, json: bool) -> Result<ExitCode, ClientError> {
    let v = get(sock, "/v1/pools")?;
    let p: api::Pools = typed(&v)?;
    Ok(out(json, &v, |_| {
        let rows: Vec<Vec<String>> = p
            .pools
            .iter()
            .map(|l| {
                vec![
                    l.address.to_string(),
                    l.ports.to_string(),
                    l.tcp_used.to_string(),
                    l.ports.saturating_sub(l.tcp_used).to_string(),
                    l.udp_used.to_string(),
                    l.ports.saturating_sub(l.udp_used).to_string(),
                ]
            })
            .collect();
        table(
            &[
                "Local address",
                "Ports",
                "TCP used",
                "TCP free",
                "UDP used",
                "UDP free",
            ],
            &rows,
        );
        let ex: Vec<String> = p
            .exhausted
            .iter()
            .map(|(k, n)| format!("{} {n}", k.replace('_', "/")))
            .collect();
        println!("connections refused for want of a port: {}", ex.join(", "));
    }))
}

/// `anylb ports`.
pub fn ports(sock: &Path, json: bool) -> Result<ExitCode, ClientError> {
    let v = get(sock, "/v1/ports")?;
    let list: Vec<api::Port> = typed(&v)?;
    Ok(out(json, &v, |_| {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|p| {
                let r = |g: fn(&api::PortRates) -> f64| {
                    p.rates.as_ref().map_or_else(|| "-".into(), |r| count(g(r)))
                };
                vec![
                    p.name.clone(),
                    if p.link_up {
                        format!("up {}M", p.speed_mbps)
                    } else {
                        "down".into()
                    },
                    count(p.rx_packets as f64),
                    count(p.rx_bytes as f64),
                    count(p.tx_packets as f64),
                    count(p.tx_bytes as f64),
                    p.rx_missed.to_string(),
                    p.rx_errors.to_string(),
                    p.tx_errors.to_string(),
                    p.rx_nombuf.to_string(),
                    r(|r| r.rx_packets_per_sec),
                    r(|r| r.tx_packets_per_sec),
                ]
            })
            .collect();
        table(
            &[
                "Port", "Link", "RxPkts", "RxBytes", "TxPkts", "TxBytes", "Missed", "RxErrors", "TxErrors",
                "NoMbuf", "RxPPS", "TxPPS",
            ],
            &rows,
        );
    }))
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_are_exact_until_they_are_long() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(99_999.0), "99999");
        assert_eq!(count(123_456.0), "123.5K");
        assert_eq!(count(7_250_000.0), "7.2M");
        assert_eq!(count(3.2e9), "3.2G");
    }
}
