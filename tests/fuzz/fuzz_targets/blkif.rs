//! The blkif request path: a ring of 1, 2 or 4 pages filled with the input's bytes and a
//! producer index it chooses, served through persistent grants or grant copies, against
//! a disk in memory that may reach mapped pages itself (DMA). No input may panic; every
//! request taken is answered exactly once; the disk never reaches a page that is not
//! mapped, nor past a page's end, nor past its own end; nothing stays mapped after the
//! release.
#![no_main]

use bulkhead_blkback::abi::Protocol;
use std::cell::RefCell;
use std::rc::Rc;

use bulkhead_blkback::io::Geometry;
use bulkhead_blkback::persistent::Persistent;
use bulkhead_blkback::queue::Queue;
use bulkhead_blkback::request::Limits;
use bulkhead_blkback::ring::{self, RingMemory, VecRing};
use bulkhead_testsupport::{GrantPages, MemDisk};
use bulkhead_xen::fake::{FakeMapper, FakeXen};
use bulkhead_xenbus::keys::fake::run;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let pages = 1usize << (data[0] % 3);
    let protocol = if data[1] & 1 == 0 {
        Protocol::X86_64
    } else {
        Protocol::X86_32
    };
    let persistent = data[1] & 2 != 0;
    let read_only = data[1] & 4 != 0;
    let mut mem = VecRing::new(pages);
    // The ring's slots from the input, then the producer index it names.
    let body = &data[8..];
    let n = body.len().min(pages * 4096 - 64);
    mem.write(64, &body[..n]);
    mem.store_u32(0, u32::from_le_bytes(data[2..6].try_into().unwrap()) % 2048);
    let Ok(ring) = ring::attach(mem, protocol) else {
        return;
    };
    let limits = Limits {
        max_indirect_segments: 256,
        barrier: data[6] & 1 != 0,
        flush: data[6] & 2 != 0,
        discard: data[6] & 4 != 0,
        secure_discard: false,
    };
    let geometry = Geometry {
        sectors: 8192,
        block_size: 512,
    };
    let mut q = Queue::new("fuzz".into(), ring, protocol, limits, geometry, read_only);
    let xen = Rc::new(RefCell::new(FakeXen::new(0)));
    // Strict: a device call outside the disk is blkback's bug; a disk that reaches
    // memory itself panics on a page not mapped.
    let mut disk = MemDisk::new(8192, 512);
    disk.strict = true;
    disk.reach = (data[6] & 8 != 0).then(|| xen.clone());
    // Grants 1..=64 are readable and writable pages for copies; any other reference
    // faults. Fewer map (48 granted through the fake hypervisor, which numbers them
    // from 9) into 40 slots: the cache meets refusals, and a full pool when a request's
    // grants are mapped before older ones are evicted (the cache may then hold more
    // than its 32 for a moment).
    let copier = GrantPages::numbered(64);
    let r = if persistent {
        for _ in 0..48 {
            xen.borrow_mut().foreign_grant(7, &[], false);
        }
        let mut guest = Persistent::new(7, FakeMapper::new(xen.clone(), 40), copier, 32);
        let r = run(q.serve_available(&mut disk, &mut guest, 64));
        guest.release();
        assert_eq!(
            xen.borrow().mapped_count(),
            0,
            "a mapping outlived its release"
        );
        r
    } else {
        let mut guest = copier;
        run(q.serve_available(&mut disk, &mut guest, 64))
    };
    if r.is_ok() {
        assert_eq!(q.ring().in_flight(), 0, "a request taken and not answered");
    }
});
