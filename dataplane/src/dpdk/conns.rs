//! The connections `anylb conns` lists: a filter every worker applies to its whole table when asked, and what
//! it answers (the first matches and how many matched). Pure: the worker's loop calls [`sample`].

use std::net::{IpAddr, SocketAddr};

use crate::conn::Conn;
use crate::flow::{to_ip, Addr};
use crate::frame::Frame;
use crate::worker::Worker;

/// Which connections to list; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnFilter {
    /// The VIP and, unless the service takes every port, its port.
    pub vip: Option<(IpAddr, Option<u16>)>,
    /// The backend's address and, if given, port.
    pub backend: Option<(IpAddr, Option<u16>)>,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The state's name (ESTABLISHED, SYN_RECV, ...; case does not matter).
    pub state: Option<String>,
}

impl ConnFilter {
    /// Whether `c` matches.
    pub fn matches(&self, c: &Conn) -> bool {
        let at = |want: &Option<(IpAddr, Option<u16>)>, a: &Addr, p: u16| {
            want.is_none_or(|(ip, port)| to_ip(a) == ip && port.is_none_or(|x| x == p))
        };
        at(&self.vip, &c.vip(), c.vport)
            && at(&self.backend, &c.backend(), c.bport)
            && self.client.is_none_or(|ip| to_ip(&c.client()) == ip)
            && self
                .state
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case(c.state().name()))
    }
}

/// A connection as the CLI shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnInfo {
    /// Worker that owns it.
    pub worker: u16,
    /// "tcp" or "udp".
    pub proto: &'static str,
    /// Client address and port.
    pub client: SocketAddr,
    /// VIP and port.
    pub vip: SocketAddr,
    /// Local address and port.
    pub local: SocketAddr,
    /// Backend address and port.
    pub backend: SocketAddr,
    /// State name.
    pub state: &'static str,
    /// Milliseconds until expiry.
    pub expires_in_ms: u64,
    /// A SYN-proxied connection: "pending" (the backend's answer awaited) or "spliced".
    pub syn_proxy: Option<&'static str>,
}

/// Up to `limit` connections of a worker that match `f`, and how many match in all.
pub fn sample<F: Frame>(
    w: &Worker<F>,
    wid: u16,
    f: &ConnFilter,
    limit: usize,
    now_ms: u64,
) -> (Vec<ConnInfo>, usize) {
    let sa = |a: &Addr, p: u16| SocketAddr::new(to_ip(a), p);
    let tick_now = w.tick_at(now_ms);
    let mut shown = Vec::new();
    let mut matched = 0;
    for (_, c) in w.conns().iter() {
        if !f.matches(c) {
            continue;
        }
        matched += 1;
        if shown.len() < limit {
            shown.push(ConnInfo {
                worker: wid,
                proto: if c.proto == crate::wire::proto::TCP {
                    "tcp"
                } else {
                    "udp"
                },
                client: sa(&c.client(), c.cport),
                vip: sa(&c.vip(), c.vport),
                local: sa(&c.lip(), c.lport),
                backend: sa(&c.backend(), c.bport),
                state: c.state().name(),
                expires_in_ms: u64::from(c.expires.saturating_sub(tick_now)) * crate::snapshot::TICK_MS,
                syn_proxy: match c.sp {
                    crate::conn::SP_PENDING => Some("pending"),
                    crate::conn::SP_SPLICED => Some("spliced"),
                    _ => None,
                },
            });
        }
    }
    (shown, matched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::v4;
    use crate::tcp_state::State;

    #[test]
    fn every_set_field_must_match() {
        let c = Conn {
            cport: 40000,
            vport: 80,
            bport: 8080,
            state: State::Established as u8,
            ..Conn::addressed(
                v4([192, 0, 2, 100].into()),
                v4([203, 0, 113, 10].into()),
                [0; 16],
                v4([198, 51, 100, 101].into()),
            )
        };
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert!(ConnFilter::default().matches(&c));
        let f = ConnFilter {
            vip: ip("203.0.113.10").map(|a| (a, Some(80))),
            backend: ip("198.51.100.101").map(|a| (a, None)),
            client: ip("192.0.2.100"),
            state: Some("established".into()),
        };
        assert!(f.matches(&c));
        for other in [
            ConnFilter {
                vip: ip("203.0.113.10").map(|a| (a, Some(443))),
                ..f.clone()
            },
            ConnFilter {
                backend: ip("198.51.100.101").map(|a| (a, Some(9090))),
                ..f.clone()
            },
            ConnFilter {
                client: ip("192.0.2.101"),
                ..f.clone()
            },
            ConnFilter {
                state: Some("SYN_RECV".into()),
                ..f.clone()
            },
        ] {
            assert!(!other.matches(&c), "{other:?}");
        }
    }
}
