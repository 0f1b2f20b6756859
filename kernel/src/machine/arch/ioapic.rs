//! The I/O APIC (82093AA; at its architectural address 0xFEC00000, which QEMU and Xen's
//! HVM model both use), for devices that only have legacy INTx interrupts.
//!
//! INTx is level-triggered: the line stays asserted until the driver has dealt with the
//! device. The interrupt handler therefore masks the pin and only signals the event loop;
//! the driver unmasks it after reaping, so a still-asserted line fires again instead of
//! storming while the task has not run yet.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::vectors::FIRST_DEVICE_VECTOR;

const BASE: u64 = 0xfec0_0000;
const REG_VER: u32 = 0x01;
const MASKED: u32 = 1 << 16;
const LEVEL: u32 = 1 << 15;
const ACTIVE_LOW: u32 = 1 << 13;

static MAPPED: AtomicU64 = AtomicU64::new(0);
/// GSI per device vector 0x40..0x60 (0xff = not INTx).
static GSI_OF_VECTOR: [AtomicU8; 32] = [const { AtomicU8::new(0xff) }; 32];

fn base() -> Option<u64> {
    match MAPPED.load(Ordering::Acquire) {
        0 => {
            let b = crate::mem::map_mmio(BASE, 4096).ok()?;
            MAPPED.store(b, Ordering::Release);
            Some(b)
        }
        b => Some(b),
    }
}

fn read(b: u64, reg: u32) -> u32 {
    // SAFETY: the I/O APIC window is mapped uncached; IOREGSEL at +0, IOWIN at +0x10.
    unsafe {
        core::ptr::write_volatile(b as *mut u32, reg);
        core::ptr::read_volatile((b + 0x10) as *const u32)
    }
}

fn write(b: u64, reg: u32, v: u32) {
    // SAFETY: as for read.
    unsafe {
        core::ptr::write_volatile(b as *mut u32, reg);
        core::ptr::write_volatile((b + 0x10) as *mut u32, v);
    }
}

/// Number of redirection entries, or None without an I/O APIC (a Xen PVH domain).
pub fn pins() -> Option<u32> {
    let b = base()?;
    let v = read(b, REG_VER);
    if v == 0xffff_ffff {
        return None;
    }
    Some(((v >> 16) & 0xff) + 1)
}

/// Route `gsi` to `vector` on `apic_id`, level-triggered, active high (PCI INTx as QEMU's
/// ACPI tables describe it), unmasked.
pub fn route_intx(gsi: u8, vector: u8, apic_id: u8) -> Result<(), &'static str> {
    let n = pins().ok_or("no I/O APIC")?;
    if gsi as u32 >= n {
        return Err("interrupt line beyond the I/O APIC's pins");
    }
    let b = base().ok_or("no I/O APIC")?;
    let slot = vector
        .checked_sub(FIRST_DEVICE_VECTOR)
        .ok_or("not a device vector")? as usize;
    GSI_OF_VECTOR
        .get(slot)
        .ok_or("not a device vector")?
        .store(gsi, Ordering::Release);
    let reg = 0x10 + 2 * gsi as u32;
    write(b, reg + 1, (apic_id as u32) << 24);
    write(b, reg, vector as u32 | LEVEL);
    let _ = ACTIVE_LOW;
    Ok(())
}

fn set_mask(gsi: u8, masked: bool) {
    if let Some(b) = base() {
        let reg = 0x10 + 2 * gsi as u32;
        let v = read(b, reg);
        write(b, reg, if masked { v | MASKED } else { v & !MASKED });
    }
}

/// From the interrupt handler: mask the pin behind device vector `vector`, if it is INTx.
pub fn mask_for_vector(vector: u8) {
    let slot = (vector as usize).wrapping_sub(FIRST_DEVICE_VECTOR as usize);
    if let Some(g) = GSI_OF_VECTOR.get(slot) {
        let gsi = g.load(Ordering::Acquire);
        if gsi != 0xff {
            set_mask(gsi, true);
        }
    }
}

/// From the driver, after it has serviced the device.
pub fn unmask(gsi: u8) {
    set_mask(gsi, false);
}
