//! GDT and TSS. The TSS exists only for its interrupt stack table: exceptions, NMI and
//! the self-test's `int` switch to one of these stacks (see isr.S for why); device,
//! timer and Xen interrupts run on the stack they interrupt (see `KernelIdle`).

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot numbers as the IDT encodes them (1-based).
pub const IST_NMI: u8 = 1;
pub const IST_DOUBLE_FAULT: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;
/// Other exceptions. Distinct from the interrupt slot so a fault inside an interrupt
/// handler does not overwrite the handler's frame.
pub const IST_EXCEPTION: u8 = 4;
/// The self-test's software interrupt.
pub const IST_INTERRUPT: u8 = 5;
const SLOTS: usize = 5;

pub const IST_STACK_SIZE: usize = 32 * 1024;
const GUARD: usize = 4096;

/// Each slot: one guard page (unmapped by mem::init) then the stack, growing down.
#[repr(C, align(4096))]
struct IstArea([[u8; GUARD + IST_STACK_SIZE]; SLOTS]);

static mut IST_AREA: IstArea = IstArea([[0; GUARD + IST_STACK_SIZE]; SLOTS]);

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(
    GlobalDescriptorTable,
    SegmentSelector,
    SegmentSelector,
    SegmentSelector,
)> = Once::new();

fn slot_base(i: usize) -> u64 {
    // Only the address is taken; no reference to the mutable static is formed.
    core::ptr::addr_of!(IST_AREA) as u64 + (i * (GUARD + IST_STACK_SIZE)) as u64
}

/// Guard pages below each IST stack, with a name for fault reports.
pub fn guard_pages() -> [(u64, &'static str); SLOTS] {
    const NAMES: [&str; SLOTS] = [
        "nmi",
        "double-fault",
        "machine-check",
        "exception",
        "interrupt",
    ];
    core::array::from_fn(|i| (slot_base(i), NAMES[i]))
}

pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        for i in 0..SLOTS {
            let top = slot_base(i) + (GUARD + IST_STACK_SIZE) as u64;
            tss.interrupt_stack_table[i] = VirtAddr::new(top);
        }
        tss
    });
    let (gdt, code, data, tss_sel) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        // Same selectors as the boot GDT in entry.S: 0x08 code, 0x10 data.
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = gdt.append(Descriptor::tss_segment(tss));
        (gdt, code, data, tss_sel)
    });
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which lives in a
    // static and is never modified again.
    unsafe {
        CS::set_reg(*code);
        DS::set_reg(*data);
        ES::set_reg(*data);
        SS::set_reg(*data);
        load_tss(*tss_sel);
    }
}
