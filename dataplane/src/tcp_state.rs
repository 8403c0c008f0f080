//! TCP connection state tracking in the manner of IPVS: the balancer sees both directions but is not an
//! endpoint, so it follows flags (RST, then SYN, FIN, ACK) per direction to pick a state whose timeout keeps
//! the entry as long as the endpoints may still need it.

use anylb_conf::Timeouts;

/// State of a tracked TCP (or UDP) connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[repr(u8)]
pub enum State {
    /// The client's SYN was forwarded; the handshake is not complete.
    SynRecv = 0,
    /// Data may flow both ways.
    Established = 1,
    /// The backend sent a FIN first.
    FinWait = 2,
    /// The client sent a FIN first.
    CloseWait = 3,
    /// Both sent FINs; the last ACK is awaited.
    LastAck = 4,
    /// Both sides closed; kept briefly for late segments.
    TimeWait = 5,
    /// Reset or fully closed.
    Close = 6,
    /// A UDP flow.
    Udp = 7,
}

/// Number of states (size of per-state timeout arrays).
pub const STATES: usize = 8;

impl State {
    /// From the stored byte; unknown values read as `Close`.
    pub fn from_u8(v: u8) -> State {
        match v {
            0 => State::SynRecv,
            1 => State::Established,
            2 => State::FinWait,
            3 => State::CloseWait,
            4 => State::LastAck,
            5 => State::TimeWait,
            7 => State::Udp,
            _ => State::Close,
        }
    }

    /// Name as `ipvsadm -lc` prints it.
    pub fn name(self) -> &'static str {
        match self {
            State::SynRecv => "SYN_RECV",
            State::Established => "ESTABLISHED",
            State::FinWait => "FIN_WAIT",
            State::CloseWait => "CLOSE_WAIT",
            State::LastAck => "LAST_ACK",
            State::TimeWait => "TIME_WAIT",
            State::Close => "CLOSE",
            State::Udp => "UDP",
        }
    }
}

/// Direction of a packet relative to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to backend.
    Inbound,
    /// Backend to client.
    Reply,
}

/// TCP flag bits as on the wire.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The state after a segment with `flags` travelling in `dir`.
pub fn next(state: State, dir: Dir, flags: u8) -> State {
    use State::*;
    if flags & RST != 0 {
        return Close;
    }
    if flags & SYN != 0 {
        return match (dir, state) {
            (Dir::Inbound, TimeWait | Close) => SynRecv,
            (_, s) => s,
        };
    }
    if flags & FIN != 0 {
        return match (dir, state) {
            (_, SynRecv) => TimeWait,
            (Dir::Inbound, Established) => CloseWait,
            (Dir::Reply, Established) => FinWait,
            (Dir::Inbound, FinWait) => LastAck,
            (Dir::Reply, CloseWait) => LastAck,
            (_, s) => s,
        };
    }
    if flags & ACK != 0 {
        return match (dir, state) {
            (Dir::Inbound, SynRecv) => Established,
            (_, LastAck) => TimeWait,
            (_, s) => s,
        };
    }
    state
}

/// Timeouts in table ticks, indexed by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickTimeouts(pub [u32; STATES]);

impl TickTimeouts {
    /// Converts configured timeouts at `tick_ms` milliseconds per tick (at least one tick each).
    pub fn new(t: &Timeouts, tick_ms: u64) -> Self {
        let c = |d: anylb_conf::Duration| u32::try_from((d.as_millis() / tick_ms).max(1)).unwrap_or(u32::MAX);
        TickTimeouts([
            c(t.tcp_syn_recv),
            c(t.tcp_established),
            c(t.tcp_fin_wait),
            c(t.tcp_close_wait),
            c(t.tcp_last_ack),
            c(t.tcp_time_wait),
            c(t.tcp_close),
            c(t.udp),
        ])
    }

    /// Timeout of `s`.
    pub fn of(&self, s: State) -> u32 {
        self.0[s as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn handshake_data_and_client_close_reach_time_wait() {
        let mut s = SynRecv;
        s = next(s, Dir::Reply, SYN | ACK);
        assert_eq!(s, SynRecv);
        s = next(s, Dir::Inbound, ACK);
        assert_eq!(s, Established);
        s = next(s, Dir::Inbound, ACK | 0x08);
        assert_eq!(s, Established);
        s = next(s, Dir::Inbound, FIN | ACK);
        assert_eq!(s, CloseWait);
        s = next(s, Dir::Reply, FIN | ACK);
        assert_eq!(s, LastAck);
        s = next(s, Dir::Inbound, ACK);
        assert_eq!(s, TimeWait);
    }

    #[test]
    fn server_close_first_goes_through_fin_wait() {
        let s = next(Established, Dir::Reply, FIN | ACK);
        assert_eq!(s, FinWait);
        assert_eq!(next(s, Dir::Inbound, FIN | ACK), LastAck);
    }

    #[test]
    fn reset_closes_from_any_state_and_syn_reopens() {
        for s in [SynRecv, Established, FinWait, CloseWait, LastAck, TimeWait] {
            assert_eq!(next(s, Dir::Reply, RST), Close);
        }
        assert_eq!(next(Close, Dir::Inbound, SYN), SynRecv);
        assert_eq!(next(TimeWait, Dir::Inbound, SYN), SynRecv);
        assert_eq!(next(Established, Dir::Inbound, SYN), Established);
    }

    #[test]
    fn only_syn_fin_or_rst_move_an_established_connection() {
        // The fast path skips the call for an established connection's segment without these three flags.
        for flags in 0..=u8::MAX {
            for dir in [Dir::Inbound, Dir::Reply] {
                let moves = next(Established, dir, flags) != Established;
                assert!(!moves || flags & (SYN | FIN | RST) != 0, "flags {flags:#04x}");
            }
        }
    }

    #[test]
    fn timeouts_convert_to_ticks() {
        let t = TickTimeouts::new(&Timeouts::default(), 64);
        assert_eq!(t.of(Established), 900_000 / 64);
        assert_eq!(t.of(Udp), 300_000 / 64);
        assert!(t.0.iter().all(|&v| v >= 1));
    }
}
