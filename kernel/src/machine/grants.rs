//! Grant memory: our grant table (v1, mapped into frames we allocate), the slots that
//! other domains' grants are mapped into (a window of unpopulated address space, or
//! frames given back to Xen), the pages mapped there (rings, persistent grants), and the
//! buffers grant copies fill. The slots are recorded when they are made, and a mapped
//! page is reached only at one of them: no Rust object lives in a slot, so a frontend
//! writing its page while we read it changes bytes, never our memory's meaning.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU16, AtomicU64, Ordering};

use bulkhead_xen::abi::{self, DomId, GrantRef};
use bulkhead_xen::copy::{
    copy_ops, forward_ops, publish_op, total, Forward, GrantFault, GuestMemory, Piece, Publish,
    ReadsAndWrites,
};
use bulkhead_xen::grants::{GrantTable, GrantTableMemory, MapSlots, Mapping};
use bulkhead_xen::Errno;

use super::{hv, slots};

/// Copy bytes out of the grant `m` maps (a persistent grant), from `offset`. Panics if
/// its address is not a slot or the range leaves the page: both would be our bug. The
/// frontend may write the page meanwhile; bytes are copied, never referenced.
pub fn copy_from_slot(m: &Mapping, offset: usize, dst: &mut [u8]) {
    assert!(
        slots::is_slot(m.addr) && offset + dst.len() <= 4096,
        "not a mapped grant slot range"
    );
    // SAFETY: a slot holds only grant pages this domain mapped (the cache unmaps only
    // entries it removed, and `m` is one it holds), never a Rust object; the range lies
    // inside the page.
    unsafe {
        core::ptr::copy_nonoverlapping(
            (m.addr as usize + offset) as *const u8,
            dst.as_mut_ptr(),
            dst.len(),
        )
    }
}

/// Copy bytes into the grant `m` maps, from `offset`; it must be mapped writable (a
/// write to a read-only mapping would fault the domain).
pub fn copy_to_slot(m: &Mapping, offset: usize, src: &[u8]) {
    assert!(!m.readonly, "write to a read-only grant mapping");
    assert!(
        slots::is_slot(m.addr) && offset + src.len() <= 4096,
        "not a mapped grant slot range"
    );
    // SAFETY: as for `copy_from_slot`, and the mapping is writable.
    unsafe {
        core::ptr::copy_nonoverlapping(
            src.as_ptr(),
            (m.addr as usize + offset) as *mut u8,
            src.len(),
        )
    }
}

/// A ring's pages, each a grant mapped at a slot, not necessarily adjacent. The frontend
/// writes them at any time: the indexes are read and written atomically, the slots
/// byte by byte (volatile), each once into a private copy.
pub struct MappedRing {
    pages: Vec<u64>,
}

impl MappedRing {
    /// The ring over the grants mapped at `pages` (slot addresses), or None if one is
    /// not a slot.
    pub fn new(pages: Vec<u64>) -> Option<MappedRing> {
        pages
            .iter()
            .all(|&a| slots::is_slot(a))
            .then_some(MappedRing { pages })
    }

    fn at(&self, off: usize, width: usize) -> usize {
        let (page, o) = (off / 4096, off % 4096);
        assert!(
            page < self.pages.len() && o.is_multiple_of(width) && o + width <= 4096,
            "ring access at {off:#x} outside the ring"
        );
        self.pages[page] as usize + o
    }
}

impl bulkhead_ring::RingMemory for MappedRing {
    fn len(&self) -> usize {
        self.pages.len() * 4096
    }
    fn load_u32(&self, off: usize) -> u32 {
        // SAFETY: a 4-byte aligned index inside a mapped ring page (`at`), shared with the
        // frontend; accessed atomically because both sides write the page.
        unsafe { core::sync::atomic::AtomicU32::from_ptr(self.at(off, 4) as *mut u32) }
            .load(Ordering::Acquire)
    }
    fn store_u32(&mut self, off: usize, v: u32) {
        // SAFETY: as for `load_u32`.
        unsafe { core::sync::atomic::AtomicU32::from_ptr(self.at(off, 4) as *mut u32) }
            .store(v, Ordering::Release)
    }
    fn read(&self, off: usize, out: &mut [u8]) {
        // A ring slot may straddle two non-adjacent pages of a multi-page ring.
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: inside the mapped ring (`at`); volatile because the frontend may
            // change it at any time — each byte is read once into our private copy.
            *b = unsafe { core::ptr::read_volatile(self.at(off + i, 1) as *const u8) };
        }
    }
    fn write(&mut self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as for `read`.
            unsafe { core::ptr::write_volatile(self.at(off + i, 1) as *mut u8, *b) };
        }
    }
    fn full_fence(&self) {
        fence(Ordering::SeqCst);
    }
}

/// Grant-table frames we ask for (512 entries each).
const TABLE_FRAMES: u32 = 4;
/// When the memory map leaves no room for the grant window (`mem::grant_window`): frames
/// given back to Xen so foreign grants have somewhere to be mapped. At most 8 MiB, and
/// at most a quarter of the free memory (Xen takes the frames back).
const BALLOONED_SLOTS: usize = 2048;

pub struct TableMemory {
    base: u64,
    capacity: u32,
}

impl TableMemory {
    fn entry(&self, r: GrantRef) -> usize {
        assert!(r < self.capacity, "grant reference out of the table");
        self.base as usize + r as usize * core::mem::size_of::<abi::GrantEntryV1>()
    }

    fn flags_atomic(&self, r: GrantRef) -> &AtomicU16 {
        // SAFETY: the entry lies inside the table frames mapped for the domain's life; the
        // flags field is a naturally aligned u16 that Xen also updates atomically.
        unsafe { AtomicU16::from_ptr(self.entry(r) as *mut u16) }
    }
}

impl GrantTableMemory for TableMemory {
    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn write_entry(&mut self, r: GrantRef, domid: DomId, frame: u32) {
        let e = self.entry(r);
        // SAFETY: inside our table (see `entry`); the entry is not valid (flags 0) while
        // the body is written, so Xen does not read it concurrently.
        unsafe {
            core::ptr::write_volatile((e + 2) as *mut u16, domid);
            core::ptr::write_volatile((e + 4) as *mut u32, frame);
        }
    }

    fn set_flags(&mut self, r: GrantRef, flags: u16) {
        // The body must be visible before the flags make the entry valid.
        fence(Ordering::Release);
        self.flags_atomic(r).store(flags, Ordering::Release);
    }

    fn flags(&self, r: GrantRef) -> u16 {
        self.flags_atomic(r).load(Ordering::Acquire)
    }

    fn cmpxchg_flags(&mut self, r: GrantRef, old: u16, new: u16) -> u16 {
        match self
            .flags_atomic(r)
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(v) | Err(v) => v,
        }
    }
}

#[derive(Debug)]
pub enum SetupError {
    Query(Errno),
    NoMemory,
    MapTable(Errno),
    Balloon(Errno),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupError::Query(e) => write!(f, "GNTTABOP_query_size failed ({})", e.0),
            SetupError::NoMemory => write!(f, "no memory for the table or map slots"),
            SetupError::MapTable(e) => {
                write!(f, "XENMEM_add_to_physmap of the table failed ({})", e.0)
            }
            SetupError::Balloon(e) => write!(f, "XENMEM_decrease_reservation failed ({})", e.0),
        }
    }
}

pub fn init() -> Result<(GrantTable<TableMemory>, MapSlots), SetupError> {
    // Xen 4.17 answered 0/0 here for a PVH domU, so the answer only caps the request when
    // it is meaningful; otherwise frames are added until Xen refuses one.
    let (nr, max) = hv::gnttab_query_size().map_err(SetupError::Query)?;
    log::debug!("grant table: Xen reports {nr} frames in use, at most {max}");
    let want = if max > 0 {
        TABLE_FRAMES.min(max)
    } else {
        TABLE_FRAMES
    };
    let base = crate::mem::alloc_frames(want as usize, 4096).map_err(|_| SetupError::NoMemory)?;
    let mut frames = 0;
    for i in 0..want as u64 {
        match hv::add_to_physmap(abi::XENMAPSPACE_GRANT_TABLE, i, (base >> 12) + i) {
            Ok(()) => frames += 1,
            Err(e) if i == 0 => return Err(SetupError::MapTable(e)),
            Err(e) => {
                log::debug!("grant table: Xen refused frame {i} ({}); using {i}", e.0);
                break;
            }
        }
    }
    // Frames Xen did not take stay ordinary RAM of ours (never handed out again).
    let table = GrantTable::new(TableMemory {
        base,
        capacity: frames * abi::GNTTAB_ENTRIES_PER_FRAME,
    });

    // Ring pages and blkback's persistent grants share the slots. Their number bounds
    // the map work all guests together can cause (MapSlots shares it out per domain).
    let (slots, place): (Vec<u64>, &str) = match crate::mem::grant_window() {
        Some(w) => {
            slots::set_window(w, crate::mem::GRANT_WINDOW_BYTES);
            (
                (0..crate::mem::GRANT_WINDOW_BYTES)
                    .step_by(4096)
                    .map(|o| w + o)
                    .collect(),
                "in a window of unpopulated address space",
            )
        }
        None => {
            let slots = BALLOONED_SLOTS.min(crate::mem::usage().frames_free / 4);
            let mut gpfns = Vec::with_capacity(slots);
            for _ in 0..slots {
                gpfns.push(
                    crate::mem::alloc_frames(1, 4096).map_err(|_| SetupError::NoMemory)? >> 12,
                );
            }
            let done = hv::decrease_reservation(&mut gpfns).map_err(SetupError::Balloon)?;
            crate::mem::note_ballooned(done);
            // Frames Xen did not take stay populated RAM: never map grants over them.
            let slots: Vec<u64> = gpfns[..done].iter().map(|g| g << 12).collect();
            slots::set_frames(slots.clone());
            (slots, "in RAM given back to Xen")
        }
    };
    log::info!(
        "grant table: {frames} frames ({} entries) at {base:#x}; {} map slots {place}{}",
        frames * abi::GNTTAB_ENTRIES_PER_FRAME,
        slots.len(),
        slots
            .first()
            .map_or(String::new(), |a| format!(" from {a:#x}"))
    );
    Ok((table, MapSlots::new(slots)))
}

/// Another domain's granted pages, reached by batched grant copies (no mapping): what
/// backends use unless they keep grants mapped.
pub struct GrantCopier {
    pub dom: DomId,
}

impl GrantCopier {
    /// One hypercall for every job; each job's result from its own ops' statuses.
    fn copy_all<'a>(
        &mut self,
        jobs: impl Iterator<Item = (&'a [Piece], u64)>,
        to_guest: bool,
    ) -> Vec<Result<(), GrantFault>> {
        self.copy_mixed(jobs.map(|(p, local)| (p, local, to_guest)))
    }

    /// As `copy_all`, each job either way (`true`: into the guest).
    fn copy_mixed<'a>(
        &mut self,
        jobs: impl Iterator<Item = (&'a [Piece], u64, bool)>,
    ) -> Vec<Result<(), GrantFault>> {
        let dom = self.dom;
        Self::issue(jobs.map(|(pieces, local, to_guest)| {
            (
                pieces.first().map_or(0, |p| p.gref),
                copy_ops(dom, pieces, local, to_guest),
            )
        }))
    }

    /// One hypercall for every job's operations (bulkhead_xen::copy::issue): the
    /// machine-private grant copy (`Hv` refuses them; this copier checks its buffers hold
    /// every piece), timed for the state dump.
    fn issue(
        jobs: impl Iterator<Item = (abi::GrantRef, Vec<abi::GrantCopy>)>,
    ) -> Vec<Result<(), GrantFault>> {
        Self::issue_by(hv::grant_copy, jobs)
    }

    /// As [`Self::issue`], the hypercall made by `call` (a grant copy alone, or one
    /// with notifications after it).
    fn issue_by(
        call: impl FnOnce(&mut [abi::GrantCopy]) -> Result<(), Errno>,
        jobs: impl Iterator<Item = (abi::GrantRef, Vec<abi::GrantCopy>)>,
    ) -> Vec<Result<(), GrantFault>> {
        let copy = |ops: &mut [abi::GrantCopy]| {
            let t0 = super::time::now_ns();
            let done = call(ops);
            COPIES.add(ops, super::time::now_ns().saturating_sub(t0));
            done
        };
        bulkhead_xen::copy::issue(copy, jobs)
    }

    /// Each of `forwards` as a job of `dom`'s: the grant to name if it fails, and its
    /// operations (our head buffer checked to hold what goes to `head_to`; jobs are
    /// all taken before the hypercall is made).
    fn forward_jobs<'a>(
        dom: DomId,
        forwards: &'a [Forward],
    ) -> impl Iterator<Item = (abi::GrantRef, Vec<abi::GrantCopy>)> + 'a {
        forwards.iter().map(move |f| {
            fits(core::slice::from_ref(&f.head_to), f.head.len());
            (
                f.body.first().map_or(f.head_to.gref, |p| p.gref),
                forward_ops(dom, f, f.head.as_ptr() as u64),
            )
        })
    }

    /// `forwards` (each from our buffer or this domain's grants into another domain's),
    /// then the ring indexes of `publish` (written after every byte, so each receiver
    /// sees its answers only with their data), then a notification of each of `ports`:
    /// one multicall (`hv::grant_copy_then_send`). Each forward's result, and whether
    /// each publication was made (the caller then pushes the ring itself). With nothing
    /// to copy, only the notifications.
    pub fn forward_publish_notify(
        &mut self,
        forwards: &[Forward],
        publish: &[Publish],
        ports: &[abi::Port],
    ) -> (Vec<Result<(), GrantFault>>, Vec<bool>) {
        // The values Xen copies from: alive and unmoved until the call returns.
        let values: Vec<u32> = publish.iter().map(|p| p.value).collect();
        let jobs = Self::forward_jobs(self.dom, forwards).chain(
            publish
                .iter()
                .zip(&values)
                .map(|(p, v)| (p.ring, alloc::vec![publish_op(p, v as *const u32 as u64)])),
        );
        let mut sent = false;
        let call = |ops: &mut [abi::GrantCopy]| {
            sent = true;
            hv::grant_copy_then_send(ops, ports)
        };
        let mut results = Self::issue_by(call, jobs);
        if !sent {
            // Nothing to copy (every forward and publication has an operation: none).
            hv::evtchn_send_all(ports.iter().copied());
        }
        // Only a receiver that revoked its own ring fails here (counted, not logged: a
        // guest decides how often).
        let published: Vec<bool> = results
            .split_off(forwards.len())
            .iter()
            .map(|r| r.is_ok())
            .collect();
        let failed = published.iter().filter(|&&ok| !ok).count();
        COPIES.published[0].fetch_add(publish.len() as u64, Ordering::Relaxed);
        COPIES.published[1].fetch_add(failed as u64, Ordering::Relaxed);
        (results, published)
    }

    /// Buffers for `jobs` (not zeroed) and where in each the bytes land: a large one
    /// `pad` bytes in, where it takes one copy operation per guest page instead of two
    /// (`aligning_pad` says why), moved down once copied (`settle`).
    fn new_buffers(jobs: &[&[Piece]]) -> Vec<(Vec<u8>, usize)> {
        jobs.iter()
            .map(|p| {
                let pad = if total(p) >= 2 * 4096 {
                    bulkhead_xen::copy::aligning_pad(p)
                } else {
                    0
                };
                (Vec::with_capacity(pad + total(p)), pad)
            })
            .collect()
    }

    /// Reads of `dom`'s `reads` into new buffers and the operations of `others` (writes
    /// or forwards, each job with the grant to name if it fails) in one hypercall; the
    /// reads' buffers and the others' outcomes. The buffers are not zeroed first: Xen
    /// writes every byte (a 64 KiB send zeroed, then overwritten, cost a tenth of the
    /// driver domain's time under TCP load).
    fn reads_and(
        dom: DomId,
        reads: &[&[Piece]],
        others: impl Iterator<Item = (abi::GrantRef, Vec<abi::GrantCopy>)>,
    ) -> ReadsAndWrites {
        let mut bufs = Self::new_buffers(reads);
        let read_jobs: Vec<(abi::GrantRef, Vec<abi::GrantCopy>)> = reads
            .iter()
            .zip(bufs.iter_mut())
            .map(|(p, (b, pad))| {
                let at = b.as_mut_ptr() as u64 + *pad as u64;
                (p.first().map_or(0, |x| x.gref), copy_ops(dom, p, at, false))
            })
            .collect();
        let mut results = Self::issue(read_jobs.into_iter().chain(others));
        let others = results.split_off(reads.len());
        let read = bufs
            .into_iter()
            .zip(reads)
            .zip(results)
            .map(|(((b, pad), p), r)| r.map(|()| Self::settle(b, pad, total(p))))
            .collect();
        (read, others)
    }

    /// A buffer of `new_buffers` whose copy succeeded: its bytes, from 0.
    fn settle(mut b: Vec<u8>, pad: usize, n: usize) -> Vec<u8> {
        if pad == 0 {
            // SAFETY: every op of this job succeeded, and copy_ops lays the pieces back
            // to back from the buffer's start (its address is identity-mapped RAM of
            // this Vec), so bytes 0..n are written; the capacity is at least n.
            unsafe { b.set_len(n) };
        } else {
            // SAFETY: as above, Xen wrote bytes pad..pad + n (the capacity); the first
            // `pad` are never read: the bytes are copied over them through raw pointers
            // before the length covers them, and the length then covers only written
            // bytes.
            unsafe {
                let base = b.as_mut_ptr();
                core::ptr::copy(base.add(pad), base, n);
                b.set_len(n);
            }
        }
        b
    }
}

/// What grant copies cost so far: hypercalls and the time spent in them, operations and
/// bytes from guests and to guests, for the state dump. Xen's cost per hypercall, per
/// operation and per byte tell apart what fewer hypercalls, fewer operations (aligned
/// buffers) or fewer bytes (one copy instead of two) would save.
pub static COPIES: CopyCounters = CopyCounters::new();

pub struct CopyCounters {
    calls: AtomicU64,
    ns: AtomicU64,
    /// From guests [0], to guests [1] and between two guests [2].
    ops: [AtomicU64; 3],
    bytes: [AtomicU64; 3],
    /// Ring indexes written by a copy after the data (`Publish`), and those that failed.
    published: [AtomicU64; 2],
}

impl CopyCounters {
    const fn new() -> Self {
        CopyCounters {
            calls: AtomicU64::new(0),
            ns: AtomicU64::new(0),
            ops: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            bytes: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            published: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn add(&self, ops: &[abi::GrantCopy], ns: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(ns, Ordering::Relaxed);
        for o in ops {
            let both = abi::GNTCOPY_SOURCE_GREF | abi::GNTCOPY_DEST_GREF;
            let kind = if o.flags & both == both {
                2
            } else {
                (o.flags & abi::GNTCOPY_DEST_GREF != 0) as usize
            };
            self.ops[kind].fetch_add(1, Ordering::Relaxed);
            self.bytes[kind].fetch_add(o.len as u64, Ordering::Relaxed);
        }
    }

    /// "N calls in N ms; from guests N ops, N KiB; to guests N ops, N KiB; between
    /// guests N ops, N KiB".
    pub fn describe(&self) -> String {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{} calls in {} ms; from guests {} ops, {} KiB; to guests {} ops, {} KiB; between guests {} ops, {} KiB; ring indexes published after their data {} ({} failed)",
            r(&self.calls),
            r(&self.ns) / 1_000_000,
            r(&self.ops[0]),
            r(&self.bytes[0]) / 1024,
            r(&self.ops[1]),
            r(&self.bytes[1]) / 1024,
            r(&self.ops[2]),
            r(&self.bytes[2]) / 1024,
            r(&self.published[0]),
            r(&self.published[1])
        )
    }
}

/// Xen copies between a guest's pieces and our buffer by address: the pieces must fit the
/// buffer, or Xen would write past it (or hand a guest bytes of ours). Every caller sizes
/// its buffer from its pieces; a mismatch is our bug, so it stops here.
fn fits(pieces: &[Piece], len: usize) {
    assert!(
        total(pieces) <= len,
        "grant copy pieces ({} bytes) larger than the buffer ({len})",
        total(pieces)
    );
}

impl GuestMemory for GrantCopier {
    fn read(&mut self, pieces: &[Piece], buf: &mut [u8]) -> Result<(), GrantFault> {
        fits(pieces, buf.len());
        let job = (pieces, buf.as_mut_ptr() as u64);
        self.copy_all(core::iter::once(job), false).remove(0)
    }
    fn write(&mut self, pieces: &[Piece], buf: &[u8]) -> Result<(), GrantFault> {
        fits(pieces, buf.len());
        let job = (pieces, buf.as_ptr() as u64);
        self.copy_all(core::iter::once(job), true).remove(0)
    }
    fn read_all(&mut self, jobs: &mut [(&[Piece], &mut [u8])]) -> Vec<Result<(), GrantFault>> {
        for (p, b) in jobs.iter() {
            fits(p, b.len());
        }
        self.copy_all(
            jobs.iter_mut().map(|(p, b)| (*p, b.as_mut_ptr() as u64)),
            false,
        )
    }
    fn write_all(&mut self, jobs: &[(&[Piece], &[u8])]) -> Vec<Result<(), GrantFault>> {
        for (p, b) in jobs {
            fits(p, b.len());
        }
        self.copy_all(jobs.iter().map(|(p, b)| (*p, b.as_ptr() as u64)), true)
    }
    fn read_new(&mut self, jobs: &[&[Piece]]) -> Vec<Result<Vec<u8>, GrantFault>> {
        self.read_new_and_write(jobs, &[]).0
    }
    fn read_new_and_forward(&mut self, reads: &[&[Piece]], forwards: &[Forward]) -> ReadsAndWrites {
        Self::reads_and(self.dom, reads, Self::forward_jobs(self.dom, forwards))
    }
    fn read_new_and_write(
        &mut self,
        reads: &[&[Piece]],
        writes: &[(&[Piece], &[u8])],
    ) -> ReadsAndWrites {
        for (p, b) in writes {
            fits(p, b.len());
        }
        let dom = self.dom;
        Self::reads_and(
            dom,
            reads,
            writes.iter().map(|(p, b)| {
                (
                    p.first().map_or(0, |x| x.gref),
                    copy_ops(dom, p, b.as_ptr() as u64, true),
                )
            }),
        )
    }
}
