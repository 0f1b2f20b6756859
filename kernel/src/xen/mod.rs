//! Running under Xen: detection, the hypercall page, and the few hypercalls the kernel
//! core needs (shutdown, HVM parameters, event-channel notify). The ABI numbers come from
//! Xen's public headers (xen.h, sched.h, hvm/hvm_op.h, hvm/params.h, event_channel.h,
//! arch-x86/cpuid.h).

pub mod console;
mod hypercall;

use spin::Once;

use crate::arch::cpu::cpuid;

pub use hypercall::HypercallError;

pub const DOMID_SELF: u16 = 0x7ff0;

/// `SHUTDOWN_*` reasons (sched.h).
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum ShutdownReason {
    Poweroff = 0,
    Crash = 3,
}

pub struct XenInfo {
    pub leaf_base: u32,
    pub major: u16,
    pub minor: u16,
    hypercall_msr: u32,
}

static INFO: Once<Option<XenInfo>> = Once::new();

/// Look for Xen's CPUID signature at the first 0x100-aligned leaf from 0x40000000 that
/// carries it (Viridian, if enabled, takes the first one).
pub fn detect() -> Option<&'static XenInfo> {
    INFO.call_once(|| {
        (0x4000_0000u32..0x4001_0000).step_by(0x100).find_map(|base| {
            let (max, b, c, d) = cpuid(base, 0);
            let is_xen = b.to_le_bytes() == *b"XenV" && c.to_le_bytes() == *b"MMXe" && d.to_le_bytes() == *b"nVMM";
            if !is_xen || max < base + 2 {
                return None;
            }
            let (ver, ..) = cpuid(base + 1, 0);
            let (_pages, msr, ..) = cpuid(base + 2, 0);
            Some(XenInfo { leaf_base: base, major: (ver >> 16) as u16, minor: ver as u16, hypercall_msr: msr })
        })
    })
    .as_ref()
}

/// Whether Xen was found. Never blocks (the panic path asks), unlike `detect` during its
/// first call.
pub fn present() -> bool {
    INFO.get().is_some_and(|i| i.is_some())
}

/// The guest TSC frequency Xen reports (leaf base+3, sub-leaf 0, ECX in kHz).
pub fn tsc_khz() -> Option<u64> {
    let x = detect()?;
    let (max, ..) = cpuid(x.leaf_base, 0);
    if max < x.leaf_base + 3 {
        return None;
    }
    let (_, _, khz, _) = cpuid(x.leaf_base + 3, 0);
    (khz != 0).then_some(khz as u64)
}

/// Ask Xen to fill the hypercall page. Must run before any hypercall.
pub fn init_hypercalls() {
    if let Some(x) = detect() {
        hypercall::install(x.hypercall_msr);
    }
}

/// Leave the domain. Returns only if Xen refused.
pub fn shutdown(reason: ShutdownReason) -> HypercallError {
    hypercall::sched_shutdown(reason as u32)
}

/// HVMOP_get_param for our own domain.
pub fn hvm_get_param(index: u32) -> Result<u64, HypercallError> {
    hypercall::hvm_get_param(DOMID_SELF, index)
}

pub fn evtchn_send(port: u32) -> Result<(), HypercallError> {
    hypercall::evtchn_send(port)
}
