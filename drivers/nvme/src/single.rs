//! One command that moves no data of its caller's (flush, write zeroes, deallocate) on
//! the I/O queue other callers' batches share ([`crate::owners`]): its caller takes the
//! queue only to submit it and to look for its completion, never while it waits, so one
//! guest's slow flush holds up no other guest's reads and writes. The kernel's
//! `nvme::command` waits between looks and follows [`crate::recovery::Command`] when the
//! command takes too long.

use crate::cmd::{Command, Completion};
use crate::owners::{Owners, Ticket};
use crate::queue::QueuePair;
use crate::{Dma, Error, Mmio};

/// What became of a submission.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    /// On the queue under this command id.
    Cid(u16),
    /// Every slot holds another caller's command: submit again once one completed.
    Full,
}

/// Submit `cmd` for `t` (ringing the doorbell unless `quiet`, the tests' lost command).
/// A full queue is [`Submitted::Full`] while other callers have commands out (their
/// completions free slots); with none out it would never empty, and is the error.
pub fn submit(
    q: &mut QueuePair,
    owners: &mut Owners,
    t: &mut Ticket,
    dma: &impl Dma,
    mmio: &impl Mmio,
    cmd: Command,
    quiet: bool,
) -> Result<Submitted, Error> {
    // A reset before this submission dropped nothing of it.
    owners.catch_up(t);
    let r = if quiet {
        q.submit_quiet(dma, cmd)
    } else {
        q.submit(dma, mmio, cmd)
    };
    match r {
        Ok(cid) => {
            owners.submitted(t, cid);
            Ok(Submitted::Cid(cid))
        }
        Err(Error::QueueFull) if owners.in_flight() > 0 => Ok(Submitted::Full),
        Err(e) => Err(e),
    }
}

/// What a look found.
#[derive(Debug, PartialEq, Eq)]
pub enum Look {
    Completed(Completion),
    /// A controller reset (whoever asked for it) dropped the command since it was
    /// submitted: it is to be submitted again, which is not its failure.
    Dropped,
    /// Not yet.
    Pending,
}

/// Look for the completion of `t`'s command `cid`: reaped by another caller into `t`'s
/// stash, or on the queue now (other callers' completions found there go to their
/// stashes; the caller then wakes them, [`Owners::take_handed`]).
pub fn look(
    q: &mut QueuePair,
    owners: &mut Owners,
    t: &mut Ticket,
    dma: &impl Dma,
    mmio: &impl Mmio,
    cid: u16,
) -> Look {
    if owners.catch_up(t) {
        return Look::Dropped;
    }
    owners
        .reap(t, q, dma, mmio)
        .into_iter()
        .find(|c| c.cid == cid)
        .map_or(Look::Pending, Look::Completed)
}
