//! The real hypervisor behind `bulkhead_xen::Hypervisor`, plus the memory and HVM
//! operations the kernel needs during setup.

use bulkhead_xen::abi::{self, DomId, Port, DOMID_SELF};
use bulkhead_xen::{Errno, Hypervisor};

use spin::Once;

use super::arch::cpu::cpuid;
use super::hypercall::{op, op_array};

/// The hypercalls the rest of the kernel may make. Those that make Xen write our memory
/// where an argument says are checked here: a grant is mapped and unmapped only at a map
/// slot (`slots::is_slot`), and grant copies are refused (only the machine's
/// `GrantCopier` makes them, through [`grant_copy`], into buffers it checked hold every
/// piece).
pub struct Hv;

/// Invalid argument: an address that is not a map slot.
const EINVAL: Errno = Errno(-22);
/// Not permitted: a grant copy through the public hypervisor.
const EPERM: Errno = Errno(-1);

#[repr(C)]
struct PortArg {
    port: Port,
}

impl Hypervisor for Hv {
    fn evtchn_alloc_unbound(&mut self, remote: DomId) -> Result<Port, Errno> {
        let mut a = abi::EvtchnAllocUnbound {
            dom: DOMID_SELF,
            remote_dom: remote,
            port: 0,
        };
        // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
        // this hypercall and command, alive and exclusively ours for the call.
        unsafe {
            op(
                abi::HYPERVISOR_EVENT_CHANNEL_OP,
                abi::EVTCHNOP_ALLOC_UNBOUND,
                &mut a,
            )
        }?;
        Ok(a.port)
    }

    fn evtchn_bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, Errno> {
        let mut a = abi::EvtchnBindInterdomain {
            remote_dom: remote,
            remote_port,
            local_port: 0,
        };
        // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
        // this hypercall and command, alive and exclusively ours for the call.
        unsafe {
            op(
                abi::HYPERVISOR_EVENT_CHANNEL_OP,
                abi::EVTCHNOP_BIND_INTERDOMAIN,
                &mut a,
            )
        }?;
        Ok(a.local_port)
    }

    fn evtchn_send(&mut self, port: Port) -> Result<(), Errno> {
        SENDS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        SEND_CALLS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
        // this hypercall and command, alive and exclusively ours for the call.
        unsafe {
            op(
                abi::HYPERVISOR_EVENT_CHANNEL_OP,
                abi::EVTCHNOP_SEND,
                &mut PortArg { port },
            )
        }
        .map(|_| ())
    }

    fn evtchn_close(&mut self, port: Port) -> Result<(), Errno> {
        // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
        // this hypercall and command, alive and exclusively ours for the call.
        unsafe {
            op(
                abi::HYPERVISOR_EVENT_CHANNEL_OP,
                abi::EVTCHNOP_CLOSE,
                &mut PortArg { port },
            )
        }
        .map(|_| ())
    }

    fn evtchn_unmask(&mut self, port: Port) -> Result<(), Errno> {
        // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
        // this hypercall and command, alive and exclusively ours for the call.
        unsafe {
            op(
                abi::HYPERVISOR_EVENT_CHANNEL_OP,
                abi::EVTCHNOP_UNMASK,
                &mut PortArg { port },
            )
        }
        .map(|_| ())
    }

    fn grant_map(&mut self, ops: &mut [abi::MapGrantRef]) -> Result<(), Errno> {
        if !ops.iter().all(|o| super::slots::is_slot(o.host_addr)) {
            return Err(EINVAL);
        }
        // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
        // this hypercall and command, alive and exclusively ours for the call; every
        // address Xen maps a page at is a map slot (unpopulated address space or frames
        // given back to Xen), never memory a Rust object lives in.
        unsafe {
            op_array(
                abi::HYPERVISOR_GRANT_TABLE_OP,
                abi::GNTTABOP_MAP_GRANT_REF,
                ops,
            )
        }
        .map(|_| ())
    }

    fn grant_unmap(&mut self, ops: &mut [abi::UnmapGrantRef]) -> Result<(), Errno> {
        if !ops.iter().all(|o| super::slots::is_slot(o.host_addr)) {
            return Err(EINVAL);
        }
        // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
        // this hypercall and command, alive and exclusively ours for the call; it only
        // takes mappings out of map slots.
        unsafe {
            op_array(
                abi::HYPERVISOR_GRANT_TABLE_OP,
                abi::GNTTABOP_UNMAP_GRANT_REF,
                ops,
            )
        }
        .map(|_| ())
    }

    /// Refused: a copy writes any frame of ours its op names (see [`Hv`]).
    fn grant_copy(&mut self, _ops: &mut [abi::GrantCopy]) -> Result<(), Errno> {
        Err(EPERM)
    }
}

/// Grant copies, for `GrantCopier` only: every local frame and range an op names must be
/// memory the caller owns for the call (its copy buffers).
pub(in crate::machine) fn grant_copy(ops: &mut [abi::GrantCopy]) -> Result<(), Errno> {
    // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for this
    // hypercall and command, alive and exclusively ours for the call; the caller vouches
    // for the local ranges (GrantCopier's `fits`).
    unsafe { op_array(abi::HYPERVISOR_GRANT_TABLE_OP, abi::GNTTABOP_COPY, ops) }.map(|_| ())
}

/// Event-channel notifications sent so far, and the hypercalls they took (several go
/// in one multicall), for the state dump.
pub static SENDS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
pub static SEND_CALLS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// `__HYPERVISOR_multicall`.
const HYPERVISOR_MULTICALL: u64 = 13;

/// `struct multicall_entry` (64-bit): the hypercall, its result, its arguments.
#[repr(C)]
struct MulticallEntry {
    op: u64,
    result: i64,
    args: [u64; 6],
}

/// Set once Xen refused a multicall: notifications go one hypercall each from then on.
static NO_MULTICALL: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Run `head` (if any), then a notification of each of `ports`, in one multicall. The
/// entries with their results, or None when Xen refused the multicall: then none ran,
/// and from now on callers go one hypercall at a time.
///
/// # Safety
/// `head`'s arguments must be what Xen takes for its hypercall, pointing at memory that
/// is alive and the caller's for the call.
unsafe fn multicall_then_send(
    head: Option<MulticallEntry>,
    ports: &[Port],
) -> Option<alloc::vec::Vec<MulticallEntry>> {
    use core::sync::atomic::Ordering::Relaxed;
    if NO_MULTICALL.load(Relaxed) {
        return None;
    }
    let mut args: alloc::vec::Vec<PortArg> = ports.iter().map(|&port| PortArg { port }).collect();
    let mut calls: alloc::vec::Vec<MulticallEntry> = head.into_iter().collect();
    calls.extend(args.iter_mut().map(|a| MulticallEntry {
        op: abi::HYPERVISOR_EVENT_CHANNEL_OP,
        result: 0,
        args: [abi::EVTCHNOP_SEND, a as *mut PortArg as u64, 0, 0, 0, 0],
    }));
    // SAFETY: `calls` is an array of `multicall_entry` as Xen lays it out: `head` as the
    // caller vouches, the others each pointing at a live `PortArg` in `args`; both
    // outlive the call.
    let r = unsafe {
        super::hypercall::call3(
            HYPERVISOR_MULTICALL,
            calls.as_mut_ptr() as u64,
            calls.len() as u64,
            0,
        )
    };
    if r.is_err() {
        // Not offered (Xen before 4.16 refuses multicalls from HVM).
        NO_MULTICALL.store(true, Relaxed);
        return None;
    }
    SENDS.fetch_add(ports.len() as u64, Relaxed);
    SEND_CALLS.fetch_add(1, Relaxed);
    Some(calls)
}

/// `ports` sorted, each once.
fn each_once(ports: impl IntoIterator<Item = Port>) -> alloc::vec::Vec<Port> {
    let mut ports: alloc::vec::Vec<Port> = ports.into_iter().collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Notify every port in `ports` once (at most a handful: a queue's TX and RX ports,
/// the same port twice without split channels), in one hypercall when there are
/// several. A driver domain's hypercall costs about 130 us under nested TCG, as much as
/// copying 100 KiB, and a netback pass that moved packets both ways notifies both of
/// the guest's ports. Failures are ignored, as for one notification (the port is gone
/// with its guest).
pub fn evtchn_send_all(ports: impl IntoIterator<Item = Port>) {
    let ports = each_once(ports);
    // SAFETY: no entry of the caller's; the notifications' arguments are the callee's.
    if ports.len() > 1 && unsafe { multicall_then_send(None, &ports) }.is_some() {
        return;
    }
    for p in ports {
        let _ = Hv.evtchn_send(p);
    }
}

/// Grant copies, then notifications, in one multicall: one VM exit where a pass that
/// lays packets into other guests' buffers would take two (about 130 us each under
/// nested TCG). Xen runs a multicall's entries in order, so every copy is done before
/// any port is told. For `GrantCopier` only, as [`grant_copy`]. The copy's own error, if
/// any (the notifications are sent either way; their failures are ignored, as in
/// [`evtchn_send_all`]).
pub(in crate::machine) fn grant_copy_then_send(
    ops: &mut [abi::GrantCopy],
    ports: &[Port],
) -> Result<(), Errno> {
    let ports = each_once(ports.iter().copied());
    if !ports.is_empty() {
        let copy = MulticallEntry {
            op: abi::HYPERVISOR_GRANT_TABLE_OP,
            result: 0,
            args: [
                abi::GNTTABOP_COPY,
                ops.as_mut_ptr() as u64,
                ops.len() as u64,
                0,
                0,
                0,
            ],
        };
        // SAFETY: `copy` points at `ops`, grant-copy operations alive and exclusively
        // ours for the call, whose local ranges the caller vouches for (as for
        // `grant_copy`).
        if let Some(calls) = unsafe { multicall_then_send(Some(copy), &ports) } {
            return match calls[0].result {
                e if e < 0 => Err(Errno(e)),
                _ => Ok(()),
            };
        }
    }
    let r = grant_copy(ops);
    evtchn_send_all(ports);
    r
}

pub fn hvm_get_param(index: u32) -> Result<u64, Errno> {
    let mut p = abi::HvmParam {
        domid: DOMID_SELF,
        index,
        value: 0,
    };
    // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
    // this hypercall and command, alive and exclusively ours for the call.
    unsafe { op(abi::HYPERVISOR_HVM_OP, abi::HVMOP_GET_PARAM, &mut p) }?;
    Ok(p.value)
}

pub fn hvm_set_param(index: u32, value: u64) -> Result<(), Errno> {
    let mut p = abi::HvmParam {
        domid: DOMID_SELF,
        index,
        value,
    };
    // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
    // this hypercall and command, alive and exclusively ours for the call.
    unsafe { op(abi::HYPERVISOR_HVM_OP, abi::HVMOP_SET_PARAM, &mut p) }.map(|_| ())
}

/// Put a Xen-owned page (shared info, a grant-table frame) at our frame `gpfn`.
/// Only the machine's grant and shared-page setup may move frames under Xen.
pub(in crate::machine) fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<(), Errno> {
    let mut a = abi::AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space,
        idx,
        gpfn,
    };
    // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
    // this hypercall and command, alive and exclusively ours for the call.
    unsafe {
        op(
            abi::HYPERVISOR_MEMORY_OP,
            abi::XENMEM_ADD_TO_PHYSMAP,
            &mut a,
        )
    }
    .map(|_| ())
}

/// Give frames back to Xen (balloon out); returns how many Xen took.
pub(in crate::machine) fn decrease_reservation(gpfns: &mut [u64]) -> Result<usize, Errno> {
    let mut r = abi::MemoryReservation {
        extent_start: gpfns.as_mut_ptr() as u64,
        nr_extents: gpfns.len() as u64,
        extent_order: 0,
        mem_flags: 0,
        domid: DOMID_SELF,
    };
    // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
    // this hypercall and command, alive and exclusively ours for the call.
    unsafe {
        op(
            abi::HYPERVISOR_MEMORY_OP,
            abi::XENMEM_DECREASE_RESERVATION,
            &mut r,
        )
    }
    .map(|n| n as usize)
}

/// (frames in use, maximum frames) of our grant table.
pub fn gnttab_query_size() -> Result<(u32, u32), Errno> {
    let mut q = abi::GnttabQuerySize {
        dom: DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
    // this hypercall and command, alive and exclusively ours for the call.
    unsafe {
        op_array(
            abi::HYPERVISOR_GRANT_TABLE_OP,
            abi::GNTTABOP_QUERY_SIZE,
            core::slice::from_mut(&mut q),
        )
    }?;
    if q.status != 0 {
        return Err(Errno(q.status as i64));
    }
    Ok((q.nr_frames, q.max_nr_frames))
}

#[repr(C)]
struct SchedShutdown {
    reason: u32,
}

pub fn sched_shutdown(reason: u32) -> Errno {
    // SAFETY: the argument is the repr(C) layout (bulkhead_xen::abi) Xen takes for
    // this hypercall and command, alive and exclusively ours for the call.
    match unsafe { op(abi::HYPERVISOR_SCHED_OP, 2, &mut SchedShutdown { reason }) } {
        Ok(_) => Errno(0),
        Err(e) => e,
    }
}

// Xen's presence, by CPUID: the clock asks before any hypercall exists.
pub struct XenInfo {
    pub leaf_base: u32,
    pub major: u16,
    pub minor: u16,
    hypercall_msr: u32,
}

impl XenInfo {
    /// Ask Xen to fill the hypercall page. Must run before any hypercall.
    pub fn install_hypercalls(&self) {
        // SAFETY: hypercall_msr is the MSR Xen's own CPUID leaf named.
        unsafe { super::hypercall::install(self.hypercall_msr) }
    }
}

static INFO: Once<Option<XenInfo>> = Once::new();

/// Look for Xen's CPUID signature at the first 0x100-aligned leaf from 0x40000000 that
/// carries it (Viridian, if enabled, takes the first one).
pub fn detect() -> Option<&'static XenInfo> {
    INFO.call_once(|| {
        (0x4000_0000u32..0x4001_0000)
            .step_by(0x100)
            .find_map(|base| {
                let (max, b, c, d) = cpuid(base, 0);
                let is_xen = b.to_le_bytes() == *b"XenV"
                    && c.to_le_bytes() == *b"MMXe"
                    && d.to_le_bytes() == *b"nVMM";
                if !is_xen || max < base + 2 {
                    return None;
                }
                let (ver, ..) = cpuid(base + 1, 0);
                let (_pages, msr, ..) = cpuid(base + 2, 0);
                Some(XenInfo {
                    leaf_base: base,
                    major: (ver >> 16) as u16,
                    minor: ver as u16,
                    hypercall_msr: msr,
                })
            })
    })
    .as_ref()
}

/// Whether Xen was found. Never blocks (the panic path asks), unlike `detect` during its
/// first call.
pub fn present() -> bool {
    INFO.get().is_some_and(|i| i.is_some())
}

/// The guest TSC frequency Xen reports (leaf base+3, sub-leaf 0, ECX in kHz).
pub fn tsc_khz() -> Option<u64> {
    let x = detect()?;
    let (max, ..) = cpuid(x.leaf_base, 0);
    if max < x.leaf_base + 3 {
        return None;
    }
    let (_, _, khz, _) = cpuid(x.leaf_base + 3, 0);
    (khz != 0).then_some(khz as u64)
}

/// `SHUTDOWN_*` reasons (sched.h).
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum ShutdownReason {
    Poweroff = 0,
    Reboot = 1,
    Crash = 3,
}
