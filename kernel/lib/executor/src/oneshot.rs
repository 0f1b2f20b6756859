//! When the idle loop must write the one-shot timer. Under Xen every write of the local
//! APIC's timer is a VM exit, and most wake-ups (an event channel, a device interrupt)
//! leave the next deadline where it was: the timer already armed for it, or for an
//! earlier time, will wake the loop anyway, so it is left alone.

use crate::Nanos;

/// The one-shot timer's state as the idle loop knows it.
#[derive(Debug, Default)]
pub struct OneShot {
    /// When the armed timer fires; None once it fired (or was never armed).
    armed: Option<Nanos>,
}

impl OneShot {
    pub const fn new() -> OneShot {
        OneShot { armed: None }
    }

    /// The loop will idle at `now` until `deadline`: the delay to arm the timer with,
    /// or None when the timer already armed fires at or before the deadline (not yet
    /// fired). `max` is the longest delay the hardware can hold: a longer one is armed
    /// as `max` and the loop re-arms when it wakes early.
    pub fn arm(&mut self, now: Nanos, deadline: Nanos, max: Nanos) -> Option<Nanos> {
        if let Some(at) = self.armed {
            if now < at && at <= deadline {
                return None;
            }
        }
        let delay = deadline.saturating_sub(now).clamp(1, max.max(1));
        self.armed = Some(now.saturating_add(delay));
        Some(delay)
    }

    /// The timer interrupt came: the next wait arms again.
    pub fn fired(&mut self) {
        self.armed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Nanos = 1 << 40;

    #[test]
    fn the_same_deadline_is_armed_once() {
        let mut t = OneShot::new();
        assert_eq!(t.arm(0, 100, MAX), Some(100));
        assert_eq!(t.arm(10, 100, MAX), None, "woken by another interrupt");
        assert_eq!(
            t.arm(20, 150, MAX),
            None,
            "the armed timer wakes the loop first"
        );
        assert_eq!(t.arm(30, 60, MAX), Some(30), "an earlier deadline re-arms");
        t.fired();
        assert_eq!(t.arm(60, 150, MAX), Some(90), "after it fired, arm again");
    }

    #[test]
    fn a_timer_past_its_time_is_armed_again() {
        // The interrupt may not have been taken yet (or was lost): never rely on a
        // timer whose time has come.
        let mut t = OneShot::new();
        assert_eq!(t.arm(0, 100, MAX), Some(100));
        assert_eq!(t.arm(100, 200, MAX), Some(100));
    }

    #[test]
    fn a_delay_beyond_the_hardware_is_clamped_and_armed_again() {
        let mut t = OneShot::new();
        assert_eq!(t.arm(0, 1000, 400), Some(400));
        assert_eq!(t.arm(100, 1000, 400), None);
        t.fired();
        assert_eq!(t.arm(400, 1000, 400), Some(400));
        t.fired();
        assert_eq!(t.arm(800, 1000, 400), Some(200));
        assert_eq!(t.arm(5, 5, 400), Some(1), "a deadline now still arms");
    }
}
