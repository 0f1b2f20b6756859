//! The legacy 8254 PIT, used only to measure the TSC on bare metal/QEMU where no
//! hypervisor or CPUID leaf reports its frequency. Channel 2 is used because its gate and
//! output are visible through port 0x61 without any interrupt.

use super::{inb, outb, rdtsc};

const PIT_HZ: u64 = 1_193_182;

/// TSC ticks per millisecond measured over `ms` milliseconds, or `None` if the PIT does
/// not count (absent, as in a Xen PVH domain).
pub fn measure_tsc_khz(ms: u64) -> Option<u64> {
    let count = PIT_HZ * ms / 1000;
    if count > 0xffff {
        return None;
    }
    // Gate low, speaker off, then channel 2, lobyte/hibyte, mode 0 (interrupt on terminal
    // count: OUT2 goes high when the count reaches zero).
    let p61 = inb(0x61) & !0x03;
    outb(0x61, p61);
    outb(0x43, 0xb0);
    outb(0x42, (count & 0xff) as u8);
    outb(0x42, (count >> 8) as u8);
    let start = rdtsc();
    outb(0x61, p61 | 0x01);
    // Bounded: a missing PIT reads as 0xff (OUT2 "high" at once) or never changes.
    let mut spins = 0u64;
    while inb(0x61) & 0x20 == 0 {
        spins += 1;
        if spins > 50_000_000 {
            return None;
        }
    }
    let end = rdtsc();
    outb(0x61, p61);
    if spins == 0 {
        return None;
    }
    Some((end - start) / ms)
}
