/* fifo: FIFO event channels (the Xen 4.4+ ABI) — EVTCHNOP_init_control and expand_array
 * with their errors, VIRQ_TIMER from a single-shot timer linked on its queue with the
 * upcall, set_priority (queues consumed highest priority first), masked delivery and
 * EVTCHNOP_unmask relinking. The upcall walks the queues as a FIFO guest does.
 * Prints "XENOLITH-TEST fifo: PASS" or FAIL with the step, then powers off. */
#include "xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-fifo")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define EXPECT(v, step) cmp $(v), %rax; je 9f; movl $(step), step_no(%rip); jmp fail; 9:
#define EXPECT32(v, step) cmp $(v), %eax; je 9f; movl $(step), step_no(%rip); jmp fail; 9:
#define EVTCHN(cmd, arg) mov $(cmd), %edi; lea arg(%rip), %rsi; HYPERCALL(32)
#define SHINFO 0x380000
#define MASK (SHINFO + 1)
#define TIME (SHINFO + 32)
#define CB_PFN 0x210                       /* control block frame (VA == PA) */
#define CB (CB_PFN * 4096 + 0x40)          /* ready @0, head[16] @8 */
#define ARR_PFN 0x211                      /* event array frame 0: ports 0-1023 */
#define ARR (ARR_PFN * 4096)
#define W_PENDING 0x80000000
#define W_MASKED 0x40000000
#define W_LINKED 0x20000000

        .section .text.entry, "ax"
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        lea stack_top(%rip), %rsp
        /* map shared_info */
        mov $SHINFO, %rdi
        mov 40(%rsi), %rsi
        or $3, %rsi
        xor %edx, %edx
        HYPERCALL(14)
        EXPECT(0, 1)
        lea cb(%rip), %rsi
        xor %edi, %edi                     /* CALLBACKOP_register */
        HYPERCALL(30)
        EXPECT(0, 2)
        /* the control block and event array frames start zeroed */
        mov $(CB_PFN * 4096), %rdi
        xor %eax, %eax
        mov $1024, %ecx
        rep stosq
        /* 1. before init_control: expand_array -EOPNOTSUPP, set_priority -ENOSYS */
        EVTCHN(12, expand)
        EXPECT(-95, 3)
        movl $1, prio(%rip)
        movl $3, prio+4(%rip)
        EVTCHN(13, prio)
        EXPECT(-38, 4)
        /* 2. init_control errors: misaligned offset, crossing the frame, bad vCPU */
        movl $0x44, initc+8(%rip)
        EVTCHN(11, initc)
        EXPECT(-22, 5)
        movl $4032, initc+8(%rip)
        EVTCHN(11, initc)
        EXPECT(-22, 6)
        movl $0x40, initc+8(%rip)
        movl $1, initc+12(%rip)
        EVTCHN(11, initc)
        EXPECT(-2, 7)
        movl $0, initc+12(%rip)
        /* 3. init_control: link_bits 17; a second one is -EINVAL */
        EVTCHN(11, initc)
        EXPECT(0, 8)
        movzbl initc+16(%rip), %eax
        EXPECT(17, 9)
        EVTCHN(11, initc)
        EXPECT(-22, 10)
        /* 4. expand_array: a frame outside RAM is -EINVAL; then frame 0 of the array */
        movq $0xfffffff, expand(%rip)
        EVTCHN(12, expand)
        EXPECT(-22, 11)
        movq $ARR_PFN, expand(%rip)
        EVTCHN(12, expand)
        EXPECT(0, 12)
        /* 5. bind VIRQ_TIMER; a single-shot timer 10 ms ahead; block: the upcall sees the
         * port linked at the head of queue 7 (the default priority) */
        movl $0, bind(%rip)
        movl $0, bind+4(%rip)
        EVTCHN(1, bind)
        EXPECT(0, 13)
        mov bind+8(%rip), %eax
        mov %eax, virq_port(%rip)
        cmp $3, %eax                       /* ports 1 and 2 are the rings' */
        jb 8f
        call now
        lea 10000000(%rax), %rbx
        mov %rbx, sshot(%rip)
        movl $1, sshot+8(%rip)
        mov $8, %edi                       /* VCPUOP_set_singleshot_timer */
        xor %esi, %esi
        lea sshot(%rip), %rdx
        HYPERCALL(24)
        EXPECT(0, 14)
        mov $1, %edi                       /* SCHEDOP_block */
        xor %esi, %esi
        HYPERCALL(29)
        EXPECT(0, 15)
        mov upcalls(%rip), %eax
        EXPECT(1, 16)
        mov nlog(%rip), %eax
        EXPECT(1, 17)
        mov logp(%rip), %eax
        cmp virq_port(%rip), %eax
        jne 8f
        mov logq(%rip), %eax
        EXPECT(7, 18)
        mov logw(%rip), %eax
        EXPECT32(W_PENDING | W_LINKED, 19)
        mov CB, %eax                       /* READY cleared by the consumer */
        EXPECT(0, 20)
        /* 6. set_priority: 16 and a port beyond 2^17 are -EINVAL; the timer gets 2 */
        mov virq_port(%rip), %eax
        mov %eax, prio(%rip)
        movl $16, prio+4(%rip)
        EVTCHN(13, prio)
        EXPECT(-22, 21)
        movl $0x20000, prio(%rip)
        movl $2, prio+4(%rip)
        EVTCHN(13, prio)
        EXPECT(-22, 22)
        mov virq_port(%rip), %eax
        mov %eax, prio(%rip)
        EVTCHN(13, prio)
        EXPECT(0, 23)
        /* 7. an IPI (priority 7) sent first, then the timer (priority 2), events masked:
         * both linked, one upcall on unmasking, the timer's queue consumed first */
        movl $0, ipi(%rip)
        EVTCHN(7, ipi)
        EXPECT(0, 24)
        mov ipi+4(%rip), %eax
        mov %eax, ipi_port(%rip)
        mov %eax, send(%rip)
        movl $0, nlog(%rip)
        movb $1, MASK
        EVTCHN(4, send)
        EXPECT(0, 25)
        mov $1, %edi                       /* set_timer_op in the past: fires now */
        HYPERCALL(15)
        EXPECT(0, 26)
        mov upcalls(%rip), %eax
        EXPECT(1, 27)
        mov CB, %eax                       /* READY: queues 2 and 7 */
        EXPECT((1 << 2) | (1 << 7), 28)
        mov CB+8+2*4, %eax                 /* head[2] */
        cmp virq_port(%rip), %eax
        jne 8f
        mov CB+8+7*4, %eax                 /* head[7] */
        cmp ipi_port(%rip), %eax
        jne 8f
        cmpb $1, SHINFO                    /* evtchn_upcall_pending */
        jne 8f
        movb $0, MASK
        xor %edi, %edi
        HYPERCALL(17)                      /* xen_version: the delivery point */
        mov upcalls(%rip), %eax
        EXPECT(2, 29)
        mov nlog(%rip), %eax
        EXPECT(2, 30)
        mov logp(%rip), %eax
        cmp virq_port(%rip), %eax
        jne 8f
        mov logq(%rip), %eax
        EXPECT(2, 31)
        mov logp+4(%rip), %eax
        cmp ipi_port(%rip), %eax
        jne 8f
        mov logq+4(%rip), %eax
        EXPECT(7, 32)
        /* 8. a MASKED event word: the send makes it PENDING but does not link it and no
         * upcall comes; EVTCHNOP_unmask clears MASKED and links it: the upcall */
        mov ipi_port(%rip), %eax
        lea ARR(,%rax,4), %rbx
        lock orl $W_MASKED, (%rbx)
        movl $0, nlog(%rip)
        EVTCHN(4, send)
        EXPECT(0, 33)
        mov upcalls(%rip), %eax
        EXPECT(2, 34)
        mov (%rbx), %eax
        EXPECT32(W_PENDING | W_MASKED, 35)
        mov CB, %eax
        EXPECT(0, 36)
        mov ipi_port(%rip), %eax
        mov %eax, unmask(%rip)
        EVTCHN(9, unmask)
        EXPECT(0, 37)
        mov upcalls(%rip), %eax
        EXPECT(3, 38)
        mov nlog(%rip), %eax
        EXPECT(1, 39)
        mov logw(%rip), %eax
        EXPECT32(W_PENDING | W_LINKED, 40)
        mov (%rbx), %eax                   /* consumed */
        EXPECT(0, 41)

        jmp test_pass

/* now(): system time in ns from vcpu_time_info (version loop, pvclock formula) */
now:
        push %rbx
        push %rcx
        push %rdx
1:      mov TIME, %r8d                     /* version */
        test $1, %r8d
        jnz 1b
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
        sub TIME+8, %rax                   /* tsc_timestamp */
        movsbl TIME+28, %ecx               /* tsc_shift */
        test %ecx, %ecx
        js 2f
        shl %cl, %rax
        jmp 3f
2:      neg %ecx
        shr %cl, %rax
3:      mov TIME+24, %ecx                  /* tsc_to_system_mul */
        mul %rcx
        shrd $32, %rdx, %rax
        add TIME+16, %rax                  /* system_time */
        cmp TIME, %r8d
        jne 1b
        pop %rdx
        pop %rcx
        pop %rbx
        ret

/* The event callback: frame rcx, r11, rip, cs, rflags, rsp, ss; events are masked.
 * Consume the ready queues, highest priority (lowest number) first: take the head, log
 * (port, priority, event word), make the word's link the new head and clear the word's
 * PENDING, LINKED and link (MASKED stays); an emptied queue's READY bit is cleared. */
upcall:
        pop %rcx
        pop %r11
        push %rax
        push %rbx
        push %rdx
        push %rsi
        push %rdi
        push %r8
        movb $0, SHINFO                    /* evtchn_upcall_pending = 0 */
1:      mov CB, %eax                       /* READY */
        test %eax, %eax
        jz 5f
        bsf %eax, %esi                     /* q */
2:      mov CB+8(,%rsi,4), %edx            /* head[q] */
        test %edx, %edx
        jz 4f
        lea ARR(,%rdx,4), %rdi
        mov (%rdi), %eax
        mov nlog(%rip), %ebx
        cmp $8, %ebx
        jae 3f
        lea logp(%rip), %r8
        mov %edx, (%r8,%rbx,4)
        lea logq(%rip), %r8
        mov %esi, (%r8,%rbx,4)
        lea logw(%rip), %r8
        mov %eax, (%r8,%rbx,4)
        incl nlog(%rip)
3:      mov %eax, %ebx
        and $0x1ffff, %ebx                 /* link */
        mov %ebx, CB+8(,%rsi,4)
        and $W_MASKED, %eax
        mov %eax, (%rdi)
        jmp 2b
4:      lock btr %esi, CB                  /* queue empty: clear READY[q] */
        jmp 1b
5:      incl upcalls(%rip)
        pop %r8
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rbx
        pop %rax
        push $0
        jmp hypercall_page + 23 * 32

        .data
        .balign 16
cb:     .word 0, 0; .long 0; .quad upcall  /* callback_register: type event */
initc:  .quad CB_PFN; .long 0x40, 0; .byte 0; .fill 7, 1, 0
expand: .quad ARR_PFN
prio:   .long 0, 0
bind:   .long 0, 0, 0
ipi:    .long 0, 0
send:   .long 0
unmask: .long 0
        .balign 8
sshot:  .quad 0; .long 0, 0
start_info: .quad 0
upcalls: .long 0
virq_port: .long 0
ipi_port: .long 0
nlog:   .long 0
logp:   .fill 8, 4, 0
logq:   .fill 8, 4, 0
logw:   .fill 8, 4, 0

        .bss
        .balign 16
        .space 16384
stack_top:

#include "testlib.S"
        TESTLIB fifo
