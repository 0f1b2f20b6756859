//! One ring served end to end: take requests in order, serve each, answer each exactly
//! once, and tell the frontend when its `rsp_event` asks.

use alloc::string::String;

use bulkhead_block::BlockDevice;
use bulkhead_xen::budget::{self, LogBudget};

use crate::abi::RSP_OKAY;
use alloc::vec::Vec;

use crate::abi::Protocol;
use crate::io::{
    continues, execute, prepare, transfer_runs, DmaPages, Done, Failure, Geometry, Transfer,
    BATCH_MAX_BYTES,
};
use crate::request::{decode, Limits, Rejected, Request};
use crate::ring::{response, BackRing, RingError, RingMemory};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub notifies: u64,
    /// Batches taken from the ring, each answered with one push of its responses.
    pub batches: u64,
    /// Requests served as part of another's device I/O (merged).
    pub merged: u64,
}

/// Requests taken from the ring before serving them (merging looks within a batch).
const BATCH: usize = 32;

/// Log lines a queue writes on its own before errors are only counted (a hostile
/// frontend must not be able to flood the console); the kernel replaces this with the
/// domain's budget, shared by all its queues and reconnects.
const LOGGED_ERRORS: u32 = 32;

pub struct Queue<M: RingMemory> {
    pub name: String,
    ring: BackRing<M>,
    protocol: Protocol,
    pub limits: Limits,
    pub geometry: Geometry,
    pub read_only: bool,
    pub stats: Stats,
    /// Warning lines this queue may write.
    pub log: LogBudget,
}

impl<M: RingMemory> Queue<M> {
    pub fn new(
        name: String,
        ring: BackRing<M>,
        protocol: Protocol,
        limits: Limits,
        geometry: Geometry,
        read_only: bool,
    ) -> Self {
        Queue {
            name,
            ring,
            protocol,
            limits,
            geometry,
            read_only,
            stats: Stats::default(),
            log: budget::fixed(LOGGED_ERRORS),
        }
    }

    pub fn ring(&self) -> &BackRing<M> {
        &self.ring
    }

    pub fn ring_mut(&mut self) -> &mut BackRing<M> {
        &mut self.ring
    }

    pub fn into_ring(self) -> BackRing<M> {
        self.ring
    }

    fn note_error(&mut self, id: u64, status: i16, why: &str) {
        self.stats.errors += 1;
        self.log.warn(format_args!(
            "{}: request {id:#x} failed ({status}): {why}",
            self.name
        ));
    }

    /// Serve up to `budget` requests of those the frontend has published (at least one
    /// batch's worth is taken whatever the budget). Requests are taken in batches;
    /// runs of contiguous reads or writes become one device I/O each (as an I/O
    /// scheduler merges them), everything else is served alone and in order. Returns
    /// whether the frontend must be notified. A ring error means the frontend broke the
    /// ring protocol: the caller disconnects it.
    ///
    /// The budget is what keeps a frontend from holding the task: one that re-publishes
    /// requests as fast as they are answered would otherwise keep this loop going for
    /// ever. The caller looks again ([`Queue::final_check`]) after letting others run.
    pub async fn serve_available<D: BlockDevice, G: DmaPages + ?Sized>(
        &mut self,
        dev: &mut D,
        guest: &mut G,
        budget: usize,
    ) -> Result<bool, RingError> {
        let mut owed = false;
        self.serve_notifying(dev, guest, budget, &mut || owed = true)
            .await?;
        Ok(owed)
    }

    /// [`Queue::serve_available`], telling the frontend (`notify`) as soon as a batch's
    /// responses are published, when it asked to be told: a batch's completions do not
    /// wait for the device time of the batches taken after it. At queue depth 32 the
    /// frontend keeps publishing while a batch is at the device, so one call serves
    /// several batches; telling it only at the end kept the first ones' answers from a
    /// guest that had nothing else to do (Linux's blkback tells it per response).
    pub async fn serve_notifying<D: BlockDevice, G: DmaPages + ?Sized>(
        &mut self,
        dev: &mut D,
        guest: &mut G,
        budget: usize,
        notify: &mut dyn FnMut(),
    ) -> Result<(), RingError> {
        let mut taken = 0usize;
        while taken < budget.max(1) {
            let mut batch: Vec<Result<Request, Rejected>> = Vec::new();
            while batch.len() < BATCH {
                match self.ring.take()? {
                    Some(raw) => batch.push(decode(&raw, self.protocol, &self.limits)),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            taken += batch.len();
            self.stats.requests += batch.len() as u64;
            self.stats.batches += 1;
            let mut results: Vec<Option<(u64, u8, i16)>> = alloc::vec![None; batch.len()];
            // Check every plain read/write first (each stands or falls alone).
            let mut prepared: Vec<Option<Transfer>> = alloc::vec![None; batch.len()];
            for (i, item) in batch.iter().enumerate() {
                match item {
                    Err(r) => {
                        self.note_error(r.id, r.status, r.why);
                        results[i] = Some((r.id, r.operation, r.status));
                    }
                    Ok(req) => match prepare(req, &self.geometry, self.read_only, guest) {
                        Some(Ok(t)) => prepared[i] = Some(t),
                        Some(Err(Failure { status, why })) => {
                            self.note_error(req.id, status, why);
                            results[i] = Some((req.id, req.operation, status));
                        }
                        None => {}
                    },
                }
            }
            let mut i = 0;
            while i < batch.len() {
                if results[i].is_some() {
                    i += 1;
                    continue;
                }
                let Ok(req) = &batch[i] else {
                    unreachable!("rejections have results")
                };
                if prepared[i].is_some() {
                    // From here to the next request that is not a plain read or write
                    // (a flush, barrier or discard needs what came before it done), or
                    // that overlaps one taken already (blkif would allow reordering
                    // them, but a guest that reuses a block without waiting keeps the
                    // order it gave), up to BATCH_MAX_BYTES: runs of contiguous
                    // transfers, each one device I/O, all in flight at once (those
                    // through buffers of ours in rounds, see `transfer_runs`).
                    let mut runs: Vec<Vec<&Transfer>> = Vec::new();
                    let mut idx: Vec<Vec<usize>> = Vec::new();
                    let mut bytes = 0usize;
                    let mut k = i;
                    while k < batch.len() {
                        if results[k].is_some() {
                            k += 1;
                            continue;
                        }
                        let Some(t) = &prepared[k] else {
                            break;
                        };
                        if bytes > 0 && bytes + t.bytes > BATCH_MAX_BYTES {
                            break;
                        }
                        let bs = u64::from(self.geometry.block_size);
                        let end = t.lba.saturating_add((t.bytes as u64).div_ceil(bs));
                        if runs.iter().flatten().any(|o| {
                            o.lba < end
                                && t.lba < o.lba.saturating_add((o.bytes as u64).div_ceil(bs))
                        }) {
                            break;
                        }
                        bytes += t.bytes;
                        match runs.last_mut() {
                            Some(run) if continues(run, t, self.geometry.block_size) => {
                                run.push(t);
                                if let Some(last) = idx.last_mut() {
                                    last.push(k);
                                }
                                self.stats.merged += 1;
                            }
                            _ => {
                                runs.push(alloc::vec![t]);
                                idx.push(alloc::vec![k]);
                            }
                        }
                        k += 1;
                    }
                    let outcome = transfer_runs(&runs, dev, guest).await;
                    for (js, rs) in idx.iter().zip(outcome) {
                        for (&j, r) in js.iter().zip(rs) {
                            let Ok(q) = &batch[j] else { unreachable!() };
                            results[j] = Some(self.account(q, r));
                        }
                    }
                    i = k;
                    continue;
                }
                let r = execute(req, &self.geometry, self.read_only, dev, guest).await;
                results[i] = Some(self.account(req, r));
                i += 1;
            }
            // Publish per batch: a long stream of requests must not hold back completions.
            for (id, op, status) in results.into_iter().flatten() {
                self.ring.respond(&response(id, op, status));
            }
            if self.ring.push() {
                self.stats.notifies += 1;
                notify();
            }
        }
        Ok(())
    }

    /// One line for a state dump: the ring's indexes and what was served through it.
    pub fn describe(&self) -> String {
        let s = &self.stats;
        alloc::format!(
            "ring {}; {} requests in {} batches ({} merged), {} errors, {} notifies",
            self.ring.indexes(),
            s.requests,
            s.batches,
            s.merged,
            s.errors,
            s.notifies
        )
    }

    fn account(&mut self, req: &Request, r: Result<Done, Failure>) -> (u64, u8, i16) {
        match r {
            Ok(done) => {
                self.stats.read_bytes += done.read;
                self.stats.written_bytes += done.written;
                (req.id, req.operation, RSP_OKAY)
            }
            Err(Failure { status, why }) => {
                self.note_error(req.id, status, why);
                (req.id, req.operation, status)
            }
        }
    }

    /// Before waiting for the next event: true if requests arrived meanwhile.
    pub fn final_check(&mut self) -> Result<bool, RingError> {
        self.ring.final_check()
    }
}
