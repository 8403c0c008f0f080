//! dpdk-sys: the system DPDK 22.11 (found with pkg-config) for anylb.
//!
//! The bindgen output and the C shim over DPDK's static-inline functions stay private; this crate exposes
//! safe wrappers: EAL initialisation, packet-buffer pools and owned mbufs, ports (configuration, RSS, queues,
//! bursts, link, statistics), rings between lcores, lcore launch, and rte_flow steering rules. Every `unsafe`
//! block says why it is sound.

#![allow(unsafe_code)]

use std::ffi::{c_void, CStr, CString};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    missing_debug_implementations,
    unused_qualifications,
    unsafe_op_in_unsafe_fn
)]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

/// A DPDK call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct Error {
    /// What was being done.
    pub what: String,
    /// DPDK's explanation.
    pub reason: String,
}

impl Error {
    fn new(what: impl Into<String>, code: i32) -> Error {
        let code = code.abs();
        // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
        let reason = unsafe { CStr::from_ptr(ffi::rte_strerror(code)) }
            .to_string_lossy()
            .into_owned();
        Error {
            what: what.into(),
            reason,
        }
    }

    fn errno(what: impl Into<String>) -> Error {
        // SAFETY: reads the calling thread's rte_errno.
        Error::new(what, unsafe { ffi::anylb_errno() })
    }
}

/// Result of DPDK calls.
pub type Result<T> = std::result::Result<T, Error>;

static EAL_UP: AtomicBool = AtomicBool::new(false);

/// The initialised Environment Abstraction Layer; cleaned up on drop. Only one may exist per process.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises the EAL with `args` (without the program name).
    pub fn init(args: &[String]) -> Result<Eal> {
        if EAL_UP.swap(true, Ordering::SeqCst) {
            return Err(Error {
                what: "EAL init".into(),
                reason: "the EAL is already initialised in this process".into(),
            });
        }
        let mut owned: Vec<CString> = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("anylb").map_err(|e| Error {
            what: "EAL args".into(),
            reason: e.to_string(),
        })?);
        for a in args {
            owned.push(CString::new(a.as_str()).map_err(|e| Error {
                what: format!("EAL argument {a:?}"),
                reason: e.to_string(),
            })?);
        }
        let mut argv: Vec<*mut std::os::raw::c_char> = owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
        // SAFETY: argv points to NUL-terminated strings that outlive the call; the EAL may permute argv but
        // does not free or keep the strings past init (it copies what it keeps).
        let r = unsafe { ffi::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if r < 0 {
            EAL_UP.store(false, Ordering::SeqCst);
            return Err(Error::errno("EAL init"));
        }
        Ok(Eal { _private: () })
    }

    /// The main lcore.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: valid after init.
        unsafe { ffi::rte_get_main_lcore() }
    }

    /// Number of lcores.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: valid after init.
        unsafe { ffi::rte_lcore_count() }
    }

    /// Runs `f` on `lcore` (a worker lcore given to the EAL). Its return value is collected by
    /// [`Eal::wait`].
    pub fn launch(&self, lcore: u32, f: Box<dyn FnOnce() -> i32 + Send>) -> Result<()> {
        extern "C" fn trampoline(arg: *mut c_void) -> i32 {
            // SAFETY: `arg` is the Box<Box<dyn FnOnce>> leaked by `launch`, handed to exactly one lcore.
            let f = unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() -> i32 + Send>>()) };
            // A panic must not unwind into C; the lcore reports -1 instead.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(-1)
        }
        let arg = Box::into_raw(Box::new(f)).cast::<c_void>();
        // SAFETY: trampoline has the lcore_function_t signature; arg stays valid until the trampoline takes it.
        let r = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if r != 0 {
            // SAFETY: the launch failed, so the lcore never took ownership of arg.
            drop(unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() -> i32 + Send>>()) });
            return Err(Error::new(format!("launch on lcore {lcore}"), r));
        }
        Ok(())
    }

    /// Waits for the function running on `lcore` and returns its value.
    pub fn wait(&self, lcore: u32) -> i32 {
        // SAFETY: waiting on an lcore id is valid for any id; unknown ids return immediately.
        unsafe { ffi::rte_eal_wait_lcore(lcore) }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: valid after init; the EAL returns a pointer to its own NUL-terminated path buffer, copied here
        // before cleanup.
        let dir = unsafe { CStr::from_ptr(ffi::rte_eal_get_runtime_dir()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the EAL was initialised by this value; all lcores have been waited for by the owner.
        unsafe { ffi::rte_eal_cleanup() };
        EAL_UP.store(false, Ordering::SeqCst);
        // The runtime directory (`/var/run/dpdk/<file prefix>`) stays behind otherwise, one per run. What is
        // left in it at this point is the telemetry socket, whose thread unlinks it only at process exit. The
        // directory is removed only when nothing else is in it, so one shared through a fixed prefix stays.
        if !dir.is_empty() {
            let dir = std::path::Path::new(&dir);
            let _ = std::fs::remove_file(dir.join("dpdk_telemetry.v2"));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The lcore the calling thread runs on (`u32::MAX` for non-EAL threads).
pub fn lcore_id() -> u32 {
    // SAFETY: reads a thread-local variable.
    unsafe { ffi::anylb_lcore_id() }
}

/// The NUMA socket of the calling thread.
pub fn socket_id() -> i32 {
    // SAFETY: reads a thread-local variable.
    unsafe { ffi::rte_socket_id() as i32 }
}

/// A pool of packet buffers. Pools live as long as the process (they are never freed: buffers may still be in
/// flight in a NIC ring when an owner would drop it).
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<ffi::rte_mempool>,
}

// SAFETY: DPDK mempools are safe to use from several threads (per-lcore caches, lock-free rings).
unsafe impl Send for Mempool {}
// SAFETY: as above; all methods take &self and DPDK synchronises internally.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// A pool of `n` buffers with `data_room` bytes each (headroom included), a per-lcore cache, on `socket`.
    pub fn new(_eal: &Eal, name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool> {
        let cname = CString::new(name).map_err(|e| Error {
            what: "mempool name".into(),
            reason: e.to_string(),
        })?;
        // SAFETY: the EAL is initialised (we hold &Eal); the name is NUL-terminated and copied by DPDK.
        let p = unsafe { ffi::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        NonNull::new(p)
            .map(|ptr| Mempool { ptr })
            .ok_or_else(|| Error::errno(format!("mempool {name}")))
    }

    /// A buffer, or none when the pool is empty.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid for the life of the process.
        NonNull::new(unsafe { ffi::anylb_pktmbuf_alloc(self.ptr.as_ptr()) }).map(|ptr| Mbuf { ptr })
    }

    /// Buffers available.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Buffers in use.
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is valid.
        unsafe { ffi::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }
}

/// RX offload flags meaning "the NIC checked the IP header checksum and found it good".
const RX_IP_GOOD: u64 = ffi::RTE_MBUF_F_RX_IP_CKSUM_GOOD as u64;
const RX_IP_MASK: u64 = ffi::RTE_MBUF_F_RX_IP_CKSUM_MASK as u64;
const RX_L4_GOOD: u64 = ffi::RTE_MBUF_F_RX_L4_CKSUM_GOOD as u64;
const RX_L4_MASK: u64 = ffi::RTE_MBUF_F_RX_L4_CKSUM_MASK as u64;

/// An owned packet buffer (single segment), freed back to its pool on drop.
pub struct Mbuf {
    ptr: NonNull<ffi::rte_mbuf>,
}

// SAFETY: an mbuf is owned by exactly one Mbuf value; moving it between threads is how DPDK hands packets
// between lcores (rings).
unsafe impl Send for Mbuf {}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mbuf({} bytes)", self.len())
    }
}

impl Mbuf {
    /// The mbuf's header, read in place: the fields read per packet (`buf_addr`, `data_off`, `data_len`,
    /// `port`, `ol_flags`) are plain fields of `struct rte_mbuf`, whose layout bindgen checks, so reading them
    /// here saves a call into the C shim each time (the calls cannot be inlined across the languages).
    #[inline]
    fn head(&self) -> &ffi::rte_mbuf {
        // SAFETY: we own a valid mbuf; the shared borrow of self keeps it alive and unchanged.
        unsafe { self.ptr.as_ref() }
    }

    /// Length of the data.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.head().data_len)
    }

    /// Whether the buffer holds no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the data starts (`rte_pktmbuf_mtod`).
    #[inline]
    fn start(&self) -> *mut u8 {
        let h = self.head();
        // SAFETY: data_off is within the buffer buf_addr points at (DPDK keeps it so).
        unsafe { h.buf_addr.cast::<u8>().add(usize::from(h.data_off)) }
    }

    /// The data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: the data points at data_len initialised bytes of the first segment, which we own; the
        // borrow of self keeps it alive and unaliased by other Mbuf values.
        unsafe { std::slice::from_raw_parts(self.start(), self.len()) }
    }

    /// The data, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        // SAFETY: as in `data`, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.start(), len) }
    }

    /// Grows the front by `n` bytes.
    pub fn prepend(&mut self, n: usize) -> bool {
        // SAFETY: we own the mbuf; DPDK checks the headroom.
        u16::try_from(n).is_ok_and(|n| unsafe { ffi::anylb_pktmbuf_prepend(self.ptr.as_ptr(), n) } != 0)
    }

    /// Removes `n` bytes from the front.
    pub fn adj(&mut self, n: usize) -> bool {
        // SAFETY: we own the mbuf; DPDK checks the length.
        u16::try_from(n).is_ok_and(|n| unsafe { ffi::anylb_pktmbuf_adj(self.ptr.as_ptr(), n) } != 0)
    }

    /// Grows the tail by `n` bytes.
    pub fn append(&mut self, n: usize) -> bool {
        // SAFETY: we own the mbuf; DPDK checks the tailroom.
        u16::try_from(n).is_ok_and(|n| unsafe { ffi::anylb_pktmbuf_append(self.ptr.as_ptr(), n) } != 0)
    }

    /// Removes `n` bytes from the tail. A one-segment mbuf (every frame the worker trims its padding off) is
    /// trimmed in place, as `rte_pktmbuf_trim` does; a chain goes through DPDK.
    #[inline(always)]
    pub fn trim(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: we own a valid mbuf; &mut self gives exclusive access to its header.
        let h = unsafe { self.ptr.as_mut() };
        if h.nb_segs == 1 {
            if n16 > h.data_len {
                return false;
            }
            h.data_len -= n16;
            h.pkt_len -= u32::from(n16);
            return true;
        }
        // SAFETY: we own the mbuf; DPDK checks the length.
        unsafe { ffi::anylb_pktmbuf_trim(self.ptr.as_ptr(), n16) != 0 }
    }

    /// Makes a chained mbuf one segment; false when it cannot. A one-segment mbuf (nearly every frame) is
    /// recognised in place, as `rte_pktmbuf_is_contiguous` does, without a call into the shim per frame.
    #[inline]
    pub fn linearize(&mut self) -> bool {
        if self.head().nb_segs == 1 {
            return true;
        }
        // SAFETY: we own the mbuf; DPDK copies its chain into the first segment or refuses.
        unsafe { ffi::anylb_pktmbuf_linearize(self.ptr.as_ptr()) == 0 }
    }

    /// Whether the NIC verified the IP and L4 checksums as good.
    #[inline]
    pub fn rx_checksums_good(&self) -> bool {
        let f = self.head().ol_flags;
        f & RX_IP_MASK == RX_IP_GOOD && f & RX_L4_MASK == RX_L4_GOOD
    }

    /// The port the frame was received on (or the value set by [`set_port`](Self::set_port)).
    #[inline]
    pub fn port(&self) -> u16 {
        self.head().port
    }

    /// Records a port in the frame's metadata (frames handed between lcores keep their input port).
    pub fn set_port(&mut self, port: u16) {
        // SAFETY: we own the mbuf.
        unsafe { ffi::anylb_pktmbuf_set_port(self.ptr.as_ptr(), port) }
    }

    fn into_raw(self) -> *mut ffi::rte_mbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and it is not used after this.
        unsafe { ffi::anylb_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

/// Capabilities of a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Driver name.
    pub driver: String,
    /// Most RX queues.
    pub max_rx_queues: u16,
    /// Most TX queues.
    pub max_tx_queues: u16,
    /// RSS hash functions supported (RTE_ETH_RSS_* bits).
    pub rss_offloads: u64,
    /// Whether RX IP/TCP/UDP checksum offload is supported.
    pub rx_checksum: bool,
    /// Whether TX IP/TCP/UDP checksum offload is supported.
    pub tx_checksum: bool,
    /// Largest MTU.
    pub max_mtu: u16,
}

/// How to configure a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    /// RX queues (one per worker).
    pub rx_queues: u16,
    /// TX queues (one per worker, plus one for the control thread).
    pub tx_queues: u16,
    /// Spread flows over RX queues with RSS on IP and TCP/UDP (when more than one queue and supported).
    pub rss: bool,
    /// Enable RX checksum offload (when supported).
    pub rx_checksum: bool,
    /// Descriptors per queue.
    pub descriptors: u16,
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Whether the link is up.
    pub up: bool,
    /// Speed in Mbit/s.
    pub speed_mbps: u32,
}

/// Port counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames dropped because RX queues were full.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// An Ethernet port (physical or virtual device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    id: u16,
}

impl Port {
    /// The port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The port a device (vdev name such as "net_ring0", or PCI address) became.
    pub fn by_name(_eal: &Eal, name: &str) -> Result<Port> {
        let cname = CString::new(name).map_err(|e| Error {
            what: "port name".into(),
            reason: e.to_string(),
        })?;
        let mut id = 0u16;
        // SAFETY: NUL-terminated name and a valid out pointer.
        let r = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if r != 0 {
            return Err(Error::new(format!("no DPDK port named {name:?}"), r));
        }
        Ok(Port { id })
    }

    /// Capabilities.
    pub fn info(&self) -> Result<PortInfo> {
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: valid port id and out pointer.
        let r = unsafe { ffi::rte_eth_dev_info_get(self.id, &mut info) };
        if r != 0 {
            return Err(Error::new(format!("port {} info", self.id), r));
        }
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: the driver name is a static NUL-terminated string of the driver.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        // SAFETY: pure functions returning constants.
        let (rxc, txc) = unsafe { (ffi::anylb_rx_offload_checksum(), ffi::anylb_tx_offload_checksum()) };
        Ok(PortInfo {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads,
            rx_checksum: info.rx_offload_capa & rxc == rxc,
            tx_checksum: info.tx_offload_capa & txc == txc,
            max_mtu: info.max_mtu,
        })
    }

    /// Configures queues, RSS and offloads, and sets up every queue with `pool`. Returns whether RSS and RX
    /// checksum offload are in use.
    pub fn configure(&self, cfg: &PortConfig, pool: &Mempool) -> Result<(bool, bool)> {
        let info = self.info()?;
        let mut conf = ffi::rte_eth_conf::default();
        // SAFETY: a pure function returning a constant.
        let want_rss = unsafe { ffi::anylb_rss_ip_tcp_udp() } & info.rss_offloads;
        let rss = cfg.rss && cfg.rx_queues > 1 && want_rss != 0;
        if rss {
            conf.rxmode.mq_mode = ffi::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = want_rss;
        }
        let rx_csum = cfg.rx_checksum && info.rx_checksum;
        if rx_csum {
            // SAFETY: a pure function returning a constant.
            conf.rxmode.offloads |= unsafe { ffi::anylb_rx_offload_checksum() };
        }
        // SAFETY: valid port id; conf is fully initialised.
        let r = unsafe { ffi::rte_eth_dev_configure(self.id, cfg.rx_queues, cfg.tx_queues, &conf) };
        if r != 0 {
            return Err(Error::new(
                format!(
                    "configure port {} ({} rx, {} tx queues)",
                    self.id, cfg.rx_queues, cfg.tx_queues
                ),
                r,
            ));
        }
        // SAFETY: valid port id.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 { ffi::SOCKET_ID_ANY } else { socket };
        for q in 0..cfg.rx_queues {
            // SAFETY: the port is configured with this many queues; pool outlives the port (never freed);
            // a null rxconf asks for the driver's defaults.
            let r = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    cfg.descriptors,
                    socket as u32,
                    std::ptr::null(),
                    pool.ptr.as_ptr(),
                )
            };
            if r != 0 {
                return Err(Error::new(format!("port {} rx queue {q}", self.id), r));
            }
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: as above, with the driver's default txconf.
            let r = unsafe {
                ffi::rte_eth_tx_queue_setup(self.id, q, cfg.descriptors, socket as u32, std::ptr::null())
            };
            if r != 0 {
                return Err(Error::new(format!("port {} tx queue {q}", self.id), r));
            }
        }
        Ok((rss, rx_csum))
    }

    /// Sets the MTU.
    pub fn set_mtu(&self, mtu: u16) -> Result<()> {
        // SAFETY: valid port id.
        let r = unsafe { ffi::rte_eth_dev_set_mtu(self.id, mtu) };
        if r != 0 {
            return Err(Error::new(format!("port {} mtu {mtu}", self.id), r));
        }
        Ok(())
    }

    /// Receives every frame regardless of destination MAC.
    pub fn promiscuous(&self) -> Result<()> {
        // SAFETY: valid port id.
        let r = unsafe { ffi::rte_eth_promiscuous_enable(self.id) };
        if r != 0 {
            return Err(Error::new(format!("port {} promiscuous", self.id), r));
        }
        Ok(())
    }

    /// Starts the port.
    pub fn start(&self) -> Result<()> {
        // SAFETY: valid, configured port.
        let r = unsafe { ffi::rte_eth_dev_start(self.id) };
        if r != 0 {
            return Err(Error::new(format!("start port {}", self.id), r));
        }
        Ok(())
    }

    /// Stops the port.
    pub fn stop(&self) -> Result<()> {
        // SAFETY: valid port id.
        let r = unsafe { ffi::rte_eth_dev_stop(self.id) };
        if r != 0 {
            return Err(Error::new(format!("stop port {}", self.id), r));
        }
        Ok(())
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut a = ffi::rte_ether_addr::default();
        // SAFETY: valid port id and out pointer.
        let r = unsafe { ffi::rte_eth_macaddr_get(self.id, &mut a) };
        if r != 0 {
            return Err(Error::new(format!("port {} mac", self.id), r));
        }
        Ok(a.addr_bytes)
    }

    /// Link state, without waiting.
    pub fn link(&self) -> Result<Link> {
        let mut l = ffi::rte_eth_link::default();
        // SAFETY: valid port id and out pointer.
        let r = unsafe { ffi::rte_eth_link_get_nowait(self.id, &mut l) };
        if r != 0 {
            return Err(Error::new(format!("port {} link", self.id), r));
        }
        Ok(Link {
            up: u32::from(l.link_status()) == ffi::RTE_ETH_LINK_UP,
            speed_mbps: l.link_speed,
        })
    }

    /// Counters.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: valid port id and out pointer.
        let r = unsafe { ffi::rte_eth_stats_get(self.id, &mut s) };
        if r != 0 {
            return Err(Error::new(format!("port {} stats", self.id), r));
        }
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Receives up to `max` frames from `queue`, appended to `out`. Chained frames are linearised or dropped.
    pub fn rx_burst(&self, queue: u16, out: &mut Vec<Mbuf>, max: usize) -> usize {
        // Left uninitialised (zeroing it cost a memset of 512 bytes a burst): the driver writes what it returns.
        let mut raw = [std::mem::MaybeUninit::<*mut ffi::rte_mbuf>::uninit(); 64];
        let n = max.min(raw.len()) as u16;
        // SAFETY: raw has room for n pointers; the queue belongs to the calling lcore by construction of
        // the runtime (one queue per worker).
        let got = unsafe { ffi::anylb_rx_burst(self.id, queue, raw.as_mut_ptr().cast(), n) };
        for slot in &raw[..usize::from(got)] {
            // SAFETY: the driver wrote the first `got` slots.
            let p = unsafe { slot.assume_init() };
            if let Some(ptr) = NonNull::new(p) {
                let mut m = Mbuf { ptr };
                if m.linearize() {
                    out.push(m);
                }
            }
        }
        usize::from(got)
    }

    /// Sends every frame of `frames` on `queue`, in bursts of up to 32 straight from the iterator (no vector
    /// to fill first); frames the queue refuses are freed. Returns how many were refused.
    pub fn tx_all(&self, queue: u16, frames: impl IntoIterator<Item = Mbuf>) -> usize {
        const BURST: usize = 32;
        let mut frames = frames.into_iter();
        let mut refused = 0;
        loop {
            let mut raw = [std::mem::MaybeUninit::<*mut ffi::rte_mbuf>::uninit(); BURST];
            let mut n = 0;
            for (slot, m) in raw.iter_mut().zip(frames.by_ref()) {
                slot.write(m.into_raw());
                n += 1;
            }
            if n == 0 {
                return refused;
            }
            let ptrs = raw.as_mut_ptr().cast::<*mut ffi::rte_mbuf>();
            // SAFETY: the first n slots were written with mbufs we own; the driver takes the first `sent`.
            let sent = usize::from(unsafe { ffi::anylb_tx_burst(self.id, queue, ptrs, n as u16) });
            if sent < n {
                // SAFETY: slots sent..n hold mbufs the driver refused, still ours, freed once here.
                unsafe { ffi::anylb_pktmbuf_free_bulk(ptrs.add(sent), (n - sent) as u32) };
                refused += n - sent;
            }
            if n < BURST {
                return refused;
            }
        }
    }

    /// Steers IPv4 or IPv6 packets of `proto` to `dst` whose destination port matches `value` under `mask`
    /// to RX `queue` with an rte_flow rule. Fails when the port does not support it.
    pub fn steer(
        &self,
        dst: std::net::IpAddr,
        proto: u8,
        mask: u16,
        value: u16,
        queue: u16,
    ) -> Result<FlowRule> {
        flow::steer(self.id, dst, proto, mask, value, queue)
    }
}

/// An installed rte_flow rule, destroyed on drop.
#[derive(Debug)]
pub struct FlowRule {
    port: u16,
    ptr: NonNull<ffi::rte_flow>,
}

// SAFETY: a flow handle is an opaque token; destroying it from another thread is allowed by rte_flow.
unsafe impl Send for FlowRule {}
// SAFETY: FlowRule has no methods taking &self; sharing references to it cannot touch the handle.
unsafe impl Sync for FlowRule {}

impl Drop for FlowRule {
    fn drop(&mut self) {
        let mut err = ffi::rte_flow_error::default();
        // SAFETY: the handle came from rte_flow_create on this port and is destroyed once.
        unsafe { ffi::rte_flow_destroy(self.port, self.ptr.as_ptr(), &mut err) };
    }
}

mod flow {
    //! rte_flow rules: ETH / IPV4|IPV6 (destination) / TCP|UDP (destination port under a mask) → QUEUE.
    use super::*;

    pub(super) fn steer(
        port: u16,
        dst: std::net::IpAddr,
        proto: u8,
        mask: u16,
        value: u16,
        queue: u16,
    ) -> Result<FlowRule> {
        // Item specs are the protocol headers (rte_flow_item_ipv4 is struct { rte_ipv4_hdr hdr; }).
        let (l3_type, l3_spec, l3_mask): (u32, Vec<u8>, Vec<u8>) = match dst {
            std::net::IpAddr::V4(a) => {
                let mut spec = vec![0u8; 20];
                let mut m = vec![0u8; 20];
                spec[16..20].copy_from_slice(&a.octets());
                m[16..20].copy_from_slice(&[0xff; 4]);
                (ffi::RTE_FLOW_ITEM_TYPE_IPV4, spec, m)
            }
            std::net::IpAddr::V6(a) => {
                let mut spec = vec![0u8; 40];
                let mut m = vec![0u8; 40];
                spec[24..40].copy_from_slice(&a.octets());
                m[24..40].copy_from_slice(&[0xff; 16]);
                (ffi::RTE_FLOW_ITEM_TYPE_IPV6, spec, m)
            }
        };
        let (l4_type, l4_len) = match proto {
            6 => (ffi::RTE_FLOW_ITEM_TYPE_TCP, 20),
            17 => (ffi::RTE_FLOW_ITEM_TYPE_UDP, 8),
            _ => {
                return Err(Error {
                    what: "flow rule".into(),
                    reason: format!("protocol {proto} is not TCP or UDP"),
                })
            }
        };
        let mut l4_spec = vec![0u8; l4_len];
        let mut l4_mask = vec![0u8; l4_len];
        l4_spec[2..4].copy_from_slice(&value.to_be_bytes());
        l4_mask[2..4].copy_from_slice(&mask.to_be_bytes());
        let item = |ty: u32, spec: *const c_void, mask: *const c_void| ffi::rte_flow_item {
            type_: ty,
            spec,
            last: std::ptr::null(),
            mask,
        };
        let pattern = [
            item(ffi::RTE_FLOW_ITEM_TYPE_ETH, std::ptr::null(), std::ptr::null()),
            item(l3_type, l3_spec.as_ptr().cast(), l3_mask.as_ptr().cast()),
            item(l4_type, l4_spec.as_ptr().cast(), l4_mask.as_ptr().cast()),
            item(ffi::RTE_FLOW_ITEM_TYPE_END, std::ptr::null(), std::ptr::null()),
        ];
        let q = ffi::rte_flow_action_queue { index: queue };
        let actions = [
            ffi::rte_flow_action {
                type_: ffi::RTE_FLOW_ACTION_TYPE_QUEUE,
                conf: (&q as *const ffi::rte_flow_action_queue).cast(),
            },
            ffi::rte_flow_action {
                type_: ffi::RTE_FLOW_ACTION_TYPE_END,
                conf: std::ptr::null(),
            },
        ];
        let mut attr = ffi::rte_flow_attr::default();
        attr.set_ingress(1);
        let mut err = ffi::rte_flow_error::default();
        // SAFETY: pattern, actions and the specs they point to live until the call returns; DPDK copies rules.
        let r = unsafe { ffi::rte_flow_validate(port, &attr, pattern.as_ptr(), actions.as_ptr(), &mut err) };
        if r != 0 {
            return Err(Error {
                what: format!("flow rule on port {port}"),
                reason: flow_error(&err, r),
            });
        }
        // SAFETY: as above.
        let f = unsafe { ffi::rte_flow_create(port, &attr, pattern.as_ptr(), actions.as_ptr(), &mut err) };
        NonNull::new(f)
            .map(|ptr| FlowRule { port, ptr })
            .ok_or_else(|| Error {
                what: format!("flow rule on port {port}"),
                reason: flow_error(&err, -1),
            })
    }

    fn flow_error(err: &ffi::rte_flow_error, code: i32) -> String {
        if err.message.is_null() {
            return Error::new("", code).reason;
        }
        // SAFETY: DPDK sets message to a static NUL-terminated string.
        unsafe { CStr::from_ptr(err.message) }
            .to_string_lossy()
            .into_owned()
    }
}

/// A single-producer single-consumer ring of mbufs between two lcores.
#[derive(Debug)]
pub struct Ring {
    ptr: NonNull<ffi::rte_ring>,
}

// SAFETY: rte_ring is designed for cross-lcore use; SP/SC discipline is kept by the runtime (one producer,
// one consumer per ring).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// A ring of `count` (a power of two) slots.
    pub fn new(_eal: &Eal, name: &str, count: u32) -> Result<Ring> {
        let cname = CString::new(name).map_err(|e| Error {
            what: "ring name".into(),
            reason: e.to_string(),
        })?;
        let flags = ffi::RING_F_SP_ENQ | ffi::RING_F_SC_DEQ;
        // SAFETY: the EAL is up; the name is copied.
        let p = unsafe { ffi::rte_ring_create(cname.as_ptr(), count, ffi::SOCKET_ID_ANY, flags) };
        NonNull::new(p)
            .map(|ptr| Ring { ptr })
            .ok_or_else(|| Error::errno(format!("ring {name}")))
    }

    /// Enqueues frames from `pkts`; those that did not fit stay in `pkts`.
    pub fn enqueue(&self, pkts: &mut Vec<Mbuf>) -> usize {
        let n = pkts.len().min(64);
        let mut raw: [*mut c_void; 64] = [std::ptr::null_mut(); 64];
        for (r, m) in raw.iter_mut().zip(pkts.iter()) {
            *r = m.ptr.as_ptr().cast();
        }
        // SAFETY: raw holds n valid mbuf pointers we own; the ring takes the first `done`.
        let done =
            unsafe { ffi::anylb_ring_enqueue_burst(self.ptr.as_ptr(), raw.as_ptr(), n as u32) } as usize;
        for m in pkts.drain(..done) {
            let _ = m.into_raw();
        }
        done
    }

    /// Dequeues up to `max` frames into `out`.
    pub fn dequeue(&self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let mut raw: [*mut c_void; 64] = [std::ptr::null_mut(); 64];
        let n = max.min(64) as u32;
        // SAFETY: raw has room for n pointers; every pointer in the ring is an mbuf enqueued by `enqueue`.
        let got = unsafe { ffi::anylb_ring_dequeue_burst(self.ptr.as_ptr(), raw.as_mut_ptr(), n) } as usize;
        for &p in &raw[..got] {
            if let Some(ptr) = NonNull::new(p.cast::<ffi::rte_mbuf>()) {
                out.push(Mbuf { ptr });
            }
        }
        got
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let mut rest = Vec::new();
        while self.dequeue(&mut rest, 64) > 0 {
            rest.clear();
        }
        // SAFETY: the ring is empty and no longer used.
        unsafe { ffi::rte_ring_free(self.ptr.as_ptr()) }
    }
}

/// Current TSC value.
pub fn tsc() -> u64 {
    // SAFETY: reads the CPU's time-stamp counter.
    unsafe { ffi::anylb_rdtsc() }
}

/// TSC ticks per second.
pub fn tsc_hz() -> u64 {
    // SAFETY: valid after EAL init; returns 0 before.
    unsafe { ffi::anylb_tsc_hz() }
}
