//! blkif on a shared ring: the generic back end (`bulkhead-ring`) with blkif's entry
//! sizes, which depend on the frontend's ABI.

pub use bulkhead_ring::{BackRing, FrontRing, Layout, RingError, RingMemory, VecRing};

use crate::abi::Protocol;

pub fn attach<M: RingMemory>(mem: M, protocol: Protocol) -> Result<BackRing<M>, RingError> {
    BackRing::attach(mem, protocol.layout())
}

/// `struct blkif_response`: id u64, operation u8, status i16 at 10 in both ABIs (the
/// 32-bit one is 12 bytes long; the ring writes only what the layout holds).
pub fn response(id: u64, operation: u8, status: i16) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&id.to_le_bytes());
    r[8] = operation;
    r[10..12].copy_from_slice(&status.to_le_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_in_both_abis() {
        for (p, n) in [(Protocol::X86_64, 16), (Protocol::X86_32, 12)] {
            let mut mem = VecRing::new(1);
            mem.0[64..64 + 20].fill(0xee);
            let mut front = FrontRing::new(&mem, p.layout());
            front.put(&mut mem, &[0; 112]);
            front.publish(&mut mem);
            let mut r = attach(mem, p).unwrap();
            assert_eq!(r.entries(), 32);
            r.take().unwrap().unwrap();
            r.respond(&response(0x1122_3344_5566_7788, 1, -1));
            r.push();
            let raw = front.get(r.memory()).unwrap();
            assert_eq!(raw.len(), n);
            assert_eq!(
                &raw[..12],
                &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 1, 0, 0xff, 0xff]
            );
        }
    }
}
