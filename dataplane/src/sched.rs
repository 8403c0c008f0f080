//! Backend schedulers: rr, wrr, lc, wlc, sh and weighted Maglev.
//!
//! Maglev tables are immutable and built by the control plane from the service's backends sorted by a stable
//! key (address bytes, then port) with the cluster's fixed seed, so every node builds the same table. The
//! other schedulers keep small per-worker state. A weight of 0 drains a backend: it is never picked, and its
//! established connections are untouched because they never consult the scheduler again.

use crate::flow::{hash_addr, hash_bytes, Addr};

/// Which scheduler a service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Round robin over backends with weight > 0.
    Rr,
    /// Smooth weighted round robin.
    Wrr,
    /// Fewest connections.
    Lc,
    /// Fewest connections per weight.
    Wlc,
    /// Source-address hash (over the Maglev table, so it is weighted and consistent).
    Sh,
    /// Maglev over the flow hash.
    Maglev,
}

impl From<anylb_conf::Scheduler> for Kind {
    fn from(s: anylb_conf::Scheduler) -> Self {
        match s {
            anylb_conf::Scheduler::Rr => Kind::Rr,
            anylb_conf::Scheduler::Wrr => Kind::Wrr,
            anylb_conf::Scheduler::Lc => Kind::Lc,
            anylb_conf::Scheduler::Wlc => Kind::Wlc,
            anylb_conf::Scheduler::Sh => Kind::Sh,
            anylb_conf::Scheduler::Maglev => Kind::Maglev,
        }
    }
}

/// The key a backend is ordered and hashed by: its address bytes and port.
pub fn backend_key(addr: &Addr, port: u16) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..16].copy_from_slice(addr);
    k[16..].copy_from_slice(&port.to_be_bytes());
    k
}

/// A Maglev lookup table: `M` entries of backend indices (`u16::MAX` when no backend has weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    table: Vec<u16>,
}

/// Marks an empty table entry.
pub const NONE: u16 = u16::MAX;

impl Maglev {
    /// Builds the table for `backends` as (key, weight), where position = backend index. `m` must be prime.
    ///
    /// Each backend walks its own permutation of the table (offset and skip from two hashes of its key);
    /// in every round a backend earns its weight in credit and takes one preferred free entry per `max weight`
    /// of credit, so entries end up proportional to weights (Maglev §3.4 with weights as in Katran).
    pub fn build(backends: &[([u8; 18], u32)], m: u32, seed: u64) -> Maglev {
        let m = m.max(1);
        let mut table = vec![NONE; m as usize];
        let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
        order.sort_by(|&a, &b| backends[a].0.cmp(&backends[b].0));
        if order.is_empty() {
            return Maglev { table };
        }
        let max_w = order.iter().map(|&i| u64::from(backends[i].1)).max().unwrap_or(1);
        let perm: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| {
                let key = &backends[i].0;
                let offset = hash_bytes(key, seed) % u64::from(m);
                let skip = if m > 1 {
                    hash_bytes(key, seed ^ 0x5a5a_5a5a_5a5a_5a5a) % (u64::from(m) - 1) + 1
                } else {
                    1
                };
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; order.len()];
        let mut credit = vec![0u64; order.len()];
        let mut filled = 0u32;
        'fill: loop {
            for (k, &i) in order.iter().enumerate() {
                credit[k] += u64::from(backends[i].1);
                while credit[k] >= max_w {
                    credit[k] -= max_w;
                    let (offset, skip) = perm[k];
                    loop {
                        let c = ((offset + next[k] * skip) % u64::from(m)) as usize;
                        next[k] += 1;
                        if table[c] == NONE {
                            table[c] = i as u16;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Maglev { table }
    }

    /// The backend for hash `h`, if any backend has weight.
    #[inline]
    pub fn pick(&self, h: u64) -> Option<u16> {
        let b = self.table[(h % self.table.len() as u64) as usize];
        (b != NONE).then_some(b)
    }

    /// The table entries.
    pub fn entries(&self) -> &[u16] {
        &self.table
    }
}

/// Per-worker scheduler state of one service.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// rr cursor.
    cursor: usize,
    /// wrr current weights.
    current: Vec<i64>,
}

/// What a scheduler chooses among.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    /// Effective weights (0 = drained or down).
    pub weights: &'a [u32],
    /// The worker's live connections per backend.
    pub conns: &'a [u32],
    /// The service's Maglev table.
    pub maglev: &'a Maglev,
}

/// Picks a backend index; `flow_hash` is the flow's hash with the cluster seed, `client` the client address
/// (for sh).
pub fn pick(
    kind: Kind,
    state: &mut State,
    c: &Candidates<'_>,
    flow_hash: u64,
    client: &Addr,
    seed: u64,
) -> Option<u16> {
    let (weights, conns, maglev) = (c.weights, c.conns, c.maglev);
    let n = weights.len();
    if n == 0 {
        return None;
    }
    match kind {
        Kind::Maglev => maglev.pick(flow_hash),
        Kind::Sh => maglev.pick(hash_addr(client, seed)),
        Kind::Rr => {
            for k in 0..n {
                let i = (state.cursor + k) % n;
                if weights[i] > 0 {
                    state.cursor = i + 1;
                    return Some(i as u16);
                }
            }
            None
        }
        Kind::Wrr => {
            if state.current.len() != n {
                state.current = vec![0; n];
            }
            let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
            if total == 0 {
                return None;
            }
            let mut best: Option<(usize, i64)> = None;
            for (i, (cur, &w)) in state.current.iter_mut().zip(weights).enumerate() {
                if w == 0 {
                    continue;
                }
                *cur += i64::from(w);
                if best.is_none_or(|(_, b)| *cur > b) {
                    best = Some((i, *cur));
                }
            }
            let best = best.map(|(i, _)| i);
            let b = best?;
            state.current[b] -= total;
            Some(b as u16)
        }
        Kind::Lc => (0..n)
            .filter(|&i| weights[i] > 0)
            .min_by_key(|&i| conns.get(i).copied().unwrap_or(0))
            .map(|i| i as u16),
        Kind::Wlc => {
            let mut best: Option<usize> = None;
            for i in (0..n).filter(|&i| weights[i] > 0) {
                let ci = u64::from(conns.get(i).copied().unwrap_or(0)) + 1;
                best = match best {
                    None => Some(i),
                    Some(b) => {
                        let cb = u64::from(conns.get(b).copied().unwrap_or(0)) + 1;
                        // ci / wi < cb / wb  <=>  ci * wb < cb * wi
                        if ci * u64::from(weights[b]) < cb * u64::from(weights[i]) {
                            Some(i)
                        } else {
                            Some(b)
                        }
                    }
                };
            }
            best.map(|i| i as u16)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::v4;
    use std::net::Ipv4Addr;

    fn backends(n: u32, w: u32) -> Vec<([u8; 18], u32)> {
        (0..n)
            .map(|i| (backend_key(&v4(Ipv4Addr::from(0xc633_6400 + i)), 8080), w))
            .collect()
    }

    fn counts(m: &Maglev, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &b in m.entries() {
            c[b as usize] += 1;
        }
        c
    }

    #[test]
    fn maglev_table_is_the_same_for_any_backend_order() {
        let b = backends(10, 100);
        let t1 = Maglev::build(&b, 65537, 7);
        let mut rev = b.clone();
        rev.reverse();
        let t2 = Maglev::build(&rev, 65537, 7);
        // Same backend (by key) in every entry.
        for (x, y) in t1.entries().iter().zip(t2.entries()) {
            assert_eq!(b[*x as usize].0, rev[*y as usize].0);
        }
        assert_ne!(t1, Maglev::build(&b, 65537, 8), "the seed changes the table");
    }

    #[test]
    fn maglev_imbalance_is_within_one_percent_when_m_exceeds_100n() {
        for n in [3u32, 10, 100, 600] {
            let m = 65537;
            assert!(m > 100 * n);
            let t = Maglev::build(&backends(n, 1), m, 7);
            let c = counts(&t, n as usize);
            let ideal = f64::from(m) / f64::from(n);
            let worst = c
                .iter()
                .map(|&x| (x as f64 - ideal).abs() / ideal)
                .fold(0.0, f64::max);
            println!("maglev n={n} M={m}: worst imbalance {:.3}%", worst * 100.0);
            assert!(worst <= 0.01, "n={n}: {worst}");
        }
    }

    #[test]
    fn maglev_removing_one_of_n_moves_about_one_nth() {
        let n = 10;
        let b = backends(n, 1);
        let t1 = Maglev::build(&b, 65537, 7);
        let mut fewer = b.clone();
        fewer[3].1 = 0;
        let t2 = Maglev::build(&fewer, 65537, 7);
        let moved = t1
            .entries()
            .iter()
            .zip(t2.entries())
            .filter(|(x, y)| x != y)
            .count();
        let frac = moved as f64 / 65537.0;
        println!(
            "maglev: removing 1 of {n} backends moved {:.2}% of entries (ideal {:.2}%)",
            frac * 100.0,
            100.0 / f64::from(n)
        );
        assert!(frac < 1.5 / f64::from(n), "{frac}");
        assert!(t2.entries().iter().all(|&x| x != 3));
    }

    #[test]
    fn maglev_weights_are_proportional() {
        let mut b = backends(3, 100);
        b[2].1 = 50;
        let t = Maglev::build(&b, 65537, 1);
        let c = counts(&t, 3);
        let share = c[2] as f64 / 65537.0;
        assert!((share - 0.2).abs() < 0.01, "{c:?}");
    }

    #[test]
    fn maglev_with_no_weight_picks_nothing() {
        let t = Maglev::build(&backends(3, 0), 251, 1);
        assert_eq!(t.pick(12345), None);
    }

    #[test]
    fn rr_skips_drained_backends() {
        let mut s = State::default();
        let w = [1, 0, 1];
        let m = Maglev::build(&[], 7, 0);
        let picks: Vec<_> = (0..4)
            .map(|_| {
                pick(
                    Kind::Rr,
                    &mut s,
                    &Candidates {
                        weights: &w,
                        conns: &[],
                        maglev: &m,
                    },
                    0,
                    &[0; 16],
                    0,
                )
                .unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[test]
    fn wrr_is_smooth_and_proportional() {
        let mut s = State::default();
        let w = [5, 1, 1];
        let m = Maglev::build(&[], 7, 0);
        let picks: Vec<_> = (0..7)
            .map(|_| {
                pick(
                    Kind::Wrr,
                    &mut s,
                    &Candidates {
                        weights: &w,
                        conns: &[],
                        maglev: &m,
                    },
                    0,
                    &[0; 16],
                    0,
                )
                .unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn lc_and_wlc_pick_the_least_loaded() {
        let m = Maglev::build(&[], 7, 0);
        let mut s = State::default();
        assert_eq!(
            pick(
                Kind::Lc,
                &mut s,
                &Candidates {
                    weights: &[1, 1, 1],
                    conns: &[5, 2, 9],
                    maglev: &m
                },
                0,
                &[0; 16],
                0
            ),
            Some(1)
        );
        assert_eq!(
            pick(
                Kind::Lc,
                &mut s,
                &Candidates {
                    weights: &[1, 0, 1],
                    conns: &[5, 2, 9],
                    maglev: &m
                },
                0,
                &[0; 16],
                0
            ),
            Some(0)
        );
        // 10 conns at weight 100 beat 2 conns at weight 10.
        assert_eq!(
            pick(
                Kind::Wlc,
                &mut s,
                &Candidates {
                    weights: &[100, 10],
                    conns: &[10, 2],
                    maglev: &m
                },
                0,
                &[0; 16],
                0
            ),
            Some(0)
        );
    }

    #[test]
    fn sh_sends_a_client_to_one_backend() {
        let b = backends(5, 1);
        let m = Maglev::build(&b, 251, 3);
        let mut s = State::default();
        let client = v4(Ipv4Addr::new(192, 0, 2, 77));
        let w = [1; 5];
        let first = pick(
            Kind::Sh,
            &mut s,
            &Candidates {
                weights: &w,
                conns: &[],
                maglev: &m,
            },
            1,
            &client,
            3,
        );
        for h in 2..20 {
            assert_eq!(
                pick(
                    Kind::Sh,
                    &mut s,
                    &Candidates {
                        weights: &w,
                        conns: &[],
                        maglev: &m
                    },
                    h,
                    &client,
                    3
                ),
                first
            );
        }
    }
}
