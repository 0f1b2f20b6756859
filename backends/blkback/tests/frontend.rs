//! blkback against a model of Linux's blkfront: a guest domain with granted pages (the
//! fake hypervisor), a shared ring in memory, and a disk in memory. Requests go through
//! the same ring, decoder, grant-copy builder and data path the kernel uses.

mod common;
use common::LIMITS;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use bulkhead_blkback::abi::*;
use bulkhead_blkback::io::{
    copy_ops, op_gref, DmaPages, Geometry, GrantFault, GuestMemory, Piece, Transfer,
    BATCH_MAX_BYTES, BUFFERED_MAX_BYTES,
};
use bulkhead_blkback::persistent::Persistent;
use bulkhead_blkback::queue::Queue;
use bulkhead_blkback::request::{encode, encode_discard, encode_indirect, Segment};
use bulkhead_blkback::ring::{self, FrontRing, VecRing};
use bulkhead_block::Span;
use bulkhead_testsupport::{MemDisk, SharedDisk, XorShift};
use bulkhead_xen::fake::{FakeMapper, FakeXen};
use bulkhead_xen::Hypervisor;
use bulkhead_xenbus::keys::fake::run;

const GUEST: u16 = 7;

/// Guest memory reached only through grant copies, into a buffer at an address that is
/// deliberately not page aligned (so copies split on our side too). Counts the copy
/// calls: each is one grant-copy hypercall in the kernel, a batch included.
struct Guest {
    xen: Rc<RefCell<FakeXen>>,
    copies: Rc<RefCell<usize>>,
}

const LOCAL: u64 = 0x4000_0a00;

impl Guest {
    fn frames(&mut self, len: usize) -> std::ops::Range<u64> {
        let first = LOCAL / 4096;
        let last = (LOCAL + len as u64).div_ceil(4096);
        first..last
    }

    fn copy(&mut self, pieces: &[Piece], to_guest: bool) -> Result<(), GrantFault> {
        let mut ops = copy_ops(GUEST, pieces, LOCAL, to_guest);
        self.xen
            .borrow_mut()
            .grant_copy(&mut ops)
            .expect("hypercall");
        match ops.iter().find(|o| o.status != 0) {
            Some(o) => Err(GrantFault {
                gref: op_gref(o),
                status: o.status,
            }),
            None => Ok(()),
        }
    }
}

impl GuestMemory for Guest {
    fn read(&mut self, pieces: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault> {
        *self.copies.borrow_mut() += 1;
        self.read_one(pieces, buf)
    }

    fn write(&mut self, pieces: &[Piece], buf: &[u8]) -> Result<(), GrantFault> {
        *self.copies.borrow_mut() += 1;
        self.write_one(pieces, buf)
    }

    fn read_all(&mut self, jobs: &mut [(&[Piece], &mut [u8])]) -> Vec<Result<(), GrantFault>> {
        *self.copies.borrow_mut() += 1;
        jobs.iter_mut().map(|(p, b)| self.read_one(p, b)).collect()
    }

    fn write_all(&mut self, jobs: &[(&[Piece], &[u8])]) -> Vec<Result<(), GrantFault>> {
        *self.copies.borrow_mut() += 1;
        jobs.iter().map(|(p, b)| self.write_one(p, b)).collect()
    }
}

impl DmaPages for Guest {}

impl Guest {
    fn read_one(&mut self, pieces: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault> {
        for f in self.frames(buf.len()) {
            self.xen.borrow_mut().local_frame(f, &[]);
        }
        self.copy(pieces, false)?;
        let xen = self.xen.borrow();
        for (i, b) in buf.iter_mut().enumerate() {
            let a = LOCAL + i as u64;
            *b = xen.local(a / 4096)[(a % 4096) as usize];
        }
        Ok(())
    }

    fn write_one(&mut self, pieces: &[Piece], buf: &[u8]) -> Result<(), GrantFault> {
        for f in self.frames(buf.len()) {
            let mut page = vec![0u8; 4096];
            for (o, p) in page.iter_mut().enumerate() {
                let a = f * 4096 + o as u64;
                if a >= LOCAL && a < LOCAL + buf.len() as u64 {
                    *p = buf[(a - LOCAL) as usize];
                }
            }
            self.xen.borrow_mut().local_frame(f, &page);
        }
        self.copy(pieces, true)
    }
}

/// The frontend's side: publishes requests into the shared ring and reads responses.
struct Rig {
    front: FrontRing,
    queue: Queue<VecRing>,
    xen: Rc<RefCell<FakeXen>>,
    guest: Box<dyn DmaPages>,
    disk: MemDisk,
    /// Grant-copy calls made (each one hypercall in the kernel).
    copies: Rc<RefCell<usize>>,
}

impl Rig {
    fn new(protocol: Protocol, disk_bytes: usize, bs: u32, read_only: bool) -> Rig {
        let ring = ring::attach(VecRing::new(1), protocol).unwrap();
        let front = FrontRing::new(ring.memory(), protocol.layout());
        assert_eq!(disk_bytes % bs as usize, 0);
        let disk = MemDisk::new((disk_bytes / bs as usize) as u64, bs);
        let geo = Geometry {
            sectors: disk_bytes as u64 / 512,
            block_size: bs,
        };
        let xen = Rc::new(RefCell::new(FakeXen::new(1)));
        let copies = Rc::new(RefCell::new(0));
        Rig {
            front,
            queue: Queue::new("vbd-7-51712".into(), ring, protocol, LIMITS, geo, read_only),
            guest: Box::new(Guest {
                xen: xen.clone(),
                copies: copies.clone(),
            }),
            xen,
            disk,
            copies,
        }
    }

    /// A page of indirect segments, one whole page (sectors 0-7) per grant.
    fn indirect_table(&mut self, grefs: &[u32]) -> u32 {
        let mut table = Vec::new();
        for g in grefs {
            table.extend_from_slice(&g.to_le_bytes());
            table.extend_from_slice(&[0, 7, 0, 0]);
        }
        self.page(&table)
    }

    fn copies(&self) -> usize {
        *self.copies.borrow()
    }

    /// Serve through persistently mapped grants (at most `capacity`); the returned
    /// handle reads the cache's statistics after the guest is swapped back.
    fn persistent(&mut self, capacity: usize) -> Rc<RefCell<Option<PersistentProbe>>> {
        let probe = Rc::new(RefCell::new(None));
        self.guest = Box::new(Probed {
            inner: Persistent::new(
                GUEST,
                FakeMapper::new(self.xen.clone(), capacity.max(64)),
                Guest {
                    xen: self.xen.clone(),
                    copies: self.copies.clone(),
                },
                capacity,
            ),
            probe: probe.clone(),
        });
        probe
    }

    fn submit(&mut self, raw: &[u8]) {
        let Rig { front, queue, .. } = self;
        let mem = queue.ring_mut().memory_mut();
        front.put(mem, raw);
        front.publish(mem);
    }

    /// Let the backend serve; returns (id, operation, status) of each new response.
    fn serve(&mut self) -> Vec<(u64, u8, i16)> {
        let Rig {
            queue, guest, disk, ..
        } = self;
        run(queue.serve_available(disk, guest.as_mut(), usize::MAX)).expect("ring intact");
        let Rig { front, queue, .. } = self;
        let mem = queue.ring_mut().memory_mut();
        let mut out = Vec::new();
        while let Some(r) = front.get(mem) {
            out.push((
                u64::from_le_bytes(r[..8].try_into().unwrap()),
                r[8],
                i16::from_le_bytes([r[10], r[11]]),
            ));
        }
        // Like blkfront: ask for an event on the next response.
        front.want_response_event(mem);
        out
    }

    fn page(&mut self, content: &[u8]) -> u32 {
        self.xen.borrow_mut().foreign_grant(GUEST, content, false)
    }

    fn guest_page(&self, gref: u32) -> Vec<u8> {
        self.xen
            .borrow()
            .foreign_page(GUEST, gref)
            .unwrap()
            .to_vec()
    }
}

#[derive(Clone, Copy, Debug)]
struct PersistentProbe {
    cached: usize,
    stats: bulkhead_blkback::persistent::PersistentStats,
}

/// The persistent cache, reporting its state after every call.
struct Probed {
    inner: Persistent<FakeMapper, Guest>,
    probe: Rc<RefCell<Option<PersistentProbe>>>,
}

impl Probed {
    fn report(&self) {
        *self.probe.borrow_mut() = Some(PersistentProbe {
            cached: self.inner.len(),
            stats: self.inner.stats,
        });
    }
}

impl GuestMemory for Probed {
    fn read(&mut self, pieces: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault> {
        let r = self.inner.read(pieces, buf);
        self.report();
        r
    }
    fn write(&mut self, pieces: &[Piece], buf: &[u8]) -> Result<(), GrantFault> {
        let r = self.inner.write(pieces, buf);
        self.report();
        r
    }
    fn read_all(&mut self, jobs: &mut [(&[Piece], &mut [u8])]) -> Vec<Result<(), GrantFault>> {
        let r = self.inner.read_all(jobs);
        self.report();
        r
    }
    fn write_all(&mut self, jobs: &[(&[Piece], &[u8])]) -> Vec<Result<(), GrantFault>> {
        let r = self.inner.write_all(jobs);
        self.report();
        r
    }
}

impl DmaPages for Probed {
    fn dma_pages(
        &mut self,
        runs: &[Vec<&Transfer>],
        takes: &mut dyn FnMut(&[Span]) -> bool,
    ) -> Vec<Option<Vec<Span>>> {
        let r = self.inner.dma_pages(runs, takes);
        self.report();
        r
    }
    fn release_dma(&mut self, pieces: &[Piece]) {
        self.inner.release_dma(pieces);
        self.report();
    }
}

impl Drop for Probed {
    fn drop(&mut self) {
        self.inner.release();
    }
}

fn seg(gref: u32, first: u8, last: u8) -> Segment {
    Segment { gref, first, last }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn write_then_read_back_both_abis() {
    for protocol in [Protocol::X86_64, Protocol::X86_32] {
        let mut rig = Rig::new(protocol, 1 << 20, 512, false);
        let a = pattern(4096, 1);
        let b = pattern(4096, 2);
        let (ga, gb) = (rig.page(&a), rig.page(&b));
        // 8 sectors from page a, then sectors 2..=5 of page b.
        rig.submit(&encode(
            protocol,
            OP_WRITE,
            41,
            16,
            &[seg(ga, 0, 7), seg(gb, 2, 5)],
        ));
        assert_eq!(rig.serve(), [(41, OP_WRITE, RSP_OKAY)]);
        assert_eq!(&rig.disk.data[16 * 512..24 * 512], &a[..]);
        assert_eq!(&rig.disk.data[24 * 512..28 * 512], &b[1024..3072]);

        let dst = rig.page(&[]);
        rig.submit(&encode(protocol, OP_READ, 42, 20, &[seg(dst, 1, 6)]));
        assert_eq!(rig.serve(), [(42, OP_READ, RSP_OKAY)]);
        let got = rig.guest_page(dst);
        assert_eq!(&got[512..3584], &rig.disk.data[20 * 512..26 * 512]);
        // Sectors outside the segment are untouched.
        assert!(got[..512].iter().chain(&got[3584..]).all(|&x| x == 0));
        assert_eq!(rig.queue.stats.written_bytes, 6144);
        assert_eq!(rig.queue.stats.read_bytes, 3072);
    }
}

#[test]
fn indirect_request_of_200_segments() {
    let mut rig = Rig::new(Protocol::X86_64, 4 << 20, 512, false);
    let pages: Vec<Vec<u8>> = (0..200).map(|i| pattern(4096, i as u8)).collect();
    let grefs: Vec<u32> = pages.iter().map(|p| rig.page(p)).collect();
    let ind = rig.indirect_table(&grefs);
    rig.submit(&encode_indirect(
        Protocol::X86_64,
        OP_WRITE,
        9,
        8,
        200,
        &[ind],
    ));
    assert_eq!(rig.serve(), [(9, OP_WRITE, RSP_OKAY)]);
    let written: Vec<u8> = pages.concat();
    assert_eq!(&rig.disk.data[8 * 512..8 * 512 + 200 * 4096], &written[..]);

    // Read it back into fresh pages with another indirect request.
    let dst: Vec<u32> = (0..200).map(|_| rig.page(&[])).collect();
    let ind = rig.indirect_table(&dst);
    rig.submit(&encode_indirect(
        Protocol::X86_64,
        OP_READ,
        10,
        8,
        200,
        &[ind],
    ));
    assert_eq!(rig.serve(), [(10, OP_READ, RSP_OKAY)]);
    for (i, g) in dst.iter().enumerate() {
        assert_eq!(rig.guest_page(*g), pages[i], "page {i}");
    }
}

#[test]
fn flush_barrier_discard() {
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    rig.disk.data.fill(0xaa);
    rig.submit(&encode(Protocol::X86_64, OP_FLUSH_DISKCACHE, 1, 0, &[]));
    rig.submit(&encode_discard(Protocol::X86_64, 2, 64, 16, 0));
    let g = rig.page(&pattern(4096, 9));
    rig.submit(&encode(
        Protocol::X86_64,
        OP_WRITE_BARRIER,
        3,
        0,
        &[seg(g, 0, 7)],
    ));
    assert_eq!(
        rig.serve(),
        [
            (1, OP_FLUSH_DISKCACHE, RSP_OKAY),
            (2, OP_DISCARD, RSP_OKAY),
            (3, OP_WRITE_BARRIER, RSP_OKAY)
        ]
    );
    assert_eq!(rig.disk.flushes, 3);
    assert!(rig.disk.data[64 * 512..80 * 512].iter().all(|&b| b == 0));
    assert_eq!(rig.disk.data[80 * 512], 0xaa);
    assert_eq!(&rig.disk.data[..4096], &pattern(4096, 9)[..]);
}

#[test]
fn bad_requests_get_errors_and_the_ring_keeps_working() {
    let mut rig = Rig::new(Protocol::X86_64, 64 * 512, 512, false);
    let g = rig.page(&pattern(4096, 3));
    let p = Protocol::X86_64;
    // Past the end; overflowing sector; revoked grant; bad sectors; unknown op.
    rig.submit(&encode(p, OP_WRITE, 1, 60, &[seg(g, 0, 7)]));
    rig.submit(&encode(p, OP_READ, 2, u64::MAX - 2, &[seg(g, 0, 7)]));
    rig.submit(&encode(p, OP_READ, 3, 0, &[seg(9999, 0, 7)]));
    rig.submit(&encode(p, OP_WRITE, 4, 0, &[seg(g, 6, 2)]));
    rig.submit(&encode(p, 99, 5, 0, &[]));
    rig.submit(&encode_indirect(p, OP_READ, 6, 0, 4, &[9999]));
    rig.submit(&encode(p, OP_WRITE, 7, 0, &[seg(g, 0, 7)]));
    let r = rig.serve();
    assert_eq!(
        r,
        [
            (1, OP_WRITE, RSP_ERROR),
            (2, OP_READ, RSP_ERROR),
            (3, OP_READ, RSP_ERROR),
            (4, OP_WRITE, RSP_ERROR),
            (5, 99, RSP_EOPNOTSUPP),
            (6, OP_READ, RSP_ERROR),
            (7, OP_WRITE, RSP_OKAY),
        ]
    );
    // Only the good write reached the disk.
    assert_eq!(&rig.disk.data[..4096], &pattern(4096, 3)[..]);
    assert!(rig.disk.data[4096..].iter().all(|&b| b == 0));
    assert_eq!(rig.queue.stats.errors, 6);
}

#[test]
fn read_only_disk_refuses_writes_and_discards() {
    let mut rig = Rig::new(Protocol::X86_64, 64 * 512, 512, true);
    let g = rig.page(&pattern(4096, 3));
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 1, 0, &[seg(g, 0, 7)]));
    rig.submit(&encode_discard(Protocol::X86_64, 2, 0, 8, 0));
    rig.submit(&encode(Protocol::X86_64, OP_READ, 3, 0, &[seg(g, 0, 7)]));
    assert_eq!(
        rig.serve(),
        [
            (1, OP_WRITE, RSP_ERROR),
            (2, OP_DISCARD, RSP_ERROR),
            (3, OP_READ, RSP_OKAY)
        ]
    );
    assert!(rig.disk.data.iter().all(|&b| b == 0));
}

#[test]
fn device_errors_never_leak_buffer_contents_to_the_guest() {
    let mut rig = Rig::new(Protocol::X86_64, 64 * 512, 512, false);
    rig.disk.data.fill(0x77);
    rig.disk.fail_io = true;
    let g = rig.page(&[]);
    rig.submit(&encode(Protocol::X86_64, OP_READ, 1, 0, &[seg(g, 0, 7)]));
    assert_eq!(rig.serve(), [(1, OP_READ, RSP_ERROR)]);
    assert!(rig.guest_page(g).iter().all(|&b| b == 0));
    // A lone write that fails gets its error at once (retries are for merged runs).
    let w = rig.page(&pattern(4096, 5));
    let before = rig.disk.writes;
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 2, 0, &[seg(w, 0, 7)]));
    assert_eq!(rig.serve(), [(2, OP_WRITE, RSP_ERROR)]);
    assert_eq!(rig.disk.writes - before, 1);
}

#[test]
fn four_k_logical_blocks() {
    let mut rig = Rig::new(Protocol::X86_64, 64 * 4096, 4096, false);
    let g = rig.page(&pattern(4096, 5));
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 1, 8, &[seg(g, 0, 7)]));
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 2, 4, &[seg(g, 0, 7)]));
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 3, 8, &[seg(g, 0, 3)]));
    assert_eq!(
        rig.serve(),
        [
            (1, OP_WRITE, RSP_OKAY),
            (2, OP_WRITE, RSP_ERROR),
            (3, OP_WRITE, RSP_ERROR)
        ]
    );
    assert_eq!(&rig.disk.data[4096..8192], &pattern(4096, 5)[..]);
}

/// Bounded randomized requests (the stable-toolchain stand-in for a fuzz target): random
/// bytes in every request field. Every request gets exactly one response with its own id, nothing
/// lands outside the disk, and the ring stays usable.
#[test]
fn random_requests() {
    let mut rng = XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next_u64();
    for protocol in [Protocol::X86_64, Protocol::X86_32] {
        let mut rig = Rig::new(protocol, 256 * 512, 512, false);
        let grefs: Vec<u32> = (0..4).map(|i| rig.page(&pattern(4096, i))).collect();
        for round in 0..400u64 {
            let n = 1 + next() % 8;
            let mut ids = BTreeSet::new();
            for k in 0..n {
                let mut raw = vec![0u8; protocol.request_size()];
                for b in raw.iter_mut() {
                    *b = next() as u8;
                }
                // Keep some requests plausible so the data path runs too.
                let r = next() % 4;
                if r == 0 {
                    raw[0] = (next() % 7) as u8;
                    raw[1] = (next() % 12) as u8;
                    raw[protocol.sector_offset()..][..8]
                        .copy_from_slice(&(next() % 300).to_le_bytes());
                    for s in 0..11 {
                        let o = protocol.segments_offset() + s * 8;
                        let g = grefs[(next() % 5) as usize % 4];
                        raw[o..o + 4].copy_from_slice(&g.to_le_bytes());
                        raw[o + 4] = (next() % 9) as u8;
                        raw[o + 5] = (next() % 9) as u8;
                    }
                }
                let id = round << 8 | k;
                raw[protocol.id_offset()..][..8].copy_from_slice(&id.to_le_bytes());
                ids.insert(id);
                rig.submit(&raw);
            }
            let got: BTreeSet<u64> = rig.serve().iter().map(|r| r.0).collect();
            assert_eq!(got, ids);
        }
        assert_eq!(rig.disk.data.len(), 256 * 512);
        assert!(rig.queue.stats.requests > 1000);
    }
}

#[test]
fn persistent_grants_are_reused_bounded_and_released() {
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    let probe = rig.persistent(8);
    let pages: Vec<Vec<u8>> = (0..11).map(|i| pattern(4096, 40 + i)).collect();
    let grefs: Vec<u32> = pages.iter().map(|p| rig.page(p)).collect();
    let segs: Vec<Segment> = grefs.iter().map(|&g| seg(g, 0, 7)).collect();
    // 11 pages, room for 8: 8 mapped, 3 copied, data whole either way.
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 1, 0, &segs));
    assert_eq!(rig.serve(), [(1, OP_WRITE, RSP_OKAY)]);
    assert_eq!(&rig.disk.data[..11 * 4096], &pages.concat()[..]);
    let p = probe.borrow().unwrap();
    assert_eq!((p.cached, p.stats.mapped, p.stats.copied), (8, 8, 3));
    assert_eq!(
        rig.copies(),
        1,
        "the pieces without room share one grant-copy batch"
    );
    assert_eq!(rig.xen.borrow().mapped_count(), 8);

    // The same pages again (a persistent frontend reuses them): no new mappings.
    rig.submit(&encode(Protocol::X86_64, OP_READ, 2, 0, &segs[..8]));
    assert_eq!(rig.serve(), [(2, OP_READ, RSP_OKAY)]);
    let p = probe.borrow().unwrap();
    assert_eq!((p.stats.mapped, p.stats.hits), (8, 16));

    // New pages push out the least recently used ones, never past the bound.
    let fresh: Vec<u32> = (0..4).map(|_| rig.page(&[])).collect();
    let fsegs: Vec<Segment> = fresh.iter().map(|&g| seg(g, 0, 7)).collect();
    rig.submit(&encode(Protocol::X86_64, OP_READ, 3, 8, &fsegs));
    assert_eq!(rig.serve(), [(3, OP_READ, RSP_OKAY)]);
    let p = probe.borrow().unwrap();
    assert_eq!((p.cached, p.stats.evicted), (8, 4));
    assert_eq!(rig.xen.borrow().mapped_count(), 8);
    for (i, g) in fresh.iter().enumerate() {
        assert!(
            rig.guest_page(*g) == pages[1 + i],
            "page {i} read into a fresh mapping"
        );
    }

    // A bad reference cannot be mapped and cannot be copied: an error, nothing cached.
    rig.submit(&encode(Protocol::X86_64, OP_READ, 4, 0, &[seg(4242, 0, 7)]));
    assert_eq!(rig.serve(), [(4, OP_READ, RSP_ERROR)]);
    assert_eq!(probe.borrow().unwrap().cached, 8);

    // Disconnect: every mapping goes.
    rig.guest = Box::new(Guest {
        xen: rig.xen.clone(),
        copies: rig.copies.clone(),
    });
    assert_eq!(rig.xen.borrow().mapped_count(), 0);
}

#[test]
fn contiguous_requests_share_one_device_io() {
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    let pages: Vec<Vec<u8>> = (0..8).map(|i| pattern(4096, 60 + i)).collect();
    let grefs: Vec<u32> = pages.iter().map(|p| rig.page(p)).collect();
    // Eight 4 KiB writes back to back, then one elsewhere: two device writes.
    for (i, g) in grefs.iter().enumerate() {
        rig.submit(&encode(
            Protocol::X86_64,
            OP_WRITE,
            i as u64,
            8 * i as u64,
            &[seg(*g, 0, 7)],
        ));
    }
    rig.submit(&encode(
        Protocol::X86_64,
        OP_WRITE,
        99,
        512,
        &[seg(grefs[0], 0, 7)],
    ));
    let r = rig.serve();
    assert_eq!(r.len(), 9);
    assert!(r.iter().all(|x| x.2 == RSP_OKAY));
    assert_eq!(rig.disk.writes, 2);
    assert_eq!(
        rig.disk.batches,
        [2],
        "both device writes in flight at once"
    );
    assert_eq!(
        rig.copies(),
        1,
        "one grant-copy batch for everything written at once"
    );
    assert_eq!(&rig.disk.data[..8 * 4096], &pages.concat()[..]);
    assert_eq!(rig.queue.stats.merged, 7);
    // Read them back in three requests: one device read, each guest page right.
    let dst: Vec<u32> = (0..8).map(|_| rig.page(&[])).collect();
    rig.submit(&encode(
        Protocol::X86_64,
        OP_READ,
        10,
        0,
        &[seg(dst[0], 0, 7), seg(dst[1], 0, 7)],
    ));
    rig.submit(&encode(
        Protocol::X86_64,
        OP_READ,
        11,
        16,
        &[seg(dst[2], 0, 7)],
    ));
    let rest: Vec<Segment> = dst[3..].iter().map(|&g| seg(g, 0, 7)).collect();
    rig.submit(&encode(Protocol::X86_64, OP_READ, 12, 24, &rest));
    let reads = rig.disk.reads;
    let copies = rig.copies();
    assert!(rig.serve().iter().all(|x| x.2 == RSP_OKAY));
    assert_eq!(rig.disk.reads, reads + 1);
    assert_eq!(
        rig.copies(),
        copies + 1,
        "one grant-copy batch for the merged read"
    );
    for (i, g) in dst.iter().enumerate() {
        assert!(rig.guest_page(*g) == pages[i], "page {i}");
    }
}

#[test]
fn a_flush_ends_a_batch_and_waits_for_it() {
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    let pages: Vec<Vec<u8>> = (0..4).map(|i| pattern(4096, 80 + i)).collect();
    let g: Vec<u32> = pages.iter().map(|p| rig.page(p)).collect();
    let p = Protocol::X86_64;
    // Two writes far apart (two device I/Os), a flush, two more.
    rig.submit(&encode(p, OP_WRITE, 1, 0, &[seg(g[0], 0, 7)]));
    rig.submit(&encode(p, OP_WRITE, 2, 800, &[seg(g[1], 0, 7)]));
    rig.submit(&encode(p, OP_FLUSH_DISKCACHE, 3, 0, &[]));
    rig.submit(&encode(p, OP_WRITE, 4, 8, &[seg(g[2], 0, 7)]));
    rig.submit(&encode(p, OP_WRITE, 5, 1600, &[seg(g[3], 0, 7)]));
    let r = rig.serve();
    assert_eq!(r.len(), 5);
    assert!(r.iter().all(|x| x.2 == RSP_OKAY), "{r:?}");
    assert_eq!(rig.disk.events, ["b2", "f", "b2"]);
    for (i, at) in [0usize, 800, 8, 1600].iter().enumerate() {
        assert_eq!(
            &rig.disk.data[at * 512..at * 512 + 4096],
            &pages[i][..],
            "write {i}"
        );
    }
}

#[test]
fn a_batch_holds_at_most_its_bytes() {
    let mut rig = Rig::new(Protocol::X86_64, 64 << 20, 512, false);
    // 11-segment (44 KiB) writes, none contiguous with another, all through buffers
    // (no persistent grants): the 32 of one ring batch need more buffers than
    // BUFFERED_MAX_BYTES, so they reach the device in several rounds, each within it.
    let page = rig.page(&pattern(4096, 9));
    let segs: Vec<Segment> = (0..11).map(|_| seg(page, 0, 7)).collect();
    let mut served = 0;
    for round in 0..2u64 {
        for i in 0..32u64 {
            let n = round * 32 + i;
            rig.submit(&encode(Protocol::X86_64, OP_WRITE, n, n * 1000, &segs));
        }
        let r = rig.serve();
        assert!(r.iter().all(|x| x.2 == RSP_OKAY));
        served += r.len();
    }
    assert_eq!(served, 64);
    let per = 11 * 4096;
    let b = &rig.disk.batches;
    assert!(b.iter().all(|&n| n * per <= BUFFERED_MAX_BYTES), "{b:?}");
    assert!(b.len() > 2, "32 requests of 44 KiB exceed one round: {b:?}");
    assert_eq!(b.iter().sum::<usize>(), 64);
}

/// `n` reads of 128 pages (512 KiB) each, none contiguous with another, by indirect
/// requests into fresh pages; returns the pages of each.
fn big_reads(rig: &mut Rig, n: u64) -> Vec<Vec<u32>> {
    let mut all = Vec::new();
    for i in 0..n {
        let dst: Vec<u32> = (0..128).map(|_| rig.page(&[])).collect();
        let ind = rig.indirect_table(&dst);
        rig.submit(&encode_indirect(
            Protocol::X86_64,
            OP_READ,
            i,
            i * 2048,
            128,
            &[ind],
        ));
        all.push(dst);
    }
    all
}

#[test]
fn direct_transfers_beyond_the_buffer_bound_are_all_in_flight_at_once() {
    // Four 512 KiB reads (2 MiB, twice BUFFERED_MAX_BYTES) into persistently mapped
    // pages the device reaches: no buffer of ours is needed, so all four go to the
    // device together (a guest reading 1 MiB at queue depth 8 keeps 8 MiB waiting).
    let mut rig = Rig::new(Protocol::X86_64, 8 << 20, 512, false);
    for (i, b) in rig.disk.data.iter_mut().enumerate() {
        *b = (i / 4096) as u8 ^ (i as u8);
    }
    rig.disk.reach = Some(rig.xen.clone());
    let probe = rig.persistent(1024);
    let dst = big_reads(&mut rig, 4);
    let r = rig.serve();
    assert_eq!(r.len(), 4);
    assert!(r.iter().all(|x| x.2 == RSP_OKAY), "{r:?}");
    assert_eq!(rig.disk.batches, [4], "one round, all four in flight");
    assert_eq!(rig.disk.direct, 4);
    assert_eq!(rig.copies(), 0);
    const { assert!(4 * (512 << 10) > BUFFERED_MAX_BYTES && 4 * (512 << 10) <= BATCH_MAX_BYTES) };
    for (i, pages) in dst.iter().enumerate() {
        for (k, &g) in pages.iter().enumerate() {
            let at = i * 2048 * 512 + k * 4096;
            assert_eq!(
                rig.guest_page(g),
                &rig.disk.data[at..at + 4096],
                "read {i} page {k}"
            );
        }
    }
    assert_eq!(probe.borrow().unwrap().stats.direct, 4 * 128);
}

#[test]
fn the_same_reads_through_buffers_go_in_rounds_within_the_buffer_bound() {
    // As above without persistent grants: every byte through a buffer of ours, at most
    // BUFFERED_MAX_BYTES of them at once: two rounds of two, every byte right.
    let mut rig = Rig::new(Protocol::X86_64, 8 << 20, 512, false);
    for (i, b) in rig.disk.data.iter_mut().enumerate() {
        *b = (i / 4096) as u8 ^ (i as u8);
    }
    let dst = big_reads(&mut rig, 4);
    let r = rig.serve();
    assert_eq!(r.len(), 4);
    assert!(r.iter().all(|x| x.2 == RSP_OKAY), "{r:?}");
    assert_eq!(rig.disk.batches, [2, 2]);
    assert_eq!(rig.disk.direct, 0);
    for (i, pages) in dst.iter().enumerate() {
        for (k, &g) in pages.iter().enumerate() {
            let at = i * 2048 * 512 + k * 4096;
            assert_eq!(
                rig.guest_page(g),
                &rig.disk.data[at..at + 4096],
                "read {i} page {k}"
            );
        }
    }
}

#[test]
fn a_request_that_overlaps_an_earlier_one_waits_for_it() {
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    let new = rig.page(&pattern(4096, 7));
    let dst = rig.page(&[]);
    let p = Protocol::X86_64;
    // A write and, without waiting for its answer, a read of the same blocks: the read
    // must see the write (a batch ends before the read).
    rig.submit(&encode(p, OP_WRITE, 1, 64, &[seg(new, 0, 7)]));
    rig.submit(&encode(p, OP_READ, 2, 64, &[seg(dst, 0, 7)]));
    let r = rig.serve();
    assert!(r.iter().all(|x| x.2 == RSP_OKAY), "{r:?}");
    assert_eq!(rig.disk.events, ["b1", "b1"]);
    assert!(rig.guest_page(dst) == pattern(4096, 7));
}

#[test]
fn a_bad_request_inside_a_run_fails_alone() {
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    let good: Vec<u32> = (0..4).map(|i| rig.page(&pattern(4096, i))).collect();
    let p = Protocol::X86_64;
    rig.submit(&encode(p, OP_WRITE, 1, 0, &[seg(good[0], 0, 7)]));
    // A revoked grant in the middle of a contiguous run.
    rig.submit(&encode(p, OP_WRITE, 2, 8, &[seg(7777, 0, 7)]));
    rig.submit(&encode(p, OP_WRITE, 3, 16, &[seg(good[2], 0, 7)]));
    rig.submit(&encode(p, OP_WRITE, 4, 24, &[seg(good[3], 0, 7)]));
    assert_eq!(
        rig.serve().iter().map(|x| x.2).collect::<Vec<_>>(),
        [RSP_OKAY, RSP_ERROR, RSP_OKAY, RSP_OKAY]
    );
    assert_eq!(&rig.disk.data[..4096], &pattern(4096, 0)[..]);
    assert!(
        rig.disk.data[4096..8192].iter().all(|&b| b == 0),
        "nothing written for 2"
    );
    assert_eq!(
        &rig.disk.data[8192..16384],
        &[pattern(4096, 2), pattern(4096, 3)].concat()[..]
    );
    // A bad sector under a merged read: only the request covering it fails.
    rig.disk.bad_lba = Some(20);
    let dst: Vec<u32> = (0..4).map(|_| rig.page(&[])).collect();
    for (i, g) in dst.iter().enumerate() {
        rig.submit(&encode(
            p,
            OP_READ,
            10 + i as u64,
            8 * i as u64,
            &[seg(*g, 0, 7)],
        ));
    }
    assert_eq!(
        rig.serve().iter().map(|x| x.2).collect::<Vec<_>>(),
        [RSP_OKAY, RSP_OKAY, RSP_ERROR, RSP_OKAY]
    );
    assert!(
        rig.guest_page(dst[2]).iter().all(|&b| b == 0),
        "no data for the failed read"
    );
    assert!(rig.guest_page(dst[3]) == pattern(4096, 3));
}

#[test]
fn mapped_grants_go_straight_to_a_device_that_reaches_them() {
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    rig.disk.reach = Some(rig.xen.clone());
    let probe = rig.persistent(32);
    let pages: Vec<Vec<u8>> = (0..8).map(|i| pattern(4096, 90 + i)).collect();
    let grefs: Vec<u32> = pages.iter().map(|p| rig.page(p)).collect();
    // Two contiguous 4-page writes: one run, one device transfer from the guest's pages.
    let segs: Vec<Segment> = grefs.iter().map(|&g| seg(g, 0, 7)).collect();
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 1, 64, &segs[..4]));
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 2, 96, &segs[4..]));
    let r = rig.serve();
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|x| x.2 == RSP_OKAY), "{r:?}");
    assert_eq!(
        &rig.disk.data[64 * 512..64 * 512 + 8 * 4096],
        &pages.concat()[..]
    );
    assert_eq!(
        (rig.disk.direct, rig.disk.writes),
        (1, 0),
        "one direct transfer"
    );
    assert_eq!(rig.copies(), 0, "no byte went through a copy");
    // Read them back into other pages (a partial page at each end: sectors 2..7 of
    // the first page, then whole pages, then sectors 0..1 of the last).
    let back: Vec<u32> = (0..9).map(|_| rig.page(&[])).collect();
    let mut bsegs: Vec<Segment> = back.iter().map(|&g| seg(g, 0, 7)).collect();
    bsegs[0] = seg(back[0], 2, 7);
    bsegs[8] = seg(back[8], 0, 1);
    rig.submit(&encode(Protocol::X86_64, OP_READ, 3, 64, &bsegs));
    assert_eq!(rig.serve(), [(3, OP_READ, RSP_OKAY)]);
    assert_eq!(rig.disk.direct, 2);
    let all = pages.concat();
    assert_eq!(&rig.guest_page(back[0])[1024..], &all[..3072]);
    for k in 1..8 {
        assert_eq!(
            rig.guest_page(back[k]),
            &all[3072 + (k - 1) * 4096..3072 + k * 4096]
        );
    }
    assert_eq!(&rig.guest_page(back[8])[..1024], &all[3072 + 7 * 4096..]);
    assert_eq!(rig.copies(), 0);
    let p = probe.borrow().unwrap();
    assert_eq!((p.stats.direct, p.stats.copied), (17, 0));
}

#[test]
fn a_batch_larger_than_the_cache_goes_partly_direct_and_never_loses_a_pinned_page() {
    // Room for 6 grants; three runs of 4 pages in one batch. The device may use a page
    // until the batch ends, so none it was given may be unmapped to make room for
    // another run (the fake device panics on a page that is not mapped): the first
    // run goes direct, the others through copies, every byte right.
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    rig.disk.reach = Some(rig.xen.clone());
    let probe = rig.persistent(6);
    let pages: Vec<Vec<u8>> = (0..12).map(|i| pattern(4096, 120 + i)).collect();
    let grefs: Vec<u32> = pages.iter().map(|p| rig.page(p)).collect();
    for r in 0..3 {
        let segs: Vec<Segment> = grefs[r * 4..r * 4 + 4]
            .iter()
            .map(|&g| seg(g, 0, 7))
            .collect();
        rig.submit(&encode(
            Protocol::X86_64,
            OP_WRITE,
            r as u64,
            1000 * r as u64,
            &segs,
        ));
    }
    let res = rig.serve();
    assert_eq!(res.len(), 3);
    assert!(res.iter().all(|x| x.2 == RSP_OKAY), "{res:?}");
    for r in 0..3 {
        let o = 1000 * r * 512;
        assert_eq!(
            &rig.disk.data[o..o + 4 * 4096],
            &pages[r * 4..r * 4 + 4].concat()[..]
        );
    }
    assert_eq!(rig.disk.direct, 1, "one run fits the cache whole");
    let p = probe.borrow().unwrap();
    assert!(p.cached <= 6);
    assert_eq!(p.stats.direct, 4);
    assert!(rig.xen.borrow().mapped_count() <= 6);
}

#[test]
fn a_failed_direct_run_is_retried_request_by_request() {
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    rig.disk.reach = Some(rig.xen.clone());
    let _probe = rig.persistent(32);
    let grefs: Vec<u32> = (0..4).map(|i| rig.page(&pattern(4096, i))).collect();
    // Four contiguous one-page reads; the third page's blocks are bad.
    for (i, g) in grefs.iter().enumerate() {
        rig.submit(&encode(
            Protocol::X86_64,
            OP_READ,
            i as u64,
            8 * i as u64,
            &[seg(*g, 0, 7)],
        ));
    }
    rig.disk.data[..4 * 4096].copy_from_slice(&pattern(4 * 4096, 7));
    rig.disk.bad_lba = Some(17);
    let mut r = rig.serve();
    r.sort();
    assert_eq!(
        r,
        [
            (0, OP_READ, RSP_OKAY),
            (1, OP_READ, RSP_OKAY),
            (2, OP_READ, RSP_ERROR),
            (3, OP_READ, RSP_OKAY)
        ]
    );
    assert_eq!(rig.disk.direct, 1 + 4, "the run, then each request alone");
    let want = pattern(4 * 4096, 7);
    for k in [0usize, 1, 3] {
        assert_eq!(rig.guest_page(grefs[k]), &want[k * 4096..(k + 1) * 4096]);
    }
    assert_eq!(rig.copies(), 0);
}

#[test]
fn without_persistent_grants_or_a_reaching_device_every_byte_is_copied() {
    // Grant copies only (no mapping): nothing is offered to the device.
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    rig.disk.reach = Some(rig.xen.clone());
    let g = rig.page(&pattern(4096, 3));
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 1, 0, &[seg(g, 0, 7)]));
    assert_eq!(rig.serve(), [(1, OP_WRITE, RSP_OKAY)]);
    assert_eq!((rig.disk.direct, rig.copies()), (0, 1));
    // Mapped, but the device cannot reach memory: copies through the mappings.
    let mut rig = Rig::new(Protocol::X86_64, 1 << 20, 512, false);
    let probe = rig.persistent(8);
    let g = rig.page(&pattern(4096, 4));
    rig.submit(&encode(Protocol::X86_64, OP_WRITE, 1, 0, &[seg(g, 0, 7)]));
    assert_eq!(rig.serve(), [(1, OP_WRITE, RSP_OKAY)]);
    assert_eq!(&rig.disk.data[..4096], &pattern(4096, 4)[..]);
    let p = probe.borrow().unwrap();
    assert_eq!((p.stats.direct, p.stats.hits, rig.disk.direct), (0, 1, 0));
}

/// A disk that logs its device calls, and shares the log with whoever else writes to it
/// (here: the notification callback), so their order shows.
struct Logged<'a> {
    disk: &'a mut MemDisk,
    log: Rc<RefCell<Vec<String>>>,
}

impl bulkhead_block::BlockDevice for Logged<'_> {
    fn block_size(&self) -> u32 {
        self.disk.block_size()
    }
    fn blocks(&self) -> u64 {
        self.disk.blocks()
    }
    fn features(&self) -> bulkhead_block::Features {
        self.disk.features()
    }
    async fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), bulkhead_block::BlockError> {
        self.log.borrow_mut().push("read".into());
        self.disk.read(lba, buf).await
    }
    async fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), bulkhead_block::BlockError> {
        self.log.borrow_mut().push("write".into());
        self.disk.write(lba, buf).await
    }
    async fn flush(&mut self) -> Result<(), bulkhead_block::BlockError> {
        self.log.borrow_mut().push("flush".into());
        self.disk.flush().await
    }
    async fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), bulkhead_block::BlockError> {
        self.log.borrow_mut().push("discard".into());
        self.disk.discard(lba, blocks).await
    }
    async fn transfer_all(
        &mut self,
        ios: &mut [bulkhead_block::Io<'_>],
    ) -> Vec<Result<(), bulkhead_block::BlockError>> {
        self.log
            .borrow_mut()
            .push(format!("batch of {}", ios.len()));
        self.disk.transfer_all(ios).await
    }
}

#[test]
fn each_batch_is_told_to_the_frontend_before_the_next_goes_to_the_device() {
    // A two-page ring (64 entries) with 40 reads on it: two batches of the ring (32 and
    // 8). The frontend asks for an event on the next response (as blkfront does).
    let p = Protocol::X86_64;
    let mut rig = Rig::new(p, 1 << 20, 512, false);
    let ring = ring::attach(VecRing::new(2), p).unwrap();
    rig.front = FrontRing::new(ring.memory(), p.layout());
    let geo = Geometry {
        sectors: (1 << 20) / 512,
        block_size: 512,
    };
    rig.queue = Queue::new("vbd-7-51712".into(), ring, p, LIMITS, geo, false);
    let g = rig.page(&pattern(4096, 9));
    for id in 0..40u64 {
        // Far apart: one device I/O each.
        rig.submit(&encode(p, OP_READ, id, id * 16, &[seg(g, 0, 0)]));
    }
    let mem = rig.queue.ring_mut().memory_mut();
    rig.front.want_response_event(mem);
    let log = Rc::new(RefCell::new(Vec::new()));
    let Rig {
        queue, guest, disk, ..
    } = &mut rig;
    let mut dev = Logged {
        disk,
        log: log.clone(),
    };
    let told = log.clone();
    run(
        queue.serve_notifying(&mut dev, guest.as_mut(), usize::MAX, &mut || {
            told.borrow_mut().push("notify".into())
        }),
    )
    .expect("ring intact");
    assert_eq!(
        *log.borrow(),
        ["batch of 32", "notify", "batch of 8"],
        "the first batch's answers were told before the second batch went to the device \
         (and, the frontend not having asked again, not told twice)"
    );
    let mut answered = 0;
    let mem = rig.queue.ring_mut().memory_mut();
    while let Some(r) = rig.front.get(mem) {
        assert_eq!(i16::from_le_bytes([r[10], r[11]]), RSP_OKAY);
        answered += 1;
    }
    assert_eq!(answered, 40, "each request answered once");
}

/// Poll `f` until it ends (`SharedDisk` makes it wait a few polls).
fn run_polled<T>(f: impl std::future::Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..1_000_000 {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("never ended")
}

/// A rig on a ring of `pages` pages (32 entries, one batch's worth, each).
fn rig_of(pages: usize) -> Rig {
    let p = Protocol::X86_64;
    let mut rig = Rig::new(p, 1 << 20, 512, false);
    let ring = ring::attach(VecRing::new(pages), p).unwrap();
    rig.front = FrontRing::new(ring.memory(), p.layout());
    let geo = Geometry {
        sectors: (1 << 20) / 512,
        block_size: 512,
    };
    rig.queue = Queue::new("vbd-7-51712".into(), ring, p, LIMITS, geo, false);
    rig
}

/// Serve `rig`'s ring through `dev`; the responses in the order published.
fn serve_lanes(rig: &mut Rig, dev: &mut SharedDisk) -> Vec<(u64, u8, i16)> {
    let mem = rig.queue.ring_mut().memory_mut();
    rig.front.want_response_event(mem);
    let Rig { queue, guest, .. } = rig;
    run_polled(queue.serve_notifying(dev, guest.as_mut(), usize::MAX, &mut || {}))
        .expect("ring intact");
    let mem = rig.queue.ring_mut().memory_mut();
    let mut out = Vec::new();
    while let Some(r) = rig.front.get(mem) {
        out.push((
            u64::from_le_bytes(r[..8].try_into().unwrap()),
            r[8],
            i16::from_le_bytes([r[10], r[11]]),
        ));
    }
    out
}

#[test]
fn a_batch_taken_while_another_is_at_the_device_goes_beside_it_and_is_answered_when_it_ends() {
    let p = Protocol::X86_64;
    let mut rig = rig_of(2);
    let content: Vec<Vec<u8>> = (0..40u8).map(|k| pattern(512, k)).collect();
    let mut dev = SharedDisk::new(MemDisk::new(2048, 512), 50);
    for (k, c) in content.iter().enumerate() {
        dev.disk.borrow_mut().data[k * 4096..k * 4096 + 512].copy_from_slice(c);
    }
    // 40 reads, far apart: the first 32 one batch (the slow handle), the last 8 the
    // next, beside it (a quick one), which ends first.
    let pages: Vec<u32> = (0..40).map(|_| rig.page(&[0u8; 4096])).collect();
    for (id, &g) in pages.iter().enumerate() {
        rig.submit(&encode(
            p,
            OP_READ,
            id as u64,
            id as u64 * 8,
            &[seg(g, 0, 0)],
        ));
    }
    let answers = serve_lanes(&mut rig, &mut dev);
    assert_eq!(
        *dev.log.borrow(),
        ["h0 batch of 32 (with 0)", "h1 batch of 8 (with 1)"],
        "the second batch went to the device while the first was there"
    );
    let ids: Vec<u64> = answers.iter().map(|a| a.0).collect();
    let want: Vec<u64> = (32..40).chain(0..32).collect();
    assert_eq!(ids, want, "answered as each batch ended, each request once");
    assert!(answers.iter().all(|a| a.2 == RSP_OKAY));
    for (k, &g) in pages.iter().enumerate() {
        assert_eq!(rig.guest_page(g)[..512], content[k][..], "read {k}");
    }
    assert_eq!(rig.queue.stats.batches, 2);
}

#[test]
fn a_flush_waits_for_every_batch_before_it_and_nothing_goes_beside_it() {
    let p = Protocol::X86_64;
    let mut rig = rig_of(4);
    let mut dev = SharedDisk::new(MemDisk::new(2048, 512), 20);
    let g = rig.page(&pattern(4096, 3));
    let mut id = 0u64;
    let mut put = |rig: &mut Rig, raw: Vec<u8>| {
        rig.submit(&raw);
        id += 1;
    };
    // Batch 1: 32 writes. Batch 2: a flush among reads. Batch 3: more reads, which
    // may not go beside batch 2.
    for k in 0..32u64 {
        put(&mut rig, encode(p, OP_WRITE, k, k * 8, &[seg(g, 0, 0)]));
    }
    put(&mut rig, encode(p, OP_READ, 100, 500, &[seg(g, 0, 0)]));
    put(&mut rig, encode(p, OP_FLUSH_DISKCACHE, 101, 0, &[]));
    for k in 0..38u64 {
        put(
            &mut rig,
            encode(p, OP_READ, 200 + k, 600 + k * 8, &[seg(g, 0, 0)]),
        );
    }
    let answers = serve_lanes(&mut rig, &mut dev);
    let log = dev.log.borrow().clone();
    assert_eq!(answers.len(), 32 + 2 + 38);
    assert_eq!(rig.queue.stats.batches, 3);
    assert!(answers.iter().all(|a| a.2 == RSP_OKAY), "{answers:?}");
    let flush = log
        .iter()
        .position(|l| l.contains("flush"))
        .expect("a flush");
    assert!(
        log[flush].ends_with("(with 0)"),
        "the flush went alone: {log:?}"
    );
    assert!(
        log[..flush].iter().any(|l| l.contains("batch of 32")),
        "the writes before it went first: {log:?}"
    );
    assert!(
        log.iter().all(|l| l.ends_with("(with 0)")),
        "nothing went beside the batch with the flush: {log:?}"
    );
    let flush_answer = answers.iter().position(|a| a.0 == 101).unwrap();
    let last_write = answers.iter().rposition(|a| a.0 < 32).unwrap();
    assert!(
        last_write < flush_answer,
        "the writes were answered before the flush"
    );
}

#[test]
fn a_batch_that_overlaps_one_at_the_device_waits_for_it() {
    let p = Protocol::X86_64;
    let mut rig = rig_of(2);
    let mut dev = SharedDisk::new(MemDisk::new(2048, 512), 20);
    let data = pattern(4096, 9);
    let g = rig.page(&data);
    // 32 writes, then 8 reads of what the last write wrote.
    for k in 0..32u64 {
        rig.submit(&encode(p, OP_WRITE, k, k * 8, &[seg(g, 0, 7)]));
    }
    let back: Vec<u32> = (0..8).map(|_| rig.page(&[0u8; 4096])).collect();
    for (k, &b) in back.iter().enumerate() {
        rig.submit(&encode(p, OP_READ, 100 + k as u64, 31 * 8, &[seg(b, 0, 7)]));
    }
    let answers = serve_lanes(&mut rig, &mut dev);
    assert_eq!(answers.len(), 40);
    assert!(answers.iter().all(|a| a.2 == RSP_OKAY));
    assert_eq!(dev.most.get(), 1, "{:?}", dev.log.borrow());
    for &b in &back {
        assert_eq!(rig.guest_page(b), data, "the read saw the write before it");
    }
}
