//! Hypercall transport: Xen writes a page of 32-byte stubs (vmcall/vmmcall) into the page
//! whose physical address we give it through the MSR from CPUID; hypercall `n` is a call
//! to `hypercall_page + 32 * n` with arguments in rdi, rsi, rdx, r10, r8.

use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::registers::model_specific::Msr;

use bulkhead_xen::Errno;

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

static READY: AtomicBool = AtomicBool::new(false);

/// Returned when a hypercall is attempted before the page exists (not under Xen).
pub const ENOSYS: Errno = Errno(-38);

/// Ask Xen to fill the hypercall page, through MSR `msr`.
///
/// # Safety
/// `msr` must be the hypercall MSR Xen's CPUID leaves named (`hv::XenInfo`, which
/// calls this): any other MSR is written with the page's address.
pub(in crate::machine) unsafe fn install(msr: u32) {
    let page = core::ptr::addr_of!(hypercall_page) as u64;
    // SAFETY: by the caller's promise `msr` is Xen's hypercall MSR: writing it makes
    // Xen overwrite our reserved, page-aligned .hypercall_page (identity-mapped, so
    // virtual = physical) and nothing else.
    unsafe { Msr::new(msr).write(page) };
    READY.store(true, Ordering::Release);
}

/// # Safety
/// Pointer arguments must point at live memory laid out as Xen expects for `nr` and its
/// sub-command, for the whole call.
pub unsafe fn call3(nr: u64, a1: u64, a2: u64, a3: u64) -> Result<i64, Errno> {
    if !READY.load(Ordering::Acquire) {
        return Err(ENOSYS);
    }
    let entry = core::ptr::addr_of!(hypercall_page) as u64 + nr * 32;
    crate::machine::trace::record(crate::machine::trace::Event::Hypercall, nr as u32, a1);
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
    crate::machine::trace::record(
        crate::machine::trace::Event::HypercallDone,
        nr as u32,
        ret as u64,
    );
    if ret < 0 {
        Err(Errno(ret))
    } else {
        Ok(ret)
    }
}

/// A hypercall whose second argument points at one `T`.
///
/// # Safety
/// `T` must be the `repr(C)` struct Xen expects for `nr` and `cmd` (see bulkhead_xen::abi),
/// including every pointer inside it.
pub unsafe fn op<T>(nr: u64, cmd: u64, arg: &mut T) -> Result<i64, Errno> {
    // SAFETY: `arg` is a live, exclusive `T`, of the layout the caller vouches for.
    unsafe { call3(nr, cmd, arg as *mut T as u64, 0) }
}

/// A hypercall on an array of `T` with a count (grant-table operations).
///
/// # Safety
/// As for [`op`], for each element.
pub unsafe fn op_array<T>(nr: u64, cmd: u64, args: &mut [T]) -> Result<i64, Errno> {
    // SAFETY: as for `op`, for `args.len()` consecutive elements.
    unsafe { call3(nr, cmd, args.as_mut_ptr() as u64, args.len() as u64) }
}
