//! A state dump's lines (`control/dump`), written as the console ring has room for them.
//!
//! A dump is the largest burst this domain prints: a line per switch port, disk, status
//! key and backend queue, several KiB, into a Xen console ring of 2 KiB. Written at once,
//! much of it was dropped whenever xenconsoled (in a busy dom0) drained slowly, the
//! closing event line with it, and a test waiting for that line waited out its limit.
//! So a dump's lines go into this outbox (the queue tasks add theirs at their next
//! pass), and the dump task writes them out as xenconsoled frees the ring, then the
//! closing event line. Bounded: the outbox holds at most `OUTBOX_BYTES` (more is written
//! at once, and may be dropped as before), and the dump task waits at most `LIMIT_NS`.

use alloc::collections::VecDeque;
use alloc::string::String;

use bulkhead_executor::{Handle, Nanos};
use spin::Mutex;

struct Outbox {
    lines: VecDeque<(&'static str, String)>,
    bytes: usize,
    /// A dump is being written: lines wait their turn (otherwise, a queue task that
    /// answers after its dump ended, they are written at once).
    open: bool,
}

/// Task context only (no interrupt handler adds dump lines): a plain spin lock.
static OUTBOX: Mutex<Outbox> = Mutex::new(Outbox {
    lines: VecDeque::new(),
    bytes: 0,
    open: false,
});

/// What the outbox holds at most: dozens of queues' lines.
const OUTBOX_BYTES: usize = 64 * 1024;
/// Room kept beyond a line's text: its prefix (time, level, component) and the marker
/// the console writes after dropped bytes.
const PREFIX_ROOM: usize = 128;
/// The dump ends when no line was written for this long (a queue task adds its line at its
/// next pass, after the batch it is serving) ...
const QUIET_NS: Nanos = 300_000_000;
/// ... or this long after it began, whatever the ring does (xenconsoled gone: the rest
/// is written and dropped, with the console's marker saying how much).
const LIMIT_NS: Nanos = 10_000_000_000;
/// How often a waiting dump looks at the ring again.
const POLL_NS: Nanos = 2_000_000;

/// A dump begins: its lines wait in the outbox until `write_out`.
pub fn begin() {
    OUTBOX.lock().open = true;
}

/// One line of the current dump, logged at `info` under `target` when its turn comes.
pub fn line(target: &'static str, text: String) {
    let mut o = OUTBOX.lock();
    if !o.open || o.bytes + text.len() > OUTBOX_BYTES {
        drop(o);
        log::info!(target: target, "{text}");
        return;
    }
    o.bytes += text.len();
    o.lines.push_back((target, text));
}

fn pop() -> Option<(&'static str, String)> {
    let mut o = OUTBOX.lock();
    let l = o.lines.pop_front();
    if let Some((_, t)) = &l {
        o.bytes -= t.len();
    }
    l
}

/// Room for a line of `len` bytes, or the whole ring for one longer than that.
fn fits(len: usize) -> bool {
    let want = (len + PREFIX_ROOM).min(crate::console::xen::OUT_SIZE as usize);
    crate::console::ring_room().is_none_or(|r| r >= want)
}

/// Write the outbox out as the ring has room, until nothing new came for `QUIET_NS`,
/// then wait for room for a last line of `tail` bytes (the caller's closing event).
pub async fn write_out(h: &Handle, tail: usize) {
    let start = h.now();
    let mut last = start;
    loop {
        let now = h.now();
        let late = now.saturating_sub(start) >= LIMIT_NS;
        let next = OUTBOX.lock().lines.front().map(|(_, t)| t.len());
        match next {
            Some(len) if late || fits(len) => {
                if let Some((target, text)) = pop() {
                    log::info!(target: target, "{text}");
                }
                last = now;
                continue;
            }
            None if late || (now.saturating_sub(last) >= QUIET_NS && fits(tail)) => {
                OUTBOX.lock().open = false;
                return;
            }
            _ => {}
        }
        h.sleep(POLL_NS).await;
    }
}
