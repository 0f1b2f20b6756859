//! The life of a task serving one shared ring (a blkif queue, a vif queue, a netif
//! control ring), as blkback and netback start and stop them: the owner keeps a
//! [`Running`], the task a [`Lifeline`]. Stopping sets the flag and kicks the ring's
//! event channel so the task looks at once; the task unmaps and unbinds what it holds,
//! then says it is done, which wakes the owner (no polling).

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::Cell;
use core::future::Future;
use core::pin::Pin;

use bulkhead_executor::Notify;
use bulkhead_xen::abi::Port;

use super::XenRef;

#[derive(Default)]
struct Shared {
    stop: Cell<bool>,
    done: Cell<bool>,
    finished: Notify,
}

/// The serving task's half.
#[derive(Clone)]
pub struct Lifeline(Rc<Shared>);

impl Lifeline {
    /// The owner asked the task to stop.
    pub fn stopping(&self) -> bool {
        self.0.stop.get()
    }

    /// The task released everything it held: the owner may go on.
    pub fn finished(&self) {
        self.0.done.set(true);
        self.0.finished.notify();
    }
}

/// What ended a ring task's wait ([`Lifeline::next_wake`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The owner asked the task to stop.
    Stopping,
    /// The ring's event channel (or a kick from the owner).
    Port,
    /// A state dump: the pass it starts is the task's, not the guest's, and is not
    /// judged for storms.
    Dump,
}

impl Lifeline {
    /// The end of one pass of a ring's task: if the guest's wake-up that started it
    /// brought no work (`worked` false; `None` for a pass the guest did not start)
    /// often enough to be an event storm, keep the port masked a while (`storm`
    /// decides how long), then wait for the ring's next notification, or for a state
    /// dump after `dumped` (the dump generation the task last logged) when it logs its
    /// state in dumps.
    pub async fn next_wake(
        &self,
        xen: &XenRef,
        h: &bulkhead_executor::Handle,
        port: Port,
        storm: &mut bulkhead_xen::storm::Storm,
        worked: Option<bool>,
        dumped: Option<u64>,
    ) -> Woke {
        if let Some(delay) = worked.and_then(|w| storm.after_wake(w)) {
            super::events::mask(port);
            h.sleep(delay).await;
            let _ = super::events::unmask(port);
            if self.stopping() {
                return Woke::Stopping;
            }
        }
        match dumped {
            Some(seen) => {
                let which = bulkhead_executor::first(alloc::vec![
                    Box::pin(xen.waiters.wait(port)) as Pin<Box<dyn Future<Output = ()> + '_>>,
                    Box::pin(xen.dump.wait(seen)),
                ])
                .await;
                if which == 0 {
                    Woke::Port
                } else {
                    Woke::Dump
                }
            }
            None => {
                xen.waiters.wait(port).await;
                Woke::Port
            }
        }
    }
}

/// The owner's half: the task serving the ring whose event channel is `port`.
pub struct Running {
    port: Port,
    life: Rc<Shared>,
}

impl Running {
    /// A task about to be spawned with the returned [`Lifeline`].
    pub fn new(port: Port) -> (Running, Lifeline) {
        let life = Rc::new(Shared::default());
        (
            Running {
                port,
                life: life.clone(),
            },
            Lifeline(life),
        )
    }

    /// Ask the task to stop; it notices at once.
    pub fn stop(&self, xen: &XenRef) {
        self.life.stop.set(true);
        xen.waiters.kick(self.port);
    }

    /// Until the task has released its ring.
    pub async fn stopped(&self) {
        while !self.life.done.get() {
            self.life.finished.wait().await;
        }
    }
}

/// Stop every task of a device, then wait until each has released its ring.
pub async fn stop_all(xen: &XenRef, tasks: &[&Running]) {
    for t in tasks {
        t.stop(xen);
    }
    for t in tasks {
        t.stopped().await;
    }
}
