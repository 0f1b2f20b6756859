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
    /// Bytes charged after admission (the headers a large send repeats in every segment)
    /// beyond the credit left: the next refills pay them first.
    debt: u64,
}

impl Rate {
    pub fn new(bytes: u64, period_ns: u64) -> Rate {
        Rate {
            bytes,
            period_ns,
            remaining: bytes,
            window_start: 0,
            debt: 0,
        }
    }

    /// Take credit for `len` bytes at `now`; when there is not enough, the time to try
    /// again (the packet waits, it is not dropped).
    pub fn admit(&mut self, now: u64, len: usize) -> Result<(), u64> {
        let next = self.window_start.saturating_add(self.period_ns);
        if now >= next {
            self.window_start = now;
            let max_burst = MAX_BURST.max(self.bytes);
            let refill = self.bytes.min(max_burst);
            let paid = refill.min(self.debt);
            self.debt -= paid;
            self.remaining = self.remaining.saturating_add(refill - paid).min(max_burst);
        }
        if len as u64 > self.remaining {
            return Err(self.window_start.saturating_add(self.period_ns));
        }
        self.remaining -= len as u64;
        Ok(())
    }

    /// Charge `extra` bytes for a packet already admitted (a large send puts its headers
    /// on the wire once per segment, more than its length): taken from the credit left,
    /// the rest owed and paid by the next periods, so the configured rate holds for what
    /// leaves, not for what the guest handed over.
    pub fn charge(&mut self, extra: u64) {
        let now = extra.min(self.remaining);
        self.remaining -= now;
        self.debt = self.debt.saturating_add(extra - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charged_segment_headers_are_paid_by_later_periods() {
        // 10 000 bytes per 10 ms; a large send whose segments repeat 25 000 header bytes.
        let mut r = Rate::new(10_000, 10_000_000);
        assert_eq!(r.admit(0, 1500), Ok(()));
        r.charge(25_000);
        // The 8 500 left go, 16 500 are owed: the next period pays 10 000 of them, the
        // one after 6 500, leaving 3 500 for traffic.
        assert!(r.admit(1, 100).is_err());
        assert!(r.admit(10_000_000, 100).is_err());
        assert!(r.admit(20_000_000, 3_600).is_err());
        assert_eq!(r.admit(20_000_000, 3_500), Ok(()));
    }

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
