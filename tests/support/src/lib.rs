//! The fakes Bulkhead's host tests and fuzzers share, written once (as rust-vmm ships
//! `MockSplitQueue` beside `virtio-queue`): a seeded xorshift generator ([`XorShift`]),
//! a guest's pages behind grant references ([`GrantPages`]) and a disk in memory
//! ([`MemDisk`]; [`SharedDisk`] for several batches at it at once). Test code only:
//! nothing here is in the kernel, and nothing here checks
//! anything by itself; the tests and fuzzers that use them do.
#![forbid(unsafe_code)]

mod disk;
mod grants;
mod rng;

pub use disk::{MemDisk, SharedDisk};
pub use grants::{Batches, GrantPages, PAGE};
pub use rng::XorShift;
