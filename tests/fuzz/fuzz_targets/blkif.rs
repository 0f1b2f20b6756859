//! The blkif request path: a ring of 1, 2 or 4 pages filled with the input's bytes and a
//! producer index it chooses, served through persistent grants or grant copies, against
//! a disk in memory that may reach mapped pages itself (DMA). No input may panic; every
//! request taken is answered exactly once; the disk never reaches a page that is not
//! mapped, nor past a page's end; nothing stays mapped after the release.
#![no_main]

use bulkhead_blkback::abi::Protocol;
use std::cell::RefCell;
use std::rc::Rc;

use bulkhead_blkback::io::Geometry;
use bulkhead_blkback::persistent::Persistent;
use bulkhead_blkback::queue::Queue;
use bulkhead_blkback::request::Limits;
use bulkhead_blkback::ring::{self, RingMemory, VecRing};
use bulkhead_block::{BlockDevice, BlockError, Features, Io, Span};
use bulkhead_testsupport::GrantPages;
use bulkhead_xen::fake::{FakeMapper, FakeXen};
use bulkhead_xenbus::keys::fake::run;
use libfuzzer_sys::fuzz_target;

/// The disk's blocks, and the hypervisor whose mapped pages it reaches if it reaches
/// memory itself.
struct Disk(Vec<u8>, Option<Rc<RefCell<FakeXen>>>);

impl Disk {
    fn dma(&mut self, lba: u64, spans: &[Span]) -> Result<(), BlockError> {
        let xen = self.1.as_ref().expect("spans only where taken").borrow();
        let mut len = 0;
        for s in spans {
            assert!(
                xen.mapped_page(s.addr & !4095).is_some(),
                "the device reached a page that is not mapped"
            );
            assert!(
                (s.addr & 4095) as usize + s.len <= 4096,
                "a span crosses its page"
            );
            len += s.len;
        }
        let o = lba as usize * 512;
        self.0.get(o..o + len).ok_or(BlockError::OutOfRange)?;
        Ok(())
    }
}

impl BlockDevice for Disk {
    fn block_size(&self) -> u32 {
        512
    }
    fn blocks(&self) -> u64 {
        (self.0.len() / 512) as u64
    }
    fn features(&self) -> Features {
        Features {
            flush: true,
            discard: true,
            write_zeroes: false,
            volatile_cache: true,
        }
    }
    async fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let o = lba as usize * 512;
        buf.copy_from_slice(self.0.get(o..o + buf.len()).ok_or(BlockError::OutOfRange)?);
        Ok(())
    }
    async fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        let o = lba as usize * 512;
        self.0
            .get_mut(o..o + buf.len())
            .ok_or(BlockError::OutOfRange)?
            .copy_from_slice(buf);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
    fn takes_spans(&self, _: &[Span]) -> bool {
        self.1.is_some()
    }
    async fn transfer_all(&mut self, ios: &mut [Io<'_>]) -> Vec<Result<(), BlockError>> {
        let mut out = Vec::new();
        for io in ios.iter_mut() {
            out.push(match io {
                Io::Read { lba, buf } => self.read(*lba, buf).await,
                Io::Write { lba, buf } => self.write(*lba, buf).await,
                Io::ReadTo { lba, spans } | Io::WriteFrom { lba, spans } => self.dma(*lba, spans),
            });
        }
        out
    }
    async fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), BlockError> {
        let o = lba as usize * 512;
        let n = blocks as usize * 512;
        self.0
            .get_mut(o..o + n)
            .ok_or(BlockError::OutOfRange)?
            .fill(0);
        Ok(())
    }
}

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
    let reach = (data[6] & 8 != 0).then(|| xen.clone());
    let mut disk = Disk(vec![0; 8192 * 512], reach);
    // Grants 1..=64 are readable and writable pages for copies; any other reference
    // faults. Fewer map (48 granted through the fake hypervisor, which numbers them
    // from 9) into fewer slots (40): the cache meets refusals and a full pool.
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
