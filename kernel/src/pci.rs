//! PCI configuration access for the kernel: ECAM when ACPI's MCFG describes it (mapped a
//! bus at a time, uncached), else the legacy 0xCF8/0xCFC ports. Device interrupts are
//! handed out as local APIC vectors, each raising its own event-loop signal.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use bulkhead_executor::Signal;
use bulkhead_pci::mcfg::{self, Ecam, PhysRead};
use bulkhead_pci::{Bdf, ConfigSpace, Function};
use spin::{Mutex, Once};

use crate::arch::interrupts::{self, InterruptFrame};
use crate::arch::outl;

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
struct Firmware;

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

pub type Access = Box<dyn ConfigSpace + Send>;

pub static CONFIG: Mutex<Option<Access>> = Mutex::new(None);

/// Choose the access method: ECAM from MCFG (RSDP from the loader, else the BIOS area),
/// else port I/O. Returns a description for the log.
pub fn init(rsdp: Option<u64>) -> &'static str {
    let rsdp = rsdp.or_else(|| {
        let mut area = alloc::vec![0u8; 0x20000];
        Firmware
            .read(0xe0000, &mut area)
            .then(|| mcfg::find_rsdp(&area, 0xe0000))
            .flatten()
    });
    let (access, what): (Access, &str) = match rsdp.and_then(|r| mcfg::find_ecam(&Firmware, r)) {
        Some(ecam) => {
            log::info!(
                "ECAM at {:#x}, buses {}-{}",
                ecam.base,
                ecam.bus_start,
                ecam.bus_end
            );
            (
                Box::new(EcamAccess {
                    ecam,
                    mapped: [false; 256],
                }),
                "ecam",
            )
        }
        None => (Box::new(PortIo), "port i/o"),
    };
    *CONFIG.lock() = Some(access);
    what
}

pub fn with<R>(f: impl FnOnce(&mut dyn ConfigSpace) -> R) -> Option<R> {
    let mut g = CONFIG.lock();
    g.as_mut().map(|a| f(&mut **a))
}

/// Every PCI function, from one walk at first use (each config access is a VM exit
/// under a hypervisor). A driver domain serves the devices it was started with; a
/// function hot-added later is not probed.
pub fn functions() -> Vec<Function> {
    FOUND
        .call_once(|| with(|cs| bulkhead_pci::enumerate(cs)).unwrap_or_default())
        .clone()
}

static FOUND: Once<Vec<Function>> = Once::new();

/// The walk `functions` returns, when the boot already made it (firmware-less setup,
/// which also set each function's interrupt line): one walk of VM exits fewer.
pub fn remember(fns: Vec<Function>) {
    FOUND.call_once(|| fns);
}

// Device interrupt vectors 0x40..0x60, each with a signal for the event loop.
pub const FIRST_DEVICE_VECTOR: u8 = 0x40;
const DEVICE_VECTORS: usize = 32;
pub static DEVICE_SIGNALS: [Signal; DEVICE_VECTORS] = [const { Signal::new() }; DEVICE_VECTORS];
static NEXT_VECTOR: AtomicU8 = AtomicU8::new(0);

fn device_interrupt(f: &mut InterruptFrame) {
    // Level-triggered INTx: silence the pin until the driver has serviced the device.
    crate::arch::ioapic::mask_for_vector(f);
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
