//! The Xen network backend (netif, `public/io/netif.h`) as pure logic. This first part is
//! the wire format and the parser for what a guest transmits: a packet is a chain of TX
//! slots (`NETTXF_more_data`) with optional extra-info slots (GSO, multicast), and every
//! field is hostile. The parser follows Linux xen-netback's rules: a malformed packet is
//! dropped with an error response per slot; a frontend that breaks the ring format itself
//! (slot crossing a page, packet not fully published, too many slots) is disconnected.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod coalesce;
pub mod ctrl;
pub mod limits;
pub mod negotiate;
pub mod packet;
pub mod queue;
pub mod rate;
pub mod rx;
pub mod tx;
