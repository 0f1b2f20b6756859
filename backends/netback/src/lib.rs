//! The Xen network backend (netif, `public/io/netif.h`) as pure logic: everything a
//! guest's netfront controls is decoded and checked here, where host tests (a netfront
//! model) and the fuzzers reach it. The kernel supplies ring memory, grant copies and
//! event channels, and moves packets between a vif's queues and the switch
//! (`bulkhead-fabric`); it is not here, nor are the NIC drivers.
//!
//! - [`abi`]: the ring entries; [`negotiate`]: the xenstore keys offered and read;
//! - [`tx`]: one transmission parsed from the TX ring, by Linux xen-netback's rules (a
//!   malformed packet is dropped with an error response per slot; a frontend that breaks
//!   the ring format itself is disconnected); [`packet`]: checksum and GSO work;
//! - [`rx`]: laying a packet into the buffers the frontend posted; [`coalesce`]: merging
//!   TCP segments from the wire into GSO packets;
//! - [`queue`]: one vif queue served end to end; [`ctrl`]: the control ring (hash and
//!   indirection table); [`rate`]: the `rate=` credit; [`limits`]: what one guest may cost.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod coalesce;
pub mod ctrl;
pub mod limits;
pub mod negotiate;
pub mod pace;
pub mod packet;
pub mod queue;
pub mod rate;
pub mod rx;
pub mod tx;
