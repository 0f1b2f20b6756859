//! Giving BARs addresses when no firmware did. An HVM driver domain started without
//! hvmloader finds its passed-through devices' BARs as QEMU shows them (the host's
//! values, which may lie on guest RAM or anywhere); Xen maps the real BAR wherever the
//! guest writes it. [`plan`] lays every BAR into the guest's MMIO hole and I/O port range
//! as hvmloader's `pci_setup` does: the largest first, each at a multiple of its size,
//! so they pack without gaps and never overlap; 64-bit memory BARs move above 4 GiB only
//! when the hole is too small for all (the largest first). Unlike hvmloader a memory BAR
//! smaller than a page takes a whole page (Xen maps pages: two devices' registers must
//! not share one), a 64-bit BAR always has both halves written, and a BAR that does not
//! fit is an error naming the device, not a BAR left where it was. [`program`] writes the
//! plan with decoding off, then turns on memory and I/O decoding and bus mastering.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::{reg, Bar, Bdf, ConfigSpace};

const PAGE: u64 = 4096;

/// Where BARs may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The MMIO hole below 4 GiB.
    pub mem: Range<u64>,
    /// Above 4 GiB, for 64-bit BARs that do not fit the hole (None: nowhere).
    pub mem64: Option<Range<u64>>,
    /// I/O ports.
    pub io: Range<u64>,
}

/// Xen's HVM MMIO hole below 4 GiB as hvmloader uses it (see [`Window::hvm`]).
pub const HVM_MMIO_HOLE: Range<u64> = 0xf000_0000..0xfc00_0000;

impl Window {
    /// Xen's HVM layout as hvmloader uses it: the hole from `HVM_BELOW_4G_MMIO_START`
    /// (0xf0000000) to the start of the area Xen and QEMU keep for themselves
    /// (0xfc000000: IOAPIC, HPET, LAPIC, the BIOS), ports from 0xc000; above 4 GiB from
    /// the end of RAM (`ram_end`, at least 4 GiB) to the end of the physical address
    /// space (`phys_bits`).
    pub fn hvm(ram_end: u64, phys_bits: u8) -> Window {
        let top = 1u64 << phys_bits.min(52);
        let start = ram_end.max(1 << 32);
        Window {
            mem: HVM_MMIO_HOLE,
            mem64: (start < top).then_some(start..top),
            io: 0xc000..0x1_0000,
        }
    }
}

/// One BAR to place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub bdf: Bdf,
    pub index: u8,
    pub size: u64,
    pub io: bool,
    pub is64: bool,
}

/// Where one BAR goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub bdf: Bdf,
    pub index: u8,
    pub base: u64,
    /// What it takes (a memory BAR at least a page).
    pub size: u64,
    pub io: bool,
    pub is64: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignError {
    /// No room left for this BAR: the devices together need more than the window.
    NoRoom {
        bdf: Bdf,
        index: u8,
        size: u64,
        io: bool,
    },
    /// A size that is not a power of two (BAR sizing always gives one: a device model
    /// that says otherwise is not trusted).
    BadSize { bdf: Bdf, index: u8, size: u64 },
}

impl fmt::Display for AssignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AssignError::NoRoom {
                bdf,
                index,
                size,
                io,
            } => write!(
                f,
                "{bdf}: BAR{index} ({size:#x} bytes of {}) does not fit in what is left of the {}",
                if io { "I/O ports" } else { "memory" },
                if io {
                    "I/O port range 0xc000-0xffff"
                } else {
                    "MMIO window"
                }
            ),
            AssignError::BadSize { bdf, index, size } => {
                write!(
                    f,
                    "{bdf}: BAR{index} claims a size of {size:#x}, not a power of two"
                )
            }
        }
    }
}

/// The BARs of one function, as [`crate::bars`] decoded them, to place.
pub fn requests(bdf: Bdf, bars: &[Option<Bar>; 6]) -> Vec<Request> {
    bars.iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let (size, io, is64) = match (*b)? {
                Bar::Memory { size, is64, .. } => (size, false, is64),
                Bar::Io { size, .. } => (size as u64, true, false),
            };
            Some(Request {
                bdf,
                index: i as u8,
                size,
                io,
                is64,
            })
        })
        .collect()
}

/// Addresses for every BAR of `requests` inside `window`, or the first that does not
/// fit. The order is deterministic (size, then device and BAR index).
pub fn plan(requests: &[Request], window: &Window) -> Result<Vec<Assignment>, AssignError> {
    let mut bars: Vec<Assignment> = Vec::with_capacity(requests.len());
    for r in requests {
        if !r.size.is_power_of_two() {
            return Err(AssignError::BadSize {
                bdf: r.bdf,
                index: r.index,
                size: r.size,
            });
        }
        bars.push(Assignment {
            bdf: r.bdf,
            index: r.index,
            base: 0,
            size: if r.io {
                r.size.max(4)
            } else {
                r.size.max(PAGE)
            },
            io: r.io,
            is64: r.is64,
        });
    }
    bars.sort_by_key(|b| (core::cmp::Reverse(b.size), b.bdf, b.index));
    // Memory the low hole must still take; while it exceeds what is left there, 64-bit
    // BARs go high (the largest first, as they come).
    // Saturating: sizes come from devices (a 2^63 BAR or several must not overflow).
    let mut low_needed: u64 = bars
        .iter()
        .filter(|b| !b.io)
        .fold(0u64, |a, b| a.saturating_add(b.size));
    let mut next_mem = window.mem.start;
    let mut next_high = window.mem64.as_ref().map(|w| w.start);
    let mut next_io = window.io.start;
    for b in &mut bars {
        let no_room = AssignError::NoRoom {
            bdf: b.bdf,
            index: b.index,
            size: b.size,
            io: b.io,
        };
        let (next, end) = if b.io {
            (&mut next_io, window.io.end)
        } else {
            let left = window.mem.end.saturating_sub(next_mem);
            let go_high = b.is64 && low_needed > left && next_high.is_some();
            low_needed = low_needed.saturating_sub(b.size);
            match (go_high, next_high.as_mut(), &window.mem64) {
                (true, Some(n), Some(w)) => (n, w.end),
                _ => (&mut next_mem, window.mem.end),
            }
        };
        let base = next.checked_next_multiple_of(b.size).ok_or(no_room)?;
        let top = base.checked_add(b.size).ok_or(no_room)?;
        if top > end {
            return Err(no_room);
        }
        b.base = base;
        *next = top;
    }
    Ok(bars)
}

/// Write `plan` into the devices' BARs, each device with decoding off meanwhile (a
/// half-written 64-bit BAR must not decode), then turn on what each uses (memory, I/O)
/// and bus mastering.
pub fn program(cs: &mut (impl ConfigSpace + ?Sized), plan: &[Assignment]) {
    let mut devices: Vec<Bdf> = plan.iter().map(|a| a.bdf).collect();
    devices.sort();
    devices.dedup();
    for bdf in devices {
        let cmd = cs.read16(bdf, reg::COMMAND);
        cs.write16(bdf, reg::COMMAND, cmd & !(reg::CMD_MEMORY | reg::CMD_IO));
        let mut on = reg::CMD_BUS_MASTER;
        for a in plan.iter().filter(|a| a.bdf == bdf) {
            let off = reg::BAR0 + 4 * a.index as u16;
            // The low bits of a BAR are read-only type bits: writing the address over
            // them leaves them as they are.
            let flags = cs.read32(bdf, off) & if a.io { 0x3 } else { 0xf };
            cs.write32(bdf, off, a.base as u32 | flags);
            if a.is64 {
                cs.write32(bdf, off + 4, (a.base >> 32) as u32);
            }
            on |= if a.io { reg::CMD_IO } else { reg::CMD_MEMORY };
        }
        cs.write16(
            bdf,
            reg::COMMAND,
            (cmd & !(reg::CMD_MEMORY | reg::CMD_IO)) | on,
        );
    }
}

/// The GSI Xen's virtual I/O APIC raises for INTx `pin` (1 = INTA .. 4 = INTD) of
/// device `dev` on bus 0 of an HVM domain: Xen wires every PCI INTx line to one of the
/// I/O APIC's pins 16-47 by this formula (`hvm_pci_intx_gsi`), besides the PIIX3 link
/// to an ISA IRQ that only hvmloader programs. None when the function has no pin.
pub fn xen_hvm_intx_gsi(dev: u8, pin: u8) -> Option<u8> {
    if !(1..=4).contains(&pin) {
        return None;
    }
    let (dev, intx) = (dev as u32 & 31, pin as u32 - 1);
    Some(((((dev << 2) + (dev >> 3) + intx) & 31) + 16) as u8)
}

/// What [`setup`] did to the functions it was given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Setup {
    /// Every BAR placed and written.
    pub bars: Vec<Assignment>,
    /// The INTx GSI written into each function's interrupt-line register.
    pub intx: Vec<(Bdf, u8)>,
    /// Functions left with decoding off, and why (the others were set up).
    pub failed: Vec<(Bdf, SetupError)>,
}

impl Setup {
    /// `functions` (the walk `setup` was given) as the drivers may see them: each with
    /// the interrupt line written for it, and without a function left unset (its BARs
    /// still hold whatever they held, possibly an address on RAM). Bridges and what is
    /// behind them stay as found.
    pub fn for_drivers(&self, functions: Vec<crate::Function>) -> Vec<crate::Function> {
        functions
            .into_iter()
            .filter(|f| {
                !self
                    .failed
                    .iter()
                    .any(|(b, e)| *b == f.bdf && *e != SetupError::NotAnEndpoint)
            })
            .map(|mut f| {
                if let Some((_, gsi)) = self.intx.iter().find(|(b, _)| *b == f.bdf) {
                    f.interrupt_line = *gsi;
                }
                f
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// Its BARs could not be decoded.
    Pci(crate::PciError),
    /// Its BARs do not fit in what the other functions left of the window.
    Assign(AssignError),
    /// Behind a bridge or a bridge itself: firmware-less setup covers bus 0 endpoints
    /// (all that Xen's HVM machine has).
    NotAnEndpoint,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Pci(e) => write!(f, "{e}"),
            SetupError::Assign(e) => write!(f, "{e}"),
            SetupError::NotAnEndpoint => write!(f, "not an endpoint on bus 0; left as found"),
        }
    }
}

/// What firmware does for an HVM domain's PCI functions, for one started without it:
/// every BAR of every bus-0 endpoint in `functions` placed in `window` ([`plan`]) and
/// written ([`program`]), and each INTx pin's Xen GSI written as its interrupt line.
/// A function whose BARs cannot be decoded or do not fit (the largest that does not,
/// the others placed again without it) is listed in `failed` with its decoding off,
/// never overlapping another.
pub fn setup(
    cs: &mut (impl ConfigSpace + ?Sized),
    functions: &[crate::Function],
    window: &Window,
) -> Setup {
    let mut out = Setup::default();
    let mut reqs: Vec<Request> = Vec::new();
    for f in functions {
        if f.bdf.bus != 0 || f.header_type & 0x7f != 0 {
            if f.header_type & 0x7f == 1 || f.bdf.bus != 0 {
                out.failed.push((f.bdf, SetupError::NotAnEndpoint));
            }
            continue;
        }
        match crate::bars(cs, f.bdf) {
            Ok(b) => reqs.extend(requests(f.bdf, &b)),
            Err(e) => out.failed.push((f.bdf, SetupError::Pci(e))),
        }
        if let Some(gsi) = xen_hvm_intx_gsi(f.bdf.dev, f.interrupt_pin) {
            cs.write8(f.bdf, reg::INTERRUPT_LINE, gsi);
            out.intx.push((f.bdf, gsi));
        }
    }
    // Each round drops the device named by the error; bounded by the number of devices.
    loop {
        match plan(&reqs, window) {
            Ok(p) => {
                out.bars = p;
                break;
            }
            Err(e) => {
                let bdf = match e {
                    AssignError::NoRoom { bdf, .. } | AssignError::BadSize { bdf, .. } => bdf,
                };
                reqs.retain(|r| r.bdf != bdf);
                out.failed.push((bdf, SetupError::Assign(e)));
            }
        }
    }
    for (bdf, why) in &out.failed {
        if *why != SetupError::NotAnEndpoint && functions.iter().any(|f| f.bdf == *bdf) {
            let cmd = cs.read16(*bdf, reg::COMMAND);
            cs.write16(*bdf, reg::COMMAND, cmd & !(reg::CMD_MEMORY | reg::CMD_IO));
        }
    }
    program(cs, &out.bars);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;

    fn mem(dev: u8, index: u8, size: u64, is64: bool) -> Request {
        Request {
            bdf: Bdf::new(0, dev, 0),
            index,
            size,
            io: false,
            is64,
        }
    }

    fn io(dev: u8, index: u8, size: u64) -> Request {
        Request {
            bdf: Bdf::new(0, dev, 0),
            index,
            size,
            io: true,
            is64: false,
        }
    }

    fn window() -> Window {
        Window::hvm(32 << 20, 39)
    }

    /// No two BARs of the same space overlap, each lies in the window and at a multiple
    /// of its size.
    fn check(plan: &[Assignment], w: &Window) {
        for a in plan {
            assert_eq!(a.base % a.size, 0, "{a:?} aligned");
            let inside = |r: &Range<u64>| r.start <= a.base && a.base + a.size <= r.end;
            if a.io {
                assert!(inside(&w.io), "{a:?} in the ports");
            } else {
                assert!(
                    inside(&w.mem) || (a.is64 && w.mem64.as_ref().is_some_and(inside)),
                    "{a:?} in the window"
                );
            }
            for b in plan {
                if a != b && a.io == b.io {
                    assert!(
                        a.base + a.size <= b.base || b.base + b.size <= a.base,
                        "{a:?} overlaps {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_largest_first_packed_from_the_start_of_the_hole() {
        // QEMU's NVMe (16 KiB, 64-bit) and e1000e (128 KiB memory, 128 KiB flash,
        // 32 ports, 16 KiB MSI-X).
        let reqs = vec![
            mem(3, 0, 0x4000, true),
            mem(4, 0, 0x20000, false),
            mem(4, 1, 0x20000, false),
            io(4, 2, 32),
            mem(4, 3, 0x4000, false),
        ];
        let w = window();
        let p = plan(&reqs, &w).unwrap();
        check(&p, &w);
        let at: Vec<(u8, u8, u64)> = p.iter().map(|a| (a.bdf.dev, a.index, a.base)).collect();
        assert_eq!(
            at,
            [
                (4, 0, 0xf000_0000),
                (4, 1, 0xf002_0000),
                (3, 0, 0xf004_0000),
                (4, 3, 0xf004_4000),
                (4, 2, 0xc000),
            ]
        );
    }

    #[test]
    fn a_sub_page_bar_takes_a_whole_page() {
        let w = window();
        let p = plan(&[mem(3, 0, 0x100, false), mem(4, 0, 0x80, false)], &w).unwrap();
        check(&p, &w);
        assert_eq!(p[0].base + 0x1000, p[1].base);
    }

    #[test]
    fn bars_of_64_bits_move_above_4_gib_only_when_the_hole_is_too_small() {
        let w = window();
        // 128 MiB (64-bit) + 64 MiB: the hole has 192 MiB, both fit low.
        let p = plan(
            &[mem(3, 0, 128 << 20, true), mem(4, 0, 64 << 20, false)],
            &w,
        )
        .unwrap();
        check(&p, &w);
        assert!(p.iter().all(|a| a.base < 1 << 32));
        // 256 MiB (64-bit) cannot: it goes high, the 32-bit one stays low.
        let p = plan(
            &[mem(3, 0, 256 << 20, true), mem(4, 0, 64 << 20, false)],
            &w,
        )
        .unwrap();
        check(&p, &w);
        assert_eq!(p[0].base, 1 << 32);
        assert_eq!(p[1].base, 0xf000_0000);
    }

    #[test]
    fn a_window_too_small_is_an_error_naming_the_device() {
        let w = window();
        // 32-bit BARs cannot move high.
        let e = plan(
            &[mem(3, 0, 128 << 20, false), mem(5, 2, 128 << 20, false)],
            &w,
        )
        .unwrap_err();
        assert_eq!(
            e,
            AssignError::NoRoom {
                bdf: Bdf::new(0, 5, 0),
                index: 2,
                size: 128 << 20,
                io: false
            }
        );
        let msg = format!("{e}");
        assert!(msg.contains("00:05.0: BAR2"), "{msg}");
        // Without a high window a large 64-bit BAR fails too.
        let low_only = Window {
            mem64: None,
            ..window()
        };
        assert!(plan(&[mem(3, 0, 256 << 20, true)], &low_only).is_err());
        // Ports run out at 0x10000.
        let e = plan(&[io(3, 0, 0x4000), io(4, 0, 0x4000)], &w).unwrap_err();
        assert!(matches!(e, AssignError::NoRoom { io: true, .. }));
        assert!(
            plan(&[mem(3, 0, 3 << 12, false)], &w).is_err(),
            "not a power of two"
        );
    }

    /// Any set of BARs either fits without overlap or is refused; never a panic.
    #[test]
    fn random_sets_fit_without_overlap_or_are_refused() {
        let mut rng = bulkhead_testsupport::XorShift::new(0x9e37_79b9_7f4a_7c15);
        let mut next = || rng.next_u64();
        let w = window();
        let (mut fitted, mut refused) = (0, 0);
        for _ in 0..2000 {
            let n = 1 + next() % 12;
            let reqs: Vec<Request> = (0..n)
                .map(|i| {
                    let dev = (next() % 8) as u8;
                    let index = (i % 6) as u8;
                    match next() % 3 {
                        0 => io(dev, index, 1 << (2 + next() % 12)),
                        1 => mem(dev, index, 1 << (4 + next() % 28), true),
                        _ => mem(dev, index, 1 << (4 + next() % 27), false),
                    }
                })
                .collect();
            match plan(&reqs, &w) {
                Ok(p) => {
                    assert_eq!(p.len(), reqs.len());
                    check(&p, &w);
                    fitted += 1;
                }
                Err(_) => refused += 1,
            }
        }
        assert!(fitted > 100 && refused > 100, "{fitted} {refused}");
    }
}
