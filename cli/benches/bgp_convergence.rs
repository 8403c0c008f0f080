//! How fast FRR holds what the speaker announces: the time from the session's Established until FRR has
//! received all of 10,000 prefixes (IPv6 /128s: the IPv4 documentation ranges hold only 768 addresses).
//! Needs root and FRR, like the interop tests.
//!
//! Run: `cargo bench -p anylb --bench bgp_convergence` (add `-- N` for another prefix count). Prints
//! `BENCH bgp_convergence_10000_prefixes <ms> ms`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use topology_tests::frr::Frr;
use topology_tests::netns::{unique_prefix, veth, Netns};

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let p = unique_prefix("bc");
    let r = Netns::new(&format!("{p}r")).unwrap();
    let mut lb = Netns::new(&format!("{p}l")).unwrap();
    veth(&r, "eth0", &lb, "eth0").unwrap();
    r.ip(&["addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad"])
        .unwrap();
    lb.ip(&["addr", "add", "2001:db8:1::11/64", "dev", "eth0", "nodad"])
        .unwrap();
    let frr = Frr::start(
        &r,
        "frr defaults traditional\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
         neighbor 2001:db8:1::11 remote-as 65010\n neighbor 2001:db8:1::11 timers connect 1\n\
         address-family ipv6 unicast\n  neighbor 2001:db8:1::11 activate\n exit-address-family\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("speak.log");
    let count = n.to_string();
    let pid = lb
        .spawn(
            &[
                env!("CARGO_BIN_EXE_anylb"),
                "--json",
                "speak",
                "--asn",
                "65010",
                "--router-id",
                "192.0.2.11",
                "--neighbor",
                "2001:db8:1::1,asn=65000,ipv4=0,ipv6",
                "--announce",
                "2001:db8:ffff::/128",
                "--count",
                &count,
                "--duration",
                "120",
            ],
            Some(&log),
        )
        .unwrap();
    eprintln!("waiting for FRR to hold {n} prefixes");
    let received = || {
        frr.json("show bgp ipv6 unicast summary json")
            .ok()
            .and_then(|v| v["peers"]["2001:db8:1::11"]["pfxRcd"].as_u64())
            .unwrap_or(0) as usize
    };
    let t0 = Instant::now();
    let mut done = None;
    let mut last_report = Instant::now();
    while t0.elapsed() < Duration::from_secs(90) {
        let got = received();
        if got >= n {
            done = Some(SystemTime::now());
            break;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("  {:.1}s: {got} so far", t0.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = done.unwrap_or_else(|| panic!("FRR never held {n} prefixes"));
    // When the speaker's session became Established, from its status lines (one a second).
    let established = |text: &str| {
        text.lines().filter(|l| l.starts_with('{')).find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let nb = &v["neighbors"][0];
            if nb["state"] != "Established" {
                return None;
            }
            let s = &nb["since"];
            Some(
                UNIX_EPOCH
                    + Duration::new(
                        s["secs_since_epoch"].as_u64()?,
                        s["nanos_since_epoch"].as_u64()? as u32,
                    ),
            )
        })
    };
    let mut text = String::new();
    let mut since = None;
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        since = established(&text);
        if since.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let since = since.expect("the speaker reported its established session");
    let ms = done.duration_since(since).unwrap_or_default().as_secs_f64() * 1000.0;
    println!("BENCH bgp_convergence_{n}_prefixes {ms:.0} ms");
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("{text}");
    }
    lb.stop(pid, Duration::from_secs(10));
}
