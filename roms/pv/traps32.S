/* traps32: a 32-bit PAE PV kernel in ring 1 — trap bounces from ring 1 and from ring 3
 * with Xen's compat frames ({[error code,] eip, cs | saved mask << 16, eflags[, esp, ss]},
 * the ring-3 ones on the stack_switch stack), HYPERVISOR_iret back to ring 1 and to ring 3,
 * the int DPL rule from user mode (a user `int $0x82` is #GP((0x82 << 3) | 2), not a
 * hypercall), a user #PF with its error code and cr2 in vcpu_info, and a DPL-3 `int $0x80`
 * as the system call, and the failsafe callback for an iret whose CS cannot be loaded.
 * Prints "XENOLITH-TEST traps32: PASS" or FAIL with the step. */
#include "xennotes.h"
/* A 4-byte numeric note (addresses in a 32-bit image). */
#define XEN_NOTE_LONG(type, val) \
  .pushsection .note.Xen, "a"; .balign 4; .long 4; .long 4; .long type; .asciz "Xen"; \
  .long val; .popsection
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-traps32")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_STR(9, "yes")                                 /* PAE_MODE */
XEN_NOTE_QUAD(XEN_ELFNOTE_VIRT_BASE, 0)
XEN_NOTE_QUAD(XEN_ELFNOTE_PADDR_OFFSET, 0)
XEN_NOTE_LONG(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_LONG(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define STEP(n) movl $(n), step_no
#define EXPECT(v, step) cmpl $(v), %eax; je 9f; movl $(step), step_no; jmp fail; 9:
#define RING1_CS 0xe019
#define RING1_DS 0xe021
#define RING3_CS 0xe02b
#define RING3_DS 0xe033
#define SHINFO 0x380000
#define KONLY 0x390000

        .code32
        .section .text.entry, "ax"
        .globl _start
_start:
        mov %esi, start_info
        lea stack_top, %esp
        /* map shared_info (for vcpu_info.arch.cr2) */
        mov $SHINFO, %ebx
        mov 36(%esi), %ecx
        or $3, %ecx
        xor %edx, %edx
        xor %esi, %esi
        HYPERCALL(14)
        EXPECT(0, 1)
        lea traps, %ebx
        HYPERCALL(0)                       /* set_trap_table */
        EXPECT(0, 2)
        mov $RING1_DS, %ebx                /* stack_switch(ss, esp) */
        lea kstack_top, %ecx
        HYPERCALL(3)
        EXPECT(0, 3)

        /* 1. int3 in ring 1: a frame {eip, cs | mask << 16, eflags} on the current stack */
        STEP(4)
        mov $0x1234, %eax
        mov %esp, %ebp
        int3
bp_ret: EXPECT(0x1234, 5)                  /* iret restored eax */
        cmp %esp, %ebp
        jne fail
        mov bp_frame, %eax
        EXPECT(bp_ret, 6)
        mov bp_frame+4, %eax
        EXPECT(RING1_CS | 1 << 16, 7)      /* events were masked: saved mask 1 */
        mov bp_esp, %eax
        lea -12(%ebp), %ecx
        cmp %ecx, %eax
        jne 8f

        /* 2. an iret whose CS cannot be loaded (GDT entry 1 is empty) goes to the failsafe
         * callback: {ds, es, fs, gs, eip, cs | mask << 16, eflags} on the ring-1 stack */
        mov $RING1_CS, %ebx                /* set_callbacks(event cs, eip, failsafe cs, eip) */
        lea h_event, %ecx
        mov $RING1_CS, %edx
        lea h_failsafe, %esi
        HYPERCALL(4)
        EXPECT(0, 8)
        mov %esp, %ebp
        push $0x2                          /* eflags (IF clear: stay masked) */
        push $0x0009                       /* cs: GDT entry 1, RPL 1, not a descriptor */
        push $fs_target
        mov $0x66, %eax
        jmp hypercall_page + 23 * 32
fs_target:
        jmp 8f                             /* never reached: the cs could not be loaded */
fs_back:
        mov %ebp, %esp
        mov fs_seen, %eax
        EXPECT(1, 9)

        /* 3. make the user pages user-accessible, keep KONLY kernel-only */
        lea user_code, %ebx
        and $~0xfff, %ebx
        mov %ebx, %ecx
        or $7, %ecx                        /* present, writable, user */
        xor %edx, %edx
        mov $2, %esi                       /* UVMF_INVLPG */
        HYPERCALL(14)
        EXPECT(0, 10)
        lea ustack, %ebx
        mov %ebx, %ecx
        or $7, %ecx
        xor %edx, %edx
        mov $2, %esi
        HYPERCALL(14)
        EXPECT(0, 11)

        mov $KONLY, %ebx                   /* KONLY read-only and kernel-only */
        mov $KONLY | 1, %ecx
        xor %edx, %edx
        mov $2, %esi
        HYPERCALL(14)
        EXPECT(0, 13)

        /* 3. iret to ring 3: push ss, esp, eflags, cs, eip; the stub pushes eax */
        STEP(12)
        push $RING3_DS
        lea ustack+4096, %eax
        push %eax
        push $0x202
        push $RING3_CS
        push $user_code
        mov $0x55, %eax
        jmp hypercall_page + 23 * 32

/* Back in ring 1 after the user's exit system call. */
user_done:
        STEP(30)
        mov sys_calls, %eax
        EXPECT(2, 31)
        mov gp_seen, %eax
        EXPECT(1, 32)
        mov pf_seen, %eax
        EXPECT(1, 33)
        lea m_pass, %edx
        mov $m_pass_len, %ecx
        call print
        movl $0, reason
        jmp shutdown
8:      movl $99, step_no
fail:   lea m_fail, %edx
        mov $m_fail_len, %ecx
        call print
        mov step_no, %eax
        xor %edx, %edx
        mov $10, %ecx
        div %ecx
        add $'0', %al
        add $'0', %dl
        mov %al, digits
        mov %dl, digits+1
        lea digits, %edx
        mov $3, %ecx
        call print
        movl $3, reason
shutdown:
        mov $2, %ebx                       /* SCHEDOP_shutdown */
        lea reason, %ecx
        HYPERCALL(29)
        ud2
print:  xor %ebx, %ebx                     /* console_io write: ecx bytes at edx */
        HYPERCALL(18)
        ret

/* #BP handler (ring 1 → ring 1): record the frame, return with HYPERVISOR_iret. */
h_bp:   mov %esp, bp_esp
        push %eax
        mov 4(%esp), %eax
        mov %eax, bp_frame
        mov 8(%esp), %eax
        mov %eax, bp_frame+4
        pop %eax
        jmp hypercall_page + 23 * 32

/* The failsafe callback: check the frame, then continue the test on the old stack. */
h_failsafe:
        cmpl $RING1_DS, (%esp)             /* ds */
        jne 8b
        cmpl $fs_target, 16(%esp)          /* eip of the failed return */
        jne 8b
        cmpw $0x0009, 20(%esp)             /* the cs that failed */
        jne 8b
        incl fs_seen
        jmp fs_back
h_event:
        jmp 8b

/* int $0x80 from ring 3: a frame {eip, cs, eflags, esp, ss} on the stack_switch stack. */
h_sys:  cmp $kstack_top - 20, %esp
        jne 8b
        cmpl $RING3_CS, 4(%esp)              /* events unmasked by the iret (IF): mask 0 */
        jne 8b
        cmpl $RING3_DS, 16(%esp)
        jne 8b
        incl sys_calls
        cmp $2, %eax                       /* exit: stay in ring 1 */
        je user_done
        mov $0x77, %eax                    /* the result the user checks */
        jmp hypercall_page + 23 * 32

/* #GP from ring 3: {error code, eip, cs, eflags, esp, ss}; skip the 2-byte int $0x82. */
h_gp:   cmpl $(0x82 << 3) | 2, (%esp)
        jne 8b
        cmpl $RING3_CS, 8(%esp)
        jne 8b
        incl gp_seen
        add $4, %esp                       /* drop the error code */
        addl $2, (%esp)
        jmp hypercall_page + 23 * 32

/* #PF from ring 3 reading KONLY: error code 5 (present, user, read), cr2 in vcpu_info. */
h_pf:   cmpl $5, (%esp)
        jne 8b
        cmpl $KONLY, SHINFO + 8            /* vcpu_info[0].arch.cr2 */
        jne 8b
        incl pf_seen
        add $4, %esp
        addl $6, (%esp)                    /* skip `mov KONLY, %eax` (a1 disp32: 5) + nop */
        jmp hypercall_page + 23 * 32

        .balign 4096
/* Ring 3 code (its page is made user-accessible). */
user_code:
        cmp $0x55, %eax                    /* iret restored eax */
        jne 1f
        mov %cs, %eax
        cmp $RING3_CS, %eax
        jne 1f
        mov $1, %eax
        int $0x80                          /* a system call */
        cmp $0x77, %eax
        jne 1f
        int $0x82                          /* not a hypercall from ring 3: #GP */
        mov KONLY, %eax                    /* kernel-only page: #PF */
        nop
        mov $2, %eax
        int $0x80                          /* exit */
1:      ud2                                /* no #UD handler: the test fails */

        .data
        .balign 8
/* trap_info { u8 vector, u8 flags (DPL | mask events), u16 cs, u32 address } */
traps:  .byte 3, 3; .word RING1_CS; .long h_bp
        .byte 13, 0; .word RING1_CS; .long h_gp
        .byte 14, 0; .word RING1_CS; .long h_pf
        .byte 0x80, 3; .word RING1_CS; .long h_sys
        .long 0, 0
start_info: .long 0
bp_esp: .long 0
bp_frame: .long 0, 0
sys_calls: .long 0
gp_seen: .long 0
pf_seen: .long 0
fs_seen: .long 0
step_no: .long 0
reason: .long 0
digits: .ascii "00\n"
m_pass: .ascii "XENOLITH-TEST traps32: PASS\n"
        .set m_pass_len, . - m_pass
m_fail: .ascii "XENOLITH-TEST traps32: FAIL at step "
        .set m_fail_len, . - m_fail

        .bss
        .balign 4096
ustack: .space 4096
        .space 8192
kstack_top:
        .space 8192
stack_top:
