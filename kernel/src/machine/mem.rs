//! Physical memory, the kernel's own page tables, and the heap.
//!
//! Bulkhead identity-maps what it uses (virtual = physical): RAM with 2 MiB pages where
//! possible, the image with per-section permissions (text RX, rodata R, data/bss RW, all
//! but text NX), 4 KiB guard pages left unmapped below every stack, page 0 unmapped so a
//! null dereference faults, and device memory mapped uncached on request. The walking and
//! bookkeeping logic is in the host-tested `bulkhead-mm` crate; this file supplies the
//! real memory and the TLB.

use bulkhead_boot::BootInfo;
use bulkhead_mm::frames::{self, FrameAllocator, FrameError};
use bulkhead_mm::paging::{Flags, MapError, PageTables, TableMemory};
use bulkhead_mm::{align_up, PAGE_SIZE};
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};
use linked_list_allocator::LockedHeap;
use spin::Mutex;
use x86_64::instructions::tlb;
use x86_64::VirtAddr;

#[global_allocator]
static HEAP: Heap = Heap(LockedHeap::empty());

/// The heap, where every buffer of a page or more starts on a page: a grant copy may
/// not cross a page on either side, so a packet or block buffer that starts on a page
/// takes one copy operation per guest page instead of two.
struct Heap(LockedHeap);

fn page_aligned(l: Layout) -> Layout {
    if l.size() >= PAGE_SIZE as usize {
        l.align_to(PAGE_SIZE as usize).unwrap_or(l)
    } else {
        l
    }
}

// SAFETY: a pass-through to LockedHeap; alloc and dealloc turn the caller's layout into
// the same page-aligned one (a function of the layout alone), so every block is freed
// with the layout it was allocated with.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract, with a layout at least as aligned.
        unsafe { self.0.alloc(page_aligned(l)) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` with the same caller layout, so the same
        // page-aligned one.
        unsafe { self.0.dealloc(p, page_aligned(l)) }
    }
}

static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);
/// Lock order: TABLES before FRAMES (table allocation takes frames).
static TABLES: Mutex<Option<PageTables<KernelTables>>> = Mutex::new(None);
static TABLE_FRAMES: AtomicUsize = AtomicUsize::new(0);
/// Free frames right after the allocator was built: what the kernel took since is its
/// dynamic footprint (page tables, heap, driver memory).
static INITIAL_FREE: AtomicUsize = AtomicUsize::new(0);
/// The image and the frame bitmap, reserved before the allocator starts counting.
static BASE_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Frames taken from the allocator and then given back to Xen (grant map slots): no
/// memory behind them any more.
static BALLOONED: AtomicUsize = AtomicUsize::new(0);
/// Where foreign grants are mapped when the memory map leaves room (0: it does not).
static GRANT_WINDOW: AtomicUsize = AtomicUsize::new(0);

/// Address space for foreign grants: 8192 pages (32 MiB) with nothing behind them, under
/// 2 GiB (the lowest a firmware starts PCI memory) and above everything the memory map
/// lists there. Mapping a grant there costs the domain no RAM of its own (it would
/// otherwise give a frame back to Xen for each), so a 32 MiB driver domain keeps as
/// many grants mapped as a large one.
pub const GRANT_WINDOW_BYTES: u64 = 32 << 20;
const GRANT_WINDOW_BELOW: u64 = 0x8000_0000;

/// The grant window's start, if the memory map had room for it.
pub fn grant_window() -> Option<u64> {
    match GRANT_WINDOW.load(Ordering::Relaxed) {
        0 => None,
        a => Some(a as u64),
    }
}

/// `frames` allocated frames were given back to Xen (decrease_reservation).
pub fn note_ballooned(frames: usize) {
    BALLOONED.fetch_add(frames, Ordering::Relaxed);
}

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
    #[link_name = "boot_stack_guard"]
    static BOOT_STACK_GUARD: u8;
}

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// Image section boundaries from the linker script.
pub struct ImageLayout {
    pub start: u64,
    pub text_end: u64,
    pub rodata_end: u64,
    pub end: u64,
}

pub fn image() -> ImageLayout {
    // SAFETY: only the addresses of linker-defined symbols are taken.
    unsafe {
        ImageLayout {
            start: sym(&__image_start),
            text_end: sym(&__text_end),
            rodata_end: sym(&__rodata_end),
            end: sym(&__image_end),
        }
    }
}

/// The page below the boot stack, left unmapped.
pub fn boot_stack_guard() -> u64 {
    // SAFETY: only the address of a symbol from entry.S is taken.
    unsafe { sym(&BOOT_STACK_GUARD) }
}

/// Read the boot stack's guard page (`test-fault`): the read must fault, and the fault is
/// fatal (the page fault handler names the guard page and stops the domain), so this
/// returns only if the guard page is missing.
#[cfg(feature = "test-hooks")]
pub fn read_boot_stack_guard() -> u64 {
    // SAFETY: not a memory access that can succeed: the guard page is unmapped, and the
    // fault it takes ends the kernel. Nothing lives there to alias.
    unsafe { core::ptr::read_volatile(boot_stack_guard() as *const u64) }
}

#[derive(Clone, Copy, Debug)]
pub enum MemError {
    Frames(FrameError),
    Map(MapError),
    NoRoomForBitmap { bytes: u64 },
    NotInitialized,
}

impl core::fmt::Display for MemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MemError::Frames(FrameError::OutOfMemory) => write!(f, "out of physical memory"),
            MemError::Frames(FrameError::BadFree(a)) => write!(f, "bad free of frame {a:#x}"),
            MemError::Frames(FrameError::BitmapTooSmall { needed_words }) => {
                write!(f, "frame bitmap too small ({needed_words} words needed)")
            }
            MemError::Map(e) => write!(f, "page-table update failed: {e:?}"),
            MemError::NoRoomForBitmap { bytes } => write!(
                f,
                "no RAM region below 4 GiB holds the {bytes}-byte frame bitmap"
            ),
            MemError::NotInitialized => write!(f, "memory management not initialised"),
        }
    }
}

impl From<FrameError> for MemError {
    fn from(e: FrameError) -> Self {
        MemError::Frames(e)
    }
}

impl From<MapError> for MemError {
    fn from(e: MapError) -> Self {
        MemError::Map(e)
    }
}

/// Page-table frames are RAM, identity-mapped in both the boot tables and ours.
struct KernelTables;

impl TableMemory for KernelTables {
    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` is a page-table frame this module allocated (or CR3's root) and
        // is identity-mapped; index < 512 is guaranteed by the walker.
        unsafe { core::ptr::read_volatile((table as *const u64).add(index)) }
    }

    fn write(&mut self, table: u64, index: usize, value: u64) {
        // SAFETY: as for `read`.
        unsafe { core::ptr::write_volatile((table as *mut u64).add(index), value) }
    }

    fn alloc_table(&mut self) -> Option<u64> {
        let f = FRAMES.lock().as_mut()?.alloc().ok()?;
        // SAFETY: the frame was just allocated to us and is identity-mapped RAM.
        unsafe { core::ptr::write_bytes(f as *mut u8, 0, PAGE_SIZE as usize) };
        TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
        Some(f)
    }
}

/// What memory management set up, for the boot report.
pub struct MemReport {
    pub usable: u64,
    pub image: u64,
    pub bitmap: u64,
    pub heap: u64,
}

/// The heap size when the command line does not choose: a quarter of RAM, at least 1
/// MiB and at most 64 MiB. (An eighth left a 32 MiB driver domain 4 MiB, of which the
/// packets waiting for guests may take a quarter: 1 MiB for every vif together.)
fn auto_heap(usable: u64) -> u64 {
    (usable / 4).clamp(1 << 20, 64 << 20)
}

pub fn init(boot: &BootInfo, heap_bytes: Option<u64>) -> Result<MemReport, MemError> {
    let img = image();
    let map = &boot.memory;
    let words = frames::bitmap_words(map);
    let bitmap_bytes = align_up(words as u64 * 8, PAGE_SIZE);
    // The bitmap goes in the first usable RAM above the image (and below 4 GiB, which the
    // boot page tables reach).
    let bitmap_at = map
        .usable()
        .filter_map(|r| {
            let start = r.start.max(img.end).max(0x10_0000);
            (start + bitmap_bytes <= r.end && start + bitmap_bytes <= 1 << 32).then_some(start)
        })
        .next()
        .ok_or(MemError::NoRoomForBitmap {
            bytes: bitmap_bytes,
        })?;
    // SAFETY: the range is usable RAM outside the image, identity-mapped by the boot page
    // tables, and reserved in the allocator below so nothing else ever uses it.
    let bitmap: &'static mut [u64] =
        unsafe { core::slice::from_raw_parts_mut(bitmap_at as *mut u64, words) };
    let reserved = [
        // Real-mode IVT, BIOS data, EBDA, option ROMs: never handed out.
        (0, 0x10_0000),
        (img.start, img.end),
        (bitmap_at, bitmap_at + bitmap_bytes),
    ];
    let fa = FrameAllocator::new(map, &reserved, bitmap)?;
    INITIAL_FREE.store(fa.free_frames(), Ordering::Relaxed);
    BASE_BYTES.store(
        (img.end - img.start + bitmap_bytes) as usize,
        Ordering::Relaxed,
    );
    *FRAMES.lock() = Some(fa);

    let mut pt = PageTables::new(KernelTables, crate::arch::cpu::has_nx())?;
    // The image, by section.
    pt.map_range(
        img.start,
        img.start,
        img.text_end - img.start,
        Flags::EXECUTE,
    )?;
    pt.map_range(
        img.text_end,
        img.text_end,
        img.rodata_end - img.text_end,
        Flags::empty(),
    )?;
    pt.map_range(
        img.rodata_end,
        img.rodata_end,
        img.end - img.rodata_end,
        Flags::WRITE,
    )?;
    // Low memory except page 0.
    pt.map_range(PAGE_SIZE, PAGE_SIZE, 0x10_0000 - PAGE_SIZE, Flags::WRITE)?;
    // All usable RAM, around the image.
    for r in map.usable() {
        for (s, e) in [
            (r.start, r.end.min(img.start)),
            (r.start.max(img.end), r.end),
        ] {
            let s = s.max(0x10_0000);
            if s < e {
                pt.map_range(s, s, e - s, Flags::WRITE)?;
            }
        }
    }
    // The grant window: mapped now (write-back, like the RAM of the guests whose pages
    // it will show), used only where a grant was mapped.
    if let Some(w) = map.free_window(GRANT_WINDOW_BYTES, 2 << 20, GRANT_WINDOW_BELOW) {
        pt.map_range(w, w, GRANT_WINDOW_BYTES, Flags::WRITE)?;
        GRANT_WINDOW.store(w as usize, Ordering::Relaxed);
    }
    for (guard, _) in guard_pages() {
        let _ = pt.unmap(guard)?;
    }
    // SAFETY: the new hierarchy maps everything the kernel is currently using: the image
    // (code, stacks, statics), all RAM (heap, bitmap, page tables, boot info copies were
    // taken before), low memory. The guard pages it omits are never touched on purpose.
    unsafe {
        use x86_64::registers::control::{Cr3, Cr3Flags};
        use x86_64::structures::paging::PhysFrame;
        use x86_64::PhysAddr;
        Cr3::write(
            PhysFrame::containing_address(PhysAddr::new(pt.root())),
            Cr3Flags::empty(),
        );
    }
    *TABLES.lock() = Some(pt);

    let heap = align_up(
        heap_bytes.unwrap_or_else(|| auto_heap(map.usable_bytes())),
        PAGE_SIZE,
    );
    let heap_at = alloc_frames((heap / PAGE_SIZE) as usize, PAGE_SIZE)?;
    // SAFETY: the frames were just allocated for the heap alone and are mapped RW.
    unsafe { HEAP.0.lock().init(heap_at as *mut u8, heap as usize) };

    Ok(MemReport {
        usable: map.usable_bytes(),
        image: img.end - img.start,
        bitmap: bitmap_bytes,
        heap,
    })
}

/// Guard pages: below the boot stack and below each IST stack.
fn guard_pages() -> impl Iterator<Item = (u64, &'static str)> {
    core::iter::once((boot_stack_guard(), "boot")).chain(crate::arch::gdt::guard_pages())
}

/// Which stack's guard page `addr` falls in, if any.
pub fn guard_page_name(addr: u64) -> Option<&'static str> {
    guard_pages()
        .find(|(g, _)| (*g..*g + PAGE_SIZE).contains(&addr))
        .map(|(_, n)| n)
}

pub(in crate::machine) fn alloc_frames(count: usize, align: u64) -> Result<u64, MemError> {
    Ok(FRAMES
        .lock()
        .as_mut()
        .ok_or(MemError::NotInitialized)?
        .alloc_contiguous(count, align)?)
}

pub(in crate::machine) fn free_frames(addr: u64, count: usize) -> Result<(), MemError> {
    Ok(FRAMES
        .lock()
        .as_mut()
        .ok_or(MemError::NotInitialized)?
        .free(addr, count)?)
}

#[cfg(feature = "test-hooks")] // the self-test's
pub fn free_frame_count() -> usize {
    FRAMES.lock().as_ref().map_or(0, |f| f.free_frames())
}

fn flush(f: bulkhead_mm::paging::Flush) {
    match f {
        bulkhead_mm::paging::Flush::None => {}
        bulkhead_mm::paging::Flush::Page(v) => tlb::flush(VirtAddr::new(v)),
        bulkhead_mm::paging::Flush::All => tlb::flush_all(),
    }
}

/// Map one page at `virt` (outside the identity range) to `phys`.
#[cfg(feature = "test-hooks")] // the self-test's
pub(in crate::machine) fn map_page(virt: u64, phys: u64, flags: Flags) -> Result<(), MemError> {
    let mut t = TABLES.lock();
    let pt = t.as_mut().ok_or(MemError::NotInitialized)?;
    pt.map(virt, phys, bulkhead_mm::paging::PageSize::Size4K, flags)?;
    Ok(())
}

#[cfg(feature = "test-hooks")] // the self-test's
pub(in crate::machine) fn unmap_page(virt: u64) -> Result<u64, MemError> {
    let mut t = TABLES.lock();
    let pt = t.as_mut().ok_or(MemError::NotInitialized)?;
    let (frame, f) = pt.unmap(virt)?;
    flush(f);
    Ok(frame)
}

#[cfg(feature = "test-hooks")] // the self-test's
pub fn translate(virt: u64) -> Option<(u64, Flags)> {
    TABLES
        .lock()
        .as_ref()?
        .translate(virt)
        .map(|(p, f, _)| (p, f))
}

/// Identity-map `[phys, phys+len)` with `flags`; pages already mapped with at least those
/// permissions and the same cacheability are accepted as they are.
pub fn map_identity(phys: u64, len: u64, flags: Flags) -> Result<u64, MemError> {
    let mut t = TABLES.lock();
    let pt = t.as_mut().ok_or(MemError::NotInitialized)?;
    let start = phys & !(PAGE_SIZE - 1);
    let end = align_up(phys + len, PAGE_SIZE);
    for page in (start..end).step_by(PAGE_SIZE as usize) {
        match pt.translate(page) {
            Some((p, have, _)) if p == page => {
                let same_cache = have.contains(Flags::UNCACHED) == flags.contains(Flags::UNCACHED);
                if !same_cache || (flags.contains(Flags::WRITE) && !have.contains(Flags::WRITE)) {
                    flush(pt.protect(page, flags)?);
                }
            }
            Some(_) => return Err(MemError::Map(MapError::AlreadyMapped(page))),
            None => pt.map(page, page, bulkhead_mm::paging::PageSize::Size4K, flags)?,
        }
    }
    Ok(phys)
}

/// Device registers: identity-mapped, writable, uncached, never executable.
pub fn map_mmio(phys: u64, len: u64) -> Result<u64, MemError> {
    map_identity(phys, len, Flags::WRITE | Flags::UNCACHED)
}

/// Memory in use, for the boot report and the self-test.
pub struct Usage {
    /// Frames taken from the allocator since boot (page tables, heap, buffers).
    pub frames_allocated: usize,
    pub frames_free: usize,
    pub table_frames: usize,
    pub heap_used: usize,
    pub heap_size: usize,
}

impl Usage {
    /// What the kernel took: the image, the bitmap and every frame allocated since (the
    /// heap whole), as the boot report counts it.
    pub fn taken_bytes(&self) -> usize {
        BASE_BYTES.load(Ordering::Relaxed) + self.frames_allocated * 4096
    }

    /// Memory really in use: what was taken, less the frames given back to Xen and the
    /// part of the heap that holds nothing (`make bench` compares it with a Linux driver
    /// domain's `free`).
    pub fn in_use_bytes(&self) -> usize {
        self.taken_bytes()
            .saturating_sub(BALLOONED.load(Ordering::Relaxed) * 4096)
            .saturating_sub(self.heap_size - self.heap_used)
    }
}

pub fn usage() -> Usage {
    let free = FRAMES.lock().as_ref().map_or(0, |f| f.free_frames());
    let h = HEAP.0.lock();
    Usage {
        frames_allocated: INITIAL_FREE.load(Ordering::Relaxed).saturating_sub(free),
        frames_free: free,
        table_frames: TABLE_FRAMES.load(Ordering::Relaxed),
        heap_used: h.used(),
        heap_size: h.size(),
    }
}
