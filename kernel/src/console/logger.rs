//! The `log` backend: `[seconds.micros] LEVEL component: message` on the console.

use core::fmt::Write;
use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger;

static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        // Module paths become component names (bulkhead::arch::apic -> arch::apic); the
        // crate root's messages name their component themselves ("boot: ...").
        let target = r.target();
        let component = target.strip_prefix("bulkhead::").unwrap_or(target);
        let (component, sep) = if component == "bulkhead" {
            ("", "")
        } else {
            (component, ": ")
        };
        let stamp = Stamp::now();
        super::with(|c| {
            let _ = writeln!(c, "{stamp} {} {}{}{}", level, component, sep, r.args());
        });
    }

    fn flush(&self) {}
}

/// An event line (`bulkhead_event`): `[seconds.micros] event: name=NAME fields`, printed
/// at every log level, since tests and operators' tools read them. Written by `event!`.
pub fn event(name: &str, fields: core::fmt::Arguments) {
    let stamp = Stamp::now();
    super::with(|c| {
        let _ = writeln!(c, "{stamp} {}name={name} {fields}", bulkhead_event::EVENT);
    });
}

/// A line's time since boot, `[seconds.micros]`, the prefix of log and event lines.
struct Stamp(u64);

impl Stamp {
    fn now() -> Stamp {
        Stamp(crate::time::now_ns())
    }
}

impl core::fmt::Display for Stamp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "[{:5}.{:06}]",
            self.0 / 1_000_000_000,
            (self.0 / 1000) % 1_000_000
        )
    }
}

pub fn init(level: LevelFilter) {
    // Fails only if a logger is already set, which would be this one.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
