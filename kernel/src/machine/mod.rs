//! The machine: the only part of the kernel with `unsafe` code (the crate root denies it
//! everywhere else). It owns what Rust cannot check: the CPU's tables, registers and
//! instructions (`arch`), physical memory and the page tables (`mem`), device registers and
//! DMA memory (`hw`), the hypercall page (`hypercall`), memory shared with Xen and other
//! domains (`shared`), and what the precompiled `core` expects of a runtime (`rt`). Each
//! `unsafe` block says why it is sound (`SAFETY:`); what it offers the rest of the kernel
//! is safe to call with any arguments.
pub mod arch;
pub mod grants;
pub mod hv;
pub mod hw;
pub mod hypercall;
pub mod mem;
pub mod pci;
pub mod pcicfg;
pub mod rt;
pub mod runstate;
/// The in-kernel self-test of all of the above (the test build only).
#[cfg(feature = "test-hooks")]
pub mod selftest;
pub mod shared;
mod slots;
pub mod time;
pub mod trace;

// The entry stub (both boot protocols) and the interrupt and exception stubs.
core::arch::global_asm!(include_str!("../../../boot/entry.S"), options(att_syntax));
core::arch::global_asm!(include_str!("arch/isr.S"), options(att_syntax));

/// Where the entry stub jumps once in long mode (boot/entry.S: `call kernel_start`).
#[no_mangle]
extern "C" fn kernel_start(protocol: u64, magic: u64, info: u64) -> ! {
    crate::start(protocol, magic, info)
}

/// Loader structures as the entry stub found them: reachable through the boot page tables,
/// which identity-map the first 4 GiB.
pub struct LoaderMemory;

impl bulkhead_boot::PhysMem for LoaderMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), bulkhead_boot::BootError> {
        use bulkhead_boot::BootError;
        let end = addr
            .checked_add(buf.len() as u64)
            .ok_or(BootError::BadAddress(addr))?;
        // QEMU's PVH option ROM keeps its memory map in page 0 (e.g. at 0x5a8), so only a
        // null pointer itself is refused.
        if addr == 0 || end > 1 << 32 {
            return Err(BootError::BadAddress(addr));
        }
        // SAFETY: the range is inside the identity-mapped first 4 GiB;
        // nothing has been allocated yet, so no Rust object aliases loader memory.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}
