/*
 * u64 selftest_state(u64 mode)
 *
 * Fills xmm0-15 and the 128-byte red zone below %rsp with known values, takes an
 * interrupt (mode 0: `int $0x81`, on its IST stack; mode 1: opens interrupts, as the
 * kernel does only in code without a red zone, and spins until the APIC timer handler
 * bumps TIMER_TICKS), then checks everything survived. Handlers for both clobber every
 * xmm register on purpose, so only the entry stub's fxsave/fxrstor (and, for mode 0,
 * the IST stack) can make this pass. Returns a bitmask: bits 0-15 xmm registers lost, bits 16-31 red-zone
 * qwords lost, bit 32 no interrupt arrived.
 */
.section .text.selftest_state, "ax"
.global selftest_state
selftest_state:
    push %rbx
    mov $0x5a5a000000000000, %rax
    /* red zone: 16 qwords at -8..-128(%rsp) */
    .set i, 1
    .rept 16
    lea i(%rax), %rbx
    mov %rbx, -(8 * i)(%rsp)
    .set i, i + 1
    .endr
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    lea (0x100 + \n)(%rax), %rbx
    movq %rbx, %xmm\n
    .endr
    test %rdi, %rdi
    jnz 1f
    int $0x81
    jmp 3f
1:  mov TIMER_TICKS(%rip), %r8
    mov $400000000, %r9
    /* Interrupts are opened only in kernel code, which keeps no red zone: step below
     * ours as such code would, then open them as the kernel's idle does. */
    sub $128, %rsp
    sti
2:  cmp TIMER_TICKS(%rip), %r8
    jne 7f
    dec %r9
    jnz 2b
    cli
    add $128, %rsp
    mov $1, %r10
    shl $32, %r10
    jmp 4f
7:  cli
    add $128, %rsp
3:  xor %r10, %r10
4:  .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    movq %xmm\n, %rbx
    lea (0x100 + \n)(%rax), %rcx
    cmp %rcx, %rbx
    je 5f
    bts $\n, %r10
5:
    .endr
    .set i, 1
    .rept 16
    lea i(%rax), %rcx
    cmp %rcx, -(8 * i)(%rsp)
    je 6f
    bts $(15 + i), %r10
6:
    .set i, i + 1
    .endr
    mov %r10, %rax
    pop %rbx
    ret
