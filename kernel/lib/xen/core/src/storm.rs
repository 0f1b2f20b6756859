//! Event storms: a frontend may notify its backend's event channel in a tight loop
//! without publishing anything (Xen's XSA-332 is this against Linux backends). Each
//! notification interrupts the driver domain and wakes the ring's task for nothing.
//! After two wake-ups in a row that found no work, the task keeps its port masked for a
//! while before it listens again, doubling up to a cap while the storm lasts; the first
//! wake-up with work ends it. A frontend that notifies only for work (as its ring
//! protocol says) never waits; one that storms costs a bounded number of wake-ups a
//! second. Events that arrive while masked stay pending and are delivered on unmask,
//! so no request is lost, only served up to the delay later.

/// The first delay once a storm is seen.
pub const STORM_FIRST_NS: u64 = 1_000_000;
/// The longest delay: a stormed-at ring still answers within this.
pub const STORM_MAX_NS: u64 = 64_000_000;

/// A port's recent wake-ups.
#[derive(Debug, Default)]
pub struct Storm {
    empty_in_a_row: u32,
    /// Wake-ups that found nothing, in all.
    pub spurious: u64,
    /// Times the port was kept masked.
    pub backoffs: u64,
}

impl Storm {
    pub const fn new() -> Storm {
        Storm {
            empty_in_a_row: 0,
            spurious: 0,
            backoffs: 0,
        }
    }

    /// A wake-up of the port was handled and found `work` (requests, answers) or not:
    /// how long to keep the port masked before waiting on it again (None: wait now).
    pub fn after_wake(&mut self, work: bool) -> Option<u64> {
        if work {
            self.empty_in_a_row = 0;
            return None;
        }
        self.spurious += 1;
        self.empty_in_a_row = self.empty_in_a_row.saturating_add(1);
        // One empty wake-up is normal: a notification racing the backend's last look.
        if self.empty_in_a_row < 2 {
            return None;
        }
        self.backoffs += 1;
        let doublings = (self.empty_in_a_row - 2).min(16);
        Some((STORM_FIRST_NS << doublings).min(STORM_MAX_NS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_never_waits_and_one_empty_wake_is_forgiven() {
        let mut s = Storm::new();
        for _ in 0..100 {
            assert_eq!(s.after_wake(true), None);
            assert_eq!(s.after_wake(false), None);
        }
        assert_eq!((s.spurious, s.backoffs), (100, 0));
    }

    #[test]
    fn a_storm_backs_off_doubling_to_the_cap_and_work_ends_it() {
        let mut s = Storm::new();
        assert_eq!(s.after_wake(false), None);
        let delays: alloc::vec::Vec<u64> = (0..10).filter_map(|_| s.after_wake(false)).collect();
        assert_eq!(&delays[..4], &[1_000_000, 2_000_000, 4_000_000, 8_000_000]);
        assert!(delays.iter().all(|&d| d <= STORM_MAX_NS));
        assert_eq!(*delays.last().unwrap(), STORM_MAX_NS);
        // Bounded wake-ups: at most about one per cap once the storm is established.
        assert_eq!(s.after_wake(true), None);
        assert_eq!(s.after_wake(false), None, "over: forgiven again");
    }
}
