//! Event channels: finding which ports fired in the shared-info bitmaps (2-level ABI), and
//! the table of ports this domain has bound.
//!
//! Interrupt context only scans and records ([`scan`] into [`PendingPorts`], atomics
//! only); the event loop drains the record and wakes whoever waits on each port.

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::collections::BTreeMap;

use crate::abi::{DomId, Port, EVTCHN_2L_NR_PORTS};
use crate::{Errno, Hypervisor};

/// The shared-info bitmaps as the dispatcher needs them; the kernel implements this over
/// the shared_info page with atomic operations.
pub trait EventBitmaps {
    /// Clear vcpu_info.evtchn_upcall_pending, then atomically take evtchn_pending_sel.
    fn take_pending_sel(&self) -> u64;
    fn pending(&self, word: usize) -> u64;
    fn mask(&self, word: usize) -> u64;
    /// Atomically clear `bits` in evtchn_pending[word].
    fn clear_pending(&self, word: usize, bits: u64);
    /// Atomically set `bits` in evtchn_mask[word].
    fn set_mask(&self, word: usize, bits: u64);
    /// Atomically clear `bits` in evtchn_mask[word].
    fn clear_mask(&self, word: usize, bits: u64);
}

/// Report every pending, unmasked port once, clearing its pending bit first (so an event
/// arriving while it is handled is kept rather than lost), and leave it masked: a port
/// interrupts again only after its task waits on it again ([`rearm`]). This is Linux's
/// "late EOI" answer to XSA-332: a frontend that notifies in a tight loop gets one
/// interrupt per turn of the task serving it, never one per notification. Unmasked, a
/// storm faster than the driver domain takes an interrupt kept it inside the handler:
/// no task ran, every guest's I/O stopped for as long as the storm lasted.
pub fn scan(b: &impl EventBitmaps, mut fired: impl FnMut(Port)) {
    loop {
        let sel = b.take_pending_sel();
        if sel == 0 {
            return;
        }
        for word in BitIter(sel) {
            let bits = b.pending(word) & !b.mask(word);
            if bits == 0 {
                continue;
            }
            b.set_mask(word, bits);
            b.clear_pending(word, bits);
            for bit in BitIter(bits) {
                fired((word * 64 + bit) as Port);
            }
        }
    }
}

struct BitIter(u64);

impl Iterator for BitIter {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(i)
    }
}

/// A task is about to wait on `port`, which [`scan`] left masked when it last fired:
/// true if an event came meanwhile (consumed here, the port stays masked: the task
/// runs at once without an interrupt); otherwise the port is unmasked and its next
/// event interrupts. An event that slips in between the look and the unmask is caught
/// by a second look (Xen raises no upcall for an event on a masked port).
pub fn rearm(b: &impl EventBitmaps, port: Port) -> bool {
    let Some((w, bit)) = port_bit(port) else {
        return false;
    };
    if b.pending(w) & bit != 0 && b.mask(w) & bit != 0 {
        b.clear_pending(w, bit);
        return true;
    }
    b.clear_mask(w, bit);
    if b.pending(w) & bit != 0 {
        // Came before the unmask, or after it (then Xen may also raise an upcall, whose
        // scan finds the bit cleared or fires once more: a spare wake-up, never a lost
        // one).
        b.set_mask(w, bit);
        b.clear_pending(w, bit);
        return true;
    }
    false
}

/// Unmask a port nobody waits on (its events are only counted), dropping what is pending.
pub fn release(b: &impl EventBitmaps, port: Port) {
    if let Some((w, bit)) = port_bit(port) {
        b.clear_pending(w, bit);
        b.clear_mask(w, bit);
    }
}

/// Where `port` sits in the 2-level bitmaps: its word and its bit in it (None past the
/// ports the 2-level ABI has).
pub fn port_bit(port: Port) -> Option<(usize, u64)> {
    (port < EVTCHN_2L_NR_PORTS).then(|| (port as usize / 64, 1u64 << (port % 64)))
}

/// Ports that fired and are not yet handled; written from interrupt context.
pub struct PendingPorts {
    words: [AtomicU64; 64],
}

impl PendingPorts {
    pub const fn new() -> Self {
        PendingPorts {
            words: [const { AtomicU64::new(0) }; 64],
        }
    }

    pub fn set(&self, port: Port) {
        if let Some((w, bit)) = port_bit(port) {
            self.words[w].fetch_or(bit, Ordering::AcqRel);
        }
    }

    pub fn any(&self) -> bool {
        self.words.iter().any(|w| w.load(Ordering::Acquire) != 0)
    }

    /// Take every recorded port.
    pub fn drain(&self, mut f: impl FnMut(Port)) {
        for (i, w) in self.words.iter().enumerate() {
            let bits = w.swap(0, Ordering::AcqRel);
            for bit in BitIter(bits) {
                f((i * 64 + bit) as Port);
            }
        }
    }
}

impl Default for PendingPorts {
    fn default() -> Self {
        Self::new()
    }
}

/// What a bound port is for, for status reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Allocated for `remote` to bind to.
    Unbound {
        remote: DomId,
    },
    Interdomain {
        remote: DomId,
        remote_port: Port,
    },
    /// Set up by the toolstack (xenstore, console): known, never closed by us.
    Preset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortState {
    pub binding: Binding,
    pub fired: u64,
}

/// The ports this domain holds.
#[derive(Default)]
pub struct Ports {
    ports: BTreeMap<Port, PortState>,
    /// Events on ports we do not hold (counted, then ignored).
    pub stray: u64,
}

impl Ports {
    pub fn adopt(&mut self, port: Port) {
        self.ports.insert(
            port,
            PortState {
                binding: Binding::Preset,
                fired: 0,
            },
        );
    }

    pub fn alloc_unbound(
        &mut self,
        hv: &mut impl Hypervisor,
        remote: DomId,
    ) -> Result<Port, Errno> {
        let p = hv.evtchn_alloc_unbound(remote)?;
        self.ports.insert(
            p,
            PortState {
                binding: Binding::Unbound { remote },
                fired: 0,
            },
        );
        Ok(p)
    }

    pub fn bind_interdomain(
        &mut self,
        hv: &mut impl Hypervisor,
        remote: DomId,
        remote_port: Port,
    ) -> Result<Port, Errno> {
        let p = hv.evtchn_bind_interdomain(remote, remote_port)?;
        self.ports.insert(
            p,
            PortState {
                binding: Binding::Interdomain {
                    remote,
                    remote_port,
                },
                fired: 0,
            },
        );
        Ok(p)
    }

    /// Close a port we bound. Closing a port we do not hold is refused here rather than
    /// passed to Xen, so a confused backend cannot close someone else's channel.
    pub fn close(&mut self, hv: &mut impl Hypervisor, port: Port) -> Result<(), Errno> {
        match self.ports.get(&port) {
            None
            | Some(PortState {
                binding: Binding::Preset,
                ..
            }) => Err(Errno(-22)),
            Some(_) => {
                hv.evtchn_close(port)?;
                self.ports.remove(&port);
                Ok(())
            }
        }
    }

    /// Record that `port` fired; false if we do not hold it.
    pub fn fired(&mut self, port: Port) -> bool {
        match self.ports.get_mut(&port) {
            Some(s) => {
                s.fired += 1;
                true
            }
            None => {
                self.stray += 1;
                false
            }
        }
    }

    pub fn get(&self, port: Port) -> Option<PortState> {
        self.ports.get(&port).copied()
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeXen;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::Cell;

    struct Bits {
        sel: Cell<u64>,
        pending: [Cell<u64>; 64],
        mask: [Cell<u64>; 64],
    }

    impl Bits {
        fn new() -> Self {
            Bits {
                sel: Cell::new(0),
                pending: core::array::from_fn(|_| Cell::new(0)),
                mask: core::array::from_fn(|_| Cell::new(0)),
            }
        }
        fn raise(&self, port: u32) {
            let w = port as usize / 64;
            self.pending[w].set(self.pending[w].get() | 1 << (port % 64));
            self.sel.set(self.sel.get() | 1 << w);
        }
    }

    impl EventBitmaps for Bits {
        fn take_pending_sel(&self) -> u64 {
            self.sel.replace(0)
        }
        fn pending(&self, w: usize) -> u64 {
            self.pending[w].get()
        }
        fn mask(&self, w: usize) -> u64 {
            self.mask[w].get()
        }
        fn clear_pending(&self, w: usize, bits: u64) {
            self.pending[w].set(self.pending[w].get() & !bits)
        }
        fn set_mask(&self, w: usize, bits: u64) {
            self.mask[w].set(self.mask[w].get() | bits)
        }
        fn clear_mask(&self, w: usize, bits: u64) {
            self.mask[w].set(self.mask[w].get() & !bits)
        }
    }

    /// What Xen does when a domain notifies `port` (2-level ABI): pending always;
    /// selector and upcall only when unmasked.
    fn notify(b: &Bits, port: u32) {
        let w = port as usize / 64;
        b.pending[w].set(b.pending[w].get() | 1 << (port % 64));
        if b.mask[w].get() & 1 << (port % 64) == 0 {
            b.sel.set(b.sel.get() | 1 << w);
        }
    }

    #[test]
    fn a_storm_costs_one_interrupt_per_wait() {
        let b = Bits::new();
        let mut fired = 0;
        // The task waits (rearm: nothing pending, unmasked), then a storm of 1000.
        assert!(!rearm(&b, 9));
        for _ in 0..1000 {
            notify(&b, 9);
            scan(&b, |_| fired += 1);
        }
        assert_eq!(fired, 1, "masked after the first");
        // The task's next wait consumes the rest without an interrupt, stays masked.
        assert!(rearm(&b, 9));
        notify(&b, 9);
        scan(&b, |_| fired += 1);
        assert_eq!(fired, 1);
        // Quiet: the wait after that unmasks, and the next event interrupts again.
        assert!(rearm(&b, 9));
        assert!(!rearm(&b, 9));
        notify(&b, 9);
        scan(&b, |_| fired += 1);
        assert_eq!(fired, 2);
        // Other ports are not held by this one.
        notify(&b, 10);
        scan(&b, |p| assert_eq!(p, 10));
    }

    #[test]
    fn release_unmasks_and_drops_what_waits() {
        let b = Bits::new();
        notify(&b, 70);
        scan(&b, |_| {});
        notify(&b, 70);
        release(&b, 70);
        assert_eq!((b.pending(1), b.mask(1)), (0, 0));
        notify(&b, 70);
        let mut got = 0;
        scan(&b, |_| got += 1);
        assert_eq!(got, 1);
    }

    #[test]
    fn scan_reports_each_unmasked_port_once() {
        let b = Bits::new();
        for p in [1, 3, 64, 130, 4095] {
            b.raise(p);
        }
        b.mask[2].set(1 << 2); // port 130 masked
        let mut got = Vec::new();
        scan(&b, |p| got.push(p));
        assert_eq!(got, vec![1, 3, 64, 4095]);
        // Masked port stays pending for when it is unmasked.
        assert_eq!(b.pending(2), 1 << 2);
        let mut again = Vec::new();
        scan(&b, |p| again.push(p));
        assert!(again.is_empty());
    }

    #[test]
    fn pending_ports_record_and_drain() {
        let pp = PendingPorts::new();
        assert!(!pp.any());
        pp.set(5);
        pp.set(700);
        pp.set(5);
        pp.set(99_999); // out of range: ignored
        assert!(pp.any());
        let mut got = Vec::new();
        pp.drain(|p| got.push(p));
        assert_eq!(got, vec![5, 700]);
        assert!(!pp.any());
    }

    #[test]
    fn bind_fire_close() {
        let mut hv = FakeXen::new(5);
        let mut ports = Ports::default();
        let a = ports.alloc_unbound(&mut hv, 0).unwrap();
        let remote = hv.peer_alloc_unbound(0, 5);
        let b = ports.bind_interdomain(&mut hv, 0, remote).unwrap();
        assert_ne!(a, b);
        assert!(ports.fired(a));
        assert!(!ports.fired(999));
        assert_eq!(ports.stray, 1);
        assert_eq!(ports.get(a).unwrap().fired, 1);
        ports.close(&mut hv, a).unwrap();
        assert!(ports.get(a).is_none());
        assert_eq!(ports.close(&mut hv, a), Err(Errno(-22)));
        ports.adopt(1);
        assert_eq!(
            ports.close(&mut hv, 1),
            Err(Errno(-22)),
            "preset ports are not ours to close"
        );
    }

    #[test]
    fn failed_bind_is_not_recorded() {
        let mut hv = FakeXen::new(5);
        let mut ports = Ports::default();
        assert!(ports.bind_interdomain(&mut hv, 0, 12345).is_err());
        assert!(ports.is_empty());
    }
}
