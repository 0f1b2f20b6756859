//! Many reads and writes on one queue pair at once (issue 17: one command in flight at a
//! time left the device idle between commands). A batch submits as many of its
//! operations as the queue's free slots and the DMA pool's free buffers allow, rings the
//! doorbell once, and hands each completion to its operation whatever order the
//! controller completes them in; each operation ends exactly once, with its own result
//! (a failed command fails its operation only).
//!
//! The caller moves the data: `fill` copies a write's data into its buffer before
//! submission, `drain` copies a read's data out after a successful completion. Buffers
//! go back to the pool as their commands complete, so an empty pool or a full queue is
//! back-pressure: the batch submits more at the next `submit`.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::cmd::Command;
use crate::pool::{Buffer, Pool};
use crate::prp::Pages;
use crate::queue::QueuePair;
use crate::{Dma, Error, Mmio};

/// One transfer: whole blocks, at most one pool buffer long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub write: bool,
    pub nsid: u32,
    pub lba: u64,
    pub blocks: u32,
    /// Bytes: `blocks` times the namespace's block size.
    pub bytes: usize,
    /// The caller's own memory for the data (its pages, the first byte dword-aligned):
    /// the device reads or writes it directly and no copy goes through the pool buffer,
    /// which the command still takes for its PRP list page and as its place in flight.
    /// The caller keeps that memory for the device until the operation ends, or until
    /// the device is stopped when the batch is given up on.
    pub direct: Option<Pages>,
}

pub struct Batch {
    ops: Vec<Op>,
    /// Operations not yet submitted, in order (re-queued ones go back to the front).
    pending: Vec<usize>,
    /// Command id -> (operation, its buffer).
    in_flight: BTreeMap<u16, (usize, Buffer)>,
    results: Vec<Option<Result<(), Error>>>,
}

impl Batch {
    pub fn new(ops: Vec<Op>) -> Batch {
        let n = ops.len();
        Batch {
            ops,
            pending: (0..n).rev().collect(),
            in_flight: BTreeMap::new(),
            results: (0..n).map(|_| None).collect(),
        }
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Every operation has its result.
    pub fn done(&self) -> bool {
        self.results.iter().all(Option::is_some)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Submit what fits (free queue slots, free buffers) and ring the doorbell once;
    /// returns how many were submitted. An operation larger than a buffer fails at once;
    /// so does one whose PRP cannot be built. `fill(op, buffer)` puts a write's data in
    /// its buffer.
    pub fn submit(
        &mut self,
        q: &mut QueuePair,
        pool: &mut Pool,
        dma: &impl Dma,
        mmio: &impl Mmio,
        fill: impl FnMut(usize, &Buffer),
    ) -> usize {
        let n = self.queue_up(q, pool, dma, fill);
        if n > 0 {
            q.ring(dma, mmio);
        }
        n
    }

    /// [`Batch::submit`] without the doorbell: the controller sees these commands only
    /// when the queue is rung next (a test makes a command the controller never sees).
    pub fn queue_up(
        &mut self,
        q: &mut QueuePair,
        pool: &mut Pool,
        dma: &impl Dma,
        mut fill: impl FnMut(usize, &Buffer),
    ) -> usize {
        let mut n = 0;
        while let Some(&i) = self.pending.last() {
            let op = &self.ops[i];
            if op.bytes == 0 || op.bytes > pool.buffer_bytes() || op.blocks == 0 {
                self.pending.pop();
                self.results[i] = Some(Err(Error::Invalid("operation does not fit a DMA buffer")));
                continue;
            }
            if q.free_slots() == 0 {
                break;
            }
            let Some(b) = pool.take() else {
                break;
            };
            self.pending.pop();
            if op.write && op.direct.is_none() {
                fill(i, &b);
            }
            let prp = match &op.direct {
                Some(mem) => pool.prp_at(dma, &b, mem, op.bytes),
                None => pool.prp(dma, &b, op.bytes),
            };
            let prp = match prp {
                Ok(p) => p,
                Err(e) => {
                    pool.give(b);
                    self.results[i] = Some(Err(e));
                    continue;
                }
            };
            let cmd = Command::rw(op.write, op.nsid, op.lba, op.blocks, prp.prp1, prp.prp2);
            match q.submit_quiet(dma, cmd) {
                Ok(cid) => {
                    self.in_flight.insert(cid, (i, b));
                    n += 1;
                }
                Err(_) => {
                    // The queue filled after all (free_slots said otherwise): try later.
                    pool.give(b);
                    self.pending.push(i);
                    break;
                }
            }
        }
        n
    }

    /// Take the queue's new completions; each ends its operation. `drain(op, buffer)`
    /// copies a successful read's data out. Returns how many operations ended. The batch
    /// owns the queue while it runs: a completion for a command not its own is dropped.
    pub fn reap(
        &mut self,
        q: &mut QueuePair,
        pool: &mut Pool,
        dma: &impl Dma,
        mmio: &impl Mmio,
        mut drain: impl FnMut(usize, &Buffer),
    ) -> usize {
        let mut ended = Vec::new();
        q.reap(dma, mmio, |c| ended.push(c));
        let mut n = 0;
        for c in ended {
            let Some((i, b)) = self.in_flight.remove(&c.cid) else {
                continue;
            };
            let r = c.result().map(|_| ());
            if r.is_ok() && !self.ops[i].write && self.ops[i].direct.is_none() {
                drain(i, &b);
            }
            pool.give(b);
            self.results[i] = Some(r);
            n += 1;
        }
        n
    }

    /// After the controller was reset (every command in flight dropped): their buffers
    /// go back and their operations are submitted again, first. Returns how many.
    pub fn requeue_in_flight(&mut self, pool: &mut Pool) -> usize {
        let dropped = core::mem::take(&mut self.in_flight);
        let n = dropped.len();
        let mut ops: Vec<usize> = Vec::with_capacity(n);
        for (_, (i, b)) in dropped {
            pool.give(b);
            ops.push(i);
        }
        // Back on the stack so that the lowest operation is submitted first.
        ops.sort_unstable_by(|a, b| b.cmp(a));
        self.pending.extend(ops);
        n
    }

    /// End every operation that has no result yet with `e` (a controller given up on);
    /// buffers in flight go back to the pool only if `device_stopped` (the device will
    /// not write them any more), else they stay out of it for good.
    pub fn fail_rest(&mut self, pool: &mut Pool, e: Error, device_stopped: bool) {
        for (_, (i, b)) in core::mem::take(&mut self.in_flight) {
            if device_stopped {
                pool.give(b);
            }
            self.results[i] = Some(Err(e));
        }
        for i in core::mem::take(&mut self.pending) {
            self.results[i] = Some(Err(e));
        }
    }

    /// Each operation's result, in operation order (call once `done`).
    pub fn results(self) -> Vec<Result<(), Error>> {
        self.results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Invalid("operation never ended"))))
            .collect()
    }
}
