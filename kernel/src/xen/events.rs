//! Event channels: the shared-info page, the HVM callback vector, and waking the task
//! that waits on each port.
//!
//! The callback (interrupt context) scans the shared-info bitmaps into `PENDING` and
//! raises `EVENTS`; its hook in the event loop (`dispatch`) then marks each port fired and
//! wakes its waiter.
//! A port that fired stays masked until its task waits on it again (late EOI, see
//! `bulkhead_xen::events::scan`): an event storm costs an interrupt per task turn.

use alloc::collections::BTreeMap;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use core::task::{Context, Poll, Waker};

use bulkhead_executor::Signal;
use bulkhead_xen::abi::{self, Port};
use bulkhead_xen::events::{self as ev, scan, EventBitmaps, PendingPorts};
use bulkhead_xen::Errno;

use super::{hv, XenRef};
use crate::arch::interrupts::{self, InterruptFrame};
use crate::machine::shared::{self, SharedPage};

pub const VECTOR_XEN_CALLBACK: u8 = 0xf3;

pub static PENDING: PendingPorts = PendingPorts::new();
pub static EVENTS: Signal = Signal::new();
pub static CALLBACKS: AtomicU64 = AtomicU64::new(0);

/// The shared-info page through atomics: Xen and this CPU both write it.
#[derive(Clone, Copy)]
struct SharedInfo(&'static SharedPage);

impl SharedInfo {
    fn word(&self, off: usize) -> &AtomicU64 {
        self.0.atomic_u64(off)
    }

    fn byte(&self, off: usize) -> &AtomicU8 {
        self.0.atomic_u8(off)
    }
}

impl EventBitmaps for SharedInfo {
    fn take_pending_sel(&self) -> u64 {
        self.byte(abi::VCPU_UPCALL_PENDING)
            .store(0, Ordering::SeqCst);
        self.word(abi::VCPU_PENDING_SEL).swap(0, Ordering::SeqCst)
    }
    fn pending(&self, w: usize) -> u64 {
        self.word(abi::SHINFO_EVTCHN_PENDING + 8 * w)
            .load(Ordering::SeqCst)
    }
    fn mask(&self, w: usize) -> u64 {
        self.word(abi::SHINFO_EVTCHN_MASK + 8 * w)
            .load(Ordering::SeqCst)
    }
    fn clear_pending(&self, w: usize, bits: u64) {
        self.word(abi::SHINFO_EVTCHN_PENDING + 8 * w)
            .fetch_and(!bits, Ordering::SeqCst);
    }
    fn set_mask(&self, w: usize, bits: u64) {
        self.word(abi::SHINFO_EVTCHN_MASK + 8 * w)
            .fetch_or(bits, Ordering::SeqCst);
    }
    fn clear_mask(&self, w: usize, bits: u64) {
        self.word(abi::SHINFO_EVTCHN_MASK + 8 * w)
            .fetch_and(!bits, Ordering::SeqCst);
    }
}

/// The shared-info page, once mapped.
fn shared() -> Option<SharedInfo> {
    shared::shared_info().map(SharedInfo)
}

fn callback(_f: &mut InterruptFrame) {
    let Some(s) = shared() else {
        return;
    };
    CALLBACKS.fetch_add(1, Ordering::Relaxed);
    scan(&s, |p| PENDING.set(p));
    EVENTS.raise();
}

/// Map shared info and route event-channel upcalls to our vector.
pub fn init() -> Result<(), Errno> {
    let page = shared::map_shared_info()?;
    // HVM_PARAM_CALLBACK_TYPE_VECTOR: Xen injects the vector itself, without setting it
    // in-service in the local APIC (Linux does not EOI it either).
    interrupts::register_without_eoi(VECTOR_XEN_CALLBACK, callback);
    hv::hvm_set_param(
        abi::HVM_PARAM_CALLBACK_IRQ,
        abi::HVM_PARAM_CALLBACK_TYPE_VECTOR | VECTOR_XEN_CALLBACK as u64,
    )?;
    // Unmask upcalls for vCPU 0.
    SharedInfo(page)
        .byte(abi::VCPU_UPCALL_MASK)
        .store(0, Ordering::SeqCst);
    log::info!("shared info mapped, upcalls on vector {VECTOR_XEN_CALLBACK:#x}");
    Ok(())
}

/// Stop upcalls for `port`; events still set its pending bit.
pub fn mask(port: Port) {
    if let (Some(s), Some((w, bit))) = (shared(), ev::port_bit(port)) {
        s.set_mask(w, bit);
    }
}

/// Re-enable upcalls for `port`; Xen delivers one at once if it became pending meanwhile.
pub fn unmask(port: Port) -> Result<(), Errno> {
    use bulkhead_xen::Hypervisor;
    super::Hv.evtchn_unmask(port)
}

/// `port`'s bit in one of the shared-info event bitmaps (pending or mask).
fn bitmap_bit(port: Port, bitmap: impl Fn(&SharedInfo, usize) -> u64) -> bool {
    match (shared(), ev::port_bit(port)) {
        (Some(s), Some((w, bit))) => bitmap(&s, w) & bit != 0,
        _ => false,
    }
}

/// Whether `port` has an undelivered event (set while masked).
pub fn is_pending(port: Port) -> bool {
    bitmap_bit(port, |s, w| s.pending(w))
}

/// Whether upcalls for `port` are masked.
pub fn is_masked(port: Port) -> bool {
    bitmap_bit(port, |s, w| s.mask(w))
}

/// One port's delivery state for a dump: fired (not yet consumed by its task), pending
/// and masked in shared info.
pub fn describe(xen: &super::Xen, port: Port) -> alloc::string::String {
    alloc::format!(
        "port {port} fired {} pending {} masked {}",
        xen.waiters.has_fired(port) as u8,
        is_pending(port) as u8,
        is_masked(port) as u8
    )
}

/// Tasks waiting on ports: a fired flag and a waker per port (task context only).
#[derive(Default)]
pub struct Waiters {
    map: RefCell<BTreeMap<Port, (bool, Option<Waker>)>>,
}

impl Waiters {
    fn fire(&self, port: Port) -> bool {
        let mut m = self.map.borrow_mut();
        match m.get_mut(&port) {
            Some((fired, w)) => {
                *fired = true;
                if let Some(w) = w.take() {
                    w.wake();
                }
                true
            }
            None => false,
        }
    }

    /// Wake the task waiting on `port` as if an event came (to make it look at a stop
    /// request).
    pub fn kick(&self, port: Port) {
        self.fire(port);
    }

    /// Start tracking a port, so events that arrive before the first wait are kept.
    pub fn track(&self, port: Port) {
        self.map.borrow_mut().entry(port).or_insert((false, None));
    }

    /// Whether `port` fired since the last wait (without consuming it).
    pub fn has_fired(&self, port: Port) -> bool {
        self.map.borrow().get(&port).is_some_and(|e| e.0)
    }

    /// Drop a fired flag without waiting: the task is about to look at everything an
    /// event so far could announce, so waking it again for those would find nothing.
    pub fn clear(&self, port: Port) {
        if let Some(e) = self.map.borrow_mut().get_mut(&port) {
            e.0 = false;
        }
    }

    pub fn forget(&self, port: Port) {
        self.map.borrow_mut().remove(&port);
    }

    /// Wait until `port` fires (consumes the event).
    pub fn wait(&self, port: Port) -> PortWait<'_> {
        self.track(port);
        PortWait { w: self, port }
    }
}

pub struct PortWait<'a> {
    w: &'a Waiters,
    port: Port,
}

impl Future for PortWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut m = self.w.map.borrow_mut();
        let e = m.entry(self.port).or_insert((false, None));
        // The port stays masked from its last event until here (see `ev::scan`).
        if core::mem::take(&mut e.0) || shared().is_some_and(|s| ev::rearm(&s, self.port)) {
            Poll::Ready(())
        } else {
            e.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Turn the recorded ports into wake-ups: `EVENTS`' hook in the loop (see
/// `Handle::on_raise`), so a port's task runs in the same pass its event is seen.
pub fn dispatch(xen: &XenRef) {
    PENDING.drain(|p| {
        xen.ports.borrow_mut().fired(p);
        // Ports nobody waits on (the console's, acknowledging output) are only
        // counted: logging them would print, notify and fire again forever. The
        // callback left the port masked; nobody will wait to unmask it.
        if !xen.waiters.fire(p) {
            if let Some(s) = shared() {
                ev::release(&s, p);
            }
        }
    });
}
