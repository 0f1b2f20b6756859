//! The common configuration structure (virtio 1.1, 4.1.4.3): device status, feature
//! negotiation and queue setup.

use bulkhead_hw::{Clock, Mmio};

use crate::{Error, F_VERSION_1};

pub mod reg {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0c;
    pub const MSIX_CONFIG: usize = 0x10;
    pub const NUM_QUEUES: usize = 0x12;
    pub const DEVICE_STATUS: usize = 0x14;
    pub const CONFIG_GENERATION: usize = 0x15;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    pub const QUEUE_ENABLE: usize = 0x1c;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
}

pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// "No MSI-X vector" for msix_config / queue_msix_vector.
pub const NO_VECTOR: u16 = 0xffff;

pub struct Transport<M: Mmio> {
    pub common: M,
    pub notify: M,
    pub notify_multiplier: u32,
    pub isr: M,
    pub device: M,
}

impl<M: Mmio> Transport<M> {
    pub fn status(&self) -> u8 {
        self.common.read8(reg::DEVICE_STATUS)
    }

    fn set_status(&self, s: u8) {
        self.common.write8(reg::DEVICE_STATUS, s);
    }

    /// Reset (write 0, wait until it reads back 0), acknowledge, and negotiate: the
    /// device must offer VERSION_1 and every bit of `required`; we take `wanted` where
    /// offered. Returns the accepted features.
    pub fn negotiate(
        &self,
        clock: &mut impl Clock,
        required: u64,
        wanted: u64,
    ) -> Result<u64, Error> {
        self.set_status(0);
        let start = clock.now_us();
        while self.status() != 0 {
            if clock.now_us() - start > 1_000_000 {
                return Err(Error::Device("reset did not complete"));
            }
            clock.pause(100);
        }
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        let mut offered = 0u64;
        for half in 0..2u32 {
            self.common.write32(reg::DEVICE_FEATURE_SELECT, half);
            offered |= (self.common.read32(reg::DEVICE_FEATURE) as u64) << (32 * half);
        }
        let need = required | F_VERSION_1;
        if offered & need != need {
            self.fail();
            return Err(if offered & F_VERSION_1 == 0 {
                Error::Unsupported("no VIRTIO_F_VERSION_1 (legacy-only device)")
            } else {
                Error::Unsupported("a required feature is missing")
            });
        }
        let accepted = offered & (need | wanted);
        for half in 0..2u32 {
            self.common.write32(reg::DRIVER_FEATURE_SELECT, half);
            self.common
                .write32(reg::DRIVER_FEATURE, (accepted >> (32 * half)) as u32);
        }
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        if self.status() & status::FEATURES_OK == 0 {
            self.fail();
            return Err(Error::FeaturesRefused);
        }
        Ok(accepted)
    }

    pub fn num_queues(&self) -> u16 {
        self.common.read16(reg::NUM_QUEUES)
    }

    /// The device's maximum size for queue `q` (0: no such queue).
    pub fn queue_max(&self, q: u16) -> u16 {
        self.common.write16(reg::QUEUE_SELECT, q);
        self.common.read16(reg::QUEUE_SIZE)
    }

    /// Program and enable queue `q`; returns its notification register offset.
    pub fn setup_queue(
        &self,
        q: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
        vector: u16,
    ) -> Result<usize, Error> {
        let c = &self.common;
        c.write16(reg::QUEUE_SELECT, q);
        c.write16(reg::QUEUE_SIZE, size);
        c.write64(reg::QUEUE_DESC, desc);
        c.write64(reg::QUEUE_DRIVER, driver);
        c.write64(reg::QUEUE_DEVICE, device);
        c.write16(reg::QUEUE_MSIX_VECTOR, vector);
        if vector != NO_VECTOR && c.read16(reg::QUEUE_MSIX_VECTOR) != vector {
            return Err(Error::Device("queue MSI-X vector not accepted"));
        }
        let off = c.read16(reg::QUEUE_NOTIFY_OFF) as usize * self.notify_multiplier as usize;
        c.write16(reg::QUEUE_ENABLE, 1);
        Ok(off)
    }

    pub fn set_config_vector(&self, vector: u16) {
        self.common.write16(reg::MSIX_CONFIG, vector);
    }

    pub fn driver_ok(&self) {
        let s = self.status();
        self.set_status(s | status::DRIVER_OK);
    }

    pub fn fail(&self) {
        let s = self.status();
        self.set_status(s | status::FAILED);
    }

    pub fn reset(&self) {
        self.set_status(0);
    }

    /// Tell the device about new buffers in queue `q` (notify offset from `setup_queue`).
    pub fn notify(&self, off: usize, q: u16) {
        self.notify.write16(off, q);
    }

    /// Read and clear the ISR status (for INTx): bit 0 queue, bit 1 configuration.
    pub fn isr(&self) -> u8 {
        self.isr.read8(0)
    }
}
