//! PCI configuration space as the machine offers it: the legacy ports (0xcf8/0xcfc), the
//! memory-mapped ECAM windows, and firmware tables (ACPI) read through the identity map.
//! What to do with a device is `bulkhead_pci`'s and `crate::pci`'s.

use bulkhead_pci::mcfg::{Ecam, PhysRead};
use bulkhead_pci::{Bdf, ConfigSpace};

use super::arch::outl;

/// Legacy configuration mechanism #1 (256 bytes per function).
pub struct PortIo;

impl ConfigSpace for PortIo {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32 {
        if offset >= 256 {
            return 0xffff_ffff;
        }
        outl(0xcf8, addr(bdf, offset));
        // SAFETY: reading the configuration data port has no memory-safety effect.
        unsafe { x86_64::instructions::port::Port::<u32>::new(0xcfc).read() }
    }
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        if offset >= 256 {
            return;
        }
        outl(0xcf8, addr(bdf, offset));
        outl(0xcfc, value);
    }
    // Narrow writes go to the data port's matching byte lanes, leaving the register's
    // other bytes alone (Xen's passthrough model warns about, and drops, a write-back of
    // fields it does not emulate).
    fn write16(&mut self, bdf: Bdf, offset: u16, value: u16) {
        if offset >= 256 {
            return;
        }
        outl(0xcf8, addr(bdf, offset));
        crate::arch::outw(0xcfc + (offset & 2), value);
    }
    fn write8(&mut self, bdf: Bdf, offset: u16, value: u8) {
        if offset >= 256 {
            return;
        }
        outl(0xcf8, addr(bdf, offset));
        crate::arch::outb(0xcfc + (offset & 3), value);
    }
}

fn addr(bdf: Bdf, offset: u16) -> u32 {
    0x8000_0000
        | (bdf.bus as u32) << 16
        | (bdf.dev as u32) << 11
        | (bdf.func as u32) << 8
        | (offset as u32 & 0xfc)
}

/// Memory-mapped configuration (PCIe ECAM), one 1 MiB window per bus, mapped on first use.
pub struct EcamAccess {
    ecam: Ecam,
    mapped: [bool; 256],
}

impl EcamAccess {
    pub fn new(ecam: Ecam) -> Self {
        EcamAccess {
            ecam,
            mapped: [false; 256],
        }
    }

    fn window(&mut self, bdf: Bdf, offset: u16) -> Option<u64> {
        if bdf.bus < self.ecam.bus_start || bdf.bus > self.ecam.bus_end || offset >= 4096 {
            return None;
        }
        let bus_base = self.ecam.base + (((bdf.bus - self.ecam.bus_start) as u64) << 20);
        if !self.mapped[bdf.bus as usize] {
            crate::mem::map_mmio(bus_base, 1 << 20).ok()?;
            self.mapped[bdf.bus as usize] = true;
        }
        Some(bus_base + ((bdf.dev as u64) << 15 | (bdf.func as u64) << 12 | offset as u64))
    }
}

impl ConfigSpace for EcamAccess {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32 {
        match self.window(bdf, offset & !3) {
            // SAFETY: inside the ECAM window mapped uncached above.
            Some(a) => unsafe { core::ptr::read_volatile(a as *const u32) },
            None => 0xffff_ffff,
        }
    }
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        if let Some(a) = self.window(bdf, offset & !3) {
            // SAFETY: as for read32.
            unsafe { core::ptr::write_volatile(a as *mut u32, value) }
        }
    }
}

/// Firmware tables below 4 GiB, read through the identity map (mapped read-only on use).
pub struct Firmware;

impl PhysRead for Firmware {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = addr.checked_add(buf.len() as u64) else {
            return false;
        };
        if addr == 0 || end > 1 << 32 {
            return false;
        }
        if crate::mem::map_identity(addr, buf.len() as u64, bulkhead_mm::paging::Flags::empty())
            .is_err()
        {
            return false;
        }
        // SAFETY: the range was just mapped (or already was) and lies in firmware memory.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }
}
