//! PCI as a driver domain needs it, with no hardware access of its own: everything goes
//! through [`ConfigSpace`] (port I/O or ECAM in the kernel, a model in tests).
//!
//! Config space comes from hardware or from a device model (QEMU, Xen's) and is treated as
//! untrusted: capability lists may loop or point outside the header, BARs may claim
//! impossible sizes, devices may vanish (all-ones reads). Every such case is an error for
//! that one device, never a panic.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod assign;
pub mod mcfg;

use alloc::vec::Vec;
use core::fmt;

/// Bus/device/function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl Bdf {
    pub const fn new(bus: u8, dev: u8, func: u8) -> Self {
        Bdf { bus, dev, func }
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// 32-bit config-space access. `offset` is 4-byte aligned and below 4096 (256 without
/// ECAM: implementations return all-ones beyond what they can reach).
pub trait ConfigSpace {
    fn read32(&mut self, bdf: Bdf, offset: u16) -> u32;
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32);

    fn read16(&mut self, bdf: Bdf, offset: u16) -> u16 {
        (self.read32(bdf, offset & !3) >> ((offset & 2) * 8)) as u16
    }
    fn read8(&mut self, bdf: Bdf, offset: u16) -> u8 {
        (self.read32(bdf, offset & !3) >> ((offset & 3) * 8)) as u8
    }
    fn write16(&mut self, bdf: Bdf, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = self.read32(bdf, offset & !3);
        let new = (old & !(0xffff << shift)) | ((value as u32) << shift);
        self.write32(bdf, offset & !3, new);
    }
    fn write8(&mut self, bdf: Bdf, offset: u16, value: u8) {
        let shift = (offset & 3) * 8;
        let old = self.read32(bdf, offset & !3);
        let new = (old & !(0xff << shift)) | ((value as u32) << shift);
        self.write32(bdf, offset & !3, new);
    }
}

pub mod reg {
    pub const VENDOR_ID: u16 = 0x00;
    pub const DEVICE_ID: u16 = 0x02;
    pub const COMMAND: u16 = 0x04;
    pub const STATUS: u16 = 0x06;
    pub const CLASS_REV: u16 = 0x08;
    pub const HEADER_TYPE: u16 = 0x0e;
    pub const BAR0: u16 = 0x10;
    pub const SECONDARY_BUS: u16 = 0x19;
    pub const CAP_PTR: u16 = 0x34;
    pub const INTERRUPT_LINE: u16 = 0x3c;
    pub const INTERRUPT_PIN: u16 = 0x3d;

    pub const CMD_IO: u16 = 1 << 0;
    pub const CMD_MEMORY: u16 = 1 << 1;
    pub const CMD_BUS_MASTER: u16 = 1 << 2;
    pub const CMD_INTX_DISABLE: u16 = 1 << 10;
    pub const STATUS_CAP_LIST: u16 = 1 << 4;
    pub const STATUS_INTERRUPT: u16 = 1 << 3;

    pub const CAP_MSI: u8 = 0x05;
    pub const CAP_PCIE: u8 = 0x10;
    pub const CAP_MSIX: u8 = 0x11;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// The device answers all-ones: not there (or gone).
    Absent(Bdf),
    /// The capability list is malformed (loops, points into the header, too long).
    BadCapabilityList(Bdf),
    /// A BAR is malformed (64-bit BAR in slot 5, size not a power of two...).
    BadBar { bdf: Bdf, index: u8 },
    /// The device does not support what was asked (no FLR, no MSI-X...).
    Unsupported(Bdf, &'static str),
    /// The device did not come back after a reset.
    ResetTimeout(Bdf),
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::Absent(b) => write!(f, "{b}: device not responding"),
            PciError::BadCapabilityList(b) => write!(f, "{b}: malformed capability list"),
            PciError::BadBar { bdf, index } => write!(f, "{bdf}: malformed BAR{index}"),
            PciError::Unsupported(b, what) => write!(f, "{b}: {what} not supported"),
            PciError::ResetTimeout(b) => write!(f, "{b}: did not come back after function reset"),
        }
    }
}

/// A decoded base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    Memory {
        base: u64,
        size: u64,
        prefetchable: bool,
        is64: bool,
    },
    Io {
        port: u16,
        size: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub header_type: u8,
    pub interrupt_pin: u8,
    pub interrupt_line: u8,
}

impl Function {
    pub fn is_nvme(&self) -> bool {
        self.class == 0x01 && self.subclass == 0x08 && self.prog_if == 0x02
    }
}

/// Walk every bus reachable from bus 0 through PCI-to-PCI bridges (each bus once).
pub fn enumerate(cs: &mut (impl ConfigSpace + ?Sized)) -> Vec<Function> {
    let mut out = Vec::new();
    let mut buses = alloc::vec![0u8];
    let mut seen = [false; 256];
    while let Some(bus) = buses.pop() {
        if core::mem::replace(&mut seen[bus as usize], true) {
            continue;
        }
        for dev in 0..32 {
            let Some(f0) = probe(cs, Bdf::new(bus, dev, 0)) else {
                continue;
            };
            let multi = f0.header_type & 0x80 != 0;
            let mut funcs = alloc::vec![f0];
            if multi {
                funcs.extend((1..8).filter_map(|f| probe(cs, Bdf::new(bus, dev, f))));
            }
            for f in funcs {
                if f.header_type & 0x7f == 1 {
                    let secondary = cs.read8(f.bdf, reg::SECONDARY_BUS);
                    if secondary != 0 && secondary != bus {
                        buses.push(secondary);
                    }
                }
                out.push(f);
            }
        }
    }
    out.sort_by_key(|f| f.bdf);
    out
}

fn probe(cs: &mut (impl ConfigSpace + ?Sized), bdf: Bdf) -> Option<Function> {
    let id = cs.read32(bdf, reg::VENDOR_ID);
    if id as u16 == 0xffff || id as u16 == 0 {
        return None;
    }
    let class = cs.read32(bdf, reg::CLASS_REV);
    let irq = cs.read32(bdf, reg::INTERRUPT_LINE);
    Some(Function {
        bdf,
        vendor: id as u16,
        device: (id >> 16) as u16,
        class: (class >> 24) as u8,
        subclass: (class >> 16) as u8,
        prog_if: (class >> 8) as u8,
        revision: class as u8,
        header_type: cs.read8(bdf, reg::HEADER_TYPE),
        interrupt_line: irq as u8,
        interrupt_pin: (irq >> 8) as u8,
    })
}

/// Decode and size the six BARs of a type-0 header. Sizing writes all-ones and restores the
/// original value, with memory and I/O decoding off meanwhile so the device never answers
/// at a half-written address.
pub fn bars(cs: &mut (impl ConfigSpace + ?Sized), bdf: Bdf) -> Result<[Option<Bar>; 6], PciError> {
    let mut out = [None; 6];
    let cmd = cs.read16(bdf, reg::COMMAND);
    if cmd == 0xffff {
        return Err(PciError::Absent(bdf));
    }
    cs.write16(bdf, reg::COMMAND, cmd & !(reg::CMD_MEMORY | reg::CMD_IO));
    let r = size_bars(cs, bdf, &mut out);
    cs.write16(bdf, reg::COMMAND, cmd);
    r.map(|_| out)
}

fn size_bars(
    cs: &mut (impl ConfigSpace + ?Sized),
    bdf: Bdf,
    out: &mut [Option<Bar>; 6],
) -> Result<(), PciError> {
    let mut i = 0u8;
    while i < 6 {
        let off = reg::BAR0 + 4 * i as u16;
        let orig = cs.read32(bdf, off);
        cs.write32(bdf, off, 0xffff_ffff);
        let probe = cs.read32(bdf, off);
        cs.write32(bdf, off, orig);
        if orig & 1 == 1 {
            let mask = probe & !0x3;
            if mask != 0 {
                let size = (!mask).wrapping_add(1) & 0xffff;
                out[i as usize] = Some(Bar::Io {
                    port: (orig & !0x3) as u16,
                    size,
                });
            }
            i += 1;
            continue;
        }
        let kind = (orig >> 1) & 0x3;
        let prefetchable = orig & 0x8 != 0;
        match kind {
            0 => {
                let mask = probe & !0xf;
                if mask != 0 {
                    let size = (!mask).wrapping_add(1) as u64;
                    if !size.is_power_of_two() {
                        return Err(PciError::BadBar { bdf, index: i });
                    }
                    out[i as usize] = Some(Bar::Memory {
                        base: (orig & !0xf) as u64,
                        size,
                        prefetchable,
                        is64: false,
                    });
                }
                i += 1;
            }
            2 => {
                if i == 5 {
                    return Err(PciError::BadBar { bdf, index: i });
                }
                let hi_off = off + 4;
                let orig_hi = cs.read32(bdf, hi_off);
                cs.write32(bdf, hi_off, 0xffff_ffff);
                let probe_hi = cs.read32(bdf, hi_off);
                cs.write32(bdf, hi_off, orig_hi);
                let mask = ((probe_hi as u64) << 32) | (probe & !0xf) as u64;
                if mask != 0 {
                    let size = (!mask).wrapping_add(1);
                    if !size.is_power_of_two() {
                        return Err(PciError::BadBar { bdf, index: i });
                    }
                    let base = ((orig_hi as u64) << 32) | (orig & !0xf) as u64;
                    out[i as usize] = Some(Bar::Memory {
                        base,
                        size,
                        prefetchable,
                        is64: true,
                    });
                }
                i += 2;
            }
            _ => return Err(PciError::BadBar { bdf, index: i }),
        }
    }
    Ok(())
}

/// Capabilities as (id, offset). The walk stops with an error on a loop, a pointer into
/// the standard header, or more entries than fit in config space.
pub fn capabilities(
    cs: &mut (impl ConfigSpace + ?Sized),
    bdf: Bdf,
) -> Result<Vec<(u8, u16)>, PciError> {
    let status = cs.read16(bdf, reg::STATUS);
    if status == 0xffff {
        return Err(PciError::Absent(bdf));
    }
    let mut out = Vec::new();
    if status & reg::STATUS_CAP_LIST == 0 {
        return Ok(out);
    }
    let mut ptr = cs.read8(bdf, reg::CAP_PTR) & !3;
    let mut visited = [false; 64];
    while ptr != 0 {
        if ptr < 0x40 || core::mem::replace(&mut visited[(ptr / 4) as usize], true) {
            return Err(PciError::BadCapabilityList(bdf));
        }
        let hdr = cs.read16(bdf, ptr as u16);
        out.push((hdr as u8, ptr as u16));
        ptr = ((hdr >> 8) as u8) & !3;
    }
    Ok(out)
}

pub fn find_capability(
    cs: &mut (impl ConfigSpace + ?Sized),
    bdf: Bdf,
    id: u8,
) -> Result<Option<u16>, PciError> {
    Ok(capabilities(cs, bdf)?
        .into_iter()
        .find(|(c, _)| *c == id)
        .map(|(_, o)| o))
}

/// Memory decoding only (registers reachable, no DMA yet): to quiesce a device a
/// previous owner left running before its interrupts are set up.
pub fn enable_memory(cs: &mut (impl ConfigSpace + ?Sized), bdf: Bdf) {
    let cmd = cs.read16(bdf, reg::COMMAND);
    cs.write16(bdf, reg::COMMAND, cmd | reg::CMD_MEMORY);
}

/// Turn on memory decoding and bus mastering (DMA), optionally masking INTx.
pub fn enable(cs: &mut (impl ConfigSpace + ?Sized), bdf: Bdf, intx: bool) {
    let mut cmd = cs.read16(bdf, reg::COMMAND);
    cmd |= reg::CMD_MEMORY | reg::CMD_BUS_MASTER;
    if intx {
        cmd &= !reg::CMD_INTX_DISABLE;
    } else {
        cmd |= reg::CMD_INTX_DISABLE;
    }
    cs.write16(bdf, reg::COMMAND, cmd);
}

/// Turn bus mastering off: the function can no longer read or write memory (DMA), however
/// its own state went wrong. For a driver giving up on a device whose commands may still
/// point at memory the driver is about to reuse.
pub fn stop_dma(cs: &mut (impl ConfigSpace + ?Sized), bdf: Bdf) {
    let cmd = cs.read16(bdf, reg::COMMAND);
    cs.write16(bdf, reg::COMMAND, cmd & !reg::CMD_BUS_MASTER);
}

/// The MSI-X capability: where the vector table and pending-bit array live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiX {
    pub cap: u16,
    pub table_size: u16,
    pub table_bar: u8,
    pub table_offset: u32,
    pub pba_bar: u8,
    pub pba_offset: u32,
}

pub fn msix(
    cs: &mut (impl ConfigSpace + ?Sized),
    bdf: Bdf,
    bars: &[Option<Bar>; 6],
) -> Result<Option<MsiX>, PciError> {
    let Some(cap) = find_capability(cs, bdf, reg::CAP_MSIX)? else {
        return Ok(None);
    };
    let ctrl = cs.read16(bdf, cap + 2);
    let table = cs.read32(bdf, cap + 4);
    let pba = cs.read32(bdf, cap + 8);
    let m = MsiX {
        cap,
        table_size: (ctrl & 0x7ff) + 1,
        table_bar: (table & 7) as u8,
        table_offset: table & !7,
        pba_bar: (pba & 7) as u8,
        pba_offset: pba & !7,
    };
    // The table must lie inside a memory BAR.
    let fits = |bar: u8, off: u32, len: u64| match bars.get(bar as usize).copied().flatten() {
        Some(Bar::Memory { size, .. }) => {
            (off as u64).checked_add(len).is_some_and(|end| end <= size)
        }
        _ => false,
    };
    if !fits(m.table_bar, m.table_offset, m.table_size as u64 * 16)
        || !fits(m.pba_bar, m.pba_offset, 8)
    {
        return Err(PciError::BadBar {
            bdf,
            index: m.table_bar,
        });
    }
    Ok(Some(m))
}

/// Set the MSI-X enable (and function mask) bits.
pub fn msix_control(
    cs: &mut (impl ConfigSpace + ?Sized),
    bdf: Bdf,
    m: &MsiX,
    enable: bool,
    mask_all: bool,
) {
    let mut ctrl = cs.read16(bdf, m.cap + 2);
    ctrl = (ctrl & !(0xc000)) | if enable { 0x8000 } else { 0 } | if mask_all { 0x4000 } else { 0 };
    cs.write16(bdf, m.cap + 2, ctrl);
}

/// x86 MSI message for a local APIC vector: (address, data).
pub fn msi_message(apic_id: u8, vector: u8) -> (u64, u32) {
    (0xfee0_0000 | ((apic_id as u64) << 12), vector as u32)
}

/// Program plain MSI (single vector) and enable it.
pub fn msi_enable(
    cs: &mut (impl ConfigSpace + ?Sized),
    bdf: Bdf,
    apic_id: u8,
    vector: u8,
) -> Result<(), PciError> {
    let cap = find_capability(cs, bdf, reg::CAP_MSI)?.ok_or(PciError::Unsupported(bdf, "MSI"))?;
    let ctrl = cs.read16(bdf, cap + 2);
    let is64 = ctrl & (1 << 7) != 0;
    let (addr, data) = msi_message(apic_id, vector);
    cs.write32(bdf, cap + 4, addr as u32);
    let data_off = if is64 {
        cs.write32(bdf, cap + 8, (addr >> 32) as u32);
        cap + 12
    } else {
        cap + 8
    };
    cs.write16(bdf, data_off, data as u16);
    // One vector (MME = 0), enable.
    cs.write16(bdf, cap + 2, (ctrl & !(0x7 << 4)) | 1);
    Ok(())
}

/// Function-level reset, when the device advertises it (PCIe DevCap bit 28), waiting the
/// 100 ms the spec requires and then until the device answers again.
pub fn flr(
    cs: &mut (impl ConfigSpace + ?Sized),
    bdf: Bdf,
    mut sleep_ms: impl FnMut(u32),
) -> Result<(), PciError> {
    let cap = find_capability(cs, bdf, reg::CAP_PCIE)?
        .ok_or(PciError::Unsupported(bdf, "function-level reset"))?;
    let devcap = cs.read32(bdf, cap + 4);
    if devcap & (1 << 28) == 0 {
        return Err(PciError::Unsupported(bdf, "function-level reset"));
    }
    let ctl = cs.read16(bdf, cap + 8);
    cs.write16(bdf, cap + 8, ctl | (1 << 15));
    sleep_ms(100);
    for _ in 0..10 {
        if cs.read16(bdf, reg::VENDOR_ID) != 0xffff {
            return Ok(());
        }
        sleep_ms(100);
    }
    Err(PciError::ResetTimeout(bdf))
}

/// Function-level reset that keeps the firmware's (or toolstack's) configuration: the
/// command register, BARs and interrupt line are saved and written back afterwards, since
/// FLR returns them to their defaults. Returns `Unsupported` when the device has no FLR.
pub fn reset_function(
    cs: &mut (impl ConfigSpace + ?Sized),
    bdf: Bdf,
    sleep_ms: impl FnMut(u32),
) -> Result<(), PciError> {
    const SAVED: [u16; 8] = [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x3c, 0x04];
    let saved: [u32; 8] = SAVED.map(|o| cs.read32(bdf, o));
    if saved[7] == 0xffff_ffff {
        return Err(PciError::Absent(bdf));
    }
    flr(cs, bdf, sleep_ms)?;
    // Command last, so decoding resumes only once the BARs are back.
    for (o, v) in SAVED.iter().zip(saved) {
        if *o == reg::COMMAND {
            cs.write16(bdf, reg::COMMAND, v as u16);
        } else {
            cs.write32(bdf, *o, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
