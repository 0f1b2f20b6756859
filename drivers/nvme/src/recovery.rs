//! What the driver does when the controller stops answering: the policy, as two small
//! state machines the kernel's glue follows (it owns the clock, the waits and the
//! registers; these only decide).
//!
//! - One command at a time ([`Command`], admin and flush): a first timeout asks the
//!   controller to abort it; if the abort completes it, the command is issued again;
//!   otherwise the controller is reset and the command issued again. A second timeout
//!   fails the controller.
//! - A batch of reads and writes in flight ([`BatchWatch`]): any completion is progress
//!   and restarts the clock. A stall resets the controller and re-queues what was in
//!   flight; a second stall without progress in between gives up (the device's DMA is
//!   stopped, the rest fails, and so does the controller), as does a stall with nothing
//!   in flight at all (the DMA pool lost its buffers to commands given up on earlier).

/// One command's attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    attempts: u8,
}

/// What to do after a command timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTimeout {
    /// Ask the controller to abort it, then [`Command::abort_result`].
    Abort,
    /// Give up: the controller is failed.
    Fail,
}

/// What to do after the abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterAbort {
    /// The abort completed the command: issue it again.
    Reissue,
    /// It did not: reset the controller, then issue the command again.
    ResetThenReissue,
}

impl Command {
    pub fn new() -> Command {
        Command::default()
    }

    pub fn timed_out(&mut self) -> OnTimeout {
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts == 1 {
            OnTimeout::Abort
        } else {
            OnTimeout::Fail
        }
    }

    /// `completed`: the controller accepted the abort and the command then completed.
    pub fn abort_result(&self, completed: bool) -> AfterAbort {
        if completed {
            AfterAbort::Reissue
        } else {
            AfterAbort::ResetThenReissue
        }
    }
}

/// A batch's watchdog: when its commands have taken too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchWatch {
    timeout_ns: u64,
    deadline: u64,
    reset_done: bool,
}

/// The watchdog's verdict at one look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Wait for completions.
    Wait,
    /// Stalled: reset the controller and re-queue what was in flight, then
    /// [`BatchWatch::reset_done`].
    Reset { stuck: usize },
    /// Give up on the rest of the batch and on the controller.
    GiveUp(GiveUp),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// Commands timed out again after a reset.
    TimedOutAfterReset { stuck: usize },
    /// Nothing in flight and nothing could be submitted: no DMA buffer left.
    NoBuffers,
}

impl BatchWatch {
    pub fn new(now: u64, timeout_ns: u64) -> BatchWatch {
        BatchWatch {
            timeout_ns,
            deadline: now.saturating_add(timeout_ns),
            reset_done: false,
        }
    }

    /// A look at the batch after reaping: `ended` commands completed since the last
    /// look, `in_flight` are still out.
    pub fn look(&mut self, now: u64, ended: usize, in_flight: usize) -> Verdict {
        if ended > 0 {
            // Progress: the next stall gets its own reset.
            self.reset_done = false;
            self.deadline = now.saturating_add(self.timeout_ns);
            return Verdict::Wait;
        }
        if now <= self.deadline {
            return Verdict::Wait;
        }
        if in_flight == 0 {
            Verdict::GiveUp(GiveUp::NoBuffers)
        } else if self.reset_done {
            Verdict::GiveUp(GiveUp::TimedOutAfterReset { stuck: in_flight })
        } else {
            Verdict::Reset { stuck: in_flight }
        }
    }

    /// The batch was not stalled on its own: another caller's reset re-queued its
    /// commands, or it had none out while others held every buffer. A new deadline;
    /// whether it already had its reset stays.
    pub fn restart(&mut self, now: u64) {
        self.deadline = now.saturating_add(self.timeout_ns);
    }

    /// The controller was reset and the batch's commands re-queued: a new deadline.
    pub fn reset_done(&mut self, now: u64) {
        self.reset_done = true;
        self.deadline = now.saturating_add(self.timeout_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_aborted_then_reset_then_failed() {
        let mut c = Command::new();
        assert_eq!(c.timed_out(), OnTimeout::Abort);
        assert_eq!(c.abort_result(true), AfterAbort::Reissue);
        assert_eq!(c.abort_result(false), AfterAbort::ResetThenReissue);
        // The re-issued command times out again: the controller is failed.
        assert_eq!(c.timed_out(), OnTimeout::Fail);
        assert_eq!(c.timed_out(), OnTimeout::Fail);
    }

    #[test]
    fn a_batch_resets_once_per_stall_and_gives_up_on_a_second() {
        let mut w = BatchWatch::new(0, 10);
        assert_eq!(w.look(5, 0, 4), Verdict::Wait);
        assert_eq!(w.look(11, 0, 4), Verdict::Reset { stuck: 4 });
        w.reset_done(11);
        assert_eq!(w.look(20, 0, 4), Verdict::Wait);
        assert_eq!(
            w.look(22, 0, 4),
            Verdict::GiveUp(GiveUp::TimedOutAfterReset { stuck: 4 })
        );
    }

    #[test]
    fn progress_restarts_the_clock_and_earns_a_new_reset() {
        let mut w = BatchWatch::new(0, 10);
        assert_eq!(w.look(11, 0, 2), Verdict::Reset { stuck: 2 });
        w.reset_done(11);
        // A completion after the reset: the batch moves again.
        assert_eq!(w.look(15, 1, 1), Verdict::Wait);
        assert_eq!(w.look(24, 0, 1), Verdict::Wait);
        assert_eq!(w.look(26, 0, 1), Verdict::Reset { stuck: 1 });
    }

    #[test]
    fn a_stall_with_nothing_in_flight_is_an_empty_pool() {
        let mut w = BatchWatch::new(0, 10);
        assert_eq!(w.look(11, 0, 0), Verdict::GiveUp(GiveUp::NoBuffers));
        // A clock near the end of time does not wrap the deadline.
        let mut w = BatchWatch::new(u64::MAX - 1, 10);
        assert_eq!(w.look(u64::MAX, 0, 3), Verdict::Wait);
    }

    #[test]
    fn another_callers_reset_restarts_the_clock_without_spending_this_batchs_reset() {
        let mut w = BatchWatch::new(0, 10);
        // Another caller reset the controller at 9: this batch's commands went again.
        w.restart(9);
        assert_eq!(w.look(15, 0, 2), Verdict::Wait);
        assert_eq!(w.look(20, 0, 2), Verdict::Reset { stuck: 2 });
        w.reset_done(20);
        // Once its own reset is spent, a restart does not earn it another.
        w.restart(25);
        assert_eq!(w.look(34, 0, 2), Verdict::Wait);
        assert_eq!(
            w.look(36, 0, 2),
            Verdict::GiveUp(GiveUp::TimedOutAfterReset { stuck: 2 })
        );
    }
}
