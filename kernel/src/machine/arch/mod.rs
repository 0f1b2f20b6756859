//! x86-64 specifics: CPU features, descriptor tables, interrupts, the local APIC, legacy
//! timers used for calibration, and port I/O.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod interrupts;
pub mod ioapic;
pub mod mtrr;
pub mod pit;
pub mod vectors;

use x86_64::instructions::port::Port;

/// Write a byte to an I/O port.
///
/// Port I/O has no memory-safety effect on the kernel itself; what a write does to a
/// device is the caller's business, which is why this wrapper is safe.
pub fn outb(port: u16, v: u8) {
    // SAFETY: port writes cannot violate Rust memory safety; devices at these ports are
    // legacy ISA devices (UART, PIT, PIC, debug ports) that do not DMA.
    unsafe { Port::new(port).write(v) }
}

pub fn inb(port: u16) -> u8 {
    // SAFETY: as for `outb`.
    unsafe { Port::new(port).read() }
}

/// Write `bytes` to one port with `rep outsb`: under a hypervisor one exit (or one
/// request to the device model) for all of them, where `outb` takes one per byte.
pub fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: reads exactly `bytes` (rsi/rcx from the slice) and writes them to a port,
    // which has no memory-safety effect (as for `outb`); the direction flag is clear
    // as the ABI guarantees.
    unsafe {
        core::arch::asm!(
            "rep outsb",
            in("dx") port,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(nostack, preserves_flags, readonly)
        )
    }
}

pub fn outw(port: u16, v: u16) {
    // SAFETY: as for `outb`.
    unsafe { Port::new(port).write(v) }
}

pub fn outl(port: u16, v: u32) {
    // SAFETY: as for `outb`.
    unsafe { Port::new(port).write(v) }
}

pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Open an interrupt window of one instruction: whatever is pending is delivered here,
/// then interrupts are off again (see `KernelIdle` in main.rs).
pub fn take_interrupts() {
    // SAFETY: sti; nop; cli only toggles IF around one instruction; the handlers that run
    // in that window save and restore everything they touch. No memory is assumed
    // unchanged across it (no `nomem`): handlers write the signals tasks read.
    unsafe { core::arch::asm!("sti", "nop", "cli") }
}

/// Stop this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
