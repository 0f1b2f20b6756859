//! What Bulkhead runs on, and how it leaves.
//!
//! The CPUID signature, the boot protocol and the PCI bus together give the mode: under
//! Xen, an HVM domain has a device model whose PCI host bridge answers at 00:00.0 (a
//! PVH domain has none); it was entered by multiboot (`kernel=`, through hvmloader,
//! SeaBIOS and QEMU's option ROM) or at the PVH note (`firmware=` naming Bulkhead, no
//! firmware at all: see `firmware.rs`). No Xen means bare QEMU (either entry). Leaving: Xen gets SCHEDOP_shutdown (poweroff, or
//! crash so xl's `on_crash=` applies); bare QEMU gets its isa-debug-exit port, which makes
//! QEMU exit with status (code << 1) | 1.

use bulkhead_boot::Protocol;

use core::panic::PanicInfo;

use crate::arch;
use crate::machine::hv::{self, ShutdownReason};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bare,
    XenPvh,
    XenHvm,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::XenPvh => "pvh",
            Mode::XenHvm => "hvm",
        }
    }
}

pub fn mode(protocol: Protocol, under_xen: bool, pci_bus: bool) -> Mode {
    match (under_xen, protocol, pci_bus) {
        (false, ..) => Mode::Bare,
        (true, Protocol::Pvh, false) => Mode::XenPvh,
        (true, Protocol::Pvh, true) | (true, Protocol::Multiboot, _) => Mode::XenHvm,
    }
}

/// An HVM domain entered at the PVH note: no firmware ran before Bulkhead.
pub fn firmware_less(protocol: Protocol, mode: Mode) -> bool {
    mode == Mode::XenHvm && protocol == Protocol::Pvh
}

/// isa-debug-exit port the test runner configures (`-device isa-debug-exit,iobase=0xf4`).
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Written to isa-debug-exit: QEMU exits with 1 (success) or 3 (failure).
const EXIT_SUCCESS: u32 = 0;
const EXIT_FAILURE: u32 = 1;

/// Leave as `reason` (its event line says `stop reason=NAME`; no time prefix: this is
/// also the panic path's way out).
fn leave(reason: ShutdownReason, name: &str, code: u32) -> ! {
    stop_event(name);
    x86_64::instructions::interrupts::disable();
    if hv::present() {
        let e = hv::sched_shutdown(reason as u32);
        log::error!("Xen refused SCHEDOP_shutdown ({e:?}); halting");
    } else {
        arch::outl(DEBUG_EXIT_PORT, code);
        // Still here: no isa-debug-exit device. Nothing else to do but stop.
    }
    stop_event("halted");
    arch::halt_forever()
}

fn stop_event(reason: &str) {
    crate::println!("{}name=stop reason={reason}", bulkhead_event::EVENT);
}

/// Clean exit: the domain powers off (QEMU exits with status 1).
pub fn poweroff() -> ! {
    leave(ShutdownReason::Poweroff, "poweroff", EXIT_SUCCESS)
}

/// The toolstack asked for a reboot (xl applies `on_reboot=`).
pub fn reboot() -> ! {
    leave(ShutdownReason::Reboot, "reboot", EXIT_SUCCESS)
}

/// The kernel's panic report (machine::rt calls it): the message and where, on every
/// console sink (written around a held console lock), then a crash.
pub fn report_panic(info: &PanicInfo, nested: bool) -> ! {
    crate::console::break_lock_for_panic();
    if nested {
        // A panic while reporting a panic: print the bare minimum and stop.
        crate::println!("PANIC while panicking: {}", info.message());
        crash();
    }
    match info.location() {
        Some(l) => crate::println!(
            "PANIC at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        ),
        None => crate::println!("PANIC: {}", info.message()),
    }
    // The same as an event line (without the log's time prefix: the clock is not to be
    // trusted here), for tests and tools.
    // Nothing allocates: the heap's lock may be what the panicking code held.
    let (file, line) = info
        .location()
        .map_or(("unknown", 0), |l| (l.file(), l.line()));
    crate::println!(
        "{}name=panic at={file}:{line} message={}",
        bulkhead_event::EVENT,
        bulkhead_event::quoted(info.message())
    );
    crash()
}

/// Failure exit: the domain is reported crashed (QEMU exits with status 3).
pub fn crash() -> ! {
    crate::hw::silence_for_crash();
    leave(ShutdownReason::Crash, "crashed", EXIT_FAILURE)
}
