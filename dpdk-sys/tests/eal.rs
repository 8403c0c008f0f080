//! The safe wrappers against real DPDK vdevs (one EAL per process, so one test): pool, ports, bursts,
//! rings, lcore launch, statistics.

#![allow(clippy::unwrap_used)]

use dpdk_sys::{Eal, Mempool, Port, PortConfig, Ring};

#[test]
fn eal_pool_ports_rings_and_lcores_work_on_vdevs() {
    let args: Vec<String> = [
        "--no-huge",
        "--no-shconf",
        "--no-pci",
        "-m",
        "256",
        "-l",
        "0,1",
        "--log-level",
        "lib.eal:error",
        "--vdev=net_null0",
        "--vdev=net_ring0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).unwrap();
    assert!(Eal::init(&args).is_err(), "a second EAL is refused");
    let pool = Mempool::new(&eal, "test_pool", 4095, 256, 2048 + 128, dpdk_sys::socket_id()).unwrap();

    let null = Port::by_name(&eal, "net_null0").unwrap();
    assert!(Port::by_name(&eal, "net_nope9").is_err());
    let info = null.info().unwrap();
    assert_eq!(info.driver, "net_null");
    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rss: true,
        rx_checksum: true,
        descriptors: 256,
    };
    let (rss, _) = null.configure(&cfg, &pool).unwrap();
    assert!(!rss, "one queue needs no RSS");
    null.start().unwrap();
    let mut got = Vec::new();
    assert!(null.rx_burst(0, &mut got, 32) > 0, "net_null produces frames");
    assert_eq!(null.tx_all(0, got.drain(..)), 0, "every frame sent");
    assert!(got.is_empty());

    // net_ring loops what is sent back to its receive side.
    let ring_port = Port::by_name(&eal, "net_ring0").unwrap();
    ring_port.configure(&cfg, &pool).unwrap();
    ring_port.start().unwrap();
    let mut m = pool.alloc().unwrap();
    assert!(m.append(60));
    m.data_mut()[..6].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
    // The header fields read in place follow what DPDK's own functions change.
    assert!(m.prepend(4));
    assert_eq!(m.len(), 64);
    assert_eq!(&m.data()[4..10], &[2, 0, 0, 0, 0, 7]);
    assert!(m.adj(4));
    assert_eq!((m.len(), m.data()[5]), (60, 7));
    m.set_port(5);
    assert_eq!(m.port(), 5);
    // Trimmed in place: the length DPDK transmits follows.
    assert!(m.trim(4) && !m.trim(100));
    assert_eq!(m.len(), 56);
    assert!(m.append(4));
    assert_eq!(m.len(), 60);
    // One segment: already linear, left as it is (checked in place, not by DPDK).
    assert!(m.linearize());
    assert_eq!((m.len(), m.data()[5]), (60, 7));
    assert_eq!(ring_port.tx_all(0, [m]), 0, "the frame sent");
    let mut back = Vec::new();
    assert_eq!(ring_port.rx_burst(0, &mut back, 32), 1);
    assert_eq!(back[0].len(), 60);
    assert_eq!(&back[0].data()[..6], &[2, 0, 0, 0, 0, 7]);
    let s = ring_port.stats().unwrap();
    assert_eq!((s.opackets, s.ipackets), (1, 1));
    drop(back);

    // Sending straight from an iterator, in bursts: all of 70 on net_null; on net_ring, whose ring holds
    // 1023, the rest of 1100 refused and freed (the pool gets every frame back once the ring is read).
    let frames: Vec<_> = (0..70).map(|_| pool.alloc().unwrap()).collect();
    assert_eq!(null.tx_all(0, frames), 0);
    assert_eq!(null.tx_all(0, Vec::new()), 0);
    let before = pool.available();
    let frames: Vec<_> = (0..1100).map(|_| pool.alloc().unwrap()).collect();
    assert_eq!(ring_port.tx_all(0, frames), 1100 - 1023);
    let mut queued = 0;
    loop {
        let mut got = Vec::new();
        let n = ring_port.rx_burst(0, &mut got, 32);
        if n == 0 {
            break;
        }
        queued += n;
    }
    assert_eq!(queued, 1023);
    assert_eq!(pool.available(), before);

    // A ring between lcores, and a function on lcore 1.
    let r = std::sync::Arc::new(Ring::new(&eal, "test_ring", 1024).unwrap());
    let mut batch: Vec<_> = (0..10).map(|_| pool.alloc().unwrap()).collect();
    assert_eq!(r.enqueue(&mut batch), 10);
    let r2 = r.clone();
    eal.launch(
        1,
        Box::new(move || {
            let mut got = Vec::new();
            r2.dequeue(&mut got, 64) as i32 + 100 * i32::from(dpdk_sys::lcore_id() == 1)
        }),
    )
    .unwrap();
    assert_eq!(eal.wait(1), 110);
    let before = pool.available();
    let _held: Vec<_> = (0..5).map(|_| pool.alloc().unwrap()).collect();
    assert!(pool.available() <= before - 5);
    null.stop().unwrap();
    ring_port.stop().unwrap();
}
