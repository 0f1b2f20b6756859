//! What a device driver needs from the machine, as traits: device registers ([`Mmio`]),
//! memory the device reads and writes by physical address ([`Dma`]) and time ([`Clock`]).
//! The kernel implements them once (uncached BAR mappings, identity-mapped frames, the
//! TSC); each driver's tests implement them with a model of their device.
#![no_std]
#![forbid(unsafe_code)]

pub const PAGE_SIZE: usize = 4096;

/// Device registers (a memory BAR).
pub trait Mmio {
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);
    fn read64(&self, offset: usize) -> u64 {
        self.read32(offset) as u64 | (self.read32(offset + 4) as u64) << 32
    }
    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
    fn read16(&self, offset: usize) -> u16 {
        let w = self.read32(offset & !3);
        (w >> ((offset & 2) * 8)) as u16
    }
    fn read8(&self, offset: usize) -> u8 {
        let w = self.read32(offset & !3);
        (w >> ((offset & 3) * 8)) as u8
    }
    /// Sub-word writes; the default widens to a 32-bit read-modify-write, which devices
    /// whose registers have side effects on write must override.
    fn write16(&self, offset: usize, value: u16) {
        let shift = (offset & 2) * 8;
        let w = self.read32(offset & !3) & !(0xffff << shift);
        self.write32(offset & !3, w | (value as u32) << shift);
    }
    fn write8(&self, offset: usize, value: u8) {
        let shift = (offset & 3) * 8;
        let w = self.read32(offset & !3) & !(0xff << shift);
        self.write32(offset & !3, w | (value as u32) << shift);
    }
}

/// No DMA memory left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoMemory;

/// Memory the device reads and writes by physical address.
pub trait Dma {
    /// Zeroed, physically contiguous, page-aligned memory; returns its physical address.
    fn alloc(&mut self, bytes: usize) -> Result<u64, NoMemory>;
    fn free(&mut self, phys: u64, bytes: usize);
    fn read(&self, phys: u64, buf: &mut [u8]);
    fn write(&self, phys: u64, data: &[u8]);
    /// Order our writes to shared memory before the register write that publishes them,
    /// and the device's writes before our reads of what they describe.
    fn barrier(&self);
}

/// Time for bring-up and timeouts.
pub trait Clock {
    fn now_us(&self) -> u64;
    /// Wait a little (busy or yielding); used while polling a register.
    fn pause(&mut self, us: u64);
}
