//! The Xen block backend (blkif, `public/io/blkif.h`), as pure logic: the kernel supplies
//! ring memory, grant copies and a [`bulkhead_block::BlockDevice`]; everything a guest
//! controls is decoded and checked here, where host tests and the randomized request
//! tests reach it.
//!
//! - [`abi`]: constants and the two request layouts (x86_64, x86_32);
//! - [`ring`]: the back end of the shared ring (copy-once requests, responses, notify);
//! - [`request`]: request decoding and validation;
//! - [`io`]: the data path (grant copies, range checks, device calls);
//! - [`negotiate`]: the xenstore keys we publish and the frontend's we read;
//! - [`persistent`]: the bounded cache of persistently mapped grants;
//! - [`queue`]: one ring served end to end, with its counters.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod io;
pub mod negotiate;
pub mod persistent;
pub mod queue;
pub mod request;
pub mod ring;
