//! The xenstore shared page (`struct xenstore_domain_interface`): a 1 KiB request ring we
//! produce into and a 1 KiB response ring we consume from, with free-running u32 indices.
//!
//! Offsets: req[1024] @0, rsp[1024] @1024, req_cons @2048, req_prod @2052, rsp_cons @2056,
//! rsp_prod @2060. The other side can write anything into the indices; an impossible
//! distance between them is reported as [`Error::RingCorrupt`] instead of being trusted.

use crate::wire::Error;

pub const RING_SIZE: u32 = 1024;
const REQ: usize = 0;
const RSP: usize = 1024;
const REQ_CONS: usize = 2048;
const REQ_PROD: usize = 2052;
const RSP_CONS: usize = 2056;
const RSP_PROD: usize = 2060;

/// The shared page. Implementations use volatile accesses; `fence` orders data against
/// index updates (the other side runs on another CPU).
pub trait RingMemory {
    fn load_u32(&self, offset: usize) -> u32;
    fn store_u32(&mut self, offset: usize, v: u32);
    fn load_u8(&self, offset: usize) -> u8;
    fn store_u8(&mut self, offset: usize, v: u8);
    /// Full memory barrier.
    fn fence(&self);
}

pub struct Ring<M: RingMemory> {
    mem: M,
}

impl<M: RingMemory> Ring<M> {
    pub fn new(mem: M) -> Self {
        Ring { mem }
    }

    pub fn memory(&mut self) -> &mut M {
        &mut self.mem
    }

    /// Copy as much of `data` as fits into the request ring; returns how much was taken.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        let cons = self.mem.load_u32(REQ_CONS);
        let prod = self.mem.load_u32(REQ_PROD);
        self.mem.fence();
        let used = prod.wrapping_sub(cons);
        if used > RING_SIZE {
            return Err(Error::RingCorrupt);
        }
        let n = ((RING_SIZE - used) as usize).min(data.len());
        for (i, &b) in data[..n].iter().enumerate() {
            let at = prod.wrapping_add(i as u32) % RING_SIZE;
            self.mem.store_u8(REQ + at as usize, b);
        }
        // The bytes must be visible before the index that publishes them.
        self.mem.fence();
        self.mem.store_u32(REQ_PROD, prod.wrapping_add(n as u32));
        Ok(n)
    }

    /// Move every available response byte into `out`.
    pub fn recv(&mut self, out: &mut alloc::vec::Vec<u8>) -> Result<Received, Error> {
        let cons = self.mem.load_u32(RSP_CONS);
        let prod = self.mem.load_u32(RSP_PROD);
        // Read the index before the data it covers.
        self.mem.fence();
        let avail = prod.wrapping_sub(cons);
        if avail > RING_SIZE {
            return Err(Error::RingCorrupt);
        }
        for i in 0..avail {
            out.push(
                self.mem
                    .load_u8(RSP + (cons.wrapping_add(i) % RING_SIZE) as usize),
            );
        }
        // Finish reading before giving the space back.
        self.mem.fence();
        self.mem.store_u32(RSP_CONS, prod);
        // Whether the server filled the ring before this read gave the space back: it
        // may have more to write and wait for room. Read again after the store: it may
        // have filled the ring since the first read of the index (Linux's xenbus checks
        // the same way).
        self.mem.fence();
        let now = self.mem.load_u32(RSP_PROD);
        Ok(Received {
            bytes: avail as usize,
            freed_full: now.wrapping_sub(cons) >= RING_SIZE,
        })
    }
}

/// What one [`Ring::recv`] took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub bytes: usize,
    /// The response ring was full at some point before this read freed it: the server
    /// must be told (it may be waiting for room).
    pub freed_full: bool,
}

/// Offsets for the server side (the fake xenstored in tests).
pub mod server {
    pub const REQ: usize = super::REQ;
    pub const RSP: usize = super::RSP;
    pub const REQ_CONS: usize = super::REQ_CONS;
    pub const REQ_PROD: usize = super::REQ_PROD;
    pub const RSP_CONS: usize = super::RSP_CONS;
    pub const RSP_PROD: usize = super::RSP_PROD;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    pub struct Page(pub Vec<u8>);
    impl RingMemory for Page {
        fn load_u32(&self, o: usize) -> u32 {
            u32::from_le_bytes(self.0[o..o + 4].try_into().unwrap())
        }
        fn store_u32(&mut self, o: usize, v: u32) {
            self.0[o..o + 4].copy_from_slice(&v.to_le_bytes())
        }
        fn load_u8(&self, o: usize) -> u8 {
            self.0[o]
        }
        fn store_u8(&mut self, o: usize, v: u8) {
            self.0[o] = v
        }
        fn fence(&self) {}
    }

    #[test]
    fn send_wraps_and_stops_when_full() {
        let mut r = Ring::new(Page(vec![0; 4096]));
        // Indices near u32 wrap-around.
        r.mem.store_u32(REQ_CONS, u32::MAX - 10);
        r.mem.store_u32(REQ_PROD, u32::MAX - 10);
        let data: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(r.send(&data).unwrap(), 1024);
        assert_eq!(r.send(&data).unwrap(), 0, "full ring takes nothing");
        // Consumer frees 100 bytes.
        let c = r.mem.load_u32(REQ_CONS).wrapping_add(100);
        r.mem.store_u32(REQ_CONS, c);
        assert_eq!(r.send(&data[1024..]).unwrap(), 100);
        // The first byte landed where the start index pointed.
        let start = (u32::MAX - 10) % RING_SIZE;
        assert_eq!(
            r.mem.0[start as usize],
            (1024 % 251) as u8,
            "byte 1024 overwrote byte 0 after consumption"
        );
        assert_eq!(
            r.mem.0[((start + 100) % RING_SIZE) as usize],
            100,
            "byte 100 still unconsumed"
        );
    }

    #[test]
    fn recv_reads_what_was_produced() {
        let mut r = Ring::new(Page(vec![0; 4096]));
        r.mem.store_u32(RSP_CONS, 1020);
        for i in 0..8u32 {
            r.mem.0[RSP + ((1020 + i) % RING_SIZE) as usize] = i as u8 + 1;
        }
        r.mem.store_u32(RSP_PROD, 1028);
        let mut out = Vec::new();
        assert_eq!(
            r.recv(&mut out).unwrap(),
            Received {
                bytes: 8,
                freed_full: false
            }
        );
        assert_eq!(out, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.mem.load_u32(RSP_CONS), 1028);
    }

    /// xenstored fills the ring while a read is under way (after the read took the
    /// producer index, before it gave the space back): that read must report a full
    /// ring freed, or xenstored, waiting for room, is never told.
    #[test]
    fn a_ring_filled_during_the_read_is_reported_freed_full() {
        struct Racy(Page);
        impl RingMemory for Racy {
            fn load_u32(&self, o: usize) -> u32 {
                self.0.load_u32(o)
            }
            fn store_u32(&mut self, o: usize, v: u32) {
                if o == RSP_CONS {
                    // The server writes up to the old consumer index plus a whole ring.
                    let old = self.0.load_u32(RSP_CONS);
                    self.0.store_u32(RSP_PROD, old.wrapping_add(RING_SIZE));
                }
                self.0.store_u32(o, v)
            }
            fn load_u8(&self, o: usize) -> u8 {
                self.0.load_u8(o)
            }
            fn store_u8(&mut self, o: usize, v: u8) {
                self.0.store_u8(o, v)
            }
            fn fence(&self) {}
        }
        let mut r = Ring::new(Racy(Page(vec![0; 4096])));
        r.mem.0.store_u32(RSP_CONS, 100);
        r.mem.0.store_u32(RSP_PROD, 110);
        let got = r.recv(&mut Vec::new()).unwrap();
        assert_eq!(got.bytes, 10);
        assert!(got.freed_full, "the ring filled during the read");
        // Nothing new during a read of a ring with room: not full.
        let mut r = Ring::new(Page(vec![0; 4096]));
        r.mem.store_u32(RSP_PROD, 1023);
        assert!(!r.recv(&mut Vec::new()).unwrap().freed_full);
        // A read of a whole ring: full.
        r.mem.store_u32(RSP_PROD, 1023 + RING_SIZE);
        assert!(r.recv(&mut Vec::new()).unwrap().freed_full);
    }

    #[test]
    fn impossible_indices_are_reported() {
        let mut r = Ring::new(Page(vec![0; 4096]));
        r.mem.store_u32(RSP_PROD, 5000);
        assert_eq!(r.recv(&mut Vec::new()), Err(Error::RingCorrupt));
        r.mem.store_u32(REQ_PROD, 3000);
        assert_eq!(r.send(b"x"), Err(Error::RingCorrupt));
    }
}
