//! The back end of a Xen shared ring (`public/io/ring.h`): consume requests, produce
//! responses, and decide when the other side needs an event.
//!
//! The frontend can write the shared page at any time. Indexes are read once per use and
//! checked (a producer index that claims more requests than the ring can hold is fatal
//! for the ring, as in Linux); every request is copied into a private buffer before it is
//! decoded, so the decoder never reads shared memory twice.

use alloc::vec::Vec;

use crate::abi::{
    ring_entries, Protocol, RING_HEADER, RING_REQ_EVENT, RING_REQ_PROD, RING_RSP_EVENT,
    RING_RSP_PROD,
};

/// The shared ring's pages, as this domain sees them. Multi-page rings need not be
/// contiguous: offsets are into the ring as a whole.
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

pub struct BackRing<M: RingMemory> {
    mem: M,
    protocol: Protocol,
    entries: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
}

impl<M: RingMemory> BackRing<M> {
    /// Attach to a ring the frontend initialised. The backend starts from the indexes it
    /// finds (zero for a fresh ring), like `BACK_RING_ATTACH`.
    pub fn attach(mem: M, protocol: Protocol) -> Result<Self, RingError> {
        let entries = ring_entries(mem.len(), protocol);
        if entries == 0 {
            return Err(RingError::TooSmall);
        }
        let rsp = mem.load_u32(RING_RSP_PROD);
        Ok(BackRing {
            mem,
            protocol,
            entries,
            req_cons: rsp,
            rsp_prod_pvt: rsp,
        })
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Requests taken but not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    fn slot(&self, index: u32) -> usize {
        RING_HEADER + (index & (self.entries - 1)) as usize * self.protocol.slot_size()
    }

    /// Requests published and not yet taken, bounded by the free response slots.
    pub fn unconsumed(&self) -> Result<u32, RingError> {
        let prod = self.mem.load_u32(RING_REQ_PROD);
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
        let mut buf = alloc::vec![0u8; self.protocol.request_size()];
        self.mem.read(self.slot(self.req_cons), &mut buf);
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(buf))
    }

    /// Queue a response (not yet visible to the frontend; see [`Self::push`]). Every byte
    /// of the response, padding included, is written, so nothing of ours leaks.
    pub fn respond(&mut self, id: u64, operation: u8, status: i16) {
        debug_assert!(self.in_flight() > 0, "response without a request");
        let mut r = [0u8; 16];
        r[..8].copy_from_slice(&id.to_le_bytes());
        r[8] = operation;
        r[10..12].copy_from_slice(&status.to_le_bytes());
        let n = self.protocol.response_size();
        let at = self.slot(self.rsp_prod_pvt);
        self.mem.write(at, &r[..n]);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
    }

    /// Publish queued responses; true when the frontend asked to be told (its
    /// `rsp_event` lies in the range just published).
    pub fn push(&mut self) -> bool {
        let old = self.mem.load_u32(RING_RSP_PROD);
        let new = self.rsp_prod_pvt;
        if old == new {
            return false;
        }
        self.mem.store_u32(RING_RSP_PROD, new);
        self.mem.full_fence();
        let event = self.mem.load_u32(RING_RSP_EVENT);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Before sleeping: ask for an event on the next request, then look again so a
    /// request published in between is not missed (RING_FINAL_CHECK_FOR_REQUESTS).
    pub fn final_check(&mut self) -> Result<bool, RingError> {
        if self.unconsumed()? > 0 {
            return Ok(true);
        }
        self.mem
            .store_u32(RING_REQ_EVENT, self.req_cons.wrapping_add(1));
        self.mem.full_fence();
        Ok(self.unconsumed()? > 0)
    }

    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The shared memory itself (the frontend model in tests writes through this).
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    pub fn into_memory(self) -> M {
        self.mem
    }
}

/// A ring in ordinary memory, for tests and for the frontend model.
#[derive(Clone)]
pub struct VecRing(pub Vec<u8>);

impl VecRing {
    pub fn new(pages: usize) -> Self {
        VecRing(alloc::vec![0; pages * crate::abi::PAGE_SIZE])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> BackRing<VecRing> {
        BackRing::attach(VecRing::new(1), Protocol::X86_64).unwrap()
    }

    fn publish(r: &mut BackRing<VecRing>, prod: u32) {
        r.mem.store_u32(RING_REQ_PROD, prod);
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
            assert_eq!(r.take().unwrap().unwrap()[0], 10 + i);
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
        r.respond(1, 0, 0);
        assert!(r.take().unwrap().is_none());
    }

    #[test]
    fn indexes_wrap() {
        let mut mem = VecRing::new(1);
        mem.store_u32(RING_RSP_PROD, u32::MAX - 1);
        mem.store_u32(RING_REQ_PROD, u32::MAX - 1);
        let mut r = BackRing::attach(mem, Protocol::X86_64).unwrap();
        publish(&mut r, 2);
        let mut n = 0;
        while r.take().unwrap().is_some() {
            r.respond(n, 0, 0);
            n += 1;
        }
        assert_eq!(n, 4);
        r.push();
        assert_eq!(r.mem.load_u32(RING_RSP_PROD), 2);
    }

    #[test]
    fn responses_carry_no_stale_bytes() {
        let mut r = ring();
        let at = r.slot(0);
        r.mem.0[at..at + 112].fill(0xee);
        publish(&mut r, 1);
        r.take().unwrap().unwrap();
        r.respond(0x1122_3344_5566_7788, 1, -1);
        assert_eq!(
            &r.mem.0[at..at + 16],
            &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 1, 0, 0xff, 0xff, 0, 0, 0, 0]
        );
    }

    #[test]
    fn notify_follows_rsp_event() {
        let mut r = ring();
        publish(&mut r, 3);
        // Frontend wants an event for the first response.
        r.mem.store_u32(RING_RSP_EVENT, 1);
        r.take().unwrap();
        r.respond(0, 0, 0);
        assert!(r.push());
        // It has not consumed yet (rsp_event still 1): no more events.
        r.take().unwrap();
        r.respond(1, 0, 0);
        r.take().unwrap();
        r.respond(2, 0, 0);
        assert!(!r.push());
        // Nothing new: nothing to say.
        assert!(!r.push());
    }

    #[test]
    fn final_check_arms_req_event() {
        let mut r = ring();
        assert!(!r.final_check().unwrap());
        assert_eq!(r.mem.load_u32(RING_REQ_EVENT), 1);
        publish(&mut r, 1);
        assert!(r.final_check().unwrap());
    }

    #[test]
    fn x86_32_responses_are_12_bytes() {
        let mut r = BackRing::attach(VecRing::new(1), Protocol::X86_32).unwrap();
        let at = r.slot(0) + 12;
        r.mem.0[at..at + 4].fill(0xee);
        publish(&mut r, 1);
        r.take().unwrap().unwrap();
        r.respond(7, 0, 0);
        assert_eq!(&r.mem.0[at..at + 4], &[0xee; 4]);
    }
}
