//! A xenstore client for a domain that talks to xenstored over the shared ring page
//! (`public/io/xs_wire.h`).
//!
//! Three layers, none of which touches hardware:
//! - [`wire`]: message header and payload encoding, and an incremental decoder that
//!   refuses anything malformed (xenstored, like everything outside the domain, is
//!   untrusted input: a bad reply is an error, never a panic);
//! - [`ring`]: the request/response byte rings over a [`ring::RingMemory`];
//! - [`client`]: requests matched to replies by id, watch events queued by token,
//!   transactions, and async futures for the kernel's event loop.
//!
//! The tests run the client against an in-memory xenstored (`tests/fake.rs`) through the
//! same ring code the kernel uses.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod client;
pub mod ring;
pub mod wire;

pub use client::{Store, WatchEvent};
pub use wire::{Error, MsgType};
