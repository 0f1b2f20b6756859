//! Several callers on one queue pair at once (issue 17: the disk's lock was held from a
//! batch's submission to its last completion, so two guests' vbds took turns at the
//! device). Each caller holds a [`Ticket`]; every command it submits is recorded against
//! it, and whoever reaps the completion queue hands each completion to its owner: its
//! own at once, another's into that caller's stash, which the owner takes at its next
//! look. A caller therefore needs the queue only to submit and to reap, never while it
//! waits.
//!
//! A controller reset drops every command in flight, whoever submitted it: the reset
//! bumps a generation, and each caller, at its next look, finds its commands gone and
//! submits them again ([`crate::batch::Batch`] does). Completions stashed before the
//! reset go with it: a command id is reused after a reset, and a stale completion must
//! never end the new command that took its id.
//!
//! Memory is bounded by the queue: a command id has at most one owner and one stashed
//! completion.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::cmd::Completion;
use crate::queue::QueuePair;
use crate::{Dma, Mmio};

/// One caller's claim on the queue's commands.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket {
    id: u64,
    /// The reset generation this caller last caught up with.
    resets: u64,
}

#[derive(Debug, Default)]
pub struct Owners {
    next: u64,
    by_cid: BTreeMap<u16, u64>,
    stash: BTreeMap<u64, Vec<Completion>>,
    resets: u64,
    /// Completions handed to another caller since [`Owners::take_handed`] last looked
    /// (the reaper then wakes the others).
    handed: bool,
}

impl Owners {
    pub fn new() -> Owners {
        Owners::default()
    }

    /// A new caller (it must [`Owners::leave`] when done).
    pub fn join(&mut self) -> Ticket {
        self.next += 1;
        Ticket {
            id: self.next,
            resets: self.resets,
        }
    }

    /// The caller is done: anything still recorded against it is forgotten (commands
    /// given up on with the device stopped, completions no one will take).
    pub fn leave(&mut self, t: Ticket) {
        self.stash.remove(&t.id);
        self.by_cid.retain(|_, id| *id != t.id);
    }

    /// `cid` was just submitted by `t`.
    pub fn submitted(&mut self, t: &Ticket, cid: u16) {
        self.by_cid.insert(cid, t.id);
    }

    /// Take `t`'s completions: those others reaped for it, then the queue's new ones
    /// (each other caller's go to its stash). A completion no one owns (a command
    /// forgotten by a reset or a leave) is dropped.
    pub fn reap(
        &mut self,
        t: &Ticket,
        q: &mut QueuePair,
        dma: &impl Dma,
        mmio: &impl Mmio,
    ) -> Vec<Completion> {
        let mut mine = self.stash.remove(&t.id).unwrap_or_default();
        let mut fresh = Vec::new();
        q.reap(dma, mmio, |c| fresh.push(c));
        for c in fresh {
            match self.by_cid.remove(&c.cid) {
                Some(id) if id == t.id => mine.push(c),
                Some(id) => {
                    self.stash.entry(id).or_default().push(c);
                    self.handed = true;
                }
                None => {}
            }
        }
        mine
    }

    /// Whether completions another caller reaped for `t` wait in its stash.
    pub fn has_stash(&self, t: &Ticket) -> bool {
        self.stash.get(&t.id).is_some_and(|v| !v.is_empty())
    }

    /// The controller was reset: every command in flight is gone, and so is every
    /// completion not yet taken.
    pub fn reset(&mut self) {
        self.resets += 1;
        self.by_cid.clear();
        self.stash.clear();
    }

    /// Whether a reset came since `t` last caught up; if so, it has now.
    pub fn catch_up(&self, t: &mut Ticket) -> bool {
        core::mem::replace(&mut t.resets, self.resets) != self.resets
    }

    /// Whether a completion went to another caller's stash since the last call.
    pub fn take_handed(&mut self) -> bool {
        core::mem::take(&mut self.handed)
    }

    /// Commands recorded in flight, all callers.
    pub fn in_flight(&self) -> usize {
        self.by_cid.len()
    }
}
