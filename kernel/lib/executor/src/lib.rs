//! The event loop: the single way work is scheduled in Bulkhead.
//!
//! Every driver, backend and service is an `async` task on one executor per CPU. A task
//! waits on three things only: a timer ([`Handle::sleep`]), an interrupt [`Signal`], or
//! another task's waker. Interrupt handlers never touch the executor: they only
//! [`Signal::raise`] (an atomic store), and the loop turns raised signals into wake-ups,
//! so no lock is ever taken in interrupt context. When nothing is ready the loop asks the
//! platform to idle until the next timer deadline or an interrupt ([`Idle`]).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod mutex;
pub mod notify;
pub mod oneshot;
pub mod watch;

pub use mutex::Mutex;
pub use notify::{first, yield_now, Broadcast, Notify};
pub use oneshot::OneShot;
pub use watch::{LoopWatch, Window};

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};

/// Nanoseconds on the platform's monotonic clock.
pub type Nanos = u64;

/// What the loop needs from the platform.
pub trait Idle {
    fn now(&self) -> Nanos;
    /// Sleep until `deadline` (if any) or an interrupt. Must not sleep if `pending()`
    /// says a signal is already raised: the kernel checks it with interrupts disabled and
    /// then enables them and halts atomically (`sti; hlt`), so no wake-up is lost.
    fn wait(&mut self, deadline: Option<Nanos>, pending: &dyn Fn() -> bool);
    /// Take the interrupts that arrived while tasks ran. The kernel runs tasks with
    /// interrupts disabled and opens them only here and in `wait`, at points in its own
    /// code, so a busy loop still sees its interrupts once per pass.
    fn take_interrupts(&mut self) {}
    /// `task`'s poll ended at `now` after `took` (bounded work per wake-up is the rule:
    /// every other task waited that long; see [`LoopWatch`]).
    fn polled(&mut self, _task: &'static str, _now: Nanos, _took: Nanos) {}
}

/// An interrupt-to-task notification. `raise` is safe from interrupt context.
pub struct Signal {
    raised: AtomicBool,
    waker: spin::Mutex<Option<Waker>>,
}

impl Signal {
    pub const fn new() -> Self {
        Signal {
            raised: AtomicBool::new(false),
            waker: spin::Mutex::new(None),
        }
    }

    /// Mark the signal; the loop wakes the waiting task. Only an atomic store.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Wait until raised, then clear it. Raises while nobody waits are kept (once).
    pub fn wait(&'static self) -> SignalWait {
        SignalWait(self)
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

pub struct SignalWait(&'static Signal);

impl Future for SignalWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        *self.0.waker.lock() = Some(cx.waker().clone());
        // A raise between the swap and storing the waker is seen here.
        if self.0.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

type TaskId = u64;
type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

struct Task {
    name: &'static str,
    future: BoxFuture,
    waker: Waker,
}

struct TaskWaker {
    id: TaskId,
    ready: Arc<spin::Mutex<VecDeque<TaskId>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let mut q = self.ready.lock();
        if !q.contains(&self.id) {
            q.push_back(self.id);
        }
    }
}

struct Shared {
    timers: BTreeMap<(Nanos, u64), Waker>,
    timer_seq: u64,
    spawned: Vec<(&'static str, BoxFuture)>,
    signals: Vec<&'static Signal>,
    hooks: Vec<(&'static str, &'static Signal, Hook)>,
}

/// What the loop runs for a raised signal (`Handle::on_raise`).
type Hook = Box<dyn FnMut()>;

/// Given to tasks: spawn, sleep, read the clock, watch signals.
#[derive(Clone)]
pub struct Handle {
    shared: Rc<RefCell<Shared>>,
    clock: Rc<dyn Fn() -> Nanos>,
}

impl Handle {
    pub fn now(&self) -> Nanos {
        (self.clock)()
    }

    pub fn spawn(&self, name: &'static str, f: impl Future<Output = ()> + 'static) {
        self.shared.borrow_mut().spawned.push((name, Box::pin(f)));
    }

    /// Make the loop check `signal` after every idle period. Signals are watched forever.
    pub fn watch(&self, signal: &'static Signal) {
        let mut s = self.shared.borrow_mut();
        assert!(
            !s.hooks.iter().any(|(_, x, _)| core::ptr::eq(*x, signal)),
            "a hooked signal is not waited on"
        );
        if !s.signals.iter().any(|x| core::ptr::eq(*x, signal)) {
            s.signals.push(signal);
        }
    }

    /// Run `f` in the loop whenever `signal` was raised (once per raise seen, the signal
    /// then cleared), before the tasks it wakes are polled: for an interrupt that only
    /// fans out wake-ups (a disk's completion wakes every caller waiting on it; the event
    /// channel upcall wakes each port's waiter). A task that forwarded it would cost one
    /// more pass of the loop per interrupt, before the woken tasks run. `f` must be
    /// short and bounded; its time is reported to [`Idle::polled`] under `name`, as a
    /// task's poll is. Nobody may also `wait` on a hooked signal (its raise would be the
    /// hook's). A hook keeps no task alive: once every task has finished, the loop ends.
    pub fn on_raise(&self, name: &'static str, signal: &'static Signal, f: impl FnMut() + 'static) {
        let mut s = self.shared.borrow_mut();
        assert!(
            !s.signals.iter().any(|x| core::ptr::eq(*x, signal)),
            "a watched signal is not hooked"
        );
        s.hooks.push((name, signal, Box::new(f)));
    }

    /// Complete once the clock reaches `deadline`.
    pub fn sleep_until(&self, deadline: Nanos) -> Sleep {
        Sleep {
            handle: self.clone(),
            deadline,
            key: None,
        }
    }

    pub fn sleep(&self, nanos: Nanos) -> Sleep {
        self.sleep_until(self.now().saturating_add(nanos))
    }

    /// `f`'s output, or `None` if `nanos` pass first (`f` is then dropped).
    pub async fn timeout<T>(&self, nanos: Nanos, f: impl Future<Output = T>) -> Option<T> {
        let mut f = core::pin::pin!(f);
        let mut t = core::pin::pin!(self.sleep(nanos));
        core::future::poll_fn(|cx| {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            if t.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

pub struct Sleep {
    handle: Handle,
    deadline: Nanos,
    key: Option<(Nanos, u64)>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.handle.now() >= self.deadline {
            if let Some(k) = self.key.take() {
                self.handle.shared.borrow_mut().timers.remove(&k);
            }
            return Poll::Ready(());
        }
        let mut s = self.handle.shared.borrow_mut();
        let key = match self.key {
            Some(k) => k,
            None => {
                s.timer_seq += 1;
                (self.deadline, s.timer_seq)
            }
        };
        s.timers.insert(key, cx.waker().clone());
        drop(s);
        self.key = Some(key);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            if let Ok(mut s) = self.handle.shared.try_borrow_mut() {
                s.timers.remove(&k);
            }
        }
    }
}

/// Counters the kernel reports (and the self-test checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub polls: u64,
    pub idles: u64,
    pub timer_fires: u64,
    pub signal_wakes: u64,
    pub tasks_done: u64,
}

pub struct Executor {
    tasks: BTreeMap<TaskId, Task>,
    ready: Arc<spin::Mutex<VecDeque<TaskId>>>,
    next_id: TaskId,
    handle: Handle,
    pub stats: Stats,
}

impl Executor {
    pub fn new(clock: impl Fn() -> Nanos + 'static) -> Self {
        let shared = Shared {
            timers: BTreeMap::new(),
            timer_seq: 0,
            spawned: Vec::new(),
            signals: Vec::new(),
            hooks: Vec::new(),
        };
        Executor {
            tasks: BTreeMap::new(),
            ready: Arc::new(spin::Mutex::new(VecDeque::new())),
            next_id: 1,
            handle: Handle {
                shared: Rc::new(RefCell::new(shared)),
                clock: Rc::new(clock),
            },
            stats: Stats::default(),
        }
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Names of the tasks still alive.
    pub fn task_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tasks.values().map(|t| t.name)
    }

    fn adopt_spawned(&mut self) {
        let spawned = core::mem::take(&mut self.handle.shared.borrow_mut().spawned);
        for (name, future) in spawned {
            let id = self.next_id;
            self.next_id += 1;
            let waker = Waker::from(Arc::new(TaskWaker {
                id,
                ready: self.ready.clone(),
            }));
            self.tasks.insert(
                id,
                Task {
                    name,
                    future,
                    waker,
                },
            );
            self.ready.lock().push_back(id);
        }
    }

    fn fire_signals(&mut self, idle: &mut impl Idle) {
        let s = self.handle.shared.borrow();
        for sig in s.signals.iter() {
            if sig.is_raised() {
                if let Some(w) = sig.waker.lock().take() {
                    self.stats.signal_wakes += 1;
                    w.wake();
                }
            }
        }
        drop(s);
        // Taken out while they run: a hook may use the handle (spawn, read the clock).
        let mut hooks = core::mem::take(&mut self.handle.shared.borrow_mut().hooks);
        for (name, sig, f) in hooks.iter_mut() {
            if sig.raised.swap(false, Ordering::AcqRel) {
                self.stats.signal_wakes += 1;
                let t0 = self.handle.now();
                f();
                let now = self.handle.now();
                idle.polled(name, now, now.saturating_sub(t0));
            }
        }
        let mut s = self.handle.shared.borrow_mut();
        hooks.append(&mut s.hooks);
        s.hooks = hooks;
    }

    fn fire_timers(&mut self) -> Option<Nanos> {
        let now = self.handle.now();
        let mut s = self.handle.shared.borrow_mut();
        while let Some((&(deadline, seq), _)) = s.timers.first_key_value() {
            if deadline > now {
                return Some(deadline);
            }
            if let Some(w) = s.timers.remove(&(deadline, seq)) {
                self.stats.timer_fires += 1;
                w.wake();
            }
        }
        None
    }

    fn any_signal_raised(shared: &Rc<RefCell<Shared>>) -> bool {
        let s = shared.borrow();
        s.signals
            .iter()
            .any(|s| s.is_raised() && s.waker.lock().is_some())
            || s.hooks.iter().any(|(_, s, _)| s.is_raised())
    }

    /// Run until every task has finished (hooks do not count: they only wake tasks).
    pub fn run(&mut self, idle: &mut impl Idle) {
        loop {
            idle.take_interrupts();
            self.fire_signals(idle);
            let next_deadline = self.fire_timers();
            // After the hooks: a task one spawned runs in this pass.
            self.adopt_spawned();
            let mut ran = false;
            // One pass polls the tasks ready when it starts; a task woken meanwhile (one
            // that yields, or one woken by another) waits for the next pass. Between
            // passes interrupts and timers are turned into wake-ups, so a task that keeps
            // yielding can never starve one that waits for an event channel or a timer.
            let mut pass = self.ready.lock().len();
            while pass > 0 {
                pass -= 1;
                let next = self.ready.lock().pop_front();
                let Some(id) = next else { break };
                let Some(task) = self.tasks.get_mut(&id) else {
                    continue;
                };
                ran = true;
                self.stats.polls += 1;
                let waker = task.waker.clone();
                let mut cx = Context::from_waker(&waker);
                let name = task.name;
                let t0 = self.handle.now();
                let done = task.future.as_mut().poll(&mut cx).is_ready();
                let now = self.handle.now();
                idle.polled(name, now, now.saturating_sub(t0));
                if done {
                    self.tasks.remove(&id);
                    self.stats.tasks_done += 1;
                }
                self.adopt_spawned();
            }
            if self.tasks.is_empty() && self.handle.shared.borrow().spawned.is_empty() {
                return;
            }
            if !ran && self.ready.lock().is_empty() {
                self.stats.idles += 1;
                let shared = self.handle.shared.clone();
                let ready = self.ready.clone();
                idle.wait(next_deadline, &move || {
                    !ready.lock().is_empty() || Self::any_signal_raised(&shared)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::sync::atomic::AtomicU64;
    use std::cell::Cell;
    use std::vec;

    /// A clock that only moves when the loop idles, straight to the deadline: tests run
    /// instantly and deterministically.
    struct FakeIdle {
        clock: Rc<Cell<Nanos>>,
        /// Signals an imaginary device raises when the loop idles with no deadline.
        irq: Option<&'static Signal>,
        waits: u32,
        /// A device interrupt that arrives while tasks run: raised at this many-th
        /// interrupt window (`take_interrupts`).
        busy_irq: Option<(u32, &'static Signal)>,
        takes: u32,
        /// What the loop reported to `polled`: task, end, length.
        polls: Vec<(&'static str, Nanos, Nanos)>,
    }

    impl Idle for FakeIdle {
        fn now(&self) -> Nanos {
            self.clock.get()
        }
        fn wait(&mut self, deadline: Option<Nanos>, pending: &dyn Fn() -> bool) {
            self.waits += 1;
            assert!(self.waits < 1000, "loop idles forever");
            if pending() {
                return;
            }
            match (deadline, self.irq.take()) {
                (_, Some(s)) => s.raise(),
                (Some(d), None) => self.clock.set(d.max(self.clock.get())),
                (None, None) => panic!("idle with nothing that can wake the loop"),
            }
        }
        fn polled(&mut self, task: &'static str, now: Nanos, took: Nanos) {
            self.polls.push((task, now, took));
        }
        fn take_interrupts(&mut self) {
            self.takes += 1;
            if let Some((at, s)) = self.busy_irq {
                if self.takes == at {
                    s.raise();
                }
            }
        }
    }

    fn setup() -> (Executor, FakeIdle) {
        let clock = Rc::new(Cell::new(1_000));
        let c2 = clock.clone();
        (
            Executor::new(move || c2.get()),
            FakeIdle {
                clock,
                irq: None,
                waits: 0,
                busy_irq: None,
                takes: 0,
                polls: Vec::new(),
            },
        )
    }

    #[test]
    fn every_poll_is_reported_with_its_task_and_length() {
        let (mut ex, mut idle) = setup();
        let h = ex.handle();
        let (c1, c2) = (idle.clock.clone(), idle.clock.clone());
        h.spawn("short", async move { c1.set(c1.get() + 5) });
        let h2 = h.clone();
        h.spawn("hog", async move {
            c2.set(c2.get() + 300);
            h2.sleep(10).await;
            c2.set(c2.get() + 7);
        });
        ex.run(&mut idle);
        // The hog's second poll comes after the loop idled to its timer (1305 + 10).
        assert_eq!(
            idle.polls,
            vec![("short", 1_005, 5), ("hog", 1_305, 300), ("hog", 1_322, 7)]
        );
    }

    #[test]
    fn runs_tasks_to_completion() {
        let (mut ex, mut idle) = setup();
        let out = Rc::new(RefCell::new(vec![]));
        for i in 0..3 {
            let o = out.clone();
            ex.handle()
                .spawn("t", async move { o.borrow_mut().push(i) });
        }
        ex.run(&mut idle);
        assert_eq!(*out.borrow(), vec![0, 1, 2]);
        assert_eq!(ex.stats.tasks_done, 3);
    }

    #[test]
    fn sleeps_complete_in_deadline_order_and_never_early() {
        let (mut ex, mut idle) = setup();
        let h = ex.handle();
        let out = Rc::new(RefCell::new(vec![]));
        for (name, d) in [("c", 300u64), ("a", 100), ("b", 200)] {
            let (o, h2) = (out.clone(), h.clone());
            h.spawn(name, async move {
                let start = h2.now();
                h2.sleep(d).await;
                assert!(h2.now() - start >= d);
                o.borrow_mut().push(name);
            });
        }
        ex.run(&mut idle);
        assert_eq!(*out.borrow(), vec!["a", "b", "c"]);
        assert_eq!(ex.stats.timer_fires, 3);
        assert_eq!(idle.clock.get(), 1_300);
    }

    #[test]
    fn periodic_task() {
        let (mut ex, mut idle) = setup();
        let h = ex.handle();
        let ticks = Rc::new(Cell::new(0));
        let t = ticks.clone();
        h.clone().spawn("tick", async move {
            for _ in 0..5 {
                h.sleep(10).await;
                t.set(t.get() + 1);
            }
        });
        ex.run(&mut idle);
        assert_eq!(ticks.get(), 5);
        assert_eq!(idle.clock.get(), 1_050);
    }

    #[test]
    fn signal_wakes_waiting_task() {
        static IRQ: Signal = Signal::new();
        let (mut ex, mut idle) = setup();
        idle.irq = Some(&IRQ);
        let h = ex.handle();
        h.watch(&IRQ);
        let got = Rc::new(Cell::new(false));
        let g = got.clone();
        h.spawn("wait-irq", async move {
            IRQ.wait().await;
            g.set(true);
        });
        ex.run(&mut idle);
        assert!(got.get());
        assert_eq!(ex.stats.signal_wakes, 1);
        assert!(!IRQ.is_raised(), "waiting consumes the signal");
    }

    /// A task that yields until another, waiting on `irq`, has run (bounded, so a
    /// starving loop fails the test instead of hanging it); the spin count at which
    /// the waiter woke. `raise_at`: the spinner raises `irq` itself at that spin, as
    /// an interrupt handler would mid-loop.
    fn spin_until_woken(
        ex: &mut Executor,
        idle: &mut FakeIdle,
        irq: &'static Signal,
        raise_at: Option<u32>,
    ) -> Option<u32> {
        let h = ex.handle();
        h.watch(irq);
        let spins = Rc::new(Cell::new(0u32));
        let woke_at = Rc::new(Cell::new(None));
        let (s, w) = (spins.clone(), woke_at.clone());
        h.spawn("wait-irq", async move {
            irq.wait().await;
            w.set(Some(s.get()));
        });
        let (s, w) = (spins, woke_at.clone());
        h.spawn("spin", async move {
            while w.get().is_none() && s.get() < 100_000 {
                if Some(s.get()) == raise_at {
                    irq.raise();
                }
                s.set(s.get() + 1);
                yield_now().await;
            }
        });
        ex.run(idle);
        woke_at.get()
    }

    #[test]
    fn a_task_that_keeps_yielding_does_not_starve_signals() {
        static IRQ: Signal = Signal::new();
        let (mut ex, mut idle) = setup();
        let at = spin_until_woken(&mut ex, &mut idle, &IRQ, Some(10));
        let at = at.expect("the waiting task never ran");
        assert!(at <= 12, "the signal was delivered only after {at} spins");
    }

    /// The kernel runs tasks with interrupts off: an interrupt that arrives while a task
    /// keeps the loop busy is taken at the next pass's window and wakes its task then.
    #[test]
    fn interrupts_are_taken_between_passes_of_a_busy_loop() {
        static IRQ: Signal = Signal::new();
        let (mut ex, mut idle) = setup();
        idle.busy_irq = Some((5, &IRQ));
        let at = spin_until_woken(&mut ex, &mut idle, &IRQ, None);
        assert_eq!(idle.waits, 0, "the loop never idled");
        let at = at.expect("the interrupt never reached its task");
        assert!(at <= 6, "delivered only after {at} passes");
    }

    /// Broadcast waiters, one per task, each counting its wake-up in `woke`.
    fn spawn_broadcast_waiters(h: &Handle, b: &Rc<Broadcast>, n: usize, woke: &Rc<Cell<u32>>) {
        for _ in 0..n {
            let (b, w) = (b.clone(), woke.clone());
            h.spawn("waiter", async move {
                let seen = b.generation();
                b.wait(seen).await;
                w.set(w.get() + 1);
            });
        }
    }

    /// An interrupt hook wakes its waiters before the pass that sees the signal: no
    /// forwarding task, no extra pass between the interrupt and the tasks it is for.
    #[test]
    fn a_hooked_signal_wakes_its_waiters_in_the_pass_that_sees_it() {
        static IRQ: Signal = Signal::new();
        let (mut ex, mut idle) = setup();
        idle.irq = Some(&IRQ);
        let h = ex.handle();
        let b = Rc::new(Broadcast::default());
        let b2 = b.clone();
        h.on_raise("irq", &IRQ, move || b2.raise());
        let woke = Rc::new(Cell::new(0));
        spawn_broadcast_waiters(&h, &b, 2, &woke);
        ex.run(&mut idle);
        assert_eq!(woke.get(), 2);
        assert_eq!(idle.waits, 1);
        // Pass 1 polls the waiters, pass 2 finds nothing and idles (the interrupt comes),
        // pass 3 runs the hook and then the waiters.
        assert_eq!(idle.takes, 3, "the woken waiters waited for another pass");
        assert_eq!(b.generation(), 1, "one raise, one hook run");
        assert!(!IRQ.is_raised(), "the hook consumed the signal");
        assert_eq!(ex.stats.signal_wakes, 1);
        assert_eq!(
            idle.polls.iter().filter(|p| p.0 == "irq").count(),
            1,
            "the hook's run is reported like a poll"
        );
    }

    /// A raised hooked signal counts as pending (the loop must not halt past it), and a
    /// hook may use the handle (here it spawns the task that counts the raise).
    #[test]
    fn a_hooked_signal_keeps_the_loop_awake_and_may_spawn() {
        static IRQ: Signal = Signal::new();
        let (mut ex, mut idle) = setup();
        let h = ex.handle();
        let woke = Rc::new(Cell::new(0));
        let (w2, h2) = (woke.clone(), h.clone());
        h.on_raise("irq", &IRQ, move || {
            let w = w2.clone();
            h2.spawn("late", async move { w.set(w.get() + 1) });
        });
        assert!(!Executor::any_signal_raised(&h.shared));
        IRQ.raise();
        assert!(Executor::any_signal_raised(&h.shared));
        ex.run(&mut idle);
        assert_eq!(woke.get(), 1);
        assert!(!Executor::any_signal_raised(&h.shared));
    }

    #[test]
    fn signal_raised_before_wait_is_not_lost() {
        static IRQ: Signal = Signal::new();
        IRQ.raise();
        let (mut ex, mut idle) = setup();
        ex.handle().watch(&IRQ);
        let got = Rc::new(Cell::new(false));
        let g = got.clone();
        ex.handle().spawn("late", async move {
            IRQ.wait().await;
            g.set(true);
        });
        ex.run(&mut idle);
        assert!(got.get());
    }

    #[test]
    fn tasks_spawn_tasks() {
        let (mut ex, mut idle) = setup();
        let h = ex.handle();
        let n = Rc::new(Cell::new(0));
        let (n2, h2) = (n.clone(), h.clone());
        h.spawn("parent", async move {
            for _ in 0..4 {
                let n3 = n2.clone();
                let h3 = h2.clone();
                h2.spawn("child", async move {
                    h3.sleep(5).await;
                    n3.set(n3.get() + 1);
                });
            }
        });
        ex.run(&mut idle);
        assert_eq!(n.get(), 4);
        assert_eq!(ex.stats.tasks_done, 5);
    }

    #[test]
    fn timeout_returns_value_or_none() {
        let (mut ex, mut idle) = setup();
        let h = ex.handle();
        let out = Rc::new(RefCell::new(vec![]));
        let (o, h2) = (out.clone(), h.clone());
        h.spawn("timeouts", async move {
            let fast = h2.timeout(100, h2.sleep(10)).await;
            let slow = h2.timeout(100, h2.sleep(1_000)).await;
            o.borrow_mut()
                .push((fast.is_some(), slow.is_some(), h2.now()));
        });
        ex.run(&mut idle);
        assert_eq!(*out.borrow(), vec![(true, false, 1_110)]);
        assert!(
            ex.handle().shared.borrow().timers.is_empty(),
            "the losing sleep left no timer"
        );
    }

    #[test]
    fn dropped_sleep_leaves_no_timer() {
        let (mut ex, mut idle) = setup();
        let h = ex.handle();
        let h2 = h.clone();
        static DONE: AtomicU64 = AtomicU64::new(0);
        h.spawn("select", async move {
            // Poll a long sleep once, then drop it.
            let mut long = Box::pin(h2.sleep(1_000_000));
            let w = Waker::from(Arc::new(TaskWaker {
                id: 999,
                ready: Arc::new(spin::Mutex::new(VecDeque::new())),
            }));
            assert!(long
                .as_mut()
                .poll(&mut Context::from_waker(&w))
                .is_pending());
            drop(long);
            h2.sleep(10).await;
            DONE.store(1, Ordering::SeqCst);
        });
        ex.run(&mut idle);
        assert_eq!(DONE.load(Ordering::SeqCst), 1);
        assert!(ex.handle().shared.borrow().timers.is_empty());
        assert_eq!(
            idle.clock.get(),
            1_010,
            "the dropped sleep must not hold the loop"
        );
    }
}
