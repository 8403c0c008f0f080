//! The neighbours as the speaker keeps them: configuration, status, Adj-RIB-In and command channel of each,
//! the state the speaker and the session tasks share, and the pure decisions a session makes about routes —
//! what an UPDATE may install (AS-path loop), what a session loss does to the peer's routes (graceful restart
//! per family, RFC 4724 §4.2, RFC 8538, RFC 5882 §4.3.1) and when stale routes go (End-of-RIB or the restart
//! time). The decisions are tested here without sockets; the `tasks` module only carries them out.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::sync::{mpsc, watch};

use crate::config::{NeighborConfig, SpeakerConfig};
use crate::fsm::{DownReason, Negotiated, PeerRestart, State};
use crate::packet::attribute::{AFI_IPV4, AFI_IPV6, SAFI_UNICAST};
use crate::packet::{Update, WithdrawReason};
use crate::rib::{AdjRibIn, AdjRibOut, Fib};

/// The last time a session went down, kept after it comes back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastReset {
    /// Why.
    pub reason: DownReason,
    /// The reason as a sentence.
    pub message: String,
    /// When.
    #[serde(serialize_with = "anylb_conf::json::time")]
    pub at: SystemTime,
}

/// What the CLI shows of one neighbour.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NeighborStatus {
    /// Address.
    pub address: IpAddr,
    /// Remote AS.
    pub remote_asn: u32,
    /// Description.
    pub description: Option<String>,
    /// FSM state.
    pub state: State,
    /// When the session reached Established or last went down.
    #[serde(serialize_with = "anylb_conf::json::opt_time")]
    pub since: Option<SystemTime>,
    /// Messages received.
    pub msgs_rcvd: u64,
    /// Messages sent.
    pub msgs_sent: u64,
    /// Prefixes received (in the Adj-RIB-In, stale ones included).
    pub prefixes_rcvd: usize,
    /// Prefixes received and kept as stale while the peer restarts.
    pub prefixes_stale: usize,
    /// Prefixes announced on this session: IPv4 and IPv6 unicast.
    pub prefixes_sent: usize,
    /// Prefixes announced on this session per family (`ipv4_unicast`, `ipv6_unicast`).
    pub prefixes_sent_by_family: BTreeMap<String, usize>,
    /// Updates whose routes were not used (RFC 7606 treat-as-withdraw, AS-path loop).
    pub updates_withdrawn: u64,
    /// Why the last such UPDATE's routes were not used.
    pub last_withdrawn: Option<WithdrawReason>,
    /// The last session loss; kept after the session returns.
    pub last_reset: Option<LastReset>,
    /// Times the session left Established.
    pub flaps: u64,
    /// The negotiated parameters while Established.
    pub negotiated: Option<Negotiated>,
    /// Graceful restart of the peer's routes after the last loss, per family: kept or flushed.
    pub graceful_restart: Vec<FamilyRetention>,
    /// Local and remote socket addresses while connected.
    pub connection: Option<(SocketAddr, SocketAddr)>,
}

impl NeighborStatus {
    /// A neighbour that has not started yet.
    pub fn new(c: &NeighborConfig) -> NeighborStatus {
        NeighborStatus {
            address: c.address,
            remote_asn: c.remote_asn,
            description: c.description.clone(),
            state: State::Idle,
            since: None,
            msgs_rcvd: 0,
            msgs_sent: 0,
            prefixes_rcvd: 0,
            prefixes_stale: 0,
            prefixes_sent: 0,
            prefixes_sent_by_family: BTreeMap::new(),
            updates_withdrawn: 0,
            last_withdrawn: None,
            last_reset: None,
            flaps: 0,
            negotiated: None,
            graceful_restart: Vec::new(),
            connection: None,
        }
    }
}

/// Commands to a session task.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Prefixes whose announcement changed (announce or withdraw per the Adj-RIB-Out).
    Changed(Vec<IpNet>),
    /// Stop with a shutdown communication.
    Stop(String),
    /// An accepted connection from this neighbour.
    Incoming(tokio::net::TcpStream),
    /// BFD for this neighbour went down.
    BfdDown,
}

/// One neighbour as the speaker keeps it.
#[derive(Debug)]
pub(crate) struct Neighbor {
    pub cfg: NeighborConfig,
    pub status: Mutex<NeighborStatus>,
    pub rib_in: Mutex<AdjRibIn>,
    /// The prefixes of `rib_in` kept as stale while the peer restarts.
    pub stale: Mutex<HashSet<IpNet>>,
    /// Whether the session is Established (BFD runs while it is).
    pub established: watch::Sender<bool>,
    pub cmd: mpsc::UnboundedSender<Cmd>,
}

impl Neighbor {
    /// Updates the status under its lock (a poisoned lock skips the update: status is for display only).
    pub fn with_status(&self, f: impl FnOnce(&mut NeighborStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

/// State shared by the speaker handle and the session tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: SpeakerConfig,
    pub rib_out: Mutex<AdjRibOut>,
    pub neighbors: Vec<Arc<Neighbor>>,
    fib: Mutex<Fib>,
    fib_tx: watch::Sender<BTreeMap<IpNet, Vec<IpAddr>>>,
}

impl Shared {
    /// The shared state of a speaker with these neighbours.
    pub fn new(cfg: SpeakerConfig, neighbors: Vec<Arc<Neighbor>>) -> Shared {
        let (fib_tx, _) = watch::channel(BTreeMap::new());
        Shared {
            cfg,
            rib_out: Mutex::new(AdjRibOut::default()),
            neighbors,
            fib: Mutex::new(Fib::default()),
            fib_tx,
        }
    }

    /// Runs the decision process again for `touched` prefixes only, over every neighbour's routes for them,
    /// and publishes the best paths when they changed.
    pub fn recompute(&self, touched: &[IpNet]) {
        if touched.is_empty() {
            return;
        }
        let views: Vec<(bool, Ipv4Addr, &Neighbor)> = self
            .neighbors
            .iter()
            .map(|n| {
                let rid = n
                    .status
                    .lock()
                    .ok()
                    .and_then(|s| s.negotiated.as_ref().map(|x| x.peer_router_id))
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                (n.cfg.remote_asn != self.cfg.local_asn, rid, &**n)
            })
            .collect();
        let Ok(mut fib) = self.fib.lock() else {
            return;
        };
        let ribs: Vec<_> = views
            .iter()
            .filter_map(|(ebgp, rid, n)| n.rib_in.lock().ok().map(|r| (r, *ebgp, *rid)))
            .collect();
        let changed = fib.update(touched, ribs.iter().map(|(r, e, id)| (&**r, *e, *id)));
        if changed {
            let table = fib.table().clone();
            self.fib_tx.send_replace(table);
        }
    }

    /// The best paths, updated as they change.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<IpNet, Vec<IpAddr>>> {
        self.fib_tx.subscribe()
    }

    /// How many prefixes have a best path.
    pub fn best_paths(&self) -> usize {
        self.fib.lock().map(|f| f.table().len()).unwrap_or(0)
    }
}

/// An address family by (AFI, SAFI).
pub type Family = (u16, u8);

/// The families a route table holds: IPv4 and IPv6 unicast.
pub const FAMILIES: [Family; 2] = [(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)];

/// The family of a prefix.
pub fn family_of(p: &IpNet) -> Family {
    match p {
        IpNet::V4(_) => (AFI_IPV4, SAFI_UNICAST),
        IpNet::V6(_) => (AFI_IPV6, SAFI_UNICAST),
    }
}

/// The name of a family as the CLI and metrics print it.
pub fn family_name(f: Family) -> &'static str {
    match f {
        (AFI_IPV4, SAFI_UNICAST) => "ipv4_unicast",
        (AFI_IPV6, SAFI_UNICAST) => "ipv6_unicast",
        _ => "other",
    }
}

/// What became of one family's routes when the session was lost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FamilyRetention {
    /// The family's name.
    pub family: &'static str,
    /// Kept as stale while the peer restarts (else flushed).
    pub kept: bool,
}

/// The screening of a received UPDATE before it reaches the Adj-RIB-In: a path through our own AS is a loop
/// (RFC 4271 §9.1.2) and its prefixes are not used (an earlier path of the same prefixes from this neighbour
/// is withdrawn), like RFC 7606's treat-as-withdraw.
pub fn screen(u: &mut Update, local_asn: u32) {
    if u.treat_as_withdraw.is_none() && u.attrs.as_path.contains(local_asn) {
        u.treat_as_withdraw = Some(WithdrawReason::AsPathLoop);
    }
}

/// The End-of-RIB marker of a family (RFC 4724 §2): an UPDATE with nothing in it for IPv4 unicast, or an
/// empty MP_UNREACH_NLRI for another family.
pub fn end_of_rib(u: &Update) -> Option<Family> {
    if !u.nlri.is_empty() || !u.withdrawn.is_empty() || u.mp_reach.is_some() {
        return None;
    }
    match &u.mp_unreach {
        None => Some((AFI_IPV4, SAFI_UNICAST)),
        Some(m) if m.withdrawn.is_empty() => Some((m.afi, m.safi)),
        _ => None,
    }
}

/// The routes of a peer kept as stale while it restarts, by family, with the time they go unless refreshed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stale {
    /// Stale prefixes by family; a family's End-of-RIB flushes what is left of it.
    pub prefixes: BTreeMap<Family, HashSet<IpNet>>,
    /// When the rest goes: the restart time after the loss, then (once the session is back) at least the
    /// selection deferral after re-establishment.
    pub until: Duration,
}

impl Stale {
    /// Whether nothing is stale.
    pub fn is_empty(&self) -> bool {
        self.prefixes.values().all(HashSet::is_empty)
    }

    /// How many prefixes are stale.
    pub fn len(&self) -> usize {
        self.prefixes.values().map(HashSet::len).sum()
    }

    /// An UPDATE arrived: what it announces again is fresh; an End-of-RIB returns the family's prefixes that
    /// are still stale, to flush.
    pub fn on_update(&mut self, u: &Update) -> Vec<IpNet> {
        for p in u
            .nlri
            .iter()
            .map(|p| IpNet::V4(*p))
            .chain(u.mp_reach.iter().flat_map(|m| m.nlri.iter().copied()))
        {
            if let Some(set) = self.prefixes.get_mut(&family_of(&p)) {
                set.remove(&p);
            }
        }
        match end_of_rib(u) {
            Some(f) => self
                .prefixes
                .remove(&f)
                .map(|s| s.into_iter().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// The peer is back with capability `peer`: the families it no longer lists, or lists without the
    /// Forwarding State bit, did not keep forwarding through the restart, and their stale routes go at once
    /// (RFC 4724 §4.2). Returns those prefixes.
    pub fn on_reestablished(&mut self, peer: Option<&PeerRestart>) -> Vec<IpNet> {
        let kept =
            |f: &Family| peer.is_some_and(|gr| gr.families.iter().any(|(a, s, fwd)| (*a, *s) == *f && *fwd));
        let gone: Vec<Family> = self.prefixes.keys().filter(|f| !kept(f)).copied().collect();
        gone.iter()
            .filter_map(|f| self.prefixes.remove(f))
            .flatten()
            .collect()
    }

    /// Everything still stale, to flush (the restart time is over, or a later loss forbids keeping it).
    pub fn take_all(&mut self) -> Vec<IpNet> {
        std::mem::take(&mut self.prefixes)
            .into_values()
            .flatten()
            .collect()
    }
}

/// What a session loss does to the peer's routes, `held` being every prefix the peer gave us, `peer` its
/// graceful-restart capability from the last OPEN, and `reasons` every down event of this loss so far (the
/// connection closing, then BFD, in either order): graceful restart keeps a family only when every reason
/// allows it (so the outcome does not depend on the order of the events) and the peer's capability lists that
/// family (RFC 4724 §4.2: "for all the address families that were previously received in the Graceful
/// Restart Capability"); whether the peer really kept forwarding is judged when it comes back
/// ([`Stale::on_reestablished`]). Returns the stale set (maybe empty) and the prefixes to flush now.
pub fn after_loss(
    held: &[IpNet],
    peer: Option<&PeerRestart>,
    reasons: &[DownReason],
) -> (Stale, Vec<IpNet>, Vec<FamilyRetention>) {
    let keep_families: Vec<Family> = match peer {
        Some(gr)
            if !reasons.is_empty() && reasons.iter().all(|r| r.allows_graceful_restart(gr.notification)) =>
        {
            gr.families.iter().map(|(a, s, _)| (*a, *s)).collect()
        }
        _ => Vec::new(),
    };
    let mut stale = Stale {
        prefixes: BTreeMap::new(),
        until: Duration::from_secs(peer.map_or(0, |g| u64::from(g.time))),
    };
    let mut flush = Vec::new();
    for p in held {
        let f = family_of(p);
        if keep_families.contains(&f) {
            stale.prefixes.entry(f).or_default().insert(*p);
        } else {
            flush.push(*p);
        }
    }
    let retention = FAMILIES
        .iter()
        .map(|f| FamilyRetention {
            family: family_name(*f),
            kept: keep_families.contains(f),
        })
        .collect();
    (stale, flush, retention)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{AsPath, MpNextHop};
    use crate::packet::{Attrs, MpReach, MpUnreach, Notification};

    fn v4(p: &str) -> IpNet {
        p.parse().unwrap()
    }

    fn gr(families: &[(u16, u8, bool)], notification: bool) -> PeerRestart {
        PeerRestart {
            time: 120,
            notification,
            families: families.to_vec(),
        }
    }

    #[test]
    fn a_path_through_our_own_as_is_not_used() {
        let mut u = Update {
            attrs: Attrs {
                as_path: AsPath::sequence(vec![65000, 65010]),
                ..Attrs::default()
            },
            ..Update::default()
        };
        screen(&mut u, 65010);
        assert_eq!(u.treat_as_withdraw, Some(WithdrawReason::AsPathLoop));
        let mut ok = Update::default();
        screen(&mut ok, 65010);
        assert_eq!(ok.treat_as_withdraw, None);
    }

    #[test]
    fn a_closed_connection_keeps_only_the_families_the_peer_lists() {
        let held = [v4("192.0.2.0/26"), v4("2001:db8::/48")];
        let peer = gr(&[(AFI_IPV4, SAFI_UNICAST, false)], false);
        let (stale, flush, ret) = after_loss(&held, Some(&peer), &[DownReason::ConnectionClosed]);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale.until, Duration::from_secs(120));
        assert_eq!(flush, vec![v4("2001:db8::/48")]);
        assert!(ret[0].kept && !ret[1].kept);
    }

    #[test]
    fn a_peer_back_without_the_forwarding_bit_loses_that_familys_stale_routes() {
        let held = [v4("192.0.2.0/26"), v4("2001:db8::/48")];
        let both = [(AFI_IPV4, SAFI_UNICAST, true), (AFI_IPV6, SAFI_UNICAST, true)];
        let (mut stale, flush, _) =
            after_loss(&held, Some(&gr(&both, false)), &[DownReason::HoldTimerExpired]);
        assert!(flush.is_empty());
        let after = gr(
            &[(AFI_IPV4, SAFI_UNICAST, true), (AFI_IPV6, SAFI_UNICAST, false)],
            false,
        );
        assert_eq!(stale.on_reestablished(Some(&after)), vec![v4("2001:db8::/48")]);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale.on_reestablished(None), vec![v4("192.0.2.0/26")]);
        assert!(stale.is_empty());
    }

    #[test]
    fn a_peer_listing_no_families_keeps_nothing() {
        let held = [v4("192.0.2.0/26")];
        let (stale, flush, _) = after_loss(&held, Some(&gr(&[], false)), &[DownReason::HoldTimerExpired]);
        assert!(stale.is_empty());
        assert_eq!(flush, held.to_vec());
    }

    #[test]
    fn bfd_down_flushes_whatever_order_the_events_come_in() {
        let held = [v4("192.0.2.0/26")];
        let peer = gr(&[(AFI_IPV4, SAFI_UNICAST, true)], true);
        for reasons in [
            vec![DownReason::ConnectionClosed, DownReason::BfdDown],
            vec![DownReason::BfdDown, DownReason::ConnectionClosed],
            vec![DownReason::BfdDown],
        ] {
            let (stale, flush, _) = after_loss(&held, Some(&peer), &reasons);
            assert!(stale.is_empty(), "{reasons:?}");
            assert_eq!(flush, held.to_vec());
        }
    }

    #[test]
    fn a_notification_keeps_routes_only_with_the_n_bit_and_never_on_hard_reset() {
        let held = [v4("192.0.2.0/26")];
        let reset = DownReason::NotificationReceived {
            notification: Notification {
                code: 6,
                subcode: 4,
                data: vec![],
            },
        };
        let hard = DownReason::NotificationReceived {
            notification: Notification {
                code: 6,
                subcode: 9,
                data: vec![],
            },
        };
        let with_n = gr(&[(AFI_IPV4, SAFI_UNICAST, true)], true);
        let without_n = gr(&[(AFI_IPV4, SAFI_UNICAST, true)], false);
        assert_eq!(
            after_loss(&held, Some(&with_n), std::slice::from_ref(&reset))
                .0
                .len(),
            1
        );
        assert!(after_loss(&held, Some(&without_n), &[reset]).0.is_empty());
        assert!(after_loss(&held, Some(&with_n), &[hard]).0.is_empty());
    }

    #[test]
    fn end_of_rib_flushes_what_was_not_announced_again() {
        let mut stale = Stale::default();
        stale
            .prefixes
            .entry((AFI_IPV6, SAFI_UNICAST))
            .or_default()
            .extend([v4("2001:db8::/48"), v4("2001:db8:1::/48")]);
        let again = Update {
            mp_reach: Some(MpReach {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
                next_hop: MpNextHop::V6 {
                    global: "2001:db8::1".parse().unwrap(),
                    link_local: None,
                },
                nlri: vec![v4("2001:db8::/48")],
            }),
            ..Update::default()
        };
        assert!(stale.on_update(&again).is_empty());
        let eor = Update {
            mp_unreach: Some(MpUnreach {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
                withdrawn: vec![],
            }),
            ..Update::default()
        };
        assert_eq!(stale.on_update(&eor), vec![v4("2001:db8:1::/48")]);
        assert!(stale.is_empty());
    }
}
