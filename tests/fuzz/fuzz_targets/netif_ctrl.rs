//! The netif control ring: requests from the input (hash algorithm, flags, key, mapping
//! size and mapping, unknown types), with guest pages that hold input bytes or fault.
#![no_main]

use bulkhead_netback::ctrl::{self, Steering, LAYOUT};
use bulkhead_ring::{shared_init, BackRing, RingMemory, VecRing};
use bulkhead_xen::copy::{GrantFault, GuestMemory, Piece};
use libfuzzer_sys::fuzz_target;

struct Page(Vec<u8>);

impl GuestMemory for Page {
    fn read(&mut self, pieces: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault> {
        let mut at = 0;
        for p in pieces {
            if p.gref != 9 {
                return Err(GrantFault {
                    gref: p.gref,
                    status: -3,
                });
            }
            let (o, n) = (p.offset as usize, p.len as usize);
            let src = self.0.get(o..o + n).ok_or(GrantFault {
                gref: p.gref,
                status: -1,
            })?;
            buf.get_mut(at..at + n)
                .ok_or(GrantFault {
                    gref: p.gref,
                    status: -1,
                })?
                .copy_from_slice(src);
            at += n;
        }
        Ok(())
    }
    fn write(&mut self, _: &[Piece], _: &[u8]) -> Result<(), GrantFault> {
        Err(GrantFault {
            gref: 0,
            status: -1,
        })
    }
}

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
    let mut page = body.to_vec();
    page.resize(4096, 0);
    let mut g = Page(page);
    if ctrl::serve(&mut ring, &mut s, &mut g, 32).is_ok() {
        assert_eq!(ring.in_flight(), 0);
    }
    let _ = s.queue_for(body);
});
