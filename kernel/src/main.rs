//! Bulkhead: a Xen driver-domain unikernel. This is the kernel binary: it wires the
//! host-tested logic crates to the machine.
//!
//! Boot order (each step needs the ones before it): CPU features and the boot clock, Xen
//! detection, the early console, boot info (copied out of loader memory), the command
//! line, the banner, descriptor tables and interrupts, the TSC clock, memory (frames, page
//! tables, heap), the local APIC, the Xen console ring, then the event loop.
#![no_std]
#![no_main]
// `unsafe` lives in `machine` only.
#![deny(unsafe_code)]

extern crate alloc;

#[cfg(feature = "test-hooks")]
mod calibrate;
mod console;
mod firmware;
mod loopwatch;
#[allow(unsafe_code)]
mod machine;
mod net;
mod nvme;
mod platform;
mod status;
mod storage;
mod xen;

// The machine's parts by their short names, as the rest of the kernel uses them.
#[cfg(feature = "test-hooks")]
use machine::selftest;
use machine::{arch, hw, mem, pci, time, trace};

use bulkhead_boot::Protocol;
use bulkhead_executor::{Executor, Idle, Nanos, OneShot};
use log::{error, info, warn};

use crate::arch::{apic, interrupts};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The event loop's idle: halt until the next timer deadline or any interrupt.
///
/// Tasks run with interrupts disabled; they are taken only here (the halt, and a short
/// window once per pass of the loop), in our own code. So handlers need no IST stack
/// to keep the precompiled `core`'s red zone intact (its code is never interrupted), and
/// an interrupt delivered twice (seen under nested TCG: Xen re-injects one that the CPU
/// had already delivered) only nests on the same stack, where an IST would have
/// overwritten the first frame and looped for ever in the entry stub.
struct KernelIdle {
    timer: OneShot,
}

/// Set by the APIC timer's handler: the one-shot timer fired, the next wait arms again.
static TIMER_FIRED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

impl Idle for KernelIdle {
    fn now(&self) -> Nanos {
        time::now_ns()
    }

    fn wait(&mut self, deadline: Option<Nanos>, pending: &dyn Fn() -> bool) {
        use x86_64::instructions::interrupts as irq;
        irq::disable();
        if pending() {
            return;
        }
        if TIMER_FIRED.swap(false, core::sync::atomic::Ordering::Relaxed) {
            self.timer.fired();
        }
        if let Some(d) = deadline {
            let now = time::now_ns();
            if d <= now {
                return;
            }
            // Left alone when already armed for this deadline or an earlier one: a VM
            // exit saved on most wake-ups under Xen.
            if let Some(delay) = self.timer.arm(now, d, apic::max_oneshot_ns()) {
                apic::arm_oneshot(delay);
                trace::record(
                    trace::Event::TimerArm,
                    (delay / 1000).min(u32::MAX as u64) as u32,
                    0,
                );
            }
        }
        trace::record(trace::Event::Halt, deadline.is_some() as u32, 0);
        // sti; hlt: an interrupt arriving between the check above and the halt still
        // wakes us, because sti takes effect only after the next instruction.
        irq::enable_and_hlt();
        irq::disable();
        trace::record(trace::Event::Wake, 0, 0);
        loopwatch::look();
    }

    fn take_interrupts(&mut self) {
        arch::take_interrupts();
        loopwatch::look();
    }

    fn polled(&mut self, task: &'static str, now: Nanos, took: Nanos) {
        loopwatch::polled(task, now, took);
    }
}

fn timer_interrupt(_f: &mut interrupts::InterruptFrame) {
    TIMER_FIRED.store(true, core::sync::atomic::Ordering::Relaxed);
    #[cfg(feature = "test-hooks")]
    selftest::on_timer_interrupt();
}

fn fatal(what: core::fmt::Arguments) -> ! {
    error!("{what}");
    platform::crash()
}

/// Where the entry stub's `kernel_start` (machine::rt) goes: the boot, then the event loop.
fn start(protocol: u64, magic: u64, info: u64) -> ! {
    time::mark_boot();
    machine::rt::on_panic(platform::report_panic);
    arch::cpu::init();
    let under_xen = xen::detect().is_some();
    console::init_early(under_xen);
    // Hypercalls first under Xen: even a failed boot must be able to report a crash.
    xen::init_hypercalls();
    console::logger::init(log::LevelFilter::Info);

    let protocol = match protocol {
        1 => Protocol::Multiboot,
        2 => Protocol::Pvh,
        other => fatal(format_args!("boot: unknown entry protocol {other}")),
    };
    let mode = platform::mode(
        protocol,
        under_xen,
        under_xen && firmware::pci_bus_present(),
    );
    // Entered at the PVH note with a device model's PCI bus: no firmware ran, unless
    // one turned the MTRRs on (hvmloader and SeaBIOS do; Xen leaves them off), in
    // which case its BARs and MTRRs stand.
    let entered_without_firmware = platform::firmware_less(protocol, mode);
    let no_firmware = entered_without_firmware && !arch::mtrr::enabled();
    let mut boot = match bulkhead_boot::decode(protocol, magic as u32, info, &machine::LoaderMemory)
    {
        Ok(b) => b,
        Err(e) => fatal(format_args!(
            "boot: invalid {} boot information at {info:#x}: {e}",
            protocol.name()
        )),
    };
    // Xen writes no command line into the start info when a device model runs; the xl
    // config hands it to QEMU's fw_cfg instead (firmware.rs).
    let cmdline_source = (no_firmware && boot.cmdline.is_empty()).then(|| {
        firmware::cmdline(&mut boot.cmdline).unwrap_or_else(|e| {
            fatal(format_args!(
                "config: the command line in fw_cfg {} is unusable: {e}",
                bulkhead_boot::fw_cfg::CMDLINE_FILE
            ))
        })
    });

    let parsed = bulkhead_config::parse_for(&boot.cmdline, cfg!(feature = "test-hooks"));
    let config = parsed.config.clone();
    console::logger::init(config.log_level);
    if under_xen {
        if let Err(e) = machine::runstate::register() {
            warn!("xen: no runstate area ({e:?}): stalls cannot be told from Xen's scheduling");
        }
    }

    crate::println!();
    crate::println!("Bulkhead {VERSION} — Xen driver domain unikernel");
    crate::event!(
        "boot",
        "mode={} entry={} console={}",
        mode.name(),
        protocol.name(),
        console::sinks()
    );
    let vendor = arch::cpu::vendor();
    info!(
        "cpu: {}, NX {}",
        core::str::from_utf8(&vendor).unwrap_or("?"),
        if arch::cpu::has_nx() { "on" } else { "absent" }
    );
    if let Some(x) = xen::detect() {
        info!(
            "xen: version {}.{} (cpuid leaves at {:#x})",
            x.major, x.minor, x.leaf_base
        );
    }
    info!(
        "memory map: {} entries from the loader, {} regions, {} KiB usable (highest {:#x}){}",
        boot.raw_map_entries,
        boot.memory.regions().len(),
        boot.memory.usable_bytes() / 1024,
        boot.memory.usable_end(),
        if boot.map_overlaps > 0 {
            " — overlapping entries resolved as reserved"
        } else {
            ""
        }
    );
    for r in boot.memory.regions() {
        log::debug!("  {:#012x}-{:#012x} {}", r.start, r.end, r.kind.name());
    }
    // Where the command line came from: fw_cfg (an HVM domain without firmware), or the
    // loader's boot information; `none` says why the defaults apply.
    match cmdline_source {
        Some(firmware::CmdlineSource::FwCfg) => crate::event!(
            "cmdline",
            "source=fw_cfg file={} value={}",
            bulkhead_boot::fw_cfg::CMDLINE_FILE,
            bulkhead_event::quoted(&boot.cmdline)
        ),
        Some(firmware::CmdlineSource::None(why)) => crate::event!(
            "cmdline",
            "source=none file={} why={} value=\"\"",
            bulkhead_boot::fw_cfg::CMDLINE_FILE,
            bulkhead_event::quoted(why)
        ),
        None => crate::event!(
            "cmdline",
            "source={} value={}",
            protocol.name(),
            bulkhead_event::quoted(&boot.cmdline)
        ),
    }
    if !parsed.is_ok() {
        for e in parsed.errors.iter() {
            crate::event!(
                "config-error",
                "option={} kind={} detail={}",
                e.option(),
                e.kind(),
                bulkhead_event::quoted(e)
            );
        }
        if parsed.more_errors > 0 {
            error!("config: ... and {} more errors", parsed.more_errors);
        }
        for (k, help) in bulkhead_config::OPTIONS {
            if cfg!(feature = "test-hooks") || !bulkhead_config::is_test_option(k) {
                crate::event!(
                    "config-option",
                    "option={k} help={}",
                    bulkhead_event::quoted(help)
                );
            }
        }
        fatal(format_args!(
            "config: refusing to run with an invalid command line"
        ));
    }

    if no_firmware {
        // Before memory setup: Xen leaves the MTRRs off, which on Intel EPT with a
        // passed-through device makes all RAM uncached.
        firmware::set_mtrrs(None);
    } else if entered_without_firmware {
        info!("boot: entered at the PVH note but firmware turned the MTRRs on: BARs and MTRRs left as it set them");
    }
    arch::gdt::init();
    interrupts::init();
    let clock = time::calibrate(machine::hv::tsc_khz());
    info!("time: TSC {} kHz (from {clock})", time::tsc_khz());

    let report = match mem::init(&boot, config.heap_bytes) {
        Ok(r) => r,
        Err(e) => fatal(format_args!("memory: setup failed: {e}")),
    };
    if let Err(e) = apic::init() {
        fatal(format_args!("apic: cannot map the local APIC: {e}"));
    }
    let apic_khz = apic::calibrate(10);
    interrupts::register(arch::vectors::VECTOR_APIC_TIMER, timer_interrupt);
    info!(
        "apic: id {}, version {:#x}, timer {} kHz",
        apic::id(),
        apic::version(),
        apic_khz
    );

    if under_xen {
        match console::XenConsole::attach() {
            Ok(c) => {
                console::attach_xen(c);
                // The boot log is replayed into it; COM1 and port 0xe9 output stop here.
                crate::event!("console", "sinks={}", console::sinks());
            }
            Err(why) => warn!(
                "console: no Xen console ring ({why}); staying on {}",
                console::sinks()
            ),
        }
    }

    let u = mem::usage();
    let footprint = u.taken_bytes() as u64;
    info!(
        "memory: {} KiB in use of {} KiB usable (image {} KiB, frame bitmap {} KiB, page tables {} KiB, heap {} KiB); {} KiB free",
        footprint / 1024,
        report.usable / 1024,
        report.image / 1024,
        report.bitmap / 1024,
        u.table_frames * 4,
        report.heap / 1024,
        u.frames_free * 4,
    );
    crate::event!("ready", "us={}", time::now_ns() / 1000);

    let access = pci::init(boot.rsdp);
    info!("pci: configuration access by {access}");
    if no_firmware {
        // Before any driver looks at a device: the BARs QEMU shows are the host's.
        if let Some(high) = firmware::setup_pci(boot.memory.usable_end()) {
            firmware::set_mtrrs(Some(high));
        }
    }

    #[cfg(feature = "test-hooks")]
    early_test_hooks(&config);

    let mut executor = Executor::new(time::now_ns);
    let h = executor.handle();
    let irq_mode = match config.nvme_irq {
        bulkhead_config::NvmeIrq::MsiX => nvme::IrqMode::MsiX,
        bulkhead_config::NvmeIrq::Msi => nvme::IrqMode::Msi,
        bulkhead_config::NvmeIrq::Intx => nvme::IrqMode::Intx,
        bulkhead_config::NvmeIrq::Poll => nvme::IrqMode::Poll,
    };
    // Every frame-carrying port meets here: the uplink NIC, the management stack, vifs.
    let fabric = bulkhead_fabric::Fabric::new(net_limits(&config, report.heap));
    if under_xen {
        let h2 = h.clone();
        let fabric2 = fabric.clone();
        // The storage self-test owns the NVMe controller when it runs.
        let own_disks = !config.test_storage;
        let bench_secs = config.bench_storage_secs;
        #[cfg(feature = "test-hooks")]
        let peer = config.test_xen_peer;
        let triggers = config.test_triggers;
        let grant_cache = config.grant_cache_per_domain;
        h.spawn("xen-init", async move {
            match xen::init(&h2).await {
                Ok(x) => {
                    crate::event!("xen", "domid={} home={}", x.domid(), x.home());
                    {
                        let mut slots = x.slots.borrow_mut();
                        if let Some(n) = grant_cache {
                            slots.cache_per_domain = n as usize;
                        }
                        info!(
                            "xen: {} map slots; persistent grants at most {} per domain; {} kept for rings, {} more per device",
                            slots.total(),
                            slots.cache_per_domain,
                            bulkhead_xen::grants::RING_HEADROOM,
                            bulkhead_xen::grants::RING_SLOTS_PER_DEVICE
                        );
                    }
                    let disks = if own_disks {
                        storage::Storage::probe(&h2, irq_mode).await
                    } else {
                        storage::Storage::none(&h2)
                    };
                    let devices = alloc::rc::Rc::new(xen::devices::Devices::default());
                    h2.spawn(
                        "xenbus",
                        xen::devices::run(
                            x.clone(),
                            h2.clone(),
                            disks.clone(),
                            fabric2.clone(),
                            devices.clone(),
                        ),
                    );
                    // The benchmark's local figure runs beside the backends, which are
                    // ready to serve as it starts (`make bench` measures how soon; it
                    // starts no guest before this figure is printed).
                    if bench_secs > 0 {
                        let d = disks.clone();
                        h2.spawn("bench-storage", async move { d.bench(bench_secs).await });
                    }
                    h2.spawn(
                        "control",
                        xen::control::run(x.clone(), h2.clone(), disks, devices, fabric2, triggers),
                    );
                    #[cfg(feature = "test-hooks")]
                    if let Some(p) = peer {
                        h2.spawn("peer-test", xen::peertest::run(x, h2.clone(), p));
                    }
                }
                Err(e) => error!("xen: {e}; running without Xen services"),
            }
        });
    } else if config.test_xen_peer.is_some() {
        warn!("test-xen-peer: not running under Xen; ignored");
    }
    if !config.selftest {
        let nics = net::probe(&h);
        if !nics.is_empty() {
            h.spawn(
                "net",
                net::run(h.clone(), nics, fabric.clone(), config.mgmt, config.mgmt_gw),
            );
        } else if config.mgmt != bulkhead_config::Mgmt::Off {
            warn!("mgmt: no NIC to put the management address on");
        }
    }
    #[cfg(feature = "test-hooks")]
    let testing = spawn_tests(&h, &config, irq_mode);
    #[cfg(not(feature = "test-hooks"))]
    let testing = false;
    if !testing && config.heartbeat_secs > 0 {
        let period = config.heartbeat_secs as u64 * 1_000_000_000;
        let h2 = h.clone();
        h.spawn("heartbeat", async move {
            loop {
                h2.sleep(period).await;
                let u = mem::usage();
                crate::event!(
                    "heartbeat",
                    "up_s={} heap_b={} free_kib={}",
                    h2.now() / 1_000_000_000,
                    u.heap_used,
                    u.frames_free * 4
                );
            }
        });
    }
    executor.run(&mut KernelIdle {
        timer: OneShot::new(),
    });
    info!("event loop: no tasks left (stats {:?})", executor.stats);
    platform::poweroff()
}

/// What a guest's packets may cost, from the defaults and the command line. Queued
/// packets together may take at most a quarter of the heap (the rest is for rings,
/// grants, storage and the tasks), whatever the configured figure.
/// The storage test or the self-test, when asked for (the test build only); true if one
/// runs (it powers off when done).
#[cfg(feature = "test-hooks")]
fn spawn_tests(
    h: &bulkhead_executor::Handle,
    config: &bulkhead_config::Config,
    irq_mode: nvme::IrqMode,
) -> bool {
    if config.test_storage {
        h.spawn(
            "storage-test",
            nvme::test::self_test(h.clone(), irq_mode, config.test_nvme_timeout),
        );
        true
    } else if config.selftest {
        selftest::prepare();
        h.spawn("selftest", selftest::run(h.clone()));
        true
    } else {
        false
    }
}

/// The test options that end the boot early (the test build only).
#[cfg(feature = "test-hooks")]
fn early_test_hooks(config: &bulkhead_config::Config) {
    if config.calibrate {
        calibrate::run();
        platform::poweroff();
    }
    if config.test_panic {
        panic!("test-panic requested on the command line");
    }
    if config.test_fault {
        let guard = mem::boot_stack_guard();
        warn!("test-fault: reading the boot stack guard page at {guard:#x}");
        let v = mem::read_boot_stack_guard();
        fatal(format_args!(
            "test-fault: guard page read returned {v:#x} instead of faulting"
        ));
    }
}

fn net_limits(config: &bulkhead_config::Config, heap: u64) -> bulkhead_netback::limits::Limits {
    let mut l = bulkhead_netback::limits::Limits::default();
    if let Some(v) = config.gso_min_size {
        l.gso_min_size = v;
    }
    if let Some(v) = config.gso_max_segs {
        l.gso_max_segs = v;
    }
    if let Some(v) = config.vif_queue_bytes {
        l.inbox_bytes = v as usize;
    }
    if let Some(v) = config.net_queued_bytes {
        l.queued_bytes = v as usize;
    }
    if let Some(v) = config.vif_mtu {
        // Ethernet header and one VLAN tag around the IP packet.
        l.max_frame = v as usize + 18;
    }
    if let Some(v) = config.vif_flood_rate {
        l.flood_per_sec = v;
    }
    if let Some(v) = config.vif_rx_stall_secs {
        l.rx_stall_ns = v as u64 * 1_000_000_000;
    }
    l.queued_bytes = l.queued_bytes.min((heap / 4) as usize);
    l
}
