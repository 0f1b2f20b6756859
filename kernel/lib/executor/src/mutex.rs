//! A lock held across `.await` by tasks of one executor: several backends share one
//! device, and a device command spans many polls. Releasing wakes every waiter and the
//! first to run takes the lock: no order is promised, but a waiter that is cancelled
//! (dropped by a timeout) can never strand the others.

use alloc::collections::VecDeque;
use core::cell::{Cell, RefCell, RefMut};
use core::future::Future;
use core::ops::{Deref, DerefMut};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

pub struct Mutex<T> {
    locked: Cell<bool>,
    waiters: RefCell<VecDeque<Waker>>,
    value: RefCell<T>,
}

impl<T> Mutex<T> {
    pub fn new(value: T) -> Self {
        Mutex {
            locked: Cell::new(false),
            waiters: RefCell::new(VecDeque::new()),
            value: RefCell::new(value),
        }
    }

    pub fn lock(&self) -> Lock<'_, T> {
        Lock { m: self }
    }

    /// The lock if nobody holds it.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        if self.locked.replace(true) {
            return None;
        }
        Some(MutexGuard {
            m: self,
            value: self.value.borrow_mut(),
        })
    }

    pub fn is_locked(&self) -> bool {
        self.locked.get()
    }
}

pub struct Lock<'a, T> {
    m: &'a Mutex<T>,
}

impl<'a, T> Future for Lock<'a, T> {
    type Output = MutexGuard<'a, T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(g) = self.m.try_lock() {
            return Poll::Ready(g);
        }
        let mut w = self.m.waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push_back(cx.waker().clone());
        }
        Poll::Pending
    }
}

pub struct MutexGuard<'a, T> {
    m: &'a Mutex<T>,
    value: RefMut<'a, T>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.m.locked.set(false);
        let waiters = core::mem::take(&mut *self.m.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use alloc::vec::Vec;
    use core::pin::pin;

    #[test]
    fn excludes_until_released() {
        let m = Rc::new(Mutex::new(Vec::new()));
        let cx = &mut Context::from_waker(Waker::noop());
        let g = m.try_lock().unwrap();
        let mut a = pin!(m.lock());
        let mut b = pin!(m.lock());
        assert!(a.as_mut().poll(cx).is_pending());
        assert!(b.as_mut().poll(cx).is_pending());
        assert!(m.try_lock().is_none());
        drop(g);
        let Poll::Ready(mut ga) = a.as_mut().poll(cx) else {
            panic!("a waiter gets the released lock")
        };
        ga.push(1);
        assert!(b.as_mut().poll(cx).is_pending());
        drop(ga);
        let Poll::Ready(mut gb) = b.as_mut().poll(cx) else {
            panic!("the other waiter gets it next")
        };
        gb.push(2);
        drop(gb);
        assert_eq!(*m.try_lock().unwrap(), [1, 2]);
    }
}
