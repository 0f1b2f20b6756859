//! The real hypervisor behind `bulkhead_xen::Hypervisor`, plus the memory and HVM
//! operations the kernel needs during setup.

use bulkhead_xen::abi::{self, DomId, Port, DOMID_SELF};
use bulkhead_xen::{Errno, Hypervisor};

use super::hypercall::{op, op_array};

pub struct Hv;

#[repr(C)]
struct PortArg {
    port: Port,
}

impl Hypervisor for Hv {
    fn evtchn_alloc_unbound(&mut self, remote: DomId) -> Result<Port, Errno> {
        let mut a = abi::EvtchnAllocUnbound {
            dom: DOMID_SELF,
            remote_dom: remote,
            port: 0,
        };
        op(
            abi::HYPERVISOR_EVENT_CHANNEL_OP,
            abi::EVTCHNOP_ALLOC_UNBOUND,
            &mut a,
        )?;
        Ok(a.port)
    }

    fn evtchn_bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, Errno> {
        let mut a = abi::EvtchnBindInterdomain {
            remote_dom: remote,
            remote_port,
            local_port: 0,
        };
        op(
            abi::HYPERVISOR_EVENT_CHANNEL_OP,
            abi::EVTCHNOP_BIND_INTERDOMAIN,
            &mut a,
        )?;
        Ok(a.local_port)
    }

    fn evtchn_send(&mut self, port: Port) -> Result<(), Errno> {
        SENDS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        op(
            abi::HYPERVISOR_EVENT_CHANNEL_OP,
            abi::EVTCHNOP_SEND,
            &mut PortArg { port },
        )
        .map(|_| ())
    }

    fn evtchn_close(&mut self, port: Port) -> Result<(), Errno> {
        op(
            abi::HYPERVISOR_EVENT_CHANNEL_OP,
            abi::EVTCHNOP_CLOSE,
            &mut PortArg { port },
        )
        .map(|_| ())
    }

    fn evtchn_unmask(&mut self, port: Port) -> Result<(), Errno> {
        op(
            abi::HYPERVISOR_EVENT_CHANNEL_OP,
            abi::EVTCHNOP_UNMASK,
            &mut PortArg { port },
        )
        .map(|_| ())
    }

    fn grant_map(&mut self, ops: &mut [abi::MapGrantRef]) -> Result<(), Errno> {
        op_array(
            abi::HYPERVISOR_GRANT_TABLE_OP,
            abi::GNTTABOP_MAP_GRANT_REF,
            ops,
        )
        .map(|_| ())
    }

    fn grant_unmap(&mut self, ops: &mut [abi::UnmapGrantRef]) -> Result<(), Errno> {
        op_array(
            abi::HYPERVISOR_GRANT_TABLE_OP,
            abi::GNTTABOP_UNMAP_GRANT_REF,
            ops,
        )
        .map(|_| ())
    }

    fn grant_copy(&mut self, ops: &mut [abi::GrantCopy]) -> Result<(), Errno> {
        op_array(abi::HYPERVISOR_GRANT_TABLE_OP, abi::GNTTABOP_COPY, ops).map(|_| ())
    }
}

/// Event-channel notifications sent so far (for the state dump: each is a hypercall).
pub static SENDS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

pub fn hvm_get_param(index: u32) -> Result<u64, Errno> {
    let mut p = abi::HvmParam {
        domid: DOMID_SELF,
        index,
        value: 0,
    };
    op(abi::HYPERVISOR_HVM_OP, abi::HVMOP_GET_PARAM, &mut p)?;
    Ok(p.value)
}

pub fn hvm_set_param(index: u32, value: u64) -> Result<(), Errno> {
    let mut p = abi::HvmParam {
        domid: DOMID_SELF,
        index,
        value,
    };
    op(abi::HYPERVISOR_HVM_OP, abi::HVMOP_SET_PARAM, &mut p).map(|_| ())
}

/// Put a Xen-owned page (shared info, a grant-table frame) at our frame `gpfn`.
pub fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<(), Errno> {
    let mut a = abi::AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space,
        idx,
        gpfn,
    };
    op(
        abi::HYPERVISOR_MEMORY_OP,
        abi::XENMEM_ADD_TO_PHYSMAP,
        &mut a,
    )
    .map(|_| ())
}

/// Give frames back to Xen (balloon out); returns how many Xen took.
pub fn decrease_reservation(gpfns: &mut [u64]) -> Result<usize, Errno> {
    let mut r = abi::MemoryReservation {
        extent_start: gpfns.as_mut_ptr() as u64,
        nr_extents: gpfns.len() as u64,
        extent_order: 0,
        mem_flags: 0,
        domid: DOMID_SELF,
    };
    op(
        abi::HYPERVISOR_MEMORY_OP,
        abi::XENMEM_DECREASE_RESERVATION,
        &mut r,
    )
    .map(|n| n as usize)
}

/// (frames in use, maximum frames) of our grant table.
pub fn gnttab_query_size() -> Result<(u32, u32), Errno> {
    let mut q = abi::GnttabQuerySize {
        dom: DOMID_SELF,
        ..Default::default()
    };
    op_array(
        abi::HYPERVISOR_GRANT_TABLE_OP,
        abi::GNTTABOP_QUERY_SIZE,
        core::slice::from_mut(&mut q),
    )?;
    if q.status != 0 {
        return Err(Errno(q.status as i64));
    }
    Ok((q.nr_frames, q.max_nr_frames))
}

#[repr(C)]
struct SchedShutdown {
    reason: u32,
}

pub fn sched_shutdown(reason: u32) -> Errno {
    match op(abi::HYPERVISOR_SCHED_OP, 2, &mut SchedShutdown { reason }) {
        Ok(_) => Errno(0),
        Err(e) => e,
    }
}
