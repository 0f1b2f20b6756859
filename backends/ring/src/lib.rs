//! The back end of a Xen shared ring (`public/io/ring.h`): consume requests, produce
//! responses, and decide when the other side needs an event. blkif and both netif rings
//! use it; they differ only in entry sizes ([`Layout`]).
//!
//! The frontend can write the shared page at any time. Indexes are read once per use and
//! checked (a producer index that claims more requests than the ring can hold is fatal
//! for the ring, as in Linux); every request is copied into a private buffer before it is
//! decoded, so the decoder never reads shared memory twice.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

/// The shared ring header: four indexes, then private padding up to 64 bytes.
pub const REQ_PROD: usize = 0;
pub const REQ_EVENT: usize = 4;
pub const RSP_PROD: usize = 8;
pub const RSP_EVENT: usize = 12;
pub const HEADER: usize = 64;
pub const PAGE_SIZE: usize = 4096;

/// Sizes of one request and one response; a ring slot holds the larger (a union in
/// `ring.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub request: usize,
    pub response: usize,
}

impl Layout {
    pub const fn slot(self) -> usize {
        if self.request > self.response {
            self.request
        } else {
            self.response
        }
    }

    /// Entries in a shared ring of `bytes` bytes: the largest power of two that fits
    /// after the header (`__RING_SIZE`).
    pub fn entries(self, bytes: usize) -> u32 {
        let n = bytes.saturating_sub(HEADER) / self.slot().max(1);
        if n == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        }
    }
}

/// The shared ring's pages, as this domain sees them. Multi-page rings need not be
/// contiguous: offsets are into the ring as a whole.
#[allow(clippy::len_without_is_empty)] // a ring is never empty: at least one page
pub trait RingMemory {
    /// Bytes in the ring (pages * 4096).
    fn len(&self) -> usize;
    /// Read a 32-bit index the frontend writes (acquire: later reads see what it wrote
    /// before publishing the index).
    fn load_u32(&self, off: usize) -> u32;
    /// Publish a 32-bit index (release: earlier writes are visible first).
    fn store_u32(&mut self, off: usize, v: u32);
    fn read(&self, off: usize, out: &mut [u8]);
    fn write(&mut self, off: usize, data: &[u8]);
    /// A full barrier between publishing our index and reading the frontend's event
    /// index (the `mb()` in RING_PUSH_RESPONSES_AND_CHECK_NOTIFY).
    fn full_fence(&self);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The ring is too small to hold one entry.
    TooSmall,
    /// The frontend's producer index claims more outstanding requests than the ring
    /// holds: it is broken or hostile, and the ring cannot be trusted any more.
    BogusProducer { req_prod: u32, rsp_prod: u32 },
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::TooSmall => write!(f, "shared ring too small for one entry"),
            RingError::BogusProducer { req_prod, rsp_prod } => write!(
                f,
                "frontend request producer {req_prod} is more than a ring ahead of responses {rsp_prod}"
            ),
        }
    }
}

/// A ring's indexes: the shared ones and the backend's private ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Indexes {
    pub req_prod: u32,
    pub req_event: u32,
    pub req_cons: u32,
    pub rsp_prod: u32,
    pub rsp_event: u32,
    pub rsp_prod_pvt: u32,
}

impl core::fmt::Display for Indexes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "req prod {} cons {} event {}, rsp prod {} (queued {}) event {}",
            self.req_prod,
            self.req_cons,
            self.req_event,
            self.rsp_prod,
            self.rsp_prod_pvt,
            self.rsp_event
        )
    }
}

pub struct BackRing<M: RingMemory> {
    mem: M,
    layout: Layout,
    entries: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
}

impl<M: RingMemory> BackRing<M> {
    /// Attach to a ring the frontend initialised. The backend starts from the indexes it
    /// finds (zero for a fresh ring), like `BACK_RING_ATTACH`.
    pub fn attach(mem: M, layout: Layout) -> Result<Self, RingError> {
        let entries = layout.entries(mem.len());
        if entries == 0 || layout.request == 0 || layout.response == 0 {
            return Err(RingError::TooSmall);
        }
        let rsp = mem.load_u32(RSP_PROD);
        Ok(BackRing {
            mem,
            layout,
            entries,
            req_cons: rsp,
            rsp_prod_pvt: rsp,
        })
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Requests taken but not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    fn slot(&self, index: u32) -> usize {
        HEADER + (index & (self.entries - 1)) as usize * self.layout.slot()
    }

    /// Requests published and not yet taken, bounded by the free response slots.
    pub fn unconsumed(&self) -> Result<u32, RingError> {
        let prod = self.mem.load_u32(REQ_PROD);
        if prod.wrapping_sub(self.rsp_prod_pvt) > self.entries {
            return Err(RingError::BogusProducer {
                req_prod: prod,
                rsp_prod: self.rsp_prod_pvt,
            });
        }
        let reqs = prod.wrapping_sub(self.req_cons);
        let room = self.entries - self.in_flight();
        Ok(reqs.min(room))
    }

    /// Copy the next request out of the ring.
    pub fn take(&mut self) -> Result<Option<Vec<u8>>, RingError> {
        if self.unconsumed()? == 0 {
            return Ok(None);
        }
        let mut buf = alloc::vec![0u8; self.layout.request];
        self.mem.read(self.slot(self.req_cons), &mut buf);
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(buf))
    }

    /// Queue a response (not yet visible to the frontend; see [`Self::push`]). The
    /// whole response is written, padding included (`data` shorter than the layout's
    /// response is zero-filled), so nothing of ours leaks.
    pub fn respond(&mut self, data: &[u8]) {
        debug_assert!(self.in_flight() > 0, "response without a request");
        let n = self.layout.response;
        let mut r = alloc::vec![0u8; n];
        let k = data.len().min(n);
        r[..k].copy_from_slice(&data[..k]);
        let at = self.slot(self.rsp_prod_pvt);
        self.mem.write(at, &r);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
    }

    /// Publish queued responses; true when the frontend asked to be told (its
    /// `rsp_event` lies in the range just published).
    pub fn push(&mut self) -> bool {
        let old = self.mem.load_u32(RSP_PROD);
        let new = self.rsp_prod_pvt;
        if old == new {
            return false;
        }
        self.mem.store_u32(RSP_PROD, new);
        self.mem.full_fence();
        let event = self.mem.load_u32(RSP_EVENT);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// The responses queued since the last publication, for a caller that has the
    /// index written for it after other writes it must follow: Xen's grant copy writes
    /// it in the same batch as the data the responses describe, so the frontend, which
    /// may look at any time, never sees an answer before its bytes. The value to write
    /// at [`RSP_PROD`], or None when nothing is new; nothing is written here (if the
    /// write never happens, the next [`Self::push`] makes it). The frontend must then be
    /// told whatever its `rsp_event` says: that index cannot be checked against one not
    /// yet written (it may ask for an event after this look and before the write).
    pub fn publish_later(&self) -> Option<u32> {
        (self.mem.load_u32(RSP_PROD) != self.rsp_prod_pvt).then_some(self.rsp_prod_pvt)
    }

    /// Before sleeping: ask for an event on the next request, then look again so a
    /// request published in between is not missed (RING_FINAL_CHECK_FOR_REQUESTS).
    pub fn final_check(&mut self) -> Result<bool, RingError> {
        self.final_check_for(1)
    }

    /// As [`Self::final_check`], for a consumer that can only proceed with `n` requests
    /// at once (a packet that needs `n` receive buffers): the event is asked for when the
    /// `n`th arrives, and true means `n` are there.
    pub fn final_check_for(&mut self, n: u32) -> Result<bool, RingError> {
        let n = n.max(1);
        if self.unconsumed()? >= n {
            return Ok(true);
        }
        self.mem.store_u32(REQ_EVENT, self.req_cons.wrapping_add(n));
        self.mem.full_fence();
        Ok(self.unconsumed()? >= n)
    }

    /// Both sides' indexes as they are now (for state dumps).
    pub fn indexes(&self) -> Indexes {
        Indexes {
            req_prod: self.mem.load_u32(REQ_PROD),
            req_event: self.mem.load_u32(REQ_EVENT),
            req_cons: self.req_cons,
            rsp_prod: self.mem.load_u32(RSP_PROD),
            rsp_event: self.mem.load_u32(RSP_EVENT),
            rsp_prod_pvt: self.rsp_prod_pvt,
        }
    }

    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The shared memory itself (frontend models in tests write through this).
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    pub fn into_memory(self) -> M {
        self.mem
    }
}

/// A ring in ordinary memory, for tests and for frontend models.
#[derive(Clone)]
pub struct VecRing(pub Vec<u8>);

impl VecRing {
    pub fn new(pages: usize) -> Self {
        VecRing(alloc::vec![0; pages * PAGE_SIZE])
    }
}

impl RingMemory for VecRing {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load_u32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.0[off..off + 4].try_into().unwrap())
    }
    fn store_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn read(&self, off: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.0[off..off + out.len()]);
    }
    fn write(&mut self, off: usize, data: &[u8]) {
        self.0[off..off + data.len()].copy_from_slice(data);
    }
    fn full_fence(&self) {}
}

/// Initialise a fresh shared ring as a frontend does (`SHARED_RING_INIT`): indexes 0,
/// each side asking for an event on the first entry.
pub fn shared_init<M: RingMemory>(mem: &mut M) {
    mem.store_u32(REQ_PROD, 0);
    mem.store_u32(RSP_PROD, 0);
    mem.store_u32(REQ_EVENT, 1);
    mem.store_u32(RSP_EVENT, 1);
}

/// The other side of a ring, for tests and device models: publishes requests and reads
/// responses as a frontend does (`RING_PUSH_REQUESTS`, `RING_GET_RESPONSE`).
pub struct FrontRing {
    pub layout: Layout,
    entries: u32,
    pub req_prod: u32,
    pub rsp_cons: u32,
}

impl FrontRing {
    pub fn new<M: RingMemory>(mem: &M, layout: Layout) -> FrontRing {
        FrontRing {
            layout,
            entries: layout.entries(mem.len()),
            req_prod: mem.load_u32(REQ_PROD),
            rsp_cons: mem.load_u32(RSP_PROD),
        }
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    fn slot(&self, index: u32) -> usize {
        HEADER + (index & (self.entries - 1)) as usize * self.layout.slot()
    }

    /// Slots free for new requests.
    pub fn free(&self) -> u32 {
        self.entries - self.req_prod.wrapping_sub(self.rsp_cons)
    }

    /// Write a request into the next slot (not yet published).
    pub fn put<M: RingMemory>(&mut self, mem: &mut M, request: &[u8]) {
        assert!(self.free() > 0, "front ring full");
        let at = self.slot(self.req_prod);
        mem.write(at, &request[..request.len().min(self.layout.request)]);
        self.req_prod = self.req_prod.wrapping_add(1);
    }

    /// Publish the requests put so far.
    pub fn publish<M: RingMemory>(&self, mem: &mut M) {
        mem.store_u32(REQ_PROD, self.req_prod);
    }

    /// The next response, if the backend published one.
    pub fn get<M: RingMemory>(&mut self, mem: &M) -> Option<Vec<u8>> {
        if mem.load_u32(RSP_PROD) == self.rsp_cons {
            return None;
        }
        let mut r = alloc::vec![0u8; self.layout.response];
        mem.read(self.slot(self.rsp_cons), &mut r);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Some(r)
    }

    /// Ask for an event when the next response arrives (`RING_FINAL_CHECK_FOR_RESPONSES`).
    pub fn want_response_event<M: RingMemory>(&self, mem: &mut M) {
        mem.store_u32(RSP_EVENT, self.rsp_cons.wrapping_add(1));
    }
}

/// A hostile frontend for tests: every time the backend reads the producer index, it
/// first takes the responses published so far and fills every free slot with a fresh
/// request from `make` — it re-publishes from inside the backend's own ring read, faster
/// than any real guest could. A backend loop without a budget never sees the ring empty;
/// after `limit` refills the frontend gives up, so such a loop ends and a test can say it
/// would have spun for ever.
#[cfg(any(test, feature = "fake"))]
pub struct Republishing<F: FnMut(u32) -> Vec<u8>> {
    mem: core::cell::RefCell<VecRing>,
    front: core::cell::RefCell<FrontRing>,
    make: core::cell::RefCell<F>,
    /// Requests put into the ring so far (the `u32` passed to `make`).
    pub published: core::cell::Cell<u32>,
    /// Refills left before the frontend stops.
    left: core::cell::Cell<u32>,
}

#[cfg(any(test, feature = "fake"))]
impl<F: FnMut(u32) -> Vec<u8>> Republishing<F> {
    pub fn new(pages: usize, layout: Layout, limit: u32, make: F) -> Self {
        let mut mem = VecRing::new(pages);
        shared_init(&mut mem);
        let front = FrontRing::new(&mem, layout);
        Republishing {
            mem: core::cell::RefCell::new(mem),
            front: core::cell::RefCell::new(front),
            make: core::cell::RefCell::new(make),
            published: core::cell::Cell::new(0),
            left: core::cell::Cell::new(limit),
        }
    }

    /// True once the frontend gave up: the backend kept reading past `limit` refills.
    pub fn exhausted(&self) -> bool {
        self.left.get() == 0
    }

    fn refill(&self) {
        if self.left.get() == 0 {
            return;
        }
        self.left.set(self.left.get() - 1);
        let mut mem = self.mem.borrow_mut();
        let mut front = self.front.borrow_mut();
        while front.get(&*mem).is_some() {}
        while front.free() > 0 {
            let r = (self.make.borrow_mut())(self.published.get());
            self.published.set(self.published.get().wrapping_add(1));
            front.put(&mut *mem, &r);
        }
        front.publish(&mut *mem);
    }
}

#[cfg(any(test, feature = "fake"))]
impl<F: FnMut(u32) -> Vec<u8>> RingMemory for Republishing<F> {
    fn len(&self) -> usize {
        self.mem.borrow().len()
    }
    fn load_u32(&self, off: usize) -> u32 {
        if off == REQ_PROD {
            self.refill();
        }
        self.mem.borrow().load_u32(off)
    }
    fn store_u32(&mut self, off: usize, v: u32) {
        self.mem.get_mut().store_u32(off, v)
    }
    fn read(&self, off: usize, out: &mut [u8]) {
        self.mem.borrow().read(off, out)
    }
    fn write(&mut self, off: usize, data: &[u8]) {
        self.mem.get_mut().write(off, data)
    }
    fn full_fence(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// blkif's 64-bit layout: 112-byte requests, 16-byte responses.
    const BLK: Layout = Layout {
        request: 112,
        response: 16,
    };

    fn ring() -> BackRing<VecRing> {
        BackRing::attach(VecRing::new(1), BLK).unwrap()
    }

    fn publish(r: &mut BackRing<VecRing>, prod: u32) {
        r.mem.store_u32(REQ_PROD, prod);
    }

    #[test]
    fn publish_later_writes_nothing_and_push_still_can() {
        let mut r = ring();
        assert_eq!(r.publish_later(), None);
        publish(&mut r, 2);
        r.take().unwrap().unwrap();
        r.take().unwrap().unwrap();
        r.respond(&[1]);
        r.respond(&[2]);
        assert_eq!(r.publish_later(), Some(2));
        // The shared index is the caller's to write: untouched here.
        assert_eq!(r.indexes().rsp_prod, 0);
        // Written by someone else (Xen's copy): nothing new any more.
        r.mem.store_u32(RSP_PROD, 2);
        assert_eq!(r.publish_later(), None);
        assert!(!r.push());
        // A write that never happened: the next push makes it.
        publish(&mut r, 3);
        r.take().unwrap().unwrap();
        r.respond(&[3]);
        assert_eq!(r.publish_later(), Some(3));
        r.mem.store_u32(RSP_EVENT, 3);
        assert!(r.push());
        assert_eq!(r.indexes().rsp_prod, 3);
    }

    #[test]
    fn entries_are_a_power_of_two_after_the_header() {
        // (4096 - 64) / 112 = 36 -> 32, as Linux's BLK_RING_SIZE; netif: 256 of either.
        assert_eq!(BLK.entries(4096), 32);
        assert_eq!(BLK.entries(4 * 4096), 128);
        assert_eq!(BLK.entries(32), 0);
        let tx = Layout {
            request: 12,
            response: 4,
        };
        let rx = Layout {
            request: 8,
            response: 8,
        };
        assert_eq!(tx.entries(4096), 256);
        assert_eq!(rx.entries(4096), 256);
    }

    #[test]
    fn takes_what_was_published_in_order() {
        let mut r = ring();
        for i in 0..3u8 {
            let at = r.slot(i as u32);
            r.mem.0[at] = 10 + i;
        }
        publish(&mut r, 3);
        for i in 0..3u8 {
            let req = r.take().unwrap().unwrap();
            assert_eq!(req.len(), 112);
            assert_eq!(req[0], 10 + i);
        }
        assert_eq!(r.take().unwrap(), None);
        assert_eq!(r.in_flight(), 3);
    }

    #[test]
    fn bogus_producer_is_fatal() {
        let mut r = ring();
        publish(&mut r, 33);
        assert!(matches!(r.take(), Err(RingError::BogusProducer { .. })));
        publish(&mut r, u32::MAX);
        assert!(r.take().is_err());
    }

    #[test]
    fn never_takes_more_than_free_response_slots() {
        let mut r = ring();
        publish(&mut r, 32);
        for _ in 0..32 {
            assert!(r.take().unwrap().is_some());
        }
        // The frontend claims a 33rd request while 32 are unanswered: refused as bogus.
        publish(&mut r, 33);
        assert!(r.take().is_err());
        publish(&mut r, 32);
        r.respond(&[1]);
        assert!(r.take().unwrap().is_none());
    }

    #[test]
    fn indexes_wrap() {
        let mut mem = VecRing::new(1);
        mem.store_u32(RSP_PROD, u32::MAX - 1);
        mem.store_u32(REQ_PROD, u32::MAX - 1);
        let mut r = BackRing::attach(mem, BLK).unwrap();
        publish(&mut r, 2);
        let mut n = 0u8;
        while r.take().unwrap().is_some() {
            r.respond(&[n]);
            n += 1;
        }
        assert_eq!(n, 4);
        r.push();
        assert_eq!(r.mem.load_u32(RSP_PROD), 2);
    }

    #[test]
    fn responses_carry_no_stale_bytes() {
        let mut r = ring();
        let at = r.slot(0);
        r.mem.0[at..at + 112].fill(0xee);
        publish(&mut r, 1);
        r.take().unwrap().unwrap();
        r.respond(&[1, 2, 3]);
        assert_eq!(
            &r.mem.0[at..at + 17],
            &[1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xee]
        );
    }

    #[test]
    fn notify_follows_rsp_event() {
        let mut r = ring();
        publish(&mut r, 3);
        // Frontend wants an event for the first response.
        r.mem.store_u32(RSP_EVENT, 1);
        r.take().unwrap();
        r.respond(&[]);
        assert!(r.push());
        // It has not consumed yet (rsp_event still 1): no more events.
        r.take().unwrap();
        r.respond(&[]);
        r.take().unwrap();
        r.respond(&[]);
        assert!(!r.push());
        // Nothing new: nothing to say.
        assert!(!r.push());
    }

    #[test]
    fn final_check_arms_req_event() {
        let mut r = ring();
        assert!(!r.final_check().unwrap());
        assert_eq!(r.mem.load_u32(REQ_EVENT), 1);
        publish(&mut r, 1);
        assert!(r.final_check().unwrap());
    }

    #[test]
    fn final_check_for_several_waits_for_all_of_them() {
        let mut r = ring();
        publish(&mut r, 1);
        assert!(!r.final_check_for(3).unwrap());
        assert_eq!(r.mem.load_u32(REQ_EVENT), 3);
        publish(&mut r, 3);
        assert!(r.final_check_for(3).unwrap());
    }

    #[test]
    fn front_and_back_talk() {
        let layout = Layout {
            request: 12,
            response: 4,
        };
        let mut back = BackRing::attach(VecRing::new(1), layout).unwrap();
        let mut front = FrontRing::new(back.memory(), layout);
        assert_eq!(front.free(), 256);
        for i in 0..300u32 {
            front.put(back.memory_mut(), &i.to_le_bytes());
            front.publish(back.memory_mut());
            let req = back.take().unwrap().unwrap();
            assert_eq!(req.len(), 12);
            assert_eq!(&req[..4], &i.to_le_bytes());
            back.respond(&req[..4]);
            back.push();
            assert_eq!(front.get(back.memory()).unwrap(), i.to_le_bytes());
            assert_eq!(front.get(back.memory()), None);
        }
    }
}
