/* ldt: MMUEXT_SET_LDT and the LDT as Xen keeps it for PV guests — argument checks, a data
 * segment loaded from the LDT (its page mapped on first use), a not-present descriptor
 * (#NP with the selector), a selector past the LDT's end and a null LDT (#GP), LSL on an LDT
 * selector, update_descriptor reaching a descriptor in a mapped LDT page.
 * Prints "XENOLITH-TEST ldt: PASS" or FAIL with the step, then powers off. */
#include "xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-ldt")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define EXPECT(v, step) cmp $(v), %rax; je 9f; movl $(step), step_no(%rip); jmp fail; 9:

        .section .text.entry, "ax"
        .globl _start
_start:
        lea stack_top(%rip), %rsp
        lea trap_table(%rip), %rdi
        HYPERCALL(0)
        EXPECT(0, 1)
        /* the LDT page read-only, as a descriptor page must be */
        lea ldt_page(%rip), %rdi
        mov %rdi, %rsi
        or $1, %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(0, 2)

        /* 1. bad arguments: a misaligned base, too many entries */
        lea ldt_page+8(%rip), %rax
        mov %rax, ext+8(%rip)
        movq $3, ext+16(%rip)
        call set_ldt
        EXPECT(-22, 3)
        lea ldt_page(%rip), %rax
        mov %rax, ext+8(%rip)
        movq $8193, ext+16(%rip)
        call set_ldt
        EXPECT(-22, 4)
        /* 2. three entries */
        movq $3, ext+16(%rip)
        call set_ldt
        EXPECT(0, 5)
        /* 3. selector 0x0f (index 1, LDT, RPL 3): a DPL-3 data segment */
        mov $0x0f, %eax
        mov %eax, %ds
        mov %ds, %eax
        EXPECT(0x0f, 6)
        lsl %ax, %ecx                           /* limit of the 4 GiB segment */
        jnz 8f
        movl $7, step_no(%rip)
        cmp $-1, %ecx
        jne fail
        xor %eax, %eax
        mov %eax, %ds
        /* 4. selector 0x17: not present → #NP(0x14) */
        movl $0, faults(%rip)
        mov $0x17, %eax
        mov %eax, %es                           /* 2 bytes: 8e c0 */
        mov faults(%rip), %eax
        EXPECT(1, 8)
        mov last_vec(%rip), %rax
        EXPECT(11, 9)
        mov last_ec(%rip), %rax
        EXPECT(0x14, 10)
        /* 5. selector 0x1f: past the LDT's three entries → #GP(0x1c) */
        mov $0x1f, %eax
        mov %eax, %es
        mov last_vec(%rip), %rax
        EXPECT(13, 11)
        mov last_ec(%rip), %rax
        EXPECT(0x1c, 12)
        /* 6. update_descriptor makes entry 2 present; the mapped LDT page shows it */
        lea ldt_page+16(%rip), %rdi             /* machine address = virtual (identity) */
        mov $0x00cff3000000ffff, %rsi
        HYPERCALL(10)
        EXPECT(0, 13)
        mov $0x17, %eax
        mov %eax, %es
        mov %es, %eax
        EXPECT(0x17, 14)
        xor %eax, %eax
        mov %eax, %es
        /* 7. a null LDT: any LDT selector is #GP(sel) */
        movq $0, ext+16(%rip)
        call set_ldt
        EXPECT(0, 15)
        mov $0x0f, %eax
        mov %eax, %ds
        mov last_vec(%rip), %rax
        EXPECT(13, 16)
        mov last_ec(%rip), %rax
        EXPECT(0x0c, 17)
        mov %ds, %eax
        EXPECT(0, 18)
        jmp test_pass

/* set_ldt(): one mmuext_op from `ext` */
set_ldt:
        movl $13, ext(%rip)                     /* MMUEXT_SET_LDT */
        lea ext(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10
        mov $26, %eax
        syscall
        ret

/* #NP and #GP: record the vector and error code, skip the 2-byte segment load. */
np_handler:
        movq $11, last_vec(%rip)
        jmp 1f
gp_handler:
        movq $13, last_vec(%rip)
1:      pop %rcx
        pop %r11
        pop %rax
        mov %rax, last_ec(%rip)
        incl faults(%rip)
        addq $2, (%rsp)
        push $0
        jmp hypercall_page + 23 * 32

        .data
        .balign 16
trap_table:
        .byte 11, 0; .word 0xe033; .long 0; .quad np_handler
        .byte 13, 0; .word 0xe033; .long 0; .quad gp_handler
        .quad 0, 0
ext:    .long 0, 0
        .quad 0, 0
last_vec: .quad 0
last_ec: .quad 0
faults: .long 0

        .balign 4096
/* The LDT: null, a present DPL-3 data segment, a not-present one. */
ldt_page:
        .quad 0
        .quad 0x00cff3000000ffff
        .quad 0x00cf73000000ffff
        .balign 4096

        .bss
        .balign 16
        .space 16384
stack_top:

#include "testlib.S"
        TESTLIB ldt
