//! Pages the kernel shares with Xen or with the toolstack's daemons and keeps for its
//! whole life: the shared-info page (event-channel bitmaps), the xenstore ring page and
//! the console ring page. The other side writes them at any time, so every access is
//! volatile or atomic and bounded to the page; nothing here forms a plain reference to
//! shared bytes. The constructors are the only way to get one, and each takes the page
//! from where Xen says it is (or gives Xen one of ours), so the page is mapped and no
//! Rust object lives in it.

use core::sync::atomic::{AtomicU64, AtomicU8};

use bulkhead_xen::{abi, Errno};
use spin::Once;

use super::hv;

const PAGE: usize = 4096;

/// The pages Xen names by HVM parameter for this domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvmPage {
    /// The xenstore ring (HVM_PARAM_STORE_PFN).
    Store,
    /// The PV console ring (HVM_PARAM_CONSOLE_PFN).
    Console,
}

/// One shared page, mapped for good.
#[derive(Debug)]
pub struct SharedPage {
    base: usize,
}

impl SharedPage {
    /// The page Xen names in HVM parameter `param` (the xenstore or console ring),
    /// identity-mapped read-write. The toolstack reserves these frames in the memory map,
    /// so the frame allocator never hands them out.
    /// The errors say which page.
    pub fn from_hvm_param(page: HvmPage) -> Result<SharedPage, &'static str> {
        let (param, unavailable, none, unmapped) = match page {
            HvmPage::Store => (
                abi::HVM_PARAM_STORE_PFN,
                "HVM_PARAM_STORE_PFN unavailable",
                "no xenstore page",
                "xenstore page could not be mapped",
            ),
            HvmPage::Console => (
                abi::HVM_PARAM_CONSOLE_PFN,
                "HVM_PARAM_CONSOLE_PFN unavailable",
                "no console page",
                "console page could not be mapped",
            ),
        };
        let pfn = hv::hvm_get_param(param).map_err(|_| unavailable)?;
        if pfn == 0 {
            return Err(none);
        }
        let base =
            super::mem::map_identity(pfn << 12, PAGE as u64, bulkhead_mm::paging::Flags::WRITE)
                .map_err(|_| unmapped)?;
        Ok(SharedPage {
            base: base as usize,
        })
    }

    /// A zeroed frame of ours to share: granted to another domain, or for Xen to copy
    /// into. Taken from the frame allocator for good (another domain may hold a mapping
    /// of it after we think we are done: it is never reused).
    #[cfg(feature = "test-hooks")] // the peer test's
    pub fn alloc() -> Result<SharedPage, &'static str> {
        let frame = super::mem::alloc_frames(1, PAGE as u64).map_err(|_| "no free frame")?;
        let p = SharedPage {
            base: frame as usize,
        };
        p.write_bytes(0, &[0; PAGE]);
        Ok(p)
    }

    /// Its frame number (for a grant or a copy).
    #[cfg(feature = "test-hooks")] // the peer test's
    pub fn frame(&self) -> u64 {
        self.base as u64 >> 12
    }

    /// Bytes `off..off + out.len()`, each read once (volatile).
    #[cfg(feature = "test-hooks")] // the peer test's
    pub fn read_bytes(&self, off: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read_u8(off + i);
        }
    }

    /// Write `data` at `off`, byte by byte (volatile).
    #[cfg(feature = "test-hooks")] // the peer test's
    pub fn write_bytes(&self, off: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.write_u8(off + i, b);
        }
    }

    /// The address of byte `off` of an access `width` bytes wide and aligned to it;
    /// panics on an offset outside the page (the callers' offsets are constants and
    /// ring indexes already reduced modulo the ring size).
    fn at(&self, off: usize, width: usize) -> usize {
        assert!(
            off.is_multiple_of(width) && off.checked_add(width).is_some_and(|e| e <= PAGE),
            "shared page access at {off:#x} (width {width}) outside the page"
        );
        self.base + off
    }

    pub fn read_u32(&self, off: usize) -> u32 {
        // SAFETY: inside the page (`at`), which stays mapped; volatile: the other side
        // writes it concurrently.
        unsafe { core::ptr::read_volatile(self.at(off, 4) as *const u32) }
    }

    pub fn write_u32(&self, off: usize, v: u32) {
        // SAFETY: as for `read_u32`.
        unsafe { core::ptr::write_volatile(self.at(off, 4) as *mut u32, v) }
    }

    pub fn read_u8(&self, off: usize) -> u8 {
        // SAFETY: as for `read_u32`.
        unsafe { core::ptr::read_volatile(self.at(off, 1) as *const u8) }
    }

    pub fn write_u8(&self, off: usize, v: u8) {
        // SAFETY: as for `read_u32`.
        unsafe { core::ptr::write_volatile(self.at(off, 1) as *mut u8, v) }
    }

    /// A 64-bit word both sides update atomically (the event-channel bitmaps).
    pub fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: inside the page and 8-byte aligned (`at`); the page outlives `self`'s
        // borrow; Xen updates these words with atomic instructions too.
        unsafe { AtomicU64::from_ptr(self.at(off, 8) as *mut u64) }
    }

    /// A byte both sides update atomically (vCPU 0's upcall flags).
    pub fn atomic_u8(&self, off: usize) -> &AtomicU8 {
        // SAFETY: as for `atomic_u64`.
        unsafe { AtomicU8::from_ptr(self.at(off, 1) as *mut u8) }
    }
}

static SHARED_INFO: Once<SharedPage> = Once::new();

/// Give Xen one of our frames for the shared-info page (XENMAPSPACE_shared_info), once.
pub fn map_shared_info() -> Result<&'static SharedPage, Errno> {
    if let Some(p) = SHARED_INFO.get() {
        return Ok(p);
    }
    // Taken from the allocator for good: from now on Xen's page lives at this frame.
    let frame = super::mem::alloc_frames(1, PAGE as u64).map_err(|_| Errno(-12))?;
    hv::add_to_physmap(abi::XENMAPSPACE_SHARED_INFO, 0, frame >> 12)?;
    Ok(SHARED_INFO.call_once(|| SharedPage {
        base: frame as usize,
    }))
}

/// The shared-info page, once mapped.
pub fn shared_info() -> Option<&'static SharedPage> {
    SHARED_INFO.get()
}
