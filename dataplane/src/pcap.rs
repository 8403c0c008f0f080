//! Classic pcap files (libpcap format) with Ethernet link type: reading (micro- or nanosecond timestamps, either
//! byte order) and writing (microseconds, little endian). A damaged file is an error, never a panic.

use std::io::{self, Read, Write};

/// Link type of Ethernet frames.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record accepted.
const MAX_RECORD: u32 = 256 * 1024;

/// Why a pcap file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// I/O failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file does not start with a pcap magic number.
    #[error("not a pcap file (magic {0:#010x}); pcapng is not supported, convert with `editcap -F pcap`")]
    Magic(u32),
    /// The link type is not Ethernet.
    #[error("link type {0} is not Ethernet (1)")]
    LinkType(u32),
    /// A record is cut short or absurdly long.
    #[error("record {index} is damaged: {what}")]
    Record {
        /// 1-based record number.
        index: usize,
        /// What is wrong.
        what: String,
    },
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Capture time in nanoseconds since the epoch.
    pub ts_ns: u64,
    /// Frame bytes.
    pub data: Vec<u8>,
}

impl Record {
    /// Capture time in milliseconds.
    pub fn ts_ms(&self) -> u64 {
        self.ts_ns / 1_000_000
    }
}

/// Reads every record of a pcap file.
pub fn read(mut r: impl Read) -> Result<Vec<Record>, Error> {
    let mut hdr = [0u8; 24];
    r.read_exact(&mut hdr)?;
    let magic_le = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let (be, nanos) = match magic_le {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        m => return Err(Error::Magic(m)),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let link = u32_at(&hdr, 20) & 0x0fff_ffff;
    if link != LINKTYPE_ETHERNET {
        return Err(Error::LinkType(link));
    }
    let mut out = Vec::new();
    loop {
        let mut rh = [0u8; 16];
        match r.read(&mut rh[..1])? {
            0 => break,
            _ => r.read_exact(&mut rh[1..]).map_err(|_| Error::Record {
                index: out.len() + 1,
                what: "header cut short".into(),
            })?,
        }
        let (sec, frac, incl) = (u32_at(&rh, 0), u32_at(&rh, 4), u32_at(&rh, 8));
        if incl > MAX_RECORD {
            return Err(Error::Record {
                index: out.len() + 1,
                what: format!("length {incl} is too large"),
            });
        }
        let mut data = vec![0u8; incl as usize];
        r.read_exact(&mut data).map_err(|_| Error::Record {
            index: out.len() + 1,
            what: "data cut short".into(),
        })?;
        let ts_ns = u64::from(sec) * 1_000_000_000
            + if nanos {
                u64::from(frac)
            } else {
                u64::from(frac) * 1000
            };
        out.push(Record { ts_ns, data });
    }
    Ok(out)
}

/// Writes records as a microsecond, little-endian pcap file.
pub fn write(mut w: impl Write, records: &[Record]) -> io::Result<()> {
    let mut hdr = Vec::with_capacity(24);
    hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    hdr.extend_from_slice(&2u16.to_le_bytes());
    hdr.extend_from_slice(&4u16.to_le_bytes());
    hdr.extend_from_slice(&0i32.to_le_bytes());
    hdr.extend_from_slice(&0u32.to_le_bytes());
    hdr.extend_from_slice(&65535u32.to_le_bytes());
    hdr.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    w.write_all(&hdr)?;
    for r in records {
        let sec = u32::try_from(r.ts_ns / 1_000_000_000).unwrap_or(u32::MAX);
        let usec = ((r.ts_ns % 1_000_000_000) / 1000) as u32;
        let len = u32::try_from(r.data.len()).unwrap_or(u32::MAX);
        for v in [sec, usec, len, len] {
            w.write_all(&v.to_le_bytes())?;
        }
        w.write_all(&r.data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let recs = vec![
            Record {
                ts_ns: 1_700_000_000_123_456_000,
                data: vec![1, 2, 3],
            },
            Record {
                ts_ns: 5_000,
                data: vec![],
            },
        ];
        let mut buf = Vec::new();
        write(&mut buf, &recs).unwrap();
        assert_eq!(read(&buf[..]).unwrap(), recs);
    }

    #[test]
    fn damaged_files_are_errors() {
        assert!(matches!(
            read(&b"\x0a\x0d\x0d\x0a pcapng"[..]),
            Err(Error::Io(_)) | Err(Error::Magic(_))
        ));
        let mut buf = Vec::new();
        write(
            &mut buf,
            &[Record {
                ts_ns: 0,
                data: vec![9; 10],
            }],
        )
        .unwrap();
        assert!(matches!(
            read(&buf[..buf.len() - 2]),
            Err(Error::Record { index: 1, .. })
        ));
        let mut huge = buf.clone();
        huge[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read(&huge[..]), Err(Error::Record { .. })));
        let mut sll = buf;
        sll[20] = 113;
        assert!(matches!(read(&sll[..]), Err(Error::LinkType(113))));
    }

    #[test]
    fn big_endian_nanosecond_files_are_read() {
        let mut b = Vec::new();
        b.extend_from_slice(&0xa1b2_3c4du32.to_be_bytes());
        b.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1]);
        b.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 1, 0xab]);
        assert_eq!(
            read(&b[..]).unwrap(),
            vec![Record {
                ts_ns: 2_000_000_007,
                data: vec![0xab]
            }]
        );
    }
}
