//! A submission/completion queue pair (spec 4.1): the SQ tail we own, the CQ head and
//! phase we track, command identifiers in flight.
//!
//! A completion is consumed when its phase tag matches the phase we expect; the phase
//! flips each time the CQ head wraps. Completions that name a queue other than ours or a
//! command identifier not in flight are dropped and counted: a confused controller must
//! not complete the wrong request.

use alloc::vec;
use alloc::vec::Vec;

use crate::cmd::{Command, Completion};
use crate::regs;
use crate::{Dma, Error, Mmio};

pub const SQE_SIZE: usize = 64;
pub const CQE_SIZE: usize = 16;

pub struct QueuePair {
    pub qid: u16,
    pub entries: u16,
    pub sq_base: u64,
    pub cq_base: u64,
    sq_tail: u16,
    /// Last SQ head the controller reported: entries before it may be reused.
    sq_head: u16,
    cq_head: u16,
    phase: bool,
    sq_doorbell: usize,
    cq_doorbell: usize,
    in_flight: Vec<bool>,
    next_cid: u16,
    /// Completions dropped as impossible.
    pub bogus: u64,
}

impl QueuePair {
    /// Allocate zeroed rings for `entries` (2..=4096) entries.
    pub fn new(
        dma: &mut impl Dma,
        qid: u16,
        entries: u16,
        doorbell_stride: usize,
    ) -> Result<Self, Error> {
        if !(2..=4096).contains(&entries) {
            return Err(Error::Invalid("queue size"));
        }
        let sq_base = dma.alloc(entries as usize * SQE_SIZE)?;
        let cq_base = match dma.alloc(entries as usize * CQE_SIZE) {
            Ok(b) => b,
            Err(e) => {
                dma.free(sq_base, entries as usize * SQE_SIZE);
                return Err(e.into());
            }
        };
        Ok(QueuePair {
            qid,
            entries,
            sq_base,
            cq_base,
            sq_tail: 0,
            sq_head: 0,
            cq_head: 0,
            phase: true,
            sq_doorbell: regs::sq_doorbell(qid, doorbell_stride),
            cq_doorbell: regs::cq_doorbell(qid, doorbell_stride),
            in_flight: vec![false; entries as usize],
            next_cid: 0,
            bogus: 0,
        })
    }

    pub fn release(self, dma: &mut impl Dma) {
        dma.free(self.sq_base, self.entries as usize * SQE_SIZE);
        dma.free(self.cq_base, self.entries as usize * CQE_SIZE);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().filter(|f| **f).count()
    }

    /// Commands that can be queued now: submission slots the controller has freed and
    /// command identifiers not in flight, whichever is fewer.
    pub fn free_slots(&self) -> usize {
        let n = self.entries as usize;
        let used = (self.sq_tail as usize + n - self.sq_head as usize) % n;
        (n - 1 - used).min(n - self.in_flight())
    }

    fn full(&self) -> bool {
        (self.sq_tail + 1) % self.entries == self.sq_head
    }

    /// Queue `cmd` (its `cid` is assigned here) and ring the doorbell.
    pub fn submit(&mut self, dma: &impl Dma, mmio: &impl Mmio, cmd: Command) -> Result<u16, Error> {
        self.submit_quiet(dma, cmd).inspect(|_cid| {
            self.ring(dma, mmio);
        })
    }

    /// Queue without ringing (batching; call [`QueuePair::ring`] after).
    pub fn submit_quiet(&mut self, dma: &impl Dma, mut cmd: Command) -> Result<u16, Error> {
        if self.full() {
            return Err(Error::QueueFull);
        }
        // Command identifiers are slot numbers modulo the queue size, skipping any still
        // in flight (a slow command must not share its id with a new one).
        let n = self.entries;
        let cid = (0..n)
            .map(|i| (self.next_cid + i) % n)
            .find(|c| !self.in_flight[*c as usize])
            .ok_or(Error::QueueFull)?;
        self.next_cid = (cid + 1) % n;
        self.in_flight[cid as usize] = true;
        cmd.cid = cid;
        dma.write(
            self.sq_base + self.sq_tail as u64 * SQE_SIZE as u64,
            &cmd.to_bytes(),
        );
        self.sq_tail = (self.sq_tail + 1) % n;
        Ok(cid)
    }

    pub fn ring(&mut self, dma: &impl Dma, mmio: &impl Mmio) {
        // The entries must be in memory before the controller is told about them.
        dma.barrier();
        mmio.write32(self.sq_doorbell, self.sq_tail as u32);
    }

    /// Consume every new completion; returns how many were delivered to `f`.
    pub fn reap(
        &mut self,
        dma: &impl Dma,
        mmio: &impl Mmio,
        mut f: impl FnMut(Completion),
    ) -> usize {
        let mut n = 0;
        let mut moved = false;
        loop {
            let mut b = [0u8; CQE_SIZE];
            dma.read(self.cq_base + self.cq_head as u64 * CQE_SIZE as u64, &mut b);
            let c = Completion::from_bytes(&b);
            if c.phase != self.phase {
                break;
            }
            // Read the entry only after its phase tag said it is complete.
            dma.barrier();
            let c = Completion::from_bytes(&{
                let mut b = [0u8; CQE_SIZE];
                dma.read(self.cq_base + self.cq_head as u64 * CQE_SIZE as u64, &mut b);
                b
            });
            self.cq_head += 1;
            if self.cq_head == self.entries {
                self.cq_head = 0;
                self.phase = !self.phase;
            }
            moved = true;
            if c.sq_head < self.entries {
                self.sq_head = c.sq_head;
            }
            let valid = c.sq_id == self.qid
                && (c.cid as usize) < self.in_flight.len()
                && self.in_flight[c.cid as usize];
            if !valid {
                self.bogus += 1;
                continue;
            }
            self.in_flight[c.cid as usize] = false;
            n += 1;
            f(c);
        }
        if moved {
            mmio.write32(self.cq_doorbell, self.cq_head as u32);
        }
        n
    }

    /// Back to the state of a freshly created queue (after a controller reset): rings
    /// zeroed, indices and phase reset. Returns the command ids that were in flight.
    pub fn reset(&mut self, dma: &impl Dma) -> Vec<u16> {
        dma.write(self.sq_base, &vec![0u8; self.entries as usize * SQE_SIZE]);
        dma.write(self.cq_base, &vec![0u8; self.entries as usize * CQE_SIZE]);
        self.sq_tail = 0;
        self.sq_head = 0;
        self.cq_head = 0;
        self.phase = true;
        self.abandon_all()
    }

    /// Forget every command in flight (after a controller reset) and return their ids.
    pub fn abandon_all(&mut self) -> Vec<u16> {
        let ids = (0..self.entries)
            .filter(|c| self.in_flight[*c as usize])
            .collect();
        self.in_flight.iter_mut().for_each(|f| *f = false);
        ids
    }
}
