//! The guest side of Xen as Linux user space reaches it: xenstore through
//! `/dev/xen/xenbus`, pages granted to another domain through `/dev/xen/gntalloc`, event
//! channels through `/dev/xen/evtchn`. Exactly what a guest kernel's frontend uses, so
//! the backend cannot tell this program from one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bulkhead_ring::RingMemory;
use bulkhead_xenstore::wire::{encode, Decoder, Message, MsgType};

pub type Result<T> = std::result::Result<T, String>;

/// Xenstore over the kernel's xenbus device: requests go out one at a time, replies are
/// matched by id; watch events are ignored (this program polls).
pub struct Xs {
    dev: File,
    next: u32,
    dec: Decoder,
}

impl Xs {
    pub fn open() -> Result<Xs> {
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/xen/xenbus")
            .map_err(|e| format!("/dev/xen/xenbus: {e}"))?;
        Ok(Xs {
            dev,
            next: 1,
            dec: Decoder::default(),
        })
    }

    fn request(&mut self, kind: MsgType, parts: &[&[u8]]) -> Result<Message> {
        let id = self.next;
        self.next += 1;
        let mut out = Vec::new();
        encode(kind, id, 0, parts, &mut out).map_err(|e| format!("{e:?}"))?;
        self.dev
            .write_all(&out)
            .map_err(|e| format!("xenbus write: {e}"))?;
        let mut buf = vec![0u8; 8192];
        loop {
            while let Some(m) = self.dec.next().map_err(|e| format!("{e:?}"))? {
                if m.req_id == id && m.kind != MsgType::WatchEvent {
                    if m.kind == MsgType::Error {
                        return Err(m.text().unwrap_or("?").to_string());
                    }
                    return Ok(m);
                }
            }
            let n = self
                .dev
                .read(&mut buf)
                .map_err(|e| format!("xenbus read: {e}"))?;
            self.dec.feed(&buf[..n]);
        }
    }

    fn path(p: &str) -> Vec<u8> {
        let mut v = p.as_bytes().to_vec();
        v.push(0);
        v
    }

    pub fn read(&mut self, path: &str) -> Option<String> {
        let m = self.request(MsgType::Read, &[&Self::path(path)]).ok()?;
        Some(
            String::from_utf8_lossy(&m.payload)
                .trim_end_matches('\0')
                .to_string(),
        )
    }

    /// `path`'s value as a number; None when it is missing or not one.
    pub fn number<T: std::str::FromStr>(&mut self, path: &str) -> Option<T> {
        self.read(path)?.parse().ok()
    }

    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<()> {
        self.request(MsgType::Write, &[&Self::path(path), value])
            .map(|_| ())
            .map_err(|e| format!("write {path}: {e}"))
    }

    pub fn write_str(&mut self, path: &str, value: &str) -> Result<()> {
        self.write(path, value.as_bytes())
    }

    pub fn rm(&mut self, path: &str) {
        let _ = self.request(MsgType::Rm, &[&Self::path(path)]);
    }

    /// Poll `path` until `ok` holds for its value (None: missing), or time out.
    pub fn wait(&mut self, path: &str, secs: u64, ok: impl Fn(Option<&str>) -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if ok(self.read(path).as_deref()) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Device `kind`/`devid` (vbd, vif) as its frontend finds it: its own directory, its
    /// backend's, and the backend's domain.
    pub fn ends(&mut self, kind: &str, devid: u32) -> Result<(String, String, u16)> {
        let fe = format!("device/{kind}/{devid}");
        let backend = self
            .number(&format!("{fe}/backend-id"))
            .ok_or("no backend-id")?;
        let be = self
            .read(&format!("{fe}/backend"))
            .ok_or("no backend path")?;
        Ok((fe, be, backend))
    }

    /// Start a connection over: the frontend back to Initialising (a previous attack may
    /// have left it in any state), then wait (30 s at most) for the backend's InitWait.
    pub fn restart(&mut self, fe: &str, be: &str) -> Result<()> {
        self.write_str(&format!("{fe}/state"), "1")?;
        if !self.wait(&format!("{be}/state"), 30, |s| s == Some("2")) {
            let state = self.read(&format!("{be}/state"));
            let state = state.as_deref().unwrap_or("none");
            return Err(format!("backend not in InitWait (state {state})"));
        }
        Ok(())
    }

    /// Close a device as a frontend does: Closing, then Closed, each time waiting (20 s
    /// at most) for the backend at `be` to follow.
    pub fn close_frontend(&mut self, fe: &str, be: &str) {
        let _ = self.write_str(&format!("{fe}/state"), "5");
        self.wait(&format!("{be}/state"), 20, |s| {
            matches!(s, Some("5") | Some("6"))
        });
        let _ = self.write_str(&format!("{fe}/state"), "6");
        self.wait(&format!("{be}/state"), 20, |s| s == Some("6"));
    }
}

// Linux uapi: include/uapi/xen/gntalloc.h and evtchn.h. _IOC(_IOC_NONE, type, nr, size).
const fn ioc(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((size as libc::c_ulong) << 16) | ((ty as libc::c_ulong) << 8) | nr as libc::c_ulong
}
const GNTALLOC_ALLOC: libc::c_ulong = ioc(b'G', 5, 24);
const GNTALLOC_DEALLOC: libc::c_ulong = ioc(b'G', 6, 16);
const GNTALLOC_FLAG_WRITABLE: u16 = 1;
const EVTCHN_BIND_UNBOUND: libc::c_ulong = ioc(b'E', 2, 4);
const EVTCHN_NOTIFY: libc::c_ulong = ioc(b'E', 4, 4);

/// Pages of ours granted to one domain, mapped here.
pub struct Grants {
    dev: File,
}

/// `count` pages granted together: their references and where they are mapped.
pub struct Granted {
    pub grefs: Vec<u32>,
    pub base: *mut u8,
    pub pages: usize,
    index: u64,
}

impl Grants {
    pub fn open() -> Result<Grants> {
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/xen/gntalloc")
            .map_err(|e| format!("/dev/xen/gntalloc: {e}"))?;
        Ok(Grants { dev })
    }

    pub fn alloc(&self, dom: u16, count: usize, writable: bool) -> Result<Granted> {
        // struct ioctl_gntalloc_alloc_gref { u16 domid, flags; u32 count; u64 index;
        // u32 gref_ids[count]; }
        let mut arg = vec![0u32; 4 + count.max(1)];
        arg[0] = dom as u32
            | if writable {
                (GNTALLOC_FLAG_WRITABLE as u32) << 16
            } else {
                0
            };
        arg[1] = count as u32;
        // SAFETY: `arg` is a buffer of the layout the ioctl reads and writes, with room
        // for `count` references after the header.
        let r = unsafe { libc::ioctl(self.dev.as_raw_fd(), GNTALLOC_ALLOC, arg.as_mut_ptr()) };
        if r != 0 {
            return Err(format!("gntalloc: {}", std::io::Error::last_os_error()));
        }
        let index = arg[2] as u64 | (arg[3] as u64) << 32;
        let len = count * 4096;
        // SAFETY: maps the pages the ioctl just allocated, at the offset it returned.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.dev.as_raw_fd(),
                index as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "gntalloc mmap: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Granted {
            grefs: arg[4..4 + count].to_vec(),
            base: base as *mut u8,
            pages: count,
            index,
        })
    }

    /// Revoke: unmap and give the grants back (the backend may still use them: Xen
    /// keeps a mapped page alive until the backend unmaps it).
    pub fn free(&self, g: Granted) {
        // SAFETY: `g` came from `alloc` on this device and is not used after this.
        unsafe {
            libc::munmap(g.base as *mut libc::c_void, g.pages * 4096);
            let mut arg = [g.index, g.pages as u64];
            libc::ioctl(self.dev.as_raw_fd(), GNTALLOC_DEALLOC, arg.as_mut_ptr());
        }
    }
}

impl Granted {
    /// Page `i` as bytes.
    pub fn page(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.pages);
        // SAFETY: inside the mapping made by `alloc`, which lives until `free`; the
        // backend may read it concurrently, which is what this program is for.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(i * 4096), 4096) }
    }
}

/// A shared ring page, as a frontend sees it (volatile: the backend writes it).
pub struct Page(pub *mut u8);

impl RingMemory for Page {
    fn len(&self) -> usize {
        4096
    }
    fn load_u32(&self, off: usize) -> u32 {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: `off` is one of the ring's index fields, inside the mapped page.
        unsafe { std::ptr::read_volatile(self.0.add(off) as *const u32) }
    }
    fn store_u32(&mut self, off: usize, v: u32) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: as for `load_u32`.
        unsafe { std::ptr::write_volatile(self.0.add(off) as *mut u32, v) }
    }
    fn read(&self, off: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: the ring code stays inside the page.
            *b = unsafe { std::ptr::read_volatile(self.0.add(off + i)) };
        }
    }
    fn write(&mut self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as for `read`.
            unsafe { std::ptr::write_volatile(self.0.add(off + i), *b) };
        }
    }
    fn full_fence(&self) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// Event channels to another domain.
pub struct Events {
    dev: File,
}

impl Events {
    pub fn open() -> Result<Events> {
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/xen/evtchn")
            .map_err(|e| format!("/dev/xen/evtchn: {e}"))?;
        Ok(Events { dev })
    }

    /// A port the backend domain `dom` can bind to.
    pub fn unbound(&self, dom: u16) -> Result<u32> {
        let mut arg = [dom as u32];
        // SAFETY: struct ioctl_evtchn_bind_unbound_port { u32 remote_domain; }.
        let r = unsafe { libc::ioctl(self.dev.as_raw_fd(), EVTCHN_BIND_UNBOUND, arg.as_mut_ptr()) };
        if r < 0 {
            return Err(format!("evtchn bind: {}", std::io::Error::last_os_error()));
        }
        Ok(r as u32)
    }

    pub fn notify(&self, port: u32) {
        let mut arg = [port];
        // SAFETY: struct ioctl_evtchn_notify { u32 port; }.
        unsafe { libc::ioctl(self.dev.as_raw_fd(), EVTCHN_NOTIFY, arg.as_mut_ptr()) };
    }
}
