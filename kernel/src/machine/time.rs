//! The monotonic clock: the TSC scaled to nanoseconds since boot.
//!
//! The frequency comes, in order of trust, from Xen's CPUID time leaf (the guest TSC
//! frequency Xen guarantees), from CPUID 0x15, or from a measurement against the PIT.

use core::sync::atomic::{AtomicU64, Ordering};

use super::arch::{self, rdtsc};

static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// Record the boot instant; called first thing.
pub fn mark_boot() {
    TSC_AT_BOOT.store(rdtsc(), Ordering::Relaxed);
}

pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Nanoseconds since `mark_boot`; 0 until calibrated.
pub fn now_ns() -> u64 {
    let khz = TSC_KHZ.load(Ordering::Relaxed);
    if khz == 0 {
        return 0;
    }
    let ticks = rdtsc().wrapping_sub(TSC_AT_BOOT.load(Ordering::Relaxed));
    (ticks as u128 * 1_000_000 / khz as u128) as u64
}

/// Find the TSC frequency, given the one Xen guarantees if it told one
/// (`hv::tsc_khz`); returns where it came from.
pub fn calibrate(xen_khz: Option<u64>) -> &'static str {
    let (khz, source) = if let Some(k) = xen_khz {
        (k, "xen cpuid")
    } else if let Some(k) = arch::cpu::tsc_khz_from_cpuid() {
        (k, "cpuid 0x15")
    } else if let Some(k) = arch::pit::measure_tsc_khz(20) {
        (k, "pit")
    } else {
        // No reference at all: assume 1 GHz so time still moves; say so loudly.
        log::warn!("no TSC reference (no Xen leaf, CPUID 0x15 or PIT); assuming 1 GHz");
        (1_000_000, "assumed")
    };
    TSC_KHZ.store(khz.max(1), Ordering::Relaxed);
    source
}
