//! The data path: moving bytes between the guest's granted pages and the device.
//!
//! Guest pages are reached through [`GuestMemory`] (copies) and, where a page is
//! persistently mapped and the device can reach it, by the device itself
//! ([`DmaPages`]): then a request moves with no copy at all, as Linux's blkback moves
//! it. Otherwise the kernel's batched grant copies (built by [`copy_ops`]) or copies
//! through the persistent mappings go into and out of a buffer of ours that the device
//! DMAs to and from.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::poll_fn;
use core::task::{Poll, Waker};

use bulkhead_block::{BlockDevice, BlockError, Io, Span};

use crate::abi::{PAGE_SIZE, RSP_EOPNOTSUPP, RSP_ERROR};
use crate::request::{self, Body, Request, Segment, Segments};

pub use bulkhead_xen::copy::{copy_ops, op_gref, GrantFault, GuestMemory, Piece};

impl From<&Segment> for Piece {
    fn from(s: &Segment) -> Piece {
        Piece {
            gref: s.gref,
            offset: s.offset() as u16,
            len: s.bytes() as u16,
        }
    }
}

/// Guest memory that the device may also reach itself. A ring whose frontend keeps its
/// grants mapped ([`crate::persistent`]) offers the mapped pages; everything else takes
/// the defaults (no page is offered: every byte goes by copy).
pub trait DmaPages: GuestMemory {
    /// For each run, one span per piece of its transfers in order (the piece's page,
    /// mapped, at its offset), or None if any of its pieces cannot be offered or `takes`
    /// (the device) refuses the spans. Every span handed out stays mapped until
    /// [`DmaPages::release_dma`] of its pieces: the device may be writing it (several
    /// batches of a ring may hold spans at once, each releasing its own).
    fn dma_pages(
        &mut self,
        runs: &[Vec<&Transfer>],
        _takes: &mut dyn FnMut(&[Span]) -> bool,
    ) -> Vec<Option<Vec<Span>>> {
        runs.iter().map(|_| None).collect()
    }
    /// The device is done with the spans handed out for `pieces` (those of the runs
    /// that were offered, as many times as they were).
    fn release_dma(&mut self, _pieces: &[Piece]) {}
}

/// The device as this vbd exposes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Capacity in 512-byte sectors (the unit of every ring quantity).
    pub sectors: u64,
    pub block_size: u32,
}

/// Why a request failed: the status to answer with and a line for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: i16,
    pub why: &'static str,
}

fn fail(status: i16, why: &'static str) -> Failure {
    Failure { status, why }
}

fn device_failure(e: BlockError) -> Failure {
    match e {
        BlockError::Unsupported => fail(RSP_EOPNOTSUPP, "device does not support it"),
        BlockError::ReadOnly => fail(RSP_ERROR, "write to a read-only disk"),
        BlockError::OutOfRange => fail(RSP_ERROR, "range outside the disk"),
        BlockError::BadLength => fail(RSP_ERROR, "length is not whole blocks"),
        BlockError::Io => fail(RSP_ERROR, "device I/O error"),
        BlockError::Timeout => fail(RSP_ERROR, "device timed out"),
    }
}

/// What serving one request moved, for counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub read: u64,
    pub written: u64,
}

/// A read or write that passed every check: where it goes and which guest pieces it
/// moves, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub write: bool,
    pub lba: u64,
    pub bytes: usize,
    pub pieces: Vec<Piece>,
}

/// Check a plain read or write (fetching indirect segments) without touching the
/// device; None for requests of other kinds.
pub fn prepare<G: GuestMemory + ?Sized>(
    req: &Request,
    geo: &Geometry,
    read_only: bool,
    guest: &mut G,
) -> Option<Result<Transfer, Failure>> {
    let Body::Rw {
        write,
        sector,
        segments,
    } = &req.body
    else {
        return None;
    };
    Some(check_rw(*write, *sector, segments, geo, read_only, guest))
}

fn check_rw<G: GuestMemory + ?Sized>(
    write: bool,
    sector: u64,
    segments: &Segments,
    geo: &Geometry,
    read_only: bool,
    guest: &mut G,
) -> Result<Transfer, Failure> {
    if write && read_only {
        return Err(fail(RSP_ERROR, "write to a read-only disk"));
    }
    match segments {
        Segments::Direct(s) => placed(write, sector, s, geo),
        Segments::Indirect { count, pages } => {
            let segs = fetch_indirect(pages, *count, guest)?;
            placed(write, sector, &segs, geo)
        }
    }
}

/// The segments an indirect request lists in its pages (copied from the guest once).
fn fetch_indirect<G: GuestMemory + ?Sized>(
    pages: &[u32],
    count: usize,
    guest: &mut G,
) -> Result<Vec<Segment>, Failure> {
    let pieces: Vec<Piece> = pages
        .iter()
        .map(|&gref| Piece {
            gref,
            offset: 0,
            len: PAGE_SIZE as u16,
        })
        .collect();
    let mut raw = vec![0u8; pieces.len() * PAGE_SIZE];
    guest
        .read(&pieces, &mut raw)
        .map_err(|_| fail(RSP_ERROR, "cannot read the indirect pages"))?;
    request::decode_indirect(&raw, count).map_err(|w| fail(RSP_ERROR, w))
}

fn placed(write: bool, sector: u64, segs: &[Segment], geo: &Geometry) -> Result<Transfer, Failure> {
    let at = request::place(sector, segs, geo.sectors, geo.block_size)
        .map_err(|w| fail(RSP_ERROR, w))?;
    Ok(Transfer {
        write,
        lba: at.lba,
        bytes: at.bytes,
        pieces: segs.iter().map(Piece::from).collect(),
    })
}

/// Largest device I/O built by merging requests.
pub const MERGE_MAX_BYTES: usize = 1 << 20;

/// Whether `next` continues `run` (same direction, next block, room left).
pub fn continues(run: &[&Transfer], next: &Transfer, block_size: u32) -> bool {
    let Some(last) = run.last() else {
        return false;
    };
    let total: usize = run.iter().map(|t| t.bytes).sum();
    last.write == next.write
        && last.lba + (last.bytes / block_size as usize) as u64 == next.lba
        && total + next.bytes <= MERGE_MAX_BYTES
}

/// Largest amount of data one queue has in flight at once: eight merged I/Os, what a
/// guest reading 1 MiB at queue depth 8 keeps waiting (Linux's blkback keeps all of it
/// in flight too). Only the runs that go through buffers of ours cost this driver
/// domain memory, and those are bounded apart ([`BUFFERED_MAX_BYTES`]).
pub const BATCH_MAX_BYTES: usize = 8 * MERGE_MAX_BYTES;

/// Largest amount of buffers of ours one queue's transfers hold at once (those whose
/// guest pages the device cannot reach itself): what a frontend's requests can make
/// this driver domain allocate per queue, whatever it publishes, however many of its
/// batches are at the device ([`Budget`]). The same as one merged I/O, so serving
/// requests at once costs no more memory than merging them did.
pub const BUFFERED_MAX_BYTES: usize = MERGE_MAX_BYTES;

/// The bytes of buffers one queue's batches may hold at once, shared by the batches
/// served at the same time: a round takes what its buffered runs need before they are
/// allocated and gives it back when it ends, waiting while the others hold too much.
/// A single run larger than the whole budget goes alone, when nothing else holds any.
pub struct Budget {
    total: usize,
    used: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
}

impl Budget {
    pub fn new(total: usize) -> Budget {
        Budget {
            total,
            used: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Take `n` bytes if they fit (or if nothing is held at all).
    fn try_take(&self, n: usize) -> bool {
        let used = self.used.get();
        if used == 0 || used + n <= self.total {
            self.used.set(used + n);
            true
        } else {
            false
        }
    }

    /// Take `n` bytes, waiting until they fit.
    async fn take(&self, n: usize) {
        poll_fn(|cx| {
            if self.try_take(n) {
                return Poll::Ready(());
            }
            let mut w = self.waiters.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    fn give(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
        for w in core::mem::take(&mut *self.waiters.borrow_mut()) {
            w.wake();
        }
    }
}

/// Bytes taken from a [`Budget`], given back when dropped (whatever way the round ends).
struct Held<'a>(&'a Budget, usize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.give(self.1);
    }
}

/// A stretch of a run that goes to the device as one transfer: transfers `first..end` of
/// the run, bytes `at..at + len` of its buffer. A run splits into several only around a
/// write request whose pages could not be read.
struct Part {
    run: usize,
    first: usize,
    end: usize,
    at: usize,
    len: usize,
}

/// Serve runs of contiguous transfers (each run one device I/O), all runs at once
/// ([`BlockDevice::transfer_all`]); one result per transfer, per run. A run whose guest
/// pages are all persistently mapped and that the device can reach goes straight
/// between those pages and the device; every other run goes through a buffer of ours:
/// the guest's pages are copied in one batch for all the writes before the device sees
/// them, and out in one batch for all the reads after it answered (such a read reaches
/// the guest only if the device succeeded; a direct one that failed may have left part
/// of its data in the guest's pages, which it then must not use: it got an error). A
/// guest copy that fails costs only its own request; a device failure on a merged I/O
/// is retried request by request, so each gets its own status.
///
/// Buffers are what the frontend's requests make this driver domain hold, so the
/// queue's [`Budget`] bounds them (at most [`BUFFERED_MAX_BYTES`], or one run's if
/// larger, across all of its batches at the device): the runs that do not fit wait for
/// the next round, after the device answered the first, or, when nothing of this
/// batch fits, for another batch to give its buffers back. Direct runs hold only the
/// guest's own pages and all go in the first round.
///
/// The guest's memory is shared with the ring's other batches served at the same time:
/// it is borrowed only between two waits, never across one.
pub async fn transfer_runs<D: BlockDevice, G: DmaPages + ?Sized>(
    runs: &[Vec<&Transfer>],
    dev: &mut D,
    guest: &RefCell<&mut G>,
    budget: &Budget,
) -> Vec<Vec<Result<Done, Failure>>> {
    let mut out: Vec<Option<Vec<Result<Done, Failure>>>> = vec![None; runs.len()];
    let mut pending: Vec<usize> = (0..runs.len()).collect();
    while !pending.is_empty() {
        let these: Vec<Vec<&Transfer>> = pending.iter().map(|&i| runs[i].clone()).collect();
        let offered = guest
            .borrow_mut()
            .dma_pages(&these, &mut |sp| dev.takes_spans(sp));
        let mut now: Vec<usize> = Vec::new();
        let mut direct: Vec<Option<Vec<Span>>> = Vec::new();
        let mut later: Vec<usize> = Vec::new();
        let mut buffered = 0usize;
        for (&i, d) in pending.iter().zip(offered) {
            if d.is_none() {
                let bytes: usize = runs[i].iter().map(|t| t.bytes).sum();
                if !budget.try_take(bytes) {
                    later.push(i);
                    continue;
                }
                buffered += bytes;
            }
            now.push(i);
            direct.push(d);
        }
        if now.is_empty() {
            // Every run left goes through buffers and the other batches hold the
            // budget: wait for room for the first.
            let first = later.remove(0);
            let bytes: usize = runs[first].iter().map(|t| t.bytes).sum();
            budget.take(bytes).await;
            buffered = bytes;
            now.push(first);
            direct.push(None);
        }
        let held = Held(budget, buffered);
        let round: Vec<Vec<&Transfer>> = now.iter().map(|&i| runs[i].clone()).collect();
        let results = serve_round(&round, &direct, dev, guest).await;
        drop(held);
        // Every transfer of the round has ended: the device no longer touches the
        // guest's pages it was offered.
        let offered_pieces: Vec<Piece> = round
            .iter()
            .zip(&direct)
            .filter(|(_, d)| d.is_some())
            .flat_map(|(run, _)| run.iter().flat_map(|t| t.pieces.iter().copied()))
            .collect();
        if !offered_pieces.is_empty() {
            guest.borrow_mut().release_dma(&offered_pieces);
        }
        for (i, r) in now.into_iter().zip(results) {
            out[i] = Some(r);
        }
        pending = later;
    }
    // Every round serves at least one run, so every run has its results; this is only
    // what a run without them would answer.
    out.into_iter()
        .zip(runs)
        .map(|(r, run)| {
            r.unwrap_or_else(|| {
                run.iter()
                    .map(|_| Err(fail(RSP_ERROR, "no result")))
                    .collect()
            })
        })
        .collect()
}

/// One round of [`transfer_runs`]: `direct` has each run's spans if the device moves it
/// itself.
async fn serve_round<D: BlockDevice, G: DmaPages + ?Sized>(
    runs: &[Vec<&Transfer>],
    direct: &[Option<Vec<Span>>],
    dev: &mut D,
    guest: &RefCell<&mut G>,
) -> Vec<Vec<Result<Done, Failure>>> {
    let mut out: Vec<Vec<Option<Result<Done, Failure>>>> =
        runs.iter().map(|r| vec![None; r.len()]).collect();
    // A buffer for each run the device does not move itself.
    let mut bufs: Vec<Vec<u8>> = runs
        .iter()
        .zip(direct)
        .map(|(r, d)| match d {
            Some(_) => Vec::new(),
            None => vec![0u8; r.iter().map(|t| t.bytes).sum()],
        })
        .collect();
    // Gather every write's data; a request whose pages cannot be read fails alone.
    let copied = {
        let mut jobs: Vec<(&[Piece], &mut [u8])> = Vec::new();
        for ((run, buf), d) in runs.iter().zip(bufs.iter_mut()).zip(direct) {
            if !run[0].write || d.is_some() {
                continue;
            }
            let mut rest = &mut buf[..];
            for t in run {
                let (head, tail) = rest.split_at_mut(t.bytes);
                jobs.push((&t.pieces, head));
                rest = tail;
            }
        }
        if jobs.is_empty() {
            Vec::new()
        } else {
            guest.borrow_mut().read_all(&mut jobs)
        }
    };
    let mut copied = copied.into_iter();
    let mut parts: Vec<Part> = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        let mut first = 0;
        let mut at = 0;
        let mut end_at = 0;
        for (k, t) in run.iter().enumerate() {
            end_at += t.bytes;
            let lost =
                run[0].write && direct[r].is_none() && copied.next().is_none_or(|c| c.is_err());
            if lost {
                if k > first {
                    parts.push(Part {
                        run: r,
                        first,
                        end: k,
                        at,
                        len: end_at - t.bytes - at,
                    });
                }
                out[r][k] = Some(Err(fail(RSP_ERROR, "cannot copy from the guest's pages")));
                first = k + 1;
                at = end_at;
            }
        }
        if run.len() > first {
            parts.push(Part {
                run: r,
                first,
                end: run.len(),
                at,
                len: end_at - at,
            });
        }
    }
    // Every part to the device at once.
    let results = {
        let mut ios: Vec<Io<'_>> = Vec::with_capacity(parts.len());
        let mut rests: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        let mut taken = vec![0usize; runs.len()];
        for p in &parts {
            let lba = runs[p.run][p.first].lba;
            let write = runs[p.run][0].write;
            if let Some(spans) = &direct[p.run] {
                // A direct run is never split: it is one part, all its spans.
                ios.push(if write {
                    Io::WriteFrom { lba, spans }
                } else {
                    Io::ReadTo { lba, spans }
                });
                continue;
            }
            let rest = core::mem::take(&mut rests[p.run]);
            let (_, from) = rest.split_at_mut(p.at - taken[p.run]);
            let (buf, tail) = from.split_at_mut(p.len);
            rests[p.run] = tail;
            taken[p.run] = p.at + p.len;
            ios.push(if write {
                Io::Write { lba, buf }
            } else {
                Io::Read { lba, buf }
            });
        }
        dev.transfer_all(&mut ios).await
    };
    // Reads that succeeded go to the guest in one batch; failed parts of more than one
    // request are retried request by request.
    let mut retry: Vec<&Part> = Vec::new();
    {
        let mut jobs: Vec<(&[Piece], &[u8])> = Vec::new();
        let mut owners: Vec<(usize, usize)> = Vec::new();
        for (p, r) in parts.iter().zip(&results) {
            let run = &runs[p.run];
            match r {
                Ok(()) if run[0].write || direct[p.run].is_some() => {
                    for k in p.first..p.end {
                        out[p.run][k] = Some(Ok(moved(run[k])));
                    }
                }
                Ok(()) => {
                    let mut at = p.at;
                    for k in p.first..p.end {
                        jobs.push((&run[k].pieces, &bufs[p.run][at..at + run[k].bytes]));
                        owners.push((p.run, k));
                        at += run[k].bytes;
                    }
                }
                Err(e) if p.end - p.first == 1 => {
                    out[p.run][p.first] = Some(Err(device_failure(*e)))
                }
                Err(_) => retry.push(p),
            }
        }
        let written = if jobs.is_empty() {
            Vec::new()
        } else {
            guest.borrow_mut().write_all(&jobs)
        };
        for ((r, k), w) in owners.into_iter().zip(written) {
            out[r][k] = Some(
                w.map(|_| moved(runs[r][k]))
                    .map_err(|_| fail(RSP_ERROR, "cannot copy into the guest's pages")),
            );
        }
    }
    for p in retry {
        let run = &runs[p.run];
        let mut at = p.at;
        // A direct run's spans, request by request (one span per piece).
        let mut span_at = run[..p.first].iter().map(|t| t.pieces.len()).sum::<usize>();
        for k in p.first..p.end {
            let t = run[k];
            out[p.run][k] = Some(if let Some(spans) = &direct[p.run] {
                let spans = &spans[span_at..span_at + t.pieces.len()];
                span_at += t.pieces.len();
                let mut io = [if t.write {
                    Io::WriteFrom { lba: t.lba, spans }
                } else {
                    Io::ReadTo { lba: t.lba, spans }
                }];
                match dev.transfer_all(&mut io).await.pop() {
                    Some(Ok(())) => Ok(moved(t)),
                    Some(Err(e)) => Err(device_failure(e)),
                    None => Err(fail(RSP_ERROR, "no result")),
                }
            } else if t.write {
                dev.write(t.lba, &bufs[p.run][at..at + t.bytes])
                    .await
                    .map(|_| moved(t))
                    .map_err(device_failure)
            } else {
                // Into the run's own buffer: a retry allocates nothing more.
                let buf = &mut bufs[p.run][at..at + t.bytes];
                match dev.read(t.lba, buf).await {
                    Ok(()) => guest
                        .borrow_mut()
                        .write(&t.pieces, buf)
                        .map(|_| moved(t))
                        .map_err(|_| fail(RSP_ERROR, "cannot copy into the guest's pages")),
                    Err(e) => Err(device_failure(e)),
                }
            });
            at += t.bytes;
        }
    }
    out.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|x| x.unwrap_or(Err(fail(RSP_ERROR, "no result"))))
                .collect()
        })
        .collect()
}

/// What a transfer that succeeded moved.
fn moved(t: &Transfer) -> Done {
    if t.write {
        Done {
            read: 0,
            written: t.bytes as u64,
        }
    } else {
        Done {
            read: t.bytes as u64,
            written: 0,
        }
    }
}

/// Serve one decoded request: fetch indirect segments, check the range, move the data.
/// The device sees nothing until every check passed; data read from the device reaches
/// the guest only if the device succeeded.
pub async fn execute<D: BlockDevice, G: DmaPages + ?Sized>(
    req: &Request,
    geo: &Geometry,
    read_only: bool,
    dev: &mut D,
    guest: &RefCell<&mut G>,
    budget: &Budget,
) -> Result<Done, Failure> {
    match &req.body {
        Body::Flush => {
            dev.flush().await.map_err(device_failure)?;
            Ok(Done::default())
        }
        Body::Discard {
            sector, sectors, ..
        } => {
            if read_only {
                return Err(fail(RSP_ERROR, "discard on a read-only disk"));
            }
            let (lba, blocks) =
                request::place_discard(*sector, *sectors, geo.sectors, geo.block_size)
                    .map_err(|w| fail(RSP_ERROR, w))?;
            dev.discard(lba, blocks).await.map_err(device_failure)?;
            Ok(Done::default())
        }
        Body::Barrier { sector, segments } => {
            if read_only {
                return Err(fail(RSP_ERROR, "barrier write on a read-only disk"));
            }
            // Requests are served in order, so everything before the barrier has
            // completed; make it stable, write, and make the write stable too.
            dev.flush().await.map_err(device_failure)?;
            let mut done = Done::default();
            if !segments.is_empty() {
                done = one(&placed(true, *sector, segments, geo)?, dev, guest, budget).await?;
                dev.flush().await.map_err(device_failure)?;
            }
            Ok(done)
        }
        Body::Rw {
            write,
            sector,
            segments,
        } => {
            let t = check_rw(
                *write,
                *sector,
                segments,
                geo,
                read_only,
                &mut **guest.borrow_mut(),
            )?;
            one(&t, dev, guest, budget).await
        }
    }
}

async fn one<D: BlockDevice, G: DmaPages + ?Sized>(
    t: &Transfer,
    dev: &mut D,
    guest: &RefCell<&mut G>,
    budget: &Budget,
) -> Result<Done, Failure> {
    let mut r = transfer_runs(&[vec![t]], dev, guest, budget).await;
    r.pop()
        .and_then(|mut v| v.pop())
        .unwrap_or(Err(fail(RSP_ERROR, "no result")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::future::Future;
    use core::pin::pin;
    use core::task::{Context, Waker};

    #[test]
    fn a_budget_lets_batches_share_it_and_makes_the_one_that_does_not_fit_wait() {
        let b = Budget::new(100);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(b.try_take(60));
        assert!(b.try_take(40), "up to the whole budget");
        let mut third = pin!(b.take(10));
        assert!(third.as_mut().poll(&mut cx).is_pending(), "full: it waits");
        let held = Held(&b, 60);
        drop(held);
        assert!(third.as_mut().poll(&mut cx).is_ready());
        assert_eq!(b.used(), 50);
        b.give(50);
        // A run larger than the whole budget goes, alone.
        assert!(b.try_take(250));
        assert!(!b.try_take(1));
        b.give(250);
        assert_eq!(b.used(), 0);
    }
}
