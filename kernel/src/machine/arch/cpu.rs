//! CPU feature detection, and the control-register settings the kernel relies on.

use core::arch::x86_64::__cpuid_count;
use core::sync::atomic::{AtomicBool, Ordering};

static NX: AtomicBool = AtomicBool::new(false);

pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = __cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Vendor and brand-ish identification for the banner.
pub fn vendor() -> [u8; 12] {
    let (_, b, c, d) = cpuid(0, 0);
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&b.to_le_bytes());
    v[4..8].copy_from_slice(&d.to_le_bytes());
    v[8..12].copy_from_slice(&c.to_le_bytes());
    v
}

/// Detect features and switch on the ones the kernel uses (NX), before its page tables.
pub fn init() {
    let (max_ext, ..) = cpuid(0x8000_0000, 0);
    if max_ext >= 0x8000_0001 {
        let (_, _, _, edx) = cpuid(0x8000_0001, 0);
        if edx & (1 << 20) != 0 {
            use x86_64::registers::model_specific::{Efer, EferFlags};
            // SAFETY: setting NXE only makes bit 63 of page-table entries meaningful; the
            // boot tables never set it.
            unsafe { Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE)) };
            NX.store(true, Ordering::Relaxed);
        }
    }
}

pub fn has_nx() -> bool {
    NX.load(Ordering::Relaxed)
}

/// TSC frequency from CPUID leaf 0x15/0x16 when the CPU reports it.
pub fn tsc_khz_from_cpuid() -> Option<u64> {
    let (max, ..) = cpuid(0, 0);
    if max >= 0x15 {
        let (den, num, crystal_hz, _) = cpuid(0x15, 0);
        if den != 0 && num != 0 && crystal_hz != 0 {
            return Some(crystal_hz as u64 * num as u64 / den as u64 / 1000);
        }
    }
    None
}
