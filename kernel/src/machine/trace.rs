//! The flight recorder: the last things this CPU did where it meets the hypervisor or the
//! hardware (interrupts taken, halts and wake-ups, timer arms, hypercalls), in a ring in
//! memory under a magic header. It is for a post-mortem from outside after a reset that
//! left Bulkhead no chance to log: a triple fault (docs/testing.md). The test harness keeps
//! such a domain (`on_reboot="preserve"`), takes `xl dump-core` of it and decodes the
//! ring with tests/xen/trace.py. Recording costs a few stores per event and no VM exit.

use core::sync::atomic::{AtomicU64, Ordering};

/// Entries kept; a power of two.
const ENTRIES: usize = 128;

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Event {
    /// An interrupt or exception vector taken; `at` = the interrupted RIP.
    Vector = 1,
    /// The idle loop halts (`sti; hlt`); `arg` = 1 if a timer deadline was armed.
    Halt = 2,
    /// The idle loop resumed after the halt.
    Wake = 3,
    /// The local APIC timer armed; `arg` = microseconds ahead (saturated).
    TimerArm = 4,
    /// A hypercall is made; `arg` = its number, `at` = its first argument.
    Hypercall = 5,
    /// It returned; `arg` = its number, `at` = the return value.
    HypercallDone = 6,
}

/// The layout tests/xen/trace.py reads: 16 bytes of magic, the count of events ever
/// recorded (slot = count % ENTRIES), then ENTRIES x { tsc, kind << 32 | arg, at }. A page
/// of its own, so a core dump holds it in one piece whatever order it writes pages in.
#[repr(C, align(4096))]
pub struct Recorder {
    magic: [u8; 16],
    count: AtomicU64,
    entries: [[AtomicU64; 3]; ENTRIES],
}

/// One CPU, interrupts nest: the slot is claimed with one atomic add, so a nested record
/// takes the next slot instead of tearing this one.
pub static RECORDER: Recorder = Recorder {
    magic: *b"BULKHEAD-TRACE-1",
    count: AtomicU64::new(0),
    entries: [const { [const { AtomicU64::new(0) }; 3] }; ENTRIES],
};

/// Events of each kind ever recorded, indexed by `Event as usize` (0 unused): the
/// `loop-window` event line reports each window's share (`counts`), so a run can say how
/// many interrupts, halts and hypercalls a workload cost, the VM exits the nested-TCG
/// fault rides on (docs/triple-fault-2026-12-02.md). Apart from the recorder's page,
/// whose layout tests/xen/trace.py reads.
static COUNTS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// Interrupts and exceptions taken, halts, and hypercalls made since boot.
#[derive(Clone, Copy, Default)]
pub struct Counts {
    pub vectors: u64,
    pub halts: u64,
    pub hypercalls: u64,
}

pub fn counts() -> Counts {
    let c = |e: Event| COUNTS[e as usize].load(Ordering::Relaxed);
    Counts {
        vectors: c(Event::Vector),
        halts: c(Event::Halt),
        hypercalls: c(Event::Hypercall),
    }
}

impl Counts {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            vectors: self.vectors.wrapping_sub(earlier.vectors),
            halts: self.halts.wrapping_sub(earlier.halts),
            hypercalls: self.hypercalls.wrapping_sub(earlier.hypercalls),
        }
    }
}

pub fn record(event: Event, arg: u32, at: u64) {
    COUNTS[event as usize].fetch_add(1, Ordering::Relaxed);
    let r = &RECORDER;
    let n = r.count.fetch_add(1, Ordering::Relaxed) as usize;
    let e = &r.entries[n % ENTRIES];
    e[0].store(super::arch::rdtsc(), Ordering::Relaxed);
    e[1].store(((event as u64) << 32) | arg as u64, Ordering::Relaxed);
    e[2].store(at, Ordering::Relaxed);
}
