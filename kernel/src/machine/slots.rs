//! Where the map slots are: the guest-physical pages other domains' grants may be
//! mapped at (a window of unpopulated address space, or frames given back to Xen),
//! recorded once when `grants` makes them. Below both `grants` (which makes them) and
//! `hv` (which refuses to map anywhere else), so neither depends on the other for it.

use alloc::vec::Vec;

enum SlotSet {
    /// Every page of a window of unpopulated address space.
    Window { base: u64, bytes: u64 },
    /// Frames given back to Xen, their addresses sorted.
    Frames(Vec<u64>),
}

static SLOTS: spin::Once<SlotSet> = spin::Once::new();

/// The slots are every page of `bytes` from `base`. Only the first record counts.
pub(in crate::machine) fn set_window(base: u64, bytes: u64) {
    SLOTS.call_once(|| SlotSet::Window { base, bytes });
}

/// The slots are these frames' addresses. Only the first record counts.
pub(in crate::machine) fn set_frames(mut frames: Vec<u64>) {
    frames.sort_unstable();
    SLOTS.call_once(|| SlotSet::Frames(frames));
}

/// Whether `addr` is the start of a map slot (none before they are recorded).
pub(in crate::machine) fn is_slot(addr: u64) -> bool {
    match SLOTS.get() {
        Some(SlotSet::Window { base, bytes }) => addr
            .checked_sub(*base)
            .is_some_and(|o| o < *bytes && o.is_multiple_of(4096)),
        Some(SlotSet::Frames(f)) => f.binary_search(&addr).is_ok(),
        None => false,
    }
}
