//! Cluster sync on one core, printing `BENCH <name> <value> <unit>` lines: connection records encoded into
//! authenticated datagrams (batching, sequence numbers, HMAC-SHA256), and datagrams checked, decoded and
//! applied into a connection table, per second; bytes per record on the wire.
//!
//! Run: `cargo bench -p anylb-dataplane --bench sync`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use anylb_dataplane::cluster::record::{Op, Record};
use anylb_dataplane::cluster::sync::{open, Channel, Key, Settings};
use anylb_dataplane::conn::ConnTable;
use anylb_dataplane::flow::v4;

const RECORDS: u32 = 2_000_000;

fn record(i: u32) -> Record {
    Record {
        op: Op::Upsert,
        proto: 6,
        state: 1,
        flags: 0,
        cla: 0,
        client: v4(Ipv4Addr::from(0xc000_0200 + (i >> 16))),
        vip: v4(Ipv4Addr::new(203, 0, 113, 10)),
        lip: v4(Ipv4Addr::from(0xc633_6400 + i / 60_000)),
        backend: v4(Ipv4Addr::new(198, 51, 100, 101)),
        cport: i as u16,
        vport: 80,
        lport: (i % 60_000) as u16 + 1024,
        bport: 8080,
        cla_seq: 0,
        ttl_ms: 900_000,
        sp: 0,
        sp_win_reply: 0,
        sp_win_in: 0,
        sp_delta: 0,
    }
}

fn main() {
    let key = Key::new(b"bench secret");
    let unbounded = Settings {
        window: usize::MAX,
        rate: u32::MAX,
        ..Settings::default()
    };
    let mut tx = Channel::new(key.clone(), 0, 1, unbounded);
    let records: Vec<Record> = (0..RECORDS).map(record).collect();
    let mut datagrams = Vec::new();
    let t0 = Instant::now();
    let now = Instant::now();
    for r in &records {
        tx.push(r, now, &mut datagrams);
    }
    tx.flush(now, &mut datagrams);
    let enc = t0.elapsed();
    let bytes: usize = datagrams.iter().map(Vec::len).sum();
    println!(
        "BENCH sync_records_encoded_per_second {:.0} records/s",
        f64::from(RECORDS) / enc.as_secs_f64()
    );
    println!(
        "BENCH sync_bytes_per_record {:.1} bytes",
        bytes as f64 / f64::from(RECORDS)
    );
    println!(
        "BENCH sync_records_per_datagram {:.1} records",
        f64::from(RECORDS) / datagrams.len() as f64
    );

    let mut rx = Channel::new(key.clone(), 1, 2, Settings::default());
    let mut table = ConnTable::new(RECORDS.next_power_of_two(), 7);
    let t0 = Instant::now();
    let mut applied = 0u64;
    for d in &datagrams {
        let Ok(d) = open(&key, d) else { continue };
        if let Some(d) = rx.receive(d) {
            for r in &d.records {
                if table.insert(r.conn()).is_ok() {
                    applied += 1;
                }
            }
        }
    }
    let app = t0.elapsed();
    black_box(&table);
    println!(
        "BENCH sync_records_applied_per_second {:.0} records/s",
        applied as f64 / app.as_secs_f64()
    );
    println!("BENCH sync_records_applied {applied} records");
}
