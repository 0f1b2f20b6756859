//! In-kernel self-test (`selftest` on the command line): exercises the parts that cannot
//! run on the host — real frames, the live page tables, the heap, the APIC timer and
//! interrupt entry — and prints one result line per check (`result: name=selftest
//! check=NAME pass=1|0 detail="..."`) and a summary (`checks=N failed=N pass=1|0`), which
//! the test runner parses.
// A check returns its 160-byte message by value either way; each runs once.
#![allow(clippy::result_large_err)]

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bulkhead_executor::Handle;
use bulkhead_mm::paging::Flags;
use bulkhead_mm::PAGE_SIZE;

use crate::arch::{apic, interrupts, vectors};
use crate::{mem, println, time};

core::arch::global_asm!(include_str!("selftest_state.S"), options(att_syntax));

extern "C" {
    fn selftest_state(mode: u64) -> u64;
}

/// Bumped by the APIC timer handler; read by selftest_state.S.
#[no_mangle]
pub static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);
/// While set, interrupt handlers wipe every xmm register, to prove the entry stub saves them.
static CLOBBER_XMM: AtomicBool = AtomicBool::new(false);

pub fn on_timer_interrupt() {
    TIMER_TICKS.fetch_add(1, Ordering::Relaxed);
    if CLOBBER_XMM.load(Ordering::Relaxed) {
        clobber_xmm();
    }
}

fn clobber_xmm() {
    // SAFETY: only xmm registers are written, and they are declared clobbered.
    unsafe {
        core::arch::asm!(
            "xorps xmm0, xmm0", "xorps xmm1, xmm1", "xorps xmm2, xmm2", "xorps xmm3, xmm3",
            "xorps xmm4, xmm4", "xorps xmm5, xmm5", "xorps xmm6, xmm6", "xorps xmm7, xmm7",
            "xorps xmm8, xmm8", "xorps xmm9, xmm9", "xorps xmm10, xmm10", "xorps xmm11, xmm11",
            "xorps xmm12, xmm12", "xorps xmm13, xmm13", "xorps xmm14, xmm14", "xorps xmm15, xmm15",
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _,
            out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack, nomem),
        );
    }
}

fn selftest_vector(_f: &mut interrupts::InterruptFrame) {
    clobber_xmm();
}

type Detail = heapless::String<160>;

fn detail(args: core::fmt::Arguments) -> Detail {
    let mut s = Detail::new();
    let _ = s.write_fmt(args);
    s
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(detail(format_args!($($arg)*)));
        }
    };
}

type CheckResult = Result<Detail, Detail>;

fn check_frames() -> CheckResult {
    let free0 = mem::free_frame_count();
    let mut got = Vec::new();
    for i in 0..64u64 {
        let f =
            mem::alloc_frames(1, PAGE_SIZE).map_err(|e| detail(format_args!("alloc: {e:?}")))?;
        ensure!(f % PAGE_SIZE == 0 && f >= 0x10_0000, "bad frame {f:#x}");
        // SAFETY: the frame is ours and identity-mapped RAM.
        unsafe { core::ptr::write_bytes(f as *mut u8, (i as u8) ^ 0xa5, PAGE_SIZE as usize) };
        got.push(f);
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    ensure!(sorted.len() == got.len(), "a frame was handed out twice");
    for (i, f) in got.iter().enumerate() {
        // SAFETY: as above; reading back what was written.
        let page = unsafe { core::slice::from_raw_parts(*f as *const u8, PAGE_SIZE as usize) };
        ensure!(
            page.iter().all(|&b| b == (i as u8) ^ 0xa5),
            "frame {f:#x} lost its contents"
        );
    }
    ensure!(
        mem::free_frame_count() == free0 - 64,
        "free count did not drop by 64"
    );
    let run =
        mem::alloc_frames(16, 0x10000).map_err(|e| detail(format_args!("contiguous: {e:?}")))?;
    ensure!(run % 0x10000 == 0, "run {run:#x} not 64 KiB aligned");
    ensure!(
        !got.iter().any(|f| (run..run + 16 * PAGE_SIZE).contains(f)),
        "run overlaps single frames"
    );
    for f in got {
        mem::free_frames(f, 1).map_err(|e| detail(format_args!("free: {e:?}")))?;
    }
    mem::free_frames(run, 16).map_err(|e| detail(format_args!("free run: {e:?}")))?;
    ensure!(mem::free_frames(run, 16).is_err(), "double free accepted");
    ensure!(mem::free_frame_count() == free0, "free count not restored");
    Ok(detail(format_args!(
        "64 frames + 16-frame aligned run, {} free",
        free0
    )))
}

fn check_heap() -> CheckResult {
    let before = mem::usage().heap_used;
    {
        let mut v: Vec<Box<[u32]>> = Vec::new();
        for n in [1usize, 7, 64, 1000, 4096, 65536] {
            v.push((0..n as u32).map(|x| x.wrapping_mul(2654435761)).collect());
        }
        for b in &v {
            ensure!(
                b.iter()
                    .enumerate()
                    .all(|(i, &x)| x == (i as u32).wrapping_mul(2654435761)),
                "heap block of {} words corrupted",
                b.len()
            );
        }
        let big: Vec<u8> = alloc::vec![0x5a; 256 * 1024];
        ensure!(big.iter().all(|&b| b == 0x5a), "256 KiB block corrupted");
    }
    let after = mem::usage().heap_used;
    ensure!(
        after == before,
        "heap use {before} -> {after} after freeing everything"
    );
    Ok(detail(format_args!(
        "{} bytes in use, {} KiB heap",
        after,
        mem::usage().heap_size / 1024
    )))
}

fn check_paging_map() -> CheckResult {
    const VIRT: u64 = 0x4000_0000_0000;
    let frame = mem::alloc_frames(1, PAGE_SIZE).map_err(|e| detail(format_args!("{e:?}")))?;
    mem::map_page(VIRT, frame, Flags::WRITE).map_err(|e| detail(format_args!("map: {e:?}")))?;
    ensure!(
        mem::translate(VIRT + 8) == Some((frame + 8, Flags::WRITE)),
        "translate after map"
    );
    // SAFETY: VIRT was just mapped writable to a frame we own.
    unsafe { core::ptr::write_volatile((VIRT + 8) as *mut u64, 0xfeed_f00d_dead_beef) };
    // SAFETY: the same frame through its identity mapping.
    let via_identity = unsafe { core::ptr::read_volatile((frame + 8) as *const u64) };
    ensure!(
        via_identity == 0xfeed_f00d_dead_beef,
        "alias read {via_identity:#x}"
    );
    let back = mem::unmap_page(VIRT).map_err(|e| detail(format_args!("unmap: {e:?}")))?;
    ensure!(back == frame, "unmap returned {back:#x}");
    ensure!(mem::translate(VIRT).is_none(), "still mapped after unmap");
    ensure!(mem::unmap_page(VIRT).is_err(), "second unmap accepted");
    mem::free_frames(frame, 1).map_err(|e| detail(format_args!("{e:?}")))?;
    Ok(detail(format_args!(
        "{VIRT:#x} -> {frame:#x}, written, read via identity, unmapped"
    )))
}

fn check_permissions() -> CheckResult {
    let img = mem::image();
    let nx = crate::arch::cpu::has_nx();
    let text = mem::translate(img.start).map(|t| t.1);
    ensure!(text == Some(Flags::EXECUTE), "text flags {text:?}");
    let ro = mem::translate(img.text_end).map(|t| t.1);
    let ro_want = if nx { Flags::empty() } else { Flags::EXECUTE };
    ensure!(ro == Some(ro_want), "rodata flags {ro:?}");
    let data = mem::translate(img.rodata_end).map(|t| t.1);
    let data_want = if nx {
        Flags::WRITE
    } else {
        Flags::WRITE | Flags::EXECUTE
    };
    ensure!(data == Some(data_want), "data flags {data:?}");
    ensure!(mem::translate(0).is_none(), "page 0 is mapped");
    let guard = mem::boot_stack_guard();
    ensure!(
        mem::translate(guard).is_none(),
        "boot stack guard {guard:#x} mapped"
    );
    ensure!(
        mem::translate(guard + PAGE_SIZE).is_some(),
        "boot stack not mapped"
    );
    for (g, name) in crate::arch::gdt::guard_pages() {
        ensure!(mem::translate(g).is_none(), "{name} stack guard mapped");
    }
    Ok(detail(format_args!(
        "text RX, rodata R, data RW{}, page 0 and 6 guard pages unmapped",
        if nx { " NX" } else { "" }
    )))
}

fn check_mmio() -> CheckResult {
    let msr_base = {
        let m = x86_64::registers::model_specific::Msr::new(0x1b);
        // SAFETY: reading IA32_APIC_BASE has no side effects.
        unsafe { m.read() & 0x000f_ffff_ffff_f000 }
    };
    let t = mem::translate(msr_base);
    ensure!(
        matches!(t, Some((p, f)) if p == msr_base && f.contains(Flags::UNCACHED) && f.contains(Flags::WRITE)),
        "APIC page mapping {t:?}"
    );
    let v = apic::version();
    ensure!(
        (0x10..=0x1f).contains(&v),
        "APIC version register reads {v:#x}"
    );
    Ok(detail(format_args!(
        "APIC at {msr_base:#x} uncached, version {v:#x}, id {}",
        apic::id()
    )))
}

fn check_soft_interrupt() -> CheckResult {
    let before = interrupts::COUNT[vectors::VECTOR_SELFTEST as usize].load(Ordering::Relaxed);
    // SAFETY: selftest_state only touches its own stack frame, the red zone below it and
    // xmm registers, all of which it declares by being an ordinary C function.
    let lost = unsafe { selftest_state(0) };
    let after = interrupts::COUNT[vectors::VECTOR_SELFTEST as usize].load(Ordering::Relaxed);
    ensure!(
        after == before + 1,
        "vector {:#x} handler ran {} times",
        vectors::VECTOR_SELFTEST,
        after - before
    );
    ensure!(
        lost == 0,
        "state lost across int: mask {lost:#x} (bits 0-15 xmm, 16-31 red zone)"
    );
    Ok(detail(format_args!(
        "int {:#x}: xmm0-15 and red zone intact",
        vectors::VECTOR_SELFTEST
    )))
}

fn check_timer_interrupt() -> CheckResult {
    CLOBBER_XMM.store(true, Ordering::Relaxed);
    apic::arm_oneshot(2_000_000);
    // SAFETY: as in check_soft_interrupt; it opens and closes interrupts itself.
    let lost = unsafe { selftest_state(1) };
    CLOBBER_XMM.store(false, Ordering::Relaxed);
    ensure!(lost & (1 << 32) == 0, "no APIC timer interrupt arrived");
    ensure!(
        lost == 0,
        "state lost across the timer interrupt: mask {lost:#x}"
    );
    Ok(detail(format_args!(
        "APIC timer interrupt mid-loop: xmm0-15 and red zone intact"
    )))
}

async fn check_sleep(h: Handle) -> CheckResult {
    let ticks0 = TIMER_TICKS.load(Ordering::Relaxed);
    let t0 = h.now();
    h.sleep(50_000_000).await;
    let elapsed = h.now() - t0;
    let ticks = TIMER_TICKS.load(Ordering::Relaxed) - ticks0;
    ensure!(
        elapsed >= 50_000_000,
        "woke after {elapsed} ns, before the 50 ms deadline"
    );
    ensure!(
        ticks >= 1,
        "no timer interrupt during the sleep: the loop busy-waited"
    );
    Ok(detail(format_args!(
        "50 ms sleep took {} us, {} timer interrupt(s)",
        elapsed / 1000,
        ticks
    )))
}

async fn check_task_order(h: Handle) -> CheckResult {
    let order = Rc::new(RefCell::new(Vec::new()));
    let done = Rc::new(RefCell::new(0));
    for (name, ms) in [("c", 30u64), ("a", 10), ("b", 20)] {
        let (o, d, h2) = (order.clone(), done.clone(), h.clone());
        h.spawn("selftest-sleeper", async move {
            h2.sleep(ms * 1_000_000).await;
            o.borrow_mut().push(name);
            *d.borrow_mut() += 1;
        });
    }
    while *done.borrow() < 3 {
        h.sleep(5_000_000).await;
    }
    let o = order.borrow();
    ensure!(
        o.as_slice() == ["a", "b", "c"],
        "tasks finished in order {:?}",
        o.as_slice()
    );
    Ok(detail(format_args!("3 tasks woke in deadline order")))
}

fn report(name: &str, r: CheckResult, passed: &mut u32, failed: &mut u32) {
    match r {
        Ok(d) => {
            *passed += 1;
            println!("result: name=selftest check={name} pass=1 detail=\"{d}\"");
        }
        Err(d) => {
            *failed += 1;
            println!("result: name=selftest check={name} pass=0 detail=\"{d}\"");
        }
    }
}

/// Register what the self-test needs before interrupts are enabled.
pub fn prepare() {
    interrupts::register(vectors::VECTOR_SELFTEST, selftest_vector);
}

/// Run every check, print the verdict, and power off (success) or crash (failure).
pub async fn run(h: Handle) {
    let (mut passed, mut failed) = (0, 0);
    println!("selftest: starting");
    type Check = (&'static str, fn() -> CheckResult);
    let sync_checks: [Check; 6] = [
        ("frames", check_frames),
        ("heap", check_heap),
        ("paging-map-unmap", check_paging_map),
        ("paging-permissions", check_permissions),
        ("mmio-uncached", check_mmio),
        ("interrupt-return", check_soft_interrupt),
    ];
    for (name, f) in sync_checks {
        report(name, f(), &mut passed, &mut failed);
    }
    report(
        "timer-interrupt",
        check_timer_interrupt(),
        &mut passed,
        &mut failed,
    );
    report(
        "timer-sleep",
        check_sleep(h.clone()).await,
        &mut passed,
        &mut failed,
    );
    report(
        "event-loop",
        check_task_order(h.clone()).await,
        &mut passed,
        &mut failed,
    );
    let clock_ok = time::now_ns() > 0;
    report(
        "clock",
        if clock_ok {
            Ok(detail(format_args!("TSC {} kHz", time::tsc_khz())))
        } else {
            Err(detail(format_args!("clock not running")))
        },
        &mut passed,
        &mut failed,
    );
    println!(
        "result: name=selftest checks={} failed={failed} pass={}",
        passed + failed,
        u8::from(failed == 0)
    );
    if failed == 0 {
        crate::platform::poweroff();
    } else {
        crate::platform::crash();
    }
}
