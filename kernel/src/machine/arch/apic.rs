//! Local APIC (xAPIC, memory-mapped; Intel SDM vol. 3, chapter 10): interrupt
//! acknowledgement and the one-shot timer that wakes the event loop. Xen HVM and PVH
//! domains emulate the same register interface.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use x86_64::registers::model_specific::Msr;

use super::vectors::{VECTOR_APIC_TIMER, VECTOR_SPURIOUS};

const IA32_APIC_BASE: u32 = 0x1b;
const REG_ID: usize = 0x20;
const REG_VERSION: usize = 0x30;
const REG_TPR: usize = 0x80;
const REG_EOI: usize = 0xb0;
const REG_SVR: usize = 0xf0;
const REG_LVT_TIMER: usize = 0x320;
const REG_LVT_ERROR: usize = 0x370;
const REG_TIMER_INIT: usize = 0x380;
const REG_TIMER_CURRENT: usize = 0x390;
const REG_TIMER_DIVIDE: usize = 0x3e0;
const LVT_MASKED: u32 = 1 << 16;
const DIVIDE_BY_1: u32 = 0b1011;

/// Virtual address of the register page; 0 until `init`.
static BASE: AtomicU64 = AtomicU64::new(0);
/// APIC timer ticks per millisecond (divide-by-1).
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);
/// The timer LVT holds the unmasked one-shot setting (arm_oneshot wrote it since the
/// last masking write).
static LVT_ONESHOT: AtomicBool = AtomicBool::new(false);

fn read(reg: usize) -> u32 {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: `base` maps the APIC register page uncached (set in `init`); `reg` is one
    // of the architectural register offsets inside that page.
    unsafe { core::ptr::read_volatile((base as usize + reg) as *const u32) }
}

fn write(reg: usize, v: u32) {
    let base = BASE.load(Ordering::Relaxed);
    // SAFETY: as for `read`.
    unsafe { core::ptr::write_volatile((base as usize + reg) as *mut u32, v) }
}

/// Mask the legacy 8259 PICs, map and software-enable the local APIC.
pub fn init() -> Result<(), crate::mem::MemError> {
    super::outb(0x21, 0xff);
    super::outb(0xa1, 0xff);
    let msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU with an APIC; setting the global
    // enable bit keeps the base address unchanged.
    let phys = unsafe {
        let mut m = msr;
        let v = m.read() | (1 << 11);
        m.write(v);
        v & 0x000f_ffff_ffff_f000
    };
    let virt = crate::mem::map_mmio(phys, 4096)?;
    BASE.store(virt, Ordering::Relaxed);
    write(REG_TPR, 0);
    write(REG_LVT_TIMER, LVT_MASKED | VECTOR_APIC_TIMER as u32);
    LVT_ONESHOT.store(false, Ordering::Relaxed);
    write(REG_LVT_ERROR, LVT_MASKED);
    write(REG_SVR, 0x100 | VECTOR_SPURIOUS as u32);
    write(REG_TIMER_DIVIDE, DIVIDE_BY_1);
    Ok(())
}

pub fn id() -> u32 {
    read(REG_ID) >> 24
}

pub fn version() -> u32 {
    read(REG_VERSION) & 0xff
}

pub fn eoi() {
    if BASE.load(Ordering::Relaxed) != 0 {
        write(REG_EOI, 0);
    }
}

/// Measure the timer against the TSC clock over `ms` milliseconds.
pub fn calibrate(ms: u64) -> u64 {
    write(REG_LVT_TIMER, LVT_MASKED | VECTOR_APIC_TIMER as u32);
    LVT_ONESHOT.store(false, Ordering::Relaxed);
    write(REG_TIMER_DIVIDE, DIVIDE_BY_1);
    write(REG_TIMER_INIT, u32::MAX);
    let start = crate::machine::time::now_ns();
    while crate::machine::time::now_ns() - start < ms * 1_000_000 {
        core::hint::spin_loop();
    }
    let elapsed = u32::MAX - read(REG_TIMER_CURRENT);
    write(REG_TIMER_INIT, 0);
    let per_ms = (elapsed as u64 / ms).max(1);
    TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
    per_ms
}

/// The longest delay `arm_oneshot` can hold without clamping.
pub fn max_oneshot_ns() -> u64 {
    let per_ms = TICKS_PER_MS.load(Ordering::Relaxed).max(1);
    (u32::MAX as u64 * 1_000_000 / per_ms).max(1)
}

/// Fire VECTOR_APIC_TIMER once, `ns` from now (clamped to what the counter can hold; the
/// event loop re-arms if it wakes early).
pub fn arm_oneshot(ns: u64) {
    let per_ms = TICKS_PER_MS.load(Ordering::Relaxed).max(1);
    let ticks = (ns as u128 * per_ms as u128 / 1_000_000).clamp(1, u32::MAX as u128) as u32;
    // The LVT stays one-shot and unmasked once set (a timer that fires does not change
    // it): writing it once saves a VM exit per idle halt under Xen.
    if !LVT_ONESHOT.swap(true, Ordering::Relaxed) {
        write(REG_LVT_TIMER, VECTOR_APIC_TIMER as u32);
    }
    write(REG_TIMER_INIT, ticks);
}
