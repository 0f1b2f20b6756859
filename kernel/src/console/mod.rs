//! The console: every sink that exists on this platform gets every byte.
//!
//! Sinks: the COM1 16550 (when one answers; under Xen only until the console ring is
//! attached), Xen's debug port 0xe9 (early, under Xen, until the ring is attached; Xen
//! prints it in `xl dmesg`), and the Xen PV console ring (`xl console`, and xenconsoled's
//! log files), which also receives a replay of everything printed before it existed. A line is written under one
//! lock with interrupts disabled, so lines never interleave and an interrupt handler that
//! logs cannot deadlock against the code it interrupted.

pub mod logger;
mod serial;
pub mod xen;

use core::fmt;
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

pub use self::xen::XenConsole;

pub struct Console {
    serial: Option<serial::Uart>,
    e9: bool,
    /// Bytes for the port sinks (COM1, 0xe9) not yet written: they go out a line (or
    /// this buffer) at a time with `rep outsb`, which Xen turns into one exit (0xe9) or
    /// one request to the device model (COM1) for many bytes, where a byte at a time
    /// cost one each (milliseconds apiece under nested emulation: about a second of
    /// every HVM boot went to printing its first lines).
    pending: heapless::Vec<u8, PORT_CHUNK>,
    xen: Option<XenConsole>,
    /// Under Xen, what was printed before the console ring was attached, replayed into the
    /// ring so `xl console` and xenconsoled's log show the whole boot.
    early: Option<heapless::Vec<u8, EARLY_LOG>>,
}

const EARLY_LOG: usize = 8192;
/// The port sinks' buffer: COM1's transmit FIFO (0xe9 takes the same pieces).
const PORT_CHUNK: usize = serial::FIFO;

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    serial: None,
    e9: false,
    pending: heapless::Vec::new(),
    xen: None,
    early: None,
});

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

impl Console {
    /// Tell xenconsoled there is output: once per line or message (`with`), not per
    /// piece of a formatted one. Each notification is a hypercall, a VM exit; a log line
    /// is written in ~15 pieces, and under nested TCG every exit is exposure to the
    /// emulator's fault (docs/testing.md).
    fn flush(&mut self) {
        self.drain_ports();
        if let Some(x) = self.xen.as_mut() {
            x.notify();
        }
    }

    fn drain_ports(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(u) = self.serial.as_mut() {
            u.write(&self.pending);
        }
        if self.e9 {
            crate::arch::outsb(0xe9, &self.pending);
        }
        self.pending.clear();
    }

    fn put(&mut self, b: u8) {
        if self.serial.is_some() || self.e9 {
            if self.pending.is_full() {
                self.drain_ports();
            }
            let _ = self.pending.push(b);
        }
        if let Some(e) = self.early.as_mut() {
            // Full: the rest of the early log is in `xl dmesg` (port 0xe9) only.
            let _ = e.push(b);
        }
        if let Some(x) = self.xen.as_mut() {
            x.put(b);
        }
    }
}

/// Find the sinks available before memory management exists.
pub fn init_early(under_xen: bool) {
    let mut c = CONSOLE.lock();
    c.serial = serial::Uart::probe(0x3f8);
    c.e9 = under_xen;
    if under_xen {
        c.early = Some(heapless::Vec::new());
    }
}

/// Switch from the early port to the Xen console ring.
pub fn attach_xen(ring: XenConsole) {
    without_interrupts(|| {
        let mut c = CONSOLE.lock();
        let mut ring = ring;
        if let Some(early) = c.early.take() {
            for &b in early.iter() {
                ring.put(b);
            }
            ring.notify();
        }
        c.drain_ports();
        c.xen = Some(ring);
        // Under Xen every byte to port 0xe9 or an emulated COM1 is a trip to the
        // hypervisor or to the device model in dom0 (milliseconds each under nested
        // emulation); the ring carries everything from here on, replay included.
        c.e9 = false;
        c.serial = None;
    });
}

/// Free bytes in the Xen console ring, or `None` before it is attached (the port sinks
/// never drop output).
pub fn ring_room() -> Option<usize> {
    without_interrupts(|| CONSOLE.lock().xen.as_ref().map(|x| x.room() as usize))
}

/// Names of the active sinks, for the banner.
pub fn sinks() -> heapless::String<48> {
    let c = CONSOLE.lock();
    let mut s = heapless::String::new();
    for (on, name) in [
        (c.serial.is_some(), "com1"),
        (c.e9, "port-e9"),
        (c.xen.is_some(), "xen-ring"),
    ] {
        if on {
            if !s.is_empty() {
                let _ = s.push(',');
            }
            let _ = s.push_str(name);
        }
    }
    s
}

/// Set on the panic path: the panicking code may hold the console lock, and it never
/// runs again to release it.
static PANICKING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Run `f` with the console locked and interrupts off; what it wrote is then announced.
/// Once panicking, a console whose lock is held (the panic came from inside a print)
/// is written around: to COM1 if it answers and to port 0xe9 (`xl dmesg` under Xen),
/// the sinks that need no state (not the Xen console ring: its state is behind the lock).
pub fn with<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    without_interrupts(|| {
        let mut guard = if PANICKING.load(core::sync::atomic::Ordering::Relaxed) {
            CONSOLE.try_lock()
        } else {
            Some(CONSOLE.lock())
        };
        let mut around;
        let c = match guard.as_deref_mut() {
            Some(c) => c,
            None => {
                around = Console {
                    serial: serial::Uart::probe(0x3f8),
                    e9: true,
                    pending: heapless::Vec::new(),
                    xen: None,
                    early: None,
                };
                &mut around
            }
        };
        let r = f(c);
        c.flush();
        r
    })
}

/// The panic path must print even if the panicking code held the console lock.
pub fn break_lock_for_panic() {
    PANICKING.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// An event line: `event!("vbd-connected", "dev={id} queues={n}")` prints `[time] event:
/// name=vbd-connected dev=... queues=...` whatever the log level. Free text goes through
/// `bulkhead_event::quoted`. The names and keys are an interface (docs/operating.md).
#[macro_export]
macro_rules! event {
    ($name:literal) => {
        $crate::console::logger::event($name, format_args!(""))
    };
    ($name:literal, $($arg:tt)*) => {
        $crate::console::logger::event($name, format_args!($($arg)*))
    };
}

/// Print without the logger's prefix (the banner, self-test result lines).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::with(|c| {
            use core::fmt::Write;
            let _ = writeln!(c, $($arg)*);
        })
    };
}
