//! Console lines a guest can make Bulkhead write. Whatever a guest does — errors on
//! every ring, reconnecting in a loop, flapping its state — what it costs in log lines
//! is a burst, then a steady trickle; the rest is counted and said once the budget
//! allows a line again. One budget is shared by all devices and reconnects of a domain,
//! so starting over does not refill it.

use alloc::rc::Rc;
use core::cell::Cell;

/// A token bucket of log lines.
#[derive(Clone)]
pub struct LogBudget {
    inner: Rc<Cell<Bucket>>,
    clock: fn() -> u64,
}

#[derive(Clone, Copy)]
struct Bucket {
    burst: u32,
    /// One line more per this many nanoseconds (0: never refills).
    refill_ns: u64,
    tokens: u32,
    /// When the last token was added.
    at: u64,
    /// Lines refused since the last allowed one.
    refused: u64,
    /// Lines refused in all.
    refused_total: u64,
}

impl LogBudget {
    /// `burst` lines at once, then one per `refill_ns` (0: never again), on `clock`.
    pub fn new(burst: u32, refill_ns: u64, clock: fn() -> u64) -> LogBudget {
        LogBudget {
            inner: Rc::new(Cell::new(Bucket {
                burst,
                refill_ns,
                tokens: burst,
                at: clock(),
                refused: 0,
                refused_total: 0,
            })),
            clock,
        }
    }

    /// May one more line be written now? `Some(n)`: yes, and `n` lines were refused
    /// since the last one (say so); `None`: no, it is counted.
    pub fn allow(&self) -> Option<u64> {
        let now = (self.clock)();
        let mut b = self.inner.get();
        if b.refill_ns > 0 && now > b.at {
            let earned = (now - b.at) / b.refill_ns;
            if earned > 0 {
                b.tokens = (b.tokens as u64 + earned).min(b.burst as u64) as u32;
                b.at += earned * b.refill_ns;
            }
        }
        let r = if b.tokens > 0 {
            b.tokens -= 1;
            let n = b.refused;
            b.refused = 0;
            Some(n)
        } else {
            b.refused += 1;
            b.refused_total += 1;
            None
        };
        self.inner.set(b);
        r
    }

    /// Write a warning if the budget allows, first saying how many were only counted.
    pub fn warn(&self, what: core::fmt::Arguments) {
        if let Some(refused) = self.allow() {
            if refused > 0 {
                log::warn!("{refused} warning(s) about this guest were only counted");
            }
            log::warn!("{what}");
        }
    }

    /// Write an information line (a device's state, a connection made or closed) if
    /// the budget allows, first saying how many were only counted.
    pub fn info(&self, what: core::fmt::Arguments) {
        self.write(|| log::info!("{what}"));
    }

    /// Run `write`, which writes one line of information by other means than the log
    /// (the kernel's event lines), if the budget allows, first saying how many were only
    /// counted: the same budget and count as [`LogBudget::info`].
    pub fn write(&self, write: impl FnOnce()) {
        if let Some(refused) = self.allow() {
            if refused > 0 {
                log::info!("{refused} line(s) about this guest were only counted");
            }
            write();
        }
    }

    /// Lines refused in all.
    pub fn refused_total(&self) -> u64 {
        self.inner.get().refused_total
    }
}

/// A budget of `n` lines that never refills, for code that has no clock (host tests,
/// a queue before the kernel hands it its domain's budget).
pub fn fixed(n: u32) -> LogBudget {
    LogBudget::new(n, 0, || 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    static NOW: AtomicU64 = AtomicU64::new(0);

    fn now() -> u64 {
        NOW.load(Ordering::Relaxed)
    }

    /// Finding 6 of the hostile-guest review: reconnecting does not refill a guest's
    /// budget (it is the domain's, shared by every queue it ever had), and what it
    /// refuses is counted and reported when lines flow again.
    #[test]
    fn a_burst_then_a_trickle_shared_by_every_reconnect() {
        NOW.store(1_000, Ordering::Relaxed);
        let domain = LogBudget::new(4, 10, now);
        let mut written = 0;
        for _reconnect in 0..100 {
            let queue = domain.clone(); // each reconnect's new queue
            for _ in 0..32 {
                if queue.allow().is_some() {
                    written += 1;
                }
            }
        }
        assert_eq!(written, 4);
        assert_eq!(domain.refused_total(), 3196);
        NOW.store(1_035, Ordering::Relaxed); // three lines earned
        assert_eq!(domain.allow(), Some(3196));
        assert_eq!(domain.allow(), Some(0));
        assert_eq!(domain.allow(), Some(0));
        assert_eq!(domain.allow(), None);
        NOW.store(1_000_000, Ordering::Relaxed);
        for _ in 0..4 {
            assert!(domain.allow().is_some());
        }
        assert_eq!(domain.allow(), None, "never more than the burst");
        let f = fixed(2);
        assert!(f.allow().is_some() && f.allow().is_some());
        assert!(f.allow().is_none());
    }
}
