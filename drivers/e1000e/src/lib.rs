//! The Intel 82574L Gigabit Ethernet controller (QEMU `-device e1000e`), per Intel's
//! 82574 datasheet: device reset, the MAC address from the EEPROM (EERD), legacy receive
//! and transmit descriptor rings, interrupt causes and throttling (ITR), unicast/multicast
//! promiscuous modes. Registers through `bulkhead_hw::Mmio`, rings and buffers through
//! `bulkhead_hw::Dma`.
//!
//! The device is not trusted: descriptor lengths are checked against the buffer they
//! describe, frames the device flags with errors or that span descriptors are dropped and
//! counted, and the head index it reports is range-checked.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use bulkhead_hw::{Clock, Dma, Mmio};
use bulkhead_net::{
    Checksum, Counters, Link, MacAddr, Nic, Offloads, TxError, MAX_FRAME, MIN_FRAME,
};

pub const VENDOR_INTEL: u16 = 0x8086;
pub const DEVICE_82574L: u16 = 0x10d3;

pub fn is_e1000e(vendor: u16, device: u16) -> bool {
    vendor == VENDOR_INTEL && device == DEVICE_82574L
}

pub mod reg {
    pub const CTRL: usize = 0x0000;
    pub const STATUS: usize = 0x0008;
    pub const EERD: usize = 0x0014;
    pub const CTRL_EXT: usize = 0x0018;
    pub const EIAC: usize = 0x00dc;
    pub const IAM: usize = 0x00e0;
    pub const ICR: usize = 0x00c0;
    pub const ITR: usize = 0x00c4;
    pub const IMS: usize = 0x00d0;
    pub const IMC: usize = 0x00d8;
    pub const IVAR: usize = 0x00e4;
    pub const EITR0: usize = 0x00e8;
    pub const RCTL: usize = 0x0100;
    pub const TCTL: usize = 0x0400;
    pub const TIPG: usize = 0x0410;
    pub const RDBAL: usize = 0x2800;
    pub const RDBAH: usize = 0x2804;
    pub const RDLEN: usize = 0x2808;
    pub const RDH: usize = 0x2810;
    pub const RDT: usize = 0x2818;
    pub const RDTR: usize = 0x2820;
    pub const RADV: usize = 0x282c;
    pub const TDBAL: usize = 0x3800;
    pub const TDBAH: usize = 0x3804;
    pub const TDLEN: usize = 0x3808;
    pub const TDH: usize = 0x3810;
    pub const TDT: usize = 0x3818;
    pub const RXCSUM: usize = 0x5000;
    pub const RFCTL: usize = 0x5008;
    pub const MTA: usize = 0x5200;
    pub const MRQC: usize = 0x5818;
    pub const RAL0: usize = 0x5400;
    pub const RAH0: usize = 0x5404;

    pub const CTRL_SLU: u32 = 1 << 6;
    pub const CTRL_RST: u32 = 1 << 26;
    /// Interrupt auto-masking (IAM, EIAC): off, so a cause stays enabled until masked.
    pub const CTRL_EXT_EIAME: u32 = 1 << 24;
    pub const CTRL_EXT_IAME: u32 = 1 << 27;
    /// Extended receive descriptors (Linux's e1000e sets it): off, legacy descriptors.
    pub const RFCTL_EXTEN: u32 = 1 << 15;
    /// What a previous owner may have configured and QEMU's CTRL.RST keeps: extended or
    /// split receive descriptors, receive-side scaling, checksum fields in the
    /// descriptors, interrupt delays and auto-masking. The driver zeroes each at start.
    pub const ZEROED_AT_START: [usize; 7] = [RFCTL, RXCSUM, MRQC, RDTR, RADV, IAM, EIAC];
    pub const STATUS_LU: u32 = 1 << 1;
    pub const EERD_START: u32 = 1;
    pub const EERD_DONE: u32 = 1 << 1;
    pub const RCTL_EN: u32 = 1 << 1;
    pub const RCTL_UPE: u32 = 1 << 3;
    pub const RCTL_MPE: u32 = 1 << 4;
    pub const RCTL_BAM: u32 = 1 << 15;
    pub const RCTL_SECRC: u32 = 1 << 26;
    pub const TCTL_EN: u32 = 1 << 1;
    pub const TCTL_PSP: u32 = 1 << 3;
    pub const RAH_AV: u32 = 1 << 31;
    pub const ICR_TXDW: u32 = 1 << 0;
    pub const ICR_LSC: u32 = 1 << 2;
    pub const ICR_RXDMT0: u32 = 1 << 4;
    pub const ICR_RXO: u32 = 1 << 6;
    pub const ICR_RXT0: u32 = 1 << 7;
    pub const ICR_RXQ0: u32 = 1 << 20;
    pub const ICR_TXQ0: u32 = 1 << 22;
    pub const ICR_OTHER: u32 = 1 << 24;
    /// IVAR: receive queues 0 and 1, transmit queues 0 and 1 and "other" (link, overrun)
    /// all to MSI-X entry 0; each field is 3 bits of entry plus a valid bit.
    pub const IVAR_ALL_TO_ENTRY0: u32 = 0x8 | 0x8 << 4 | 0x8 << 8 | 0x8 << 12 | 0x8 << 16;
}

/// Legacy descriptor bits.
pub mod desc {
    pub const RX_DD: u8 = 1 << 0;
    pub const RX_EOP: u8 = 1 << 1;
    /// Receive errors: CRC/alignment, symbol, sequence, carrier extension, TCP/UDP and IP
    /// checksum, RX data error. Checksum errors are left to the stack (it verifies).
    pub const RX_ERR_FATAL: u8 = 0x01 | 0x02 | 0x04 | 0x10 | 0x80;
    pub const TX_EOP: u8 = 1 << 0;
    pub const TX_IFCS: u8 = 1 << 1;
    pub const TX_IC: u8 = 1 << 2;
    pub const TX_RS: u8 = 1 << 3;
    pub const TX_DD: u8 = 1 << 0;
}

pub const DESC_SIZE: usize = 16;
pub const RING: usize = 256;
pub const BUF_SIZE: usize = 2048;
/// Interrupt throttling: at most ~8000 interrupts/s (ITR counts 256 ns units).
pub const ITR_INTERVAL: u32 = 488;
/// How long a device may still signal after its interrupts were masked: one throttle
/// interval (ITR/EITR, at most ~128 µs as set here and as QEMU clamps them) with margin.
/// Switching the interrupt mode (MSI-X on or off) only once this has passed matters to
/// QEMU 7.2's model, which aborts the whole VM if a throttle timer armed in one mode
/// fires in the other; a hypervisor switches it when the domain owning the NIC starts,
/// dies or is destroyed.
pub const QUIET_AFTER_MASK_US: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    ResetTimeout,
    NoMemory,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::ResetTimeout => write!(f, "device reset did not complete"),
            Error::NoMemory => write!(f, "out of DMA memory"),
        }
    }
}

impl From<bulkhead_hw::NoMemory> for Error {
    fn from(_: bulkhead_hw::NoMemory) -> Error {
        Error::NoMemory
    }
}

pub struct E1000e<M: Mmio, D: Dma> {
    regs: M,
    dma: D,
    mac: MacAddr,
    /// Where the MAC came from ("EEPROM" or "RAL/RAH").
    pub mac_source: &'static str,
    rx_ring: u64,
    tx_ring: u64,
    /// One buffer per descriptor: receive buffers, then transmit buffers.
    bufs: u64,
    rx_next: usize,
    /// Receive frame spanning descriptors: drop until its end.
    rx_discarding: bool,
    tx_tail: usize,
    tx_clean: usize,
    promiscuous: bool,
    /// Signalling through MSI-X (see [`E1000e::use_msix`]).
    msix: bool,
    counters: Counters,
    /// The latest thing the device did wrong.
    pub last_error: Option<&'static str>,
}

impl<M: Mmio, D: Dma> E1000e<M, D> {
    pub fn new(regs: M, mut dma: D, clock: &mut impl Clock) -> Result<Self, Error> {
        // Receive and transmit off before anything else: a previous owner's rings point
        // into its memory, which is this domain's now.
        quiesce(&regs);
        regs.write32(reg::CTRL, regs.read32(reg::CTRL) | reg::CTRL_RST);
        clock.pause(1000);
        let start = clock.now_us();
        while regs.read32(reg::CTRL) & reg::CTRL_RST != 0 {
            if clock.now_us() - start > 100_000 {
                return Err(Error::ResetTimeout);
            }
            clock.pause(100);
        }
        regs.write32(reg::IMC, !0);
        regs.read32(reg::ICR);
        // What a previous owner configured and a reset may leave (QEMU's CTRL.RST reloads
        // only the MAC address). Left as Linux's driver leaves them, this driver's legacy
        // descriptors would never show a received frame as done.
        for r in reg::ZEROED_AT_START {
            regs.write32(r, 0);
        }
        regs.write32(
            reg::CTRL_EXT,
            regs.read32(reg::CTRL_EXT) & !(reg::CTRL_EXT_IAME | reg::CTRL_EXT_EIAME),
        );

        let (mac, mac_source) = match read_mac_eeprom(&regs, clock) {
            Some(m) => (m, "EEPROM"),
            None => {
                let lo = regs.read32(reg::RAL0).to_le_bytes();
                let hi = regs.read32(reg::RAH0).to_le_bytes();
                (
                    MacAddr([lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]]),
                    "RAL/RAH",
                )
            }
        };
        let m = mac.0;
        regs.write32(reg::RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        regs.write32(
            reg::RAH0,
            u16::from_le_bytes([m[4], m[5]]) as u32 | reg::RAH_AV,
        );
        for i in 0..128 {
            regs.write32(reg::MTA + 4 * i, 0);
        }

        let rx_ring = dma.alloc(RING * DESC_SIZE)?;
        let tx_ring = dma.alloc(RING * DESC_SIZE)?;
        let bufs = dma.alloc(2 * RING * BUF_SIZE)?;
        for i in 0..RING {
            let mut d = [0u8; DESC_SIZE];
            d[..8].copy_from_slice(&(bufs + (i * BUF_SIZE) as u64).to_le_bytes());
            dma.write(rx_ring + (i * DESC_SIZE) as u64, &d);
        }
        dma.barrier();
        regs.write32(reg::RDBAL, rx_ring as u32);
        regs.write32(reg::RDBAH, (rx_ring >> 32) as u32);
        regs.write32(reg::RDLEN, (RING * DESC_SIZE) as u32);
        regs.write32(reg::RDH, 0);
        regs.write32(reg::RDT, (RING - 1) as u32);
        regs.write32(reg::TDBAL, tx_ring as u32);
        regs.write32(reg::TDBAH, (tx_ring >> 32) as u32);
        regs.write32(reg::TDLEN, (RING * DESC_SIZE) as u32);
        regs.write32(reg::TDH, 0);
        regs.write32(reg::TDT, 0);
        regs.write32(reg::TIPG, 0x0060_200a);
        regs.write32(
            reg::TCTL,
            reg::TCTL_EN | reg::TCTL_PSP | (0x0f << 4) | (0x3f << 12),
        );
        let nic = E1000e {
            regs,
            dma,
            mac,
            mac_source,
            rx_ring,
            tx_ring,
            bufs,
            rx_next: 0,
            rx_discarding: false,
            tx_tail: 0,
            tx_clean: 0,
            promiscuous: false,
            msix: false,
            counters: Counters::default(),
            last_error: None,
        };
        nic.program_rctl();
        nic.regs
            .write32(reg::CTRL, nic.regs.read32(reg::CTRL) | reg::CTRL_SLU);
        nic.regs.write32(reg::ITR, ITR_INTERVAL);
        nic.regs.write32(
            reg::IMS,
            reg::ICR_RXT0 | reg::ICR_RXO | reg::ICR_RXDMT0 | reg::ICR_TXDW | reg::ICR_LSC,
        );
        Ok(nic)
    }

    fn program_rctl(&self) {
        let mut r = reg::RCTL_EN | reg::RCTL_BAM | reg::RCTL_SECRC; // 2048-byte buffers
        if self.promiscuous {
            r |= reg::RCTL_UPE | reg::RCTL_MPE;
        }
        self.regs.write32(reg::RCTL, r);
    }

    /// Signal through MSI-X entry 0 (once the caller has enabled MSI-X): every cause maps
    /// to it, throttled like ITR. Preferred over MSI because the 82574's MSI has no
    /// per-vector mask, which a hypervisor can only handle by holding the CPU's interrupt
    /// priority until the guest acknowledges (Xen does, for a passed-through device).
    pub fn use_msix(&mut self) {
        self.msix = true;
        // ITR throttles only MSI/INTx (EITR does here).
        self.regs.write32(reg::ITR, 0);
        self.regs.write32(reg::IVAR, reg::IVAR_ALL_TO_ENTRY0);
        self.regs.write32(reg::EITR0, ITR_INTERVAL);
        self.regs.write32(
            reg::IMS,
            reg::ICR_RXQ0 | reg::ICR_TXQ0 | reg::ICR_OTHER | reg::ICR_RXO | reg::ICR_LSC,
        );
    }

    /// Read and clear the interrupt causes; nonzero when this device interrupted. Under
    /// MSI-X the register is not read-to-clear: the causes read are written back.
    pub fn ack_interrupt(&self) -> u32 {
        let causes = self.regs.read32(reg::ICR);
        if self.msix && causes != 0 {
            self.regs.write32(reg::ICR, causes);
        }
        causes
    }

    fn rx_buf(&self, i: usize) -> u64 {
        self.bufs + (i * BUF_SIZE) as u64
    }

    fn tx_buf(&self, i: usize) -> u64 {
        self.bufs + ((RING + i) * BUF_SIZE) as u64
    }

    fn reclaim_tx(&mut self) {
        while self.tx_clean != self.tx_tail {
            let at = self.tx_ring + (self.tx_clean * DESC_SIZE) as u64;
            let mut st = [0u8; 1];
            self.dma.read(at + 12, &mut st);
            if st[0] & desc::TX_DD == 0 {
                break;
            }
            self.tx_clean = (self.tx_clean + 1) % RING;
        }
    }

    /// No free transmit descriptor even after reclaiming finished ones.
    fn tx_ring_full(&mut self) -> bool {
        if (self.tx_tail + 1) % RING == self.tx_clean {
            self.reclaim_tx();
        }
        (self.tx_tail + 1) % RING == self.tx_clean
    }

    /// Fill the next transmit descriptor; the device sees it at the next TDT write.
    fn queue(&mut self, parts: &[&[u8]], csum: Checksum) -> Result<(), TxError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if !(MIN_FRAME..=MAX_FRAME).contains(&len) {
            self.counters.tx_errors += 1;
            return Err(TxError::BadLength(len));
        }
        let (css, cso, ic) = match csum {
            Checksum::None => (0u8, 0u8, 0u8),
            Checksum::Partial { start, offset } => {
                match (
                    u8::try_from(start),
                    u8::try_from(start as usize + offset as usize),
                ) {
                    (Ok(s), Ok(o)) if (o as usize) + 2 <= len => (s, o, desc::TX_IC),
                    _ => {
                        self.counters.tx_errors += 1;
                        return Err(TxError::BadLength(len));
                    }
                }
            }
        };
        if (self.tx_tail + 1) % RING == self.tx_clean {
            self.reclaim_tx();
            if (self.tx_tail + 1) % RING == self.tx_clean {
                self.counters.tx_dropped += 1;
                return Err(TxError::Full);
            }
        }
        let i = self.tx_tail;
        let buf = self.tx_buf(i);
        let mut at = buf;
        for p in parts {
            self.dma.write(at, p);
            at += p.len() as u64;
        }
        let mut d = [0u8; DESC_SIZE];
        d[..8].copy_from_slice(&buf.to_le_bytes());
        d[8..10].copy_from_slice(&(len as u16).to_le_bytes());
        d[10] = cso;
        d[11] = desc::TX_EOP | desc::TX_IFCS | desc::TX_RS | ic;
        d[13] = css;
        self.dma.write(self.tx_ring + (i * DESC_SIZE) as u64, &d);
        self.dma.barrier();
        self.tx_tail = (i + 1) % RING;
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += len as u64;
        Ok(())
    }

    /// Stop the device and give its memory back; returns once a throttled interrupt can
    /// no longer follow (so the hypervisor may switch MSI-X off as the domain leaves).
    pub fn shutdown(mut self, clock: &mut impl Clock) {
        quiesce(&self.regs);
        self.regs
            .write32(reg::CTRL, self.regs.read32(reg::CTRL) | reg::CTRL_RST);
        clock.pause(QUIET_AFTER_MASK_US);
        self.dma.free(self.rx_ring, RING * DESC_SIZE);
        self.dma.free(self.tx_ring, RING * DESC_SIZE);
        self.dma.free(self.bufs, 2 * RING * BUF_SIZE);
    }
}

/// Silence a device in whatever state a previous owner left it (a destroyed or crashed
/// domain leaves it receiving, with causes pending and interrupts unmasked): no more
/// interrupts, receive or transmit. A software reset is not enough for that on QEMU's
/// model, whose CTRL.RST only reloads the MAC address. Wait [`QUIET_AFTER_MASK_US`]
/// before changing the interrupt mode. Safe to call from a panic: registers only.
pub fn quiesce(regs: &impl Mmio) {
    regs.write32(reg::IMC, !0);
    regs.write32(reg::RCTL, 0);
    regs.write32(reg::TCTL, 0);
    regs.read32(reg::ICR);
}

/// Words 0-2 of the EEPROM through EERD; None if the EEPROM does not answer or holds no
/// usable address.
fn read_mac_eeprom(regs: &impl Mmio, clock: &mut impl Clock) -> Option<MacAddr> {
    let mut m = [0u8; 6];
    for w in 0..3u32 {
        regs.write32(reg::EERD, (w << 2) | reg::EERD_START);
        let start = clock.now_us();
        let v = loop {
            let v = regs.read32(reg::EERD);
            if v & reg::EERD_DONE != 0 {
                break v;
            }
            if clock.now_us() - start > 10_000 {
                return None;
            }
            clock.pause(5);
        };
        let word = (v >> 16) as u16;
        m[2 * w as usize..2 * w as usize + 2].copy_from_slice(&word.to_le_bytes());
    }
    let mac = MacAddr(m);
    mac.is_unicast().then_some(mac)
}

impl<M: Mmio, D: Dma> Nic for E1000e<M, D> {
    fn mac(&self) -> MacAddr {
        self.mac
    }

    fn link(&self) -> Link {
        let s = self.regs.read32(reg::STATUS);
        if s & reg::STATUS_LU == 0 {
            return Link::Down;
        }
        let mbps = match (s >> 6) & 3 {
            0 => 10,
            1 => 100,
            _ => 1000,
        };
        Link::Up { mbps }
    }

    fn offloads(&self) -> Offloads {
        Offloads { tx_checksum: true }
    }

    fn send(&mut self, parts: &[&[u8]], csum: Checksum) -> Result<(), TxError> {
        self.queue(parts, csum)?;
        self.regs.write32(reg::TDT, self.tx_tail as u32);
        Ok(())
    }

    /// One TDT write for the whole batch, or one more each time the ring fills up (the
    /// device must take what is queued before its descriptors come back).
    fn send_frames(&mut self, frames: &[&[u8]]) -> usize {
        let mut told = self.tx_tail;
        let mut failed = 0;
        for f in frames {
            if self.tx_tail != told && self.tx_ring_full() {
                self.regs.write32(reg::TDT, self.tx_tail as u32);
                told = self.tx_tail;
            }
            failed += self.queue(&[f], Checksum::None).is_err() as usize;
        }
        if self.tx_tail != told {
            self.regs.write32(reg::TDT, self.tx_tail as u32);
        }
        failed
    }

    fn receive(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
        self.reclaim_tx();
        let mut delivered = 0;
        let mut last = None;
        for _ in 0..RING {
            let at = self.rx_ring + (self.rx_next * DESC_SIZE) as u64;
            let mut d = [0u8; DESC_SIZE];
            self.dma.read(at, &mut d);
            let status = d[12];
            if status & desc::RX_DD == 0 {
                break;
            }
            self.dma.barrier();
            let len = u16::from_le_bytes([d[8], d[9]]) as usize;
            let errors = d[13];
            let eop = status & desc::RX_EOP != 0;
            let i = self.rx_next;
            if self.rx_discarding || !eop {
                // Part of a frame larger than one buffer (we never enable long packets).
                if !self.rx_discarding {
                    self.counters.rx_errors += 1;
                }
                self.rx_discarding = !eop;
            } else if errors & desc::RX_ERR_FATAL != 0 {
                self.counters.rx_errors += 1;
            } else if !(MIN_FRAME..=BUF_SIZE.min(MAX_FRAME)).contains(&len) {
                self.counters.rx_errors += 1;
                self.last_error = Some("receive descriptor with an impossible length");
            } else {
                let mut frame: Vec<u8> = alloc::vec![0u8; len];
                self.dma.read(self.rx_buf(i), &mut frame);
                self.counters.rx_frames += 1;
                self.counters.rx_bytes += len as u64;
                f(&frame);
                delivered += 1;
            }
            // Give the descriptor back: buffer address, cleared status.
            let mut nd = [0u8; DESC_SIZE];
            nd[..8].copy_from_slice(&self.rx_buf(i).to_le_bytes());
            self.dma.write(at, &nd);
            last = Some(i);
            self.rx_next = (i + 1) % RING;
        }
        if let Some(i) = last {
            self.dma.barrier();
            self.regs.write32(reg::RDT, i as u32);
        }
        delivered
    }

    fn set_promiscuous(&mut self, on: bool) {
        self.promiscuous = on;
        self.program_rctl();
    }

    fn counters(&self) -> Counters {
        self.counters
    }
}
