//! How often one device may do work a frontend can ask for in a loop. Connecting maps
//! the frontend's rings and binds its event channels; looking at a state change reads
//! three xenstore nodes. A frontend flapping its state (Initialised, Closed,
//! Initialised, ...) would make the backend do both as fast as xenstore carries the
//! writes. Each is a token bucket: `burst` at once, then one per `interval`: the
//! toolstack's attach, a guest's reboots and a driver reload never wait; a flapping
//! frontend costs a bounded amount a second (state changes that come while it waits
//! are looked at together).

/// Connections a device makes without waiting.
pub const CONNECT_BURST: u32 = 8;
/// Then one per this many nanoseconds.
pub const CONNECT_INTERVAL_NS: u64 = 1_000_000_000;
/// Looks at a device's state changes without waiting.
pub const LOOK_BURST: u32 = 16;
/// Then one per this many nanoseconds.
pub const LOOK_INTERVAL_NS: u64 = 100_000_000;

/// A token bucket.
#[derive(Debug)]
pub struct Pace {
    burst: u32,
    interval_ns: u64,
    tokens: u32,
    /// When the last token was earned.
    at: u64,
    /// Times the work had to wait.
    pub delayed: u64,
}

impl Pace {
    pub fn new(burst: u32, interval_ns: u64, now: u64) -> Pace {
        Pace {
            burst,
            interval_ns: interval_ns.max(1),
            tokens: burst,
            at: now,
            delayed: 0,
        }
    }

    /// The work is about to be done at `now`: how long it must wait first (0: go).
    /// The wait is taken: the next call counts from its end.
    pub fn take(&mut self, now: u64) -> u64 {
        if now > self.at {
            let earned = (now - self.at) / self.interval_ns;
            if earned > 0 {
                self.tokens = (self.tokens as u64 + earned).min(self.burst as u64) as u32;
                self.at += earned * self.interval_ns;
            }
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            return 0;
        }
        self.delayed += 1;
        // The next token comes at `at + interval`; it is spent on this connection.
        let ready = self.at + self.interval_ns;
        self.at = ready;
        ready.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let mut p = Pace::new(3, 100, 0);
        assert_eq!((p.take(0), p.take(0), p.take(0)), (0, 0, 0));
        assert_eq!(p.take(0), 100, "the fourth waits for the next token");
        assert_eq!(p.take(100), 100, "and the fifth for the one after");
        assert_eq!(p.delayed, 2);
        // Quiet for a long time: the burst is back, no more.
        assert_eq!((p.take(10_000), p.take(10_000), p.take(10_000)), (0, 0, 0));
        assert_eq!(p.take(10_000), 100);
    }

    #[test]
    fn a_flapping_frontend_connects_at_the_interval_rate() {
        let mut p = Pace::new(CONNECT_BURST, CONNECT_INTERVAL_NS, 0);
        let mut now = 0u64;
        let mut connects = 0u32;
        // As fast as it can for 60 s: each connection happens after its wait.
        while now < 60_000_000_000 {
            now += p.take(now) + 1_000_000;
            connects += 1;
        }
        let per_minute = (60_000_000_000 / CONNECT_INTERVAL_NS) as u32;
        assert!(connects <= CONNECT_BURST + per_minute + 1, "{connects}");
        assert!(connects >= per_minute - 1, "{connects}");
    }
}
