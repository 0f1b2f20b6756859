//! Submission and completion queue entries (spec 4.2, 4.6) and the commands Bulkhead uses.

use crate::Status;

pub mod opcode {
    // Admin
    pub const DELETE_IO_SQ: u8 = 0x00;
    pub const CREATE_IO_SQ: u8 = 0x01;
    pub const DELETE_IO_CQ: u8 = 0x04;
    pub const CREATE_IO_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    // NVM
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DSM: u8 = 0x09;
}

pub const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

/// A 64-byte submission queue entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub opcode: u8,
    pub cid: u16,
    pub nsid: u32,
    pub prp1: u64,
    pub prp2: u64,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

impl Command {
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        let cdw0 = self.opcode as u32 | (self.cid as u32) << 16;
        b[0..4].copy_from_slice(&cdw0.to_le_bytes());
        b[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        b[24..32].copy_from_slice(&self.prp1.to_le_bytes());
        b[32..40].copy_from_slice(&self.prp2.to_le_bytes());
        for (i, v) in [
            self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15,
        ]
        .iter()
        .enumerate()
        {
            b[40 + 4 * i..44 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; 64]) -> Command {
        let d = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let q = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        Command {
            opcode: b[0],
            cid: (d(0) >> 16) as u16,
            nsid: d(4),
            prp1: q(24),
            prp2: q(32),
            cdw10: d(40),
            cdw11: d(44),
            cdw12: d(48),
            cdw13: d(52),
            cdw14: d(56),
            cdw15: d(60),
        }
    }

    pub fn identify(cns: u8, nsid: u32, buf: u64) -> Command {
        Command {
            opcode: opcode::IDENTIFY,
            nsid,
            prp1: buf,
            cdw10: cns as u32,
            ..Default::default()
        }
    }

    /// Create I/O completion queue `qid` of `entries` at `base`, interrupting on `vector`
    /// (or polled, when `vector` is None).
    pub fn create_cq(qid: u16, entries: u16, base: u64, vector: Option<u16>) -> Command {
        let (iv, ien) = match vector {
            Some(v) => ((v as u32) << 16, 1 << 1),
            None => (0, 0),
        };
        Command {
            opcode: opcode::CREATE_IO_CQ,
            prp1: base,
            cdw10: ((entries as u32 - 1) << 16) | qid as u32,
            cdw11: iv | ien | 1, // physically contiguous
            ..Default::default()
        }
    }

    pub fn create_sq(qid: u16, entries: u16, base: u64, cqid: u16) -> Command {
        Command {
            opcode: opcode::CREATE_IO_SQ,
            prp1: base,
            cdw10: ((entries as u32 - 1) << 16) | qid as u32,
            cdw11: ((cqid as u32) << 16) | 1,
            ..Default::default()
        }
    }

    /// Ask for `n` submission and completion queues (1-based counts).
    pub fn set_queue_count(n: u16) -> Command {
        let v = (n as u32 - 1) | ((n as u32 - 1) << 16);
        Command {
            opcode: opcode::SET_FEATURES,
            cdw10: FEATURE_NUMBER_OF_QUEUES,
            cdw11: v,
            ..Default::default()
        }
    }

    /// Read or write `blocks` (1-based) starting at `lba`.
    pub fn rw(write: bool, nsid: u32, lba: u64, blocks: u32, prp1: u64, prp2: u64) -> Command {
        Command {
            opcode: if write { opcode::WRITE } else { opcode::READ },
            nsid,
            prp1,
            prp2,
            cdw10: lba as u32,
            cdw11: (lba >> 32) as u32,
            cdw12: blocks - 1,
            ..Default::default()
        }
    }

    pub fn flush(nsid: u32) -> Command {
        Command {
            opcode: opcode::FLUSH,
            nsid,
            ..Default::default()
        }
    }

    pub fn write_zeroes(nsid: u32, lba: u64, blocks: u32) -> Command {
        Command {
            opcode: opcode::WRITE_ZEROES,
            nsid,
            cdw10: lba as u32,
            cdw11: (lba >> 32) as u32,
            cdw12: blocks - 1,
            ..Default::default()
        }
    }

    /// Dataset Management / deallocate for `ranges` (1..=256) range entries at `list`.
    pub fn deallocate(nsid: u32, ranges: u16, list: u64) -> Command {
        Command {
            opcode: opcode::DSM,
            nsid,
            prp1: list,
            cdw10: ranges as u32 - 1,
            cdw11: 1 << 2,
            ..Default::default()
        }
    }

    pub fn abort(sqid: u16, cid: u16) -> Command {
        Command {
            opcode: opcode::ABORT,
            cdw10: sqid as u32 | (cid as u32) << 16,
            ..Default::default()
        }
    }
}

/// A 16-byte completion queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub dw0: u32,
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    pub phase: bool,
    pub status: Option<Status>,
}

impl Completion {
    pub fn from_bytes(b: &[u8; 16]) -> Completion {
        let sf = u16::from_le_bytes([b[14], b[15]]);
        let sc = (sf >> 1) as u8;
        let sct = ((sf >> 9) & 7) as u8;
        Completion {
            dw0: u32::from_le_bytes(b[0..4].try_into().unwrap()),
            sq_head: u16::from_le_bytes([b[8], b[9]]),
            sq_id: u16::from_le_bytes([b[10], b[11]]),
            cid: u16::from_le_bytes([b[12], b[13]]),
            phase: sf & 1 == 1,
            status: if sc == 0 && sct == 0 {
                None
            } else {
                Some(Status {
                    sct,
                    sc,
                    dnr: sf & (1 << 15) != 0,
                })
            },
        }
    }

    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        b[8..10].copy_from_slice(&self.sq_head.to_le_bytes());
        b[10..12].copy_from_slice(&self.sq_id.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        let (sct, sc, dnr) = self.status.map_or((0, 0, false), |s| (s.sct, s.sc, s.dnr));
        let sf = self.phase as u16 | (sc as u16) << 1 | (sct as u16 & 7) << 9 | (dnr as u16) << 15;
        b[14..16].copy_from_slice(&sf.to_le_bytes());
        b
    }

    pub fn result(&self) -> Result<u32, crate::Error> {
        match self.status {
            None => Ok(self.dw0),
            Some(s) => Err(crate::Error::Command(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_layout() {
        let c = Command::rw(true, 1, 0x1_2345_6789, 8, 0x1000, 0x2000);
        let b = c.to_bytes();
        assert_eq!(b[0], opcode::WRITE);
        assert_eq!(&b[4..8], &1u32.to_le_bytes());
        assert_eq!(&b[24..32], &0x1000u64.to_le_bytes());
        assert_eq!(&b[32..40], &0x2000u64.to_le_bytes());
        assert_eq!(&b[40..44], &0x2345_6789u32.to_le_bytes());
        assert_eq!(&b[44..48], &1u32.to_le_bytes());
        assert_eq!(&b[48..52], &7u32.to_le_bytes(), "NLB is 0-based");
        let mut c2 = c;
        c2.cid = 0xbeef;
        assert_eq!(Command::from_bytes(&c2.to_bytes()), c2);
        assert_eq!(&c2.to_bytes()[2..4], &0xbeefu16.to_le_bytes());
    }

    #[test]
    fn queue_creation_fields() {
        let cq = Command::create_cq(1, 256, 0x5000, Some(3));
        assert_eq!(cq.cdw10, (255 << 16) | 1);
        assert_eq!(cq.cdw11, (3 << 16) | 2 | 1);
        assert_eq!(Command::create_cq(2, 64, 0, None).cdw11, 1);
        let sq = Command::create_sq(1, 256, 0x6000, 1);
        assert_eq!(sq.cdw11, (1 << 16) | 1);
        assert_eq!(Command::set_queue_count(4).cdw11, 0x0003_0003);
    }

    #[test]
    fn completion_round_trip_and_status() {
        let ok = Completion {
            dw0: 7,
            sq_head: 3,
            sq_id: 1,
            cid: 42,
            phase: true,
            status: None,
        };
        assert_eq!(Completion::from_bytes(&ok.to_bytes()), ok);
        assert_eq!(ok.result(), Ok(7));
        let lba = Status {
            sct: 0,
            sc: 0x80,
            dnr: true,
        };
        let bad = Completion {
            status: Some(lba),
            ..ok
        };
        let back = Completion::from_bytes(&bad.to_bytes());
        assert_eq!(back.status, Some(lba));
        assert_eq!(back.status.unwrap().describe(), "LBA out of range");
        assert!(back.result().is_err());
    }
}
