//! What the status page lists: each component keeps its own line(s) here, under a key
//! (`disk nvme0n1`, `vbd-2-51712`...), and the page prints them sorted.

use alloc::collections::BTreeMap;
use alloc::string::String;

use spin::Mutex;

static LINES: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

pub fn set(key: impl Into<String>, line: impl Into<String>) {
    LINES.lock().insert(key.into(), line.into());
}

pub fn remove(key: &str) {
    LINES.lock().remove(key);
}

/// Every line, as "key: line\n".
pub fn render(out: &mut String) {
    use core::fmt::Write;
    for (k, v) in LINES.lock().iter() {
        let _ = writeln!(out, "{k}: {v}");
    }
}
