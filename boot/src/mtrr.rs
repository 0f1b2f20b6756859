//! Memory types an HVM domain started without firmware must set itself. With a device
//! model Xen leaves a domain's MTRRs disabled, which makes all of its RAM uncached where
//! the hardware combines the guest's MTRRs with EPT (Intel, with a passed-through
//! device); hvmloader's `cacheattr_init` normally sets them. [`layout`] says what to
//! write as hvmloader does: write-back by default, the fixed ranges write-back except
//! the legacy VGA window (write-combining when the CPU has it), and the MMIO windows
//! uncached through variable ranges, each window cut into naturally aligned powers of
//! two. The kernel writes the MSRs in the order given (the default type last, which
//! turns them on) and reads them back to report.

use core::ops::Range;

pub const MSR_MTRR_CAP: u32 = 0xfe;
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const MSR_MTRR_FIX64K_00000: u32 = 0x250;
pub const MSR_MTRR_FIX16K_80000: u32 = 0x258;
pub const MSR_MTRR_FIX16K_A0000: u32 = 0x259;
pub const MSR_MTRR_FIX4K_C0000: u32 = 0x268;

pub const fn msr_phys_base(i: u32) -> u32 {
    0x200 + 2 * i
}
pub const fn msr_phys_mask(i: u32) -> u32 {
    0x200 + 2 * i + 1
}

const TYPE_UC: u64 = 0;
const TYPE_WC: u64 = 1;
const TYPE_WB: u64 = 6;
/// MTRRdefType: MTRRs enabled, fixed ranges enabled.
const DEF_E: u64 = 1 << 11;
const DEF_FE: u64 = 1 << 10;
/// MTRRphysMask: the range is valid.
const MASK_VALID: u64 = 1 << 11;

/// What `MTRRcap` (MSR 0xfe) says the CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub variable: u8,
    pub fixed: bool,
    pub wc: bool,
}

impl Cap {
    pub fn from_msr(v: u64) -> Cap {
        Cap {
            variable: v as u8,
            fixed: v & (1 << 8) != 0,
            wc: v & (1 << 10) != 0,
        }
    }
}

/// MSR writes, in order.
pub type Writes = heapless::Vec<(u32, u64), 48>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MtrrError {
    /// The windows need more variable ranges than the CPU has; what is left of them
    /// stays write-back (Xen still maps passed-through MMIO uncached).
    TooFewRanges { needed: usize, have: u8 },
}

impl core::fmt::Display for MtrrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MtrrError::TooFewRanges { needed, have } => write!(
                f,
                "the MMIO windows need {needed} variable MTRRs, the CPU has {have}"
            ),
        }
    }
}

/// The naturally aligned power-of-two blocks that make up `r` (page-aligned ends), as
/// variable ranges cover it: at each base the largest block its alignment allows that
/// does not pass the end.
pub fn blocks(r: Range<u64>) -> impl Iterator<Item = (u64, u64)> {
    let mut base = r.start & !0xfff;
    let end = (r.end + 0xfff) & !0xfff;
    core::iter::from_fn(move || {
        if base >= end {
            return None;
        }
        let mut size = if base == 0 {
            1u64 << 63
        } else {
            1 << base.trailing_zeros()
        };
        while size > end - base {
            size >>= 1;
        }
        let b = (base, size);
        base += size;
        Some(b)
    })
}

/// The MSR writes that make RAM write-back and `uncached` (the MMIO windows) uncached,
/// for a CPU with `cap` and `phys_bits` of physical address. Writes every range it has
/// room for even when it returns the error.
pub fn layout(cap: Cap, phys_bits: u8, uncached: &[Range<u64>]) -> (Writes, Result<(), MtrrError>) {
    let mut w = Writes::new();
    let mut def = DEF_E | TYPE_WB;
    let all = |t: u64| t * 0x0101_0101_0101_0101;
    if cap.fixed {
        let _ = w.push((MSR_MTRR_FIX64K_00000, all(TYPE_WB)));
        let _ = w.push((MSR_MTRR_FIX16K_80000, all(TYPE_WB)));
        let vga = if cap.wc { TYPE_WC } else { TYPE_UC };
        let _ = w.push((MSR_MTRR_FIX16K_A0000, all(vga)));
        for i in 0..8 {
            let _ = w.push((MSR_MTRR_FIX4K_C0000 + i, all(TYPE_WB)));
        }
        def |= DEF_FE;
    }
    let addr_mask = ((1u64 << phys_bits.clamp(32, 52)) - 1) & !0xfff;
    let needed: usize = uncached.iter().map(|r| blocks(r.clone()).count()).sum();
    let ranges = uncached.iter().flat_map(|r| blocks(r.clone()));
    // At most what `Writes` holds besides the 11 fixed and the default-type writes.
    let usable = (cap.variable as u32).min(((48 - 12) / 2) as u32);
    for (i, (base, size)) in (0..usable).zip(ranges) {
        let _ = w.push((msr_phys_base(i), base | TYPE_UC));
        let _ = w.push((msr_phys_mask(i), (!(size - 1) & addr_mask) | MASK_VALID));
    }
    let _ = w.push((MSR_MTRR_DEF_TYPE, def));
    let r = if needed > usable as usize {
        Err(MtrrError::TooFewRanges {
            needed,
            have: usable as u8,
        })
    } else {
        Ok(())
    };
    (w, r)
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    const CAP: Cap = Cap {
        variable: 8,
        fixed: true,
        wc: true,
    };

    #[test]
    fn the_hvm_hole_takes_two_ranges_and_ram_is_write_back() {
        let (w, r) = layout(CAP, 39, &[0xf000_0000..0xfc00_0000]);
        assert_eq!(r, Ok(()));
        let get = |msr: u32| w.iter().find(|(m, _)| *m == msr).map(|(_, v)| *v);
        assert_eq!(get(MSR_MTRR_FIX64K_00000), Some(0x0606_0606_0606_0606));
        assert_eq!(get(MSR_MTRR_FIX16K_A0000), Some(0x0101_0101_0101_0101));
        assert_eq!(get(MSR_MTRR_FIX4K_C0000 + 7), Some(0x0606_0606_0606_0606));
        // 0xf0000000 + 128 MiB, 0xf8000000 + 64 MiB, uncached.
        assert_eq!(get(msr_phys_base(0)), Some(0xf000_0000));
        assert_eq!(get(msr_phys_mask(0)), Some(0x7f_f800_0000 | 1 << 11));
        assert_eq!(get(msr_phys_base(1)), Some(0xf800_0000));
        assert_eq!(get(msr_phys_mask(1)), Some(0x7f_fc00_0000 | 1 << 11));
        assert_eq!(get(msr_phys_base(2)), None);
        // Enabled last: E, FE, default write-back.
        assert_eq!(w.last(), Some(&(MSR_MTRR_DEF_TYPE, 0xc06)));
    }

    #[test]
    fn blocks_cover_a_range_exactly_with_aligned_powers_of_two() {
        for r in [
            0xf000_0000..0xfc00_0000u64,
            0x1_0000_0000..0x1_4000_0000,
            0x1_0000_1000..0x1_0200_0000,
            0..0x3000,
        ] {
            let mut at = r.start;
            for (base, size) in blocks(r.clone()) {
                assert_eq!(base, at);
                assert!(size.is_power_of_two() && base % size == 0);
                at += size;
            }
            assert_eq!(at, r.end);
        }
    }

    #[test]
    fn too_few_ranges_is_an_error_and_what_fits_is_still_set() {
        let cap = Cap {
            variable: 1,
            fixed: false,
            wc: false,
        };
        let (w, r) = layout(cap, 36, &[0xf000_0000..0xfc00_0000]);
        assert_eq!(r, Err(MtrrError::TooFewRanges { needed: 2, have: 1 }));
        // One range, then the default type without fixed ranges.
        assert_eq!(w.len(), 3);
        assert_eq!(w.last(), Some(&(MSR_MTRR_DEF_TYPE, 0x806)));
        assert_eq!(Cap::from_msr(0x508), CAP);
    }

    /// A CPU claiming 255 variable ranges and windows needing many: the writes still
    /// fit and still end with the default type (which turns the MTRRs on).
    #[test]
    fn many_ranges_never_crowd_out_the_enable() {
        let cap = Cap {
            variable: 255,
            fixed: true,
            wc: true,
        };
        let (w, r) = layout(cap, 52, &[0x1000..0x1_0000_0000_0000 - 0x1000]);
        assert!(
            matches!(r, Err(MtrrError::TooFewRanges { have: 18, .. })),
            "{r:?}"
        );
        assert_eq!(w.last(), Some(&(MSR_MTRR_DEF_TYPE, 0xc06)));
    }
}
