//! The NVMe driver's logic, per the NVMe 1.4 base specification, with no hardware access
//! of its own: registers through [`Mmio`], queue and data memory through [`Dma`]. The
//! kernel supplies both (the traits are `bulkhead-hw`'s, shared by every driver: uncached
//! BAR mappings, identity-mapped frames); the tests supply an in-memory controller model
//! (`tests/model.rs`) that executes what the driver submits.
//!
//! A controller is hardware the domain does not trust blindly: every value read back
//! (identify data, completion entries, register fields) is range-checked, and a
//! controller that stops answering produces a timeout error, never a hang.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod batch;
pub mod cmd;
pub mod controller;
pub mod gpt;
pub mod identify;
pub mod owners;
pub mod pool;
pub mod prp;
pub mod queue;
pub mod recovery;
pub mod regs;
pub mod single;

use core::fmt;

pub use bulkhead_hw::{Clock, Dma, Mmio, PAGE_SIZE};

/// NVMe status: status code type and status code (spec 4.6.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub sct: u8,
    pub sc: u8,
    pub dnr: bool,
}

impl Status {
    pub fn describe(&self) -> &'static str {
        match (self.sct, self.sc) {
            (0, 0x01) => "invalid command opcode",
            (0, 0x02) => "invalid field in command",
            (0, 0x04) => "data transfer error",
            (0, 0x06) => "internal error",
            (0, 0x07) => "command abort requested",
            (0, 0x0b) => "invalid namespace or format",
            (0, 0x80) => "LBA out of range",
            (0, 0x81) => "capacity exceeded",
            (0, 0x82) => "namespace not ready",
            (1, 0x01) => "invalid queue identifier",
            (1, 0x02) => "invalid queue size",
            (1, 0x08) => "invalid interrupt vector",
            (2, 0x80) => "write fault",
            (2, 0x81) => "unrecovered read error",
            (2, 0x86) => "access denied",
            _ => "error",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The controller completed the command with an error status.
    Command(Status),
    /// No completion within the timeout.
    Timeout { what: &'static str },
    /// CSTS.CFS: the controller reported a fatal status.
    Fatal,
    /// A value from the controller is out of range (bad identify data, impossible CQE).
    Device(&'static str),
    /// A request the driver refuses (range past the end, misaligned buffer...).
    Invalid(&'static str),
    /// No DMA memory.
    NoMemory,
    /// The submission queue is full.
    QueueFull,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Command(s) => write!(
                f,
                "{} (sct {:#x}, sc {:#x}{})",
                s.describe(),
                s.sct,
                s.sc,
                if s.dnr { ", do not retry" } else { "" }
            ),
            Error::Timeout { what } => write!(f, "timeout waiting for {what}"),
            Error::Fatal => write!(f, "controller fatal status (CSTS.CFS)"),
            Error::Device(w) => write!(f, "controller misbehaved: {w}"),
            Error::Invalid(w) => write!(f, "invalid request: {w}"),
            Error::NoMemory => write!(f, "out of DMA memory"),
            Error::QueueFull => write!(f, "submission queue full"),
        }
    }
}

impl From<bulkhead_hw::NoMemory> for Error {
    fn from(_: bulkhead_hw::NoMemory) -> Error {
        Error::NoMemory
    }
}
