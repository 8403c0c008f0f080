//! The Prometheus page, `/metrics` on the control socket and on the node's `metrics_listen` address.
//!
//! The page is encoded by the `prometheus-client` crate in the OpenMetrics text format (names, label escaping,
//! `_total` on counters, units, `# EOF`), from a snapshot taken at each scrape: the node's counters live in its
//! workers, speaker, monitor and sync, and are read, not mirrored. Every family is listed in `docs/metrics.md`.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use anylb_dataplane::counters::NodeCounters;
use anylb_dataplane::dpdk::PortStatus;
use anylb_dataplane::stats::{BackendCounters, DropReason, Stats};
use anylb_healthcheck::latency::{Durations, BOUNDS};
use anylb_healthcheck::monitor::{BackendStatus, ServiceStatus};
use anylb_routing::bfd;
use anylb_routing::fsm::State as Fsm;
use anylb_routing::neighbor::{family_name, family_of, NeighborStatus, FAMILIES};
use anylb_routing::speaker::Speaker;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE as CONTENT_TYPE_HEADER;
use axum::routing::get;
use axum::Router;
use ipnet::IpNet;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::sync::SyncView;
use super::Node;

/// The page's media type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The page, as served: read off the async thread, since the workers answer between bursts.
pub async fn response(n: Arc<Node>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let page = tokio::task::spawn_blocking(move || metrics_text(&n))
        .await
        .unwrap_or_default();
    ([(CONTENT_TYPE_HEADER, CONTENT_TYPE)], page)
}

/// Prometheus metrics in the OpenMetrics text format.
pub fn metrics_text(n: &Node) -> String {
    let mut r = Registry::default();
    r.register_collector(Box::new(Snapshot::take(n)));
    let mut o = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut o, &r);
    o
}

/// Serves `/metrics` on TCP.
pub async fn serve(n: Arc<Node>, addr: SocketAddr) -> std::io::Result<()> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    let app = Router::new()
        .route("/metrics", get(|State(n): State<Arc<Node>>| response(n)))
        .with_state(n);
    axum::serve(l, app).await
}

/// `address:port`, IPv6 in brackets.
pub fn endpoint(address: std::net::IpAddr, port: u16) -> String {
    SocketAddr::new(address, port).to_string()
}

/// What one scrape reads.
#[derive(Debug)]
struct Snapshot {
    workers: Vec<Stats>,
    tx_refused: u64,
    reloads: [u64; 2],
    counters: NodeCounters,
    ports: Vec<PortStatus>,
    bgp: Option<Bgp>,
    backends: Vec<BackendStatus>,
    services: Vec<(ServiceStatus, bool)>,
    sync: Option<SyncView>,
}

/// A family's prefixes received from a neighbour, and how many of them are stale.
type FamilyCount = (&'static str, usize, usize);

/// The speaker's sessions and BFD.
#[derive(Debug)]
struct Bgp {
    neighbors: Vec<(NeighborStatus, Vec<FamilyCount>)>,
    bfd: Vec<bfd::Status>,
}

impl Snapshot {
    fn take(n: &Node) -> Snapshot {
        let monitor = n.monitor();
        let announced = n.announced.lock().map(|a| a.clone()).unwrap_or_default();
        Snapshot {
            workers: n.runtime.stats(),
            tx_refused: n.runtime.tx_refused(),
            reloads: n
                .reloads
                .each_ref()
                .map(|r| r.load(std::sync::atomic::Ordering::Relaxed)),
            counters: n.runtime.counters(),
            ports: n.runtime.ports(),
            bgp: n.speaker.as_ref().map(Bgp::take),
            backends: monitor.as_ref().map(|m| m.backends(None)).unwrap_or_default(),
            services: monitor
                .map(|m| m.services())
                .unwrap_or_default()
                .into_iter()
                .map(|s| {
                    let a = announced.contains_key(&IpNet::from(s.vip));
                    (s, a)
                })
                .collect(),
            sync: n
                .sync
                .as_ref()
                .and_then(|s| s.view.lock().ok().map(|v| v.clone())),
        }
    }
}

impl Bgp {
    fn take(sp: &Speaker) -> Bgp {
        let neighbors = sp
            .neighbors()
            .into_iter()
            .map(|nb| {
                let mut by_family: Vec<FamilyCount> =
                    FAMILIES.iter().map(|f| (family_name(*f), 0, 0)).collect();
                for r in sp.received(Some(nb.address)).unwrap_or_default() {
                    let name = family_name(family_of(&r.prefix));
                    if let Some(e) = by_family.iter_mut().find(|e| e.0 == name) {
                        e.1 += 1;
                        e.2 += usize::from(r.stale);
                    }
                }
                (nb, by_family)
            })
            .collect();
        Bgp {
            neighbors,
            bfd: sp.bfd(),
        }
    }
}

/// One sample's value.
enum V {
    Counter(u64),
    Gauge(i64),
    GaugeF(f64),
    Histogram(f64, u64, Vec<(f64, u64)>),
}

type Labels = Vec<(&'static str, String)>;

/// Writes one metric family: its descriptor, then a sample per row (an unlabelled sample when the only row
/// has no labels).
fn family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut d = e.encode_descriptor(name, help, unit.as_ref(), kind)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            sample(&mut d, v)?;
        } else {
            let labels: Vec<(&str, Escaped)> = labels.into_iter().map(|(k, v)| (k, Escaped(v))).collect();
            sample(&mut d.encode_family(&labels)?, v)?;
        }
    }
    Ok(())
}

/// A label value escaped as both text formats require (`\\`, `\"`, `\n`): the crate writes values as they
/// are (prometheus/client_rust issue 151), and a service may be named `we"b`.
#[derive(Debug)]
struct Escaped(String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, e: &mut LabelValueEncoder) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => e.write_str("\\\\")?,
                '"' => e.write_str("\\\"")?,
                '\n' => e.write_str("\\n")?,
                c => e.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn sample(m: &mut prometheus_client::encoding::MetricEncoder, v: V) -> fmt::Result {
    match v {
        V::Counter(c) => m.encode_counter::<NoLabelSet, _, u64>(&c, None),
        V::Gauge(g) => m.encode_gauge(&g),
        V::GaugeF(g) => m.encode_gauge(&g),
        V::Histogram(sum, count, buckets) => m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None),
    }
}

/// The histogram's buckets as the crate takes them: per bucket (not cumulative), the last bound f64::MAX (+Inf).
fn buckets(d: &Durations) -> Vec<(f64, u64)> {
    BOUNDS.iter().copied().chain([f64::MAX]).zip(d.counts).collect()
}

fn packets() -> Option<Unit> {
    Some(Unit::Other("packets".into()))
}

fn gauge(b: bool) -> V {
    V::Gauge(i64::from(b))
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        e.encode_descriptor(
            "anylb_build",
            "The running build: anylb's version and commit, the DPDK it was built against.",
            None,
            MetricType::Info,
        )?
        .encode_info(&crate::version::labels())?;
        self.dataplane(&mut e)?;
        self.traffic(&mut e)?;
        self.pools(&mut e)?;
        self.ports(&mut e)?;
        if let Some(b) = &self.bgp {
            b.encode(&mut e)?;
        }
        self.health(&mut e)?;
        if let Some(v) = &self.sync {
            sync(&mut e, v)?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// Worker counters: frames and bytes by direction, drops by reason, connections.
    fn dataplane(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let per = |f: fn(&Stats) -> u64| {
            self.workers
                .iter()
                .enumerate()
                .map(move |(w, s)| (vec![("worker", w.to_string())], V::Counter(f(s))))
        };
        let dir = |rx: fn(&Stats) -> u64, tx: fn(&Stats) -> u64| {
            self.workers.iter().enumerate().flat_map(move |(w, s)| {
                [("rx", rx(s)), ("tx", tx(s))].map(|(d, v)| {
                    (
                        vec![("worker", w.to_string()), ("dir", d.to_owned())],
                        V::Counter(v),
                    )
                })
            })
        };
        family(
            e,
            "anylb_worker",
            "Frames by worker and direction.",
            packets(),
            MetricType::Counter,
            dir(|s| s.rx_packets, |s| s.tx_packets),
        )?;
        family(
            e,
            "anylb_worker",
            "Bytes by worker and direction.",
            Some(Unit::Bytes),
            MetricType::Counter,
            dir(|s| s.rx_bytes, |s| s.tx_bytes),
        )?;
        family(
            e,
            "anylb_dropped",
            "Frames dropped, by worker and reason (other_mac: frames for other hosts on a shared segment).",
            packets(),
            MetricType::Counter,
            self.workers.iter().enumerate().flat_map(|(w, s)| {
                DropReason::ALL.iter().map(move |r| {
                    (
                        vec![("worker", w.to_string()), ("reason", r.name().to_owned())],
                        V::Counter(s.drops_of(*r)),
                    )
                })
            }),
        )?;
        family(
            e,
            "anylb_connections_created",
            "Connections created.",
            None,
            MetricType::Counter,
            per(|s| s.new_connections),
        )?;
        family(
            e,
            "anylb_fragments",
            "IP fragments of TCP and UDP handled (forwarded, parked or handed to their worker).",
            packets(),
            MetricType::Counter,
            per(|s| s.fragments),
        )?;
        family(
            e,
            "anylb_syn_cookies",
            "SYNs to SYN-proxy services answered with a SYN cookie (no state kept).",
            None,
            MetricType::Counter,
            per(|s| s.syn_cookies),
        )?;
        family(
            e,
            "anylb_connections_syn_proxied",
            "Connections opened by an ACK with a valid SYN cookie.",
            None,
            MetricType::Counter,
            per(|s| s.syn_proxied),
        )?;
        family(
            e,
            "anylb_connections_quic_routed",
            "QUIC connections sent to the backend their connection ID names (migrated connections).",
            None,
            MetricType::Counter,
            per(|s| s.quic_routed),
        )?;
        family(
            e,
            "anylb_connections_expired",
            "Connections expired.",
            None,
            MetricType::Counter,
            per(|s| s.expired_connections),
        )?;
        family(
            e,
            "anylb_connections_active",
            "Connections in the table.",
            None,
            MetricType::Gauge,
            self.workers
                .iter()
                .enumerate()
                .map(|(w, s)| (vec![("worker", w.to_string())], V::Gauge(s.connections as i64))),
        )?;
        family(
            e,
            "anylb_fast_path",
            "Frames forwarded by the established fast path.",
            packets(),
            MetricType::Counter,
            per(|s| s.fast_path),
        )?;
        family(
            e,
            "anylb_to_kernel",
            "Frames handed to the kernel.",
            packets(),
            MetricType::Counter,
            per(|s| s.to_kernel),
        )?;
        family(
            e,
            "anylb_redirected",
            "Frames handed to another worker.",
            packets(),
            MetricType::Counter,
            per(|s| s.redirected),
        )?;
        family(
            e,
            "anylb_peer_forwarded",
            "TCP segments of unknown flows handed to another node.",
            packets(),
            MetricType::Counter,
            per(|s| s.peer_forwarded),
        )?;
        family(
            e,
            "anylb_peer_forwarded_closed",
            "Of the segments handed to another node, those with data that met a connection here both sides had closed.",
            packets(),
            MetricType::Counter,
            per(|s| s.peer_forwarded_closed),
        )?;
        family(
            e,
            "anylb_icmp_errors",
            "ICMP errors sent or translated.",
            packets(),
            MetricType::Counter,
            per(|s| s.icmp_errors),
        )
    }

    /// Services' and backends' connections, packets and bytes, as `ipvsadm -Ln --stats`.
    fn traffic(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        type Row = (Labels, BackendCounters);
        let services: Vec<Row> = self
            .counters
            .services
            .iter()
            .map(|s| (vec![("service", s.name.clone())], s.counters))
            .collect();
        let backends: Vec<Row> = self
            .counters
            .services
            .iter()
            .flat_map(|s| {
                s.backends.iter().map(|b| {
                    (
                        vec![
                            ("service", s.name.clone()),
                            ("backend", endpoint(b.address, b.port)),
                        ],
                        b.counters,
                    )
                })
            })
            .collect();
        family(
            e,
            "anylb_service_refused",
            "New flows the service refused, by reason (deny and allow lists, rate limit, backend thresholds).",
            None,
            MetricType::Counter,
            self.counters.services.iter().flat_map(|s| {
                let r = &s.refused;
                [
                    ("denied_node", r.denied_node),
                    ("denied", r.denied),
                    ("not_allowed", r.not_allowed),
                    ("rate_limited", r.rate_limited),
                    ("overloaded", r.overloaded),
                ]
                .map(|(why, n)| {
                    (
                        vec![("service", s.name.clone()), ("reason", why.to_owned())],
                        V::Counter(n),
                    )
                })
            }),
        )?;
        for (what, rows) in [("service", &services), ("backend", &backends)] {
            let with = |l: &Labels, k: &'static str, v: &str| {
                let mut l = l.clone();
                l.push((k, v.to_owned()));
                l
            };
            family(
                e,
                &format!("anylb_{what}_connections"),
                "Connections in the tables: active (TCP established) and inactive (ipvsadm's ActiveConn, InActConn).",
                None,
                MetricType::Gauge,
                rows.iter().flat_map(|(l, c)| {
                    [("active", c.active), ("inactive", c.connections.saturating_sub(c.active))]
                        .map(|(st, v)| (with(l, "state", st), V::Gauge(i64::from(v))))
                }),
            )?;
            family(
                e,
                &format!("anylb_{what}_connections_scheduled"),
                "Connections scheduled since start.",
                None,
                MetricType::Counter,
                rows.iter().map(|(l, c)| (l.clone(), V::Counter(c.created))),
            )?;
            family(
                e,
                &format!("anylb_{what}"),
                "Packets in (client to backend) and out (backend to client).",
                packets(),
                MetricType::Counter,
                rows.iter().flat_map(|(l, c)| {
                    [("in", c.in_packets), ("out", c.out_packets)]
                        .map(|(d, v)| (with(l, "dir", d), V::Counter(v)))
                }),
            )?;
            family(
                e,
                &format!("anylb_{what}"),
                "IP bytes in (client to backend) and out (backend to client).",
                Some(Unit::Bytes),
                MetricType::Counter,
                rows.iter().flat_map(|(l, c)| {
                    [("in", c.in_bytes), ("out", c.out_bytes)]
                        .map(|(d, v)| (with(l, "dir", d), V::Counter(v)))
                }),
            )?;
        }
        Ok(())
    }

    /// Local-address pools: ports per address, in use per protocol, allocations refused.
    fn pools(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let c = &self.counters;
        family(
            e,
            "anylb_pool_ports",
            "Ports of the local address's range (each usable once per protocol).",
            None,
            MetricType::Gauge,
            c.pools
                .iter()
                .map(|p| (vec![("address", p.address.to_string())], V::Gauge(p.ports as i64))),
        )?;
        family(
            e,
            "anylb_pool_ports_used",
            "Ports of the local address in use, by protocol.",
            None,
            MetricType::Gauge,
            c.pools.iter().flat_map(|p| {
                [("tcp", p.tcp_used), ("udp", p.udp_used)].map(|(proto, v)| {
                    (
                        vec![("address", p.address.to_string()), ("protocol", proto.to_owned())],
                        V::Gauge(v as i64),
                    )
                })
            }),
        )?;
        let x = &c.exhausted;
        family(
            e,
            "anylb_pool_exhausted",
            "Connections refused because every local address of the family was out of ports.",
            None,
            MetricType::Counter,
            [
                ("ipv4", "tcp", x.ipv4_tcp),
                ("ipv4", "udp", x.ipv4_udp),
                ("ipv6", "tcp", x.ipv6_tcp),
                ("ipv6", "udp", x.ipv6_udp),
            ]
            .map(|(f, p, v)| {
                (
                    vec![("family", f.to_owned()), ("protocol", p.to_owned())],
                    V::Counter(v),
                )
            }),
        )?;
        family(
            e,
            "anylb_reloads",
            "Topology reloads (anylb reload, SIGHUP): applied, or refused with the running configuration kept.",
            None,
            MetricType::Counter,
            [("applied", self.reloads[0]), ("refused", self.reloads[1])]
                .map(|(r, n)| (vec![("result", r.to_owned())], V::Counter(n))),
        )?;
        family(
            e,
            "anylb_tx_refused",
            "Frames the NICs refused (transmit queues full).",
            packets(),
            MetricType::Counter,
            [(vec![], V::Counter(self.tx_refused))],
        )
    }

    /// NIC counters per port, as `dpip link show -s`.
    fn ports(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let port = |p: &PortStatus| ("port", p.name.clone());
        let dir = |rx: fn(&PortStatus) -> u64, tx: fn(&PortStatus) -> u64| {
            self.ports.iter().flat_map(move |p| {
                [("rx", rx(p)), ("tx", tx(p))]
                    .map(|(d, v)| (vec![port(p), ("dir", d.to_owned())], V::Counter(v)))
            })
        };
        family(
            e,
            "anylb_port",
            "Frames the port received and sent.",
            packets(),
            MetricType::Counter,
            dir(|p| p.ipackets, |p| p.opackets),
        )?;
        family(
            e,
            "anylb_port",
            "Bytes the port received and sent.",
            Some(Unit::Bytes),
            MetricType::Counter,
            dir(|p| p.ibytes, |p| p.obytes),
        )?;
        family(
            e,
            "anylb_port_errors",
            "Frames the port failed to receive or send.",
            None,
            MetricType::Counter,
            dir(|p| p.ierrors, |p| p.oerrors),
        )?;
        family(
            e,
            "anylb_port_missed",
            "Frames the port dropped because its receive queues were full.",
            packets(),
            MetricType::Counter,
            self.ports.iter().map(|p| (vec![port(p)], V::Counter(p.imissed))),
        )?;
        family(
            e,
            "anylb_port_rx_nombuf",
            "Receive buffer allocation failures.",
            None,
            MetricType::Counter,
            self.ports
                .iter()
                .map(|p| (vec![port(p)], V::Counter(p.rx_nombuf))),
        )?;
        family(
            e,
            "anylb_port_link_up",
            "1 when the port's link is up.",
            None,
            MetricType::Gauge,
            self.ports.iter().map(|p| (vec![port(p)], gauge(p.link_up))),
        )
    }

    /// Backends' health, check durations and failures; services' health and announcement.
    fn health(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let backend = |b: &BackendStatus| {
            vec![
                ("service", b.key.service.clone()),
                ("backend", endpoint(b.key.address, b.key.port)),
            ]
        };
        family(
            e,
            "anylb_backend_up",
            "1 when the backend passes its health check and is not drained.",
            None,
            MetricType::Gauge,
            self.backends
                .iter()
                .map(|b| (backend(b), gauge(b.effective_weight > 0))),
        )?;
        family(
            e,
            "anylb_backend_weight",
            "The backend's effective weight (0 when down or drained).",
            None,
            MetricType::Gauge,
            self.backends
                .iter()
                .map(|b| (backend(b), V::Gauge(i64::from(b.effective_weight)))),
        )?;
        family(
            e,
            "anylb_health_checks",
            "Health checks run.",
            None,
            MetricType::Counter,
            self.backends.iter().map(|b| (backend(b), V::Counter(b.checks))),
        )?;
        family(
            e,
            "anylb_health_check_failures",
            "Health checks that failed.",
            None,
            MetricType::Counter,
            self.backends.iter().map(|b| (backend(b), V::Counter(b.failures))),
        )?;
        family(
            e,
            "anylb_health_check_duration",
            "How long health checks took.",
            Some(Unit::Seconds),
            MetricType::Histogram,
            self.backends.iter().map(|b| {
                (
                    backend(b),
                    V::Histogram(b.durations.sum_secs, b.durations.count(), buckets(&b.durations)),
                )
            }),
        )?;
        family(
            e,
            "anylb_service_healthy_backends",
            "Backends up and not drained.",
            None,
            MetricType::Gauge,
            self.services
                .iter()
                .map(|(s, _)| (vec![("service", s.name.clone())], V::Gauge(i64::from(s.healthy)))),
        )?;
        family(
            e,
            "anylb_service_announced",
            "1 when the service's VIP is announced.",
            None,
            MetricType::Gauge,
            self.services
                .iter()
                .map(|(s, a)| (vec![("service", s.name.clone())], gauge(*a))),
        )
    }
}

impl Bgp {
    /// Sessions: state, flaps, unused UPDATEs, prefixes by family and direction; BFD state, transitions, timers.
    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let nb = |a: &std::net::IpAddr| vec![("neighbor", a.to_string())];
        family(
            e,
            "anylb_bgp_session_established",
            "1 when the BGP session is Established.",
            None,
            MetricType::Gauge,
            self.neighbors
                .iter()
                .map(|(n, _)| (nb(&n.address), gauge(n.state == Fsm::Established))),
        )?;
        family(
            e,
            "anylb_bgp_session_state",
            "The session's FSM state (1 for the current one).",
            None,
            MetricType::Gauge,
            self.neighbors.iter().map(|(n, _)| {
                let mut l = nb(&n.address);
                l.push(("state", n.state.name().to_owned()));
                (l, V::Gauge(1))
            }),
        )?;
        family(
            e,
            "anylb_bgp_session_flaps",
            "Times the session left Established.",
            None,
            MetricType::Counter,
            self.neighbors
                .iter()
                .map(|(n, _)| (nb(&n.address), V::Counter(n.flaps))),
        )?;
        family(
            e,
            "anylb_bgp_updates_withdrawn",
            "UPDATEs whose routes were not used (RFC 7606 treat-as-withdraw, AS-path loop).",
            None,
            MetricType::Counter,
            self.neighbors
                .iter()
                .map(|(n, _)| (nb(&n.address), V::Counter(n.updates_withdrawn))),
        )?;
        family(
            e,
            "anylb_bgp_prefixes",
            "Prefixes received (stale ones too), stale, and sent, by family.",
            None,
            MetricType::Gauge,
            self.neighbors.iter().flat_map(|(n, fams)| {
                fams.iter().flat_map(move |(family, all, stale)| {
                    let sent = n.prefixes_sent_by_family.get(*family).copied().unwrap_or(0);
                    [("received", *all), ("stale", *stale), ("sent", sent)].map(|(dir, v)| {
                        let mut l = nb(&n.address);
                        l.push(("family", (*family).to_owned()));
                        l.push(("dir", dir.to_owned()));
                        (l, V::Gauge(v as i64))
                    })
                })
            }),
        )?;
        let peer = |b: &bfd::Status| vec![("peer", b.peer.to_string())];
        family(
            e,
            "anylb_bfd_session_up",
            "1 when the BFD session is Up.",
            None,
            MetricType::Gauge,
            self.bfd
                .iter()
                .map(|b| (peer(b), gauge(b.info.state == bfd::State::Up))),
        )?;
        family(
            e,
            "anylb_bfd_session_transitions",
            "Times the BFD session came up and went down.",
            None,
            MetricType::Counter,
            self.bfd.iter().flat_map(|b| {
                [("up", b.up_count), ("down", b.down_count)].map(|(to, v)| {
                    let mut l = peer(b);
                    l.push(("to", to.to_owned()));
                    (l, V::Counter(v))
                })
            }),
        )?;
        family(
            e,
            "anylb_bfd_detection_time",
            "Time without a packet after which the session goes down.",
            Some(Unit::Seconds),
            MetricType::Gauge,
            self.bfd
                .iter()
                .map(|b| (peer(b), V::GaugeF(f64::from(b.info.detection_time_us) / 1e6))),
        )
    }
}

/// Connection sync: peers alive, records by direction, resends, overflow, refused datagrams, takeovers.
fn sync(e: &mut DescriptorEncoder, v: &SyncView) -> fmt::Result {
    family(
        e,
        "anylb_sync_ready",
        "1 when the node has its connections back and its local addresses are its own.",
        None,
        MetricType::Gauge,
        [(vec![], gauge(v.ready))],
    )?;
    family(
        e,
        "anylb_sync_takeovers",
        "Lost nodes whose local addresses this node took over.",
        None,
        MetricType::Counter,
        [(vec![], V::Counter(v.takeovers))],
    )?;
    family(
        e,
        "anylb_sync_datagrams_refused",
        "Sync datagrams refused, by reason.",
        None,
        MetricType::Counter,
        [
            ("bad_tag", v.bad_tag),
            ("malformed", v.malformed),
            ("stranger", v.strangers),
        ]
        .map(|(r, n)| (vec![("reason", r.to_owned())], V::Counter(n))),
    )?;
    type Get = fn(&super::sync::PeerView) -> V;
    let per_peer: [(&str, MetricType, &str, Get); 7] = [
        (
            "anylb_sync_peer_alive",
            MetricType::Gauge,
            "1 when the peer was heard within dead_after.",
            |p| gauge(p.alive),
        ),
        (
            "anylb_sync_records_held",
            MetricType::Gauge,
            "The peer's connection records held here.",
            |p| V::Gauge(p.records_held as i64),
        ),
        (
            "anylb_sync_records_sent",
            MetricType::Counter,
            "Records sent to the peer (first transmissions).",
            |p| V::Counter(p.counters.records_sent),
        ),
        (
            "anylb_sync_records_acked",
            MetricType::Counter,
            "Records the peer acknowledged.",
            |p| V::Counter(p.counters.records_acked),
        ),
        (
            "anylb_sync_resent",
            MetricType::Counter,
            "Datagrams sent to the peer again after their timeout.",
            |p| V::Counter(p.counters.resent),
        ),
        (
            "anylb_sync_overflow",
            MetricType::Counter,
            "Records not sent to the peer: window full and rate bound reached.",
            |p| V::Counter(p.counters.overflow),
        ),
        (
            "anylb_sync_datagrams_received",
            MetricType::Counter,
            "Datagrams accepted from the peer.",
            |p| V::Counter(p.counters.received),
        ),
    ];
    for (name, kind, help, get) in per_peer {
        family(
            e,
            name,
            help,
            None,
            kind,
            v.peers.iter().map(|p| (vec![("peer", p.name.clone())], get(p))),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use anylb_healthcheck::monitor::Key;
    use anylb_healthcheck::state::Health;

    use super::*;

    /// The page of a snapshot, parsed by Prometheus's own Python parsers: (name, labels, value) per sample.
    fn parsed(page: &str) -> Result<Vec<serde_json::Value>, String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/parse_metrics.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("python3 (Debian python3-prometheus-client): {e}"))?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(page.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    fn snapshot() -> Snapshot {
        let traffic = BackendCounters {
            connections: 3,
            active: 2,
            created: 7,
            in_packets: 10,
            in_bytes: 1000,
            out_packets: 8,
            out_bytes: 9000,
        };
        let mut durations = Durations::default();
        durations.record(std::time::Duration::from_millis(3));
        let backend = |service: &str, address: &str| BackendStatus {
            key: Key {
                service: service.into(),
                address: address.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                port: 80,
            },
            health: Health::Up,
            drained: false,
            weight: 100,
            effective_weight: 100,
            last_result: Some("ok".into()),
            last_check_ms: Some(3.0),
            last_failure: None,
            checks: 1,
            failures: 0,
            durations: durations.clone(),
            transitions: Vec::new(),
        };
        Snapshot {
            workers: vec![Stats::default(), Stats::default()],
            tx_refused: 0,
            reloads: [2, 1],
            counters: NodeCounters {
                services: vec![anylb_dataplane::counters::ServiceStats {
                    name: "we\"b x\\".into(),
                    vip: std::net::IpAddr::from([203, 0, 113, 10]),
                    port: 80,
                    protocol: "tcp",
                    counters: traffic,
                    refused: anylb_dataplane::counters::Refused {
                        rate_limited: 4,
                        ..Default::default()
                    },
                    backends: vec![anylb_dataplane::counters::BackendStats {
                        address: "2001:db8::1".parse().unwrap_or(std::net::IpAddr::from([0; 16])),
                        port: 80,
                        counters: traffic,
                    }],
                }],
                ..NodeCounters::default()
            },
            ports: Vec::new(),
            bgp: None,
            backends: vec![
                backend("we\"b x\\", "2001:db8::1"),
                backend("web", "198.51.100.1"),
            ],
            services: Vec::new(),
            sync: Some(SyncView {
                node: "lb1".into(),
                ready: true,
                peers: Vec::new(),
                takeovers: 0,
                last_change_ago_ms: None,
                bad_tag: 0,
                malformed: 0,
                strangers: 0,
            }),
        }
    }

    fn text(s: Snapshot) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(s));
        let mut o = String::new();
        prometheus_client::encoding::text::encode(&mut o, &r).unwrap_or_default();
        o
    }

    #[test]
    fn the_page_passes_prometheus_parsers_with_hostile_labels() {
        let page = text(snapshot());
        let samples = parsed(&page).unwrap_or_else(|e| panic!("{e}\n{page}"));
        let find = |name: &str, label: &str, value: &str| {
            samples
                .iter()
                .find(|s| s["name"] == name && s["labels"][label] == value)
                .unwrap_or_else(|| panic!("no {name}{{{label}={value:?}}} in\n{page}"))
                .clone()
        };
        // The quote and backslash come back as they were; IPv6 backends are bracketed.
        let up = find("anylb_backend_up", "service", "we\"b x\\");
        assert_eq!(up["labels"]["backend"], "[2001:db8::1]:80");
        assert_eq!(up["value"].as_f64(), Some(1.0));
        let bucket =
            |le: &str| find("anylb_health_check_duration_seconds_bucket", "le", le)["value"].as_f64();
        assert_eq!(
            (bucket("0.0025"), bucket("0.005"), bucket("+Inf")),
            (Some(0.0), Some(1.0), Some(1.0))
        );
        assert_eq!(
            find("anylb_build_info", "version", env!("CARGO_PKG_VERSION"))["value"],
            1.0
        );
        assert!(samples
            .iter()
            .any(|s| s["name"] == "anylb_sync_ready" && s["value"].as_f64() == Some(1.0)));
        // Counters and gauges of one name would clash: every counter ends in _total, no gauge does.
        assert!(
            page.contains("anylb_connections_created_total{worker=\"1\"} 0"),
            "{page}"
        );
        assert!(
            page.contains("anylb_worker_packets_total{worker=\"0\",dir=\"rx\"} 0"),
            "{page}"
        );
        let sample = |name: &str, labels: &[(&str, &str)]| {
            samples
                .iter()
                .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
                .and_then(|s| s["value"].as_f64())
        };
        let b = [("backend", "[2001:db8::1]:80"), ("dir", "out")];
        assert_eq!(sample("anylb_backend_bytes_total", &b), Some(9000.0));
        assert_eq!(
            sample("anylb_service_connections", &[("state", "inactive")]),
            Some(1.0)
        );
        assert_eq!(
            sample("anylb_service_connections_scheduled_total", &[]),
            Some(7.0)
        );
        assert_eq!(sample("anylb_reloads_total", &[("result", "refused")]), Some(1.0));
        assert_eq!(
            sample("anylb_service_refused_total", &[("reason", "rate_limited")]),
            Some(4.0)
        );
    }

    #[test]
    fn the_parsers_refuse_what_the_old_page_had() {
        // The checker itself: a counter and a gauge sharing a name, and an unescaped quote, are refused.
        let clash = "# TYPE anylb_connections counter\nanylb_connections_total 1\n# TYPE anylb_connections gauge\nanylb_connections 1\n# EOF\n";
        assert!(parsed(clash).is_err());
        let unescaped = "# TYPE anylb_backend_up gauge\nanylb_backend_up{service=\"we\"b\"} 1\n# EOF\n";
        assert!(parsed(unescaped).is_err());
    }
}
