//! Memory-map normalisation.
//!
//! Loaders hand over E820-style lists that may be unsorted, overlapping, contain empty or
//! wrapping entries, or describe RAM in pieces. The kernel wants a sorted, disjoint list in
//! which usable RAM is page-aligned, so the frame allocator never hands out a frame that
//! any entry calls reserved.

pub const PAGE_SIZE: u64 = 4096;
/// Regions kept after normalisation.
pub const MAX_REGIONS: usize = 64;

/// What a range of physical memory is. Ordered by precedence: where entries overlap the
/// higher kind wins, so RAM never hides a reserved range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RegionKind {
    Usable,
    AcpiReclaimable,
    AcpiNvs,
    Reserved,
    Unusable,
}

impl RegionKind {
    /// E820 / `XEN_HVM_MEMMAP_TYPE_*` / multiboot type numbers (they agree for 1-5).
    pub fn from_e820(t: u32) -> Self {
        match t {
            1 => RegionKind::Usable,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Unusable,
            _ => RegionKind::Reserved,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RegionKind::Usable => "usable",
            RegionKind::AcpiReclaimable => "acpi",
            RegionKind::AcpiNvs => "acpi-nvs",
            RegionKind::Reserved => "reserved",
            RegionKind::Unusable => "unusable",
        }
    }
}

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub kind: RegionKind,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// A raw entry as the loader gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: RegionKind,
}

/// Sorted, disjoint regions; usable ones page-aligned and non-empty.
#[derive(Clone, Debug, Default)]
pub struct MemoryMap {
    regions: heapless::Vec<Region, MAX_REGIONS>,
}

/// The result of normalising: the map and how many entries overlapped another.
#[derive(Clone, Debug)]
pub struct Normalized {
    pub map: MemoryMap,
    pub overlaps: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    Empty,
    NoUsable,
    TooManyRegions,
}

impl MemoryMap {
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub fn usable(&self) -> impl Iterator<Item = &Region> + '_ {
        self.regions.iter().filter(|r| r.kind == RegionKind::Usable)
    }

    pub fn usable_bytes(&self) -> u64 {
        self.usable().map(Region::len).sum()
    }

    /// Highest end address of usable RAM.
    pub fn usable_end(&self) -> u64 {
        self.usable().map(|r| r.end).max().unwrap_or(0)
    }

    /// The lowest `align`-aligned range of `bytes` above everything the map lists below
    /// `below`, and ending at or under it: address space with nothing behind it (no RAM,
    /// nothing reserved, and under where firmware puts PCI memory), where a Xen domain
    /// maps foreign pages without giving up RAM of its own. None if it does not fit.
    pub fn free_window(&self, bytes: u64, align: u64, below: u64) -> Option<u64> {
        if bytes == 0 || !align.is_power_of_two() {
            return None;
        }
        let top = self
            .regions
            .iter()
            .filter(|r| r.start < below)
            .map(|r| r.end)
            .max()
            .unwrap_or(0);
        let start = top.checked_add(align - 1)? & !(align - 1);
        (start.checked_add(bytes)? <= below).then_some(start)
    }

    /// Lowest start address of usable RAM.
    pub fn usable_start(&self) -> u64 {
        self.usable().map(|r| r.start).min().unwrap_or(0)
    }

    /// Build from raw entries.
    ///
    /// Every boundary of every entry splits the address space into elementary intervals;
    /// each interval takes the highest-precedence kind of the entries covering it, and
    /// neighbours of equal kind merge. Quadratic, which is fine for the few dozen entries
    /// a firmware gives and bounded by [`crate::MAX_RAW_ENTRIES`].
    pub fn normalize(raw: &[RawEntry]) -> Result<Normalized, MapError> {
        let mut bounds = heapless::Vec::<u64, { 2 * crate::MAX_RAW_ENTRIES }>::new();
        let mut live = 0usize;
        for e in raw.iter().take(crate::MAX_RAW_ENTRIES) {
            if e.size == 0 {
                continue;
            }
            live += 1;
            // An entry that wraps past the top of the address space is cut there.
            let end = e.addr.saturating_add(e.size);
            let _ = bounds.push(e.addr);
            let _ = bounds.push(end);
        }
        if live == 0 {
            return Err(MapError::Empty);
        }
        bounds.sort_unstable();
        let mut overlaps = 0;
        for (i, a) in raw.iter().enumerate() {
            if a.size == 0 {
                continue;
            }
            let a_end = a.addr.saturating_add(a.size);
            if raw[..i]
                .iter()
                .filter(|b| b.size != 0)
                .any(|b| b.addr < a_end && a.addr < b.addr.saturating_add(b.size))
            {
                overlaps += 1;
            }
        }

        let mut map = MemoryMap::default();
        for w in bounds.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            if lo == hi {
                continue;
            }
            let kind = raw
                .iter()
                .filter(|e| e.size != 0 && e.addr <= lo && hi <= e.addr.saturating_add(e.size))
                .map(|e| e.kind)
                .max();
            let Some(kind) = kind else { continue }; // a hole
            map.push_merged(Region {
                start: lo,
                end: hi,
                kind,
            })?;
        }

        // Usable RAM shrinks inwards to whole pages; what is cut off is simply not used.
        let mut out = MemoryMap::default();
        for r in map.regions.iter() {
            let mut r = *r;
            if r.kind == RegionKind::Usable {
                r.start = align_up(r.start);
                r.end &= !(PAGE_SIZE - 1);
                if r.is_empty() {
                    continue;
                }
            }
            out.regions.push(r).map_err(|_| MapError::TooManyRegions)?;
        }
        if out.usable().next().is_none() {
            return Err(MapError::NoUsable);
        }
        Ok(Normalized { map: out, overlaps })
    }

    fn push_merged(&mut self, r: Region) -> Result<(), MapError> {
        if let Some(last) = self.regions.last_mut() {
            if last.kind == r.kind && last.end == r.start {
                last.end = r.end;
                return Ok(());
            }
        }
        self.regions.push(r).map_err(|_| MapError::TooManyRegions)
    }
}

fn align_up(x: u64) -> u64 {
    match x.checked_add(PAGE_SIZE - 1) {
        Some(v) => v & !(PAGE_SIZE - 1),
        None => !(PAGE_SIZE - 1),
    }
}

impl From<MapError> for crate::BootError {
    fn from(e: MapError) -> Self {
        match e {
            MapError::Empty => crate::BootError::EmptyMemoryMap,
            MapError::NoUsable => crate::BootError::NoUsableMemory,
            MapError::TooManyRegions => crate::BootError::MemoryMapTooLarge(MAX_REGIONS + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegionKind::*;

    fn e(addr: u64, size: u64, kind: RegionKind) -> RawEntry {
        RawEntry { addr, size, kind }
    }
    fn r(start: u64, end: u64, kind: RegionKind) -> Region {
        Region { start, end, kind }
    }

    #[test]
    fn free_window_lies_above_everything_below_the_pci_hole() {
        // An HVM driver domain's map (hvmloader's): RAM, a few reserved bits, the
        // reserved top of the 4 GiB space.
        let raw = [
            e(0, 0x9f000, Usable),
            e(0x9f000, 0x1000, Reserved),
            e(0xe0000, 0x20000, Reserved),
            e(0x100000, 0x1f00000, Usable),
            e(0x1fff000, 0x1000, AcpiNvs),
            e(0xfc000000, 0x4000000, Reserved),
        ];
        let m = MemoryMap::normalize(&raw).unwrap().map;
        let mib = 1 << 20;
        assert_eq!(
            m.free_window(32 * mib, 2 * mib, 0x8000_0000),
            Some(32 * mib)
        );
        // Too big for the space under the limit: none (the caller falls back).
        assert_eq!(m.free_window(0x8000_0000, 2 * mib, 0x8000_0000), None);
        assert_eq!(
            m.free_window(0x8000_0000 - 32 * mib, 2 * mib, 0x8000_0000),
            Some(32 * mib)
        );
        // A region high up but under the limit pushes the window above it.
        let raw2 = [
            e(0x100000, 0x1f00000, Usable),
            e(0x4000_0000, 0x1000, Reserved),
        ];
        let m2 = MemoryMap::normalize(&raw2).unwrap().map;
        assert_eq!(m2.free_window(mib, 2 * mib, 0x8000_0000), Some(0x4020_0000));
        assert_eq!(m2.free_window(0, 2 * mib, 0x8000_0000), None);
        assert_eq!(m2.free_window(mib, 3, 0x8000_0000), None);
    }

    #[test]
    fn typical_qemu_map() {
        let raw = [
            e(0, 0x9fc00, Usable),
            e(0x9fc00, 0x400, Reserved),
            e(0xf0000, 0x10000, Reserved),
            e(0x100000, 0x1ee0000, Usable),
            e(0x1fe0000, 0x20000, Reserved),
            e(0xfffc0000, 0x40000, Reserved),
        ];
        let n = MemoryMap::normalize(&raw).unwrap();
        assert_eq!(n.overlaps, 0);
        assert_eq!(
            n.map.regions(),
            &[
                r(0, 0x9f000, Usable),
                r(0x9fc00, 0xa0000, Reserved),
                r(0xf0000, 0x100000, Reserved),
                r(0x100000, 0x1fe0000, Usable),
                r(0x1fe0000, 0x2000000, Reserved),
                r(0xfffc0000, 0x100000000, Reserved),
            ]
        );
        assert_eq!(n.map.usable_bytes(), 0x9f000 + 0x1ee0000);
        assert_eq!(n.map.usable_end(), 0x1fe0000);
    }

    #[test]
    fn unsorted_and_adjacent_ram_merges() {
        let raw = [e(0x200000, 0x100000, Usable), e(0x100000, 0x100000, Usable)];
        let n = MemoryMap::normalize(&raw).unwrap();
        assert_eq!(n.map.regions(), &[r(0x100000, 0x300000, Usable)]);
    }

    #[test]
    fn reserved_wins_over_overlapping_ram() {
        let raw = [e(0x100000, 0x400000, Usable), e(0x200000, 0x1000, Reserved)];
        let n = MemoryMap::normalize(&raw).unwrap();
        assert_eq!(n.overlaps, 1);
        assert_eq!(
            n.map.regions(),
            &[
                r(0x100000, 0x200000, Usable),
                r(0x200000, 0x201000, Reserved),
                r(0x201000, 0x500000, Usable),
            ]
        );
    }

    #[test]
    fn overlap_given_in_either_order_is_the_same() {
        let a = [e(0x1000, 0x5000, Usable), e(0x3000, 0x4000, AcpiNvs)];
        let b = [a[1], a[0]];
        let na = MemoryMap::normalize(&a).unwrap();
        let nb = MemoryMap::normalize(&b).unwrap();
        assert_eq!(na.map.regions(), nb.map.regions());
        assert_eq!(
            na.map.regions(),
            &[r(0x1000, 0x3000, Usable), r(0x3000, 0x7000, AcpiNvs)]
        );
    }

    #[test]
    fn duplicate_entries_count_as_overlap_and_merge() {
        let raw = [e(0x100000, 0x100000, Usable), e(0x100000, 0x100000, Usable)];
        let n = MemoryMap::normalize(&raw).unwrap();
        assert_eq!(n.overlaps, 1);
        assert_eq!(n.map.regions(), &[r(0x100000, 0x200000, Usable)]);
    }

    #[test]
    fn unaligned_ram_shrinks_to_pages() {
        let raw = [e(0x1234, 0x3000, Usable)];
        let n = MemoryMap::normalize(&raw).unwrap();
        assert_eq!(n.map.regions(), &[r(0x2000, 0x4000, Usable)]);
    }

    #[test]
    fn empty_map_is_an_error() {
        assert_eq!(MemoryMap::normalize(&[]).unwrap_err(), MapError::Empty);
        assert_eq!(
            MemoryMap::normalize(&[e(0x1000, 0, Usable)]).unwrap_err(),
            MapError::Empty
        );
    }

    #[test]
    fn map_without_ram_is_an_error() {
        let raw = [e(0, 0x100000, Reserved), e(0x100000, 0x800, Usable)];
        assert_eq!(MemoryMap::normalize(&raw).unwrap_err(), MapError::NoUsable);
    }

    #[test]
    fn ram_entirely_covered_by_reserved_is_not_usable() {
        let raw = [e(0x100000, 0x100000, Usable), e(0, 0x1000000, Reserved)];
        assert_eq!(MemoryMap::normalize(&raw).unwrap_err(), MapError::NoUsable);
    }

    #[test]
    fn wrapping_entry_is_clipped() {
        let raw = [
            e(0x100000, 0x100000, Usable),
            e(0xffff_ffff_ffff_f000, 0x10000, Reserved),
        ];
        let n = MemoryMap::normalize(&raw).unwrap();
        assert_eq!(
            n.map.regions()[1],
            r(0xffff_ffff_ffff_f000, u64::MAX, Reserved)
        );
    }

    #[test]
    fn unknown_types_are_reserved() {
        assert_eq!(RegionKind::from_e820(7), Reserved);
        assert_eq!(RegionKind::from_e820(0), Reserved);
        assert_eq!(RegionKind::from_e820(1), Usable);
    }

    #[test]
    fn holes_are_kept_out() {
        let raw = [e(0x1000, 0x1000, Usable), e(0x10000, 0x1000, Usable)];
        let n = MemoryMap::normalize(&raw).unwrap();
        assert_eq!(
            n.map.regions(),
            &[r(0x1000, 0x2000, Usable), r(0x10000, 0x11000, Usable)]
        );
    }
}
