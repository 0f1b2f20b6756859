//! One ring served end to end: take requests in order, serve each, answer each exactly
//! once, and tell the frontend when its `rsp_event` asks.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::task::Poll;

use bulkhead_block::BlockDevice;
use bulkhead_xen::budget::{self, LogBudget};

use crate::abi::{Protocol, RSP_OKAY};
use crate::io::{
    continues, execute, prepare, transfer_runs, Budget, DmaPages, Done, Failure, Geometry,
    Transfer, BATCH_MAX_BYTES, BUFFERED_MAX_BYTES,
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

/// Batches of one ring at the device at once (when the device offers the handles):
/// one in flight and the next, taken from what the frontend published meanwhile.
pub const LANES: usize = 2;

/// A batch taken from the ring and checked, not yet answered.
struct Taken {
    requests: Vec<Result<Request, Rejected>>,
    /// The status of each request answered without the device (rejected, or failed
    /// its checks).
    early: Vec<Option<(u64, u8, i16)>>,
    /// Each plain read or write that passed its checks.
    prepared: Vec<Option<Transfer>>,
    /// It holds a flush, barrier or discard: it goes to the device with no other batch.
    alone: bool,
    /// The blocks its transfers touch, [first, end).
    ranges: Vec<(u64, u64)>,
}

fn overlaps(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.0 < y.1 && y.0 < x.1))
}

/// The blocks a transfer touches, [first, end), for blocks of `bs` bytes.
fn blocks(t: &Transfer, bs: u32) -> (u64, u64) {
    (
        t.lba,
        t.lba
            .saturating_add((t.bytes as u64).div_ceil(u64::from(bs))),
    )
}

/// The device a batch in flight uses: the caller's own, or another handle on it.
enum LaneDevice<'a, D> {
    Given(&'a mut D),
    Lane(D),
}

impl<D> LaneDevice<'_, D> {
    fn get(&mut self) -> &mut D {
        match self {
            LaneDevice::Given(d) => d,
            LaneDevice::Lane(d) => d,
        }
    }
}

/// What a batch in flight ends with: itself, what serving it did, and the device handle
/// it used.
type LaneEnd<'a, D> = (Taken, Served, LaneDevice<'a, D>);

/// What serving a batch did: each request it served, by index, with its result, and
/// how many of them went as part of another's device I/O (merged).
struct Served {
    results: Vec<(usize, Result<Done, Failure>)>,
    merged: u64,
}

/// A batch at the device.
struct Lane<'a, D> {
    alone: bool,
    ranges: Vec<(u64, u64)>,
    run: Pin<Box<dyn Future<Output = LaneEnd<'a, D>> + 'a>>,
}

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
    ///
    /// Up to [`LANES`] batches are at the device at once, when the device offers more
    /// than one handle ([`BlockDevice::lane`]): requests published while a batch is in
    /// flight go to the device beside it, and each batch is answered as it completes,
    /// in whatever order that is. A batch waits for every one before it to end when it
    /// holds a request that is not a plain read or write (a flush, barrier or discard
    /// needs what came before it done), or when one of its transfers overlaps one in
    /// flight; while such a batch is at the device, no other goes. Buffers of ours are
    /// bounded across all of them ([`Budget`]). The call returns only when no batch of
    /// it is left at the device, a broken ring included.
    pub async fn serve_notifying<D: BlockDevice, G: DmaPages + ?Sized>(
        &mut self,
        dev: &mut D,
        guest: &mut G,
        budget: usize,
        notify: &mut dyn FnMut(),
    ) -> Result<(), RingError> {
        let guest = RefCell::new(guest);
        let buffers = Budget::new(BUFFERED_MAX_BYTES);
        let geometry = self.geometry;
        let read_only = self.read_only;
        let mut free: Vec<LaneDevice<'_, D>> = (1..LANES)
            .map_while(|_| dev.lane().map(LaneDevice::Lane))
            .collect();
        free.push(LaneDevice::Given(dev));
        let mut lanes: Vec<Lane<'_, D>> = Vec::new();
        let mut waiting: Option<Taken> = None;
        let mut broken: Option<RingError> = None;
        let mut taken = 0usize;
        loop {
            // Start every batch that may go now.
            loop {
                let next = match waiting.take() {
                    Some(b) => b,
                    None if broken.is_none() && taken < budget.max(1) => {
                        match self.take_batch(&mut **guest.borrow_mut()) {
                            Ok(Some(b)) => {
                                taken += b.requests.len();
                                b
                            }
                            Ok(None) => break,
                            Err(e) => {
                                broken = Some(e);
                                break;
                            }
                        }
                    }
                    None => break,
                };
                let goes = lanes.is_empty()
                    || (!next.alone
                        && !lanes
                            .iter()
                            .any(|l| l.alone || overlaps(&l.ranges, &next.ranges)));
                // With no batch at the device every handle is free: a batch that
                // waits always has one in flight to wait for.
                let Some(mut d) = goes.then(|| free.pop()).flatten() else {
                    waiting = Some(next);
                    break;
                };
                let guest = &guest;
                let buffers = &buffers;
                let alone = next.alone;
                let ranges = next.ranges.clone();
                lanes.push(Lane {
                    alone,
                    ranges,
                    run: Box::pin(async move {
                        let results =
                            serve_batch(&next, d.get(), guest, buffers, &geometry, read_only).await;
                        (next, results, d)
                    }),
                });
            }
            if lanes.is_empty() {
                break;
            }
            // Answer the first batch to end.
            let (i, (batch, results, d)) = poll_fn(|cx| {
                for (i, l) in lanes.iter_mut().enumerate() {
                    if let Poll::Ready(v) = l.run.as_mut().poll(cx) {
                        return Poll::Ready((i, v));
                    }
                }
                Poll::Pending
            })
            .await;
            drop(lanes.swap_remove(i));
            free.push(d);
            self.answer(batch, results, notify);
        }
        match broken {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Take up to [`BATCH`] requests from the ring and check each: rejections and
    /// requests that fail their checks get their status now (the guest's pages are read
    /// for indirect segments); None if the ring had none.
    fn take_batch<G: DmaPages + ?Sized>(
        &mut self,
        guest: &mut G,
    ) -> Result<Option<Taken>, RingError> {
        let mut requests: Vec<Result<Request, Rejected>> = Vec::new();
        while requests.len() < BATCH {
            match self.ring.take()? {
                Some(raw) => requests.push(decode(&raw, self.protocol, &self.limits)),
                None => break,
            }
        }
        if requests.is_empty() {
            return Ok(None);
        }
        self.stats.requests += requests.len() as u64;
        self.stats.batches += 1;
        let mut early: Vec<Option<(u64, u8, i16)>> = alloc::vec![None; requests.len()];
        // Check every plain read/write first (each stands or falls alone).
        let mut prepared: Vec<Option<Transfer>> = alloc::vec![None; requests.len()];
        for (i, item) in requests.iter().enumerate() {
            match item {
                Err(r) => {
                    self.note_error(r.id, r.status, r.why);
                    early[i] = Some((r.id, r.operation, r.status));
                }
                Ok(req) => match prepare(req, &self.geometry, self.read_only, guest) {
                    Some(Ok(t)) => prepared[i] = Some(t),
                    Some(Err(Failure { status, why })) => {
                        self.note_error(req.id, status, why);
                        early[i] = Some((req.id, req.operation, status));
                    }
                    None => {}
                },
            }
        }
        let ranges = prepared
            .iter()
            .flatten()
            .map(|t| blocks(t, self.geometry.block_size))
            .collect();
        // A request with neither an early status nor a transfer is a flush, barrier or
        // discard: it needs everything before it done.
        let alone = (0..requests.len()).any(|i| early[i].is_none() && prepared[i].is_none());
        Ok(Some(Taken {
            requests,
            early,
            prepared,
            alone,
            ranges,
        }))
    }

    /// A batch ended: account for each request, publish every answer, and tell the
    /// frontend if it asked.
    fn answer(&mut self, batch: Taken, served: Served, notify: &mut dyn FnMut()) {
        self.stats.merged += served.merged;
        let mut answers = batch.early;
        for (i, r) in served.results {
            if let Ok(req) = &batch.requests[i] {
                answers[i] = Some(self.account(req, r));
            }
        }
        // Publish per batch: a long stream of requests must not hold back completions.
        for (id, op, status) in answers.into_iter().flatten() {
            self.ring.respond(&response(id, op, status));
        }
        if self.ring.push() {
            self.stats.notifies += 1;
            notify();
        }
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

/// Serve one batch's requests that need the device, in order: from each plain read or
/// write to the next request that is not one (a flush, barrier or discard needs what
/// came before it done), or that overlaps one taken already (blkif would allow
/// reordering them, but a guest that reuses a block without waiting keeps the order it
/// gave), up to BATCH_MAX_BYTES: runs of contiguous transfers, each one device I/O,
/// all in flight at once (those through buffers of ours in rounds, see
/// `transfer_runs`); everything else alone. One result per request served (by index).
async fn serve_batch<D: BlockDevice, G: DmaPages + ?Sized>(
    batch: &Taken,
    dev: &mut D,
    guest: &RefCell<&mut G>,
    buffers: &Budget,
    geometry: &Geometry,
    read_only: bool,
) -> Served {
    let n = batch.requests.len();
    let mut out: Vec<(usize, Result<Done, Failure>)> = Vec::with_capacity(n);
    let mut merged = 0;
    let answered_early = |k: usize| batch.early[k].is_some();
    let mut i = 0;
    while i < n {
        if answered_early(i) {
            i += 1;
            continue;
        }
        let Ok(req) = &batch.requests[i] else {
            unreachable!("rejections have early answers")
        };
        if batch.prepared[i].is_none() {
            let r = execute(req, geometry, read_only, dev, guest, buffers).await;
            out.push((i, r));
            i += 1;
            continue;
        }
        let mut runs: Vec<Vec<&Transfer>> = Vec::new();
        let mut idx: Vec<Vec<usize>> = Vec::new();
        let mut bytes = 0usize;
        // The blocks of every transfer taken into `runs`.
        let mut taken: Vec<(u64, u64)> = Vec::new();
        let mut k = i;
        while k < n {
            if answered_early(k) {
                k += 1;
                continue;
            }
            let Some(t) = &batch.prepared[k] else {
                break;
            };
            if bytes > 0 && bytes + t.bytes > BATCH_MAX_BYTES {
                break;
            }
            let these = blocks(t, geometry.block_size);
            if overlaps(&taken, &[these]) {
                break;
            }
            taken.push(these);
            bytes += t.bytes;
            match runs.last_mut() {
                Some(run) if continues(run, t, geometry.block_size) => {
                    run.push(t);
                    if let Some(last) = idx.last_mut() {
                        last.push(k);
                    }
                    merged += 1;
                }
                _ => {
                    runs.push(alloc::vec![t]);
                    idx.push(alloc::vec![k]);
                }
            }
            k += 1;
        }
        let outcome = transfer_runs(&runs, dev, guest, buffers).await;
        for (js, rs) in idx.iter().zip(outcome) {
            for (&j, r) in js.iter().zip(rs) {
                out.push((j, r));
            }
        }
        i = k;
    }
    Served {
        results: out,
        merged,
    }
}
