//! The event loop's account of its time (bulkhead_executor::LoopWatch), fed by the idle
//! loop: its task polls, and how long Xen kept this vCPU waiting for a physical CPU
//! between two looks (machine::runstate): one look after each poll and halt, and once
//! per pass of the loop. A poll's own time leaves out the wait Xen imposed during it. The records since start are on the status page
//! (control/dump); a wait or a poll of `WARN` or more is logged (at most one line per
//! `WARN_EVERY`, the rest counted); `control/mark` ends a window and logs what it saw
//! (xen::control).

use bulkhead_executor::{LoopWatch, Nanos, Window};
use log::warn;
use spin::Mutex;

use crate::machine::trace::{self, Counts};
use crate::machine::{runstate, time};

const WARN: Nanos = 500_000_000;
const WARN_EVERY: Nanos = 10_000_000_000;

struct State {
    watch: LoopWatch,
    /// The runstate's runnable total at the last look.
    runnable: Option<u64>,
    /// Its running total when the current window began.
    window_running: Option<u64>,
    /// The flight recorder's counts when the current window began.
    window_counts: Counts,
    last_warn: Option<Nanos>,
    unsaid: u64,
}

// Only the idle loop and the tasks it runs touch it (one CPU, never from an interrupt).
static STATE: Mutex<State> = Mutex::new(State {
    watch: LoopWatch::new(),
    runnable: None,
    window_running: None,
    window_counts: Counts {
        vectors: 0,
        halts: 0,
        hypercalls: 0,
    },
    last_warn: None,
    unsaid: 0,
});

/// Once per pass of the loop and after each halt: what Xen's runstate says we waited.
pub fn look() {
    let mut s = STATE.lock();
    observe(&mut s, time::now_ns());
}

/// The wait since the last look, recorded; returns it.
fn observe(s: &mut State, now: Nanos) -> Nanos {
    let Some(r) = runstate::runnable_ns() else {
        return 0;
    };
    let Some(before) = s.runnable.replace(r) else {
        return 0;
    };
    let waited = r.saturating_sub(before);
    if waited == 0 {
        return 0;
    }
    if s.watch.waited(now, waited) {
        publish(&s.watch);
    }
    if waited >= WARN {
        say(
            s,
            now,
            format_args!(
                "event loop: Xen kept this vCPU waiting {} ms for a physical CPU",
                waited / 1_000_000
            ),
        );
    }
    waited
}

/// A task's poll ended at `now` after `took` (wall-clock time, less what Xen kept us
/// waiting meanwhile).
pub fn polled(task: &'static str, now: Nanos, took: Nanos) {
    let mut s = STATE.lock();
    let took = took.saturating_sub(observe(&mut s, now));
    if s.watch.polled(now, task, took) {
        publish(&s.watch);
    }
    if took >= WARN {
        say(
            &mut s,
            now,
            format_args!(
                "event loop: task {task} ran {} ms in one poll",
                took / 1_000_000
            ),
        );
    }
}

/// End the current window: what it saw, how long this vCPU ran in it (None without a
/// runstate area), and the interrupts, halts and hypercalls in it.
pub fn take_window() -> (Window, Option<Nanos>, Counts) {
    let mut s = STATE.lock();
    let running = runstate::running_ns();
    let before = core::mem::replace(&mut s.window_running, running);
    let ran = running.zip(before).map(|(r, b)| r.saturating_sub(b));
    let now = trace::counts();
    let counts = now.since(core::mem::replace(&mut s.window_counts, now));
    (s.watch.take_window(time::now_ns()), ran, counts)
}

fn say(s: &mut State, now: Nanos, what: core::fmt::Arguments) {
    if s.last_warn
        .is_some_and(|t| now.saturating_sub(t) < WARN_EVERY)
    {
        s.unsaid += 1;
        return;
    }
    s.last_warn = Some(now);
    let unsaid = core::mem::take(&mut s.unsaid);
    if unsaid > 0 {
        warn!("{what} ({unsaid} more such stall(s) not logged)");
    } else {
        warn!("{what}");
    }
}

fn publish(w: &LoopWatch) {
    crate::status::set(
        "event loop",
        alloc::format!(
            "slowest poll {} us ({}), longest wait for a physical CPU {} us, {} ms waited in all",
            w.slowest_poll.0 / 1000,
            w.slowest_poll.1,
            w.longest_wait / 1000,
            w.waited / 1_000_000
        ),
    );
}
