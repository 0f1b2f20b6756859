//! Device interrupts: local APIC vectors handed out to drivers, each raising its own
//! event-loop signal (the handler only raises it; the driver's task does the work).

use core::sync::atomic::{AtomicU8, Ordering};

use bulkhead_executor::Signal;

use super::interrupts::{self, InterruptFrame};

// Device interrupt vectors 0x40..0x60, each with a signal for the event loop.
pub const FIRST_DEVICE_VECTOR: u8 = 0x40;
const DEVICE_VECTORS: usize = 32;
pub static DEVICE_SIGNALS: [Signal; DEVICE_VECTORS] = [const { Signal::new() }; DEVICE_VECTORS];
static NEXT_VECTOR: AtomicU8 = AtomicU8::new(0);

fn device_interrupt(f: &mut InterruptFrame) {
    // Level-triggered INTx: silence the pin until the driver has serviced the device.
    super::ioapic::mask_for_vector(f);
    let i = f.vector as usize - FIRST_DEVICE_VECTOR as usize;
    if let Some(s) = DEVICE_SIGNALS.get(i) {
        s.raise();
    }
}

/// A fresh vector and the signal it raises.
pub fn alloc_vector() -> Option<(u8, &'static Signal)> {
    let i = NEXT_VECTOR.fetch_add(1, Ordering::Relaxed) as usize;
    if i >= DEVICE_VECTORS {
        return None;
    }
    let v = FIRST_DEVICE_VECTOR + i as u8;
    interrupts::register(v, device_interrupt);
    Some((v, &DEVICE_SIGNALS[i]))
}
