//! Routing information bases.
//!
//! - [`AdjRibIn`]: what one neighbour sent, with a maximum-prefix limit.
//! - [`best_paths`]: the decision over every neighbour's routes, with ECMP. The choice, in order (RFC 4271
//!   §9.1.2 trimmed to what a leaf speaker needs): highest LOCAL_PREF (100 when absent), shortest AS_PATH,
//!   lowest ORIGIN, lowest MED (compared across neighbours, absent = 0), eBGP over iBGP. Every route equal on
//!   all of these is a multipath next hop; the lowest router id is the single best one shown first.
//! - [`Fib`]: those best paths kept by prefix, decided again only for the prefixes a change touched.
//! - [`AdjRibOut`]: what this speaker announces, by prefix, replayed in full on every (re)establishment and
//!   route refresh; [`export`] is the per-neighbour export policy and [`outgoing`] the UPDATEs that bring a
//!   session up to date.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

pub use crate::config::Announcement;
use crate::config::NeighborConfig;
use crate::fsm::Negotiated;
use crate::packet::attribute::{AsPath, MpNextHop, Origin, AFI_IPV4, AFI_IPV6, SAFI_UNICAST};
use crate::packet::message::{pack_mp, pack_mp_withdraw, pack_v4, pack_v4_withdraw};
use crate::packet::{Attrs, Codec, MpUnreach, Update};

/// A route received from a neighbour.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// Next hop.
    pub next_hop: IpAddr,
    /// Attributes.
    pub attrs: Attrs,
}

/// The routes one neighbour sent.
#[derive(Debug, Clone, Default)]
pub struct AdjRibIn {
    routes: HashMap<IpNet, Route>,
    /// Most prefixes accepted.
    pub max_prefix: Option<u32>,
}

/// What applying an UPDATE did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Prefixes added or changed.
    pub changed: Vec<IpNet>,
    /// Prefixes removed.
    pub removed: Vec<IpNet>,
    /// The maximum-prefix limit is exceeded.
    pub over_limit: bool,
}

impl AdjRibIn {
    /// An empty RIB accepting at most `max_prefix` prefixes.
    pub fn with_limit(max_prefix: Option<u32>) -> Self {
        AdjRibIn {
            routes: HashMap::new(),
            max_prefix,
        }
    }

    /// Applies an UPDATE. Treat-as-withdraw UPDATEs remove their prefixes.
    pub fn apply(&mut self, u: &Update) -> Applied {
        let mut a = Applied::default();
        let remove = |p: IpNet, a: &mut Applied, routes: &mut HashMap<IpNet, Route>| {
            if routes.remove(&p).is_some() {
                a.removed.push(p);
            }
        };
        for p in &u.withdrawn {
            remove(IpNet::V4(*p), &mut a, &mut self.routes);
        }
        if let Some(m) = &u.mp_unreach {
            for p in &m.withdrawn {
                remove(*p, &mut a, &mut self.routes);
            }
        }
        let mut announced: Vec<(IpNet, IpAddr)> = Vec::new();
        if let Some(nh) = u.attrs.next_hop {
            announced.extend(u.nlri.iter().map(|p| (IpNet::V4(*p), IpAddr::V4(nh))));
        }
        if let Some(m) = &u.mp_reach {
            announced.extend(m.nlri.iter().map(|p| (*p, m.next_hop.addr())));
        }
        if u.treat_as_withdraw.is_some() {
            for p in u
                .nlri
                .iter()
                .map(|p| IpNet::V4(*p))
                .chain(u.mp_reach.iter().flat_map(|m| m.nlri.iter().copied()))
            {
                remove(p, &mut a, &mut self.routes);
            }
            return a;
        }
        for (p, nh) in announced {
            let r = Route {
                next_hop: nh,
                attrs: u.attrs.clone(),
            };
            if self.routes.get(&p) != Some(&r) {
                self.routes.insert(p, r);
                a.changed.push(p);
            }
        }
        a.over_limit = self.max_prefix.is_some_and(|m| self.routes.len() > m as usize);
        a
    }

    /// Forgets the routes of `prefixes` (stale after a graceful restart); returns those that were there.
    pub fn remove_all(&mut self, prefixes: &[IpNet]) -> Vec<IpNet> {
        prefixes
            .iter()
            .copied()
            .filter(|p| self.routes.remove(p).is_some())
            .collect()
    }

    /// The prefixes held.
    pub fn prefixes(&self) -> Vec<IpNet> {
        self.routes.keys().copied().collect()
    }

    /// Forgets every route (session down without graceful restart).
    pub fn clear(&mut self) -> Vec<IpNet> {
        self.routes.drain().map(|(p, _)| p).collect()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every route.
    pub fn routes(&self) -> impl Iterator<Item = (&IpNet, &Route)> {
        self.routes.iter()
    }

    /// The route for `p`.
    pub fn get(&self, p: &IpNet) -> Option<&Route> {
        self.routes.get(p)
    }
}

/// One neighbour's view for the decision process.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The route.
    pub route: &'a Route,
    /// Whether the neighbour is eBGP.
    pub ebgp: bool,
    /// The neighbour's router id.
    pub router_id: Ipv4Addr,
}

/// Sort key: smaller is better, for everything that must be equal for multipath.
fn rank(c: &Candidate<'_>) -> (std::cmp::Reverse<u32>, usize, u8, u32, bool) {
    let a = &c.route.attrs;
    (
        std::cmp::Reverse(a.local_pref.unwrap_or(100)),
        a.as_path.len(),
        a.origin.map_or(2, |o| o as u8),
        a.med.unwrap_or(0),
        !c.ebgp,
    )
}

/// The best route and its ECMP next hops among `cands` (first = best by lowest router id).
pub fn decide(cands: &[Candidate<'_>]) -> Vec<IpAddr> {
    let Some(best) = cands.iter().map(rank).min() else {
        return Vec::new();
    };
    let mut eq: Vec<&Candidate<'_>> = cands.iter().filter(|c| rank(c) == best).collect();
    eq.sort_by_key(|c| c.router_id);
    let mut hops = Vec::new();
    for c in eq {
        if !hops.contains(&c.route.next_hop) {
            hops.push(c.route.next_hop);
        }
    }
    hops
}

/// Best paths over several neighbours' RIBs: prefix → ECMP next hops.
pub fn best_paths<'a>(
    ribs: impl IntoIterator<Item = (&'a AdjRibIn, bool, Ipv4Addr)>,
) -> BTreeMap<IpNet, Vec<IpAddr>> {
    let ribs: Vec<_> = ribs.into_iter().collect();
    let all: Vec<IpNet> = ribs
        .iter()
        .flat_map(|(r, _, _)| r.routes().map(|(p, _)| *p))
        .collect();
    let mut fib = Fib::default();
    fib.update(&all, ribs);
    fib.table
}

/// The best paths over every neighbour's routes, kept by prefix and decided again only for the prefixes an
/// UPDATE or a session loss touched.
#[derive(Debug, Clone, Default)]
pub struct Fib {
    table: BTreeMap<IpNet, Vec<IpAddr>>,
}

impl Fib {
    /// Decides `touched` again over `ribs` (each neighbour's routes, whether it is eBGP, its router id);
    /// returns whether the table changed.
    pub fn update<'a>(
        &mut self,
        touched: &[IpNet],
        ribs: impl IntoIterator<Item = (&'a AdjRibIn, bool, Ipv4Addr)>,
    ) -> bool {
        let ribs: Vec<_> = ribs.into_iter().collect();
        let mut changed = false;
        for p in touched {
            let cands: Vec<Candidate<'_>> = ribs
                .iter()
                .filter_map(|(rib, ebgp, router_id)| {
                    rib.get(p).map(|route| Candidate {
                        route,
                        ebgp: *ebgp,
                        router_id: *router_id,
                    })
                })
                .collect();
            let hops = decide(&cands);
            let old = if hops.is_empty() {
                self.table.remove(p)
            } else {
                self.table.insert(*p, hops.clone())
            };
            changed |= old.unwrap_or_default() != hops;
        }
        changed
    }

    /// Prefix → ECMP next hops.
    pub fn table(&self) -> &BTreeMap<IpNet, Vec<IpAddr>> {
        &self.table
    }
}

/// What this speaker announces.
#[derive(Debug, Clone, Default)]
pub struct AdjRibOut {
    routes: BTreeMap<IpNet, Announcement>,
}

impl AdjRibOut {
    /// Adds or changes an announcement; returns whether anything changed.
    pub fn announce(&mut self, p: IpNet, a: Announcement) -> bool {
        self.routes.insert(p, a.clone()) != Some(a)
    }

    /// Removes an announcement; returns whether it was there.
    pub fn withdraw(&mut self, p: &IpNet) -> bool {
        self.routes.remove(p).is_some()
    }

    /// Every announcement.
    pub fn routes(&self) -> impl Iterator<Item = (&IpNet, &Announcement)> {
        self.routes.iter()
    }

    /// The announcement of `p`.
    pub fn get(&self, p: &IpNet) -> Option<&Announcement> {
        self.routes.get(p)
    }

    /// Number of announcements.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether nothing is announced.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The session routes are exported to: our AS, the neighbour's configuration, what the session negotiated,
/// its local address (the default next hop) and its codec.
#[derive(Debug, Clone, Copy)]
pub struct ExportTo<'a> {
    /// Local AS.
    pub local_asn: u32,
    /// The neighbour's configuration (its export policy).
    pub neighbor: &'a NeighborConfig,
    /// What the session negotiated.
    pub negotiated: &'a Negotiated,
    /// The session's local address.
    pub local: Option<IpAddr>,
    /// How messages are encoded on it.
    pub codec: Codec,
}

/// The attributes this speaker sends one neighbour for an announcement `a` of family IPv6 or IPv4 (`v6`):
/// the export policy. eBGP prepends the local AS (plus the neighbour's and the announcement's extra prepends);
/// communities of the announcement and the neighbour are merged; MED from the announcement, else the
/// neighbour; LOCAL_PREF only towards iBGP; the next hop is the configured one or the session's local address.
pub fn export(to: &ExportTo<'_>, a: &Announcement, v6: bool) -> (Attrs, Option<MpNextHop>) {
    let (local_asn, n, local) = (to.local_asn, to.neighbor, to.local);
    let ebgp = to.negotiated.peer_asn != local_asn;
    let mut path = Vec::new();
    if ebgp {
        path.push(local_asn);
    }
    path.extend(std::iter::repeat_n(
        local_asn,
        usize::from(n.prepend) + usize::from(a.prepend),
    ));
    let mut communities = a.communities.clone();
    communities.extend(n.communities.iter().filter(|x| !a.communities.contains(x)));
    let mut large = a.large_communities.clone();
    large.extend(
        n.large_communities
            .iter()
            .filter(|x| !a.large_communities.contains(x)),
    );
    let v4_nh = n.next_hop.or(match local {
        Some(IpAddr::V4(l)) => Some(l),
        _ => None,
    });
    let attrs = Attrs {
        origin: Some(Origin::Igp),
        as_path: AsPath::sequence(path),
        next_hop: if v6 { None } else { v4_nh },
        med: a.med.or(n.med),
        local_pref: if ebgp {
            None
        } else {
            Some(n.local_pref.unwrap_or(100))
        },
        communities,
        large_communities: large,
        ..Attrs::default()
    };
    let mp_nh = if v6 {
        let global = n.ipv6_next_hop.or(match local {
            Some(IpAddr::V6(l)) => Some(l),
            _ => None,
        });
        global.map(|g| MpNextHop::V6 {
            global: g,
            link_local: None,
        })
    } else {
        None
    };
    (attrs, mp_nh)
}

/// The UPDATEs that bring one session up to date for some prefixes.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// The UPDATEs, announcements grouped by their exported attributes and packed.
    pub updates: Vec<Update>,
    /// Prefixes announced by them.
    pub announced: Vec<IpNet>,
    /// Prefixes withdrawn by them.
    pub withdrawn: Vec<IpNet>,
    /// Announcements left out: no next hop of their family on this session.
    pub no_next_hop: usize,
}

/// What one session must send so that the neighbour has the current state of `prefixes` in `out` (the
/// Adj-RIB-Out): announcements for those in it, withdrawals for those not, only for negotiated families.
/// With `eor`, an End-of-RIB per family follows (RFC 4724 §2).
pub fn outgoing(out: &AdjRibOut, prefixes: &[IpNet], to: &ExportTo<'_>, eor: bool) -> Outgoing {
    let has = |afi: u16| to.negotiated.families.contains(&(afi, SAFI_UNICAST));
    let codec = to.codec;
    let mut o = Outgoing::default();
    let mut groups: Vec<(Attrs, Option<MpNextHop>, bool, Vec<IpNet>)> = Vec::new();
    let (mut w4, mut w6) = (Vec::new(), Vec::new());
    for p in prefixes {
        let v6 = matches!(p, IpNet::V6(_));
        if !has(if v6 { AFI_IPV6 } else { AFI_IPV4 }) {
            continue;
        }
        let Some(a) = out.get(p) else {
            match p {
                IpNet::V4(p4) => w4.push(*p4),
                IpNet::V6(_) => w6.push(*p),
            }
            o.withdrawn.push(*p);
            continue;
        };
        let (attrs, mp_nh) = export(to, a, v6);
        if (!v6 && attrs.next_hop.is_none()) || (v6 && mp_nh.is_none()) {
            o.no_next_hop += 1;
            continue;
        }
        o.announced.push(*p);
        match groups
            .iter_mut()
            .find(|g| g.0 == attrs && g.1 == mp_nh && g.2 == v6)
        {
            Some(g) => g.3.push(*p),
            None => groups.push((attrs, mp_nh, v6, vec![*p])),
        }
    }
    o.updates.extend(pack_v4_withdraw(&w4));
    o.updates.extend(pack_mp_withdraw(AFI_IPV6, &w6));
    for (attrs, mp_nh, v6, ps) in &groups {
        match (v6, mp_nh) {
            (true, Some(nh)) => o.updates.extend(pack_mp(attrs, AFI_IPV6, *nh, ps, codec)),
            (true, None) => {}
            (false, _) => {
                let v4: Vec<_> = ps
                    .iter()
                    .filter_map(|p| if let IpNet::V4(x) = p { Some(*x) } else { None })
                    .collect();
                o.updates.extend(pack_v4(attrs, &v4, codec));
            }
        }
    }
    if eor {
        if has(AFI_IPV4) {
            o.updates.push(Update::default());
        }
        if has(AFI_IPV6) {
            o.updates.push(Update {
                mp_unreach: Some(MpUnreach {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                    withdrawn: vec![],
                }),
                ..Update::default()
            });
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{AsPath, MpNextHop, MpReach, MpUnreach, Origin};

    fn upd(prefix: &str, nh: &str, path: Vec<u32>, lp: Option<u32>) -> Update {
        Update {
            attrs: Attrs {
                origin: Some(Origin::Igp),
                as_path: AsPath::sequence(path),
                next_hop: Some(nh.parse().unwrap()),
                local_pref: lp,
                ..Attrs::default()
            },
            nlri: vec![prefix.parse().unwrap()],
            ..Update::default()
        }
    }

    #[test]
    fn updates_add_change_and_withdraw() {
        let mut r = AdjRibIn::default();
        let a = r.apply(&upd("0.0.0.0/0", "192.0.2.1", vec![65000], None));
        assert_eq!(a.changed.len(), 1);
        assert_eq!(
            r.apply(&upd("0.0.0.0/0", "192.0.2.1", vec![65000], None))
                .changed
                .len(),
            0,
            "idempotent"
        );
        let w = Update {
            withdrawn: vec!["0.0.0.0/0".parse().unwrap()],
            ..Update::default()
        };
        assert_eq!(r.apply(&w).removed.len(), 1);
        assert!(r.is_empty());
        let v6 = Update {
            attrs: Attrs {
                origin: Some(Origin::Igp),
                ..Attrs::default()
            },
            mp_reach: Some(MpReach {
                afi: 2,
                safi: 1,
                next_hop: MpNextHop::V6 {
                    global: "2001:db8::1".parse().unwrap(),
                    link_local: None,
                },
                nlri: vec!["::/0".parse().unwrap()],
            }),
            ..Update::default()
        };
        r.apply(&v6);
        assert_eq!(
            r.get(&"::/0".parse().unwrap()).unwrap().next_hop,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        let w6 = Update {
            mp_unreach: Some(MpUnreach {
                afi: 2,
                safi: 1,
                withdrawn: vec!["::/0".parse().unwrap()],
            }),
            ..Update::default()
        };
        assert_eq!(r.apply(&w6).removed.len(), 1);
    }

    #[test]
    fn treat_as_withdraw_removes_the_prefixes() {
        let mut r = AdjRibIn::default();
        r.apply(&upd("198.51.100.0/24", "192.0.2.1", vec![65000], None));
        let mut bad = upd("198.51.100.0/24", "192.0.2.1", vec![65000], None);
        bad.treat_as_withdraw = Some(crate::packet::WithdrawReason::Malformed(1));
        assert_eq!(r.apply(&bad).removed.len(), 1);
    }

    #[test]
    fn max_prefix_is_flagged() {
        let mut r = AdjRibIn::with_limit(Some(1));
        assert!(
            !r.apply(&upd("198.51.100.0/24", "192.0.2.1", vec![65000], None))
                .over_limit
        );
        assert!(
            r.apply(&upd("198.51.100.0/25", "192.0.2.1", vec![65000], None))
                .over_limit
        );
    }

    #[test]
    fn equal_routes_from_two_upstreams_are_ecmp() {
        let (mut a, mut b, mut c) = (AdjRibIn::default(), AdjRibIn::default(), AdjRibIn::default());
        a.apply(&upd("0.0.0.0/0", "192.0.2.1", vec![65000], None));
        b.apply(&upd("0.0.0.0/0", "192.0.2.17", vec![65001], None));
        c.apply(&upd("0.0.0.0/0", "192.0.2.33", vec![65002, 65003], None));
        let best = best_paths([
            (&a, true, "192.0.2.1".parse().unwrap()),
            (&b, true, "192.0.2.17".parse().unwrap()),
            (&c, true, "192.0.2.33".parse().unwrap()),
        ]);
        let hops = &best[&"0.0.0.0/0".parse::<IpNet>().unwrap()];
        assert_eq!(
            hops,
            &vec![
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "192.0.2.17".parse().unwrap()
            ]
        );
        // A higher LOCAL_PREF wins alone.
        c.apply(&upd("0.0.0.0/0", "192.0.2.33", vec![65002, 65003], Some(200)));
        let best = best_paths([
            (&a, true, "192.0.2.1".parse().unwrap()),
            (&c, true, "192.0.2.33".parse().unwrap()),
        ]);
        assert_eq!(
            best[&"0.0.0.0/0".parse::<IpNet>().unwrap()],
            vec!["192.0.2.33".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn rib_out_is_idempotent() {
        let mut o = AdjRibOut::default();
        let p: IpNet = "203.0.113.10/32".parse().unwrap();
        assert!(o.announce(p, Announcement::default()));
        assert!(!o.announce(p, Announcement::default()));
        assert!(o.announce(
            p,
            Announcement {
                med: Some(5),
                ..Announcement::default()
            }
        ));
        assert!(o.withdraw(&p));
        assert!(!o.withdraw(&p));
    }
}
