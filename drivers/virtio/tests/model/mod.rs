//! A virtio-net device model (modern PCI transport) over an in-memory "physical" memory:
//! it answers the common configuration, takes notifications, consumes transmit chains and
//! fills receive buffers, as QEMU's device does, with knobs to misbehave.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bulkhead_hw::testing::PhysMem;
pub use bulkhead_hw::testing::{FakeClock, ModelDma};
use bulkhead_hw::Mmio;
use bulkhead_virtio::transport::{reg, status};

#[derive(Default, Clone, Copy)]
pub struct Q {
    pub size: u16,
    pub max: u16,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    pub enable: u16,
    pub msix: u16,
    pub last_avail: u16,
    pub used_idx: u16,
}

pub struct State {
    pub mem: PhysMem,
    pub status: u8,
    dfsel: u32,
    drfsel: u32,
    pub driver_features: u64,
    pub offered: u64,
    pub refuse_features: bool,
    queue_sel: u16,
    pub queues: [Q; 2],
    pub msix_config: u16,
    pub isr: u8,
    pub mac: [u8; 6],
    pub link_up: bool,
    /// Transmitted: (virtio-net header, frame).
    pub sent: Vec<(Vec<u8>, Vec<u8>)>,
    pub inbound: VecDeque<Vec<u8>>,
    /// Stop consuming transmit chains.
    pub tx_stall: bool,
    /// Split each received frame over buffers of at most this many bytes (mergeable).
    pub rx_split: Option<usize>,
    pub notifies: [u32; 2],
}

pub type Shared = Rc<RefCell<State>>;

pub const NET_FEATURES: u64 = (1 << 32) | (1 << 5) | (1 << 15) | (1 << 0) | (1 << 16);

pub fn new_device() -> Shared {
    Rc::new(RefCell::new(State {
        mem: PhysMem::new(0x10_0000),
        status: 0,
        dfsel: 0,
        drfsel: 0,
        driver_features: 0,
        offered: NET_FEATURES,
        refuse_features: false,
        queue_sel: 0,
        queues: [Q {
            max: 256,
            msix: 0xffff,
            ..Default::default()
        }; 2],
        msix_config: 0xffff,
        isr: 0,
        mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        link_up: true,
        sent: Vec::new(),
        inbound: VecDeque::new(),
        tx_stall: false,
        rx_split: None,
        notifies: [0; 2],
    }))
}

impl State {
    pub fn read(&self, addr: u64, out: &mut [u8]) {
        self.mem.read(addr, out)
    }
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        self.mem.write(addr, data)
    }
    fn u16_at(&self, a: u64) -> u16 {
        let mut b = [0; 2];
        self.read(a, &mut b);
        u16::from_le_bytes(b)
    }
    fn desc(&self, q: &Q, id: u16) -> (u64, u32, u16, u16) {
        let mut d = [0u8; 16];
        self.read(q.desc + id as u64 * 16, &mut d);
        (
            u64::from_le_bytes(d[..8].try_into().unwrap()),
            u32::from_le_bytes(d[8..12].try_into().unwrap()),
            u16::from_le_bytes(d[12..14].try_into().unwrap()),
            u16::from_le_bytes(d[14..16].try_into().unwrap()),
        )
    }
    /// Append a used entry for queue `qi`.
    pub fn push_used(&mut self, qi: usize, id: u32, len: u32) {
        let q = self.queues[qi];
        let slot = q.device + 4 + 8 * (q.used_idx % q.size) as u64;
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&id.to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        self.write(slot, &e);
        let idx = q.used_idx.wrapping_add(1);
        self.queues[qi].used_idx = idx;
        self.write(q.device + 2, &idx.to_le_bytes());
        self.isr |= 1;
    }
    fn next_avail(&mut self, qi: usize) -> Option<u16> {
        let q = self.queues[qi];
        let idx = self.u16_at(q.driver + 2);
        if idx == q.last_avail {
            return None;
        }
        let head = self.u16_at(q.driver + 4 + 2 * (q.last_avail % q.size) as u64);
        self.queues[qi].last_avail = q.last_avail.wrapping_add(1);
        Some(head)
    }
    /// The device catches up with transmissions it held back.
    pub fn resume_tx(&mut self) {
        self.tx_stall = false;
        self.process_tx();
    }

    fn process_tx(&mut self) {
        if self.tx_stall {
            return;
        }
        while let Some(head) = self.next_avail(1) {
            let q = self.queues[1];
            let mut data = Vec::new();
            let mut id = head;
            for _ in 0..q.size {
                let (addr, len, flags, next) = self.desc(&q, id);
                assert_eq!(flags & 2, 0, "transmit buffers are device-readable");
                let mut b = vec![0u8; len as usize];
                self.read(addr, &mut b);
                data.extend_from_slice(&b);
                if flags & 1 == 0 {
                    break;
                }
                id = next;
            }
            let frame = data.split_off(12);
            self.sent.push((data, frame));
            self.push_used(1, head as u32, 0);
        }
    }
    /// Put queued inbound frames into the driver's receive buffers.
    pub fn deliver(&mut self) {
        while let Some(frame) = self.inbound.front().cloned() {
            let mut hdr = vec![0u8; 12];
            let chunk = self.rx_split.unwrap_or(usize::MAX);
            let mut data = hdr.clone();
            data.extend_from_slice(&frame);
            let pieces: Vec<Vec<u8>> = data.chunks(chunk).map(|c| c.to_vec()).collect();
            // All buffers needed must be there, or the frame waits.
            let q = self.queues[0];
            let avail = self.u16_at(q.driver + 2).wrapping_sub(q.last_avail);
            if (avail as usize) < pieces.len() {
                return;
            }
            self.inbound.pop_front();
            hdr[10..12].copy_from_slice(&(pieces.len() as u16).to_le_bytes());
            for (i, p) in pieces.iter().enumerate() {
                let head = self.next_avail(0).unwrap();
                let (addr, len, flags, _) = self.desc(&self.queues[0], head);
                assert_ne!(flags & 2, 0, "receive buffers are device-writable");
                let mut p = p.clone();
                if i == 0 {
                    p[..12].copy_from_slice(&hdr);
                }
                assert!(
                    p.len() <= len as usize,
                    "frame piece larger than the buffer"
                );
                self.write(addr, &p);
                self.push_used(0, head as u32, p.len() as u32);
            }
        }
    }
}

/// One register region of the device.
#[derive(Clone)]
pub struct Region {
    pub s: Shared,
    pub kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Common,
    Notify,
    Isr,
    Device,
}

impl Region {
    fn read_n(&self, off: usize, n: usize) -> u64 {
        let mut s = self.s.borrow_mut();
        match self.kind {
            Kind::Common => {
                let qi = s.queue_sel as usize;
                let q = s.queues.get(qi).copied().unwrap_or_default();
                let v: u64 = match (off, n) {
                    (reg::DEVICE_FEATURE_SELECT, 4) => s.dfsel as u64,
                    (reg::DEVICE_FEATURE, 4) => (s.offered >> (32 * s.dfsel.min(1))) & 0xffff_ffff,
                    (reg::DRIVER_FEATURE_SELECT, 4) => s.drfsel as u64,
                    (reg::MSIX_CONFIG, 2) => s.msix_config as u64,
                    (reg::NUM_QUEUES, 2) => 2,
                    (reg::DEVICE_STATUS, 1) => s.status as u64,
                    (reg::CONFIG_GENERATION, 1) => 0,
                    (reg::QUEUE_SELECT, 2) => s.queue_sel as u64,
                    (reg::QUEUE_SIZE, 2) => (if q.size == 0 { q.max } else { q.size }) as u64,
                    (reg::QUEUE_MSIX_VECTOR, 2) => q.msix as u64,
                    (reg::QUEUE_ENABLE, 2) => q.enable as u64,
                    (reg::QUEUE_NOTIFY_OFF, 2) => qi as u64,
                    _ => panic!("common config read of {n} bytes at {off:#x}"),
                };
                v
            }
            Kind::Isr => {
                assert_eq!(n, 1, "ISR is read as a byte");
                std::mem::take(&mut s.isr) as u64
            }
            Kind::Device => {
                let mut cfg = [0u8; 8];
                cfg[..6].copy_from_slice(&s.mac);
                cfg[6] = s.link_up as u8;
                let mut v = 0u64;
                for i in 0..n {
                    v |= (cfg.get(off + i).copied().unwrap_or(0) as u64) << (8 * i);
                }
                v
            }
            Kind::Notify => panic!("notify region read"),
        }
    }

    fn write_n(&self, off: usize, n: usize, v: u64) {
        let mut s = self.s.borrow_mut();
        match self.kind {
            Kind::Common => {
                let qi = s.queue_sel as usize;
                match (off, n) {
                    (reg::DEVICE_FEATURE_SELECT, 4) => s.dfsel = v as u32,
                    (reg::DRIVER_FEATURE_SELECT, 4) => s.drfsel = v as u32,
                    (reg::DRIVER_FEATURE, 4) => {
                        let sh = 32 * s.drfsel.min(1);
                        s.driver_features =
                            (s.driver_features & !(0xffff_ffffu64 << sh)) | (v << sh);
                    }
                    (reg::MSIX_CONFIG, 2) => s.msix_config = v as u16,
                    (reg::DEVICE_STATUS, 1) => {
                        let mut st = v as u8;
                        if st == 0 {
                            // Reset.
                            s.queues = [Q {
                                max: 256,
                                msix: 0xffff,
                                ..Default::default()
                            }; 2];
                            s.driver_features = 0;
                        }
                        if st & status::FEATURES_OK != 0
                            && (s.refuse_features || s.driver_features & !s.offered != 0)
                        {
                            st &= !status::FEATURES_OK;
                        }
                        s.status = st;
                    }
                    (reg::QUEUE_SELECT, 2) => s.queue_sel = v as u16,
                    (reg::QUEUE_SIZE, 2) => s.queues[qi].size = v as u16,
                    (reg::QUEUE_MSIX_VECTOR, 2) => s.queues[qi].msix = v as u16,
                    (reg::QUEUE_ENABLE, 2) => s.queues[qi].enable = v as u16,
                    (reg::QUEUE_DESC, 4) => {
                        s.queues[qi].desc = (s.queues[qi].desc & !0xffff_ffff) | v
                    }
                    (0x24, 4) => s.queues[qi].desc = (s.queues[qi].desc & 0xffff_ffff) | v << 32,
                    (reg::QUEUE_DRIVER, 4) => {
                        s.queues[qi].driver = (s.queues[qi].driver & !0xffff_ffff) | v
                    }
                    (0x2c, 4) => {
                        s.queues[qi].driver = (s.queues[qi].driver & 0xffff_ffff) | v << 32
                    }
                    (reg::QUEUE_DEVICE, 4) => {
                        s.queues[qi].device = (s.queues[qi].device & !0xffff_ffff) | v
                    }
                    (0x34, 4) => {
                        s.queues[qi].device = (s.queues[qi].device & 0xffff_ffff) | v << 32
                    }
                    _ => panic!("common config write of {n} bytes at {off:#x}"),
                }
            }
            Kind::Notify => {
                assert_eq!(n, 2, "notify is a 16-bit write");
                let q = v as usize;
                assert_eq!(off, q * 4, "notify at the queue's offset");
                s.notifies[q] += 1;
                if q == 1 {
                    s.process_tx();
                }
            }
            _ => panic!("write to a read-only region"),
        }
    }
}

impl Mmio for Region {
    fn read32(&self, off: usize) -> u32 {
        self.read_n(off, 4) as u32
    }
    fn write32(&self, off: usize, v: u32) {
        self.write_n(off, 4, v as u64)
    }
    fn read16(&self, off: usize) -> u16 {
        self.read_n(off, 2) as u16
    }
    fn write16(&self, off: usize, v: u16) {
        self.write_n(off, 2, v as u64)
    }
    fn read8(&self, off: usize) -> u8 {
        self.read_n(off, 1) as u8
    }
    fn write8(&self, off: usize, v: u8) {
        self.write_n(off, 1, v as u64)
    }
}

bulkhead_hw::model_memory!(State, mem);
