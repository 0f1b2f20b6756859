//! The netif control ring: requests from the input (hash algorithm, flags, key, mapping
//! size and mapping, unknown types), with guest pages that hold input bytes or fault.
#![no_main]

use bulkhead_netback::ctrl::{self, Steering, LAYOUT};
use bulkhead_ring::{shared_init, BackRing, RingMemory, VecRing};
use bulkhead_testsupport::GrantPages;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let mut mem = VecRing::new(1);
    shared_init(&mut mem);
    let body = &data[4..];
    mem.write(64, &body[..body.len().min(4096 - 64)]);
    mem.store_u32(0, u32::from(data[0]) % 200);
    let Ok(mut ring) = BackRing::attach(mem, LAYOUT) else {
        return;
    };
    let mut s = Steering::new(1 + u32::from(data[1]) % 8);
    // Grant 9 holds the input's bytes; any other reference faults.
    let mut g = GrantPages::new();
    g.insert(9, body.to_vec());
    if ctrl::serve(&mut ring, &mut s, &mut g, 32).is_ok() {
        assert_eq!(ring.in_flight(), 0);
    }
    let _ = s.queue_for(body);
});
