/* hcbench: the cost of hypercalls, timed by the host (bench/hypercall/run.sh timestamps
 * the console lines). Four phases of N iterations of the same loop body, each between
 * "HCBENCH start NAME" and "HCBENCH end NAME" lines:
 *   loop    the loop alone (the compute baseline)
 *   null    + a null hypercall (xen_version XENVER_version)
 *   evtchn  + EVTCHNOP_send to an IPI port of our own, delivered as an upcall to the event
 *           callback, which acknowledges it and returns through HYPERVISOR_iret
 *   mmu     + mmu_update of one PTE (toggling its RW bit)
 * then powers off. */
#include "../../roms/pv/xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-hcbench")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define N 200000
#define SHINFO 0x380000
#define VA_TEST 0x300000

        .section .text.entry, "ax"
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        lea stack_top(%rip), %rsp
        /* map shared_info, register the event callback, bind an IPI, unmask upcalls */
        mov $SHINFO, %rdi
        mov 40(%rsi), %rsi
        or $3, %rsi
        xor %edx, %edx
        HYPERCALL(14)
        lea cb(%rip), %rsi
        xor %edi, %edi
        HYPERCALL(30)
        movl $0, bind(%rip)                /* EVTCHNOP_bind_ipi { vcpu 0 } */
        mov $7, %edi
        lea bind(%rip), %rsi
        HYPERCALL(32)
        mov bind+4(%rip), %eax
        mov %eax, send(%rip)
        movb $0, SHINFO+1                  /* evtchn_upcall_mask = 0 */
        /* the machine address of VA_TEST's PTE: walk the (identity-mapped) tables */
        mov start_info(%rip), %rsi
        mov 48(%rsi), %rax                 /* pt_base (virtual = machine: virt_base 0) */
        mov (%rax), %rax                   /* L4[0] */
        and $~0xfff, %rax
        mov (%rax), %rax                   /* L3[0] */
        and $~0xfff, %rax
        mov ((VA_TEST >> 21) & 511) * 8(%rax), %rax
        and $~0xfff, %rax
        add $((VA_TEST >> 12) & 511) * 8, %rax
        mov %rax, req(%rip)
        mov (%rax), %rax
        mov %rax, req+8(%rip)

        lea n_loop(%rip), %rbx
        call start
        mov $N, %r12d
1:      call body
        dec %r12d
        jnz 1b
        call end

        lea n_null(%rip), %rbx
        call start
        mov $N, %r12d
1:      call body
        xor %edi, %edi                     /* XENVER_version */
        xor %esi, %esi
        HYPERCALL(17)
        dec %r12d
        jnz 1b
        call end

        lea n_evtchn(%rip), %rbx
        call start
        mov $N, %r12d
1:      call body
        mov $4, %edi                       /* EVTCHNOP_send */
        lea send(%rip), %rsi
        HYPERCALL(32)
        dec %r12d
        jnz 1b
        call end
        mov upcalls(%rip), %eax
        cmp $N, %eax
        jne bad

        lea n_mmu(%rip), %rbx
        call start
        mov $N, %r12d
1:      call body
        xorq $2, req+8(%rip)               /* toggle _PAGE_RW */
        lea req(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10
        mov $1, %eax                       /* mmu_update */
        syscall
        test %rax, %rax
        jnz bad
        dec %r12d
        jnz 1b
        call end

        movl $0, reason(%rip)
        jmp off
bad:    lea m_bad(%rip), %rdx
        mov $m_bad_len, %esi
        call print
        movl $3, reason(%rip)
off:    mov $2, %edi
        lea reason(%rip), %rsi
        mov $29, %eax
        syscall
        ud2

/* The loop body every phase shares: a little arithmetic. */
body:
        mov $16, %ecx
1:      imul $33, %r13, %r13
        add %rcx, %r13
        dec %ecx
        jnz 1b
        ret

/* start/end: print "HCBENCH start|end NAME\n" (name: 8 bytes at rbx). */
start:  lea m_start(%rip), %rdx
        mov $14, %esi
        jmp 2f
end:    lea m_end(%rip), %rdx
        mov $12, %esi
2:      call print
        mov %rbx, %rdx
        mov $8, %esi
        jmp print
print:  xor %edi, %edi
        mov $18, %eax
        syscall
        ret

upcall:
        pop %rcx
        pop %r11
        push %rax
        movb $0, SHINFO                    /* evtchn_upcall_pending */
        movq $0, SHINFO+8                  /* evtchn_pending_sel */
        movq $0, SHINFO+2048               /* evtchn_pending[0] */
        incl upcalls(%rip)
        pop %rax
        push $0
        jmp hypercall_page + 23 * 32

        .section .rodata
m_start: .ascii "HCBENCH start "
m_end:   .ascii "HCBENCH end "
n_loop:  .ascii "loop   \n"
n_null:  .ascii "null   \n"
n_evtchn: .ascii "evtchn \n"
n_mmu:   .ascii "mmu    \n"
m_bad:   .ascii "HCBENCH FAILED\n"
        .set m_bad_len, . - m_bad

        .data
        .balign 16
cb:     .word 0, 0; .long 0; .quad upcall
bind:   .long 0, 0
send:   .long 0
reason: .long 0
        .balign 8
req:    .quad 0, 0
start_info: .quad 0
upcalls: .long 0

        .bss
        .balign 16
        .space 16384
stack_top:
