//! A disk in memory behind `BlockDevice`, for backends' tests and fuzzers: the one the
//! blkback tests, the blkif fuzz targets and the runner's fuzzer all use.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bulkhead_block::{BlockDevice, BlockError, Features, Io, Span};
use bulkhead_xen::fake::FakeXen;

/// `blocks` blocks of `block_size` bytes in memory. A device call outside the disk is an
/// `OutOfRange` error, or, when `strict`, a panic: for a fuzzer whose oracle is that the
/// backend checks every range before the device sees it. Counts its calls, and may
/// reach memory itself (DMA) through a fake hypervisor's mapped grants.
#[derive(Clone)]
pub struct MemDisk {
    pub data: Vec<u8>,
    pub block_size: u32,
    pub features: Features,
    pub strict: bool,
    /// Every call fails with `Io` (a dead device).
    pub fail_io: bool,
    /// A block whose reads and writes fail with `Io` (a bad sector).
    pub bad_lba: Option<u64>,
    pub reads: u32,
    pub writes: u32,
    pub flushes: u32,
    pub discards: u32,
    /// Each `transfer_all` call: how many transfers it carried.
    pub batches: Vec<usize>,
    /// Device calls in the order they came: "b2" a batch of two, "f" a flush.
    pub events: Vec<String>,
    /// Whether the disk reaches memory by address (a DMA-capable device): then the
    /// fake hypervisor's mapped grants are what it reaches, and only while mapped
    /// (reaching any other page panics).
    pub reach: Option<Rc<RefCell<FakeXen>>>,
    /// Transfers it moved straight to or from spans.
    pub direct: u32,
}

impl MemDisk {
    /// Zeroed, with flush and discard and a volatile cache.
    pub fn new(blocks: u64, block_size: u32) -> MemDisk {
        MemDisk {
            data: vec![0; (blocks * block_size as u64) as usize],
            block_size,
            features: Features {
                flush: true,
                discard: true,
                write_zeroes: false,
                volatile_cache: true,
            },
            strict: false,
            fail_io: false,
            bad_lba: None,
            reads: 0,
            writes: 0,
            flushes: 0,
            discards: 0,
            batches: Vec::new(),
            events: Vec::new(),
            reach: None,
            direct: 0,
        }
    }

    /// The byte range of `len` bytes from block `lba`, if inside the disk.
    fn range(
        &self,
        lba: u64,
        len: usize,
        what: &str,
    ) -> Result<core::ops::Range<usize>, BlockError> {
        let r = (lba as usize)
            .checked_mul(self.block_size as usize)
            .and_then(|o| Some(o..o.checked_add(len)?))
            .filter(|r| r.end <= self.data.len());
        match r {
            Some(r) => Ok(r),
            None => {
                assert!(
                    !self.strict,
                    "{what} past the disk reached the device (block {lba}, {len} bytes)"
                );
                Err(BlockError::OutOfRange)
            }
        }
    }

    /// Where `len` bytes from `lba` are, or the error a device reports for them.
    fn io_range(
        &self,
        lba: u64,
        len: usize,
        what: &str,
    ) -> Result<core::ops::Range<usize>, BlockError> {
        let r = self.range(lba, len, what)?;
        let bad = self
            .bad_lba
            .is_some_and(|b| b >= lba && b < lba + (len / self.block_size as usize) as u64);
        if self.fail_io || bad {
            return Err(BlockError::Io);
        }
        Ok(r)
    }

    /// Move the bytes at `lba` to or from spans of mapped grants, as DMA would.
    fn dma(&mut self, lba: u64, spans: &[Span], write: bool) -> Result<(), BlockError> {
        self.direct += 1;
        let len = spans.iter().map(|s| s.len).sum();
        let at = self.io_range(lba, len, "DMA")?.start;
        let xen = self.reach.clone().expect("spans only where taken");
        let mut xen = xen.borrow_mut();
        let mut o = at;
        for s in spans {
            let off = (s.addr & 4095) as usize;
            assert!(off + s.len <= 4096, "a span crosses its page");
            let mem = xen
                .mapped_page_mut(s.addr & !4095)
                .expect("the device reached a page that is not mapped");
            let disk = &mut self.data[o..o + s.len];
            if write {
                disk.copy_from_slice(&mem[off..off + s.len]);
            } else {
                mem[off..off + s.len].copy_from_slice(disk);
            }
            o += s.len;
        }
        Ok(())
    }
}

impl BlockDevice for MemDisk {
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn blocks(&self) -> u64 {
        (self.data.len() / self.block_size as usize) as u64
    }
    fn features(&self) -> Features {
        self.features
    }
    async fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.reads += 1;
        let r = self.io_range(lba, buf.len(), "read")?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    async fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.writes += 1;
        let r = self.io_range(lba, buf.len(), "write")?;
        self.data[r].copy_from_slice(buf);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), BlockError> {
        self.flushes += 1;
        self.events.push("f".into());
        if self.fail_io {
            return Err(BlockError::Io);
        }
        Ok(())
    }
    /// Completes a batch's transfers last to first, as a device with many commands in
    /// flight may: nothing may depend on their order.
    async fn transfer_all(&mut self, ios: &mut [Io<'_>]) -> Vec<Result<(), BlockError>> {
        self.batches.push(ios.len());
        self.events.push(format!("b{}", ios.len()));
        let mut out = vec![Ok(()); ios.len()];
        for (i, io) in ios.iter_mut().enumerate().rev() {
            out[i] = match io {
                Io::Read { lba, buf } => self.read(*lba, buf).await,
                Io::Write { lba, buf } => self.write(*lba, buf).await,
                Io::ReadTo { lba, spans } => self.dma(*lba, spans, false),
                Io::WriteFrom { lba, spans } => self.dma(*lba, spans, true),
            };
        }
        out
    }
    /// Pages of mapped memory, each piece within its page (what the fake can reach).
    fn takes_spans(&self, spans: &[Span]) -> bool {
        self.reach.is_some()
            && spans
                .iter()
                .all(|s| (s.addr & 4095) as usize + s.len <= 4096)
    }
    /// Discarded blocks read back as zeros.
    async fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), BlockError> {
        self.discards += 1;
        let len = blocks
            .checked_mul(self.block_size as u64)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(BlockError::OutOfRange)?;
        let r = self.range(lba, len, "discard")?;
        if self.fail_io {
            return Err(BlockError::Io);
        }
        self.data[r].fill(0);
        Ok(())
    }
}

/// A [`MemDisk`] behind handles that share it ([`BlockDevice::lane`]), for a data path
/// with several batches at the device at once. Each call moves its data at once but
/// ends only after `delay` more polls (the first handle's delay; the lanes it hands out
/// end at once), so batches at the device together end in another order than they
/// went. Logs each call with its handle and how many others were in flight beside it
/// ("h1 batch of 8 (with 1)"), and keeps the most in flight at once.
#[derive(Clone)]
pub struct SharedDisk {
    pub disk: Rc<RefCell<MemDisk>>,
    /// 0 for the first handle; lanes are numbered from 1.
    pub handle: u8,
    pub delay: usize,
    handles: Rc<Cell<u8>>,
    pub log: Rc<RefCell<Vec<String>>>,
    in_flight: Rc<Cell<usize>>,
    pub most: Rc<Cell<usize>>,
}

impl SharedDisk {
    pub fn new(disk: MemDisk, delay: usize) -> SharedDisk {
        SharedDisk {
            disk: Rc::new(RefCell::new(disk)),
            handle: 0,
            delay,
            handles: Rc::new(Cell::new(0)),
            log: Rc::new(RefCell::new(Vec::new())),
            in_flight: Rc::new(Cell::new(0)),
            most: Rc::new(Cell::new(0)),
        }
    }

    /// One call at the device, after its data moved: logged as `what`.
    async fn at_device(&self, what: String) {
        let n = self.in_flight.get() + 1;
        self.in_flight.set(n);
        self.most.set(self.most.get().max(n));
        self.log
            .borrow_mut()
            .push(format!("h{} {what} (with {})", self.handle, n - 1));
        for _ in 0..self.delay {
            pending_once().await;
        }
        self.in_flight.set(self.in_flight.get() - 1);
    }
}

/// Pending once (the poller polls again: the tests' and fuzzers' loops do).
async fn pending_once() {
    let mut yielded = false;
    core::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// A [`MemDisk`] call, which never waits.
fn now<T>(f: impl Future<Output = T>) -> T {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the disk in memory never waits"),
    }
}

impl BlockDevice for SharedDisk {
    fn block_size(&self) -> u32 {
        self.disk.borrow().block_size()
    }
    fn blocks(&self) -> u64 {
        self.disk.borrow().blocks()
    }
    fn features(&self) -> Features {
        self.disk.borrow().features()
    }
    async fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let r = now(self.disk.borrow_mut().read(lba, buf));
        self.at_device("read".into()).await;
        r
    }
    async fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        let r = now(self.disk.borrow_mut().write(lba, buf));
        self.at_device("write".into()).await;
        r
    }
    async fn flush(&mut self) -> Result<(), BlockError> {
        let r = now(self.disk.borrow_mut().flush());
        self.at_device("flush".into()).await;
        r
    }
    async fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), BlockError> {
        let r = now(self.disk.borrow_mut().discard(lba, blocks));
        self.at_device("discard".into()).await;
        r
    }
    async fn transfer_all(&mut self, ios: &mut [Io<'_>]) -> Vec<Result<(), BlockError>> {
        let r = now(self.disk.borrow_mut().transfer_all(ios));
        self.at_device(format!("batch of {}", ios.len())).await;
        r
    }
    fn takes_spans(&self, spans: &[Span]) -> bool {
        self.disk.borrow().takes_spans(spans)
    }
    fn lane(&self) -> Option<Self> {
        self.handles.set(self.handles.get() + 1);
        Some(SharedDisk {
            handle: self.handles.get(),
            delay: 0,
            ..self.clone()
        })
    }
}
