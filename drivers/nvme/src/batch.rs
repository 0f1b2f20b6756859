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
//!
//! A batch shares its queue with other callers' batches and single commands
//! ([`crate::owners`]): it takes only its own completions, and after a controller reset
//! (whoever asked for it) it submits again whatever it had in flight.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::cmd::Command;
use crate::owners::{Owners, Ticket};
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
    ticket: Ticket,
}

impl Batch {
    /// A batch on a queue whose commands `owners` records (it leaves in
    /// [`Batch::results`]).
    pub fn new(ops: Vec<Op>, owners: &mut Owners) -> Batch {
        let n = ops.len();
        Batch {
            ops,
            pending: (0..n).rev().collect(),
            in_flight: BTreeMap::new(),
            results: (0..n).map(|_| None).collect(),
            ticket: owners.join(),
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
    /// returns how many were submitted (none while completions another caller reaped
    /// for this batch wait for [`Batch::reap`]: reap before submitting). An operation larger than a buffer fails at once;
    /// so does one whose PRP cannot be built. `fill(op, buffer)` puts a write's data in
    /// its buffer.
    pub fn submit(
        &mut self,
        q: &mut QueuePair,
        owners: &mut Owners,
        pool: &mut Pool,
        dma: &impl Dma,
        mmio: &impl Mmio,
        fill: impl FnMut(usize, &Buffer),
    ) -> usize {
        let n = self.queue_up(q, owners, pool, dma, fill);
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
        owners: &mut Owners,
        pool: &mut Pool,
        dma: &impl Dma,
        mut fill: impl FnMut(usize, &Buffer),
    ) -> usize {
        self.catch_up(owners, pool);
        if owners.has_stash(&self.ticket) {
            // A completion another caller reaped for this batch is waiting: its command
            // id is free in the queue again, and a command submitted now could take it
            // while the old completion still names it. Reap first.
            return 0;
        }
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
                    owners.submitted(&self.ticket, cid);
                    let old = self.in_flight.insert(cid, (i, b));
                    debug_assert!(old.is_none(), "command id {cid} was still this batch's");
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

    /// Take this batch's completions (those another caller reaped for it, and the
    /// queue's new ones; the others' go to their stash); each ends its operation.
    /// `drain(op, buffer)` copies a successful read's data out. Returns how many
    /// operations ended.
    pub fn reap(
        &mut self,
        q: &mut QueuePair,
        owners: &mut Owners,
        pool: &mut Pool,
        dma: &impl Dma,
        mmio: &impl Mmio,
        mut drain: impl FnMut(usize, &Buffer),
    ) -> usize {
        self.catch_up(owners, pool);
        let ended = owners.reap(&self.ticket, q, dma, mmio);
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

    /// After a controller reset (this caller's or another's, [`Owners::reset`]): every
    /// command this batch had in flight was dropped, so their buffers go back and their
    /// operations are submitted again, first. Returns how many.
    pub fn catch_up(&mut self, owners: &Owners, pool: &mut Pool) -> usize {
        if !owners.catch_up(&mut self.ticket) {
            return 0;
        }
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

    /// Each operation's result, in operation order (call once `done`); the batch
    /// leaves `owners`.
    pub fn results(self, owners: &mut Owners) -> Vec<Result<(), Error>> {
        owners.leave(self.ticket);
        self.results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Invalid("operation never ended"))))
            .collect()
    }
}

/// Where a transfer's bytes are, for [`split`].
#[derive(Clone, Copy, Debug)]
pub enum Memory<'a> {
    /// Physical pieces (a scatter list: guest pages), moved directly by the device.
    Pieces(&'a [(u64, usize)]),
    /// One buffer at this physical address: moved directly when its first byte is
    /// dword-aligned (PRP1's rule), else through the pool's buffer.
    Buffer(u64),
    /// Memory the device cannot be given: always through the pool's buffer.
    Copied,
}

/// One read or write a caller asks for: whole blocks from `lba`, `len` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Transfer<'a> {
    pub write: bool,
    pub lba: u64,
    pub len: usize,
    pub memory: Memory<'a>,
}

/// Transfers as operations of at most one pool buffer each.
#[derive(Debug, Default)]
pub struct Split {
    pub ops: Vec<Op>,
    /// For each operation: its transfer, its byte offset in that transfer, its bytes.
    pub owner: Vec<(usize, usize, usize)>,
    /// For each transfer: why it was refused before any command (then it has no
    /// operation), or None.
    pub refused: Vec<Option<Error>>,
}

/// Split `transfers` on namespace `nsid` (of `blocks` blocks of `block_size` bytes) into
/// operations of at most `buffer_bytes` (rounded down to whole blocks). A transfer is
/// refused whole, before any command, if it is not whole blocks, runs past the end of
/// the namespace (when `check`: a partition's bounds were checked by the caller), needs
/// a block larger than a buffer, or has pieces that PRPs cannot describe.
pub fn split(
    transfers: &[Transfer],
    nsid: u32,
    blocks: u64,
    block_size: u32,
    buffer_bytes: usize,
    check: bool,
) -> Split {
    let bs = block_size as usize;
    let chunk = buffer_bytes.checked_div(bs).map_or(0, |n| n * bs);
    let mut s = Split::default();
    for (k, t) in transfers.iter().enumerate() {
        let refuse = if chunk == 0 {
            Some(Error::Invalid("block larger than a DMA buffer"))
        } else if t.len == 0 || t.len % bs != 0 {
            Some(Error::Invalid("buffer is not a whole number of blocks"))
        } else if check
            && t.lba
                .checked_add((t.len / bs) as u64)
                .is_none_or(|end| end > blocks)
        {
            Some(Error::Invalid("range past the end of the namespace"))
        } else {
            None
        };
        if refuse.is_some() {
            s.refused.push(refuse);
            continue;
        }
        let mut parts = Vec::new();
        let mut done = 0;
        while done < t.len {
            let l = chunk.min(t.len - done);
            let direct = match t.memory {
                Memory::Pieces(p) => match Pages::of_pieces(p, done, l) {
                    Some(p) => Some(p),
                    None => break,
                },
                Memory::Buffer(at) if at % 4 == 0 => Some(Pages::contiguous(at + done as u64, l)),
                Memory::Buffer(_) | Memory::Copied => None,
            };
            parts.push((done, l, direct));
            done += l;
        }
        if done < t.len {
            s.refused
                .push(Some(Error::Invalid("memory that PRPs cannot describe")));
            continue;
        }
        s.refused.push(None);
        for (at, l, direct) in parts {
            s.ops.push(Op {
                direct,
                write: t.write,
                nsid,
                lba: t.lba + (at / bs) as u64,
                blocks: (l / bs) as u32,
                bytes: l,
            });
            s.owner.push((k, at, l));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(write: bool, lba: u64, len: usize, memory: Memory) -> Transfer {
        Transfer {
            write,
            lba,
            len,
            memory,
        }
    }

    #[test]
    fn a_transfer_longer_than_a_buffer_becomes_consecutive_operations() {
        // 512-byte blocks, 8 KiB buffers (rounded down from 8300): 20 KiB = 8 + 8 + 4.
        let s = split(
            &[t(true, 100, 20480, Memory::Copied)],
            1,
            1000,
            512,
            8300,
            true,
        );
        assert_eq!(s.refused, [None]);
        let got: Vec<_> = s
            .ops
            .iter()
            .map(|o| (o.write, o.nsid, o.lba, o.blocks, o.bytes))
            .collect();
        assert_eq!(
            got,
            [
                (true, 1, 100, 16, 8192),
                (true, 1, 116, 16, 8192),
                (true, 1, 132, 8, 4096)
            ]
        );
        assert_eq!(s.owner, [(0, 0, 8192), (0, 8192, 8192), (0, 16384, 4096)]);
        assert!(s.ops.iter().all(|o| o.direct.is_none()));
    }

    #[test]
    fn refused_transfers_get_no_operation_and_the_others_keep_their_index() {
        let ts = [
            t(false, 0, 1000, Memory::Copied),       // not whole blocks
            t(false, 990, 8192, Memory::Copied),     // past the end
            t(false, 0, 0, Memory::Copied),          // empty
            t(false, u64::MAX, 512, Memory::Copied), // overflowing end
            t(false, 8, 512, Memory::Copied),
        ];
        let s = split(&ts, 1, 1000, 512, 8192, true);
        assert_eq!(
            s.refused,
            [
                Some(Error::Invalid("buffer is not a whole number of blocks")),
                Some(Error::Invalid("range past the end of the namespace")),
                Some(Error::Invalid("buffer is not a whole number of blocks")),
                Some(Error::Invalid("range past the end of the namespace")),
                None
            ]
        );
        assert_eq!(s.owner, [(4, 0, 512)]);
        // Unchecked (a partition, bounded by its caller): only the block rule applies.
        let s = split(&ts[1..2], 1, 1000, 512, 8192, false);
        assert_eq!(s.refused, [None]);
    }

    #[test]
    fn a_block_larger_than_a_buffer_is_refused() {
        let s = split(
            &[t(false, 0, 8192, Memory::Copied)],
            1,
            10,
            8192,
            4096,
            true,
        );
        assert_eq!(
            s.refused,
            [Some(Error::Invalid("block larger than a DMA buffer"))]
        );
        assert!(s.ops.is_empty());
    }

    #[test]
    fn memory_is_given_to_the_device_when_prps_can_describe_it() {
        // An aligned buffer: direct, page by page; a misaligned one: through the pool.
        let s = split(
            &[
                t(true, 0, 8192, Memory::Buffer(0x10_0800)),
                t(true, 16, 512, Memory::Buffer(0x2001)),
            ],
            1,
            100,
            512,
            4096,
            true,
        );
        assert_eq!(s.ops[0].direct, Some(Pages::contiguous(0x10_0800, 4096)));
        assert_eq!(s.ops[1].direct, Some(Pages::contiguous(0x10_1800, 4096)));
        assert_eq!(s.ops[2].direct, None);
        // Guest pages: two whole pages are fine; a piece ending mid-page followed by
        // another cannot be one PRP list, and the transfer is refused whole.
        let good = [(0x5000u64, 4096usize), (0x9000, 4096)];
        let bad = [(0x5000u64, 1024usize), (0x9000, 7168)];
        let s = split(
            &[
                t(false, 0, 8192, Memory::Pieces(&good)),
                t(false, 16, 8192, Memory::Pieces(&bad)),
            ],
            1,
            100,
            512,
            65536,
            true,
        );
        assert_eq!(s.ops.len(), 1);
        assert_eq!(
            s.ops[0].direct.as_ref().map(|p| p.pages.clone()),
            Some(alloc::vec![0x5000, 0x9000])
        );
        assert_eq!(
            s.refused[1],
            Some(Error::Invalid("memory that PRPs cannot describe"))
        );
    }
}
