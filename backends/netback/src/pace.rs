//! How a vif queue's task paces itself between passes: the decisions the kernel's task
//! loop asks about, here where host tests reach them.
//!
//! - [`HeadFirst`]: whether this pass takes large sends head first, so that a send
//!   bound for another guest is copied straight into its buffers. That costs a second
//!   copy hypercall when the send goes elsewhere (the uplink), so after a run of passes
//!   whose heads all went elsewhere it is off for a while.
//! - [`Wakeups`]: whether the task's wake-ups find work, for the event-storm back-off
//!   (`bulkhead_xen::storm`): only the guest's own notifications are judged, packets
//!   moved or receive buffers posted beyond any seen before are work, and the pass
//!   right after a back-off is not a wake-up.

use bulkhead_xen::storm::Storm;

use crate::queue::Stats;

/// Passes in a row whose large sends, taken head first, all went elsewhere than
/// straight into another guest before heads are off for [`HEADS_OFF_NS`].
pub const HEADS_MISSED_MAX: u32 = 8;
pub const HEADS_OFF_NS: u64 = 100_000_000;

/// What became of a pass's large sends taken head first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heads {
    /// The pass took none.
    None,
    /// At least one went straight into another guest.
    Straight,
    /// None did.
    Missed,
}

/// Whether large sends are taken head first.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadFirst {
    missed: u32,
    off_until: u64,
}

impl HeadFirst {
    /// Whether the pass starting at `now` (ns) takes large sends head first.
    pub fn wanted(&self, now: u64) -> bool {
        now >= self.off_until
    }

    /// What became of the heads the pass at `now` took.
    pub fn record(&mut self, now: u64, heads: Heads) {
        match heads {
            Heads::None => {}
            Heads::Straight => self.missed = 0,
            Heads::Missed => {
                self.missed += 1;
                if self.missed >= HEADS_MISSED_MAX {
                    self.missed = 0;
                    self.off_until = now + HEADS_OFF_NS;
                }
            }
        }
    }
}

impl Stats {
    /// Packets moved either way or refused: a wake-up that changes none of these, and
    /// posts no new receive buffers, was for nothing.
    pub fn moved(&self) -> u64 {
        self.tx_packets + self.tx_errors + self.tx_spoofed + self.rx_packets + self.rx_dropped
    }
}

/// A queue task's wake-ups, judged for the event-storm back-off.
#[derive(Debug)]
pub struct Wakeups {
    storm: Storm,
    /// [`Stats::moved`] when the task last woke.
    seen: u64,
    /// The furthest receive-buffer producer index seen: a notification that posts
    /// buffers beyond it is work even when no packet waits for them; one that only
    /// moves the index back and forth is not.
    rx_high: u32,
    /// Whether the guest's own port woke the task: packets the switch queues for the
    /// guest wake it too, and while the guest posts no buffers those move nothing
    /// (judging them masked a receiving guest's ports for up to 64 ms under load, and
    /// its TCP collapsed).
    guest_woke: bool,
    /// The task just slept out a back-off: the pass after it only serves what came
    /// meanwhile.
    backed_off: bool,
}

impl Wakeups {
    /// A queue whose stats say `moved` and whose receive ring's producer is `rx_prod`.
    pub fn new(moved: u64, rx_prod: u32) -> Wakeups {
        Wakeups {
            storm: Storm::new(),
            seen: moved,
            rx_high: rx_prod,
            guest_woke: false,
            backed_off: false,
        }
    }

    /// Before the task waits again, after a pass that left `moved` and found the receive
    /// producer at `rx_prod` (`rx_sane`: not beyond what the ring can hold): how long
    /// to keep the guest's ports masked (an event storm), or None to wait as usual.
    /// Packets left waiting for buffers are not work: a guest that posts none would
    /// otherwise turn the back-off off for ever.
    pub fn before_wait(&mut self, moved: u64, rx_prod: u32, rx_sane: bool) -> Option<u64> {
        let posted = (rx_prod.wrapping_sub(self.rx_high) as i32) > 0 && rx_sane;
        if posted {
            self.rx_high = rx_prod;
        }
        let work = moved != self.seen || posted;
        // Work after any wake-up ends a storm; an empty one counts only when the guest
        // caused it.
        let delay = if self.backed_off || !(self.guest_woke || work) {
            None
        } else {
            self.storm.after_wake(work)
        };
        self.backed_off = false;
        self.guest_woke = false;
        delay
    }

    /// The task slept out a back-off; its queue's stats say `moved`.
    pub fn backed_off(&mut self, moved: u64) {
        self.backed_off = true;
        self.seen = moved;
    }

    /// The task woke, by the guest's own port or not; its queue's stats say `moved`.
    pub fn woke(&mut self, by_guest: bool, moved: u64) {
        self.guest_woke = by_guest;
        self.seen = moved;
    }

    /// Wake-ups that found nothing, and back-offs, in all (for the state dump).
    pub fn storm(&self) -> &Storm {
        &self.storm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_go_off_after_a_run_of_misses_and_come_back() {
        let mut h = HeadFirst::default();
        assert!(h.wanted(0));
        for i in 0..HEADS_MISSED_MAX - 1 {
            h.record(i as u64, Heads::Missed);
            h.record(i as u64, Heads::None);
        }
        assert!(h.wanted(10), "one miss short: still on");
        h.record(10, Heads::Straight);
        for _ in 0..HEADS_MISSED_MAX - 1 {
            h.record(20, Heads::Missed);
        }
        assert!(h.wanted(20), "a straight one starts the count again");
        h.record(20, Heads::Missed);
        assert!(!h.wanted(21));
        assert!(!h.wanted(20 + HEADS_OFF_NS - 1));
        assert!(h.wanted(20 + HEADS_OFF_NS));
    }

    #[test]
    fn a_guest_notifying_for_nothing_is_backed_off_and_work_ends_it() {
        let mut w = Wakeups::new(0, 0);
        w.woke(true, 0);
        assert_eq!(
            w.before_wait(0, 0, true),
            None,
            "one empty wake-up is forgiven"
        );
        w.woke(true, 0);
        let first = w.before_wait(0, 0, true).expect("a storm");
        w.backed_off(0);
        assert_eq!(w.before_wait(0, 0, true), None, "the pass after a back-off");
        w.woke(true, 0);
        assert!(w.before_wait(0, 0, true).unwrap() > first, "it doubles");
        w.woke(true, 0);
        assert_eq!(w.before_wait(3, 0, true), None, "packets moved: work");
        w.woke(true, 3);
        assert_eq!(w.before_wait(3, 0, true), None, "forgiven again after work");
        assert_eq!(w.storm().backoffs, 2);
    }

    #[test]
    fn only_the_guests_own_wakeups_are_judged() {
        let mut w = Wakeups::new(0, 0);
        for _ in 0..10 {
            // The switch queued packets for a guest that posts no buffers.
            w.woke(false, 0);
            assert_eq!(w.before_wait(0, 0, true), None);
        }
        assert_eq!(w.storm().spurious, 0);
    }

    #[test]
    fn posting_buffers_beyond_any_seen_is_work_and_moving_back_is_not() {
        let mut w = Wakeups::new(0, 100);
        w.woke(true, 0);
        assert_eq!(w.before_wait(0, 100, true), None);
        // Posted further: work, however often.
        for p in [101, 150, 200] {
            w.woke(true, 0);
            assert_eq!(w.before_wait(0, p, true), None, "posted up to {p}");
        }
        // Back and forth below the furthest seen: nothing.
        w.woke(true, 0);
        assert_eq!(w.before_wait(0, 150, true), None, "forgiven once");
        w.woke(true, 0);
        assert!(w.before_wait(0, 200, true).is_some(), "not beyond 200");
        // A producer beyond what the ring holds is no posting either.
        let mut w = Wakeups::new(0, 0);
        for _ in 0..2 {
            w.woke(true, 0);
            let _ = w.before_wait(0, 5000, false);
        }
        assert_eq!(w.storm().backoffs, 1);
    }
}
