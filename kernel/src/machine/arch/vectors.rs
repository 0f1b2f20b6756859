//! The interrupt vector map: which vectors the local APIC timer, the devices, the
//! self-test and spurious interrupts use. Numbers only, so the APIC, the I/O APIC and
//! the dispatcher (`interrupts`, which hands device vectors out) all build on it.

pub const VECTOR_APIC_TIMER: u8 = 0x20;
/// Device interrupt vectors: `DEVICE_VECTORS` of them from here, each raising its own
/// event-loop signal (`interrupts::alloc_vector`).
pub const FIRST_DEVICE_VECTOR: u8 = 0x40;
pub const DEVICE_VECTORS: usize = 32;
/// Raised by `int` in the self-test to check state preservation across an interrupt.
pub const VECTOR_SELFTEST: u8 = 0x81;
pub const VECTOR_SPURIOUS: u8 = 0xff;
