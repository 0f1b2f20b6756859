//! The victim's probe: disk I/O at a steady pace and a ping every 100 ms while dom0 names
//! the phase (an attack, or none) in the guest's `data/phase` node. At each change of
//! phase it prints what the previous one gave: throughput, and the longest time without
//! a completed disk I/O and without a ping answer. In phase "idle" the disk rests.
//!
//! The disk loop is paced (a 64 KiB write and its read-back every `DISK_PACE`, about a
//! quarter of what it reaches unpaced on the emulated machine) rather than flat out: it
//! is a guest with steady work whose service must not stop, and a flat-out loop would
//! multiply the driver domain's VM exits for the whole scenario, the exposure to the
//! nested-TCG fault (docs/testing.md, "The nested triple fault"). An attack that takes the
//! victim's share shows as throughput below the quiet phase's.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::xen::{Result, Xs};

/// One 64 KiB write and read-back per period, at most.
const DISK_PACE: Duration = Duration::from_millis(10);

#[derive(Default, Clone)]
struct Window {
    disk_bytes: u64,
    disk_ops: u64,
    disk_errors: u64,
    last_disk: Option<Instant>,
    disk_gap: Duration,
    /// When the longest disk gap ended.
    disk_gap_end: Option<Instant>,
    pings: u64,
    answers: u64,
    last_answer: Option<Instant>,
    ping_gap: Duration,
    ping_gap_end: Option<Instant>,
    /// The longest this guest's own probe thread overslept a 10 ms sleep: how long this
    /// guest itself was not running (a gap it measures then is not the backend's).
    self_gap: Duration,
}

struct Shared {
    w: Window,
    start: Instant,
    /// Phase "idle": no disk I/O (dom0 reads Bulkhead's heap figures meanwhile, which
    /// requests in flight would blur).
    paused: bool,
}

fn note_gap(
    last: &mut Option<Instant>,
    gap: &mut Duration,
    end: &mut Option<Instant>,
    start: Instant,
    now: Instant,
) {
    let from = last.unwrap_or(start);
    if now - from > *gap {
        *gap = now - from;
        *end = Some(now);
    }
    *last = Some(now);
}

/// This guest's stolen time so far (its vCPUs runnable while Xen ran others), from the
/// `steal` column of /proc/stat, in ms.
fn steal_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // USER_HZ is 100 on Linux x86.
    ticks * 10
}

/// A gap this long, seen while it lasts, is announced in `data/stall` (dom0 then takes a
/// snapshot of the driver domain while it is stalled: hostile-lib.sh). Half the
/// scenario's unscaled limit: the snapshot comes before the gap is over.
const STALL: Duration = Duration::from_millis(1000);

/// Watch the disk and ping gaps as they grow; the first one past `STALL` is written to
/// `data/stall` as "PHASE disk|ping MS" (once per run, from the quiet phase on: one
/// snapshot is what dom0 takes).
fn stall_watch(s: Arc<Mutex<Shared>>, phase: Arc<Mutex<String>>) {
    let Ok(mut xs) = Xs::open() else {
        println!("victim: no xenstore connection for the stall watch");
        return;
    };
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let (disk, ping) = {
            let g = s.lock().unwrap();
            let since = |last: Option<Instant>| now - last.unwrap_or(g.start).max(g.start);
            let disk = if g.paused {
                Duration::ZERO
            } else {
                since(g.w.last_disk)
            };
            (disk, since(g.w.last_answer))
        };
        let (what, gap) = if disk >= ping {
            ("disk", disk)
        } else {
            ("ping", ping)
        };
        let p = phase.lock().unwrap().clone();
        // Before the hostile guest: gaps there are not judged, and the one snapshot
        // dom0 takes is kept for the attacks.
        if p == "start" || p == "idle" {
            continue;
        }
        if gap >= STALL {
            let _ = xs.write_str("data/stall", &format!("{p} {what} {}", gap.as_millis()));
            println!(
                "victim: stall: phase {p}: no {what} answer for {} ms",
                gap.as_millis()
            );
            return;
        }
    }
}

fn self_probe(s: Arc<Mutex<Shared>>) {
    let tick = Duration::from_millis(10);
    loop {
        let t = Instant::now();
        std::thread::sleep(tick);
        let late = t.elapsed().saturating_sub(tick);
        let mut g = s.lock().unwrap();
        g.w.self_gap = g.w.self_gap.max(late);
    }
}

/// An aligned buffer for O_DIRECT.
fn aligned(len: usize) -> &'static mut [u8] {
    let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
    // SAFETY: a fresh allocation of `len` bytes, zeroed, never freed (one per run).
    unsafe { std::slice::from_raw_parts_mut(std::alloc::alloc_zeroed(layout), len) }
}

fn disk_loop(dev: String, s: Arc<Mutex<Shared>>) {
    let f = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&dev)
    {
        Ok(f) => f,
        Err(e) => {
            println!("result: name=victim pass=0 why=\"cannot open {dev}: {e}\"");
            return;
        }
    };
    let buf = aligned(65536);
    let back = aligned(65536);
    let mut k: u64 = 0;
    let mut next = Instant::now();
    loop {
        if s.lock().unwrap().paused {
            std::thread::sleep(Duration::from_millis(20));
            next = Instant::now();
            continue;
        }
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next = next.max(now) + DISK_PACE;
        k += 1;
        let off = (k % 256) * 65536;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (k as u8).wrapping_mul(31) ^ i as u8;
        }
        let ok = f.write_all_at(buf, off).is_ok()
            && f.read_exact_at(back, off).is_ok()
            && buf[..] == back[..];
        let now = Instant::now();
        let mut g = s.lock().unwrap();
        let start = g.start;
        let w = &mut g.w;
        if ok {
            w.disk_bytes += 2 * 65536;
            w.disk_ops += 2;
            note_gap(
                &mut w.last_disk,
                &mut w.disk_gap,
                &mut w.disk_gap_end,
                start,
                now,
            );
        } else {
            w.disk_errors += 1;
        }
        drop(g);
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ping_loop(target: [u8; 4], s: Arc<Mutex<Shared>>) {
    // SAFETY: plain socket calls on a descriptor this function owns.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        println!(
            "result: name=victim pass=0 why=\"no raw socket: {}\"",
            std::io::Error::last_os_error()
        );
        return;
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: setsockopt with a timeval of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as u16;
    addr.sin_addr.s_addr = u32::from_ne_bytes(target);
    let id = std::process::id() as u16;
    let mut seq: u16 = 0;
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            seq = seq.wrapping_add(1);
            let mut p = [0u8; 16];
            p[0] = 8;
            p[4..6].copy_from_slice(&id.to_be_bytes());
            p[6..8].copy_from_slice(&seq.to_be_bytes());
            let c = checksum(&p);
            p[2..4].copy_from_slice(&c.to_be_bytes());
            // SAFETY: sendto with a valid buffer and address.
            unsafe {
                libc::sendto(
                    fd,
                    p.as_ptr() as *const libc::c_void,
                    p.len(),
                    0,
                    &addr as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            s.lock().unwrap().w.pings += 1;
            next += Duration::from_millis(100);
        }
        let mut r = [0u8; 1500];
        // SAFETY: recv into a buffer we own.
        let n = unsafe { libc::recv(fd, r.as_mut_ptr() as *mut libc::c_void, r.len(), 0) };
        if n >= 28 {
            let ihl = (r[0] & 0xf) as usize * 4;
            let n = n as usize;
            if n >= ihl + 8 && r[ihl] == 0 && r[ihl + 4..ihl + 6] == id.to_be_bytes() {
                let now = Instant::now();
                let mut g = s.lock().unwrap();
                let start = g.start;
                let w = &mut g.w;
                w.answers += 1;
                note_gap(
                    &mut w.last_answer,
                    &mut w.ping_gap,
                    &mut w.ping_gap_end,
                    start,
                    now,
                );
            }
        }
    }
}

pub fn run(dev: &str, target: &str) -> Result<String> {
    let mut t = [0u8; 4];
    for (o, p) in t.iter_mut().zip(target.split('.')) {
        *o = p.parse().map_err(|_| format!("bad address {target}"))?;
    }
    let mut xs = Xs::open()?;
    let s = Arc::new(Mutex::new(Shared {
        w: Window::default(),
        start: Instant::now(),
        paused: false,
    }));
    {
        let (d, s1, s2) = (dev.to_string(), s.clone(), s.clone());
        std::thread::spawn(move || disk_loop(d, s1));
        std::thread::spawn(move || ping_loop(t, s2));
        let s3 = s.clone();
        std::thread::spawn(move || self_probe(s3));
    }
    let current = Arc::new(Mutex::new(String::from("start")));
    {
        let (s4, c) = (s.clone(), current.clone());
        std::thread::spawn(move || stall_watch(s4, c));
    }
    println!("result: name=victim step=ready");
    let mut phase = String::from("start");
    let mut steal = steal_ms();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = xs.read("data/phase").unwrap_or_default();
        if now == phase || now.is_empty() {
            continue;
        }
        let (w, secs, start) = {
            let mut g = s.lock().unwrap();
            let end = Instant::now();
            let mut w = std::mem::take(&mut g.w);
            // Gaps up to the end of the phase count too.
            let start = g.start;
            note_gap(
                &mut w.last_disk,
                &mut w.disk_gap,
                &mut w.disk_gap_end,
                start,
                end,
            );
            note_gap(
                &mut w.last_answer,
                &mut w.ping_gap,
                &mut w.ping_gap_end,
                start,
                end,
            );
            let secs = (end - start).as_secs_f64();
            g.start = end;
            g.paused = now == "idle";
            (w, secs, start)
        };
        let stolen = steal_ms().saturating_sub(steal);
        steal += stolen;
        let at = |end: Option<Instant>, gap: Duration| {
            end.map(|e| format!("{:.1}", (e - gap - start).as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        };
        // One result line per phase (tests/xen/scenarios/victim-verdict.awk reads it):
        // throughput, the longest time without a completed disk I/O and without a ping
        // answer, where each began (seconds into the phase, `-` if none ended), and
        // whether this guest itself was kept from running meanwhile (a stall to explain,
        // not to count).
        println!(
            "result: name=victim phase={} secs={:.1} disk_kibs={} disk_ops={} disk_errors={} disk_gap_ms={} disk_gap_from_s={} pings={} answered={} ping_gap_ms={} ping_gap_from_s={} overslept_ms={} stolen_ms={}",
            // As Bulkhead names dom0's mark for it, so the verdict can pair them.
            bulkhead_event::word(&phase, 64),
            secs,
            (w.disk_bytes as f64 / 1024.0 / secs.max(0.001)) as u64,
            w.disk_ops,
            w.disk_errors,
            w.disk_gap.as_millis(),
            at(w.disk_gap_end, w.disk_gap),
            w.pings,
            w.answers,
            w.ping_gap.as_millis(),
            at(w.ping_gap_end, w.ping_gap),
            w.self_gap.as_millis(),
            stolen
        );
        if now == "end" {
            return Ok("victim: done".into());
        }
        phase = now;
        *current.lock().unwrap() = phase.clone();
    }
}
