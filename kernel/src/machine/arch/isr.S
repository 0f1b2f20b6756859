/*
 * Interrupt and exception entry.
 *
 * The precompiled core keeps data in the red zone below %rsp, which a frame pushed on
 * the interrupted stack would overwrite. Exceptions (which may hit any code) therefore
 * run on IST stacks (gdt.rs); device, timer and Xen interrupts are taken only where the
 * kernel opens interrupts, in its own code that keeps no red zone (KernelIdle in
 * main.rs), and run on the interrupted stack, so a repeated delivery nests. The common stub
 * saves all general registers and the full SSE state (fxsave64), because handlers are Rust
 * code that may use xmm registers the interrupted code was using.
 *
 * Stub i is at isr_stubs + 16*i. Vectors where the CPU pushes no error code push a zero,
 * so every frame has the same layout (see InterruptFrame in interrupts.rs).
 */
.section .text.isr, "ax"
.code64
.balign 16
.global isr_stubs
isr_stubs:
.set vec, 0
.rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp isr_common
    .set vec, vec + 1
.endr

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rbx              /* frame pointer for the handler; callee-saved */
    sub $512, %rsp
    and $-16, %rsp
    fxsave64 (%rsp)
    cld
    mov %rbx, %rdi
    call interrupt_dispatch
    fxrstor64 (%rsp)
    mov %rbx, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp               /* vector and error code */
    iretq
