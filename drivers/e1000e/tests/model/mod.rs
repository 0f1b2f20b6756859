//! An 82574L model: registers, EEPROM reads, reset, and the legacy descriptor rings as
//! QEMU's e1000e processes them, with knobs to misbehave.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bulkhead_e1000e::reg;
use bulkhead_hw::testing::PhysMem;
pub use bulkhead_hw::testing::{FakeClock, ModelDma};
use bulkhead_hw::Mmio;

pub struct State {
    pub regs: HashMap<usize, u32>,
    pub mem: PhysMem,
    pub eeprom: [u16; 64],
    pub eeprom_dead: bool,
    /// Reads of CTRL before a reset completes.
    reset_reads: u32,
    pub sent: Vec<(Vec<u8>, u8, u8, u8)>,
    pub inbound: VecDeque<Vec<u8>>,
    /// Error bits for the next received frame.
    pub rx_error_next: u8,
    /// Split received frames into descriptors of this many bytes (no EOP but the last).
    pub rx_split: Option<usize>,
    pub link_up: bool,
    /// TDT writes (each a VM exit under a hypervisor).
    pub doorbells: usize,
    /// MSI-X enabled in PCI configuration: ICR is then write-1-to-clear, not read-to-clear.
    pub msix: bool,
    /// CTRL.RST reloads the MAC address only and every other register keeps what the
    /// previous owner wrote (QEMU's 82574 model; the real device resets them).
    pub reset_mac_only: bool,
}

pub type Shared = Rc<RefCell<State>>;

pub fn new_device() -> Shared {
    let mut eeprom = [0u16; 64];
    eeprom[0] = 0x5452;
    eeprom[1] = 0x1200;
    eeprom[2] = 0x5634;
    Rc::new(RefCell::new(State {
        regs: HashMap::new(),
        mem: PhysMem::new(0x20_0000),
        eeprom,
        eeprom_dead: false,
        reset_reads: 0,
        sent: Vec::new(),
        inbound: VecDeque::new(),
        rx_error_next: 0,
        rx_split: None,
        link_up: true,
        msix: false,
        doorbells: 0,
        reset_mac_only: false,
    }))
}

impl State {
    fn r(&self, o: usize) -> u32 {
        self.regs.get(&o).copied().unwrap_or(0)
    }
    pub fn read(&self, addr: u64, out: &mut [u8]) {
        self.mem.read(addr, out)
    }
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        self.mem.write(addr, data)
    }
    fn ring(&self, lo: usize, hi: usize) -> u64 {
        self.r(lo) as u64 | (self.r(hi) as u64) << 32
    }
    fn process_tx(&mut self) {
        let base = self.ring(reg::TDBAL, reg::TDBAH);
        let n = self.r(reg::TDLEN) as usize / 16;
        let mut head = self.r(reg::TDH) as usize;
        let tail = self.r(reg::TDT) as usize;
        while head != tail {
            let at = base + (head * 16) as u64;
            let mut d = [0u8; 16];
            self.read(at, &mut d);
            let addr = u64::from_le_bytes(d[..8].try_into().unwrap());
            let len = u16::from_le_bytes([d[8], d[9]]) as usize;
            let mut f = vec![0u8; len];
            self.read(addr, &mut f);
            self.sent.push((f, d[10], d[11], d[13]));
            d[12] |= 1; // DD
            self.write(at, &d);
            head = (head + 1) % n;
        }
        self.regs.insert(reg::TDH, head as u32);
        let icr = self.r(reg::ICR) | reg::ICR_TXDW;
        self.regs.insert(reg::ICR, icr);
    }
    /// Place queued inbound frames into free receive descriptors.
    pub fn deliver(&mut self) {
        let base = self.ring(reg::RDBAL, reg::RDBAH);
        let n = self.r(reg::RDLEN) as usize / 16;
        if self.r(reg::RCTL) & reg::RCTL_EN == 0 || n == 0 {
            return;
        }
        while let Some(frame) = self.inbound.front().cloned() {
            let chunk = self.rx_split.unwrap_or(2048);
            let pieces: Vec<&[u8]> = frame.chunks(chunk).collect();
            let mut head = self.r(reg::RDH) as usize;
            let tail = self.r(reg::RDT) as usize;
            let free = (tail + n - head) % n;
            if free < pieces.len() {
                return;
            }
            self.inbound.pop_front();
            let err = std::mem::take(&mut self.rx_error_next);
            for (k, p) in pieces.iter().enumerate() {
                let at = base + (head * 16) as u64;
                let mut d = [0u8; 16];
                self.read(at, &mut d);
                let addr = u64::from_le_bytes(d[..8].try_into().unwrap());
                self.write(addr, p);
                let status = 1 | if k + 1 == pieces.len() { 2 } else { 0 };
                if self.r(reg::RFCTL) & reg::RFCTL_EXTEN != 0 {
                    // Extended write-back: status and errors in bytes 8-11, the length
                    // in 12-13 (what a legacy reader takes for its status).
                    d = [0u8; 16];
                    d[8] = status;
                    d[11] = err;
                    d[12..14].copy_from_slice(&(p.len() as u16).to_le_bytes());
                } else {
                    d[8..10].copy_from_slice(&(p.len() as u16).to_le_bytes());
                    d[12] = status;
                    d[13] = err;
                }
                self.write(at, &d);
                head = (head + 1) % n;
            }
            self.regs.insert(reg::RDH, head as u32);
        }
    }
    /// Write a raw descriptor at RDH as the device would (for impossible values).
    pub fn deliver_raw(&mut self, len: u16, status: u8, errors: u8) {
        let base = self.ring(reg::RDBAL, reg::RDBAH);
        let n = self.r(reg::RDLEN) as usize / 16;
        let head = self.r(reg::RDH) as usize;
        let at = base + (head * 16) as u64;
        let mut d = [0u8; 16];
        self.read(at, &mut d);
        d[8..10].copy_from_slice(&len.to_le_bytes());
        d[12] = status;
        d[13] = errors;
        self.write(at, &d);
        self.regs.insert(reg::RDH, ((head + 1) % n) as u32);
    }
}

pub struct Regs(pub Shared);

impl Mmio for Regs {
    fn read32(&self, o: usize) -> u32 {
        let mut s = self.0.borrow_mut();
        match o {
            reg::CTRL => {
                let v = s.r(reg::CTRL);
                if v & reg::CTRL_RST != 0 {
                    s.reset_reads += 1;
                    if s.reset_reads > 2 {
                        let mac = s.eeprom;
                        if s.reset_mac_only {
                            s.regs.insert(reg::CTRL, v & !reg::CTRL_RST);
                        } else {
                            s.regs.clear();
                        }
                        s.regs
                            .insert(reg::RAL0, mac[0] as u32 | (mac[1] as u32) << 16);
                        s.regs.insert(reg::RAH0, mac[2] as u32 | reg::RAH_AV);
                        return 0;
                    }
                }
                v
            }
            reg::STATUS => {
                if s.link_up && s.r(reg::CTRL) & reg::CTRL_SLU != 0 {
                    reg::STATUS_LU | (2 << 6) | 1
                } else {
                    0
                }
            }
            reg::ICR if s.msix => s.r(reg::ICR),
            reg::ICR => s.regs.remove(&reg::ICR).unwrap_or(0),
            _ => s.r(o),
        }
    }
    fn write32(&self, o: usize, v: u32) {
        let mut s = self.0.borrow_mut();
        match o {
            reg::EERD => {
                let w = ((v >> 2) & 0x3fff) as usize;
                let r = if s.eeprom_dead {
                    0
                } else {
                    (s.eeprom.get(w).copied().unwrap_or(0) as u32) << 16 | reg::EERD_DONE
                };
                s.regs.insert(reg::EERD, r);
            }
            reg::CTRL if v & reg::CTRL_RST != 0 => {
                s.reset_reads = 0;
                s.regs.insert(reg::CTRL, v);
            }
            reg::TDT => {
                s.doorbells += 1;
                s.regs.insert(reg::TDT, v);
                s.process_tx();
            }
            reg::ICR => {
                let icr = s.r(reg::ICR) & !v;
                s.regs.insert(reg::ICR, icr);
            }
            reg::IMC => {
                let ims = s.r(reg::IMS) & !v;
                s.regs.insert(reg::IMS, ims);
            }
            reg::IMS => {
                let ims = s.r(reg::IMS) | v;
                s.regs.insert(reg::IMS, ims);
            }
            _ => {
                s.regs.insert(o, v);
            }
        }
    }
}

bulkhead_hw::model_memory!(State, mem);
