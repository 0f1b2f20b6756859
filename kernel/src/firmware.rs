//! What firmware does for an HVM domain, done by Bulkhead when none ran.
//!
//! A driver domain whose xl config says `firmware=` (naming this image) is entered at
//! the PVH note with no hvmloader before it: nobody gave its PCI devices addresses, set
//! its MTRRs or handed it a command line. The decisions are in host-tested crates
//! (`bulkhead_pci::assign::setup`, `bulkhead_boot::mtrr::layout`,
//! `bulkhead_boot::fw_cfg`); this module applies them and prints one `result:` line per
//! outcome, which the Xen tier checks.

use alloc::vec::Vec;
use core::ops::Range;

use bulkhead_boot::fw_cfg::{self, FwCfgError, Ports};
use bulkhead_boot::{mtrr, CMDLINE_MAX};
use bulkhead_pci::assign;
use log::{error, info, warn};

use crate::arch;

/// Whether an HVM device model's PCI bus answers (host bridge at 00:00.0 through the
/// 0xcf8 ports): true in an HVM domain, false in PVH (no device model).
pub fn pci_bus_present() -> bool {
    use bulkhead_pci::{reg, Bdf, ConfigSpace};
    let id = crate::pci::PortIo.read16(Bdf::new(0, 0, 0), reg::VENDOR_ID);
    id != 0xffff && id != 0
}

struct FwCfgPorts;

impl Ports for FwCfgPorts {
    fn select(&mut self, key: u16) {
        arch::outw(fw_cfg::PORT_SELECTOR, key);
    }
    fn read(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = arch::inb(fw_cfg::PORT_DATA);
        }
    }
}

/// Where the command line came from, for the log once the logger is set up.
pub enum CmdlineSource {
    FwCfg,
    /// No fw_cfg device, or no `opt/bulkhead/cmdline` in it: the defaults apply.
    None(FwCfgError),
}

/// Read the command line from fw_cfg into `out`. A file that is there but unusable
/// (too long, not UTF-8) is an error, as an invalid command line is.
pub fn cmdline(out: &mut heapless::String<CMDLINE_MAX>) -> Result<CmdlineSource, FwCfgError> {
    match fw_cfg::read_text(&mut FwCfgPorts, fw_cfg::CMDLINE_FILE, out) {
        Ok(()) => Ok(CmdlineSource::FwCfg),
        Err(e @ (FwCfgError::Absent | FwCfgError::NotFound)) => Ok(CmdlineSource::None(e)),
        Err(e) => Err(e),
    }
}

/// Give every PCI function on bus 0 its BARs and INTx line, as hvmloader would; a
/// function that could not be set up is hidden from the drivers. Returns the range above
/// 4 GiB that BARs took, if any (it must be uncached too).
pub fn setup_pci(ram_end: u64) -> Option<Range<u64>> {
    let window = assign::Window::hvm(ram_end, arch::mtrr::phys_bits());
    let (fns, s) = crate::pci::with(|cs| {
        let fns = bulkhead_pci::enumerate(cs);
        let s = assign::setup(cs, &fns, &window);
        (fns, s)
    })?;
    crate::pci::remember(s.for_drivers(fns));
    for a in &s.bars {
        info!(
            "result: name=pci-bar bdf={} bar={} base={:#x} size={:#x} space={}",
            a.bdf,
            a.index,
            a.base,
            a.size,
            if a.io {
                "io"
            } else if a.is64 {
                "mem64"
            } else {
                "mem32"
            }
        );
    }
    for (bdf, gsi) in &s.intx {
        info!("result: name=pci-intx bdf={bdf} gsi={gsi}");
    }
    for (bdf, why) in &s.failed {
        match why {
            assign::SetupError::NotAnEndpoint => warn!("pci: {bdf}: {why}"),
            _ => error!("pci: {bdf}: no addresses for its BARs: {why}; the device stays off"),
        }
    }
    let high: Vec<&assign::Assignment> = s
        .bars
        .iter()
        .filter(|a| !a.io && a.base >= 1 << 32)
        .collect();
    let start = high.iter().map(|a| a.base).min()?;
    let end = high.iter().map(|a| a.base + a.size).max()?;
    Some(start..end)
}

/// Set the MTRRs: RAM write-back, the MMIO hole (and `high`, where BARs went above
/// 4 GiB) uncached; then read them back. Called before memory setup (with the hole only:
/// until then all RAM may be uncached) and again if BARs went high. Uses no heap.
pub fn set_mtrrs(high: Option<Range<u64>>) {
    let Some(cap) = arch::mtrr::cap() else {
        warn!("mtrr: the CPU shows no MTRRs; memory types left to Xen");
        return;
    };
    let mut uncached: heapless::Vec<Range<u64>, 2> = heapless::Vec::new();
    let _ = uncached.push(assign::HVM_MMIO_HOLE.start..1 << 32);
    if let Some(h) = high {
        let _ = uncached.push(h);
    }
    let (writes, fits) = mtrr::layout(cap, arch::mtrr::phys_bits(), &uncached);
    if let Err(e) = &fits {
        error!("mtrr: {e}; the rest of the MMIO ranges stay write-back in the MTRRs");
    }
    let differ = arch::mtrr::write(&writes);
    let def = writes.last().map(|w| w.1).unwrap_or(0);
    let variable = writes
        .iter()
        .filter(|(m, _)| (0x200..0x250).contains(m))
        .count()
        / 2;
    for (msr, back) in &differ {
        error!("mtrr: MSR {msr:#x} reads back {back:#x}, not what was written");
    }
    // No heap yet (this runs before memory setup): the list is formatted in place.
    let mut list: heapless::String<96> = heapless::String::new();
    for (i, r) in uncached.iter().enumerate() {
        use core::fmt::Write;
        let _ = write!(
            list,
            "{}{:#x}-{:#x}",
            if i > 0 { "," } else { "" },
            r.start,
            r.end
        );
    }
    info!(
        "result: name=mtrr def_type={def:#x} fixed={} variable={variable} uncached={list} readback={}",
        cap.fixed,
        if differ.is_empty() { "equal" } else { "differs" }
    );
}
