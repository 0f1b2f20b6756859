//! The IDT, the Rust side of interrupt entry, and vector assignment.
//!
//! Exceptions are fatal: they print what happened (with the name of the guard page when a
//! stack overflowed into one) and go through the panic path, which shuts the domain down
//! as crashed. Vectors 32-255 dispatch to registered handlers. Handlers run with
//! interrupts disabled on the interrupt IST stack and must not allocate or take locks the
//! interrupted code could hold; they signal the event loop instead.

use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use spin::Once;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use bulkhead_executor::Signal;

use super::vectors::{DEVICE_VECTORS, FIRST_DEVICE_VECTOR, VECTOR_SELFTEST, VECTOR_SPURIOUS};
use super::{gdt, ioapic};

/// Register state saved by isr.S, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

#[repr(C, align(16))]
struct Idt([IdtEntry; 256]);

static IDT: Once<Idt> = Once::new();

/// Handlers for vectors 32-255, stored as `fn` addresses (0 = none).
static HANDLERS: [AtomicUsize; 224] = [const { AtomicUsize::new(0) }; 224];
/// Interrupts taken per vector class, for the self-test and status reports.
pub static COUNT: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

pub type Handler = fn(&mut InterruptFrame);

extern "C" {
    static isr_stubs: u8;
}

fn ist_for(vector: usize) -> u8 {
    match vector {
        2 => gdt::IST_NMI,
        8 => gdt::IST_DOUBLE_FAULT,
        18 => gdt::IST_MACHINE_CHECK,
        0..=31 => gdt::IST_EXCEPTION,
        // `int` in the self-test, at a point where the red zone is in use on purpose.
        v if v == VECTOR_SELFTEST as usize => gdt::IST_INTERRUPT,
        // Device, timer and Xen vectors arrive only where the kernel opens interrupts
        // (main.rs, KernelIdle): on the current stack, which may nest safely.
        _ => 0,
    }
}

pub fn init() {
    let idt = IDT.call_once(|| {
        let stubs = core::ptr::addr_of!(isr_stubs) as u64;
        let mut t = [IdtEntry {
            offset_low: 0,
            selector: 0,
            ist: 0,
            attributes: 0,
            offset_mid: 0,
            offset_high: 0,
            reserved: 0,
        }; 256];
        for (v, e) in t.iter_mut().enumerate() {
            let a = stubs + 16 * v as u64;
            *e = IdtEntry {
                offset_low: a as u16,
                selector: 0x08,
                ist: ist_for(v),
                attributes: 0x8e, // present, DPL 0, 64-bit interrupt gate (clears IF)
                offset_mid: (a >> 16) as u16,
                offset_high: (a >> 32) as u32,
                reserved: 0,
            };
        }
        Idt(t)
    });
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is in a static initialised once and never changed; every entry points
    // at a stub in isr.S with a valid code selector and IST slot.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

/// Vectors delivered without the local APIC's in-service bookkeeping, so without EOI.
static NO_EOI: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Install the handler for a vector >= 32.
pub fn register(vector: u8, handler: Handler) {
    assert!(vector >= 32, "vectors below 32 are exceptions");
    HANDLERS[vector as usize - 32].store(handler as usize, Ordering::Release);
}

/// Install the handler for a vector that is injected directly rather than through the
/// local APIC (Xen's event-channel callback vector): no EOI is written for it. An EOI
/// there would end some other interrupt's service early, and under Xen HVM every EOI is a
/// trap to the hypervisor.
pub fn register_without_eoi(vector: u8, handler: Handler) {
    NO_EOI[vector as usize / 64].fetch_or(1 << (vector % 64), Ordering::Release);
    register(vector, handler);
}

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack-segment fault",
    "general protection fault",
    "page fault",
    "reserved",
    "x87 floating-point error",
    "alignment check",
    "machine check",
    "SIMD floating-point error",
    "virtualization exception",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security exception",
    "reserved",
];

#[no_mangle]
extern "C" fn interrupt_dispatch(frame: &mut InterruptFrame) {
    let v = frame.vector as usize;
    COUNT[v & 0xff].fetch_add(1, Ordering::Relaxed);
    crate::machine::trace::record(crate::machine::trace::Event::Vector, v as u32, frame.rip);
    if v < 32 {
        exception(frame);
    }
    if v == VECTOR_SPURIOUS as usize {
        return; // no EOI for spurious interrupts (SDM 10.9)
    }
    let h = HANDLERS[(v & 0xff) - 32].load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `register` stores here, and only `Handler` function addresses.
        let f: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        f(frame);
    }
    if v != VECTOR_SELFTEST as usize
        && NO_EOI[v / 64].load(Ordering::Acquire) & (1 << (v % 64)) == 0
    {
        super::apic::eoi();
    }
}

fn exception(frame: &InterruptFrame) -> ! {
    let v = frame.vector as usize;
    let name = EXCEPTION_NAMES[v];
    if v == 14 {
        let addr = x86_64::registers::control::Cr2::read_raw();
        let what = if frame.error_code & 1 == 0 {
            "not present"
        } else {
            "protection violation"
        };
        let access = if frame.error_code & 16 != 0 {
            "instruction fetch"
        } else if frame.error_code & 2 != 0 {
            "write"
        } else {
            "read"
        };
        match crate::mem::guard_page_name(addr) {
            Some(stack) => panic!(
                "page fault: {access} of {addr:#x} ({what}) at rip {:#x}: hit the guard page below the {stack} stack (stack overflow)",
                frame.rip
            ),
            None => panic!(
                "page fault: {access} of {addr:#x} ({what}, error {:#x}) at rip {:#x}, rsp {:#x}",
                frame.error_code, frame.rip, frame.rsp
            ),
        }
    }
    panic!(
        "CPU exception {v} ({name}), error code {:#x}, at rip {:#x}, rsp {:#x}, rflags {:#x}",
        frame.error_code, frame.rip, frame.rsp, frame.rflags
    );
}

/// Each device vector's event-loop signal (the handler only raises it; the driver's task,
/// or its hook in the loop, does the work).
static DEVICE_SIGNALS: [Signal; DEVICE_VECTORS] = [const { Signal::new() }; DEVICE_VECTORS];
static NEXT_VECTOR: AtomicU8 = AtomicU8::new(0);

fn device_interrupt(f: &mut InterruptFrame) {
    // Level-triggered INTx: silence the pin until the driver has serviced the device.
    ioapic::mask_for_vector(f.vector as u8);
    let i = (f.vector as usize).wrapping_sub(FIRST_DEVICE_VECTOR as usize);
    if let Some(s) = DEVICE_SIGNALS.get(i) {
        s.raise();
    }
}

/// A fresh device vector and the signal it raises.
pub fn alloc_vector() -> Option<(u8, &'static Signal)> {
    let i = NEXT_VECTOR.fetch_add(1, Ordering::Relaxed) as usize;
    if i >= DEVICE_VECTORS {
        return None;
    }
    let v = FIRST_DEVICE_VECTOR + i as u8;
    register(v, device_interrupt);
    Some((v, &DEVICE_SIGNALS[i]))
}
