//! `calibrate`: a fixed amount of work whose wall time tells the test runners how fast
//! this (emulated) machine is. They time it from outside (between the two console lines)
//! and scale their time limits by it; see docs/testing.md. The work is what TCG makes
//! slow for the kernel's real paths: dependent arithmetic, branches, and loads and stores
//! spread over more pages than the emulator's TLB holds.

use alloc::vec;

/// Work units: about a second under TCG on the machine the limits were written on.
const ROUNDS: u64 = 10_000_000;
/// 2 MiB of u64s: 512 pages, beyond QEMU's soft-TLB reach.
const WORDS: usize = 1 << 18;

/// Runs the loop between a start and a done line and returns its checksum.
pub fn run() -> u64 {
    let mut buf = vec![0u64; WORDS];
    crate::println!(
        "calibrate: start ({ROUNDS} rounds over {} KiB)",
        WORDS * 8 / 1024
    );
    let t0 = crate::time::now_ns();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut sum: u64 = 0;
    for r in 0..ROUNDS {
        // xorshift64: the next index depends on the last, so nothing is hoisted.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x as usize) & (WORDS - 1);
        buf[i] = buf[i].wrapping_add(x ^ r);
        if x & 1 == 0 {
            sum = sum.wrapping_add(buf[(i * 7 + 1) & (WORDS - 1)]);
        }
    }
    let sum = core::hint::black_box(sum);
    let us = (crate::time::now_ns() - t0) / 1000;
    crate::println!("calibrate: done in {us} us (checksum {sum:#x})");
    sum
}
