//! The xl `rate=` limit on what a guest transmits: a credit of bytes per period, as
//! Linux xen-netback implements it (credit refilled once per period, bursts up to
//! 128 KiB so that one large GSO send can always pass eventually).

/// Largest burst allowed whatever the configured credit (Linux: 131072).
const MAX_BURST: u64 = 131_072;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub bytes: u64,
    pub period_ns: u64,
    remaining: u64,
    window_start: u64,
}

impl Rate {
    pub fn new(bytes: u64, period_ns: u64) -> Rate {
        Rate {
            bytes,
            period_ns,
            remaining: bytes,
            window_start: 0,
        }
    }

    /// Take credit for `len` bytes at `now`; when there is not enough, the time to try
    /// again (the packet waits, it is not dropped).
    pub fn admit(&mut self, now: u64, len: usize) -> Result<(), u64> {
        let next = self.window_start.saturating_add(self.period_ns);
        if now >= next {
            self.window_start = now;
            let max_burst = MAX_BURST.max(self.bytes);
            self.remaining = self.remaining.saturating_add(self.bytes).min(max_burst);
        }
        if len as u64 > self.remaining {
            return Err(self.window_start.saturating_add(self.period_ns));
        }
        self.remaining -= len as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_bytes_per_period() {
        // 10 000 bytes per 10 ms = 1 MB/s.
        let mut r = Rate::new(10_000, 10_000_000);
        let mut sent = 0u64;
        let mut now = 0u64;
        while now < 1_000_000_000 {
            match r.admit(now, 1500) {
                Ok(()) => sent += 1500,
                Err(at) => {
                    assert!(at > now);
                    now = at;
                }
            }
        }
        // About 1 MB in one second (less what is left over per period, plus at most the
        // first burst).
        assert!((950_000..=1_000_000 + MAX_BURST).contains(&sent), "{sent}");
    }

    #[test]
    fn a_packet_larger_than_the_credit_passes_after_accumulating() {
        let mut r = Rate::new(1000, 1_000_000);
        let mut now = 0;
        let mut tries = 0;
        while r.admit(now, 65_000).is_err() {
            now += 1_000_000;
            tries += 1;
            assert!(tries < 100, "never admitted");
        }
        assert!(tries >= 60);
    }
}
