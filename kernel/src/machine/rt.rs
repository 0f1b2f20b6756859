//! What the precompiled `core`/`alloc` expect from a C runtime, and the panic handler.
//!
//! memcpy/memmove/memset use `rep movsb`/`rep stosb` in assembly so the compiler can never
//! turn their bodies back into calls to themselves.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

/// # Safety
/// C semantics: `n` bytes readable at `src`, writable at `dst`, no overlap.
///
/// Eight bytes per step (`rep movsq`), then the rest (`rep movsb`): an emulator without
/// fast string moves (QEMU's TCG runs `rep` one element per step) copies eight times
/// faster so, and hardware with fast `rep movsb` loses nothing that matters.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller upholds memcpy's contract; DF is clear (the ABI guarantees it).
    // movsq moves n/8 quadwords and leaves rdi/rsi just past them, where movsb goes on
    // with the n%8 bytes left.
    unsafe {
        core::arch::asm!("rep movsq", "mov rcx, {rest}", "rep movsb",
            rest = in(reg) n % 8,
            inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n / 8 => _,
            options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// C semantics: `n` bytes readable at `src`, writable at `dst`; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // Forward copy is safe when dst is below src or the ranges do not overlap.
        // SAFETY: the caller upholds the contract.
        unsafe { memcpy(dst, src, n) }
    } else {
        // SAFETY: copy backwards from the last byte with DF set, restoring DF after.
        unsafe {
            core::arch::asm!("std", "rep movsb", "cld",
                inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _, inout("rcx") n => _,
                options(nostack));
        }
        dst
    }
}

/// # Safety
/// C semantics: `n` bytes writable at `dst`.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // Eight bytes per step, as memcpy.
    let fill = (c as u8 as u64) * 0x0101_0101_0101_0101;
    // SAFETY: the caller upholds the contract; stosq stores n/8 quadwords, stosb the
    // n%8 bytes after them (al is fill's low byte, c).
    unsafe {
        core::arch::asm!("rep stosq", "mov rcx, {rest}", "rep stosb",
            rest = in(reg) n % 8,
            inout("rdi") dst => _, inout("rcx") n / 8 => _, in("rax") fill,
            options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// C semantics: `n` bytes readable at both pointers.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees n readable bytes; volatile reads keep
        // the compiler from recognising this loop as a call to memcmp/bcmp itself.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// As `memcmp`.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the precompiled liballoc's unwinding paths; with panic=abort it is never
/// reached.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::arch::halt_forever()
}

#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

static PANICKING: AtomicBool = AtomicBool::new(false);

/// How a panic is reported and the domain stopped: set once at boot by the kernel (its
/// console and its way of leaving are above the machine). Told whether this is a panic
/// while reporting a panic.
pub type PanicReport = fn(&PanicInfo, bool) -> !;
static ON_PANIC: spin::Once<PanicReport> = spin::Once::new();

pub fn on_panic(report: PanicReport) {
    ON_PANIC.call_once(|| report);
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    let nested = PANICKING.swap(true, Ordering::SeqCst);
    match ON_PANIC.get() {
        Some(report) => report(info, nested),
        // Before the console exists there is nobody to tell.
        None => crate::machine::arch::halt_forever(),
    }
}
