//! DMA buffers for I/O commands, allocated once when the controller comes up and reused:
//! a command takes a buffer (its data pages and, for transfers beyond two pages, its PRP
//! list page), and gives it back when its completion has been handled. Per command there
//! is then no DMA allocation, no zeroing of memory the device or the copy from a guest is
//! about to overwrite, and no freeing (issue 17: each command allocated, zeroed and freed
//! its own frames).
//!
//! An empty pool is back-pressure, not an error: the caller waits for a completion to
//! give a buffer back. The pool's size bounds the memory in flight per controller.

use alloc::vec::Vec;

use crate::prp::{self, Prp};
use crate::{Dma, Error, PAGE_SIZE};

/// One command's DMA memory: `bytes` of physically contiguous data pages at `data`, and a
/// PRP list page at `list` (0 when the buffer spans at most two pages and needs none).
#[derive(Debug, PartialEq, Eq)]
pub struct Buffer {
    pub data: u64,
    pub list: u64,
    pub bytes: usize,
    /// Which of the pool's buffers: `give` takes it back by this.
    index: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// `take` found no buffer free (the caller waited).
    pub empty: u64,
    /// A buffer given back that was not out (a driver bug; ignored, counted).
    pub bad_returns: u64,
}

pub struct Pool {
    /// Every buffer's (data, list) addresses, allocated at `new`.
    bufs: Vec<(u64, u64)>,
    out: Vec<bool>,
    free: Vec<usize>,
    buf_bytes: usize,
    pub stats: PoolStats,
}

impl Pool {
    /// Allocate up to `count` buffers of `buf_bytes` (rounded up to whole pages). Fewer
    /// are kept if memory runs out part way; none at all is `Error::NoMemory`.
    pub fn new(dma: &mut impl Dma, count: usize, buf_bytes: usize) -> Result<Pool, Error> {
        if buf_bytes == 0 || count == 0 {
            return Err(Error::Invalid("empty DMA pool"));
        }
        let buf_bytes = buf_bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let pages = buf_bytes / PAGE_SIZE;
        let lists = prp::list_pages_needed(pages);
        if lists > 1 {
            // One list page describes up to 512 pages (2 MiB): more is not a command size
            // the driver builds.
            return Err(Error::Invalid(
                "pool buffer larger than one PRP list describes",
            ));
        }
        let mut bufs = Vec::with_capacity(count);
        for _ in 0..count {
            let Ok(data) = dma.alloc(buf_bytes) else {
                break;
            };
            let list = if lists == 1 {
                match dma.alloc(PAGE_SIZE) {
                    Ok(l) => l,
                    Err(_) => {
                        dma.free(data, buf_bytes);
                        break;
                    }
                }
            } else {
                0
            };
            bufs.push((data, list));
        }
        if bufs.is_empty() {
            return Err(Error::NoMemory);
        }
        let n = bufs.len();
        Ok(Pool {
            bufs,
            out: alloc::vec![false; n],
            // Handed out from the end: buffer 0 first.
            free: (0..n).rev().collect(),
            buf_bytes,
            stats: PoolStats::default(),
        })
    }

    /// Bytes each buffer holds: the largest transfer one command of this pool carries.
    pub fn buffer_bytes(&self) -> usize {
        self.buf_bytes
    }

    /// Buffers the pool holds in all.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Buffers free now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// A free buffer, or `None`: every buffer is in flight, wait for a completion.
    pub fn take(&mut self) -> Option<Buffer> {
        let Some(i) = self.free.pop() else {
            self.stats.empty += 1;
            return None;
        };
        self.out[i] = true;
        let (data, list) = self.bufs[i];
        Some(Buffer {
            data,
            list,
            bytes: self.buf_bytes,
            index: i,
        })
    }

    /// Back into the pool once the device is done with it.
    pub fn give(&mut self, b: Buffer) {
        match self.out.get_mut(b.index) {
            Some(out) if *out && self.bufs[b.index] == (b.data, b.list) => {
                *out = false;
                self.free.push(b.index);
            }
            _ => self.stats.bad_returns += 1,
        }
    }

    /// The PRP fields for the first `len` bytes of `b`, with its list page written when
    /// the transfer spans more than two pages.
    pub fn prp(&self, dma: &impl Dma, b: &Buffer, len: usize) -> Result<Prp, Error> {
        if len == 0 || len > b.bytes {
            return Err(Error::Invalid("transfer larger than its DMA buffer"));
        }
        let npages = len.div_ceil(PAGE_SIZE);
        let pages: Vec<u64> = (0..npages as u64)
            .map(|i| b.data + i * PAGE_SIZE as u64)
            .collect();
        let lists: &[u64] = if b.list != 0 {
            core::slice::from_ref(&b.list)
        } else {
            &[]
        };
        let p = prp::build(&pages, 0, len, lists)?;
        for (addr, entries) in &p.lists {
            let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
            dma.write(*addr, &bytes);
        }
        Ok(p)
    }

    /// The PRP fields for `len` bytes of the caller's own memory at `mem` (each page's
    /// physical address, see [`prp::Pages`]), with `b`'s list page written when the
    /// transfer spans more than two pages; `b`'s data pages are not used. At most the
    /// buffer's size.
    pub fn prp_at(
        &self,
        dma: &impl Dma,
        b: &Buffer,
        mem: &prp::Pages,
        len: usize,
    ) -> Result<Prp, Error> {
        if len == 0 || len > b.bytes {
            return Err(Error::Invalid("transfer larger than its DMA buffer"));
        }
        let npages = (mem.offset + len).div_ceil(PAGE_SIZE);
        if prp::list_pages_needed(npages) > (b.list != 0) as usize {
            return Err(Error::Invalid(
                "transfer spans more pages than one list page describes",
            ));
        }
        let lists: &[u64] = if b.list != 0 {
            core::slice::from_ref(&b.list)
        } else {
            &[]
        };
        let p = prp::build(&mem.pages, mem.offset, len, lists)?;
        for (addr, entries) in &p.lists {
            let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
            dma.write(*addr, &bytes);
        }
        Ok(p)
    }

    /// Give the memory back (the controller no longer uses any of it: after a shutdown
    /// or a reset that dropped every command). Buffers still out are freed too.
    pub fn release(self, dma: &mut impl Dma) {
        for (data, list) in self.bufs {
            dma.free(data, self.buf_bytes);
            if list != 0 {
                dma.free(list, PAGE_SIZE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_hw::NoMemory;

    /// Memory for a fixed number of pages; counts what was allocated and freed.
    struct Budget {
        pages_left: usize,
        next: u64,
        allocs: usize,
        freed_pages: usize,
    }

    impl Budget {
        fn new(pages: usize) -> Budget {
            Budget {
                pages_left: pages,
                next: 0x10_0000,
                allocs: 0,
                freed_pages: 0,
            }
        }
    }

    impl Dma for Budget {
        fn alloc(&mut self, bytes: usize) -> Result<u64, NoMemory> {
            let pages = bytes.div_ceil(PAGE_SIZE);
            if pages > self.pages_left {
                return Err(NoMemory);
            }
            self.pages_left -= pages;
            self.allocs += 1;
            let at = self.next;
            self.next += (pages * PAGE_SIZE) as u64;
            Ok(at)
        }
        fn free(&mut self, _phys: u64, bytes: usize) {
            self.freed_pages += bytes.div_ceil(PAGE_SIZE);
        }
        fn read(&self, _phys: u64, buf: &mut [u8]) {
            buf.fill(0);
        }
        fn write(&self, _phys: u64, _data: &[u8]) {}
        fn barrier(&self) {}
    }

    #[test]
    fn buffers_are_allocated_once_and_reused() {
        let mut dma = Budget::new(1000);
        let mut pool = Pool::new(&mut dma, 4, 128 * 1024).unwrap();
        let allocs = dma.allocs;
        assert_eq!(allocs, 8, "four data buffers and their four list pages");
        for _ in 0..100 {
            let b = pool.take().unwrap();
            let p = pool.prp(&dma, &b, 128 * 1024).unwrap();
            assert_eq!(p.prp1, b.data);
            assert_eq!(p.prp2, b.list, "32 pages: PRP2 is the list page");
            pool.give(b);
        }
        assert_eq!(dma.allocs, allocs, "no allocation per command");
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn an_empty_pool_is_back_pressure_and_a_returned_buffer_ends_it() {
        let mut dma = Budget::new(1000);
        let mut pool = Pool::new(&mut dma, 2, 8192).unwrap();
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert_ne!(a.data, b.data);
        assert!(pool.take().is_none());
        assert_eq!(pool.stats.empty, 1);
        pool.give(a);
        let c = pool.take().expect("a buffer given back is taken again");
        assert_eq!(pool.available(), 0);
        pool.give(b);
        pool.give(c);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn a_buffer_given_back_twice_or_forged_is_counted_not_freed_twice() {
        let mut dma = Budget::new(1000);
        let mut pool = Pool::new(&mut dma, 2, 4096).unwrap();
        let a = pool.take().unwrap();
        let forged = Buffer {
            data: a.data,
            list: a.list,
            bytes: a.bytes,
            index: a.index,
        };
        pool.give(a);
        pool.give(forged);
        assert_eq!(pool.stats.bad_returns, 1);
        assert_eq!(pool.available(), 2, "the free list holds each buffer once");
        pool.give(Buffer {
            data: 1,
            list: 0,
            bytes: 4096,
            index: 99,
        });
        assert_eq!(pool.stats.bad_returns, 2);
    }

    #[test]
    fn small_buffers_need_no_list_page_and_short_transfers_none_either() {
        let mut dma = Budget::new(1000);
        let mut pool = Pool::new(&mut dma, 3, 8192).unwrap();
        assert_eq!(dma.allocs, 3, "two pages: PRP2 is the second page, no list");
        let b = pool.take().unwrap();
        let p = pool.prp(&dma, &b, 8192).unwrap();
        assert_eq!((p.prp1, p.prp2), (b.data, b.data + 4096));
        let p = pool.prp(&dma, &b, 512).unwrap();
        assert_eq!((p.prp1, p.prp2), (b.data, 0));
        assert!(pool.prp(&dma, &b, 8193).is_err(), "larger than the buffer");
        assert!(pool.prp(&dma, &b, 0).is_err());
    }

    #[test]
    fn memory_running_out_keeps_what_was_allocated() {
        // Room for two buffers of 3 pages plus their list pages, and the third's data
        // pages but not its list page.
        let mut dma = Budget::new(11);
        let pool = Pool::new(&mut dma, 8, 3 * 4096).unwrap();
        assert_eq!(pool.capacity(), 2);
        assert_eq!(
            dma.freed_pages, 3,
            "the third buffer's data pages went back"
        );
        let mut none = Budget::new(0);
        assert_eq!(Pool::new(&mut none, 8, 4096).err(), Some(Error::NoMemory));
    }

    #[test]
    fn release_frees_everything() {
        let mut dma = Budget::new(1000);
        let mut pool = Pool::new(&mut dma, 4, 64 * 1024).unwrap();
        let _out = pool.take().unwrap();
        pool.release(&mut dma);
        assert_eq!(dma.freed_pages, 4 * (16 + 1));
    }

    #[test]
    fn sizes_are_whole_pages_and_at_most_one_list_page() {
        let mut dma = Budget::new(10_000);
        let pool = Pool::new(&mut dma, 1, 5000).unwrap();
        assert_eq!(pool.buffer_bytes(), 8192);
        assert!(Pool::new(&mut dma, 1, 4 * 1024 * 1024).is_err());
        assert!(Pool::new(&mut dma, 0, 4096).is_err());
    }
}
