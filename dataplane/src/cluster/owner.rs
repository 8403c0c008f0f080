//! Who holds whose connections. Every node computes the same answers from the node names alone:
//!
//! - the **holders** of node X's records are the first `R` other nodes in X's rendezvous order (highest
//!   random weight of the pair (X, node), Thaler and Ravishankar), so sync traffic grows with `R`, not with the
//!   cluster, and a node joining or leaving moves only the holders it ranks above;
//! - X's **successor** among the nodes alive is the first alive holder: it takes X's local addresses over when
//!   X is lost (and serves X's connections, whose records it holds), and gives them back once X has resynced.
//!
//! The worker that holds a record on any node is its own port slice of the record's local port, as for
//! connections it opened itself.

/// The weight of `holder` for records of `owner` (FNV-1a over both names, then a 64-bit finaliser).
fn weight(owner: &str, holder: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in owner.bytes().chain([0xff]).chain(holder.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Every node but `owner`, in `owner`'s rendezvous order (ties broken by name).
pub fn order<'a>(owner: &str, nodes: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = nodes.iter().copied().filter(|n| *n != owner).collect();
    v.sort_by(|a, b| weight(owner, b).cmp(&weight(owner, a)).then(a.cmp(b)));
    v
}

/// The nodes that hold `owner`'s records: the first `replicas` of its order (all others when `replicas` is
/// at least the cluster size).
pub fn holders<'a>(owner: &str, nodes: &[&'a str], replicas: usize) -> Vec<&'a str> {
    let mut v = order(owner, nodes);
    v.truncate(replicas);
    v
}

/// The node that serves `owner`'s connections and local addresses while `owner` is lost: the first of its
/// holders that is alive, if any.
pub fn successor<'a>(
    owner: &str,
    nodes: &[&'a str],
    replicas: usize,
    alive: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    holders(owner, nodes, replicas).into_iter().find(|n| alive(n))
}

/// The nodes `me` sends its records to, and the owners whose records it keeps.
pub fn peers_of<'a>(me: &str, nodes: &[&'a str], replicas: usize) -> (Vec<&'a str>, Vec<&'a str>) {
    let to = holders(me, nodes, replicas);
    let from = nodes
        .iter()
        .copied()
        .filter(|o| *o != me && holders(o, nodes, replicas).contains(&me))
        .collect();
    (to, from)
}

/// The share of the failed nodes' synced connections that no surviving node holds, averaged over every way
/// `failures` nodes of the cluster can fail at once (1 or 2: every such set is tried).
pub fn lost_share(nodes: &[&str], replicas: usize, failures: usize) -> f64 {
    let sets: Vec<Vec<&str>> = match failures {
        1 => nodes.iter().map(|n| vec![*n]).collect(),
        _ => nodes
            .iter()
            .enumerate()
            .flat_map(|(i, a)| nodes[i + 1..].iter().map(move |b| vec![*a, *b]))
            .collect(),
    };
    if sets.is_empty() {
        return 0.0;
    }
    let lost: f64 = sets
        .iter()
        .map(|failed| {
            let gone = failed
                .iter()
                .filter(|o| holders(o, nodes, replicas).iter().all(|h| failed.contains(h)))
                .count();
            gone as f64 / failed.len() as f64
        })
        .sum();
    lost / sets.len() as f64
}

/// Per node, the records received per record sent (1.0 when holding is spread evenly; its maximum over the
/// nodes shows the busiest receiver).
pub fn receive_factor(nodes: &[&str], replicas: usize) -> (f64, f64) {
    let mut held = std::collections::HashMap::new();
    for o in nodes {
        for h in holders(o, nodes, replicas) {
            *held.entry(h).or_insert(0usize) += 1;
        }
    }
    let r = replicas.min(nodes.len().saturating_sub(1)).max(1) as f64;
    let max = held.values().copied().max().unwrap_or(0) as f64 / r;
    let mean = held.values().sum::<usize>() as f64 / nodes.len().max(1) as f64 / r;
    (mean, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("lb{i}")).collect()
    }

    #[test]
    fn every_node_computes_the_same_holders_and_never_itself() {
        let owned = names(8);
        let nodes: Vec<&str> = owned.iter().map(String::as_str).collect();
        for o in &nodes {
            let h = holders(o, &nodes, 2);
            assert_eq!(h.len(), 2);
            assert!(!h.contains(o));
            // Order of the node list does not matter.
            let mut rev = nodes.clone();
            rev.reverse();
            assert_eq!(holders(o, &rev, 2), h);
        }
    }

    #[test]
    fn holders_spread_over_the_cluster() {
        let owned = names(32);
        let nodes: Vec<&str> = owned.iter().map(String::as_str).collect();
        let mut load = std::collections::HashMap::new();
        for o in &nodes {
            for h in holders(o, &nodes, 2) {
                *load.entry(h).or_insert(0) += 1;
            }
        }
        // 64 holder slots over 32 nodes: nobody holds for more than a handful of owners.
        assert!(load.values().all(|&n| n <= 6), "{load:?}");
    }

    #[test]
    fn a_node_joining_moves_only_the_holders_it_outranks() {
        let before = names(8);
        let after = names(9);
        let b: Vec<&str> = before.iter().map(String::as_str).collect();
        let a: Vec<&str> = after.iter().map(String::as_str).collect();
        for o in &b {
            let (old, new) = (holders(o, &b, 2), holders(o, &a, 2));
            let kept = old.iter().filter(|n| new.contains(n)).count();
            assert!(kept >= 1 || new.contains(&"lb9"), "{o}: {old:?} → {new:?}");
            assert!(
                new.iter().all(|n| old.contains(n) || *n == "lb9"),
                "{o}: {old:?} → {new:?}"
            );
        }
    }

    #[test]
    fn the_successor_is_the_first_alive_holder() {
        let nodes = ["lb1", "lb2", "lb3"];
        let all = holders("lb1", &nodes, 2);
        assert_eq!(successor("lb1", &nodes, 2, |_| true), Some(all[0]));
        assert_eq!(successor("lb1", &nodes, 2, |n| n != all[0]), Some(all[1]));
        assert_eq!(successor("lb1", &nodes, 2, |_| false), None);
        let (to, from) = peers_of("lb2", &["lb1", "lb2"], 1);
        assert_eq!((to, from), (vec!["lb1"], vec!["lb1"]));
    }

    #[test]
    fn losses_when_nodes_fail_follow_the_replication_factor() {
        let owned = names(8);
        let n8: Vec<&str> = owned.iter().map(String::as_str).collect();
        // One failure: every synced connection has a holder left, whatever R.
        for r in [1, 2, 7] {
            assert_eq!(lost_share(&n8, r, 1), 0.0);
        }
        // Two at once with R = 1: the failed pair is an owner and its holder with probability 2/7 per owner
        // pair... the exhaustive share is what docs/cluster.md prints; it is below R = 1's worst case and zero
        // from R = 2 on.
        let r1 = lost_share(&n8, 1, 2);
        assert!(r1 > 0.0 && r1 < 0.2, "{r1}");
        assert_eq!(lost_share(&n8, 2, 2), 0.0);
        assert_eq!(
            lost_share(&["lb1", "lb2"], 1, 2),
            1.0,
            "two nodes both failing lose everything"
        );
    }

    /// Prints the table of docs/cluster.md: `cargo test -p anylb-dataplane --lib sync_scale -- --nocapture`.
    #[test]
    fn sync_scale_table() {
        const RATE: f64 = 1e6;
        const RECORD_BYTES: f64 = 38.0; // 37 bytes of an IPv4 record + 38 bytes of header and tag per 36 records
        println!("nodes R  share_synced  records_sent/s  bytes_sent/s  received/s_mean  received/s_max  lost_1  lost_2");
        for n in [2usize, 8, 32] {
            let owned = names(n);
            let nodes: Vec<&str> = owned.iter().map(String::as_str).collect();
            for (label, r) in [("1", 1), ("2", 2), ("all", n - 1)] {
                if n == 2 && label == "2" {
                    continue;
                }
                let (mean, max) = receive_factor(&nodes, r);
                for synced in [0.1, 1.0] {
                    // An upsert when synced and a delete when closed.
                    let sent = RATE * synced * 2.0 * r.min(n - 1) as f64;
                    println!(
                        "{n:>5} {label:>3} {synced:>12} {sent:>15.0} {:>13.0} {:>16.0} {:>15.0} {:>7.3} {:>7.3}",
                        sent * RECORD_BYTES,
                        sent * mean,
                        sent * max,
                        lost_share(&nodes, r, 1),
                        lost_share(&nodes, r, 2)
                    );
                }
            }
        }
        let owned = names(32);
        let n32: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (_, max) = receive_factor(&n32, 2);
        assert!(
            max < 3.0,
            "the busiest receiver holds for at most three times the average: {max}"
        );
    }
}
