//! Which connection the fragments of a datagram belong to, per worker.
//!
//! anylb forwards fragments instead of reassembling them: the first fragment (offset 0) carries the transport
//! header, finds or opens the connection and is translated like a whole packet (the transport checksum is
//! updated incrementally, which needs no other fragment); it then binds the datagram's key — source,
//! destination, identification and protocol — to that connection, and the later fragments, which carry no
//! ports, follow it with only their IP header translated. Fragments that arrive before their first one are
//! parked until it comes (or their time is up). Reassembly would need buffers as big as the datagrams and
//! copies of every byte; forwarding keeps memory to a table entry per datagram in flight and leaves
//! reassembly — and its defences against overlaps — to the backend's and the client's kernels.
//!
//! Everything is bounded: datagrams in flight, fragments parked (per datagram and in all), and time. What
//! does not fit is dropped and counted, never waited for.

use crate::flow::{Addr, FastMap};
use crate::tcp_state::Dir;

/// A datagram: its addresses, identification (IPv4's 16 bits, IPv6's 32) and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Identification.
    pub ident: u32,
    /// Transport protocol.
    pub proto: u8,
}

/// Where a datagram's fragments go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through connection `idx` of this worker, travelling `dir`.
    Conn(u32, Dir),
    /// To another worker (the one that owns the connection).
    Worker(u16),
}

/// Limits of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Datagrams in flight at once.
    pub datagrams: usize,
    /// Fragments parked, in all.
    pub parked: usize,
    /// Fragments parked for one datagram.
    pub parked_per_datagram: usize,
    /// How long a datagram's entry lives after its last fragment, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            datagrams: 4096,
            parked: 512,
            parked_per_datagram: 64,
            timeout_ms: 2000,
        }
    }
}

/// Why a fragment was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The table holds its most datagrams.
    Datagrams,
    /// Its datagram, or the table, holds its most parked fragments.
    Parked,
}

#[derive(Debug)]
struct Entry<F> {
    route: Option<Route>,
    parked: Vec<(u16, F)>,
    expires_ms: u64,
}

/// The table of one worker; `F` is the frame type (a parked fragment is kept with its input port).
#[derive(Debug)]
pub struct FragTable<F> {
    map: FastMap<FragKey, Entry<F>>,
    parked: usize,
    limits: Limits,
}

impl<F> FragTable<F> {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        FragTable {
            map: FastMap::default(),
            parked: 0,
            limits,
        }
    }

    /// New limits (a reload); what is in the table stays.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Datagrams in the table.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Fragments parked.
    pub fn parked(&self) -> usize {
        self.parked
    }

    /// The first fragment of `key` went `route`: later fragments follow it. Returns the fragments parked for
    /// it, in arrival order, for the caller to send the same way.
    pub fn bind(&mut self, key: FragKey, route: Route, now_ms: u64) -> Result<Vec<(u16, F)>, Refused> {
        let expires_ms = now_ms + self.limits.timeout_ms;
        if let Some(e) = self.map.get_mut(&key) {
            e.route = Some(route);
            e.expires_ms = expires_ms;
            self.parked -= e.parked.len();
            return Ok(std::mem::take(&mut e.parked));
        }
        if self.map.len() >= self.limits.datagrams {
            return Err(Refused::Datagrams);
        }
        self.map.insert(
            key,
            Entry {
                route: Some(route),
                parked: Vec::new(),
                expires_ms,
            },
        );
        Ok(Vec::new())
    }

    /// Where a later fragment of `key` goes, if its first fragment came; its entry's time is renewed.
    pub fn route(&mut self, key: &FragKey, now_ms: u64) -> Option<Route> {
        let e = self.map.get_mut(key)?;
        let r = e.route?;
        e.expires_ms = now_ms + self.limits.timeout_ms;
        Some(r)
    }

    /// Keeps a fragment that came before its first one. Gives it back when a limit is reached.
    pub fn park(&mut self, key: FragKey, port: u16, frame: F, now_ms: u64) -> Result<(), (F, Refused)> {
        if self.parked >= self.limits.parked {
            return Err((frame, Refused::Parked));
        }
        let expires_ms = now_ms + self.limits.timeout_ms;
        let full = self.map.len() >= self.limits.datagrams;
        let per = self.limits.parked_per_datagram;
        let e = match self.map.get_mut(&key) {
            Some(e) => e,
            None if full => return Err((frame, Refused::Datagrams)),
            None => self.map.entry(key).or_insert(Entry {
                route: None,
                parked: Vec::new(),
                expires_ms,
            }),
        };
        if e.parked.len() >= per {
            return Err((frame, Refused::Parked));
        }
        e.parked.push((port, frame));
        self.parked += 1;
        Ok(())
    }

    /// Removes the datagrams whose time is up; returns the fragments they still had parked (to be dropped
    /// and counted).
    pub fn expire(&mut self, now_ms: u64) -> Vec<F> {
        let mut gone = Vec::new();
        let parked = &mut self.parked;
        self.map.retain(|_, e| {
            if e.expires_ms > now_ms {
                return true;
            }
            *parked -= e.parked.len();
            gone.extend(e.parked.drain(..).map(|(_, f)| f));
            false
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u32) -> FragKey {
        FragKey {
            src: [1; 16],
            dst: [2; 16],
            ident,
            proto: 17,
        }
    }

    #[test]
    fn later_fragments_follow_the_first_and_early_ones_wait_for_it() {
        let mut t: FragTable<&str> = FragTable::new(Limits::default());
        assert_eq!(t.route(&key(1), 0), None);
        t.park(key(1), 0, "third", 0).unwrap();
        t.park(key(1), 0, "second", 1).unwrap();
        assert_eq!(t.parked(), 2);
        let early = t.bind(key(1), Route::Conn(7, Dir::Inbound), 2).unwrap();
        assert_eq!(early, [(0, "third"), (0, "second")]);
        assert_eq!(t.parked(), 0);
        assert_eq!(t.route(&key(1), 3), Some(Route::Conn(7, Dir::Inbound)));
        assert_eq!(
            t.route(&key(2), 3),
            None,
            "another identification is another datagram"
        );
    }

    #[test]
    fn limits_refuse_what_does_not_fit() {
        let limits = Limits {
            datagrams: 2,
            parked: 3,
            parked_per_datagram: 2,
            timeout_ms: 100,
        };
        let mut t: FragTable<u32> = FragTable::new(limits);
        t.park(key(1), 0, 1, 0).unwrap();
        t.park(key(1), 0, 2, 0).unwrap();
        assert_eq!(t.park(key(1), 0, 3, 0), Err((3, Refused::Parked)), "per datagram");
        t.park(key(2), 0, 4, 0).unwrap();
        assert_eq!(t.park(key(2), 0, 5, 0), Err((5, Refused::Parked)), "in all");
        assert_eq!(t.bind(key(3), Route::Worker(1), 0), Err(Refused::Datagrams));
        assert_eq!(t.bind(key(2), Route::Worker(1), 0).unwrap(), [(0, 4)]);
    }

    #[test]
    fn time_runs_out_from_the_last_fragment_and_parked_ones_are_given_back() {
        let limits = Limits {
            timeout_ms: 100,
            ..Limits::default()
        };
        let mut t: FragTable<u32> = FragTable::new(limits);
        t.bind(key(1), Route::Conn(1, Dir::Reply), 0).unwrap();
        t.park(key(2), 3, 9, 0).unwrap();
        assert_eq!(
            t.route(&key(1), 90),
            Some(Route::Conn(1, Dir::Reply)),
            "renewed until 190"
        );
        assert_eq!(t.expire(150), [9]);
        assert_eq!((t.len(), t.parked()), (1, 0));
        assert!(t.expire(200).is_empty());
        assert!(t.is_empty());
    }
}
