//! The operator CLI against a running node: `anylb <noun> [object] [verb]`, tables for people (FRR-like), JSON
//! with `-j`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Subcommand;
use serde_json::Value;

use crate::api::{self, request, ClientError};

/// BGP commands.
#[derive(Debug, Subcommand)]
pub enum BgpCmd {
    /// Sessions: router id and AS, then Neighbor V AS MsgRcvd MsgSent Up/Down State/PfxRcd PfxSnt Desc.
    Summary,
    /// One neighbour in detail (all when no address).
    Neighbor {
        /// Neighbour address.
        address: Option<IpAddr>,
    },
    /// Routes advertised or received.
    Routes {
        /// advertised or received.
        #[arg(value_parser = ["advertised", "received"])]
        which: String,
        /// Only this neighbour (received routes).
        #[arg(long)]
        neighbor: Option<IpAddr>,
    },
}

/// Backend actions.
#[derive(Debug, Subcommand)]
pub enum BackendCmd {
    /// Stop sending new connections to a backend (its connections continue).
    Drain {
        /// Service.
        service: String,
        /// Backend ADDRESS:PORT.
        backend: SocketAddr,
    },
    /// Let a drained backend take connections again.
    Undrain {
        /// Service.
        service: String,
        /// Backend ADDRESS:PORT.
        backend: SocketAddr,
    },
}

/// Node actions.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Graceful withdraw of every route of the node (GRACEFUL_SHUTDOWN community, wait, withdraw).
    Drain,
    /// Announce again.
    Undrain,
}

/// Finds the socket: `-s`, `$ANYLB_SOCKET`, or the only live `*.sock` in /run/anylb.
pub fn socket(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given.or_else(|| std::env::var_os("ANYLB_SOCKET").map(PathBuf::from)) {
        return Ok(p);
    }
    live_socket(Path::new("/run/anylb"))
}

/// The only `*.sock` in `dir` that a daemon answers on; the sockets of daemons that are gone (a stopped lab
/// leaves them) are passed over.
fn live_socket(dir: &Path) -> Result<PathBuf, String> {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .filter(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
                .collect()
        })
        .unwrap_or_default();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no live anylb daemon socket in {} (is `anylb run` running? use -s/--socket)",
            dir.display()
        )),
        many => Err(format!(
            "several daemon sockets in {} ({}); choose one with -s/--socket",
            dir.display(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

pub(crate) fn get(sock: &Path, path: &str) -> Result<Value, ClientError> {
    request(sock, "GET", path, None)
}

/// Prints rows as aligned columns.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == cells.len() {
                    c.clone()
                } else {
                    format!("{c:<width$}", width = w[i])
                }
            })
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn ago(v: &Value) -> String {
    let Some(t) = v.as_str().and_then(anylb_conf::json::parse_rfc3339) else {
        return "never".into();
    };
    let d = SystemTime::now().duration_since(t).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", d / 3600, (d / 60) % 60, d % 60)
}

pub(crate) fn out(json: bool, v: &Value, human: impl FnOnce(&Value)) -> ExitCode {
    if json {
        println!("{v:#}");
    } else {
        human(v);
    }
    ExitCode::SUCCESS
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}

/// `anylb bgp …`.
pub fn bgp(sock: &Path, json: bool, cmd: BgpCmd) -> Result<ExitCode, ClientError> {
    Ok(match cmd {
        BgpCmd::Summary => {
            let v = get(sock, "/v1/bgp/summary")?;
            out(json, &v, |v| {
                println!(
                    "BGP router identifier {}, local AS number {}",
                    s(&v["router_id"]),
                    s(&v["local_asn"])
                );
                println!(
                    "RIB entries {} (best paths received), {} announced\n",
                    s(&v["best_paths"]),
                    s(&v["advertised"])
                );
                let rows = rows_of(&v["neighbors"], |n| {
                    let state = s(&n["state"]);
                    let established = state == "Established";
                    let pfx = if established {
                        n["prefixes_rcvd"].to_string()
                    } else {
                        state
                    };
                    vec![
                        s(&n["address"]),
                        "4".into(),
                        s(&n["remote_asn"]),
                        s(&n["msgs_rcvd"]),
                        s(&n["msgs_sent"]),
                        ago(&n["since"]),
                        pfx,
                        if established {
                            n["prefixes_sent"].to_string()
                        } else {
                            "0".into()
                        },
                        n["description"].as_str().unwrap_or("N/A").to_owned(),
                    ]
                });
                table(
                    &[
                        "Neighbor",
                        "V",
                        "AS",
                        "MsgRcvd",
                        "MsgSent",
                        "Up/Down",
                        "State/PfxRcd",
                        "PfxSnt",
                        "Desc",
                    ],
                    &rows,
                );
                println!("\nTotal number of neighbors {}", rows.len());
            })
        }
        BgpCmd::Neighbor { address } => {
            let v = get(sock, "/v1/bgp/neighbors")?;
            let list: Vec<Value> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| address.is_none_or(|a| s(&n["address"]) == a.to_string()))
                .cloned()
                .collect();
            if list.is_empty() && address.is_some() {
                return Err(ClientError::Api(format!(
                    "no neighbour {}",
                    address.map(|a| a.to_string()).unwrap_or_default()
                )));
            }
            out(json, &Value::Array(list.clone()), |_| {
                for n in &list {
                    println!(
                        "BGP neighbor is {}, remote AS {}{}",
                        s(&n["address"]),
                        s(&n["remote_asn"]),
                        n["description"]
                            .as_str()
                            .map(|d| format!(", {d}"))
                            .unwrap_or_default()
                    );
                    let up = if n["state"] == "Established" {
                        "up for"
                    } else {
                        "since"
                    };
                    println!("  BGP state = {}, {up} {}", s(&n["state"]), ago(&n["since"]));
                    if let Some(neg) = n["negotiated"].as_object() {
                        println!("  Peer router id {}, hold time {}s, keepalive {}s, 4-octet AS {}, route refresh {}", s(&neg["peer_router_id"]), neg["hold_time_secs"], neg["keepalive_secs"], neg["four_octet_as"], neg["route_refresh"]);
                        println!("  Address families: {}", families(&neg["families"]));
                        match neg["peer_graceful_restart"].as_object() {
                            Some(gr) => println!(
                                "  Peer graceful restart: restart time {}s, notification (N bit) {}, forwarding kept for {}",
                                s(&gr["time"]),
                                gr["notification"],
                                Some(
                                    gr["families"]
                                        .as_array()
                                        .into_iter()
                                        .flatten()
                                        .map(|f| format!("{}: {}", s(&f["family"]), if f["forwarding"] == true { "yes" } else { "no" }))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                                .filter(|l| !l.is_empty())
                                .unwrap_or_else(|| "no family".into())
                            ),
                            None => println!("  Peer graceful restart: not offered"),
                        }
                    }
                    if let Some(c) = n["connection"].as_array() {
                        println!("  Local {}, remote {}", s(&c[0]), s(&c[1]));
                    }
                    println!(
                        "  Messages received {}, sent {}; prefixes received {}, sent {}",
                        s(&n["msgs_rcvd"]),
                        s(&n["msgs_sent"]),
                        s(&n["prefixes_rcvd"]),
                        s(&n["prefixes_sent"])
                    );
                    if let Some(by) = n["prefixes_sent_by_family"].as_object().filter(|m| !m.is_empty()) {
                        let per: Vec<String> = by.iter().map(|(f, c)| format!("{f} {c}")).collect();
                        println!("  Prefixes sent by family: {}", per.join(", "));
                    }
                    println!(
                        "  Stale prefixes {}; updates not used (malformed or looped) {}",
                        s(&n["prefixes_stale"]),
                        s(&n["updates_withdrawn"])
                    );
                    println!("  Connections dropped {}", s(&n["flaps"]));
                    match n["last_reset"]["message"].as_str() {
                        Some(e) => println!("  Last reset {} ago, due to {e}", ago(&n["last_reset"]["at"])),
                        None => println!("  Last reset never"),
                    }
                    if let Some(kept) = n["graceful_restart"].as_array().filter(|a| !a.is_empty()) {
                        let per: Vec<String> = kept
                            .iter()
                            .map(|k| {
                                format!(
                                    "{} {}",
                                    s(&k["family"]),
                                    if k["kept"] == true { "kept" } else { "flushed" }
                                )
                            })
                            .collect();
                        println!("  Routes at the last reset: {}", per.join(", "));
                    }
                }
            })
        }
        BgpCmd::Routes { which, neighbor } => {
            if which == "advertised" {
                let v = get(sock, "/v1/bgp/routes/advertised")?;
                out(json, &v, |v| {
                    let rows = rows_of(v, |r| {
                        let list = |x: &Value| {
                            x.as_array()
                                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" "))
                                .unwrap_or_default()
                        };
                        vec![
                            s(&r["prefix"]),
                            list(&r["communities"]),
                            list(&r["large_communities"]),
                            s(&r["med"]),
                        ]
                    });
                    table(&["Prefix", "Communities", "Large communities", "MED"], &rows);
                })
            } else {
                let q = neighbor.map(|n| format!("?neighbor={n}")).unwrap_or_default();
                let v = get(sock, &format!("/v1/bgp/routes/received{q}"))?;
                out(json, &v, |v| {
                    let rows = rows_of(v, |r| {
                        vec![
                            if r["stale"] == true { "S" } else { "*" }.to_owned(),
                            s(&r["prefix"]),
                            s(&r["next_hop"]),
                            s(&r["neighbor"]),
                            s(&r["local_pref"]),
                            s(&r["med"]),
                            s(&r["as_path"]),
                        ]
                    });
                    println!("Status codes: * valid, S stale (the neighbour is restarting)\n");
                    table(
                        &["", "Prefix", "Next hop", "From", "LocPrf", "MED", "Path"],
                        &rows,
                    );
                })
            }
        }
    })
}

/// A list of family names.
fn families(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Microseconds as milliseconds.
fn ms(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".into(), |us| format!("{}", us / 1000))
}

/// `anylb bfd`: every BFD session, as FRR's `show bfd peers brief` with the timers.
pub fn bfd(sock: &Path, json: bool) -> Result<ExitCode, ClientError> {
    let v = get(sock, "/v1/bfd")?;
    Ok(out(json, &v, |v| {
        let rows = rows_of(v, |b| {
            let last = match &b["last_down"] {
                Value::Null => "-".into(),
                d => format!("{} ({} ago)", s(&d["reason"]), ago(&d["at"])),
            };
            vec![
                s(&b["peer"]),
                s(&b["local"]),
                format!("{}/{}", s(&b["local_disc"]), s(&b["remote_disc"])),
                s(&b["state"]),
                ago(&b["since"]),
                format!("{}/{}", ms(&b["tx_interval_us"]), ms(&b["rx_interval_us"])),
                format!("{}/{}", s(&b["multiplier"]), s(&b["remote_multiplier"])),
                ms(&b["detection_time_us"]),
                format!("{}/{}", s(&b["up_count"]), s(&b["down_count"])),
                last,
            ]
        });
        table(
            &[
                "Peer",
                "Local",
                "Disc (local/remote)",
                "State",
                "Since",
                "TX/RX ms",
                "Mult",
                "Detect ms",
                "Up/Down",
                "Last down",
            ],
            &rows,
        );
    }))
}

/// `anylb cluster`.
pub fn cluster(sock: &Path, json: bool) -> Result<ExitCode, ClientError> {
    let v = get(sock, "/v1/cluster")?;
    Ok(out(json, &v, |v| {
        println!(
            "Node {}, {}; {} takeovers{}; refused datagrams: {} bad tag, {} malformed, {} from strangers\n",
            s(&v["node"]),
            if v["ready"].as_bool() == Some(true) {
                "ready"
            } else {
                "not ready (resyncing or its addresses served elsewhere)"
            },
            s(&v["takeovers"]),
            match v["last_change_ago_ms"].as_u64() {
                Some(ms) => format!(", last change {} ago", ago_ms(ms)),
                None => String::new(),
            },
            s(&v["bad_tag"]),
            s(&v["malformed"]),
            s(&v["strangers"]),
        );
        let rows = rows_of(&v["peers"], |p| {
            let c = &p["counters"];
            let yes = |f: &str| if p[f].as_bool() == Some(true) { "yes" } else { "no" }.to_owned();
            vec![
                s(&p["name"]),
                s(&p["address"]),
                if p["alive"].as_bool() == Some(true) {
                    "alive"
                } else {
                    "lost"
                }
                .to_owned(),
                p["last_heard_ms"].as_u64().map_or("never".into(), ago_ms),
                yes("holds_ours"),
                yes("we_hold"),
                s(&p["records_held"]),
                if p["taken_over"].as_bool() == Some(true) {
                    "served here"
                } else if p["serves_ours"].as_bool() == Some(true) {
                    "serves ours"
                } else {
                    "-"
                }
                .to_owned(),
                format!("{}/{}", s(&c["records_sent"]), s(&c["records_acked"])),
                s(&p["in_flight"]),
                s(&c["resent"]),
            ]
        });
        table(
            &[
                "Peer",
                "Address",
                "State",
                "Heard",
                "Holds ours",
                "We hold",
                "Records held",
                "Addresses",
                "Sent/Acked",
                "In flight",
                "Resent",
            ],
            &rows,
        );
    }))
}

/// Milliseconds as an age for people.
fn ago_ms(ms: u64) -> String {
    let d = ms / 1000;
    if d < 10 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{:02}:{:02}:{:02}", d / 3600, (d / 60) % 60, d % 60)
    }
}

/// `anylb route`.
pub fn route(sock: &Path, json: bool) -> Result<ExitCode, ClientError> {
    let v = get(sock, "/v1/routes")?;
    Ok(out(json, &v, |v| {
        let rows = rows_of(v, |r| {
            let code = match r["origin"].as_str() {
                Some("connected") => "C",
                Some("static") => "S",
                Some("fallback") => "F",
                Some("bgp") => "B",
                _ => "?",
            };
            vec![
                code.to_owned(),
                s(&r["prefix"]),
                r["next_hops"]
                    .as_array()
                    .map(|h| h.iter().map(s).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
            ]
        });
        println!("Codes: C connected, S static, F fallback static (BGP replaces it), B BGP\n");
        table(&["", "Prefix", "Next hops"], &rows);
    }))
}

/// `anylb neigh`.
pub fn neigh(sock: &Path, json: bool) -> Result<ExitCode, ClientError> {
    let v = get(sock, "/v1/neighbors")?;
    Ok(out(json, &v, |v| {
        let rows = rows_of(v, |n| {
            vec![
                s(&n["port"]),
                s(&n["address"]),
                n["mac"].as_str().unwrap_or("-").to_owned(),
                s(&n["state"]),
                s(&n["workers"]),
                s(&n["held"]),
            ]
        });
        table(&["Port", "Address", "MAC", "State", "Workers", "Held"], &rows);
    }))
}

/// `anylb services`.
pub fn services(sock: &Path, json: bool) -> Result<ExitCode, ClientError> {
    let v = get(sock, "/v1/services")?;
    Ok(out(json, &v, |v| {
        let rows = rows_of(v, |x| {
            vec![
                s(&x["name"]),
                host_port(
                    &s(&x["vip"]),
                    &match x["port"].as_u64() {
                        Some(0) => "all".to_owned(),
                        _ => s(&x["port"]),
                    },
                ),
                s(&x["protocol"]),
                s(&x["forwarding"]),
                s(&x["scheduler"]),
                format!("{}/{}", s(&x["healthy"]), s(&x["backends"])),
                s(&x["min_healthy"]),
                match (x["announced"] == Value::Bool(true), x["reason"].as_str()) {
                    (true, None) => "yes".into(),
                    (true, Some(r)) => format!("yes ({r})"),
                    (false, r) => format!("no ({})", r.unwrap_or("-")),
                },
            ]
        });
        table(
            &[
                "Service",
                "VIP",
                "Proto",
                "Forwarding",
                "Sched",
                "Healthy",
                "Min",
                "Announced",
            ],
            &rows,
        );
    }))
}

/// `anylb backends [SERVICE]` and `anylb health [SERVICE]`.
pub fn backends(
    sock: &Path,
    json: bool,
    service: Option<String>,
    history: bool,
) -> Result<ExitCode, ClientError> {
    let v = get(sock, &format!("/v1/backends{}", query(&[("service", service)])))?;
    Ok(out(json, &v, |v| {
        let list = v.as_array().cloned().unwrap_or_default();
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|b| {
                vec![
                    s(&b["key"]["service"]),
                    host_port(&s(&b["key"]["address"]), &s(&b["key"]["port"])),
                    s(&b["health"]),
                    if b["drained"] == Value::Bool(true) {
                        "drained".into()
                    } else {
                        "-".into()
                    },
                    format!("{}/{}", s(&b["effective_weight"]), s(&b["weight"])),
                    s(&b["checks"]),
                    s(&b["last_result"]),
                    b["last_check_ms"]
                        .as_f64()
                        .map_or_else(|| "-".into(), |ms| format!("{ms:.1}ms")),
                    match &b["last_failure"] {
                        Value::Null => "-".into(),
                        f => format!("{} ago: {}", ago(&f["at"]), s(&f["reason"])),
                    },
                ]
            })
            .collect();
        table(
            &[
                "Service",
                "Backend",
                "Health",
                "Admin",
                "Weight",
                "Checks",
                "Last check",
                "Took",
                "Last failure",
            ],
            &rows,
        );
        if history {
            for b in &list {
                let t = b["transitions"].as_array().cloned().unwrap_or_default();
                if t.is_empty() {
                    continue;
                }
                println!(
                    "\n{} {} transitions:",
                    s(&b["key"]["service"]),
                    host_port(&s(&b["key"]["address"]), &s(&b["key"]["port"]))
                );
                for x in t {
                    println!(
                        "  {} ago  -> {}  (check {}: {})",
                        ago(&x["at"]),
                        s(&x["to"]),
                        s(&x["check"]),
                        s(&x["reason"])
                    );
                }
            }
        }
    }))
}

/// Which connections `anylb conns` lists.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnsQuery {
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only to this backend: ADDRESS or ADDRESS:PORT.
    #[arg(long)]
    pub backend: Option<String>,
    /// Only from this client address.
    #[arg(long)]
    pub client: Option<IpAddr>,
    /// Only in this state (ESTABLISHED, SYN_RECV, TIME_WAIT, UDP, ...).
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many (the total that match is always given).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// A query string, percent-encoded.
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let enc = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// `anylb conns`: the first connections that match, then how many match in all.
pub fn conns(sock: &Path, json: bool, q: ConnsQuery) -> Result<ExitCode, ClientError> {
    let path = format!(
        "/v1/conns{}",
        query(&[
            ("service", q.service),
            ("backend", q.backend),
            ("client", q.client.map(|c| c.to_string())),
            ("state", q.state),
            ("limit", Some(q.limit.to_string())),
        ])
    );
    let v = get(sock, &path)?;
    let list: api::Conns =
        serde_json::from_value(v.clone()).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(out(json, &v, |_| {
        let rows: Vec<Vec<String>> = list
            .connections
            .iter()
            .map(|c| {
                vec![
                    c.proto.clone(),
                    c.client.to_string(),
                    c.vip.to_string(),
                    c.local.to_string(),
                    c.backend.to_string(),
                    // A SYN-proxied connection says so after its state (ESTABLISHED+sp).
                    match &c.syn_proxy {
                        Some(_) => format!("{}+sp", c.state),
                        None => c.state.clone(),
                    },
                    format!("{}s", c.expires_in_ms / 1000),
                    c.worker.to_string(),
                ]
            })
            .collect();
        table(
            &[
                "Pro", "Client", "VIP", "Local", "Backend", "State", "Expire", "Worker",
            ],
            &rows,
        );
        let more = if list.connections.len() < list.matched {
            " (--limit to see more)"
        } else {
            ""
        };
        println!("{} of {} connections{more}", list.connections.len(), list.matched);
    }))
}

/// `anylb stats`.
/// `anylb status`.
pub fn status(sock: &Path, json: bool) -> Result<ExitCode, ClientError> {
    let v = get(sock, "/v1/status")?;
    Ok(out(json, &v, |v| {
        println!(
            "node {} of cluster {}: up {}s, {} workers ({} steering), forwarding {}, drained {}, config {}",
            s(&v["node"]),
            s(&v["cluster"]),
            s(&v["uptime_secs"]),
            s(&v["workers"]),
            s(&v["steering"]),
            s(&v["forwarding"]),
            s(&v["drained"]),
            s(&v["config"])
        );
    }))
}

fn done(json: bool, v: &Value) -> ExitCode {
    out(json, v, |v| {
        println!("{}", s(&v["message"]));
        for d in v["details"].as_array().into_iter().flatten() {
            println!("  {}", s(d));
        }
    })
}

/// `anylb backend drain|undrain`.
pub fn backend(sock: &Path, json: bool, cmd: BackendCmd) -> Result<ExitCode, ClientError> {
    let (service, b, drained) = match cmd {
        BackendCmd::Drain { service, backend } => (service, backend, true),
        BackendCmd::Undrain { service, backend } => (service, backend, false),
    };
    let body = serde_json::to_value(api::DrainBackend {
        service,
        address: b.ip(),
        port: b.port(),
        drained,
    })
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(done(
        json,
        &request(sock, "POST", "/v1/backends/drain", Some(&body))?,
    ))
}

/// `anylb node drain|undrain`.
pub fn node(sock: &Path, json: bool, cmd: NodeCmd) -> Result<ExitCode, ClientError> {
    let body = serde_json::json!({ "drained": matches!(cmd, NodeCmd::Drain) });
    Ok(done(json, &request(sock, "POST", "/v1/node/drain", Some(&body))?))
}

/// `anylb reload`.
pub fn reload(sock: &Path, json: bool) -> Result<ExitCode, ClientError> {
    Ok(done(json, &request(sock, "POST", "/v1/reload", None)?))
}

/// Runs a client command, turning errors into a message and exit code 1.
pub fn run(
    sock: Option<PathBuf>,
    json: bool,
    f: impl FnOnce(&Path) -> Result<ExitCode, ClientError>,
) -> ExitCode {
    let r = socket(sock).and_then(|sock| f(&sock).map_err(|e| e.to_string()));
    match r {
        Ok(c) => c,
        // For machines, the error is JSON on stdout too (`{"error": "…"}`), with the same exit status.
        Err(e) if json => {
            println!("{}", serde_json::json!({ "error": e.to_string() }));
            fail(e)
        }
        Err(e) => fail(e),
    }
}

/// One table row per element of the JSON array `v`.
fn rows_of(v: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    v.as_array().into_iter().flatten().map(row).collect()
}

/// `host:port`, with an IPv6 address in brackets.
pub(crate) fn host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_sockets_of_daemons_that_are_gone_are_passed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = UnixListener::bind(dir.path().join("old.sock")).expect("bind");
        drop(dead);
        // Another test's thread may be starting a process at this moment: the child holds a copy of the
        // listener until it executes its program (which closes it). Wait until nothing answers on the socket.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::os::unix::net::UnixStream::connect(dir.path().join("old.sock")).is_ok()
            && std::time::Instant::now() < end
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let e = live_socket(dir.path()).expect_err("only a dead socket");
        assert!(e.starts_with("no live anylb daemon socket"), "{e}");
        let _live = UnixListener::bind(dir.path().join("lb1.sock")).expect("bind");
        assert_eq!(live_socket(dir.path()), Ok(dir.path().join("lb1.sock")));
        let _other = UnixListener::bind(dir.path().join("lb2.sock")).expect("bind");
        let e = live_socket(dir.path()).expect_err("two live sockets");
        assert!(
            e.contains("several daemon sockets") && !e.contains("old.sock"),
            "{e}"
        );
    }
}
