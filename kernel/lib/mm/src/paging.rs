//! x86-64 4-level page tables (Intel SDM vol. 3, 4.5), operated through [`TableMemory`] so
//! the walker never dereferences a raw pointer itself.
//!
//! Leaves are 4 KiB or 2 MiB pages. A 2 MiB page is split into 4 KiB pages when part of
//! it has to change (a guard page carved out of it, an MMIO window made uncached), so the
//! kernel can map RAM cheaply with large pages and still have 4 KiB granularity where it
//! matters. Intermediate entries are always present+writable+executable: the leaf decides.

use crate::{HUGE_PAGE_SIZE, PAGE_SIZE};
use bitflags::bitflags;

const PRESENT: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const GLOBAL_BIT: u64 = 1 << 8;
const NX: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const ENTRIES: usize = 512;

bitflags! {
    /// What a mapping allows. The absence of `EXECUTE` becomes the NX bit when the CPU
    /// supports it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Flags: u8 {
        const WRITE = 1 << 0;
        const EXECUTE = 1 << 1;
        /// Strong uncacheable (PCD|PWT with the default PAT): device registers.
        const UNCACHED = 1 << 2;
        const GLOBAL = 1 << 3;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    Size4K,
    Size2M,
}

impl PageSize {
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_SIZE,
            PageSize::Size2M => HUGE_PAGE_SIZE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    AlreadyMapped(u64),
    NotMapped(u64),
    OutOfMemory,
    Misaligned(u64),
    /// Not a canonical lower-half address (Bulkhead maps identity, below 2^47).
    BadAddress(u64),
}

/// What the caller must invalidate in the TLB after a change.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    None,
    Page(u64),
    /// A large page was split: its whole range may be cached under the old entry.
    All,
}

/// Access to page-table frames by physical address.
pub trait TableMemory {
    fn read(&self, table: u64, index: usize) -> u64;
    fn write(&mut self, table: u64, index: usize, value: u64);
    /// A zeroed frame for a new table, or `None` when memory is exhausted.
    fn alloc_table(&mut self) -> Option<u64>;
}

pub struct PageTables<M: TableMemory> {
    root: u64,
    mem: M,
    nx: bool,
}

const LOWER_HALF_END: u64 = 1 << 47;

impl<M: TableMemory> PageTables<M> {
    /// An empty hierarchy. `nx` says whether EFER.NXE is (or will be) set; without it bit
    /// 63 is reserved and must stay clear.
    pub fn new(mut mem: M, nx: bool) -> Result<Self, MapError> {
        let root = mem.alloc_table().ok_or(MapError::OutOfMemory)?;
        Ok(PageTables { root, mem, nx })
    }

    /// The value for CR3.
    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn memory(&mut self) -> &mut M {
        &mut self.mem
    }

    fn leaf_bits(&self, flags: Flags) -> u64 {
        let mut e = PRESENT;
        if flags.contains(Flags::WRITE) {
            e |= RW;
        }
        if flags.contains(Flags::UNCACHED) {
            e |= PCD | PWT;
        }
        if flags.contains(Flags::GLOBAL) {
            e |= GLOBAL_BIT;
        }
        if self.nx && !flags.contains(Flags::EXECUTE) {
            e |= NX;
        }
        e
    }

    fn flags_of(&self, e: u64) -> Flags {
        let mut f = Flags::empty();
        if e & RW != 0 {
            f |= Flags::WRITE;
        }
        if e & PCD != 0 {
            f |= Flags::UNCACHED;
        }
        if e & GLOBAL_BIT != 0 {
            f |= Flags::GLOBAL;
        }
        if e & NX == 0 {
            f |= Flags::EXECUTE;
        }
        f
    }

    fn index(virt: u64, level: u32) -> usize {
        ((virt >> (12 + 9 * (level - 1))) & 0x1ff) as usize
    }

    /// The table one level down from `table[index]`, creating it if `create`.
    fn next(&mut self, table: u64, index: usize, virt: u64, create: bool) -> Result<u64, MapError> {
        let e = self.mem.read(table, index);
        if e & PRESENT != 0 {
            if e & HUGE != 0 {
                return Err(MapError::AlreadyMapped(virt));
            }
            return Ok(e & ADDR_MASK);
        }
        if !create {
            return Err(MapError::NotMapped(virt));
        }
        let t = self.mem.alloc_table().ok_or(MapError::OutOfMemory)?;
        self.mem.write(table, index, t | PRESENT | RW);
        Ok(t)
    }

    fn check(virt: u64, phys: u64, size: PageSize) -> Result<(), MapError> {
        if virt >= LOWER_HALF_END {
            return Err(MapError::BadAddress(virt));
        }
        if !virt.is_multiple_of(size.bytes())
            || !phys.is_multiple_of(size.bytes())
            || phys & !ADDR_MASK & !0xfff != 0
        {
            return Err(MapError::Misaligned(virt));
        }
        Ok(())
    }

    /// Map one page. Mapping over an existing mapping is an error (unmap first).
    pub fn map(
        &mut self,
        virt: u64,
        phys: u64,
        size: PageSize,
        flags: Flags,
    ) -> Result<(), MapError> {
        Self::check(virt, phys, size)?;
        let pdpt = self.next(self.root, Self::index(virt, 4), virt, true)?;
        let pd = self.next(pdpt, Self::index(virt, 3), virt, true)?;
        let leaf = self.leaf_bits(flags) | phys;
        match size {
            PageSize::Size2M => {
                let i = Self::index(virt, 2);
                if self.mem.read(pd, i) & PRESENT != 0 {
                    return Err(MapError::AlreadyMapped(virt));
                }
                self.mem.write(pd, i, leaf | HUGE);
            }
            PageSize::Size4K => {
                let pt = self.next(pd, Self::index(virt, 2), virt, true)?;
                let i = Self::index(virt, 1);
                if self.mem.read(pt, i) & PRESENT != 0 {
                    return Err(MapError::AlreadyMapped(virt));
                }
                self.mem.write(pt, i, leaf);
            }
        }
        Ok(())
    }

    /// Map `[virt, virt+len)` to `[phys, ...)`, using 2 MiB pages wherever both addresses
    /// are aligned and a whole large page fits. `len` is rounded up to a page.
    pub fn map_range(
        &mut self,
        virt: u64,
        phys: u64,
        len: u64,
        flags: Flags,
    ) -> Result<(), MapError> {
        if !virt.is_multiple_of(PAGE_SIZE) || !phys.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned(virt));
        }
        let end = virt
            .checked_add(crate::align_up(len, PAGE_SIZE))
            .ok_or(MapError::BadAddress(virt))?;
        let (mut v, mut p) = (virt, phys);
        while v < end {
            let size = if v % HUGE_PAGE_SIZE == 0
                && p % HUGE_PAGE_SIZE == 0
                && end - v >= HUGE_PAGE_SIZE
            {
                PageSize::Size2M
            } else {
                PageSize::Size4K
            };
            self.map(v, p, size, flags)?;
            v += size.bytes();
            p += size.bytes();
        }
        Ok(())
    }

    /// Physical address, flags and page size backing `virt`.
    pub fn translate(&self, virt: u64) -> Option<(u64, Flags, PageSize)> {
        if virt >= LOWER_HALF_END {
            return None;
        }
        let mut table = self.root;
        for level in (2..=4).rev() {
            let e = self.mem.read(table, Self::index(virt, level));
            if e & PRESENT == 0 {
                return None;
            }
            if e & HUGE != 0 {
                if level != 2 {
                    return None; // 1 GiB pages are never created here
                }
                let phys = (e & ADDR_MASK & !(HUGE_PAGE_SIZE - 1)) + virt % HUGE_PAGE_SIZE;
                return Some((phys, self.flags_of(e), PageSize::Size2M));
            }
            table = e & ADDR_MASK;
        }
        let e = self.mem.read(table, Self::index(virt, 1));
        if e & PRESENT == 0 {
            return None;
        }
        Some((
            (e & ADDR_MASK) + virt % PAGE_SIZE,
            self.flags_of(e),
            PageSize::Size4K,
        ))
    }

    /// The page table for the 4 KiB page at `virt`, splitting a 2 MiB page if one covers it.
    fn pt_for(&mut self, virt: u64) -> Result<(u64, Flush), MapError> {
        if virt >= LOWER_HALF_END {
            return Err(MapError::BadAddress(virt));
        }
        let pdpt = self.next(self.root, Self::index(virt, 4), virt, false)?;
        let pd = self.next(pdpt, Self::index(virt, 3), virt, false)?;
        let i = Self::index(virt, 2);
        let e = self.mem.read(pd, i);
        if e & PRESENT == 0 {
            return Err(MapError::NotMapped(virt));
        }
        if e & HUGE == 0 {
            return Ok((e & ADDR_MASK, Flush::None));
        }
        let pt = self.mem.alloc_table().ok_or(MapError::OutOfMemory)?;
        let base = e & ADDR_MASK & !(HUGE_PAGE_SIZE - 1);
        let bits = e & !ADDR_MASK & !HUGE;
        for k in 0..ENTRIES {
            self.mem.write(pt, k, (base + k as u64 * PAGE_SIZE) | bits);
        }
        self.mem.write(pd, i, pt | PRESENT | RW);
        Ok((pt, Flush::All))
    }

    /// Remove the 4 KiB mapping at `virt` and return the frame it mapped.
    pub fn unmap(&mut self, virt: u64) -> Result<(u64, Flush), MapError> {
        if !virt.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned(virt));
        }
        let (pt, split) = self.pt_for(virt)?;
        let i = Self::index(virt, 1);
        let e = self.mem.read(pt, i);
        if e & PRESENT == 0 {
            return Err(MapError::NotMapped(virt));
        }
        self.mem.write(pt, i, 0);
        let flush = if split == Flush::All {
            Flush::All
        } else {
            Flush::Page(virt)
        };
        Ok((e & ADDR_MASK, flush))
    }

    /// Change the flags of the 4 KiB page at `virt`, keeping its frame.
    pub fn protect(&mut self, virt: u64, flags: Flags) -> Result<Flush, MapError> {
        if !virt.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned(virt));
        }
        let (pt, split) = self.pt_for(virt)?;
        let i = Self::index(virt, 1);
        let e = self.mem.read(pt, i);
        if e & PRESENT == 0 {
            return Err(MapError::NotMapped(virt));
        }
        let leaf = self.leaf_bits(flags);
        self.mem.write(pt, i, (e & ADDR_MASK) | leaf);
        Ok(if split == Flush::All {
            Flush::All
        } else {
            Flush::Page(virt)
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::HashMap;
    use std::vec;
    use std::vec::Vec;

    /// Page-table frames in a hash map; allocation hands out frames from a fake range and
    /// can be limited to test exhaustion.
    struct FakeMem {
        tables: HashMap<u64, Vec<u64>>,
        next: u64,
        limit: usize,
    }

    impl FakeMem {
        fn new() -> Self {
            FakeMem {
                tables: HashMap::new(),
                next: 0x7000_0000,
                limit: usize::MAX,
            }
        }
    }

    impl TableMemory for FakeMem {
        fn read(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write(&mut self, table: u64, index: usize, value: u64) {
            self.tables.get_mut(&table).unwrap()[index] = value;
        }
        fn alloc_table(&mut self) -> Option<u64> {
            if self.tables.len() >= self.limit {
                return None;
            }
            let t = self.next;
            self.next += PAGE_SIZE;
            self.tables.insert(t, vec![0; ENTRIES]);
            Some(t)
        }
    }

    const RW_NX: Flags = Flags::WRITE;

    #[test]
    fn map_and_translate_4k() {
        let mut pt = PageTables::new(FakeMem::new(), true).unwrap();
        pt.map(
            0x40_1000,
            0x9000,
            PageSize::Size4K,
            Flags::WRITE | Flags::EXECUTE,
        )
        .unwrap();
        assert_eq!(
            pt.translate(0x40_1234),
            Some((0x9234, Flags::WRITE | Flags::EXECUTE, PageSize::Size4K))
        );
        assert_eq!(pt.translate(0x40_2000), None);
        assert_eq!(pt.translate(0x40_0fff), None);
    }

    #[test]
    fn nx_bit_only_when_supported() {
        let mut with = PageTables::new(FakeMem::new(), true).unwrap();
        with.map(0x1000, 0x1000, PageSize::Size4K, Flags::empty())
            .unwrap();
        assert_eq!(with.translate(0x1000).unwrap().1, Flags::empty());
        let mut without = PageTables::new(FakeMem::new(), false).unwrap();
        without
            .map(0x1000, 0x1000, PageSize::Size4K, Flags::empty())
            .unwrap();
        // Without NX everything is executable, and bit 63 (reserved then) stays clear.
        assert_eq!(without.translate(0x1000).unwrap().1, Flags::EXECUTE);
        for t in without.mem.tables.values() {
            assert!(t.iter().all(|e| e & NX == 0));
        }
    }

    #[test]
    fn map_range_uses_large_pages_where_aligned() {
        let mut pt = PageTables::new(FakeMem::new(), true).unwrap();
        // 1 MiB .. 6 MiB: 4K pages up to 2 MiB, then two 2M pages, then 4K to the end.
        pt.map_range(0x10_0000, 0x10_0000, 0x50_0000, RW_NX)
            .unwrap();
        assert_eq!(pt.translate(0x10_0000).unwrap().2, PageSize::Size4K);
        assert_eq!(pt.translate(0x20_0000).unwrap().2, PageSize::Size2M);
        assert_eq!(
            pt.translate(0x3f_ffff).unwrap(),
            (0x3f_ffff, RW_NX, PageSize::Size2M)
        );
        assert_eq!(pt.translate(0x40_0000).unwrap().2, PageSize::Size2M);
        assert_eq!(pt.translate(0x5f_f000).unwrap().2, PageSize::Size2M);
        assert_eq!(pt.translate(0x60_0000), None);
        // Identity holds over the whole range.
        for a in (0x10_0000..0x60_0000u64).step_by(0x1_7000) {
            assert_eq!(pt.translate(a).unwrap().0, a);
        }
    }

    #[test]
    fn double_map_is_refused() {
        let mut pt = PageTables::new(FakeMem::new(), true).unwrap();
        pt.map(0x20_0000, 0x20_0000, PageSize::Size2M, RW_NX)
            .unwrap();
        assert_eq!(
            pt.map(0x20_1000, 0x5000, PageSize::Size4K, RW_NX),
            Err(MapError::AlreadyMapped(0x20_1000))
        );
        assert_eq!(
            pt.map(0x20_0000, 0x5000_0000, PageSize::Size2M, RW_NX),
            Err(MapError::AlreadyMapped(0x20_0000))
        );
        pt.map(0x1000, 0x1000, PageSize::Size4K, RW_NX).unwrap();
        assert_eq!(
            pt.map(0x1000, 0x2000, PageSize::Size4K, RW_NX),
            Err(MapError::AlreadyMapped(0x1000))
        );
        assert_eq!(
            pt.map(0, 0, PageSize::Size2M, RW_NX),
            Err(MapError::AlreadyMapped(0))
        );
    }

    #[test]
    fn unmap_splits_large_page_and_keeps_the_rest() {
        let mut pt = PageTables::new(FakeMem::new(), true).unwrap();
        pt.map(
            0x20_0000,
            0x20_0000,
            PageSize::Size2M,
            Flags::WRITE | Flags::EXECUTE,
        )
        .unwrap();
        let (frame, flush) = pt.unmap(0x20_5000).unwrap();
        assert_eq!(frame, 0x20_5000);
        assert_eq!(flush, Flush::All);
        assert_eq!(pt.translate(0x20_5000), None);
        assert_eq!(
            pt.translate(0x20_4fff),
            Some((0x20_4fff, Flags::WRITE | Flags::EXECUTE, PageSize::Size4K))
        );
        assert_eq!(pt.translate(0x20_6000).unwrap().0, 0x20_6000);
        assert_eq!(pt.translate(0x3f_f000).unwrap().0, 0x3f_f000);
        // Second unmap in the same (now split) range needs only one page flushed.
        assert_eq!(pt.unmap(0x20_6000).unwrap().1, Flush::Page(0x20_6000));
        assert_eq!(pt.unmap(0x20_6000), Err(MapError::NotMapped(0x20_6000)));
    }

    #[test]
    fn protect_changes_only_one_page() {
        let mut pt = PageTables::new(FakeMem::new(), true).unwrap();
        pt.map_range(0, 0, 0x40_0000, Flags::WRITE).unwrap();
        let _ = pt
            .protect(0xfee0_0000 % 0x40_0000, Flags::WRITE | Flags::UNCACHED)
            .unwrap();
        let a = 0xfee0_0000 % 0x40_0000;
        assert_eq!(pt.translate(a).unwrap().1, Flags::WRITE | Flags::UNCACHED);
        assert_eq!(pt.translate(a + 0x1000).unwrap().1, Flags::WRITE);
        assert_eq!(
            pt.protect(0x50_0000, Flags::WRITE),
            Err(MapError::NotMapped(0x50_0000))
        );
    }

    #[test]
    fn bad_addresses() {
        let mut pt = PageTables::new(FakeMem::new(), true).unwrap();
        assert_eq!(
            pt.map(0x1001, 0x1000, PageSize::Size4K, RW_NX),
            Err(MapError::Misaligned(0x1001))
        );
        assert_eq!(
            pt.map(0x1000, 0x1001, PageSize::Size4K, RW_NX),
            Err(MapError::Misaligned(0x1000))
        );
        assert_eq!(
            pt.map(0x1000, 0x1000, PageSize::Size2M, RW_NX),
            Err(MapError::Misaligned(0x1000))
        );
        assert_eq!(
            pt.map(1 << 47, 0, PageSize::Size4K, RW_NX),
            Err(MapError::BadAddress(1 << 47))
        );
        assert_eq!(pt.translate(u64::MAX), None);
        assert_eq!(pt.unmap(0x1234), Err(MapError::Misaligned(0x1234)));
        assert_eq!(pt.unmap(0x1000), Err(MapError::NotMapped(0x1000)));
    }

    #[test]
    fn out_of_table_memory_is_an_error() {
        let mut mem = FakeMem::new();
        mem.limit = 3; // root, pdpt, pd: no room for a page table
        let mut pt = PageTables::new(mem, true).unwrap();
        assert_eq!(
            pt.map(0x1000, 0x1000, PageSize::Size4K, RW_NX),
            Err(MapError::OutOfMemory)
        );
        // A large page needs no page table and still works.
        pt.map(0x20_0000, 0x20_0000, PageSize::Size2M, RW_NX)
            .unwrap();
        assert_eq!(pt.unmap(0x20_0000), Err(MapError::OutOfMemory));
        assert!(
            pt.translate(0x20_0000).is_some(),
            "a failed split must not lose the mapping"
        );
    }
}
