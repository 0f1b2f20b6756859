//! Controller registers (spec 3.1).

pub const CAP: usize = 0x00;
pub const VS: usize = 0x08;
pub const INTMS: usize = 0x0c;
pub const INTMC: usize = 0x10;
pub const CC: usize = 0x14;
pub const CSTS: usize = 0x1c;
pub const AQA: usize = 0x24;
pub const ASQ: usize = 0x28;
pub const ACQ: usize = 0x30;
pub const DOORBELLS: usize = 0x1000;

pub const CC_EN: u32 = 1 << 0;
/// I/O queue entry sizes: 2^6 = 64-byte SQEs, 2^4 = 16-byte CQEs; NVM command set; 4 KiB pages.
pub const CC_IOSQES_64: u32 = 6 << 16;
pub const CC_IOCQES_16: u32 = 4 << 20;
pub const CC_SHN_NORMAL: u32 = 1 << 14;
pub const CSTS_RDY: u32 = 1 << 0;
pub const CSTS_CFS: u32 = 1 << 1;
pub const CSTS_SHST_MASK: u32 = 3 << 2;
pub const CSTS_SHST_DONE: u32 = 2 << 2;

/// Fields of CAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// Maximum queue entries (MQES is 0-based).
    pub max_queue_entries: u32,
    /// Worst-case time to become ready, in milliseconds (TO is in 500 ms units).
    pub timeout_ms: u32,
    /// Doorbell stride in bytes.
    pub doorbell_stride: usize,
    pub mpsmin: u8,
    pub mpsmax: u8,
    pub nvm_command_set: bool,
}

impl Cap {
    pub fn parse(v: u64) -> Cap {
        Cap {
            max_queue_entries: (v & 0xffff) as u32 + 1,
            timeout_ms: (((v >> 24) & 0xff) as u32).max(1) * 500,
            doorbell_stride: 4 << ((v >> 32) & 0xf),
            mpsmin: ((v >> 48) & 0xf) as u8,
            mpsmax: ((v >> 52) & 0xf) as u8,
            nvm_command_set: (v >> 37) & 1 == 1,
        }
    }
}

pub fn sq_doorbell(qid: u16, stride: usize) -> usize {
    DOORBELLS + (2 * qid as usize) * stride
}

pub fn cq_doorbell(qid: u16, stride: usize) -> usize {
    DOORBELLS + (2 * qid as usize + 1) * stride
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields() {
        // QEMU's nvme: MQES 2047, CQR, TO 15 (7.5 s), DSTRD 0, CSS NVM, MPSMAX 4.
        let v: u64 = 0x7ff | 1 << 16 | 0xf << 24 | 1 << 37 | 4 << 52;
        let c = Cap::parse(v);
        assert_eq!(c.max_queue_entries, 2048);
        assert_eq!(c.timeout_ms, 7500);
        assert_eq!(c.doorbell_stride, 4);
        assert!(c.nvm_command_set);
        assert_eq!(sq_doorbell(1, 4), 0x1008);
        assert_eq!(cq_doorbell(1, 4), 0x100c);
        assert_eq!(cq_doorbell(0, 16), 0x1010);
        assert_eq!(Cap::parse(0).timeout_ms, 500, "TO 0 still waits one unit");
    }
}
