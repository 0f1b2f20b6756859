//! The data path: moving bytes between the guest's granted pages and the device.
//!
//! Guest pages are reached through [`GuestMemory`]. The kernel's implementation uses
//! batched grant copies (built by [`copy_ops`]) into and out of a bounce buffer that the
//! NVMe controller DMAs to and from; a guest page is never handed to the device, so a
//! frontend that revokes a grant mid-request cannot make the device write anywhere but
//! our own buffer.

use alloc::vec;
use alloc::vec::Vec;

use bulkhead_block::{BlockDevice, BlockError};

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

/// Serve a run of contiguous transfers with one device I/O; one result per transfer.
/// A guest copy that fails costs only its own request; a device failure on a merged
/// I/O is retried request by request, so each gets its own status.
pub async fn transfer_run<D: BlockDevice, G: GuestMemory + ?Sized>(
    run: &[&Transfer],
    dev: &mut D,
    guest: &mut G,
) -> Vec<Result<Done, Failure>> {
    let total: usize = run.iter().map(|t| t.bytes).sum();
    let mut buf = vec![0u8; total];
    let mut out: Vec<Result<Done, Failure>> = Vec::with_capacity(run.len());
    if run[0].write {
        // Gather the whole run in one batch; a request whose pages cannot be read
        // splits the device write around its hole.
        let copied = {
            let mut jobs: Vec<(&[Piece], &mut [u8])> = Vec::with_capacity(run.len());
            let mut rest = &mut buf[..];
            for t in run {
                let (head, tail) = rest.split_at_mut(t.bytes);
                jobs.push((&t.pieces, head));
                rest = tail;
            }
            guest.read_all(&mut jobs)
        };
        let mut start = 0; // first transfer of the pending device write
        let mut at = 0; // its byte offset in `buf`
        let mut end = 0; // end of the gathered bytes
        for (i, (t, r)) in run.iter().zip(copied).enumerate() {
            end += t.bytes;
            if r.is_err() {
                flush_write(&run[start..i], &buf[at..end - t.bytes], dev, &mut out).await;
                out.push(Err(fail(RSP_ERROR, "cannot copy from the guest's pages")));
                start = i + 1;
                at = end;
            }
        }
        flush_write(&run[start..], &buf[at..end], dev, &mut out).await;
    } else {
        if run.len() == 1 {
            return vec![single_read(run[0], dev, guest).await];
        }
        if dev.read(run[0].lba, &mut buf).await.is_err() {
            for t in run {
                out.push(single_read(t, dev, guest).await);
            }
            return out;
        }
        // Scatter the whole run in one batch.
        let mut jobs: Vec<(&[Piece], &[u8])> = Vec::with_capacity(run.len());
        let mut at = 0;
        for t in run {
            jobs.push((&t.pieces, &buf[at..at + t.bytes]));
            at += t.bytes;
        }
        for (t, r) in run.iter().zip(guest.write_all(&jobs)) {
            out.push(
                r.map(|_| Done {
                    read: t.bytes as u64,
                    written: 0,
                })
                .map_err(|_| fail(RSP_ERROR, "cannot copy into the guest's pages")),
            );
        }
    }
    out
}

async fn flush_write<D: BlockDevice>(
    run: &[&Transfer],
    data: &[u8],
    dev: &mut D,
    out: &mut Vec<Result<Done, Failure>>,
) {
    if run.is_empty() {
        return;
    }
    match dev.write(run[0].lba, data).await {
        Ok(()) => {
            out.extend(run.iter().map(|t| {
                Ok(Done {
                    read: 0,
                    written: t.bytes as u64,
                })
            }));
            return;
        }
        Err(e) if run.len() == 1 => {
            out.push(Err(device_failure(e)));
            return;
        }
        Err(_) => {}
    }
    // Retry one by one for exact statuses.
    let mut at = 0;
    for t in run {
        out.push(
            dev.write(t.lba, &data[at..at + t.bytes])
                .await
                .map(|_| Done {
                    read: 0,
                    written: t.bytes as u64,
                })
                .map_err(device_failure),
        );
        at += t.bytes;
    }
}

async fn single_read<D: BlockDevice, G: GuestMemory + ?Sized>(
    t: &Transfer,
    dev: &mut D,
    guest: &mut G,
) -> Result<Done, Failure> {
    let mut buf = vec![0u8; t.bytes];
    dev.read(t.lba, &mut buf).await.map_err(device_failure)?;
    guest
        .write(&t.pieces, &buf)
        .map_err(|_| fail(RSP_ERROR, "cannot copy into the guest's pages"))?;
    Ok(Done {
        read: t.bytes as u64,
        written: 0,
    })
}

/// Serve one decoded request: fetch indirect segments, check the range, move the data.
/// The device sees nothing until every check passed; data read from the device reaches
/// the guest only if the device succeeded.
pub async fn execute<D: BlockDevice, G: GuestMemory + ?Sized>(
    req: &Request,
    geo: &Geometry,
    read_only: bool,
    dev: &mut D,
    guest: &mut G,
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
                done = one(&placed(true, *sector, segments, geo)?, dev, guest).await?;
                dev.flush().await.map_err(device_failure)?;
            }
            Ok(done)
        }
        Body::Rw {
            write,
            sector,
            segments,
        } => {
            let t = check_rw(*write, *sector, segments, geo, read_only, guest)?;
            one(&t, dev, guest).await
        }
    }
}

async fn one<D: BlockDevice, G: GuestMemory + ?Sized>(
    t: &Transfer,
    dev: &mut D,
    guest: &mut G,
) -> Result<Done, Failure> {
    let mut r = transfer_run(&[t], dev, guest).await;
    r.pop().unwrap_or(Err(fail(RSP_ERROR, "no result")))
}
