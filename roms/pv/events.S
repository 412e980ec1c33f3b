/* events: time and event channels — the PV clock in shared_info, VIRQ_TIMER from a
 * single-shot timer while blocked, upcall delivery to the event callback and its masking,
 * EVTCHNOP status/alloc_unbound/send errors, sched_op poll with a timeout.
 * Prints "XENOLITH-TEST events: PASS" or FAIL with the step, then powers off. */
#include "xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-events")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define EXPECT(v, step) cmp $(v), %rax; je 9f; movl $(step), step_no(%rip); jmp fail; 9:
#define SHINFO 0x380000
#define MASK (SHINFO + 1)
#define TIME (SHINFO + 32)

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
        /* the event callback */
        lea cb(%rip), %rsi
        xor %edi, %edi                     /* CALLBACKOP_register */
        HYPERCALL(30)
        EXPECT(0, 2)
        /* bind VIRQ_TIMER */
        movl $0, bind(%rip)
        movl $0, bind+4(%rip)
        mov $1, %edi
        lea bind(%rip), %rsi
        HYPERCALL(32)
        EXPECT(0, 3)
        mov bind+8(%rip), %eax
        mov %eax, virq_port(%rip)
        cmp $3, %eax                       /* ports 1 and 2 are the rings' */
        jb 8f
        /* 1. single-shot timer 10 ms ahead, then block: the upcall arrives */
        call now
        lea 10000000(%rax), %rbx
        mov %rbx, sshot(%rip)
        movl $1, sshot+8(%rip)             /* VCPU_SSHOTTMR_future */
        mov $8, %edi                       /* VCPUOP_set_singleshot_timer */
        xor %esi, %esi
        lea sshot(%rip), %rdx
        HYPERCALL(24)
        EXPECT(0, 4)
        mov $1, %edi                       /* SCHEDOP_block */
        xor %esi, %esi
        HYPERCALL(29)
        EXPECT(0, 5)
        mov upcalls(%rip), %eax
        EXPECT(1, 6)
        call now
        cmp %rbx, %rax                     /* the clock passed the deadline */
        jb 8f
        mov seen_port(%rip), %eax
        cmp virq_port(%rip), %eax
        jne 8f
        /* 2. a timer in the past with VCPU_SSHOTTMR_future: -ETIME */
        movq $1, sshot(%rip)
        mov $8, %edi
        xor %esi, %esi
        lea sshot(%rip), %rdx
        HYPERCALL(24)
        EXPECT(-62, 7)
        /* 3. masked: set_timer_op in the past fires, but no upcall until unmasked */
        movb $1, MASK
        mov $1, %edi
        HYPERCALL(15)
        EXPECT(0, 8)
        xor %edi, %edi
        HYPERCALL(17)                      /* any hypercall: delivery point */
        mov upcalls(%rip), %eax
        EXPECT(1, 9)
        cmpb $1, SHINFO                    /* evtchn_upcall_pending */
        jne 8f
        movb $0, MASK
        xor %edi, %edi
        HYPERCALL(17)                      /* xen_version: "deliver pending events now" */
        mov upcalls(%rip), %eax
        EXPECT(2, 10)
        /* 4. EVTCHNOP_status of the virq port */
        movw $0x7ff0, status(%rip)
        mov virq_port(%rip), %eax
        mov %eax, status+4(%rip)
        mov $5, %edi
        lea status(%rip), %rsi
        HYPERCALL(32)
        EXPECT(0, 11)
        mov status+8(%rip), %eax
        EXPECT(4, 12)                      /* EVTCHNSTAT_virq */
        mov status+16(%rip), %eax
        EXPECT(0, 13)                      /* VIRQ_TIMER */
        /* 5. send to a free port: -EINVAL */
        movl $200, send(%rip)
        mov $4, %edi
        lea send(%rip), %rsi
        HYPERCALL(32)
        EXPECT(-22, 14)
        /* 6. poll an unbound port with a timeout 50 us ahead: returns at the timeout */
        movw $0x7ff0, unb(%rip)
        movw $0x7ff0, unb+2(%rip)
        mov $6, %edi
        lea unb(%rip), %rsi
        HYPERCALL(32)
        EXPECT(0, 15)
        mov unb+4(%rip), %eax
        mov %eax, pport(%rip)
        lea pport(%rip), %rax
        mov %rax, poll(%rip)
        movl $1, poll+8(%rip)
        call now
        lea 50000(%rax), %rbx
        mov %rbx, poll+16(%rip)
        movb $1, MASK
        mov $3, %edi                       /* SCHEDOP_poll */
        lea poll(%rip), %rsi
        HYPERCALL(29)
        EXPECT(0, 16)
        call now
        cmp %rbx, %rax
        jb 8f

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

/* The event callback: frame rcx, r11, rip, cs, rflags, rsp, ss; events are masked. */
upcall:
        pop %rcx
        pop %r11
        push %rax
        movb $0, SHINFO                    /* evtchn_upcall_pending = 0 */
        xor %eax, %eax
        xchg %rax, SHINFO+8                /* evtchn_pending_sel */
        test $1, %eax
        jz 1f
        mov SHINFO+2048, %rax              /* evtchn_pending[0] */
        bsf %rax, %rax
        mov %eax, seen_port(%rip)
        movq $0, SHINFO+2048
1:      incl upcalls(%rip)
        pop %rax
        push $0
        jmp hypercall_page + 23 * 32

        .section .rodata

        .data
        .balign 16
cb:     .word 0, 0; .long 0; .quad upcall  /* callback_register: type event */
bind:   .long 0, 0, 0
sshot:  .quad 0; .long 0, 0
status: .long 0, 0, 0, 0, 0, 0
send:   .long 0
unb:    .long 0, 0
pport:  .long 0
        .balign 8
poll:   .quad 0, 0, 0
start_info: .quad 0
upcalls: .long 0
seen_port: .long 0
virq_port: .long 0

        .bss
        .balign 16
        .space 16384
stack_top:

#include "testlib.S"
        TESTLIB events
