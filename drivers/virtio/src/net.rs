//! The virtio network device (virtio 1.1, 5.1): one receive and one transmit queue,
//! frames copied through driver-owned buffers (one descriptor per buffer), the MAC from
//! the device configuration, mergeable receive buffers and transmit checksum offload when
//! the device offers them.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use bulkhead_hw::{Clock, Dma, Mmio};
use bulkhead_net::{
    Checksum, Counters, Link, MacAddr, Nic, Offloads, TxError, MAX_FRAME, MIN_FRAME,
};

use crate::queue::{Buffer, SplitQueue};
use crate::transport::{Transport, NO_VECTOR};
use crate::Error;

pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_MAC: u64 = 1 << 5;
pub const F_MRG_RXBUF: u64 = 1 << 15;
pub const F_STATUS: u64 = 1 << 16;

/// `struct virtio_net_hdr` with VERSION_1: always 12 bytes (num_buffers included).
pub const HDR_LEN: usize = 12;
pub const HDR_F_NEEDS_CSUM: u8 = 1;
const STATUS_LINK_UP: u16 = 1;

/// Receive and transmit buffers: a header and the largest frame fit in one.
pub const BUF_SIZE: usize = 2048;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
/// Entries we use per queue (the device may allow more).
const QUEUE_SIZE: u16 = 128;

/// MSI-X vectors (table entries) for configuration changes, receive and transmit; None
/// for INTx.
#[derive(Clone, Copy, Debug)]
pub struct Vectors {
    pub config: u16,
    pub rx: u16,
    pub tx: u16,
}

pub struct VirtioNet<M: Mmio, D: Dma> {
    t: Transport<M>,
    dma: D,
    pub features: u64,
    mac: MacAddr,
    rx: SplitQueue,
    tx: SplitQueue,
    /// Buffer behind each receive / in-flight transmit head id.
    rx_buf: BTreeMap<u16, u64>,
    tx_buf: BTreeMap<u16, u64>,
    tx_free: Vec<u64>,
    pool: (u64, usize),
    /// A frame arriving in several mergeable buffers, and how many are still to come.
    partial: Option<(Vec<u8>, u16)>,
    counters: Counters,
    /// The latest thing the device did wrong (for the kernel to log and act on).
    pub last_error: Option<Error>,
}

impl<M: Mmio, D: Dma> VirtioNet<M, D> {
    pub fn new(
        t: Transport<M>,
        mut dma: D,
        clock: &mut impl Clock,
        vectors: Option<Vectors>,
    ) -> Result<Self, Error> {
        let features = t.negotiate(clock, 0, F_MAC | F_MRG_RXBUF | F_CSUM | F_STATUS)?;
        if t.num_queues() < 2 {
            t.fail();
            return Err(Error::Unsupported("fewer than two queues"));
        }
        let mac = if features & F_MAC != 0 {
            let mut m = [0u8; 6];
            for (i, b) in m.iter_mut().enumerate() {
                *b = t.device.read8(i);
            }
            MacAddr(m)
        } else {
            // Locally administered, fixed: better than none; the log names it.
            MacAddr([0x02, 0xb4, 0x1c, 0x00, 0x00, 0x01])
        };
        let queue = |dma: &mut D, index: u16, vector: u16| -> Result<SplitQueue, Error> {
            let max = t.queue_max(index);
            if max == 0 {
                return Err(Error::Unsupported("queue missing"));
            }
            let size = QUEUE_SIZE.min(1 << (15 - max.leading_zeros().min(15)));
            let mut q = SplitQueue::new(dma, index, size)?;
            let (d, a, u) = q.addresses();
            q.notify_off = t.setup_queue(index, size, d, a, u, vector)?;
            Ok(q)
        };
        let v = vectors.unwrap_or(Vectors {
            config: NO_VECTOR,
            rx: NO_VECTOR,
            tx: NO_VECTOR,
        });
        t.set_config_vector(v.config);
        let rx = queue(&mut dma, RX_QUEUE, v.rx)?;
        let tx = queue(&mut dma, TX_QUEUE, v.tx)?;
        let n = (rx.size() + tx.size()) as usize;
        let pool_bytes = n * BUF_SIZE;
        let pool = dma.alloc(pool_bytes)?;
        let mut nic = VirtioNet {
            t,
            dma,
            features,
            mac,
            rx,
            tx,
            rx_buf: BTreeMap::new(),
            tx_buf: BTreeMap::new(),
            tx_free: Vec::new(),
            pool: (pool, pool_bytes),
            partial: None,
            counters: Counters::default(),
            last_error: None,
        };
        let rx_n = nic.rx.size() as u64;
        for i in 0..rx_n {
            nic.post_rx(pool + i * BUF_SIZE as u64);
        }
        nic.tx_free = (rx_n..n as u64)
            .map(|i| pool + i * BUF_SIZE as u64)
            .collect();
        nic.rx.publish(&nic.dma);
        nic.t.driver_ok();
        nic.t.notify(nic.rx.notify_off, RX_QUEUE);
        Ok(nic)
    }

    fn post_rx(&mut self, buf: u64) {
        let b = Buffer {
            addr: buf,
            len: BUF_SIZE as u32,
            device_writes: true,
        };
        // A free descriptor exists for every buffer we own.
        if let Some(head) = self.rx.add(&self.dma, &[b]) {
            self.rx_buf.insert(head, buf);
        }
    }

    /// For INTx: read (and clear) the ISR; nonzero when this device interrupted.
    pub fn ack_interrupt(&self) -> u8 {
        self.t.isr()
    }

    fn reclaim_tx(&mut self) {
        loop {
            match self.tx.pop_used(&self.dma) {
                Ok(Some((id, _))) => {
                    if let Some(b) = self.tx_buf.remove(&id) {
                        self.tx_free.push(b);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.last_error = Some(e);
                    self.counters.tx_errors += 1;
                    break;
                }
            }
        }
    }

    /// Shut the device down and give its memory back.
    pub fn shutdown(mut self) {
        self.t.reset();
        let (p, n) = self.pool;
        self.dma.free(p, n);
        self.rx.release(&mut self.dma);
        self.tx.release(&mut self.dma);
    }
}

impl<M: Mmio, D: Dma> Nic for VirtioNet<M, D> {
    fn mac(&self) -> MacAddr {
        self.mac
    }

    fn link(&self) -> Link {
        if self.features & F_STATUS != 0 && self.t.device.read16(6) & STATUS_LINK_UP == 0 {
            Link::Down
        } else {
            Link::Up { mbps: 10_000 }
        }
    }

    fn offloads(&self) -> Offloads {
        Offloads {
            tx_checksum: self.features & F_CSUM != 0,
        }
    }

    fn send(&mut self, parts: &[&[u8]], csum: Checksum) -> Result<(), TxError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if !(MIN_FRAME..=MAX_FRAME).contains(&len) {
            self.counters.tx_errors += 1;
            return Err(TxError::BadLength(len));
        }
        if self.tx_free.is_empty() {
            self.reclaim_tx();
        }
        let Some(buf) = self.tx_free.pop() else {
            self.counters.tx_dropped += 1;
            return Err(TxError::Full);
        };
        let mut hdr = [0u8; HDR_LEN];
        match csum {
            Checksum::Partial { start, offset } if self.features & F_CSUM != 0 => {
                hdr[0] = HDR_F_NEEDS_CSUM;
                hdr[6..8].copy_from_slice(&start.to_le_bytes());
                hdr[8..10].copy_from_slice(&offset.to_le_bytes());
            }
            Checksum::Partial { .. } => {
                // The caller asked for an offload we did not advertise.
                self.tx_free.push(buf);
                self.counters.tx_errors += 1;
                return Err(TxError::BadLength(len));
            }
            Checksum::None => {}
        }
        let mut frame = Vec::with_capacity(HDR_LEN + len);
        frame.extend_from_slice(&hdr);
        for p in parts {
            frame.extend_from_slice(p);
        }
        self.dma.write(buf, &frame);
        let b = Buffer {
            addr: buf,
            len: frame.len() as u32,
            device_writes: false,
        };
        match self.tx.add(&self.dma, &[b]) {
            Some(head) => {
                self.tx_buf.insert(head, buf);
                self.tx.publish(&self.dma);
                self.t.notify(self.tx.notify_off, TX_QUEUE);
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += len as u64;
                Ok(())
            }
            None => {
                self.tx_free.push(buf);
                self.counters.tx_dropped += 1;
                Err(TxError::Full)
            }
        }
    }

    fn receive(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
        self.reclaim_tx();
        let mut delivered = 0;
        let mut reposted = false;
        loop {
            let (id, len) = match self.rx.pop_used(&self.dma) {
                Ok(Some(u)) => u,
                Ok(None) => break,
                Err(e) => {
                    self.last_error = Some(e);
                    self.counters.rx_errors += 1;
                    break;
                }
            };
            let Some(buf) = self.rx_buf.remove(&id) else {
                self.counters.rx_errors += 1;
                continue;
            };
            let len = len as usize;
            let mut data = vec![0u8; len.min(BUF_SIZE)];
            self.dma.read(buf, &mut data);
            self.post_rx(buf);
            reposted = true;
            if !(HDR_LEN..=BUF_SIZE).contains(&len) && self.partial.is_none() {
                self.counters.rx_errors += 1;
                continue;
            }
            // The first buffer of a frame starts with the header; mergeable buffers that
            // follow carry only data.
            let (mut frame, left) = match self.partial.take() {
                Some((mut acc, left)) => {
                    acc.extend_from_slice(&data);
                    (acc, left - 1)
                }
                None => {
                    let nbuf = if self.features & F_MRG_RXBUF != 0 {
                        u16::from_le_bytes([data[10], data[11]])
                    } else {
                        1
                    };
                    if nbuf == 0 {
                        self.counters.rx_errors += 1;
                        continue;
                    }
                    (data[HDR_LEN..].to_vec(), nbuf - 1)
                }
            };
            if frame.len() > MAX_FRAME {
                // Dropped; the rest of its buffers still have to be consumed.
                self.counters.rx_errors += 1;
                if left > 0 {
                    frame.clear();
                    self.partial = Some((frame, left));
                }
                continue;
            }
            if left > 0 {
                self.partial = Some((frame, left));
                continue;
            }
            if frame.len() < MIN_FRAME {
                self.counters.rx_errors += 1;
                continue;
            }
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += frame.len() as u64;
            f(&frame);
            delivered += 1;
        }
        if reposted {
            self.rx.publish(&self.dma);
            self.t.notify(self.rx.notify_off, RX_QUEUE);
        }
        delivered
    }

    fn set_promiscuous(&mut self, _on: bool) {
        // Without VIRTIO_NET_F_CTRL_RX the device delivers every frame addressed to the
        // port (QEMU's backends are promiscuous); nothing to program.
    }

    fn counters(&self) -> Counters {
        self.counters
    }
}
