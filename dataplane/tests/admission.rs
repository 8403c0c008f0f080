//! Who may open a connection through one worker: deny and allow lists (the node's and the service's), the
//! new-connection rate limit (drop or RST), and the backends' connection thresholds; connections already open
//! are not touched by a reload that changes them.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use anylb_dataplane::counters::merge;
use anylb_dataplane::snapshot::Overrides;
use anylb_dataplane::stats::DropReason;
use anylb_dataplane::worker::Verdict;
use common::*;

fn lab(web4: &str, node: &str) -> Lab {
    web4_lab(web4, node, "")
}

fn syn(client: (&str, u16), vip: (&str, u16)) -> Vec<u8> {
    tcp(ROUTER_MAC, UP_MAC, client, vip, "S", 1000, Some(1460), b"")
}

const WEB4: (&str, u16) = ("203.0.113.10", 80);

#[test]
fn deny_and_allow_lists_judge_new_flows() {
    let mut l = lab(
        "deny = [\"192.0.2.0/25\"]\nallow = [\"192.0.2.0/24\", \"2001:db8:c::/48\"]",
        "",
    );
    let (v, tx) = l.send(0, syn(("192.0.2.100", 40000), WEB4));
    assert_eq!(
        v,
        Verdict::Drop {
            reason: DropReason::Denied
        }
    );
    assert!(tx.is_empty());
    assert!(matches!(
        l.send(0, syn(("192.0.2.200", 40000), WEB4)).0,
        Verdict::Forward { .. }
    ));
    let mut l = lab("allow = [\"198.18.0.0/15\"]", "");
    assert_eq!(
        l.send(0, syn(("192.0.2.200", 40000), WEB4)).0,
        Verdict::Drop {
            reason: DropReason::NotAllowed
        }
    );
    assert_eq!(l.worker.stats.drops_of(DropReason::NotAllowed), 1);
    // Counted on the service too, as `anylb services --stats` shows it.
    let c = merge(l.worker.snapshot(), &[l.worker.counters()]);
    let web4 = c.services.iter().find(|s| s.name == "web4").unwrap();
    assert_eq!((web4.refused.not_allowed, web4.refused.total()), (1, 1));
}

#[test]
fn the_node_deny_list_covers_every_service() {
    let mut l = lab("", "deny = [\"192.0.2.100/32\", \"2001:db8:c::/64\"]");
    for (client, vip) in [
        (("192.0.2.100", 40000), WEB4),
        (("2001:db8:c::5", 40000), ("2001:db8::1", 80)),
    ] {
        assert_eq!(
            l.send(0, syn(client, vip)).0,
            Verdict::Drop {
                reason: DropReason::DeniedNode
            }
        );
    }
    assert!(matches!(
        l.send(0, syn(("192.0.2.101", 40000), WEB4)).0,
        Verdict::Forward { .. }
    ));
}

#[test]
fn a_reload_that_denies_a_client_keeps_its_open_connections() {
    let mut l = lab("", "");
    let client = ("192.0.2.100", 40000);
    open_tcp(&mut l, client, WEB4);
    // The same topology with the client denied, as a reload builds it.
    let mut cfg = l.cfg.clone();
    cfg.services[0].deny = vec!["192.0.2.100/32".parse().unwrap()];
    let snap = l
        .builder
        .build(&cfg, &[UP_MAC, IN_MAC], 1, &Overrides::default())
        .unwrap();
    l.worker.set_snapshot(Arc::new(snap));
    let data = tcp(ROUTER_MAC, UP_MAC, client, WEB4, "AP", 1001, None, b"still mine");
    assert!(
        matches!(l.send(0, data).0, Verdict::Forward { .. }),
        "the open connection goes on"
    );
    assert_eq!(
        l.send(0, syn(("192.0.2.100", 40001), WEB4)).0,
        Verdict::Drop {
            reason: DropReason::Denied
        },
        "a new one is refused"
    );
}

#[test]
fn the_rate_limit_lets_the_burst_through_then_the_rate() {
    let mut l = lab("rate_limit = { cps = 10, burst = 3 }", "");
    let verdicts: Vec<Verdict> = (0..5)
        .map(|i| l.send(0, syn(("192.0.2.100", 40000 + i), WEB4)).0)
        .collect();
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Forward { .. }))
            .count(),
        3
    );
    assert_eq!(
        verdicts[3..],
        [Verdict::Drop {
            reason: DropReason::RateLimited
        }; 2]
    );
    l.advance(100);
    assert!(matches!(
        l.send(0, syn(("192.0.2.100", 40010), WEB4)).0,
        Verdict::Forward { .. }
    ));
    // Per client: another client has its own bucket.
    let mut l = lab("rate_limit = { cps = 10, burst = 1, per_client = true }", "");
    assert!(matches!(
        l.send(0, syn(("192.0.2.100", 40000), WEB4)).0,
        Verdict::Forward { .. }
    ));
    assert_eq!(
        l.send(0, syn(("192.0.2.100", 40001), WEB4)).0,
        Verdict::Drop {
            reason: DropReason::RateLimited
        }
    );
    assert!(matches!(
        l.send(0, syn(("192.0.2.101", 40000), WEB4)).0,
        Verdict::Forward { .. }
    ));
}

#[test]
fn over_the_rate_a_syn_can_get_a_reset_from_the_vip() {
    let mut l = lab("rate_limit = { cps = 1, burst = 1, action = \"reset\" }", "");
    l.forward(0, syn(("192.0.2.100", 40000), WEB4));
    let (v, tx) = l.send(0, syn(("192.0.2.100", 40001), WEB4));
    assert_eq!(v, Verdict::Reply { port: 0 });
    assert_eq!(l.worker.stats.drops_of(DropReason::RateLimited), 1);
    let r = &tx[0].1;
    let s = seen(r);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (ip("203.0.113.10"), 80, ip("192.0.2.100"), 40001)
    );
    assert_eq!(s.dmac, ROUTER_MAC);
    // RST and ACK, acknowledging the SYN (sequence 1000 + 1).
    assert_eq!(r[14 + 20 + 13], 0x14);
    assert_eq!(u32::from_be_bytes(r[14 + 28..14 + 32].try_into().unwrap()), 1001);
    assert_eq!(l.worker.conns().len(), 1, "no state for the refused SYN");
}

#[test]
fn a_backend_at_its_upper_threshold_is_skipped_until_under_its_lower() {
    let backends = "backends = [{ address = \"198.51.100.101\", port = 8080, upper_threshold = 2, lower_threshold = 1 }, { address = \"198.51.100.102\", port = 8080, upper_threshold = 2 }]";
    let t = TOPOLOGY.replacen(
        "backends = [{ address = \"198.51.100.101\", port = 8080 }, { address = \"198.51.100.102\", port = 8080 }]",
        backends,
        1,
    );
    let mut l = Lab::with(&t, &Overrides::default());
    let mut to = Vec::new();
    for i in 0..4 {
        let (_, out) = l.forward(0, syn(("192.0.2.100", 41000 + i), WEB4));
        to.push(seen(&out).dst);
    }
    for b in ["198.51.100.101", "198.51.100.102"] {
        assert_eq!(to.iter().filter(|d| **d == ip(b)).count(), 2, "{b}: {to:?}");
    }
    assert_eq!(
        l.send(0, syn(("192.0.2.100", 41010), WEB4)).0,
        Verdict::Drop {
            reason: DropReason::Overloaded
        }
    );
    // A reset closes one connection of .101 (2 → 1: at its lower threshold): it takes connections again.
    let i = to.iter().position(|d| *d == ip("198.51.100.101")).unwrap() as u16;
    l.forward(
        0,
        tcp(
            ROUTER_MAC,
            UP_MAC,
            ("192.0.2.100", 41000 + i),
            WEB4,
            "R",
            1001,
            None,
            b"",
        ),
    );
    l.advance(20_000);
    let (_, out) = l.forward(0, syn(("192.0.2.100", 41011), WEB4));
    assert_eq!(seen(&out).dst, ip("198.51.100.101"));
}
