//! Xen PVH start info (`xen/include/public/arch-x86/hvm/start_info.h`).
//!
//! Layout (all little-endian): magic u32 @0, version u32 @4, flags u32 @8, nr_modules u32
//! @12, modlist_paddr u64 @16, cmdline_paddr u64 @24, rsdp_paddr u64 @32; version 1 adds
//! memmap_paddr u64 @40, memmap_entries u32 @48. A memmap entry is addr u64, size u64,
//! type u32, reserved u32 (24 bytes).

use crate::memmap::{MemoryMap, RawEntry, RegionKind};
use crate::{read_cstr, BootError, BootInfo, PhysMem, Protocol, MAX_RAW_ENTRIES};

pub const START_INFO_MAGIC: u32 = 0x336e_c578;
const MEMMAP_ENTRY_SIZE: u64 = 24;

pub fn decode(info: u64, mem: &impl PhysMem) -> Result<BootInfo, BootError> {
    let magic = mem.read_u32(info)?;
    if magic != START_INFO_MAGIC {
        return Err(BootError::BadInfoMagic {
            expected: START_INFO_MAGIC,
            found: magic,
        });
    }
    let version = mem.read_u32(info + 4)?;
    // Version 0 has no memory map (it would have to come from XENMEM_memory_map); every
    // Xen and QEMU that can run Bulkhead gives version 1 or later, which only appends.
    if version == 0 {
        return Err(BootError::UnsupportedVersion(version));
    }
    let cmdline_paddr = mem.read_u64(info + 24)?;
    let rsdp = mem.read_u64(info + 32)?;
    let memmap_paddr = mem.read_u64(info + 40)?;
    let memmap_entries = mem.read_u32(info + 48)? as usize;
    if memmap_paddr == 0 || memmap_entries == 0 {
        return Err(BootError::NoMemoryMap);
    }
    if memmap_entries > MAX_RAW_ENTRIES {
        return Err(BootError::MemoryMapTooLarge(memmap_entries));
    }
    let mut raw = heapless::Vec::<RawEntry, MAX_RAW_ENTRIES>::new();
    for i in 0..memmap_entries as u64 {
        let at = memmap_paddr
            .checked_add(i * MEMMAP_ENTRY_SIZE)
            .ok_or(BootError::BadAddress(memmap_paddr))?;
        let addr = mem.read_u64(at)?;
        let size = mem.read_u64(at + 8)?;
        let kind = RegionKind::from_e820(mem.read_u32(at + 16)?);
        // Capacity was checked above.
        let _ = raw.push(RawEntry { addr, size, kind });
    }
    let n = MemoryMap::normalize(&raw)?;
    let cmdline = if cmdline_paddr == 0 {
        Default::default()
    } else {
        read_cstr(mem, cmdline_paddr)?
    };
    Ok(BootInfo {
        protocol: Protocol::Pvh,
        cmdline,
        memory: n.map,
        rsdp: (rsdp != 0).then_some(rsdp),
        raw_map_entries: memmap_entries,
        map_overlaps: n.overlaps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FlatMem;

    const INFO: u64 = 0x6000;
    const MAP: u64 = 0x6100;
    const CMD: u64 = 0x6400;

    fn good() -> FlatMem {
        let mut m = FlatMem::new(0x6000, 0x1000);
        m.put_u32(INFO, START_INFO_MAGIC);
        m.put_u32(INFO + 4, 1);
        m.put_u64(INFO + 24, CMD);
        m.put_u64(INFO + 32, 0xf_5a40);
        m.put_u64(INFO + 40, MAP);
        m.put_u32(INFO + 48, 3);
        let entries: [(u64, u64, u32); 3] = [
            (0, 0x9fc00, 1),
            (0x100000, 0x1f00000, 1),
            (0xfeff_8000, 0x8000, 2),
        ];
        for (i, (a, s, t)) in entries.iter().enumerate() {
            let at = MAP + 24 * i as u64;
            m.put_u64(at, *a);
            m.put_u64(at + 8, *s);
            m.put_u32(at + 16, *t);
        }
        m.put(CMD, b"loglevel=debug\0");
        m
    }

    #[test]
    fn decodes_start_info() {
        let b = decode(INFO, &good()).unwrap();
        assert_eq!(b.protocol, Protocol::Pvh);
        assert_eq!(b.cmdline.as_str(), "loglevel=debug");
        assert_eq!(b.rsdp, Some(0xf_5a40));
        assert_eq!(b.raw_map_entries, 3);
        assert_eq!(b.memory.regions().len(), 3);
        assert_eq!(b.memory.usable_bytes(), 0x9f000 + 0x1f00000);
    }

    #[test]
    fn wrong_magic() {
        let mut m = good();
        m.put_u32(INFO, 0x2bad_b002);
        assert_eq!(
            decode(INFO, &m).unwrap_err(),
            BootError::BadInfoMagic {
                expected: START_INFO_MAGIC,
                found: 0x2bad_b002
            }
        );
    }

    #[test]
    fn version_zero_is_refused() {
        let mut m = good();
        m.put_u32(INFO + 4, 0);
        assert_eq!(
            decode(INFO, &m).unwrap_err(),
            BootError::UnsupportedVersion(0)
        );
    }

    #[test]
    fn missing_map() {
        let mut m = good();
        m.put_u32(INFO + 48, 0);
        assert_eq!(decode(INFO, &m).unwrap_err(), BootError::NoMemoryMap);
    }

    #[test]
    fn oversized_map() {
        let mut m = good();
        m.put_u32(INFO + 48, 100_000);
        assert_eq!(
            decode(INFO, &m).unwrap_err(),
            BootError::MemoryMapTooLarge(100_000)
        );
    }

    #[test]
    fn map_pointing_outside_memory() {
        let mut m = good();
        m.put_u64(INFO + 40, 0x10_0000_0000);
        assert!(matches!(
            decode(INFO, &m).unwrap_err(),
            BootError::BadAddress(_)
        ));
    }

    #[test]
    fn info_outside_memory() {
        assert!(matches!(
            decode(0x100, &good()).unwrap_err(),
            BootError::BadAddress(0x100)
        ));
    }

    #[test]
    fn map_with_only_reserved_memory() {
        let mut m = good();
        m.put_u32(INFO + 48, 1);
        m.put_u32(MAP + 16, 2);
        assert_eq!(decode(INFO, &m).unwrap_err(), BootError::NoUsableMemory);
    }

    #[test]
    fn no_cmdline_is_empty() {
        let mut m = good();
        m.put_u64(INFO + 24, 0);
        assert_eq!(decode(INFO, &m).unwrap().cmdline.as_str(), "");
    }
}
