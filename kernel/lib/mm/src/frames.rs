//! Physical frame allocator: one bit per 4 KiB frame between the lowest and highest usable
//! address, set = in use.
//!
//! A bitmap rather than a free list because drivers need physically contiguous, aligned
//! runs (queues, PRP lists, descriptor rings) and frees of single frames must never be
//! lost for lack of list space. Everything that is not usable RAM in the memory map, and
//! every range the kernel reserves (its image, the boot page tables), starts as in use and
//! stays so.

use crate::PAGE_SIZE;
use bulkhead_boot::MemoryMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No run of free frames of the requested size and alignment.
    OutOfMemory,
    /// Freeing a frame outside the allocator's range or one that is not allocated.
    BadFree(u64),
    /// The bitmap slice is too small for the memory map.
    BitmapTooSmall { needed_words: usize },
}

pub struct FrameAllocator<'a> {
    bitmap: &'a mut [u64],
    /// Physical address of the frame that bit 0 describes.
    base: u64,
    frames: usize,
    free: usize,
    /// Where the next single-frame search starts; keeps common allocations O(1)-ish.
    hint: usize,
}

/// Bitmap words needed to describe `map`.
pub fn bitmap_words(map: &MemoryMap) -> usize {
    let frames = ((map.usable_end() - crate::align_down(map.usable_start(), PAGE_SIZE)) / PAGE_SIZE)
        as usize;
    frames.div_ceil(64)
}

impl<'a> FrameAllocator<'a> {
    /// Build from a normalised memory map; frames in `reserved` ranges stay in use.
    pub fn new(
        map: &MemoryMap,
        reserved: &[(u64, u64)],
        bitmap: &'a mut [u64],
    ) -> Result<Self, FrameError> {
        let base = crate::align_down(map.usable_start(), PAGE_SIZE);
        let frames = ((map.usable_end() - base) / PAGE_SIZE) as usize;
        let needed_words = frames.div_ceil(64);
        if bitmap.len() < needed_words {
            return Err(FrameError::BitmapTooSmall { needed_words });
        }
        let bitmap = &mut bitmap[..needed_words];
        bitmap.fill(!0);
        let mut a = FrameAllocator {
            bitmap,
            base,
            frames,
            free: 0,
            hint: 0,
        };
        for r in map.usable() {
            a.set_range(r.start, r.end, false);
        }
        for &(start, end) in reserved {
            let s = crate::align_down(start, PAGE_SIZE);
            let e = crate::align_up(end, PAGE_SIZE);
            a.set_range(s, e, true);
        }
        a.free = (0..frames).filter(|&i| !a.bit(i)).count();
        Ok(a)
    }

    pub fn free_frames(&self) -> usize {
        self.free
    }

    pub fn total_frames(&self) -> usize {
        self.frames
    }

    /// One frame.
    pub fn alloc(&mut self) -> Result<u64, FrameError> {
        self.alloc_contiguous(1, PAGE_SIZE)
    }

    /// `count` physically contiguous frames starting at a multiple of `align` (a power of
    /// two, at least a page).
    pub fn alloc_contiguous(&mut self, count: usize, align: u64) -> Result<u64, FrameError> {
        if count == 0 || count > self.free || !align.is_power_of_two() {
            return Err(FrameError::OutOfMemory);
        }
        let align = align.max(PAGE_SIZE);
        let start = if count == 1 { self.hint } else { 0 };
        let found = self
            .search(start, self.frames, count, align)
            .or_else(|| self.search(0, start.min(self.frames), count, align))
            .ok_or(FrameError::OutOfMemory)?;
        for i in found..found + count {
            self.set(i, true);
        }
        self.free -= count;
        if count == 1 {
            self.hint = found + 1;
        }
        Ok(self.base + found as u64 * PAGE_SIZE)
    }

    pub fn free(&mut self, addr: u64, count: usize) -> Result<(), FrameError> {
        if !addr.is_multiple_of(PAGE_SIZE) || addr < self.base {
            return Err(FrameError::BadFree(addr));
        }
        let first = ((addr - self.base) / PAGE_SIZE) as usize;
        if first.checked_add(count).is_none_or(|e| e > self.frames) {
            return Err(FrameError::BadFree(addr));
        }
        // Check the whole run before changing anything, so a bad free leaves no trace.
        if let Some(i) = (first..first + count).find(|&i| !self.bit(i)) {
            return Err(FrameError::BadFree(self.base + i as u64 * PAGE_SIZE));
        }
        for i in first..first + count {
            self.set(i, false);
        }
        self.free += count;
        self.hint = self.hint.min(first);
        Ok(())
    }

    fn search(&self, from: usize, to: usize, count: usize, align: u64) -> Option<usize> {
        let step = (align / PAGE_SIZE) as usize;
        // First index at or after `from` whose address is aligned.
        let misalign = ((self.base / PAGE_SIZE) as usize) % step;
        let mut i = from + (step - (from + misalign) % step) % step;
        while i + count <= to {
            // Skip a fully used word quickly.
            if count == 1 && i.is_multiple_of(64) && self.bitmap[i / 64] == !0 && step == 1 {
                i += 64;
                continue;
            }
            match (i..i + count).find(|&j| self.bit(j)) {
                None => return Some(i),
                Some(used) => {
                    let next = used + 1;
                    i = next + (step - (next + misalign) % step) % step;
                }
            }
        }
        None
    }

    fn bit(&self, i: usize) -> bool {
        self.bitmap[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, used: bool) {
        if used {
            self.bitmap[i / 64] |= 1 << (i % 64);
        } else {
            self.bitmap[i / 64] &= !(1 << (i % 64));
        }
    }

    fn set_range(&mut self, start: u64, end: u64, used: bool) {
        let lo = start.max(self.base);
        let hi = end.min(self.base + self.frames as u64 * PAGE_SIZE);
        if lo >= hi {
            return;
        }
        for i in ((lo - self.base) / PAGE_SIZE) as usize..((hi - self.base) / PAGE_SIZE) as usize {
            self.set(i, used);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use bulkhead_boot::memmap::{RawEntry, RegionKind};
    use std::vec;
    use std::vec::Vec;

    fn map(entries: &[(u64, u64, RegionKind)]) -> MemoryMap {
        let raw: Vec<RawEntry> = entries
            .iter()
            .map(|&(addr, size, kind)| RawEntry { addr, size, kind })
            .collect();
        MemoryMap::normalize(&raw).unwrap().map
    }

    fn simple() -> MemoryMap {
        map(&[
            (0, 0x9f000, RegionKind::Usable),
            (0x9f000, 0x61000, RegionKind::Reserved),
            (0x100000, 0x700000, RegionKind::Usable),
        ])
    }

    #[test]
    fn counts_only_usable_unreserved_frames() {
        let m = simple();
        let mut bits = vec![0u64; bitmap_words(&m)];
        let a = FrameAllocator::new(&m, &[(0, 0x100000), (0x100000, 0x180000)], &mut bits).unwrap();
        assert_eq!(a.free_frames(), (0x800000 - 0x180000) / 4096);
    }

    #[test]
    fn never_hands_out_reserved_or_hole_frames() {
        let m = map(&[
            (0x100000, 0x10000, RegionKind::Usable),
            (0x110000, 0x10000, RegionKind::Reserved),
            (0x140000, 0x10000, RegionKind::Usable),
        ]);
        let mut bits = vec![0u64; bitmap_words(&m)];
        let mut a = FrameAllocator::new(&m, &[(0x100000, 0x101800)], &mut bits).unwrap();
        let mut got = Vec::new();
        while let Ok(f) = a.alloc() {
            got.push(f);
        }
        assert_eq!(got.len(), 14 + 16);
        for f in &got {
            assert!(
                (0x102000..0x110000).contains(f) || (0x140000..0x150000).contains(f),
                "{f:#x}"
            );
        }
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 30, "a frame was handed out twice");
        assert_eq!(a.alloc(), Err(FrameError::OutOfMemory));
    }

    #[test]
    fn free_then_reuse() {
        let m = simple();
        let mut bits = vec![0u64; bitmap_words(&m)];
        let mut a = FrameAllocator::new(&m, &[], &mut bits).unwrap();
        let before = a.free_frames();
        let f = a.alloc().unwrap();
        assert_eq!(a.free_frames(), before - 1);
        a.free(f, 1).unwrap();
        assert_eq!(a.free_frames(), before);
        assert_eq!(a.alloc().unwrap(), f);
    }

    #[test]
    fn double_free_and_foreign_free_are_refused() {
        let m = simple();
        let mut bits = vec![0u64; bitmap_words(&m)];
        let mut a = FrameAllocator::new(&m, &[], &mut bits).unwrap();
        let f = a.alloc().unwrap();
        a.free(f, 1).unwrap();
        assert_eq!(a.free(f, 1), Err(FrameError::BadFree(f)));
        assert_eq!(a.free(0x123, 1), Err(FrameError::BadFree(0x123)));
        assert_eq!(
            a.free(0x4000_0000, 1),
            Err(FrameError::BadFree(0x4000_0000))
        );
        // A run whose tail is free is refused whole.
        let g = a.alloc_contiguous(2, 4096).unwrap();
        let free_now = a.free_frames();
        assert!(a.free(g, 3).is_err());
        assert_eq!(a.free_frames(), free_now);
    }

    #[test]
    fn contiguous_aligned_runs() {
        let m = simple();
        let mut bits = vec![0u64; bitmap_words(&m)];
        let mut a = FrameAllocator::new(&m, &[(0, 0x101000)], &mut bits).unwrap();
        let one = a.alloc().unwrap();
        let run = a.alloc_contiguous(16, 0x10000).unwrap();
        assert_eq!(run % 0x10000, 0);
        assert!(run + 16 * 4096 <= one || run > one);
        let big = a.alloc_contiguous(512, 0x200000).unwrap();
        assert_eq!(big % 0x200000, 0);
        // The run is really reserved: single allocations never land inside it.
        for _ in 0..200 {
            let f = a.alloc().unwrap();
            assert!(!(run..run + 0x10000).contains(&f));
            assert!(!(big..big + 0x200000).contains(&f));
        }
        a.free(big, 512).unwrap();
        assert_eq!(a.alloc_contiguous(512, 0x200000).unwrap(), big);
    }

    #[test]
    fn impossible_requests() {
        let m = simple();
        let mut bits = vec![0u64; bitmap_words(&m)];
        let mut a = FrameAllocator::new(&m, &[], &mut bits).unwrap();
        assert_eq!(a.alloc_contiguous(0, 4096), Err(FrameError::OutOfMemory));
        assert_eq!(
            a.alloc_contiguous(1 << 20, 4096),
            Err(FrameError::OutOfMemory)
        );
        assert_eq!(a.alloc_contiguous(1, 3000), Err(FrameError::OutOfMemory));
    }

    #[test]
    fn small_bitmap_is_refused() {
        let m = simple();
        let mut bits = vec![0u64; 1];
        assert!(matches!(
            FrameAllocator::new(&m, &[], &mut bits),
            Err(FrameError::BitmapTooSmall { .. })
        ));
    }

    #[test]
    fn base_not_zero_and_alignment() {
        let m = map(&[(0x103000, 0x400000, RegionKind::Usable)]);
        let mut bits = vec![0u64; bitmap_words(&m)];
        let mut a = FrameAllocator::new(&m, &[], &mut bits).unwrap();
        let r = a.alloc_contiguous(4, 0x8000).unwrap();
        assert_eq!(r % 0x8000, 0);
        assert!(r >= 0x103000);
    }
}
