//! The kernel's one implementation of the driver traits (`bulkhead-hw`): registers in
//! uncached BAR mappings (each BAR once), DMA memory from the frame allocator
//! (identity-mapped, so physical = virtual), a spinning clock for bring-up; and MSI-X
//! table programming.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use bulkhead_hw::{Clock, Dma, Mmio, NoMemory, PAGE_SIZE};
use bulkhead_pci::{Bar, Bdf};

use super::pci;

/// A register window: a memory BAR mapped uncached ([`BarMaps::map`], the only maker),
/// or a structure inside one ([`BarMmio::at`]). BAR mappings are never undone, so a window
/// stays valid for the kernel's life. An access that would leave the window reads as
/// all-ones and writes nothing, as a device that is gone does.
#[derive(Clone, Copy, Debug)]
pub struct BarMmio {
    va: u64,
    len: u64,
}

impl BarMmio {
    /// The part of this window from `offset` on (empty if `offset` is past its end).
    pub fn at(&self, offset: u64) -> BarMmio {
        let offset = offset.min(self.len);
        BarMmio {
            va: self.va + offset,
            len: self.len - offset,
        }
    }

    /// The address of a `width`-byte register at `off`, if it lies inside the window
    /// and is aligned to its width (a device's offsets are not trusted to be).
    fn inside(&self, off: usize, width: usize) -> Option<usize> {
        let end = (off as u64).checked_add(width as u64)?;
        let a = self.va as usize + off;
        (end <= self.len && a.is_multiple_of(width)).then_some(a)
    }
}

macro_rules! access {
    ($read:ident, $write:ident, $t:ty) => {
        fn $read(&self, off: usize) -> $t {
            match self.inside(off, core::mem::size_of::<$t>()) {
                // SAFETY: inside the window, which `BarMaps::map` mapped uncached for
                // good. Each register is accessed with its own width.
                Some(a) => unsafe { core::ptr::read_volatile(a as *const $t) },
                None => <$t>::MAX,
            }
        }
        fn $write(&self, off: usize, v: $t) {
            if let Some(a) = self.inside(off, core::mem::size_of::<$t>()) {
                // SAFETY: as for the read.
                unsafe { core::ptr::write_volatile(a as *mut $t, v) }
            }
        }
    };
}

impl Mmio for BarMmio {
    access!(read32, write32, u32);
    access!(read16, write16, u16);
    access!(read8, write8, u8);
}

/// DMA memory: frames from the allocator, identity-mapped, so physical = virtual. Every
/// allocation is recorded, and an access or a free by address is checked against the
/// record: a read or write outside DMA memory panics (a driver's bug, never turned into a
/// write over a Rust object), a free of something not allocated is refused and logged.
pub struct KernelDma;

/// Start → bytes (whole pages) of every DMA allocation alive.
static DMA_MEMORY: spin::Mutex<BTreeMap<u64, usize>> = spin::Mutex::new(BTreeMap::new());

/// Whether `len` bytes from `phys` lie inside one DMA allocation.
fn is_dma(phys: u64, len: usize) -> bool {
    DMA_MEMORY
        .lock()
        .range(..=phys)
        .next_back()
        .is_some_and(|(&start, &bytes)| {
            phys.checked_add(len as u64)
                .is_some_and(|end| end <= start + bytes as u64)
        })
}

impl Dma for KernelDma {
    fn alloc(&mut self, bytes: usize) -> Result<u64, NoMemory> {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1);
        let p = crate::mem::alloc_frames(pages, PAGE_SIZE as u64).map_err(|_| NoMemory)?;
        // SAFETY: frames just allocated to us, identity-mapped RAM.
        unsafe { core::ptr::write_bytes(p as *mut u8, 0, pages * PAGE_SIZE) };
        DMA_MEMORY.lock().insert(p, pages * PAGE_SIZE);
        Ok(p)
    }
    fn free(&mut self, phys: u64, bytes: usize) {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1);
        let mut m = DMA_MEMORY.lock();
        if m.get(&phys) != Some(&(pages * PAGE_SIZE)) {
            drop(m);
            log::error!("DMA free of {bytes} bytes at {phys:#x}, not an allocation: ignored");
            return;
        }
        m.remove(&phys);
        drop(m);
        let _ = crate::mem::free_frames(phys, pages);
    }
    fn read(&self, phys: u64, buf: &mut [u8]) {
        assert!(is_dma(phys, buf.len()), "DMA read outside DMA memory");
        // SAFETY: inside one DMA allocation (checked), identity-mapped and never a Rust
        // object; the device writes it, and the driver orders its reads with `barrier`.
        unsafe { core::ptr::copy_nonoverlapping(phys as *const u8, buf.as_mut_ptr(), buf.len()) }
    }
    fn write(&self, phys: u64, data: &[u8]) {
        assert!(is_dma(phys, data.len()), "DMA write outside DMA memory");
        // SAFETY: as for read.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), phys as *mut u8, data.len()) }
    }
    fn barrier(&self) {
        fence(Ordering::SeqCst);
    }
}

/// Bring-up runs before the event loop serves anything, so it may spin.
pub struct SpinClock;

impl Clock for SpinClock {
    fn now_us(&self) -> u64 {
        super::time::now_ns() / 1000
    }
    fn pause(&mut self, us: u64) {
        let end = super::time::now_ns() + us * 1000;
        while super::time::now_ns() < end {
            core::hint::spin_loop();
        }
    }
}

/// Devices to silence before this domain reports itself crashed: a NIC left running
/// keeps receiving into, and signalling, a dead domain until the toolstack destroys it
/// (with `on_crash="preserve"`, for as long as the operator looks at it). Each entry is
/// a register window, a registers-only silencer (so callable from the panic handler)
/// and how long the device may still signal after it.
type Silencer = (BarMmio, fn(&BarMmio), u64);
static ON_CRASH: spin::Mutex<heapless::Vec<Silencer, 8>> = spin::Mutex::new(heapless::Vec::new());

pub fn silence_on_crash(regs: BarMmio, silence: fn(&BarMmio), quiet_after_us: u64) {
    if ON_CRASH
        .lock()
        .push((regs, silence, quiet_after_us))
        .is_err()
    {
        log::warn!(
            "more devices than the crash path silences; the one at {:#x} is left running",
            regs.va
        );
    }
}

/// Run every registered silencer (the crash path; never blocks on the registry).
pub fn silence_for_crash() {
    let Some(list) = ON_CRASH.try_lock() else {
        return;
    };
    let mut quiet = 0;
    for (regs, silence, after) in list.iter() {
        silence(regs);
        let after = *after;
        quiet = quiet.max(after);
    }
    if quiet > 0 {
        SpinClock.pause(quiet);
    }
}

/// One function's memory BARs mapped into the kernel, each at most once: registers and
/// the MSI-X table share a BAR on some devices and not on others.
pub struct BarMaps {
    bars: [Option<Bar>; 6],
    mapped: Vec<(u8, BarMmio)>,
}

impl BarMaps {
    /// The function's BARs as configured (nothing mapped yet).
    pub fn of(bdf: Bdf) -> Result<BarMaps, String> {
        let bars = pci::with(|cs| bulkhead_pci::bars(cs, bdf))
            .ok_or("no PCI access")?
            .map_err(|e| format!("{e}"))?;
        Ok(BarMaps {
            bars,
            mapped: Vec::new(),
        })
    }

    pub fn bars(&self) -> &[Option<Bar>; 6] {
        &self.bars
    }

    /// Memory BAR `bar`'s registers, mapped (uncached) on first use.
    pub fn map(&mut self, bar: u8) -> Result<BarMmio, String> {
        if let Some((_, w)) = self.mapped.iter().find(|(b, _)| *b == bar) {
            return Ok(*w);
        }
        let Some(Bar::Memory { base, size, .. }) = self.bars.get(bar as usize).copied().flatten()
        else {
            return Err(format!("BAR{bar} is not a memory BAR"));
        };
        if base == 0 {
            return Err(format!("BAR{bar} not assigned by firmware"));
        }
        let va = crate::mem::map_mmio(base, size).map_err(|e| format!("map BAR{bar}: {e}"))?;
        let w = BarMmio { va, len: size };
        self.mapped.push((bar, w));
        Ok(w)
    }
}

/// Program MSI-X table entries and enable MSI-X: `entries` are (table index, CPU
/// vector), None leaving the entry masked. Maps the table's BAR if it is not yet.
pub fn msix_setup(
    bdf: Bdf,
    maps: &mut BarMaps,
    entries: &[(u16, Option<u8>)],
) -> Result<(), String> {
    let m = pci::with(|cs| bulkhead_pci::msix(cs, bdf, maps.bars()))
        .ok_or("no PCI access")?
        .map_err(|_| "bad MSI-X capability")?
        .ok_or("no MSI-X capability")?;
    if entries.iter().any(|(i, _)| *i >= m.table_size) {
        return Err("MSI-X table too small".into());
    }
    let table = maps.map(m.table_bar)?.at(m.table_offset as u64);
    pci::with(|cs| {
        for &(i, vector) in entries {
            let (addr, data) =
                bulkhead_pci::msi_message(crate::arch::apic::id() as u8, vector.unwrap_or(0));
            let e = 16 * i as usize;
            let masked = if vector.is_some() { 0 } else { 1 };
            table.write32(e, addr as u32);
            table.write32(e + 4, (addr >> 32) as u32);
            table.write32(e + 8, data);
            table.write32(e + 12, masked);
        }
        bulkhead_pci::msix_control(cs, bdf, &m, true, false);
    })
    .ok_or_else(|| "no PCI access".into())
}
