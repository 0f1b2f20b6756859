//! Shared rings a backend serves (blkif, netif TX and RX): mapping the frontend's ring
//! pages, binding its event channel, and releasing both.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use bulkhead_ring::{BackRing, Layout};
use bulkhead_xen::abi::{DomId, GrantRef, Port};
use bulkhead_xen::grants::Mapping;
use log::{error, warn};

pub use crate::machine::grants::MappedRing;

use super::{Hv, XenRef};

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
    let Some(memory) = MappedRing::new(pages) else {
        unmap(xen, &maps);
        return Err("ring: a mapping is not at a map slot".into());
    };
    match BackRing::attach(memory, layout) {
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
