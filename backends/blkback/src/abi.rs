//! The blkif ABI, written from Xen's `public/io/blkif.h` and `public/io/ring.h`.
//!
//! Requests are decoded from bytes at explicit offsets rather than through `repr(C)`
//! structs: the same ring may carry the 64-bit or the 32-bit x86 layout (the frontend's
//! `protocol` node says which), and every field is read exactly once from a private copy.

pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 1;
pub const OP_WRITE_BARRIER: u8 = 2;
pub const OP_FLUSH_DISKCACHE: u8 = 3;
pub const OP_DISCARD: u8 = 5;
pub const OP_INDIRECT: u8 = 6;

pub const RSP_OKAY: i16 = 0;
pub const RSP_ERROR: i16 = -1;
pub const RSP_EOPNOTSUPP: i16 = -2;

/// Segments carried in a direct request.
pub const MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Indirect pages an indirect request may name.
pub const MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// `struct blkif_request_segment` is 8 bytes (gref, first, last, padding).
pub const SEGMENT_SIZE: usize = 8;
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = PAGE_SIZE / SEGMENT_SIZE;
pub const DISCARD_SECURE: u8 = 1;

pub const VDISK_CDROM: u32 = 0x1;
pub const VDISK_REMOVABLE: u32 = 0x2;
pub const VDISK_READONLY: u32 = 0x4;

pub const PAGE_SIZE: usize = 4096;
/// Sector-based ring quantities are in 512-byte units.
pub const SECTOR_SHIFT: u32 = 9;
pub const SECTORS_PER_PAGE: u8 = (PAGE_SIZE >> SECTOR_SHIFT) as u8;

/// The request/response layout a frontend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `x86_64-abi` (also what a frontend that writes no `protocol` node means here).
    X86_64,
    /// `x86_32-abi`: 64-bit fields are only 4-byte aligned, so everything after the
    /// handle moves up by 4.
    X86_32,
}

impl Protocol {
    /// The `protocol` node's value; absent means the backend's native ABI.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.map(|s| s.trim_end_matches('\0')) {
            None | Some("x86_64-abi") => Some(Protocol::X86_64),
            Some("x86_32-abi") => Some(Protocol::X86_32),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::X86_64 => "x86_64-abi",
            Protocol::X86_32 => "x86_32-abi",
        }
    }

    /// `sizeof(struct blkif_request)`.
    pub const fn request_size(self) -> usize {
        match self {
            Protocol::X86_64 => 24 + MAX_SEGMENTS_PER_REQUEST * SEGMENT_SIZE,
            Protocol::X86_32 => 20 + MAX_SEGMENTS_PER_REQUEST * SEGMENT_SIZE,
        }
    }

    /// `sizeof(struct blkif_response)`.
    pub const fn response_size(self) -> usize {
        match self {
            Protocol::X86_64 => 16,
            Protocol::X86_32 => 12,
        }
    }

    pub const fn layout(self) -> bulkhead_ring::Layout {
        bulkhead_ring::Layout {
            request: self.request_size(),
            response: self.response_size(),
        }
    }

    /// Offsets inside a request. `id` is the same in every request variant.
    pub const fn id_offset(self) -> usize {
        match self {
            Protocol::X86_64 => 8,
            Protocol::X86_32 => 4,
        }
    }

    /// `sector_number` of read/write/discard/indirect requests.
    pub const fn sector_offset(self) -> usize {
        self.id_offset() + 8
    }

    /// `seg[]` of a direct read/write request; `nr_sectors` of a discard.
    pub const fn segments_offset(self) -> usize {
        self.id_offset() + 16
    }

    /// `indirect_grefs[]` of an indirect request (after handle and padding).
    pub const fn indirect_grefs_offset(self) -> usize {
        self.id_offset() + 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_header() {
        assert_eq!(Protocol::X86_64.request_size(), 112);
        assert_eq!(Protocol::X86_32.request_size(), 108);
        assert_eq!(Protocol::X86_64.response_size(), 16);
        assert_eq!(Protocol::X86_32.response_size(), 12);
        // Offsets of blkif_request_indirect on x86_64: id 8, sector 16, handle 24,
        // grefs 28; on i386: id 4, sector 12, handle 20, grefs 24.
        assert_eq!(Protocol::X86_64.indirect_grefs_offset(), 28);
        assert_eq!(Protocol::X86_32.indirect_grefs_offset(), 24);
    }

    #[test]
    fn ring_sizes() {
        // One page: (4096 - 64) / 112 = 36 -> 32 entries, as Linux's BLK_RING_SIZE.
        assert_eq!(Protocol::X86_64.layout().entries(4096), 32);
        assert_eq!(Protocol::X86_32.layout().entries(4096), 32);
        assert_eq!(Protocol::X86_64.layout().entries(4096 * 4), 128);
    }

    #[test]
    fn protocol_names() {
        assert_eq!(Protocol::parse(None), Some(Protocol::X86_64));
        assert_eq!(Protocol::parse(Some("x86_32-abi")), Some(Protocol::X86_32));
        assert_eq!(Protocol::parse(Some("arm-abi")), None);
    }
}
