//! What one call to the worker produces: a verdict per received frame, and the frames to transmit, to hand
//! to the kernel or to other workers.

use crate::cluster::record::Record;
use crate::flow::Addr;
use crate::stats::DropReason;
use crate::wire::ethernet::Mac;

/// What happened to one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Translated and sent on `port`.
    Forward { port: u16 },
    /// Answered by the small stack (ARP, ND, echo) on `port`.
    Reply { port: u16 },
    /// An ICMP error about it was sent on `port`; the frame itself was not forwarded.
    IcmpError { port: u16, reason: DropReason },
    /// Handed to the kernel.
    Kernel,
    /// Sent to the worker that owns its connection.
    Redirect { worker: u16 },
    /// Held: waiting for its next hop to resolve, or for the backend's answer to a SYN-proxy's SYN.
    Held,
    /// A backend's SYN-ACK to a SYN-proxy's SYN: the two handshakes are spliced, and it goes no further.
    Spliced,
    /// A fragment waiting for its datagram's first fragment.
    Parked,
    /// Dropped.
    Drop { reason: DropReason },
}

/// Everything one call to [`Worker::process`](super::Worker::process) produced.
#[derive(Debug)]
pub struct Output<F> {
    /// Frames to transmit, by port.
    pub tx: Vec<(u16, F)>,
    /// Frames for the kernel, by the port they arrived on.
    pub kernel: Vec<(u16, F)>,
    /// Frames for other workers.
    pub redirect: Vec<(u16, F)>,
    /// Neighbours learnt (port, address, MAC), to share with the other workers.
    pub learned: Vec<(u16, Addr, Mac)>,
    /// Connection records for the node's holders (connection sync).
    pub sync: Vec<Record>,
    /// One verdict per received frame, when `record` is set.
    pub verdicts: Vec<Verdict>,
    /// Whether to record verdicts.
    pub record: bool,
}

impl<F> Output<F> {
    /// An empty output; `record` keeps per-frame verdicts (replay and tests).
    pub fn new(record: bool) -> Self {
        Output {
            tx: Vec::new(),
            kernel: Vec::new(),
            redirect: Vec::new(),
            learned: Vec::new(),
            sync: Vec::new(),
            verdicts: Vec::new(),
            record,
        }
    }

    /// Empties every list.
    pub fn clear(&mut self) {
        self.tx.clear();
        self.kernel.clear();
        self.redirect.clear();
        self.learned.clear();
        self.sync.clear();
        self.verdicts.clear();
    }
}
