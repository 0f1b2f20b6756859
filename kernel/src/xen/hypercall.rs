//! Hypercall transport: Xen writes a page of 32-byte stubs (vmcall/vmmcall) into the page
//! whose physical address we give it through the MSR from CPUID; hypercall `n` is a call
//! to `hypercall_page + 32 * n` with arguments in rdi, rsi, rdx, r10, r8.

use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::registers::model_specific::Msr;

core::arch::global_asm!(
    ".section .hypercall_page, \"ax\"",
    ".balign 4096",
    ".global hypercall_page",
    "hypercall_page:",
    // Until Xen fills it, a call traps (int3) instead of running garbage.
    ".fill 4096, 1, 0xcc",
    ".previous",
);

extern "C" {
    static hypercall_page: u8;
}

const HYPERVISOR_SCHED_OP: u64 = 29;
const HYPERVISOR_EVENT_CHANNEL_OP: u64 = 32;
const HYPERVISOR_HVM_OP: u64 = 34;
const SCHEDOP_SHUTDOWN: u64 = 2;
const EVTCHNOP_SEND: u64 = 4;
const HVMOP_GET_PARAM: u64 = 1;

static READY: AtomicBool = AtomicBool::new(false);

/// A negative errno from Xen, or "no hypercall page yet".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallError {
    NotReady,
    Errno(i64),
}

pub fn install(msr: u32) {
    let page = core::ptr::addr_of!(hypercall_page) as u64;
    // SAFETY: writing the hypercall MSR makes Xen overwrite our reserved, page-aligned
    // .hypercall_page (identity-mapped, so virtual = physical) and nothing else.
    unsafe { Msr::new(msr).write(page) };
    READY.store(true, Ordering::Release);
}

/// # Safety
/// Pointer arguments must point at live memory laid out as Xen expects for `nr`/`cmd`.
unsafe fn hypercall3(nr: u64, a1: u64, a2: u64, a3: u64) -> Result<i64, HypercallError> {
    if !READY.load(Ordering::Acquire) {
        return Err(HypercallError::NotReady);
    }
    let entry = core::ptr::addr_of!(hypercall_page) as u64 + nr * 32;
    let ret: i64;
    // SAFETY: `entry` is a Xen-written stub; the caller guarantees the arguments. Xen may
    // clobber the argument registers (debug builds do, on purpose), and the stub clobbers
    // rcx/r11 on some paths. No `nostack`: `call` pushes a return address, which is fine
    // because kernel code is built without a red zone.
    unsafe {
        core::arch::asm!(
            "call {entry}",
            entry = in(reg) entry,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            lateout("rax") ret,
            lateout("r10") _,
            lateout("r8") _,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    if ret < 0 {
        Err(HypercallError::Errno(ret))
    } else {
        Ok(ret)
    }
}

pub fn sched_shutdown(reason: u32) -> HypercallError {
    let arg = reason;
    // SAFETY: struct sched_shutdown { unsigned int reason; } lives on our stack.
    match unsafe { hypercall3(HYPERVISOR_SCHED_OP, SCHEDOP_SHUTDOWN, &arg as *const u32 as u64, 0) } {
        Ok(_) => HypercallError::Errno(0),
        Err(e) => e,
    }
}

/// struct xen_hvm_param { domid_t domid; uint32_t index; uint64_t value; }
#[repr(C)]
struct HvmParam {
    domid: u16,
    _pad: u16,
    index: u32,
    value: u64,
}

pub fn hvm_get_param(domid: u16, index: u32) -> Result<u64, HypercallError> {
    let mut p = HvmParam { domid, _pad: 0, index, value: 0 };
    // SAFETY: `p` is a live xen_hvm_param that Xen fills in.
    unsafe { hypercall3(HYPERVISOR_HVM_OP, HVMOP_GET_PARAM, &mut p as *mut HvmParam as u64, 0)? };
    Ok(p.value)
}

pub fn evtchn_send(port: u32) -> Result<(), HypercallError> {
    let arg = port;
    // SAFETY: struct evtchn_send { evtchn_port_t port; } on our stack.
    unsafe { hypercall3(HYPERVISOR_EVENT_CHANNEL_OP, EVTCHNOP_SEND, &arg as *const u32 as u64, 0)? };
    Ok(())
}
