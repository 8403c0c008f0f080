//! The packet buffer the engine works on, independent of where it came from: a DPDK mbuf or a plain buffer.
//! The engine rewrites headers in place and grows or shrinks the front (NAT64, ICMP errors, VLAN tags).

/// A frame with room to grow at the front.
pub trait Frame {
    /// The frame's bytes.
    fn data(&self) -> &[u8];
    /// The frame's bytes, mutable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the front by `n` bytes (contents unspecified); false when there is no headroom.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front; false when shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Shortens the frame to `len` bytes (no-op when already shorter).
    fn truncate(&mut self, len: usize);
    /// Grows the tail by `n` bytes (contents unspecified); false when there is no tailroom.
    fn append(&mut self, n: usize) -> bool;
    /// Whether the NIC already verified the IP and L4 checksums of this received frame (offload hook).
    fn rx_checksums_verified(&self) -> bool {
        false
    }
}

/// Something that hands out empty frames (ARP requests, gratuitous announcements).
pub trait FrameAlloc {
    /// The frame type.
    type F: Frame;
    /// An empty frame with headroom, or none when the pool is exhausted.
    fn alloc(&mut self) -> Option<Self::F>;
}

/// Headroom of a [`VecFrame`], as DPDK's RTE_PKTMBUF_HEADROOM.
pub const HEADROOM: usize = 128;
/// Total size of a [`VecFrame`] buffer.
pub const BUF_SIZE: usize = 2048 + HEADROOM;

/// A frame in an owned buffer, for tests, replay and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecFrame {
    buf: Vec<u8>,
    head: usize,
    len: usize,
}

impl VecFrame {
    /// A frame holding a copy of `bytes` (longer input is cut at the buffer size).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut buf = vec![0u8; BUF_SIZE.max(HEADROOM + bytes.len())];
        buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        VecFrame {
            buf,
            head: HEADROOM,
            len: bytes.len(),
        }
    }

    /// An empty frame.
    pub fn empty() -> Self {
        VecFrame {
            buf: vec![0u8; BUF_SIZE],
            head: HEADROOM,
            len: 0,
        }
    }

    /// Refills the frame with `bytes`, keeping its buffer (benchmarks reuse frames).
    pub fn reset(&mut self, bytes: &[u8]) {
        self.head = HEADROOM;
        self.len = bytes.len().min(self.buf.len() - HEADROOM);
        self.buf[HEADROOM..HEADROOM + self.len].copy_from_slice(&bytes[..self.len]);
    }
}

impl Frame for VecFrame {
    fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    fn prepend(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        self.head -= n;
        self.len += n;
        true
    }

    fn adj(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.head += n;
        self.len -= n;
        true
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn append(&mut self, n: usize) -> bool {
        if self.head + self.len + n > self.buf.len() {
            return false;
        }
        self.len += n;
        true
    }
}

/// Allocates [`VecFrame`]s without limit.
#[derive(Debug, Default)]
pub struct VecAlloc;

impl FrameAlloc for VecAlloc {
    type F = VecFrame;

    fn alloc(&mut self) -> Option<VecFrame> {
        Some(VecFrame::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_and_tail_grow_and_shrink() {
        let mut f = VecFrame::from_bytes(&[1, 2, 3, 4]);
        assert!(f.prepend(2));
        f.data_mut()[..2].copy_from_slice(&[9, 9]);
        assert_eq!(f.data(), &[9, 9, 1, 2, 3, 4]);
        assert!(f.adj(3));
        assert_eq!(f.data(), &[2, 3, 4]);
        f.truncate(2);
        assert_eq!(f.data(), &[2, 3]);
        assert!(f.append(1));
        assert_eq!(f.data().len(), 3);
        assert!(!f.prepend(HEADROOM + 10));
        assert!(!f.adj(10));
    }
}
