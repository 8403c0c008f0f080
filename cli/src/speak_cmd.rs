//! `anylb speak`: the BGP speaker on its own, as ExaBGP or GoBGP's CLI would be used: announce prefixes to
//! neighbours, watch the sessions and what they send. For checking upstream sessions before a node goes live,
//! and for interop tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anylb_routing::bfd;
use anylb_routing::config::{NeighborConfig, SpeakerConfig};
use anylb_routing::rib::Announcement;
use anylb_routing::speaker::Speaker;

use crate::node::assemble::read_password_file;
use clap::Args;
use ipnet::IpNet;

/// Arguments of `anylb speak`.
#[derive(Debug, Args)]
pub struct SpeakArgs {
    /// Local AS.
    #[arg(long)]
    asn: u32,
    /// BGP identifier.
    #[arg(long)]
    router_id: Ipv4Addr,
    /// Address to listen on for BGP (none: active sessions only).
    #[arg(long)]
    listen: Option<SocketAddr>,
    // The brackets are the help text's usual notation for optional parts, not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// A neighbour: ADDRESS,asn=N[,passive][,hold=SECS][,ipv4=0][,ipv6][,nh6=ADDR][,local=ADDR][,max-prefix=N]
    /// [,ttl=N][,gtsm[=HOPS]][,password-file=PATH][,bfd=MS[xMULT]] (BFD at MS milliseconds, multiplier 3)
    #[arg(long = "neighbor", required = true)]
    neighbors: Vec<String>,
    /// Prefixes to announce: PREFIX, or PREFIX*N for N consecutive prefixes of that length.
    #[arg(long = "announce", value_parser = parse_announce)]
    announce: Vec<(IpNet, Option<u32>)>,
    /// Announce this many consecutive prefixes of each --announce prefix's length (unless it says *N).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Communities (ASN:VALUE or well-known names) added to the announcements.
    #[arg(long = "community")]
    communities: Vec<anylb_conf::Community>,
    /// Large communities (G:L1:L2).
    #[arg(long = "large-community")]
    large_communities: Vec<anylb_conf::LargeCommunity>,
    /// MED of the announcements.
    #[arg(long)]
    med: Option<u32>,
    /// Withdraw everything after this many seconds (and keep running).
    #[arg(long)]
    withdraw_after: Option<u64>,
    /// Stop after this many seconds (default: run until SIGTERM / SIGINT).
    #[arg(long)]
    duration: Option<u64>,
    /// Print the sessions (and, with --json, received routes) every this many seconds.
    #[arg(long, default_value_t = 1)]
    status_every: u64,
    /// Advertise graceful restart (RFC 4724) with this restart time in seconds.
    #[arg(long)]
    graceful_restart: Option<u16>,
    /// Set the restarting (R) bit: this run follows a restart, the peers keep our routes until we re-announce.
    #[arg(long, requires = "graceful_restart")]
    restarting: bool,
}

/// A `--neighbor` argument: the session, and the BFD timers when it asks for BFD.
fn parse_neighbor(s: &str) -> Result<(NeighborConfig, Option<bfd::Params>), String> {
    let mut parts = s.split(',');
    let addr: IpAddr = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("{s}: neighbour address: {e}"))?;
    let mut n = NeighborConfig::new(addr, 0);
    let mut bfd = None;
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{s}: {k}: {e}"));
        match k {
            "asn" => n.remote_asn = u32::try_from(num(v)?).map_err(|e| format!("{s}: asn: {e}"))?,
            "passive" => n.passive = true,
            "hold" => {
                n.hold_time = Duration::from_secs(num(v)?);
                n.keepalive = n.hold_time / 3;
            }
            "ipv4" => n.ipv4 = v != "0",
            "ipv6" => n.ipv6 = v != "0",
            "nh6" => n.ipv6_next_hop = Some(v.parse::<Ipv6Addr>().map_err(|e| format!("{s}: nh6: {e}"))?),
            "local" => n.local_address = Some(v.parse().map_err(|e| format!("{s}: local: {e}"))?),
            "max-prefix" => {
                n.max_prefix = Some(u32::try_from(num(v)?).map_err(|e| format!("{s}: max-prefix: {e}"))?)
            }
            "ttl" => n.ttl = Some(u8::try_from(num(v)?).map_err(|e| format!("{s}: ttl: {e}"))?),
            "gtsm" if v.is_empty() => n.gtsm_hops = Some(1),
            "gtsm" => {
                n.gtsm_hops = Some(
                    u8::try_from(num(v)?)
                        .ok()
                        .filter(|h| *h > 0)
                        .ok_or_else(|| format!("{s}: gtsm: hops must be 1-255"))?,
                )
            }
            "bfd" => {
                let (ms, mult) = v.split_once('x').unwrap_or((v, "3"));
                let ms = Duration::from_millis(num(ms)?);
                let multiplier = u8::try_from(num(mult)?)
                    .ok()
                    .filter(|m| *m > 0)
                    .ok_or_else(|| format!("{s}: bfd: multiplier must be 1-255"))?;
                if ms < Duration::from_millis(10) {
                    return Err(format!("{s}: bfd: at least 10 ms"));
                }
                bfd = Some(bfd::Params {
                    min_tx: ms,
                    min_rx: ms,
                    multiplier,
                });
            }
            "password-file" => {
                n.md5_key =
                    Some(read_password_file(std::path::Path::new(v)).map_err(|e| format!("{s}: {e}"))?)
            }
            other => return Err(format!("{s}: unknown neighbour option {other:?}")),
        }
    }
    if n.remote_asn == 0 {
        return Err(format!("{s}: asn=N is required"));
    }
    Ok((n, bfd))
}

/// The source address the kernel would use toward `to`.
fn source_address(to: IpAddr) -> std::io::Result<IpAddr> {
    let any: IpAddr = if to.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let s = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
    s.connect(SocketAddr::new(to, 3784))?;
    Ok(s.local_addr()?.ip())
}

/// `PREFIX` or `PREFIX*N`.
fn parse_announce(s: &str) -> Result<(IpNet, Option<u32>), String> {
    let (p, n) = match s.split_once('*') {
        Some((p, n)) => (
            p,
            Some(
                n.parse::<u32>()
                    .map_err(|e| format!("{s}: count after '*': {e}"))?,
            ),
        ),
        None => (s, None),
    };
    Ok((p.parse().map_err(|e| format!("{s}: {e}"))?, n))
}

/// The `count` prefixes starting at `p`, each of `p`'s length.
fn expand(p: IpNet, count: u32) -> Vec<IpNet> {
    (0..count)
        .filter_map(|i| match p {
            IpNet::V4(n) => {
                let step = 1u64 << (32 - u32::from(n.prefix_len()));
                let base = u64::from(u32::from(n.network()));
                let a = u32::try_from(base + u64::from(i) * step).ok()?;
                ipnet::Ipv4Net::new(Ipv4Addr::from(a), n.prefix_len())
                    .ok()
                    .map(IpNet::V4)
            }
            IpNet::V6(n) => {
                let step = 1u128.checked_shl(128 - u32::from(n.prefix_len())).unwrap_or(0);
                let a = u128::from(n.network()).checked_add(u128::from(i) * step)?;
                ipnet::Ipv6Net::new(Ipv6Addr::from(a), n.prefix_len())
                    .ok()
                    .map(IpNet::V6)
            }
        })
        .collect()
}

/// Runs `anylb speak`.
pub fn run(a: SpeakArgs, json: bool) -> ExitCode {
    let (neighbors, bfd): (Vec<_>, Vec<_>) = match a
        .neighbors
        .iter()
        .map(|s| parse_neighbor(s))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(n) => n.into_iter().unzip(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // BFD from the session's local address: configured, or the one the kernel would route from.
    let mut bfd_peers = Vec::new();
    for (n, params) in neighbors.iter().zip(bfd) {
        let Some(params) = params else { continue };
        let local = match n.local_address {
            Some(l) => l,
            None => match source_address(n.address) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: BFD to {}: no local address: {e}", n.address);
                    return ExitCode::from(1);
                }
            },
        };
        bfd_peers.push(bfd::Peer {
            address: n.address,
            local,
            params,
        });
    }
    let cfg = SpeakerConfig {
        local_asn: a.asn,
        router_id: a.router_id,
        listen: a.listen,
        graceful_restart: a.graceful_restart,
        // The speaker announces routes for forwarding done elsewhere, which its restart does not touch.
        keeps_forwarding: true,
        restarting: a.restarting,
        neighbors,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let speaker = match Speaker::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot start the BGP speaker: {e}");
                return ExitCode::from(1);
            }
        };
        let bfd_tasks = speaker.attach_bfd(bfd_peers, 1);
        let prefixes: Vec<IpNet> = a.announce.iter().flat_map(|(p, n)| expand(*p, n.unwrap_or(a.count))).collect();
        let ann = Announcement {
            communities: a.communities.iter().map(|c| c.0).collect(),
            large_communities: a.large_communities.iter().map(|c| (c.0, c.1, c.2)).collect(),
            med: a.med,
            prepend: 0,
        };
        speaker.announce(&prefixes, &ann);
        tracing::info!(prefixes = prefixes.len(), "announcing");
        let start = tokio::time::Instant::now();
        let mut withdrawn = false;
        let mut tick = tokio::time::interval(Duration::from_secs(a.status_every.max(1)));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tokio::signal::ctrl_c() => break,
                _ = term() => break,
            }
            let el = start.elapsed().as_secs();
            if let Some(w) = a.withdraw_after {
                if el >= w && !withdrawn {
                    speaker.withdraw(&prefixes);
                    withdrawn = true;
                    tracing::info!("withdrawn");
                }
            }
            if json {
                let v = serde_json::json!({ "neighbors": speaker.neighbors(), "received": speaker.received(None).unwrap_or_default().iter().map(|r| serde_json::json!({"neighbor": r.neighbor, "prefix": r.prefix, "next_hop": r.route.next_hop, "stale": r.stale})).collect::<Vec<_>>() });
                println!("{v}");
            } else {
                for n in speaker.neighbors() {
                    println!("{} AS{} {} rcvd={} sent={}", n.address, n.remote_asn, n.state.name(), n.prefixes_rcvd, n.prefixes_sent);
                }
            }
            if a.duration.is_some_and(|d| el >= d) {
                break;
            }
        }
        speaker.stop("anylb speak stopping");
        bfd_tasks.iter().for_each(tokio::task::JoinHandle::abort);
        tokio::time::sleep(Duration::from_millis(200)).await;
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM.
async fn term() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_options_parse_gtsm_ttl_and_password_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").expect("write");
        let (n, bfd) = parse_neighbor(&format!(
            "192.0.2.1,asn=64512,gtsm,ttl=3,bfd=100x4,password-file={}",
            f.display()
        ))
        .expect("parses");
        assert_eq!(n.gtsm_hops, Some(1));
        assert_eq!(n.ttl, Some(3));
        assert_eq!(
            n.md5_key.as_ref().map(anylb_routing::config::Md5Key::bytes),
            Some(&b"s3cret"[..])
        );
        assert_eq!(format!("{:?}", n.md5_key), "Some(Md5Key(<6 bytes>))");
        let b = bfd.expect("bfd");
        assert_eq!(
            (b.min_tx, b.min_rx, b.multiplier),
            (Duration::from_millis(100), Duration::from_millis(100), 4)
        );
        let (n, bfd) = parse_neighbor("192.0.2.1,asn=64512,gtsm=2,bfd=300").expect("parses");
        assert_eq!((n.gtsm_hops, bfd.map(|b| b.multiplier)), (Some(2), Some(3)));
    }

    #[test]
    fn announcements_take_an_optional_count() {
        let one = "198.51.100.0/32".parse::<IpNet>().expect("prefix");
        assert_eq!(parse_announce("198.51.100.0/32"), Ok((one, None)));
        let (p, n) = parse_announce("2001:db8:ffff::/128*1000").expect("parses");
        assert_eq!(expand(p, n.unwrap_or(1)).len(), 1000);
        assert!(parse_announce("198.51.100.0/32*x")
            .expect_err("bad count")
            .contains("count after '*'"));
        assert!(parse_announce("198.51.100.0/33").is_err());
    }

    #[test]
    fn bad_neighbour_options_are_explained() {
        let e = parse_neighbor("192.0.2.1,asn=64512,bfd=5").expect_err("too fast");
        assert!(e.contains("at least 10 ms"), "{e}");
        let e = parse_neighbor("192.0.2.1,asn=64512,bfd=100x0").expect_err("no multiplier");
        assert!(e.contains("multiplier must be 1-255"), "{e}");
        let e = parse_neighbor("192.0.2.1,asn=64512,gtsm=0").expect_err("0 hops");
        assert!(e.contains("hops must be 1-255"), "{e}");
        let e = parse_neighbor("192.0.2.1,asn=64512,password-file=/nonexistent/pw").expect_err("no file");
        assert!(e.contains("password file /nonexistent/pw"), "{e}");
    }
}
