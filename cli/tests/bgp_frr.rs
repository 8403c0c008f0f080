//! The embedded BGP speaker against a real FRR (Debian's 8.4) in network namespaces: sessions over IPv4 and
//! IPv6, 512 IPv4 /32 (all the documentation ranges hold beside the link subnet) and 1,000 IPv6 /128 with
//! their attributes, withdrawal, received routes; TCP-MD5 (right, wrong and missing keys) and GTSM; FRR
//! installing a VIP announced by two speakers with two next hops, and the hold timer expiring when FRR stops
//! talking (its bgpd frozen); graceful restart both ways (FRR keeps the speaker's routes while it restarts, the
//! speaker keeps FRR's while bgpd restarts); and BIRD 2.0.12 and GoBGP 3.10 learning the prefixes over IPv4 and
//! IPv6 (the same 512 + 1,000 prefixes). Needs root, frr, bird2 and gobgpd (CI installs them).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use topology_tests::frr::Frr;
use topology_tests::netns::{unique_prefix, veth, Netns};

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A router namespace (192.0.2.1, and 2001:db8:1::1 with `v6`) linked to a speaker namespace (192.0.2.11,
/// 2001:db8:1::11).
fn router_and_speaker(tag: &str, v6: bool) -> (Netns, Netns) {
    let p = unique_prefix(tag);
    let r = Netns::new(&format!("{p}r")).unwrap();
    let lb = Netns::new(&format!("{p}l")).unwrap();
    veth(&r, "eth0", &lb, "eth0").unwrap();
    r.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]).unwrap();
    lb.ip(&["addr", "add", "192.0.2.11/24", "dev", "eth0"]).unwrap();
    if v6 {
        r.ip(&["addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad"])
            .unwrap();
        lb.ip(&["addr", "add", "2001:db8:1::11/64", "dev", "eth0", "nodad"])
            .unwrap();
    }
    (r, lb)
}

/// The announcements of the interop tests: every /32 of 198.51.100.0/24 and 203.0.113.0/24 (512, all the
/// documentation ranges hold beside the link subnet) and 1,000 IPv6 /128s.
const MANY: [&str; 8] = [
    "--announce",
    "198.51.100.0/32",
    "--announce",
    "203.0.113.0/32",
    "--announce",
    "2001:db8:ffff::/128*1000",
    "--count",
    "256",
];

fn speak(ns: &mut Netns, log: &std::path::Path, args: &[&str]) -> u32 {
    let mut v = vec![env!("CARGO_BIN_EXE_anylb"), "--json", "speak"];
    v.extend_from_slice(args);
    ns.spawn(&v, Some(log)).unwrap()
}

#[test]
fn frr_learns_attributes_and_withdrawals_over_ipv4_and_ipv6_sessions() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (r, mut lb) = router_and_speaker("bf", true);
    let frr = Frr::start(
        &r,
        "frr defaults traditional\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n no bgp network import-check\n\
         neighbor 192.0.2.11 remote-as 65010\n neighbor 192.0.2.11 timers 3 9\n\
         neighbor 2001:db8:1::11 remote-as 65010\n neighbor 2001:db8:1::11 timers 3 9\n\
         address-family ipv4 unicast\n  network 0.0.0.0/0\n  neighbor 192.0.2.11 activate\n  no neighbor 2001:db8:1::11 activate\n exit-address-family\n\
         address-family ipv6 unicast\n  neighbor 2001:db8:1::11 activate\n exit-address-family\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("speak.log");
    let pid = speak(
        &mut lb,
        &log,
        &[
            &[
                "--asn",
                "65010",
                "--router-id",
                "192.0.2.11",
                "--listen",
                "[::]:179",
                "--neighbor",
                "192.0.2.1,asn=65000,hold=9",
                "--neighbor",
                "2001:db8:1::1,asn=65000,hold=9",
            ],
            &MANY[..],
            &[
                "--community",
                "65010:80",
                "--large-community",
                "65010:1:2",
                "--med",
                "7",
                "--withdraw-after",
                "30",
                "--duration",
                "60",
            ],
        ]
        .concat(),
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        frr.wait(Duration::from_secs(30), |f| f.established("192.0.2.11")
            && f.established("2001:db8:1::11")),
        "sessions:\n{}\n{}",
        frr.vtysh("show bgp summary").unwrap_or_default(),
        text()
    );
    assert!(
        frr.wait(Duration::from_secs(10), |f| f.prefix_count("ipv4") == 513
            && f.prefix_count("ipv6") == 1000),
        "{}\n{}",
        frr.vtysh("show bgp summary").unwrap_or_default(),
        text()
            .lines()
            .filter(|l| !l.starts_with("{"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let v = frr.json("show bgp ipv4 unicast 203.0.113.77/32 json").unwrap();
    let path = &v["paths"][0];
    assert_eq!(path["aspath"]["string"], "65010", "{v}");
    assert_eq!(path["metric"], 7, "{v}");
    assert_eq!(path["community"]["string"], "65010:80", "{v}");
    assert_eq!(path["largeCommunity"]["string"], "65010:1:2", "{v}");
    assert_eq!(path["nexthops"][0]["ip"], "192.0.2.11", "{v}");
    let v6 = frr
        .json("show bgp ipv6 unicast 2001:db8:ffff::ff/128 json")
        .unwrap();
    assert_eq!(v6["paths"][0]["nexthops"][0]["ip"], "2001:db8:1::11", "{v6}");
    // FRR's default route reached the speaker (its status lines come once a second).
    let mut seen = false;
    for _ in 0..100 {
        if text().contains("\"prefix\":\"0.0.0.0/0\"") {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen, "{}", text());
    // After the withdrawal only FRR's own default route is left.
    assert!(
        frr.wait(Duration::from_secs(45), |f| f.prefix_count("ipv4") == 1
            && f.prefix_count("ipv6") == 0),
        "{}",
        frr.vtysh("show bgp summary").unwrap_or_default()
    );
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text());
    // The shutdown communication reached FRR.
    assert!(frr.wait(Duration::from_secs(10), |f| !f.established("192.0.2.11")));
    let n = frr.vtysh("show bgp neighbors 192.0.2.11").unwrap();
    assert!(
        n.contains("anylb speak stopping") || n.contains("Administrative Shutdown"),
        "{n}"
    );
}

#[test]
fn frr_installs_a_vip_announced_by_two_speakers_with_two_next_hops() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let p = unique_prefix("be");
    let r = Netns::new(&format!("{p}r")).unwrap();
    let mut a = Netns::new(&format!("{p}a")).unwrap();
    let mut b = Netns::new(&format!("{p}b")).unwrap();
    veth(&r, "eth0", &a, "eth0").unwrap();
    veth(&r, "eth1", &b, "eth0").unwrap();
    r.ip(&["addr", "add", "192.0.2.1/28", "dev", "eth0"]).unwrap();
    r.ip(&["addr", "add", "192.0.2.17/28", "dev", "eth1"]).unwrap();
    a.ip(&["addr", "add", "192.0.2.11/28", "dev", "eth0"]).unwrap();
    b.ip(&["addr", "add", "192.0.2.27/28", "dev", "eth0"]).unwrap();
    let frr = Frr::start(
        &r,
        "frr defaults traditional\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
         neighbor 192.0.2.11 remote-as 65010\n neighbor 192.0.2.27 remote-as 65010\n\
         address-family ipv4 unicast\n  maximum-paths 4\n exit-address-family\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = |rid: &'static str, peer: &'static str| {
        vec![
            "--asn",
            "65010",
            "--router-id",
            rid,
            "--listen",
            "0.0.0.0:179",
            "--neighbor",
            peer,
            "--announce",
            "203.0.113.10/32",
            "--duration",
            "40",
        ]
    };
    let pa = speak(
        &mut a,
        &dir.path().join("a.log"),
        &args("192.0.2.11", "192.0.2.1,asn=65000"),
    );
    let pb = speak(
        &mut b,
        &dir.path().join("b.log"),
        &args("192.0.2.27", "192.0.2.17,asn=65000"),
    );
    let installed = frr.wait(Duration::from_secs(30), |_| {
        r.sh("ip route show 203.0.113.10")
            .is_ok_and(|s| s.contains("192.0.2.11") && s.contains("192.0.2.27"))
    });
    let logs = || {
        ["a.log", "b.log"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(dir.path().join(f))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.starts_with('{'))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        installed,
        "kernel route: {:?}\n{}\n{}\n{}",
        r.sh("ip route show 203.0.113.10"),
        frr.vtysh("show bgp summary").unwrap_or_default(),
        frr.vtysh("show bgp ipv4 unicast 203.0.113.10/32")
            .unwrap_or_default(),
        logs()
    );
    assert!(a.stop(pa, Duration::from_secs(10)));
    // One speaker gone: one next hop left.
    assert!(frr.wait(Duration::from_secs(15), |_| r
        .sh("ip route show 203.0.113.10")
        .is_ok_and(|s| !s.contains("192.0.2.11") && s.contains("192.0.2.27"))));
    assert!(b.stop(pb, Duration::from_secs(10)));
}

/// FRR in `r` and a speaker in `lb` with a 3 s hold time on both sides (keepalives every second), the speaker
/// announcing 203.0.113.10/32 for a minute; returns FRR, the speaker's pid and its log.
fn hold_3s_session(r: &Netns, lb: &mut Netns, dir: &std::path::Path) -> (Frr, u32, std::path::PathBuf) {
    let frr = Frr::start(
        r,
        "frr defaults traditional\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
         neighbor 192.0.2.11 remote-as 65010\n neighbor 192.0.2.11 timers 1 3\n neighbor 192.0.2.11 timers connect 1\n",
    )
    .unwrap();
    let log = dir.join("speak.log");
    let args = [
        "--asn",
        "65010",
        "--router-id",
        "192.0.2.11",
        "--neighbor",
        "192.0.2.1,asn=65000,hold=3",
        "--announce",
        "203.0.113.10/32",
        "--duration",
        "60",
    ];
    let pid = speak(lb, &log, &args);
    (frr, pid, log)
}

#[test]
fn hold_timer_expires_when_the_peer_stops_talking_and_the_session_comes_back() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (r, mut lb) = router_and_speaker("bh", false);
    let dir = tempfile::tempdir().unwrap();
    let (frr, pid, log) = hold_3s_session(&r, &mut lb, dir.path());
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let last = || {
        text()
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["neighbors"][0].clone())
            .unwrap_or_default()
    };
    assert!(
        frr.wait(Duration::from_secs(30), |f| f.established("192.0.2.11")),
        "{}",
        text()
    );
    // FRR's bgpd freezes: its kernel still ACKs our segments, but no KEEPALIVE comes any more.
    let bgpd = std::fs::read_to_string(format!("/var/run/frr/{}/bgpd.pid", r.name()))
        .unwrap()
        .trim()
        .to_owned();
    assert!(!bgpd.is_empty());
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &bgpd])
            .status()
            .unwrap()
    };
    signal("-STOP");
    let t0 = std::time::Instant::now();
    let mut expired = None;
    while t0.elapsed() < Duration::from_secs(10) {
        let n = last();
        if n["last_reset"]["message"]
            .as_str()
            .is_some_and(|e| e.contains("hold timer expired"))
        {
            expired = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal("-CONT");
    let expired = expired.unwrap_or_else(|| panic!("no hold-timer expiry: {}", last()));
    // The hold time is 3 s; the speaker reports once a second.
    assert!(
        expired >= Duration::from_secs(2) && expired < Duration::from_secs(6),
        "expired after {expired:?}"
    );
    // Once FRR runs again the session is re-established.
    assert!(
        frr.wait(Duration::from_secs(30), |f| f.established("192.0.2.11")),
        "{}",
        frr.vtysh("show bgp summary").unwrap_or_default()
    );
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text());
}

/// Runs a speaker in `lb` with the given extra neighbour options on an IPv4 session it opens and an IPv6
/// session FRR opens to its listener, for `secs` seconds; returns its pid and log.
fn speak_with(
    lb: &mut Netns,
    dir: &std::path::Path,
    name: &str,
    opts: &str,
    secs: u32,
) -> (u32, std::path::PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let v4 = format!("192.0.2.1,asn=65000,hold=9{opts}");
    let v6 = format!("2001:db8:1::1,asn=65000,hold=9,passive{opts}");
    let secs = secs.to_string();
    let args = [
        "--asn",
        "65010",
        "--router-id",
        "192.0.2.11",
        "--listen",
        "[::]:179",
        "--neighbor",
        &v4,
        "--neighbor",
        &v6,
        "--announce",
        "203.0.113.10/32",
        "--duration",
        &secs,
    ];
    let pid = speak(lb, &log, &args);
    (pid, log)
}

/// FRR with an IPv4 and an IPv6 neighbour, each with the extra lines `per_neighbor` (`{}` is the address).
fn frr_two_sessions(r: &Netns, per_neighbor: &str) -> Frr {
    let mut c = String::from(
        "frr defaults traditional\nrouter bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n",
    );
    for a in ["192.0.2.11", "2001:db8:1::11"] {
        c += &format!(
            " neighbor {a} remote-as 65010\n neighbor {a} timers 3 9\n neighbor {a} timers connect 1\n"
        );
        for l in per_neighbor.lines() {
            c += &format!(" {}\n", l.replace("{}", a));
        }
    }
    c += " address-family ipv6 unicast\n  neighbor 2001:db8:1::11 activate\n exit-address-family\n";
    Frr::start(r, &c).unwrap()
}

#[test]
fn tcp_md5_sessions_establish_with_the_right_key_and_never_with_a_wrong_one() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (r, mut lb) = router_and_speaker("bm", true);
    let frr = frr_two_sessions(&r, "neighbor {} password s3cret-Key");
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (dir.path().join("right"), dir.path().join("wrong"));
    std::fs::write(&right, "s3cret-Key\n").unwrap();
    std::fs::write(&wrong, "s3cret-key\n").unwrap();
    let both = |f: &Frr| f.established("192.0.2.11") && f.established("2001:db8:1::11");
    // The right key: the speaker's own connection (IPv4) and FRR's connection to the speaker's listener
    // (IPv6) both establish, and the route arrives.
    let opts = format!(",password-file={}", right.display());
    let (pid, log) = speak_with(&mut lb, dir.path(), "right", &opts, 60);
    let text = |l: &std::path::Path| std::fs::read_to_string(l).unwrap_or_default();
    assert!(
        frr.wait(Duration::from_secs(30), both),
        "{}\n{}",
        frr.vtysh("show bgp summary").unwrap_or_default(),
        text(&log)
    );
    assert!(frr.wait(Duration::from_secs(10), |f| f.prefix_count("ipv4") == 1));
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text(&log));
    assert!(frr.wait(Duration::from_secs(10), |f| !f.established("192.0.2.11")));
    // A wrong key (one letter's case): the kernels drop every segment, nothing establishes in 8 s while
    // both sides keep trying (connect retry 1-2 s).
    let opts = format!(",password-file={}", wrong.display());
    let (pid, log) = speak_with(&mut lb, dir.path(), "wrong", &opts, 60);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        assert!(
            !frr.established("192.0.2.11") && !frr.established("2001:db8:1::11"),
            "established with a wrong key: {}",
            text(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !text(&log).contains("\"state\":\"Established\""),
        "{}",
        text(&log)
    );
    assert_eq!(frr.prefix_count("ipv4"), 0);
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text(&log));
    // No key at all is refused the same way.
    let (pid, log) = speak_with(&mut lb, dir.path(), "none", "", 60);
    std::thread::sleep(Duration::from_secs(5));
    assert!(!frr.established("192.0.2.11") && !frr.established("2001:db8:1::11"));
    assert!(
        !text(&log).contains("\"state\":\"Established\""),
        "{}",
        text(&log)
    );
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text(&log));
}

#[test]
fn gtsm_sessions_establish_with_a_gtsm_peer_and_refuse_one_that_sends_ttl_1() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (r, mut lb) = router_and_speaker("bt", true);
    let dir = tempfile::tempdir().unwrap();
    let text = |l: &std::path::Path| std::fs::read_to_string(l).unwrap_or_default();
    let both = |f: &Frr| f.established("192.0.2.11") && f.established("2001:db8:1::11");
    // FRR with `ttl-security hops 1` drops anything below TTL 255: the speaker sends 255.
    let frr = frr_two_sessions(&r, "neighbor {} ttl-security hops 1");
    let (pid, log) = speak_with(&mut lb, dir.path(), "gtsm", ",gtsm", 60);
    assert!(
        frr.wait(Duration::from_secs(30), both),
        "{}\n{}",
        frr.vtysh("show bgp summary").unwrap_or_default(),
        text(&log)
    );
    assert!(frr.wait(Duration::from_secs(10), |f| f.prefix_count("ipv4") == 1));
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text(&log));
    frr.configure(&[
        "router bgp 65000",
        "no neighbor 192.0.2.11 ttl-security hops 1",
        "no neighbor 2001:db8:1::11 ttl-security hops 1",
    ])
    .unwrap();
    let running = frr.vtysh("show running-config").unwrap();
    assert!(!running.contains("ttl-security"), "{running}");
    // Now a plain eBGP FRR, it sends with TTL 1: the speaker's GTSM drops its SYN-ACKs and SYNs, so FRR
    // (which accepts any TTL itself) never gets a session.
    let (pid, log) = speak_with(&mut lb, dir.path(), "refused", ",gtsm", 60);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        assert!(
            !both(&frr) && !frr.established("192.0.2.11"),
            "established without GTSM: {}",
            text(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text(&log));
    // The same FRR with the speaker not asking for GTSM: established, so the refusal was GTSM's doing.
    let (pid, log) = speak_with(&mut lb, dir.path(), "plain", "", 60);
    assert!(
        frr.wait(Duration::from_secs(30), both),
        "{}\n{}",
        frr.vtysh("show bgp summary").unwrap_or_default(),
        text(&log)
    );
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text(&log));
}

/// A router (192.0.2.1) and a speaker (192.0.2.11) joined through a bridge in a third "switch" namespace,
/// so the link can be cut between them (the speaker's port taken off the bridge) while both ends keep carrier:
/// only BFD or the hold timer can notice.
fn router_switch_speaker(tag: &str) -> (Netns, Netns, Netns) {
    let p = unique_prefix(tag);
    let r = Netns::new(&format!("{p}r")).unwrap();
    let sw = Netns::new(&format!("{p}s")).unwrap();
    let lb = Netns::new(&format!("{p}l")).unwrap();
    veth(&r, "eth0", &sw, "p0").unwrap();
    veth(&lb, "eth0", &sw, "p1").unwrap();
    sw.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    for i in ["p0", "p1"] {
        sw.ip(&["link", "set", i, "master", "br0"]).unwrap();
    }
    sw.ip(&["link", "set", "br0", "up"]).unwrap();
    r.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]).unwrap();
    lb.ip(&["addr", "add", "192.0.2.11/24", "dev", "eth0"]).unwrap();
    (r, sw, lb)
}

/// Cuts (or mends) the speaker's link in the switch.
fn cut(sw: &Netns, cut: bool) {
    let args: &[&str] = if cut {
        &["link", "set", "p1", "nomaster"]
    } else {
        &["link", "set", "p1", "master", "br0"]
    };
    sw.ip(args).unwrap();
}

#[test]
fn bfd_takes_the_frr_session_down_within_a_second_of_cutting_the_link() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (r, sw, mut lb) = router_switch_speaker("bd");
    let frr = Frr::start(
        &r,
        "frr defaults traditional\n\
         bfd\n profile fast\n  transmit-interval 100\n  receive-interval 100\n  detect-multiplier 3\n !\n!\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
         neighbor 192.0.2.11 remote-as 65010\n neighbor 192.0.2.11 timers 3 9\n neighbor 192.0.2.11 timers connect 1\n\
         neighbor 192.0.2.11 bfd profile fast\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("speak.log");
    let pid = speak(
        &mut lb,
        &log,
        &[
            "--asn",
            "65010",
            "--router-id",
            "192.0.2.11",
            "--neighbor",
            "192.0.2.1,asn=65000,hold=9,bfd=100",
            "--announce",
            "203.0.113.10/32",
            "--duration",
            "90",
        ],
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let bfd_up = |f: &Frr| {
        f.json("show bfd peers json")
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|p| p.iter().any(|p| p["peer"] == "192.0.2.11" && p["status"] == "up"))
    };
    for round in 0..2 {
        assert!(
            frr.wait(Duration::from_secs(30), |f| f.established("192.0.2.11")
                && bfd_up(f)),
            "round {round}: {}\n{}\n{}",
            frr.vtysh("show bgp summary").unwrap_or_default(),
            frr.vtysh("show bfd peers").unwrap_or_default(),
            text()
        );
        assert!(frr.wait(Duration::from_secs(10), |f| f.prefix_count("ipv4") == 1));
        cut(&sw, true);
        let t0 = std::time::Instant::now();
        while frr.established("192.0.2.11") && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let down = t0.elapsed();
        // 3 × 100 ms detection, plus the time to ask vtysh: well under a second, while the 9 s hold time
        // could not have done it.
        assert!(
            down < Duration::from_secs(1),
            "round {round}: FRR's session went down after {down:?}"
        );
        while frr.prefix_count("ipv4") != 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let gone = t0.elapsed();
        assert!(
            gone < Duration::from_secs(1),
            "round {round}: FRR kept the route {gone:?} after the cut"
        );
        eprintln!("round {round}: FRR dropped the session {down:?} and the route {gone:?} after the cut");
        // The speaker saw it too, through its own BFD session.
        assert!(
            lb_wait(Duration::from_secs(3), || text().contains("BFD: path down")),
            "round {round}: {}",
            text()
        );
        cut(&sw, false);
    }
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text());
}

/// Waits up to `timeout` for `f`.
fn lb_wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn hold_timer_expires_when_the_link_is_cut_and_the_session_comes_back_when_mended() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (r, sw, mut lb) = router_switch_speaker("bc");
    let dir = tempfile::tempdir().unwrap();
    let (frr, pid, log) = hold_3s_session(&r, &mut lb, dir.path());
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        frr.wait(Duration::from_secs(30), |f| f.established("192.0.2.11")),
        "{}",
        text()
    );
    let before = text().matches("hold timer expired").count();
    cut(&sw, true);
    let t0 = std::time::Instant::now();
    assert!(
        lb_wait(Duration::from_secs(8), || text()
            .matches("hold timer expired")
            .count()
            > before),
        "no hold-timer expiry with the link cut: {}",
        text()
    );
    let expired = t0.elapsed();
    // Hold time 3 s; the status lines come once a second.
    assert!(
        expired >= Duration::from_secs(2) && expired < Duration::from_secs(6),
        "expired after {expired:?}"
    );
    // FRR's own hold timer (3 s) ran out as well.
    assert!(frr.wait(Duration::from_secs(5), |f| !f.established("192.0.2.11")));
    cut(&sw, false);
    assert!(
        frr.wait(Duration::from_secs(30), |f| f.established("192.0.2.11")),
        "{}\n{}",
        frr.vtysh("show bgp summary").unwrap_or_default(),
        text()
    );
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text());
}

#[test]
fn multihop_session_from_a_bound_address_carries_ipv6_prefixes_with_a_configured_next_hop() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // r (192.0.2.1) -- mid, a router -- lb (198.51.100.11 and .12): the sessions cross one router.
    let p = unique_prefix("bx");
    let r = Netns::new(&format!("{p}r")).unwrap();
    let mid = Netns::new(&format!("{p}m")).unwrap();
    let mut lb = Netns::new(&format!("{p}l")).unwrap();
    veth(&r, "eth0", &mid, "eth0").unwrap();
    veth(&lb, "eth0", &mid, "eth1").unwrap();
    r.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]).unwrap();
    mid.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]).unwrap();
    mid.ip(&["addr", "add", "198.51.100.2/24", "dev", "eth1"])
        .unwrap();
    mid.sysctl("net.ipv4.ip_forward", "1").unwrap();
    for a in ["198.51.100.11/24", "198.51.100.12/24"] {
        lb.ip(&["addr", "add", a, "dev", "eth0"]).unwrap();
    }
    r.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.2"])
        .unwrap();
    lb.ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.2"])
        .unwrap();
    // FRR knows the speaker only as 198.51.100.12, two hops away; IPv6 unicast rides the IPv4 session.
    let frr = Frr::start(
        &r,
        "frr defaults traditional\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n\
         neighbor 198.51.100.12 remote-as 65010\n neighbor 198.51.100.12 timers 3 9\n\
         neighbor 198.51.100.12 timers connect 1\n neighbor 198.51.100.12 ebgp-multihop 2\n\
         address-family ipv6 unicast\n  neighbor 198.51.100.12 activate\n exit-address-family\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |lb: &mut Netns, name: &str, opts: &str| {
        let log = dir.path().join(format!("{name}.log"));
        let n = format!("192.0.2.1,asn=65000,hold=9,local=198.51.100.12,ipv6,nh6=2001:db8:1::12{opts}");
        let args = [
            "--asn",
            "65010",
            "--router-id",
            "198.51.100.12",
            "--neighbor",
            &n,
            "--announce",
            "198.51.100.128/32",
            "--announce",
            "2001:db8:ffff::/128*10",
            "--duration",
            "60",
        ];
        (speak(lb, &log, &args), log)
    };
    let text = |l: &std::path::Path| std::fs::read_to_string(l).unwrap_or_default();
    // TTL 1 (the eBGP default) dies at the router in between: no session.
    let (pid, log) = run(&mut lb, "ttl1", "");
    std::thread::sleep(Duration::from_secs(6));
    assert!(!frr.established("198.51.100.12"), "{}", text(&log));
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text(&log));
    // TTL 2: established from the bound address, with both families.
    let (pid, log) = run(&mut lb, "ttl2", ",ttl=2");
    assert!(
        frr.wait(Duration::from_secs(30), |f| f.established("198.51.100.12")
            && f.prefix_count("ipv4") == 1
            && f.prefix_count("ipv6") == 10),
        "{}\n{}",
        frr.vtysh("show bgp summary").unwrap_or_default(),
        text(&log)
    );
    let v6 = frr
        .json("show bgp ipv6 unicast 2001:db8:ffff::9/128 json")
        .unwrap();
    assert_eq!(v6["paths"][0]["nexthops"][0]["ip"], "2001:db8:1::12", "{v6}");
    let v4 = frr.json("show bgp ipv4 unicast 198.51.100.128/32 json").unwrap();
    assert_eq!(v4["paths"][0]["nexthops"][0]["ip"], "198.51.100.12", "{v4}");
    let n = frr.json("show bgp neighbors 198.51.100.12 json").unwrap();
    assert_eq!(n["198.51.100.12"]["hostLocal"], "192.0.2.1", "{n}");
    // The speaker prints its sessions once a second.
    assert!(
        lb_wait(Duration::from_secs(3), || text(&log)
            .contains("\"connection\":[\"198.51.100.12:")),
        "the speaker's end is not the bound address: {}",
        text(&log)
    );
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text(&log));
}

/// BIRD 2 in namespace `ns`, with its own config, control socket and pid file in `dir`.
fn bird(ns: &mut Netns, dir: &std::path::Path, config: &str) -> (u32, std::path::PathBuf) {
    let conf = dir.join("bird.conf");
    std::fs::write(&conf, config).unwrap();
    let sock = dir.join("bird.ctl");
    let pid = ns
        .spawn(
            &[
                "bird",
                "-f",
                "-c",
                conf.to_str().unwrap(),
                "-s",
                sock.to_str().unwrap(),
                "-P",
                dir.join("bird.pid").to_str().unwrap(),
            ],
            Some(&dir.join("bird.log")),
        )
        .unwrap();
    (pid, sock)
}

fn birdc(sock: &std::path::Path, cmd: &str) -> String {
    let out = std::process::Command::new("birdc")
        .args(["-s", sock.to_str().unwrap()])
        .args(cmd.split(' '))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bird_learns_the_prefixes_with_their_attributes_over_ipv4_and_ipv6() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut r, mut lb) = router_and_speaker("bb", true);
    let dir = tempfile::tempdir().unwrap();
    let (bird_pid, sock) = bird(
        &mut r,
        dir.path(),
        "router id 192.0.2.1;\n\
         protocol device {}\n\
         protocol static st4 { ipv4; route 192.0.2.128/26 blackhole; }\n\
         protocol bgp lb4 { local 192.0.2.1 as 65000; neighbor 192.0.2.11 as 65010; hold time 9;\n\
           ipv4 { import all; export where proto = \"st4\"; }; }\n\
         protocol bgp lb6 { local 2001:db8:1::1 as 65000; neighbor 2001:db8:1::11 as 65010; hold time 9;\n\
           ipv6 { import all; export none; }; }\n",
    );
    let log = dir.path().join("speak.log");
    let pid = speak(
        &mut lb,
        &log,
        &[
            &[
                "--asn",
                "65010",
                "--router-id",
                "192.0.2.11",
                "--neighbor",
                "192.0.2.1,asn=65000,hold=9",
                "--neighbor",
                "2001:db8:1::1,asn=65000,hold=9",
            ],
            &MANY[..],
            &[
                "--community",
                "65010:80",
                "--large-community",
                "65010:1:2",
                "--med",
                "7",
                "--duration",
                "60",
            ],
        ]
        .concat(),
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let count = |proto: &str| -> usize {
        birdc(&sock, &format!("show route protocol {proto} count"))
            .lines()
            .find_map(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(30) && !(count("lb4") == 512 && count("lb6") == 1000) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        (count("lb4"), count("lb6")),
        (512, 1000),
        "{}\n{}",
        birdc(&sock, "show protocols"),
        text()
    );
    let all = birdc(&sock, "show route 198.51.100.77/32 all");
    assert!(all.contains("BGP.as_path: 65010"), "{all}");
    assert!(all.contains("BGP.med: 7"), "{all}");
    assert!(all.contains("BGP.community: (65010,80)"), "{all}");
    assert!(all.contains("BGP.large_community: (65010, 1, 2)"), "{all}");
    assert!(all.contains("BGP.next_hop: 192.0.2.11"), "{all}");
    let all6 = birdc(&sock, "show route 2001:db8:ffff::ff/128 all");
    assert!(all6.contains("BGP.next_hop: 2001:db8:1::11"), "{all6}");
    // BIRD's static route reached the speaker.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(10) && !text().contains("\"prefix\":\"192.0.2.128/26\"") {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(text().contains("\"prefix\":\"192.0.2.128/26\""), "{}", text());
    // Stopping the speaker withdraws everything at BIRD.
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text());
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(10) && count("lb4") + count("lb6") != 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!((count("lb4"), count("lb6")), (0, 0));
    r.stop(bird_pid, Duration::from_secs(5));
}

#[test]
fn gobgp_learns_the_prefixes_over_ipv4_and_ipv6() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut r, mut lb) = router_and_speaker("bg", true);
    r.ip(&["link", "set", "lo", "up"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gobgpd.toml");
    std::fs::write(
        &conf,
        r#"[global.config]
  as = 65000
  router-id = "192.0.2.1"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.11"
    peer-as = 65010
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "2001:db8:1::11"
    peer-as = 65010
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#,
    )
    .unwrap();
    let gobgpd = r
        .spawn(
            &[
                "gobgpd",
                "-f",
                conf.to_str().unwrap(),
                "--api-hosts",
                "127.0.0.1:50051",
            ],
            Some(&dir.path().join("gobgpd.log")),
        )
        .unwrap();
    let log = dir.path().join("speak.log");
    let pid = speak(
        &mut lb,
        &log,
        &[
            &[
                "--asn",
                "65010",
                "--router-id",
                "192.0.2.11",
                "--neighbor",
                "192.0.2.1,asn=65000,hold=9",
                "--neighbor",
                "2001:db8:1::1,asn=65000,hold=9",
            ],
            &MANY[..],
            &["--community", "65010:80", "--duration", "60"],
        ]
        .concat(),
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let gobgp = |args: &[&str]| -> String {
        r.exec(&[&["gobgp"], args].concat())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let count = |family: &str| -> usize {
        // "Table ipv4-unicast\nDestination: 256, Path: 256"
        gobgp(&["global", "rib", "summary", "-a", family])
            .split("Destination: ")
            .nth(1)
            .and_then(|x| x.split(',').next())
            .and_then(|x| x.trim().parse().ok())
            .unwrap_or(0)
    };
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(30) && !(count("ipv4") == 512 && count("ipv6") == 1000) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        (count("ipv4"), count("ipv6")),
        (512, 1000),
        "{}\n{}\n{}",
        gobgp(&["neighbor"]),
        std::fs::read_to_string(dir.path().join("gobgpd.log")).unwrap_or_default(),
        text()
    );
    let one = gobgp(&["global", "rib", "-a", "ipv4", "198.51.100.77/32"]);
    assert!(one.contains("192.0.2.11") && one.contains("65010"), "{one}");
    assert!(one.contains("65010:80"), "{one}");
    assert!(lb.stop(pid, Duration::from_secs(10)), "{}", text());
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(10) && count("ipv4") + count("ipv6") != 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!((count("ipv4"), count("ipv6")), (0, 0));
    r.stop(gobgpd, Duration::from_secs(5));
}

#[test]
fn frr_keeps_the_routes_while_the_speaker_restarts_gracefully() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (r, mut lb) = router_and_speaker("gr", false);
    let frr = Frr::start(
        &r,
        "frr defaults traditional\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n bgp graceful-restart\n\
         neighbor 192.0.2.11 remote-as 65010\n neighbor 192.0.2.11 timers 1 3\n neighbor 192.0.2.11 timers connect 1\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = |restarting: bool| {
        let mut v = vec![
            "--asn",
            "65010",
            "--router-id",
            "192.0.2.11",
            "--neighbor",
            "192.0.2.1,asn=65000,hold=3",
            "--announce",
            "203.0.113.10/32",
            "--graceful-restart",
            "30",
            "--duration",
            "60",
        ];
        if restarting {
            v.push("--restarting");
        }
        v
    };
    let log = dir.path().join("speak1.log");
    let pid = speak(&mut lb, &log, &args(false));
    let has_route = |f: &Frr| f.prefix_count("ipv4") == 1;
    assert!(
        frr.wait(Duration::from_secs(30), |f| f.established("192.0.2.11")
            && has_route(f)),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The speaker dies without a word (SIGKILL): FRR, its graceful-restart helper, keeps the route as stale.
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(frr.wait(Duration::from_secs(10), |f| !f.established("192.0.2.11")));
    std::thread::sleep(Duration::from_secs(3));
    let route = frr.json("show bgp ipv4 unicast 203.0.113.10/32 json").unwrap();
    assert!(
        has_route(&frr),
        "FRR dropped the route during the restart: {route}"
    );
    assert_eq!(route["paths"][0]["stale"], true, "{route}");
    // The speaker comes back (restarting): the session returns and the route is fresh again.
    let log2 = dir.path().join("speak2.log");
    let pid2 = speak(&mut lb, &log2, &args(true));
    assert!(
        frr.wait(Duration::from_secs(30), |f| f.established("192.0.2.11")
            && f.json("show bgp ipv4 unicast 203.0.113.10/32 json").is_ok_and(
                |v| v["paths"][0]["stale"].is_null() && v["paths"][0]["valid"] == true
            )),
        "{}\n{}",
        frr.vtysh("show bgp ipv4 unicast 203.0.113.10/32")
            .unwrap_or_default(),
        std::fs::read_to_string(&log2).unwrap_or_default()
    );
    assert!(lb.stop(pid2, Duration::from_secs(10)));
}

#[test]
fn the_speaker_keeps_frrs_routes_while_frr_restarts_gracefully() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (r, mut lb) = router_and_speaker("gh", false);
    let config = "frr defaults traditional\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n no bgp network import-check\n\
         bgp graceful-restart\n bgp graceful-restart restart-time 30\n\
         neighbor 192.0.2.11 remote-as 65010\n neighbor 192.0.2.11 timers 1 3\n neighbor 192.0.2.11 timers connect 1\n\
         address-family ipv4 unicast\n  network 192.0.2.128/26\n exit-address-family\n";
    let frr = Frr::start(&r, config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("speak.log");
    let pid = speak(
        &mut lb,
        &log,
        &[
            "--asn",
            "65010",
            "--router-id",
            "192.0.2.11",
            "--neighbor",
            "192.0.2.1,asn=65000,hold=3",
            "--announce",
            "203.0.113.10/32",
            "--graceful-restart",
            "30",
            "--duration",
            "60",
        ],
    );
    let last = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .unwrap_or_default()
    };
    let holds = |v: &serde_json::Value| {
        v["received"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["prefix"] == "192.0.2.128/26"))
    };
    let wait = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if f(&last()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: {}", last());
    };
    wait("FRR's route received", &|v| {
        holds(v) && v["neighbors"][0]["state"] == "Established"
    });
    // FRR's bgpd dies (SIGKILL); the speaker, its graceful-restart helper, keeps the route meanwhile.
    frr.crash("bgpd").unwrap();
    wait("session down", &|v| v["neighbors"][0]["state"] != "Established");
    std::thread::sleep(Duration::from_secs(2));
    assert!(holds(&last()), "route dropped during FRR's restart: {}", last());
    // bgpd comes back with the same configuration: the session and the route return.
    r.exec(&["/usr/lib/frr/bgpd", "-N", r.name(), "-d", "-F", "traditional"])
        .unwrap();
    let t0 = std::time::Instant::now();
    while frr.vtysh("show version").is_err() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::process::Command::new("vtysh")
        .args(["-N", r.name(), "-b"])
        .status()
        .unwrap();
    wait("session back", &|v| {
        holds(v) && v["neighbors"][0]["state"] == "Established"
    });
    assert!(lb.stop(pid, Duration::from_secs(10)));
}
