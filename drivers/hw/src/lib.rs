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

/// Stand-ins for device models in drivers' tests (feature `testing`): physical memory,
/// the [`Dma`] that reaches it through a model's shared state, and a clock that only
/// moves when the driver waits.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    extern crate alloc;

    use alloc::collections::BTreeMap;
    use alloc::rc::Rc;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    use super::{Clock, Dma, NoMemory, PAGE_SIZE};

    /// Physical memory by pages: unwritten memory reads as zeros.
    pub struct PhysMem {
        pages: BTreeMap<u64, Vec<u8>>,
        next: u64,
    }

    impl Default for PhysMem {
        fn default() -> PhysMem {
            PhysMem::new(0x10_0000)
        }
    }

    impl PhysMem {
        /// Allocations start at `base`.
        pub fn new(base: u64) -> PhysMem {
            PhysMem {
                pages: BTreeMap::new(),
                next: base,
            }
        }

        pub fn read(&self, addr: u64, out: &mut [u8]) {
            for (i, b) in out.iter_mut().enumerate() {
                let a = addr + i as u64;
                *b = self
                    .pages
                    .get(&(a & !(PAGE_SIZE as u64 - 1)))
                    .map_or(0, |p| p[a as usize % PAGE_SIZE]);
            }
        }

        pub fn write(&mut self, addr: u64, data: &[u8]) {
            for (i, b) in data.iter().enumerate() {
                let a = addr + i as u64;
                let p = self
                    .pages
                    .entry(a & !(PAGE_SIZE as u64 - 1))
                    .or_insert_with(|| vec![0; PAGE_SIZE]);
                p[a as usize % PAGE_SIZE] = *b;
            }
        }

        pub fn alloc(&mut self, bytes: usize) -> u64 {
            let base = self.next;
            let pages = bytes.div_ceil(PAGE_SIZE) as u64;
            self.next += pages * PAGE_SIZE as u64;
            for p in 0..pages {
                self.pages
                    .insert(base + p * PAGE_SIZE as u64, vec![0; PAGE_SIZE]);
            }
            base
        }

        pub fn free(&mut self, phys: u64, bytes: usize) {
            for p in 0..bytes.div_ceil(PAGE_SIZE) as u64 {
                self.pages.remove(&(phys + p * PAGE_SIZE as u64));
            }
        }
    }

    /// DMA into the memory a device model holds (its state shared with the test). The
    /// state names its memory with [`model_memory!`](crate::model_memory).
    pub struct ModelDma<S>(pub Rc<RefCell<S>>);

    /// `model_memory!(State, mem)`: a device model's state `State` keeps the physical
    /// memory its device reaches in its field `mem`, which [`ModelDma`] then reaches.
    #[macro_export]
    macro_rules! model_memory {
        ($state:ty, $field:ident) => {
            impl ::core::convert::AsRef<$crate::testing::PhysMem> for $state {
                fn as_ref(&self) -> &$crate::testing::PhysMem {
                    &self.$field
                }
            }
            impl ::core::convert::AsMut<$crate::testing::PhysMem> for $state {
                fn as_mut(&mut self) -> &mut $crate::testing::PhysMem {
                    &mut self.$field
                }
            }
        };
    }

    impl<S: AsRef<PhysMem> + AsMut<PhysMem>> Dma for ModelDma<S> {
        fn alloc(&mut self, bytes: usize) -> Result<u64, NoMemory> {
            Ok(self.0.borrow_mut().as_mut().alloc(bytes))
        }
        fn free(&mut self, phys: u64, bytes: usize) {
            self.0.borrow_mut().as_mut().free(phys, bytes)
        }
        fn read(&self, phys: u64, buf: &mut [u8]) {
            self.0.borrow().as_ref().read(phys, buf)
        }
        fn write(&self, phys: u64, data: &[u8]) {
            self.0.borrow_mut().as_mut().write(phys, data)
        }
        fn barrier(&self) {}
    }

    /// Time that advances only when the driver pauses.
    #[derive(Default)]
    pub struct FakeClock(pub u64);

    impl Clock for FakeClock {
        fn now_us(&self) -> u64 {
            self.0
        }
        fn pause(&mut self, us: u64) {
            self.0 += us;
        }
    }
}
