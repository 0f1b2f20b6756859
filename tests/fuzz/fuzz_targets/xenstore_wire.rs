//! The xenstore wire codec: replies and watch events as xenstored (or anything on the
//! ring) sends them, in arbitrary pieces. No input may panic; a decoded message's
//! strings are whole.
#![no_main]

use bulkhead_xenstore::wire::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::default();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        // Piece sizes from the input itself.
        let n = 1 + (data[i % data.len()] as usize % 97);
        let end = (at + n).min(data.len());
        d.feed(&data[at..end]);
        at = end;
        i += 1;
        loop {
            match d.next() {
                Ok(Some(m)) => {
                    let _ = m.text();
                    if let Ok(parts) = m.strings() {
                        for p in parts {
                            assert!(!p.contains('\0'));
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
