//! Client prefix lists on one core, printing `BENCH <name> <value> <unit>` lines: lookups per second in a
//! deny list of 10,000 prefixes (IPv4 /24s and /32s and IPv6 /48s, the mix a real block list has), for
//! addresses that hit and that miss, and the nanoseconds per lookup.
//!
//! Run: `cargo bench -p anylb-dataplane --bench acl`.

use std::hint::black_box;
use std::time::Instant;

use anylb_dataplane::acl::PrefixList;
use anylb_dataplane::flow::{v4, Addr};

const LOOKUPS: u32 = 20_000_000;

fn main() {
    // 6,000 IPv4 /24s, 3,000 IPv4 /32s, 1,000 IPv6 /48s.
    let mut prefixes: Vec<(Addr, u8)> = Vec::new();
    for i in 0..6_000u32 {
        prefixes.push((v4((0x0a00_0000 | (i << 8)).into()), 24));
    }
    for i in 0..3_000u32 {
        prefixes.push((v4((0xac10_0000 | (i * 7)).into()), 32));
    }
    for i in 0..1_000u32 {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&0x2001_0db8u32.to_be_bytes());
        a[4..6].copy_from_slice(&(i as u16).to_be_bytes());
        prefixes.push((a, 48));
    }
    let t = Instant::now();
    let list = PrefixList::new(prefixes.iter().map(|(a, l)| (a, *l)));
    let build = t.elapsed();
    // Clients: a quarter in the list, the rest not; generated up front so the loop is lookups only.
    let clients: Vec<Addr> = (0..4096u32)
        .map(|i| match i % 4 {
            0 => v4((0x0a00_0000 | ((i * 13 % 6_000) << 8) | 9).into()),
            1 => v4((0xc633_6400 | (i & 0xff)).into()),
            2 => v4((0xcb00_7100 | (i & 0xff)).into()),
            _ => {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&0x2001_0db9u32.to_be_bytes());
                a[15] = i as u8;
                a
            }
        })
        .collect();
    let t = Instant::now();
    let mut hits = 0u32;
    for i in 0..LOOKUPS {
        hits += u32::from(list.contains(black_box(&clients[(i & 4095) as usize])));
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(hits, LOOKUPS / 4, "a quarter of the clients are listed");
    println!("BENCH acl_prefixes {} prefixes", list.len());
    println!("BENCH acl_build_ms {:.1} ms", build.as_secs_f64() * 1e3);
    println!(
        "BENCH acl_lookups_per_second {:.2} M/s",
        f64::from(LOOKUPS) / secs / 1e6
    );
    println!(
        "BENCH acl_ns_per_lookup {:.1} ns",
        secs * 1e9 / f64::from(LOOKUPS)
    );
}
