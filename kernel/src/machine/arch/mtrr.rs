//! Writing the memory-type range registers (MTRRs), for an HVM domain that no firmware
//! set up. What to write is `bulkhead_boot::mtrr::layout`'s decision; this only does it.

use bulkhead_boot::mtrr;
use x86_64::registers::model_specific::Msr;

use super::cpu;

/// Whether the CPU (as Xen shows it) has MTRRs: CPUID.1:EDX bit 12.
pub fn present() -> bool {
    cpuid_edx1() & (1 << 12) != 0
}

fn cpuid_edx1() -> u32 {
    cpu::cpuid(1, 0).3
}

/// MTRRcap, or None without MTRRs.
pub fn cap() -> Option<mtrr::Cap> {
    // SAFETY: MTRRcap is read-only and exists when CPUID says MTRRs are present.
    present().then(|| mtrr::Cap::from_msr(unsafe { Msr::new(mtrr::MSR_MTRR_CAP).read() }))
}

/// Whether the MTRRs are on (MTRRdefType.E): firmware (hvmloader, SeaBIOS) turns them
/// on; Xen leaves them off for an HVM domain with a device model that none ran in.
pub fn enabled() -> bool {
    // SAFETY: MTRRdefType exists when CPUID says MTRRs are present; reading it has no
    // side effect.
    present() && unsafe { Msr::new(mtrr::MSR_MTRR_DEF_TYPE).read() } & (1 << 11) != 0
}

/// Physical address bits (CPUID 0x80000008), 36 when the leaf is missing.
pub fn phys_bits() -> u8 {
    let (max, ..) = cpu::cpuid(0x8000_0000, 0);
    if max >= 0x8000_0008 {
        cpu::cpuid(0x8000_0008, 0).0 as u8
    } else {
        36
    }
}

/// Write `writes` in order and read each back: the MSRs whose value differs, with what
/// they hold. Only MTRR registers (0x200-0x2ff) are written; anything else is skipped
/// and reported as differing.
pub fn write(writes: &[(u32, u64)]) -> heapless::Vec<(u32, u64), 48> {
    let mut differ = heapless::Vec::new();
    let present = present();
    for &(msr, value) in writes {
        if !(0x200..0x300).contains(&msr) || !present {
            let _ = differ.push((msr, 0));
            continue;
        }
        // SAFETY: MTRRs only set memory types. The layout makes RAM write-back (as it
        // is used already) and MMIO uncached (as the page tables map it), so no access
        // the kernel makes changes meaning; the registers exist (CPUID checked above).
        let back = unsafe {
            let mut m = Msr::new(msr);
            m.write(value);
            m.read()
        };
        if back != value {
            let _ = differ.push((msr, back));
        }
    }
    differ
}
