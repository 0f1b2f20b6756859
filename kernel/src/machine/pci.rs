//! PCI configuration access for the kernel: ECAM when ACPI's MCFG describes it (mapped a
//! bus at a time, uncached), else the legacy 0xCF8/0xCFC ports; and the functions found.

use alloc::boxed::Box;
use alloc::vec::Vec;

use bulkhead_pci::mcfg::{self, PhysRead};
use bulkhead_pci::{ConfigSpace, Function};
use spin::{Mutex, Once};

pub use crate::machine::pcicfg::PortIo;
use crate::machine::pcicfg::{EcamAccess, Firmware};

pub type Access = Box<dyn ConfigSpace + Send>;

pub static CONFIG: Mutex<Option<Access>> = Mutex::new(None);

/// Choose the access method: ECAM from MCFG (RSDP from the loader, else the BIOS area),
/// else port I/O. Returns a description for the log.
pub fn init(rsdp: Option<u64>) -> &'static str {
    let rsdp = rsdp.or_else(|| {
        let mut area = alloc::vec![0u8; 0x20000];
        Firmware
            .read(0xe0000, &mut area)
            .then(|| mcfg::find_rsdp(&area, 0xe0000))
            .flatten()
    });
    let (access, what): (Access, &str) = match rsdp.and_then(|r| mcfg::find_ecam(&Firmware, r)) {
        Some(ecam) => {
            log::info!(
                "ECAM at {:#x}, buses {}-{}",
                ecam.base,
                ecam.bus_start,
                ecam.bus_end
            );
            (Box::new(EcamAccess::new(ecam)), "ecam")
        }
        None => (Box::new(PortIo), "port i/o"),
    };
    *CONFIG.lock() = Some(access);
    what
}

pub fn with<R>(f: impl FnOnce(&mut dyn ConfigSpace) -> R) -> Option<R> {
    let mut g = CONFIG.lock();
    g.as_mut().map(|a| f(&mut **a))
}

/// Every PCI function, from one walk at first use (each config access is a VM exit
/// under a hypervisor). A driver domain serves the devices it was started with; a
/// function hot-added later is not probed.
pub fn functions() -> Vec<Function> {
    FOUND
        .call_once(|| with(|cs| bulkhead_pci::enumerate(cs)).unwrap_or_default())
        .clone()
}

static FOUND: Once<Vec<Function>> = Once::new();

/// The walk `functions` returns, when the boot already made it (firmware-less setup,
/// which also set each function's interrupt line): one walk of VM exits fewer.
pub fn remember(fns: Vec<Function>) {
    FOUND.call_once(|| fns);
}
