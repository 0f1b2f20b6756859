//! Frames from the wire (untrusted like a guest's) through receive coalescing: the
//! input is frames, each a u16 length (little-endian) then its bytes. No input may
//! panic; what comes out stands for the same number of frames; every merged packet is
//! one the backends can cut (its GSO checks pass) and cuts into frames whose checksums
//! hold and as many payload bytes come out as went in.
#![no_main]

use bulkhead_netback::coalesce::{coalesce, Stats};
use bulkhead_netback::packet::{checksums_ok, gso_segments, layers, segment};
use libfuzzer_sys::fuzz_target;

fn tcp_payload(f: &[u8]) -> Option<&[u8]> {
    let l = layers(f).ok()?;
    let doff = (*f.get(l.l4 + 12)? >> 4) as usize * 4;
    f.get(l.l4 + doff..l.end)
}

fuzz_target!(|data: &[u8]| {
    let mut frames = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && frames.len() < 300 {
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        frames.push(rest[2..2 + n].to_vec());
        rest = &rest[2 + n..];
    }
    let count = frames.len();
    let bytes_in: usize = frames.iter().filter_map(|f| tcp_payload(f)).map(|p| p.len()).sum();
    let mut stats = Stats::default();
    let out = coalesce(frames, &mut stats);
    let (mut back, mut bytes_out) = (0, 0);
    for p in &out {
        match p.gso {
            Some(g) => {
                let n = gso_segments(&p.data, g).expect("a merged packet is cut");
                assert!(n >= 2 && p.data.len() <= 0xffff + 14);
                let segs = segment(&p.data, g).unwrap();
                assert_eq!(segs.len(), n);
                for s in &segs {
                    let l = layers(s).unwrap();
                    assert!(checksums_ok(s, &l));
                    bytes_out += tcp_payload(s).unwrap().len();
                }
                back += n;
            }
            None => {
                back += 1;
                bytes_out += tcp_payload(&p.data).map_or(0, |x| x.len());
            }
        }
    }
    assert_eq!(back, count);
    assert_eq!(stats.frames as usize, count);
    // Merging neither loses nor makes a payload byte.
    assert_eq!(bytes_out, bytes_in);
});
