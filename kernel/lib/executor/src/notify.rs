//! Task-to-task wake-ups: a [`Notify`] is a flag with one waiter (a producer task hands
//! work over and notifies; the consumer task waits), and [`first`] waits for whichever
//! of several futures finishes first (a backend queue waits on its event channels, its
//! inbound packets and a timer at once).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub const fn new() -> Self {
        Notify {
            set: Cell::new(false),
            waker: RefCell::new(None),
        }
    }

    /// Set the flag and wake the waiter, if any (a notify with nobody waiting is kept).
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Wait until notified, then clear the flag.
    pub fn wait(&self) -> NotifyWait<'_> {
        NotifyWait(self)
    }
}

pub struct NotifyWait<'a>(&'a Notify);

impl Future for NotifyWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.set.replace(false) {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A request every listening task acts on once (a state dump): the generation counts
/// requests, and each listener remembers the last one it answered. Wakers are kept one
/// per task, so a listener that waits often does not grow the list.
#[derive(Default)]
pub struct Broadcast {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Broadcast {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn raise(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Whether a request newer than `seen` came; if so, `seen` becomes the latest (the
    /// listener answers it now).
    pub fn take_newer(&self, seen: &mut u64) -> bool {
        let now = self.generation.get();
        core::mem::replace(seen, now) != now
    }

    /// Wait for a request newer than `seen`.
    pub fn wait(&self, seen: u64) -> BroadcastWait<'_> {
        BroadcastWait(self, seen)
    }
}

pub struct BroadcastWait<'a>(&'a Broadcast, u64);

impl Future for BroadcastWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.generation.get() != self.1 {
            return Poll::Ready(());
        }
        let mut ws = self.0.wakers.borrow_mut();
        if !ws.iter().any(|w| w.will_wake(cx.waker())) {
            ws.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Let every other ready task run before going on: a loop that finds more work each
/// time it looks must still not keep the CPU from the rest.
pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Wait for the first of `futures` to finish; its index. The others are dropped.
pub fn first<'a>(futures: Vec<Pin<Box<dyn Future<Output = ()> + 'a>>>) -> First<'a> {
    First(futures)
}

pub struct First<'a>(Vec<Pin<Box<dyn Future<Output = ()> + 'a>>>);

impl Future for First<'_> {
    type Output = usize;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        for (i, f) in self.0.iter_mut().enumerate() {
            if f.as_mut().poll(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use core::pin::pin;

    #[test]
    fn notify_before_and_after_waiting() {
        let n = Rc::new(Notify::new());
        let mut cx = Context::from_waker(Waker::noop());
        n.notify();
        assert!(pin!(n.wait()).poll(&mut cx).is_ready());
        let mut w = pin!(n.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        n.notify();
        assert!(w.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn broadcast_wakes_each_listener_once_per_request() {
        struct Count(core::sync::atomic::AtomicUsize);
        impl alloc::task::Wake for Count {
            fn wake(self: alloc::sync::Arc<Self>) {
                self.0.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
        }
        let count = alloc::sync::Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let b = Broadcast::default();
        let mut cx = Context::from_waker(&waker);
        let seen = b.generation();
        for _ in 0..100 {
            assert!(pin!(b.wait(seen)).poll(&mut cx).is_pending());
        }
        assert_eq!(
            b.wakers.borrow().len(),
            1,
            "one waker per task, however often it waits"
        );
        b.raise();
        assert_eq!(count.0.load(core::sync::atomic::Ordering::Relaxed), 1);
        assert!(pin!(b.wait(seen)).poll(&mut cx).is_ready());
        assert!(pin!(b.wait(b.generation())).poll(&mut cx).is_pending());
        let mut answered = seen;
        assert!(b.take_newer(&mut answered));
        assert_eq!(answered, b.generation());
        assert!(!b.take_newer(&mut answered));
    }

    #[test]
    fn first_reports_which() {
        let a = Notify::new();
        let b = Notify::new();
        let mut cx = Context::from_waker(Waker::noop());
        b.notify();
        let mut f = pin!(first(alloc::vec![Box::pin(a.wait()), Box::pin(b.wait())]));
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(1));
    }
}
