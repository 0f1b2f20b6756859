//! Boot protocols decoded into one `BootInfo`, whichever way Bulkhead was entered.
//!
//! Bulkhead is one image with two entries (see `entry.S`): the Xen PVH note, used by
//! `type="pvh"` domains and by QEMU when no multiboot header is found, and a multiboot v1
//! header, used by `type="hvm"` direct kernel boot and by bare `qemu -kernel`. Both leave a
//! structure in guest memory whose address arrives in `%ebx`. Everything here reads that
//! memory through [`PhysMem`], treats it as untrusted (a bad loader or a corrupted
//! structure must give a clear error, never a wild read), and copies what the kernel needs
//! into an owned [`BootInfo`], so the loader's memory can be reused afterwards.
#![no_std]
#![forbid(unsafe_code)]

pub mod fw_cfg;
pub mod memmap;
pub mod mtrr;
pub mod multiboot;
pub mod pvh;

use core::fmt;

pub use memmap::{MemoryMap, Region, RegionKind};

/// Longest command line kept; longer ones are an error rather than silently cut.
pub const CMDLINE_MAX: usize = 1024;
/// Most raw memory-map entries accepted from a loader.
pub const MAX_RAW_ENTRIES: usize = 128;

/// Which entry protocol started the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Xen PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`), `%ebx` = `hvm_start_info`.
    Pvh,
    /// Multiboot v1, `%eax` = 0x2BADB002, `%ebx` = multiboot info.
    Multiboot,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pvh => "pvh",
            Protocol::Multiboot => "multiboot",
        }
    }
}

/// What the kernel keeps from the loader.
#[derive(Clone, Debug)]
pub struct BootInfo {
    pub protocol: Protocol,
    /// Options for Bulkhead only (a multiboot loader's leading kernel path is removed).
    pub cmdline: heapless::String<CMDLINE_MAX>,
    pub memory: MemoryMap,
    /// ACPI RSDP physical address when the loader gave one (PVH).
    pub rsdp: Option<u64>,
    /// Number of entries the loader's map had before normalisation.
    pub raw_map_entries: usize,
    /// Entries that overlapped another one (resolved in favour of the non-RAM type).
    pub map_overlaps: usize,
}

/// Read access to physical memory as the loader left it.
pub trait PhysMem {
    /// Fill `buf` from physical address `addr`; an address the caller cannot reach is an error.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BootError>;

    fn read_u32(&self, addr: u64) -> Result<u32, BootError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_u64(&self, addr: u64) -> Result<u64, BootError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Why a loader's structure was refused. `Display` gives the console message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// The entry register did not hold the protocol's magic value.
    BadLoaderMagic {
        expected: u32,
        found: u32,
    },
    /// The info structure itself did not start with its magic value.
    BadInfoMagic {
        expected: u32,
        found: u32,
    },
    UnsupportedVersion(u32),
    /// The info structure or something it points to is outside reachable memory.
    BadAddress(u64),
    /// The loader gave no memory map.
    NoMemoryMap,
    MemoryMapTooLarge(usize),
    /// A memory-map entry is malformed (multiboot entry size too small, or runs off the table).
    MalformedMemoryMap {
        entry: usize,
    },
    /// The map, after dropping empty entries, has nothing in it.
    EmptyMemoryMap,
    /// No page-sized RAM region remains after overlaps and alignment are resolved.
    NoUsableMemory,
    /// The command line is longer than [`CMDLINE_MAX`] or has no terminator.
    CmdlineTooLong,
    /// The command line is not UTF-8.
    CmdlineNotUtf8,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootError::BadLoaderMagic { expected, found } => write!(
                f,
                "loader magic is {found:#010x}, expected {expected:#010x}: not started by a known boot protocol"
            ),
            BootError::BadInfoMagic { expected, found } => {
                write!(f, "boot info magic is {found:#010x}, expected {expected:#010x}")
            }
            BootError::UnsupportedVersion(v) => write!(f, "boot info version {v} is not supported"),
            BootError::BadAddress(a) => write!(f, "boot info points outside reachable memory ({a:#x})"),
            BootError::NoMemoryMap => write!(f, "the loader gave no memory map"),
            BootError::MemoryMapTooLarge(n) => {
                write!(f, "memory map has {n} entries, more than the {MAX_RAW_ENTRIES} accepted")
            }
            BootError::MalformedMemoryMap { entry } => write!(f, "memory map entry {entry} is malformed"),
            BootError::EmptyMemoryMap => write!(f, "memory map is empty"),
            BootError::NoUsableMemory => write!(f, "memory map has no usable RAM"),
            BootError::CmdlineTooLong => {
                write!(f, "command line longer than {CMDLINE_MAX} bytes or unterminated")
            }
            BootError::CmdlineNotUtf8 => write!(f, "command line is not UTF-8"),
        }
    }
}

/// Decode whatever the entry stub saw: `magic` is `%eax` for multiboot (PVH has none),
/// `info` is `%ebx`.
pub fn decode(
    protocol: Protocol,
    magic: u32,
    info: u64,
    mem: &impl PhysMem,
) -> Result<BootInfo, BootError> {
    match protocol {
        Protocol::Pvh => pvh::decode(info, mem),
        Protocol::Multiboot => multiboot::decode(magic, info, mem),
    }
}

/// Copy a NUL-terminated string from physical memory.
pub(crate) fn read_cstr(
    mem: &impl PhysMem,
    addr: u64,
) -> Result<heapless::String<CMDLINE_MAX>, BootError> {
    let mut bytes = heapless::Vec::<u8, CMDLINE_MAX>::new();
    let mut chunk = [0u8; 64];
    let mut at = addr;
    loop {
        // Read in chunks but never past what the string may occupy; a chunk that runs
        // into unreachable memory is retried byte by byte so a string near the end of
        // reachable memory still decodes.
        let n = chunk.len().min(CMDLINE_MAX + 1 - bytes.len());
        let got = match mem.read(at, &mut chunk[..n]) {
            Ok(()) => n,
            Err(_) => {
                mem.read(at, &mut chunk[..1])?;
                1
            }
        };
        for &b in &chunk[..got] {
            if b == 0 {
                let s = core::str::from_utf8(&bytes).map_err(|_| BootError::CmdlineNotUtf8)?;
                let mut out = heapless::String::new();
                out.push_str(s).map_err(|_| BootError::CmdlineTooLong)?;
                return Ok(out);
            }
            bytes.push(b).map_err(|_| BootError::CmdlineTooLong)?;
        }
        at = at
            .checked_add(got as u64)
            .ok_or(BootError::BadAddress(at))?;
    }
}

/// A fake physical memory for tests: a flat buffer starting at `base`.
#[cfg(test)]
pub(crate) mod fake {
    extern crate std;
    use super::{BootError, PhysMem};
    use std::vec::Vec;

    pub struct FlatMem {
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl FlatMem {
        pub fn new(base: u64, size: usize) -> Self {
            FlatMem {
                base,
                bytes: std::vec![0; size],
            }
        }
        pub fn put(&mut self, addr: u64, data: &[u8]) {
            let o = (addr - self.base) as usize;
            self.bytes[o..o + data.len()].copy_from_slice(data);
        }
        pub fn put_u32(&mut self, addr: u64, v: u32) {
            self.put(addr, &v.to_le_bytes())
        }
        pub fn put_u64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes())
        }
    }

    impl PhysMem for FlatMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), BootError> {
            let off = addr
                .checked_sub(self.base)
                .ok_or(BootError::BadAddress(addr))? as usize;
            let end = off
                .checked_add(buf.len())
                .ok_or(BootError::BadAddress(addr))?;
            if end > self.bytes.len() {
                return Err(BootError::BadAddress(addr));
            }
            buf.copy_from_slice(&self.bytes[off..end]);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FlatMem;
    use super::*;

    #[test]
    fn cstr_reads_up_to_nul() {
        let mut m = FlatMem::new(0x1000, 0x1000);
        m.put(0x1100, b"loglevel=debug selftest\0garbage");
        assert_eq!(
            read_cstr(&m, 0x1100).unwrap().as_str(),
            "loglevel=debug selftest"
        );
    }

    #[test]
    fn cstr_near_end_of_memory() {
        let mut m = FlatMem::new(0x1000, 0x100);
        m.put(0x10fc, b"ab\0");
        assert_eq!(read_cstr(&m, 0x10fc).unwrap().as_str(), "ab");
    }

    #[test]
    fn cstr_unterminated_at_end_of_memory_is_an_error() {
        let mut m = FlatMem::new(0x1000, 0x100);
        m.put(0x10fe, b"ab");
        assert_eq!(read_cstr(&m, 0x10fe), Err(BootError::BadAddress(0x1100)));
    }

    #[test]
    fn cstr_too_long() {
        let mut m = FlatMem::new(0, 0x2000);
        m.put(0, &[b'x'; CMDLINE_MAX + 5]);
        assert_eq!(read_cstr(&m, 0), Err(BootError::CmdlineTooLong));
        m.put(CMDLINE_MAX as u64, &[0]);
        assert_eq!(read_cstr(&m, 0).unwrap().len(), CMDLINE_MAX);
    }

    #[test]
    fn cstr_not_utf8() {
        let mut m = FlatMem::new(0, 0x100);
        m.put(0, &[0xff, 0xfe, 0]);
        assert_eq!(read_cstr(&m, 0), Err(BootError::CmdlineNotUtf8));
    }
}
