//! virtio 1.x (OASIS virtio v1.1) as a driver domain uses it: the modern PCI transport
//! ([`pci`]: capabilities, [`transport`]: common configuration and status), split
//! virtqueues ([`queue`]) and the network device ([`net`]). No hardware access of its own:
//! registers through `bulkhead_hw::Mmio`, rings and buffers through `bulkhead_hw::Dma`.
//!
//! The device is not trusted: used-ring entries name descriptor ids and lengths that are
//! range-checked before use; a device that misbehaves is reported, never followed.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod net;
pub mod pci;
pub mod queue;
pub mod transport;

/// Feature bits shared by every device type.
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The device lacks something we need (VERSION_1, a capability, a queue).
    Unsupported(&'static str),
    /// The device did not accept our features (FEATURES_OK did not stick).
    FeaturesRefused,
    /// A value from the device is out of range.
    Device(&'static str),
    NoMemory,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Unsupported(w) => write!(f, "unsupported device: {w}"),
            Error::FeaturesRefused => write!(f, "device refused the negotiated features"),
            Error::Device(w) => write!(f, "device misbehaved: {w}"),
            Error::NoMemory => write!(f, "out of DMA memory"),
        }
    }
}

impl From<bulkhead_hw::NoMemory> for Error {
    fn from(_: bulkhead_hw::NoMemory) -> Error {
        Error::NoMemory
    }
}
