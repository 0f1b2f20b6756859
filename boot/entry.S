/*
 * Bulkhead's two entry protocols, converging on one long-mode path.
 *
 *   multiboot v1 (bare `qemu -kernel`, Xen type="hvm" direct kernel boot):
 *       32-bit protected mode, paging off, %eax = 0x2BADB002, %ebx = multiboot info.
 *   Xen PVH (XEN_ELFNOTE_PHYS32_ENTRY; Xen type="pvh", QEMU without a multiboot header):
 *       32-bit protected mode, paging off, %ebx = hvm_start_info.
 *
 * Both zero .bss, identity-map the first 4 GiB with 2 MiB pages, enable SSE (the
 * precompiled core uses it), enter long mode and call
 *     kernel_start(protocol: u64, magic: u64, info: u64)
 * on the boot stack. Rust validates everything; this code only records what it was given.
 * Assembled as part of the kernel crate (global_asm!, AT&T syntax).
 */

.set BOOT_PROTOCOL_MULTIBOOT, 1
.set BOOT_PROTOCOL_PVH, 2

.set MB_MAGIC, 0x1BADB002
/* bit 0: page-align modules, bit 1: memory info, bit 16: a.out kludge (addresses below) */
.set MB_FLAGS, 0x00010003

.section .multiboot_header, "a"
.balign 4
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long multiboot_header      /* header_addr */
    .long __image_start         /* load_addr */
    .long __data_end            /* load_end_addr */
    .long __bss_end             /* bss_end_addr */
    .long multiboot_entry32     /* entry_addr */

/* XEN_ELFNOTE_PHYS32_ENTRY (18): name "Xen", 8-byte descriptor = 32-bit entry address. */
.section .note.Xen, "a", @note
.balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_entry32
    .balign 4

.section .boot.text, "ax"
.code32
.global multiboot_entry32
multiboot_entry32:
    cli
    cld
    mov %ebx, %esi
    mov %eax, %edi
    mov $BOOT_PROTOCOL_MULTIBOOT, %ebp
    jmp common32

.global pvh_entry32
pvh_entry32:
    cli
    cld
    mov %ebx, %esi
    xor %edi, %edi
    mov $BOOT_PROTOCOL_PVH, %ebp

/*
 * %ebp = protocol, %edi = loader magic, %esi = info address. Nothing else is trusted.
 * CPUID clobbers eax-edx, so the magic moves to %ebx only after the checks below.
 */
common32:
    lgdt gdt64_ptr

    /* Long mode present? (CPUID 0x80000001 EDX bit 29) */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb no_long_mode
    mov $0x80000001, %eax
    cpuid
    bt $29, %edx
    jnc no_long_mode

    mov %edi, %ebx

    /* Zero .bss: the boot page tables and stacks live there. */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages = 4 GiB. */
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov $boot_pdpt, %edi
    mov $boot_pd, %eax
    or $3, %eax
    mov $4, %ecx
1:  mov %eax, (%edi)
    add $4096, %eax
    add $8, %edi
    loop 1b
    mov $boot_pd, %edi
    mov $0x83, %eax             /* present, writable, 2 MiB */
    xor %edx, %edx
    mov $2048, %ecx
2:  mov %eax, (%edi)
    mov %edx, 4(%edi)
    add $0x200000, %eax
    adc $0, %edx
    add $8, %edi
    loop 2b

    /* CR4: PAE | OSFXSR | OSXMMEXCPT (SSE usable). */
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    /* EFER.LME */
    mov $0xC0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    wrmsr
    /* CR0: PG | WP | NE | MP | PE, and clear EM and TS so SSE does not trap. */
    mov %cr0, %eax
    and $~((1 << 2) | (1 << 3)), %eax
    or $((1 << 31) | (1 << 16) | (1 << 5) | (1 << 1) | 1), %eax
    mov %eax, %cr0
    ljmp $0x08, $long_mode_entry

/* Print a fixed message on COM1 and port 0xe9 (Xen's debug port), then stop. */
no_long_mode:
    mov $msg_no_long_mode, %esi
3:  lodsb
    test %al, %al
    jz 4f
    mov $0xe9, %dx
    outb %al, %dx
    mov $0x3f8, %dx
    outb %al, %dx
    jmp 3b
4:  cli
    hlt
    jmp 4b

.code64
long_mode_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    lea boot_stack_top(%rip), %rsp
    fninit
    /* 32-bit moves zero-extend: the upper halves are undefined after the switch. */
    mov %esi, %edx
    mov %ebx, %esi
    mov %ebp, %edi
    xor %ebp, %ebp
    call kernel_start
5:  cli
    hlt
    jmp 5b

.section .rodata
.balign 8
gdt64:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
gdt64_end:
gdt64_ptr:
    .word gdt64_end - gdt64 - 1
    .quad gdt64
msg_no_long_mode:
    .asciz "bulkhead: this CPU has no long mode (x86-64); cannot boot\r\n"

.section .bss.boot, "aw", @nobits
.balign 4096
.global boot_pml4
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4 * 4096
/* The page below the boot stack is left unmapped by the kernel's page tables. */
.global boot_stack_guard
boot_stack_guard: .skip 4096
.global boot_stack_bottom
boot_stack_bottom: .skip 128 * 1024
.global boot_stack_top
boot_stack_top:
