//! Shared rings a backend serves (blkif, netif TX and RX): mapping the frontend's ring
//! pages, binding its event channel, and releasing both.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU32, Ordering};

use bulkhead_ring::{BackRing, Layout, RingMemory, PAGE_SIZE};
use bulkhead_xen::abi::{DomId, GrantRef, Port};
use bulkhead_xen::grants::Mapping;
use log::{error, warn};

use super::{Hv, XenRef};

/// The ring pages, each mapped (identity) at a ballooned slot, not necessarily adjacent.
pub struct MappedRing {
    pages: Vec<u64>,
}

impl MappedRing {
    fn at(&self, off: usize) -> usize {
        self.pages[off / PAGE_SIZE] as usize + off % PAGE_SIZE
    }
}

impl RingMemory for MappedRing {
    fn len(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }
    fn load_u32(&self, off: usize) -> u32 {
        // SAFETY: a 4-byte aligned index inside the mapped first ring page, shared with the
        // frontend; accessed atomically because both sides write the page.
        unsafe { AtomicU32::from_ptr(self.at(off) as *mut u32) }.load(Ordering::Acquire)
    }
    fn store_u32(&mut self, off: usize, v: u32) {
        // SAFETY: as for `load_u32`.
        unsafe { AtomicU32::from_ptr(self.at(off) as *mut u32) }.store(v, Ordering::Release)
    }
    fn read(&self, off: usize, out: &mut [u8]) {
        // A ring slot may straddle two non-adjacent pages of a multi-page ring.
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: inside the mapped ring (the ring code only asks for slots within
            // `len`); volatile because the frontend may change it at any time — we read
            // each byte once into our private copy.
            *b = unsafe { core::ptr::read_volatile(self.at(off + i) as *const u8) };
        }
    }
    fn write(&mut self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as for `read`.
            unsafe { core::ptr::write_volatile(self.at(off + i) as *mut u8, *b) };
        }
    }
    fn full_fence(&self) {
        fence(Ordering::SeqCst);
    }
}

/// Map the frontend's ring pages; on error nothing stays mapped.
pub fn map(
    xen: &XenRef,
    dom: DomId,
    refs: &[GrantRef],
    layout: Layout,
) -> Result<(BackRing<MappedRing>, Vec<Mapping>), String> {
    let reqs: Vec<(DomId, u32, bool)> = refs.iter().map(|&r| (dom, r, false)).collect();
    let results = xen.slots.borrow_mut().map(&mut Hv, &reqs);
    let mut maps = Vec::new();
    let mut failure = None;
    for (r, gref) in results.into_iter().zip(refs) {
        match r {
            Ok(m) => maps.push(m),
            Err(e) => failure = Some(format!("cannot map ring grant {gref}: {e}")),
        }
    }
    if let Some(f) = failure {
        unmap(xen, &maps);
        return Err(f);
    }
    let pages = maps.iter().map(|m| m.addr).collect();
    match BackRing::attach(MappedRing { pages }, layout) {
        Ok(r) => Ok((r, maps)),
        Err(e) => {
            unmap(xen, &maps);
            Err(format!("ring: {e}"))
        }
    }
}

/// Bind the frontend's event channel and start delivering its events to waiters.
pub fn bind(xen: &XenRef, dom: DomId, remote: Port) -> Result<Port, String> {
    let port = xen
        .with_ports(|p, hv| p.bind_interdomain(hv, dom, remote))
        .map_err(|e| {
            format!(
                "cannot bind event channel {remote} of domain {dom} ({})",
                e.0
            )
        })?;
    xen.waiters.track(port);
    if let Err(e) = super::events::unmask(port) {
        warn!("unmask port {port}: {}", e.0);
    }
    Ok(port)
}

pub fn unbind(xen: &XenRef, port: Port) {
    xen.waiters.forget(port);
    if let Err(e) = xen.with_ports(|p, hv| p.close(hv, port)) {
        warn!("close event channel {port}: {}", e.0);
    }
}

pub fn unmap(xen: &XenRef, maps: &[Mapping]) {
    for (m, r) in maps.iter().zip(xen.slots.borrow_mut().unmap(&mut Hv, maps)) {
        if let Err(e) = r {
            error!("unmap of domain {}'s grant {}: {e}", m.dom, m.gref);
        }
    }
}
