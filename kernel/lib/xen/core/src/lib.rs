//! Xen from a guest's side, without touching Xen: the ABI (from Xen's public headers),
//! the [`Hypervisor`] trait the kernel implements with real hypercalls, and the
//! bookkeeping that sits on top of it — event-channel dispatch from the shared-info
//! bitmaps and the grant table (granting our pages, mapping other domains' grants).
//! Tests run everything against `FakeXen` (in `fake.rs`, behind the `fake` feature for
//! other crates' tests).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod budget;
pub mod copy;
pub mod events;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod grants;
pub mod storm;

pub use abi::{DomId, GrantRef, Port};

/// A negative errno from a hypercall (e.g. -22 EINVAL), or a grant status (GNTST_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i64);

/// The hypercalls the bookkeeping needs. The kernel implements them with the hypercall
/// page; tests with [`fake::FakeXen`].
pub trait Hypervisor {
    fn evtchn_alloc_unbound(&mut self, remote: DomId) -> Result<Port, Errno>;
    fn evtchn_bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, Errno>;
    fn evtchn_send(&mut self, port: Port) -> Result<(), Errno>;
    fn evtchn_close(&mut self, port: Port) -> Result<(), Errno>;
    fn evtchn_unmask(&mut self, port: Port) -> Result<(), Errno>;
    /// GNTTABOP_map_grant_ref over a batch; per-op status is in each element.
    fn grant_map(&mut self, ops: &mut [abi::MapGrantRef]) -> Result<(), Errno>;
    fn grant_unmap(&mut self, ops: &mut [abi::UnmapGrantRef]) -> Result<(), Errno>;
    fn grant_copy(&mut self, ops: &mut [abi::GrantCopy]) -> Result<(), Errno>;
}
