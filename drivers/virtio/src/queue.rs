//! Split virtqueues (virtio 1.1, 2.6): a descriptor table, the driver's available ring and
//! the device's used ring, in one DMA allocation.
//!
//! Which descriptors make up each chain is remembered here, not re-read from the table:
//! the device can write the table, and a used entry naming an id we did not hand out (or
//! one already returned) is refused.

use alloc::vec;
use alloc::vec::Vec;

use bulkhead_hw::Dma;

use crate::Error;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
const DESC_SIZE: u64 = 16;

/// One buffer of a chain: physical address, length, whether the device writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

pub struct SplitQueue {
    pub index: u16,
    size: u16,
    base: u64,
    bytes: usize,
    avail: u64,
    used: u64,
    free: Vec<u16>,
    /// Per head id: the descriptors of its chain, while the device owns it.
    chains: Vec<Option<Vec<u16>>>,
    avail_idx: u16,
    last_used: u16,
    pub notify_off: usize,
}

/// Ring layout for `size` entries: (avail offset, used offset, total bytes).
pub fn layout(size: u16) -> (u64, u64, usize) {
    let n = size as u64;
    let avail = n * DESC_SIZE;
    let used = (avail + 6 + 2 * n).next_multiple_of(4);
    (avail, used, (used + 6 + 8 * n) as usize)
}

impl SplitQueue {
    /// Allocate a queue of `size` entries (a power of two).
    pub fn new(dma: &mut impl Dma, index: u16, size: u16) -> Result<SplitQueue, Error> {
        if size == 0 || !size.is_power_of_two() {
            return Err(Error::Device("queue size is not a power of two"));
        }
        let (avail, used, bytes) = layout(size);
        let base = dma.alloc(bytes)?;
        Ok(SplitQueue {
            index,
            size,
            base,
            bytes,
            avail: base + avail,
            used: base + used,
            free: (0..size).rev().collect(),
            chains: vec![None; size as usize],
            avail_idx: 0,
            last_used: 0,
            notify_off: 0,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Physical addresses of (descriptor table, available ring, used ring).
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.base, self.avail, self.used)
    }

    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Chains the device holds.
    pub fn outstanding(&self) -> usize {
        self.chains.iter().filter(|c| c.is_some()).count()
    }

    /// Put a chain on the available ring (visible to the device after [`Self::publish`]).
    /// Returns its head id, or None when there are not enough free descriptors.
    pub fn add(&mut self, dma: &impl Dma, bufs: &[Buffer]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return None;
        }
        let ids: Vec<u16> = (0..bufs.len()).map(|_| self.free.pop().unwrap()).collect();
        for (i, b) in bufs.iter().enumerate() {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&b.addr.to_le_bytes());
            d[8..12].copy_from_slice(&b.len.to_le_bytes());
            let mut flags = if b.device_writes { DESC_F_WRITE } else { 0 };
            let next = if i + 1 < ids.len() {
                flags |= DESC_F_NEXT;
                ids[i + 1]
            } else {
                0
            };
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            dma.write(self.base + ids[i] as u64 * DESC_SIZE, &d);
        }
        let head = ids[0];
        let slot = self.avail + 4 + 2 * (self.avail_idx % self.size) as u64;
        dma.write(slot, &head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.chains[head as usize] = Some(ids);
        Some(head)
    }

    /// Make added chains visible: the ring entries before the index that covers them.
    pub fn publish(&self, dma: &impl Dma) {
        dma.barrier();
        dma.write(self.avail + 2, &self.avail_idx.to_le_bytes());
        dma.barrier();
    }

    /// The next chain the device finished: (head id, bytes it wrote).
    pub fn pop_used(&mut self, dma: &impl Dma) -> Result<Option<(u16, u32)>, Error> {
        let mut idx = [0u8; 2];
        dma.read(self.used + 2, &mut idx);
        let idx = u16::from_le_bytes(idx);
        if idx == self.last_used {
            return Ok(None);
        }
        if idx.wrapping_sub(self.last_used) > self.size {
            return Err(Error::Device("used index ran ahead of the ring"));
        }
        dma.barrier();
        let mut e = [0u8; 8];
        let slot = self.used + 4 + 8 * (self.last_used % self.size) as u64;
        dma.read(slot, &mut e);
        self.last_used = self.last_used.wrapping_add(1);
        let id = u32::from_le_bytes(e[..4].try_into().unwrap());
        let len = u32::from_le_bytes(e[4..].try_into().unwrap());
        let chain = usize::try_from(id)
            .ok()
            .and_then(|i| self.chains.get_mut(i))
            .and_then(Option::take)
            .ok_or(Error::Device(
                "used entry names a descriptor we did not hand out",
            ))?;
        self.free.extend(chain);
        Ok(Some((id as u16, len)))
    }

    pub fn release(self, dma: &mut impl Dma) {
        dma.free(self.base, self.bytes);
    }
}
