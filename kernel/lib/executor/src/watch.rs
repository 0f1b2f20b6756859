//! The loop's own account of where its time went, for telling a stall of ours from one
//! of the machine: its slowest task poll (every other task waited that long), and the
//! longest time the platform kept the loop from running at all (under Xen: its vCPU
//! runnable but not given a physical CPU). Kept for the whole run, and per window
//! between two marks (an operator or a test names a stretch of time and then reads what
//! happened in it).

use crate::Nanos;

/// What one window saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// When it began.
    pub since: Nanos,
    /// Its longest wait for a CPU, and when that wait ended (from `since`).
    pub longest_wait: Nanos,
    pub wait_ended: Nanos,
    /// Its slowest poll, the task, and when that poll ended (from `since`).
    pub slowest_poll: Nanos,
    pub poll_task: &'static str,
    pub poll_ended: Nanos,
}

#[derive(Debug, Default)]
pub struct LoopWatch {
    window: Window,
    /// The longest wait for a CPU since start, and all such waits added up.
    pub longest_wait: Nanos,
    pub waited: Nanos,
    /// The slowest poll since start, and its task.
    pub slowest_poll: (Nanos, &'static str),
}

impl LoopWatch {
    pub const fn new() -> LoopWatch {
        LoopWatch {
            window: Window {
                since: 0,
                longest_wait: 0,
                wait_ended: 0,
                slowest_poll: 0,
                poll_task: "",
                poll_ended: 0,
            },
            longest_wait: 0,
            waited: 0,
            slowest_poll: (0, ""),
        }
    }

    /// The loop was kept from running for `waited`, ending at `now`; true if that is a
    /// record since start.
    pub fn waited(&mut self, now: Nanos, waited: Nanos) -> bool {
        self.waited += waited;
        let w = &mut self.window;
        if waited > w.longest_wait {
            w.longest_wait = waited;
            w.wait_ended = now.saturating_sub(w.since);
        }
        let record = waited > self.longest_wait;
        self.longest_wait = self.longest_wait.max(waited);
        record
    }

    /// `task`'s poll took `took`, ending at `now`; true if that is a record since start.
    pub fn polled(&mut self, now: Nanos, task: &'static str, took: Nanos) -> bool {
        let w = &mut self.window;
        if took > w.slowest_poll {
            w.slowest_poll = took;
            w.poll_task = task;
            w.poll_ended = now.saturating_sub(w.since);
        }
        let record = took > self.slowest_poll.0;
        if record {
            self.slowest_poll = (took, task);
        }
        record
    }

    /// End the current window at `now` and start the next: what the ended one saw.
    pub fn take_window(&mut self, now: Nanos) -> Window {
        core::mem::replace(
            &mut self.window,
            Window {
                since: now,
                ..Window::default()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_since_start_and_per_window() {
        let mut w = LoopWatch::new();
        assert!(w.waited(100, 30));
        assert!(!w.waited(200, 20));
        assert!(w.polled(250, "blk", 7));
        let first = w.take_window(300);
        assert_eq!(
            first,
            Window {
                since: 0,
                longest_wait: 30,
                wait_ended: 100,
                slowest_poll: 7,
                poll_task: "blk",
                poll_ended: 250
            }
        );
        // A window starts empty; records since start stay.
        assert!(!w.waited(400, 10));
        assert!(!w.polled(450, "net", 5));
        let second = w.take_window(500);
        assert_eq!(
            (second.since, second.longest_wait, second.wait_ended),
            (300, 10, 100)
        );
        assert_eq!(
            (second.slowest_poll, second.poll_task, second.poll_ended),
            (5, "net", 150)
        );
        assert_eq!(
            (w.longest_wait, w.waited, w.slowest_poll),
            (30, 60, (7, "blk"))
        );
        assert_eq!(w.take_window(600).longest_wait, 0);
    }
}
