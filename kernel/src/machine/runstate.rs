//! Xen's account of this vCPU's time: how long it ran, waited runnable for a physical CPU,
//! and was blocked (VCPUOP_register_runstate_memory_area). Xen rewrites the area at every
//! context switch of the vCPU, so reading it costs no VM exit. A rise of the "runnable"
//! total across a stretch of our own work is time Xen gave to other vCPUs instead: it
//! tells a stall of ours (a long poll, a lost wake-up) from one of the machine.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bulkhead_xen::Errno;

const HYPERVISOR_VCPU_OP: u64 = 24;
const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;

/// `struct vcpu_runstate_info`: state (an int, padded), the Xen system time it was
/// entered, and nanoseconds spent in each state (running, runnable, blocked, offline).
#[repr(C, align(64))]
struct Area {
    state: AtomicU64,
    entry_time: AtomicU64,
    time: [AtomicU64; 4],
}

static AREA: Area = Area {
    state: AtomicU64::new(0),
    entry_time: AtomicU64::new(0),
    time: [const { AtomicU64::new(0) }; 4],
};
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Ask Xen to keep vCPU 0's runstate in `AREA`.
pub fn register() -> Result<(), Errno> {
    // The area's address, as Xen reads it: a guest virtual address, equal to the
    // physical one here (identity map).
    let mut addr = &AREA as *const Area as u64;
    // SAFETY: the argument is `struct vcpu_register_runstate_memory_area` (one guest
    // address), alive for the call; the area it names is a static of the layout Xen
    // writes, made of atomics, so Xen's writes at any time race with nothing non-atomic.
    unsafe {
        super::hypercall::call3(
            HYPERVISOR_VCPU_OP,
            VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA,
            0,
            &mut addr as *mut u64 as u64,
        )
    }?;
    REGISTERED.store(true, Ordering::Release);
    Ok(())
}

/// Nanoseconds this vCPU has spent runnable but not running (steal), if registered.
pub fn runnable_ns() -> Option<u64> {
    time(1)
}

/// Nanoseconds this vCPU has spent running, as of its last switch in (the stretch it is
/// in now is not counted yet), if registered.
pub fn running_ns() -> Option<u64> {
    time(0)
}

/// One of the area's totals, read until two reads agree: Xen may be rewriting the area
/// as we read.
fn time(state: usize) -> Option<u64> {
    if !REGISTERED.load(Ordering::Acquire) {
        return None;
    }
    loop {
        let a = AREA.time[state].load(Ordering::Acquire);
        let e = AREA.entry_time.load(Ordering::Acquire);
        let b = AREA.time[state].load(Ordering::Acquire);
        if a == b && e == AREA.entry_time.load(Ordering::Acquire) {
            return Some(a);
        }
    }
}
