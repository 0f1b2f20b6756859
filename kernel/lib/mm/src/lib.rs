//! Memory management logic with no hardware access: the physical frame allocator and the
//! x86-64 page-table walker. The kernel supplies the memory they operate on (a bitmap
//! slice, a [`paging::TableMemory`] that reads and writes page-table frames), so the same
//! code runs under `cargo test` against plain buffers.
#![no_std]
#![forbid(unsafe_code)]

pub mod frames;
pub mod paging;

pub const PAGE_SIZE: u64 = 4096;
pub const HUGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

pub const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

pub const fn align_down(x: u64, a: u64) -> u64 {
    x & !(a - 1)
}
