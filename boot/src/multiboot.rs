//! Multiboot v1 information structure, as QEMU's multiboot option ROM leaves it (bare
//! `qemu -kernel` and Xen HVM direct kernel boot).
//!
//! Layout: flags u32 @0; mem_lower/mem_upper @4/@8 (flag bit 0); cmdline u32 @16 (bit 2);
//! mmap_length u32 @44 and mmap_addr u32 @48 (bit 6). Each mmap entry is size u32 (not
//! counting itself), base u64, length u64, type u32; the next entry is at +size+4.

use crate::memmap::{MemoryMap, RawEntry, RegionKind};
use crate::{read_cstr, BootError, BootInfo, PhysMem, Protocol, MAX_RAW_ENTRIES};

/// `%eax` on entry from a multiboot v1 loader.
pub const LOADER_MAGIC: u32 = 0x2bad_b002;
pub const FLAG_MEM: u32 = 1 << 0;
pub const FLAG_CMDLINE: u32 = 1 << 2;
pub const FLAG_MMAP: u32 = 1 << 6;
/// Smallest entry that still holds base, length and type.
const MIN_ENTRY_SIZE: u32 = 20;

pub fn decode(magic: u32, info: u64, mem: &impl PhysMem) -> Result<BootInfo, BootError> {
    if magic != LOADER_MAGIC {
        return Err(BootError::BadLoaderMagic {
            expected: LOADER_MAGIC,
            found: magic,
        });
    }
    let flags = mem.read_u32(info)?;
    let mut raw = heapless::Vec::<RawEntry, MAX_RAW_ENTRIES>::new();
    if flags & FLAG_MMAP != 0 {
        let len = mem.read_u32(info + 44)? as u64;
        let addr = mem.read_u32(info + 48)? as u64;
        let end = addr + len;
        let mut at = addr;
        while at < end {
            let index = raw.len();
            let size = mem.read_u32(at)?;
            if size < MIN_ENTRY_SIZE || at + 4 + size as u64 > end {
                return Err(BootError::MalformedMemoryMap { entry: index });
            }
            let e = RawEntry {
                addr: mem.read_u64(at + 4)?,
                size: mem.read_u64(at + 12)?,
                kind: RegionKind::from_e820(mem.read_u32(at + 20)?),
            };
            raw.push(e)
                .map_err(|_| BootError::MemoryMapTooLarge(index + 1))?;
            at += 4 + size as u64;
        }
    } else if flags & FLAG_MEM != 0 {
        // The basic fields: KiB below 1 MiB and KiB above 1 MiB (up to the first hole).
        let lower = mem.read_u32(info + 4)? as u64 * 1024;
        let upper = mem.read_u32(info + 8)? as u64 * 1024;
        let _ = raw.push(RawEntry {
            addr: 0,
            size: lower,
            kind: RegionKind::Usable,
        });
        let _ = raw.push(RawEntry {
            addr: 0x10_0000,
            size: upper,
            kind: RegionKind::Usable,
        });
    } else {
        return Err(BootError::NoMemoryMap);
    }
    let n = MemoryMap::normalize(&raw)?;
    let cmdline = if flags & FLAG_CMDLINE != 0 {
        let full = read_cstr(mem, mem.read_u32(info + 16)? as u64)?;
        strip_image_path(&full)
    } else {
        Default::default()
    };
    Ok(BootInfo {
        protocol: Protocol::Multiboot,
        cmdline,
        memory: n.map,
        rsdp: None,
        raw_map_entries: raw.len(),
        map_overlaps: n.overlaps,
    })
}

/// QEMU (bare and as Xen's device model) passes "<kernel path> <options>"; only the
/// options are ours. A line that does not start with a path is kept whole.
fn strip_image_path(full: &str) -> heapless::String<{ crate::CMDLINE_MAX }> {
    let t = full.trim_start();
    let first = t.split(' ').next().unwrap_or("");
    let rest = if first.contains('/') || first.ends_with(".elf") {
        &t[first.len()..]
    } else {
        t
    };
    let mut out = heapless::String::new();
    // Never longer than the input, which already fit.
    let _ = out.push_str(rest.trim());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FlatMem;

    const INFO: u64 = 0x9000;
    const MMAP: u64 = 0x9100;
    const CMD: u64 = 0x9400;

    fn put_entry(m: &mut FlatMem, at: u64, size: u32, base: u64, len: u64, t: u32) -> u64 {
        m.put_u32(at, size);
        m.put_u64(at + 4, base);
        m.put_u64(at + 12, len);
        m.put_u32(at + 20, t);
        at + 4 + size as u64
    }

    fn good() -> FlatMem {
        let mut m = FlatMem::new(0x9000, 0x1000);
        m.put_u32(INFO, FLAG_MEM | FLAG_CMDLINE | FLAG_MMAP);
        m.put_u32(INFO + 4, 639);
        m.put_u32(INFO + 8, 31 * 1024);
        m.put_u32(INFO + 16, CMD as u32);
        let mut at = MMAP;
        at = put_entry(&mut m, at, 20, 0, 0x9fc00, 1);
        at = put_entry(&mut m, at, 20, 0x9fc00, 0x400, 2);
        at = put_entry(&mut m, at, 20, 0x100000, 0x1ee0000, 1);
        at = put_entry(&mut m, at, 20, 0xfffc0000, 0x40000, 2);
        m.put_u32(INFO + 44, (at - MMAP) as u32);
        m.put_u32(INFO + 48, MMAP as u32);
        m.put(CMD, b"build/bulkhead.elf loglevel=debug selftest\0");
        m
    }

    #[test]
    fn decodes_qemu_style_info() {
        let b = decode(LOADER_MAGIC, INFO, &good()).unwrap();
        assert_eq!(b.protocol, Protocol::Multiboot);
        assert_eq!(b.cmdline.as_str(), "loglevel=debug selftest");
        assert_eq!(b.raw_map_entries, 4);
        assert_eq!(b.memory.usable_bytes(), 0x9f000 + 0x1ee0000);
        assert_eq!(b.rsdp, None);
    }

    #[test]
    fn wrong_loader_magic() {
        assert_eq!(
            decode(0x1bad_b002, INFO, &good()).unwrap_err(),
            BootError::BadLoaderMagic {
                expected: LOADER_MAGIC,
                found: 0x1bad_b002
            }
        );
    }

    #[test]
    fn bigger_entries_are_skipped_by_their_size() {
        let mut m = good();
        let mut at = MMAP;
        at = put_entry(&mut m, at, 28, 0, 0x9fc00, 1);
        at = put_entry(&mut m, at, 20, 0x100000, 0x100000, 1);
        m.put_u32(INFO + 44, (at - MMAP) as u32);
        let b = decode(LOADER_MAGIC, INFO, &m).unwrap();
        assert_eq!(b.raw_map_entries, 2);
        assert_eq!(b.memory.usable_bytes(), 0x9f000 + 0x100000);
    }

    #[test]
    fn entry_size_too_small() {
        let mut m = good();
        m.put_u32(MMAP + 24, 4);
        assert_eq!(
            decode(LOADER_MAGIC, INFO, &m).unwrap_err(),
            BootError::MalformedMemoryMap { entry: 1 }
        );
    }

    #[test]
    fn entry_running_off_the_table() {
        let mut m = good();
        m.put_u32(INFO + 44, 30);
        assert_eq!(
            decode(LOADER_MAGIC, INFO, &m).unwrap_err(),
            BootError::MalformedMemoryMap { entry: 1 }
        );
    }

    #[test]
    fn falls_back_to_mem_fields() {
        let mut m = good();
        m.put_u32(INFO, FLAG_MEM);
        let b = decode(LOADER_MAGIC, INFO, &m).unwrap();
        assert_eq!(b.memory.usable_bytes(), 0x9f000 + 31 * 1024 * 1024);
        assert_eq!(b.cmdline.as_str(), "");
    }

    #[test]
    fn no_memory_information() {
        let mut m = good();
        m.put_u32(INFO, FLAG_CMDLINE);
        assert_eq!(
            decode(LOADER_MAGIC, INFO, &m).unwrap_err(),
            BootError::NoMemoryMap
        );
    }

    #[test]
    fn empty_mmap_is_an_error() {
        let mut m = good();
        m.put_u32(INFO + 44, 0);
        assert_eq!(
            decode(LOADER_MAGIC, INFO, &m).unwrap_err(),
            BootError::EmptyMemoryMap
        );
    }

    #[test]
    fn cmdline_without_path_is_kept() {
        assert_eq!(
            strip_image_path("selftest loglevel=info").as_str(),
            "selftest loglevel=info"
        );
        assert_eq!(strip_image_path("/usr/lib/bulkhead.elf").as_str(), "");
        assert_eq!(strip_image_path("  /k.elf  a=b ").as_str(), "a=b");
    }
}
