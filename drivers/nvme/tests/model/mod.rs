//! An in-memory NVMe controller that executes what the driver submits: registers, admin
//! queue, identify, queue creation, read/write/flush/write-zeroes/DSM against a RAM disk,
//! completion entries with phase tags, interrupt records. Knobs make it misbehave.

use bulkhead_hw::testing::PhysMem;
pub use bulkhead_hw::testing::{FakeClock, ModelDma};
use bulkhead_nvme::cmd::{opcode, Command, Completion};
use bulkhead_nvme::{regs, Mmio, Status};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

pub const BLOCK: usize = 512;

#[derive(Default)]
pub struct Sq {
    base: u64,
    size: u16,
    head: u16,
    cqid: u16,
}

#[derive(Default)]
pub struct Cq {
    base: u64,
    size: u16,
    tail: u16,
    phase: bool,
    vector: Option<u16>,
}

#[derive(Default)]
pub struct State {
    pub mem: PhysMem,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    sqs: BTreeMap<u16, Sq>,
    cqs: BTreeMap<u16, Cq>,
    pub disk: Vec<u8>,
    pub mdts: u8,
    pub max_queues: u16,
    /// Never post completions (a hung controller).
    pub silent: bool,
    /// Report CSTS.CFS once enabled.
    pub fatal: bool,
    /// Registers read all-ones (surprise removal).
    pub gone: bool,
    /// Post one completion for a command id never submitted before the real ones.
    pub bogus_completion: bool,
    /// Post an I/O doorbell's completions in the reverse of submission order.
    pub reverse: bool,
    pub interrupts: Vec<u16>,
    pub flushes: u32,
    pub commands: Vec<Command>,
}

#[derive(Clone)]
pub struct Model(pub Rc<RefCell<State>>);

impl Model {
    pub fn new(disk_blocks: usize) -> Self {
        let mut s = State {
            mem: PhysMem::new(0x10_0000),
            mdts: 5,
            max_queues: 4,
            ..Default::default()
        };
        s.disk = (0..disk_blocks * BLOCK)
            .map(|i| (i / BLOCK) as u8 ^ (i as u8))
            .collect();
        Model(Rc::new(RefCell::new(s)))
    }
}

impl State {
    pub fn read(&self, addr: u64, buf: &mut [u8]) {
        self.mem.read(addr, buf)
    }
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        self.mem.write(addr, data)
    }

    /// The pages a command's PRPs describe, for `len` bytes.
    fn prp_pages(&mut self, c: &Command, len: usize) -> Vec<(u64, usize)> {
        let mut out = vec![];
        let first = (4096 - (c.prp1 & 0xfff) as usize).min(len);
        out.push((c.prp1, first));
        let mut left = len - first;
        if left == 0 {
            return out;
        }
        if left <= 4096 {
            out.push((c.prp2, left));
            return out;
        }
        let mut list = c.prp2;
        let mut idx = 0;
        while left > 0 {
            let mut e = [0u8; 8];
            self.read(list + idx * 8, &mut e);
            let entry = u64::from_le_bytes(e);
            if idx == 511 && left > 4096 {
                list = entry;
                idx = 0;
                continue;
            }
            let n = left.min(4096);
            out.push((entry, n));
            left -= n;
            idx += 1;
        }
        out
    }

    fn post(&mut self, sqid: u16, cid: u16, dw0: u32, status: Option<Status>) {
        let cqid = self.sqs[&sqid].cqid;
        let sq_head = self.sqs[&sqid].head;
        let cq = self.cqs.get_mut(&cqid).unwrap();
        let (base, tail, phase, size, vector) = (cq.base, cq.tail, cq.phase, cq.size, cq.vector);
        cq.tail = (tail + 1) % size;
        if cq.tail == 0 {
            cq.phase = !cq.phase;
        }
        let c = Completion {
            dw0,
            sq_head,
            sq_id: sqid,
            cid,
            phase,
            status,
        };
        self.write(base + tail as u64 * 16, &c.to_bytes());
        if let Some(v) = vector {
            self.interrupts.push(v);
        }
    }

    fn admin(&mut self, c: &Command) -> (u32, Option<Status>) {
        let invalid = Some(Status {
            sct: 0,
            sc: 2,
            dnr: true,
        });
        match c.opcode {
            opcode::IDENTIFY => {
                let mut page = vec![0u8; 4096];
                match c.cdw10 & 0xff {
                    1 => {
                        page[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
                        page[4..12].copy_from_slice(b"MODEL001");
                        page[24..34].copy_from_slice(b"Model NVMe");
                        page[77] = self.mdts;
                        page[516..520].copy_from_slice(&1u32.to_le_bytes());
                        page[520] = 0x0c; // DSM + write zeroes
                        page[525] = 1;
                    }
                    2 => page[0..4].copy_from_slice(&1u32.to_le_bytes()),
                    0 if c.nsid == 1 => {
                        let blocks = (self.disk.len() / BLOCK) as u64;
                        page[0..8].copy_from_slice(&blocks.to_le_bytes());
                        page[8..16].copy_from_slice(&blocks.to_le_bytes());
                        page[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
                    }
                    _ => {
                        return (
                            0,
                            Some(Status {
                                sct: 0,
                                sc: 0x0b,
                                dnr: true,
                            }),
                        )
                    }
                }
                self.write(c.prp1, &page);
                (0, None)
            }
            opcode::SET_FEATURES => {
                let n = (self.max_queues - 1) as u32;
                (n | n << 16, None)
            }
            opcode::CREATE_IO_CQ => {
                let qid = c.cdw10 as u16;
                let size = (c.cdw10 >> 16) as u16 + 1;
                if qid == 0 || qid > self.max_queues || self.cqs.contains_key(&qid) {
                    return (
                        0,
                        Some(Status {
                            sct: 1,
                            sc: 1,
                            dnr: true,
                        }),
                    );
                }
                let vector = (c.cdw11 & 2 != 0).then_some((c.cdw11 >> 16) as u16);
                self.cqs.insert(
                    qid,
                    Cq {
                        base: c.prp1,
                        size,
                        tail: 0,
                        phase: true,
                        vector,
                    },
                );
                (0, None)
            }
            opcode::CREATE_IO_SQ => {
                let qid = c.cdw10 as u16;
                let cqid = (c.cdw11 >> 16) as u16;
                if !self.cqs.contains_key(&cqid) || self.sqs.contains_key(&qid) {
                    return (
                        0,
                        Some(Status {
                            sct: 1,
                            sc: 0,
                            dnr: true,
                        }),
                    );
                }
                self.sqs.insert(
                    qid,
                    Sq {
                        base: c.prp1,
                        size: (c.cdw10 >> 16) as u16 + 1,
                        head: 0,
                        cqid,
                    },
                );
                (0, None)
            }
            opcode::ABORT => (1, None), // "not aborted": the model completes everything it sees
            _ => (0, invalid),
        }
    }

    fn io(&mut self, c: &Command) -> (u32, Option<Status>) {
        let blocks = (self.disk.len() / BLOCK) as u64;
        let lba = c.cdw10 as u64 | (c.cdw11 as u64) << 32;
        let n = (c.cdw12 & 0xffff) as u64 + 1;
        let out_of_range = Some(Status {
            sct: 0,
            sc: 0x80,
            dnr: true,
        });
        match c.opcode {
            opcode::READ | opcode::WRITE => {
                if c.nsid != 1 {
                    return (
                        0,
                        Some(Status {
                            sct: 0,
                            sc: 0x0b,
                            dnr: true,
                        }),
                    );
                }
                if lba + n > blocks {
                    return (0, out_of_range);
                }
                let len = n as usize * BLOCK;
                let mut pos = lba as usize * BLOCK;
                for (addr, plen) in self.prp_pages(c, len) {
                    if c.opcode == opcode::READ {
                        let data = self.disk[pos..pos + plen].to_vec();
                        self.write(addr, &data);
                    } else {
                        let mut data = vec![0u8; plen];
                        self.read(addr, &mut data);
                        self.disk[pos..pos + plen].copy_from_slice(&data);
                    }
                    pos += plen;
                }
                (0, None)
            }
            opcode::FLUSH => {
                self.flushes += 1;
                (0, None)
            }
            opcode::DSM => {
                let ranges = (c.cdw10 & 0xff) as usize + 1;
                let mut list = vec![0u8; ranges * 16];
                self.read(c.prp1, &mut list);
                for r in list.chunks(16) {
                    let nlb = u32::from_le_bytes(r[4..8].try_into().unwrap()) as u64;
                    let slba = u64::from_le_bytes(r[8..16].try_into().unwrap());
                    if slba + nlb > blocks {
                        return (0, out_of_range);
                    }
                    if c.cdw11 & (1 << 2) != 0 {
                        self.disk[slba as usize * BLOCK..(slba + nlb) as usize * BLOCK].fill(0);
                    }
                }
                (0, None)
            }
            opcode::WRITE_ZEROES => {
                if lba + n > blocks {
                    return (0, out_of_range);
                }
                self.disk[lba as usize * BLOCK..(lba + n) as usize * BLOCK].fill(0);
                (0, None)
            }
            _ => (
                0,
                Some(Status {
                    sct: 0,
                    sc: 1,
                    dnr: true,
                }),
            ),
        }
    }

    fn doorbell(&mut self, qid: u16, tail: u16) {
        if self.silent || !self.sqs.contains_key(&qid) {
            return;
        }
        if self.bogus_completion {
            self.bogus_completion = false;
            self.post(qid, 999, 0, None);
        }
        let mut posts = Vec::new();
        while self.sqs[&qid].head != tail {
            let (base, head, size) = {
                let s = &self.sqs[&qid];
                (s.base, s.head, s.size)
            };
            let mut b = [0u8; 64];
            self.read(base + head as u64 * 64, &mut b);
            let c = Command::from_bytes(&b);
            self.commands.push(c);
            self.sqs.get_mut(&qid).unwrap().head = (head + 1) % size;
            let (dw0, st) = if qid == 0 {
                self.admin(&c)
            } else {
                self.io(&c)
            };
            posts.push((c.cid, dw0, st));
        }
        if self.reverse && qid != 0 {
            posts.reverse();
        }
        for (cid, dw0, st) in posts {
            self.post(qid, cid, dw0, st);
        }
    }
}

impl Mmio for Model {
    fn read32(&self, off: usize) -> u32 {
        let s = self.0.borrow();
        if s.gone {
            return 0xffff_ffff;
        }
        match off {
            regs::CAP => 0x3ff | 0x14 << 24,   // MQES 1023, TO 10 s
            o if o == regs::CAP + 4 => 1 << 5, // CSS: NVM (bit 37)
            regs::VS => 0x0001_0400,
            regs::CC => s.cc,
            regs::CSTS => s.csts,
            _ => 0,
        }
    }

    fn write32(&self, off: usize, v: u32) {
        let mut s = self.0.borrow_mut();
        match off {
            regs::CC => {
                s.cc = v;
                if v & regs::CC_EN != 0 {
                    s.csts = if s.fatal {
                        regs::CSTS_RDY | regs::CSTS_CFS
                    } else {
                        regs::CSTS_RDY
                    };
                    let (asq, acq, aqa) = (s.asq, s.acq, s.aqa);
                    s.sqs.insert(
                        0,
                        Sq {
                            base: asq,
                            size: (aqa & 0xfff) as u16 + 1,
                            head: 0,
                            cqid: 0,
                        },
                    );
                    s.cqs.insert(
                        0,
                        Cq {
                            base: acq,
                            size: ((aqa >> 16) & 0xfff) as u16 + 1,
                            tail: 0,
                            phase: true,
                            vector: Some(0),
                        },
                    );
                } else {
                    s.csts = 0;
                    s.sqs.clear();
                    s.cqs.clear();
                }
                if v & (3 << 14) != 0 {
                    s.csts |= regs::CSTS_SHST_DONE;
                }
            }
            regs::AQA => s.aqa = v,
            regs::ASQ => s.asq = (s.asq & !0xffff_ffff) | v as u64,
            o if o == regs::ASQ + 4 => s.asq = (s.asq & 0xffff_ffff) | (v as u64) << 32,
            regs::ACQ => s.acq = (s.acq & !0xffff_ffff) | v as u64,
            o if o == regs::ACQ + 4 => s.acq = (s.acq & 0xffff_ffff) | (v as u64) << 32,
            o if o >= regs::DOORBELLS => {
                let idx = (o - regs::DOORBELLS) / 4;
                if idx.is_multiple_of(2) {
                    s.doorbell((idx / 2) as u16, v as u16);
                }
            }
            _ => {}
        }
    }
}

bulkhead_hw::model_memory!(State, mem);
