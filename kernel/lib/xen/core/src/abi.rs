//! Xen ABI, written from Xen's public headers (xen.h, event_channel.h, grant_table.h,
//! memory.h, hvm/params.h, hvm/hvm_op.h). Layouts are `repr(C)` and sized by tests.

pub type DomId = u16;
pub type Port = u32;
pub type GrantRef = u32;

pub const DOMID_SELF: DomId = 0x7ff0;

// Hypercall numbers (xen.h).
pub const HYPERVISOR_MEMORY_OP: u64 = 12;
pub const HYPERVISOR_GRANT_TABLE_OP: u64 = 20;
pub const HYPERVISOR_SCHED_OP: u64 = 29;
pub const HYPERVISOR_EVENT_CHANNEL_OP: u64 = 32;
pub const HYPERVISOR_HVM_OP: u64 = 34;

// event_channel.h
pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
pub const EVTCHNOP_CLOSE: u64 = 3;
pub const EVTCHNOP_SEND: u64 = 4;
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
pub const EVTCHNOP_UNMASK: u64 = 9;
/// 2-level ABI on a 64-bit guest: 64 words of 64 bits.
pub const EVTCHN_2L_NR_PORTS: u32 = 4096;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnAllocUnbound {
    pub dom: DomId,
    pub remote_dom: DomId,
    pub port: Port,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: DomId,
    pub remote_port: Port,
    pub local_port: Port,
}

// grant_table.h
pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
pub const GNTTABOP_COPY: u64 = 5;
pub const GNTTABOP_QUERY_SIZE: u64 = 6;
/// `_GNTMAP_host_map` is bit 1 (bit 0 is device_map).
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
pub const GNTMAP_READONLY: u32 = 1 << 2;
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;
pub const GTF_PERMIT_ACCESS: u16 = 1;
pub const GTF_READONLY: u16 = 1 << 2;
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;
/// Entries 0-7 are reserved for the toolstack (console, xenstore).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// v1 entries per 4 KiB table frame.
pub const GNTTAB_ENTRIES_PER_FRAME: u32 = 512;

/// `struct grant_entry_v1`, 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: DomId,
    pub frame: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapGrantRef {
    pub host_addr: u64,
    pub flags: u32,
    pub gref: GrantRef,
    pub dom: DomId,
    pub status: i16,
    pub handle: u32,
    pub dev_bus_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
    pub status: i16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GrantCopyPtr {
    /// A grant reference when the GNTCOPY_*_GREF flag is set, otherwise a frame number.
    pub u: u64,
    pub domid: DomId,
    pub offset: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GrantCopy {
    pub source: GrantCopyPtr,
    pub dest: GrantCopyPtr,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabQuerySize {
    pub nr_frames: u32,
    pub max_nr_frames: u32,
    pub dom: DomId,
    pub status: i16,
}

/// `GNTST_general_error`.
pub const GNTST_GENERAL_ERROR: i16 = -1;

/// GNTST_* names for logs.
pub fn gntst_name(status: i16) -> &'static str {
    match status {
        0 => "okay",
        -1 => "general error",
        -2 => "bad domain",
        -3 => "bad grant reference",
        -4 => "bad handle",
        -5 => "bad virtual address",
        -6 => "bad device address",
        -7 => "no device space",
        -8 => "permission denied",
        -9 => "bad page",
        -10 => "bad copy argument",
        -11 => "address too big",
        -12 => "eagain",
        _ => "unknown status",
    }
}

// memory.h
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AddToPhysmap {
    pub domid: DomId,
    pub size: u16,
    pub space: u32,
    pub idx: u64,
    pub gpfn: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryReservation {
    /// Guest pointer to an array of frame numbers.
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: DomId,
}

// hvm/params.h, hvm/hvm_op.h
pub const HVMOP_SET_PARAM: u64 = 0;
pub const HVMOP_GET_PARAM: u64 = 1;
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
pub const HVM_PARAM_STORE_PFN: u32 = 1;
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// HVM_PARAM_CALLBACK_IRQ value type "vector" (bits 63:56 = 2).
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u64 = 2 << 56;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmParam {
    pub domid: DomId,
    pub index: u32,
    pub value: u64,
}

// shared_info layout (arch-x86/xen.h, xen.h) for a 64-bit guest.
/// `sizeof(struct vcpu_info)`.
pub const VCPU_INFO_SIZE: usize = 64;
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;
/// Offsets inside vcpu_info.
pub const VCPU_UPCALL_PENDING: usize = 0;
pub const VCPU_UPCALL_MASK: usize = 1;
pub const VCPU_PENDING_SEL: usize = 8;
/// `shared_info.evtchn_pending[64]` and `evtchn_mask[64]`.
pub const SHINFO_EVTCHN_PENDING: usize = VCPU_INFO_SIZE * XEN_LEGACY_MAX_VCPUS;
pub const SHINFO_EVTCHN_MASK: usize = SHINFO_EVTCHN_PENDING + 64 * 8;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_headers() {
        assert_eq!(size_of::<GrantEntryV1>(), 8);
        assert_eq!(size_of::<MapGrantRef>(), 32);
        assert_eq!(offset_of!(MapGrantRef, status), 18);
        assert_eq!(offset_of!(MapGrantRef, handle), 20);
        assert_eq!(offset_of!(MapGrantRef, dev_bus_addr), 24);
        assert_eq!(size_of::<UnmapGrantRef>(), 24);
        assert_eq!(offset_of!(UnmapGrantRef, status), 20);
        assert_eq!(size_of::<GrantCopy>(), 40);
        assert_eq!(offset_of!(GrantCopy, dest), 16);
        assert_eq!(offset_of!(GrantCopy, len), 32);
        assert_eq!(offset_of!(GrantCopy, status), 36);
        assert_eq!(size_of::<GnttabQuerySize>(), 12);
        assert_eq!(size_of::<AddToPhysmap>(), 24);
        assert_eq!(offset_of!(AddToPhysmap, gpfn), 16);
        assert_eq!(size_of::<MemoryReservation>(), 32);
        assert_eq!(offset_of!(MemoryReservation, domid), 24);
        assert_eq!(size_of::<HvmParam>(), 16);
        assert_eq!(offset_of!(HvmParam, index), 4);
        assert_eq!(size_of::<EvtchnAllocUnbound>(), 8);
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 12);
        assert_eq!(offset_of!(EvtchnBindInterdomain, local_port), 8);
        assert_eq!(SHINFO_EVTCHN_PENDING, 2048);
        assert_eq!(SHINFO_EVTCHN_MASK, 2560);
    }
}
