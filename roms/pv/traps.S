/* traps: exception and software-interrupt delivery to a 64-bit PV kernel as Xen's
 * create_bounce_frame builds it — every vector a kernel can raise (#DE #DB #BP #UD #NM #SS
 * #GP #PF #MF #XM, and #DB from RFLAGS.TF single-stepping), the frame {rcx, r11, [ec], rip, cs|mask<<32, rflags, rsp, ss} 16-byte
 * aligned, rcx/r11 as Xen's sysret exit leaves them, the INT n DPL rule, mask-on-entry
 * trap gates, HYPERVISOR_iret, and user mode: a user L4 (MMUEXT_NEW_USER_BASEPTR), faults and
 * INT n from user mode on the stack_switch stack, syscall to the syscall callback (not a
 * hypercall) and iret with VGCF_in_syscall.
 * Prints "XENOLITH-TEST traps: PASS" or FAIL with the step, then powers off. */
#include "xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-traps")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define EXPECT(v, step) cmp $(v), %rax; je 9f; movl $(step), step_no(%rip); jmp fail; 9:
#define SHINFO 0x380000
#define MASK (SHINFO + 1)
#define VCPU_CR2 (SHINFO + 16)            /* vcpu_info.arch.cr2 */
#define KCS 0xe030                        /* FLAT_KERNEL_CS64 as a kernel-mode frame shows it */
#define UCS 0xe033                        /* FLAT_RING3_CS64 */
#define XSS 0xe02b                        /* FLAT_RING3_SS64 */
#define UNMAPPED 0x10000000
#define USER_L4 0x300000
#define ALIAS 0x8000000000                /* L4 slot 1: mapped in the user L4 only */
#define NONCANON 0x8000000000000000
#define SYSCALL_MARK 0x100                /* "vector" recorded by the syscall callback */
/* A record of the log (128 bytes), filled by the common handler. */
#define R_VEC 0
#define R_SP 8                            /* rsp at handler entry (the frame) */
#define R_RCX 16                          /* rcx at handler entry */
#define R_R11 24                          /* r11 at handler entry */
#define R_FL 32                           /* rflags at handler entry */
#define R_MASK 40                         /* evtchn_upcall_mask at handler entry */
#define R_RAX 48
#define R_HND 56                          /* the handler's address */
#define R_FRCX 64                         /* the frame */
#define R_FR11 72
#define R_EC 80                           /* -1: none */
#define R_RIP 88
#define R_CS 96
#define R_RFL 104
#define R_RSP 112
#define R_SS 120

/* rbx = the last record */
#define LAST mov nlog(%rip), %ebx; dec %ebx; shl $7, %ebx; lea log(%rip), %rax; add %rax, %rbx
#define NEXT_RESUME(l) lea l(%rip), %rax; mov %rax, resume(%rip)
#define TRAPS(n) movl $(n), nlog(%rip)

        .section .text.entry, "ax"
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        lea stack_top(%rip), %rsp
        cld
        /* 1. map shared_info; install the trap table */
        mov $SHINFO, %rdi
        mov 40(%rsi), %rsi
        or $3, %rsi
        xor %edx, %edx
        HYPERCALL(14)
        EXPECT(0, 1)
        movb $0, MASK                      /* events start masked */
        lea traptab(%rip), %rdi
        HYPERCALL(0)
        EXPECT(0, 2)

        /* 2. #DE at the div: fault, no error code, frame at the interrupted rsp */
        TRAPS(0)
        NEXT_RESUME(1f)
        mov $1, %eax
        xor %edx, %edx
        xor %ecx, %ecx
        mov %rsp, %r13
de_at:  div %ecx
1:      mov $0, %edi
        mov $-1, %rsi
        lea de_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 3)

        /* 3. a misaligned rsp: the frame starts 16-byte aligned below it; #UD through a
         * gate with the event mask flag: masked in the handler, 0 saved in the frame,
         * and iret restores it from rflags.IF */
        TRAPS(0)
        NEXT_RESUME(1f)
        sub $8, %rsp
        mov %rsp, %r13
ud_at:  ud2
1:      add $8, %rsp
        mov $6, %edi
        mov $-1, %rsi
        lea ud_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 4)
        LAST
        mov R_MASK(%rbx), %rax
        EXPECT(1, 5)
        movzbl MASK, %eax
        EXPECT(0, 6)

        /* 4. int3 through a DPL-0 gate from kernel mode: #BP as Xen's DPL-3 IDT entry
         * delivers it (no check of the guest's DPL), rip after it; AC is cleared in the
         * handler (shown in the frame), DF is not */
        TRAPS(0)
        pushfq
        orq $0x40000, (%rsp)
        popfq
        std
        mov %rsp, %r13
        int3
bp_next:
        cld
        pushfq
        andq $~0x40000, (%rsp)
        popfq
        mov $3, %edi
        mov $-1, %rsi
        lea bp_next(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 7)
        LAST
        mov R_RFL(%rbx), %rax
        and $0x40400, %eax                 /* AC and DF in the frame */
        EXPECT(0x40400, 8)
        mov R_FL(%rbx), %rax
        and $0x40400, %eax                 /* the handler: AC clear, DF kept */
        EXPECT(0x400, 9)

        /* 5. events masked at the trap: saved mask 1 in cs bits 32+, IF clear in the
         * frame, and still masked after iret */
        TRAPS(0)
        movb $1, MASK
        mov %rsp, %r13
        int3
bp2_next:
        mov $3, %edi
        mov $-1, %rsi
        lea bp2_next(%rip), %rdx
        mov $(1 << 32 | KCS), %rcx
        mov %r13, %r8
        call chk
        EXPECT(0, 10)
        movzbl MASK, %eax
        EXPECT(1, 11)
        movb $0, MASK

        /* 6. icebp: #DB, a trap (rip after it) */
        TRAPS(0)
        mov %rsp, %r13
        .byte 0xf1
db_next:
        mov $1, %edi
        mov $-1, %rsi
        lea db_next(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 12)

        /* 6b. RFLAGS.TF: a #DB trap after each instruction (not after the POPF that sets
         * TF, but after the one that clears it; CPUID too), DR6.BS in the virtual DR6 */
        TRAPS(0)
        mov %rsp, %r13
        xor %eax, %eax
        pushfq
        pushfq
        orq $0x100, (%rsp)
        popfq
        nop
        cpuid                              /* emulated by the platform: traps too */
        popfq
tf_done:
        mov nlog(%rip), %eax
        EXPECT(3, 57)
        mov $1, %edi
        mov $-1, %rsi
        lea tf_done(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 58)
        mov $6, %edi
        HYPERCALL(9)                       /* get_debugreg(6) */
        and $0x4000, %eax
        EXPECT(0x4000, 59)

        /* 7. #NM after fpu_taskswitch(1); Xen clears the virtual CR0.TS when it delivers
         * #NM, so the instruction runs when the handler returns to it */
        TRAPS(0)
        mov $1, %edi
        HYPERCALL(5)
        EXPECT(0, 13)
        mov %rsp, %r13
nm_at:  fld1
        fstp %st(0)
        mov nlog(%rip), %eax
        EXPECT(1, 14)
        mov $7, %edi
        mov $-1, %rsi
        lea nm_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 15)
        mov %cr0, %rax
        and $8, %eax
        EXPECT(0, 16)

        /* 8. #MF: an unmasked x87 divide by zero, reported at the next fwait */
        TRAPS(0)
        NEXT_RESUME(1f)
        fninit
        fldcw fcw_zm(%rip)
        fldz
        fld1
        fdiv %st(1), %st                   /* 1 / 0 */
        mov %rsp, %r13
mf_at:  fwait
1:      fnclex
        fninit
        mov $16, %edi
        mov $-1, %rsi
        lea mf_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 17)

        /* 9. #XM: CR4.OSXMMEXCPT is set as Xen runs PV guests; SSE divide by zero with
         * ZM clear */
        mov %cr4, %rax
        and $0x400, %eax
        EXPECT(0x400, 18)
        TRAPS(0)
        NEXT_RESUME(1f)
        ldmxcsr mxcsr_zm(%rip)
        movss one(%rip), %xmm0
        xorps %xmm1, %xmm1
        mov %rsp, %r13
xm_at:  divss %xmm1, %xmm0
1:      ldmxcsr mxcsr_def(%rip)
        mov $19, %edi
        mov $-1, %rsi
        lea xm_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 19)

        /* 10. #GP(0): a non-canonical data access */
        TRAPS(0)
        NEXT_RESUME(1f)
        mov $NONCANON, %rbx
        mov %rsp, %r13
gp_at:  mov (%rbx), %rax
1:      mov $13, %edi
        xor %esi, %esi
        lea gp_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 20)

        /* 11. #SS(0): a non-canonical access based on rbp (a stack-segment reference) */
        TRAPS(0)
        NEXT_RESUME(1f)
        push %rbp
        mov $NONCANON, %rbp
        mov %rsp, %r13
ss_at:  mov (%rbp), %rax
1:      pop %rbp
        mov $12, %edi
        xor %esi, %esi
        lea ss_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 21)

        /* 12. #PF, a kernel-mode read of a page not present: error code 0 (Xen shows
         * U only for user mode, though the kernel runs in ring 3), cr2 in vcpu_info and
         * from mov %cr2 */
        TRAPS(0)
        NEXT_RESUME(1f)
        mov %rsp, %r13
pf1_at: mov UNMAPPED, %rax
1:      mov $14, %edi
        xor %esi, %esi
        lea pf1_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 22)
        mov VCPU_CR2, %rax
        EXPECT(UNMAPPED, 23)
        mov %cr2, %rax
        EXPECT(UNMAPPED, 24)

        /* 13. #PF, a write to a read-only page (the L4 itself): P|W, cr2 */
        TRAPS(0)
        NEXT_RESUME(1f)
        mov start_info(%rip), %r8
        mov 88(%r8), %r12                  /* pt_base (VA == machine address) */
        lea 0xff8(%r12), %r14
        mov %rsp, %r13
pf2_at: movq $0, (%r14)
1:      mov $14, %edi
        mov $3, %esi
        lea pf2_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 25)
        mov VCPU_CR2, %rax
        cmp %r14, %rax
        jne 8f

        /* 14. #PF, an instruction fetch from a page not present: I (NX is on) */
        TRAPS(0)
        NEXT_RESUME(1f)
        mov $UNMAPPED, %rax
        mov %rsp, %r13
        call *%rax
1:      add $8, %rsp
        mov $14, %edi
        mov $0x10, %esi
        mov $UNMAPPED, %edx
        mov $KCS, %ecx
        lea -8(%r13), %r8                  /* the call pushed its return address */
        call chk
        EXPECT(0, 26)

        /* 15. INT n from kernel mode: a DPL-0 gate is #GP((n << 3) | 2) at the int; a
         * DPL-1 gate is delivered as itself after it; an unregistered vector is #GP */
        TRAPS(0)
        NEXT_RESUME(1f)
        mov %rsp, %r13
i40_at: int $0x40
1:      mov $13, %edi
        mov $(0x40 << 3 | 2), %esi
        lea i40_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 27)
        TRAPS(0)
        mov %rsp, %r13
        int $0x41
i41_next:
        mov $0x41, %edi
        mov $-1, %rsi
        lea i41_next(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 28)
        TRAPS(0)
        NEXT_RESUME(1f)
        mov %rsp, %r13
i42_at: int $0x42
1:      mov $13, %edi
        mov $(0x42 << 3 | 2), %esi
        lea i42_at(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 29)
        /* int $0x80 (mask flag): delivered, events masked in the handler */
        TRAPS(0)
        mov %rsp, %r13
        int $0x80
i80_next:
        mov $0x80, %edi
        mov $-1, %rsi
        lea i80_next(%rip), %rdx
        mov $KCS, %ecx
        mov %r13, %r8
        call chk
        EXPECT(0, 30)
        LAST
        mov R_MASK(%rbx), %rax
        EXPECT(1, 31)
        movzbl MASK, %eax
        EXPECT(0, 32)

        /* 16. argument checks: a non-canonical trap handler or callback is -EINVAL; the
         * syscall callback cannot be unregistered */
        lea badtab(%rip), %rdi
        HYPERCALL(0)
        EXPECT(-22, 33)
        mov $NONCANON, %rax
        mov %rax, cbreg+8(%rip)
        xor %edi, %edi                     /* CALLBACKOP_register */
        lea cbreg(%rip), %rsi
        HYPERCALL(30)
        EXPECT(-22, 34)
        lea h_sys(%rip), %rax
        mov %rax, cbreg+8(%rip)
        xor %edi, %edi
        lea cbreg(%rip), %rsi
        HYPERCALL(30)
        EXPECT(0, 35)
        mov $1, %edi                       /* CALLBACKOP_unregister */
        lea cbreg(%rip), %rsi
        HYPERCALL(30)
        EXPECT(-22, 36)

        /* 17. user mode: a user L4 aliasing the kernel's slot 0 in slots 0 and 1, the
         * kernel stack, and iret to FLAT_USER_CS64 */
        mov start_info(%rip), %r8
        mov 88(%r8), %r12
        mov $USER_L4, %rdi
        xor %eax, %eax
        mov $512, %ecx
        rep stosq
        mov (%r12), %rax
        mov %rax, USER_L4
        mov %rax, USER_L4 + 8
        mov $USER_L4, %rdi                 /* the new L4 must not be writable */
        mov $(USER_L4 | 1), %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(0, 37)
        movl $15, ext(%rip)                /* MMUEXT_NEW_USER_BASEPTR */
        movq $(USER_L4 >> 12), ext+8(%rip)
        lea ext(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10
        HYPERCALL(26)
        EXPECT(0, 38)
        mov $XSS, %edi
        lea kstack_top(%rip), %rsi
        HYPERCALL(3)
        EXPECT(0, 39)
        mov $0x1234, %rax                  /* the kernel cannot see the user-only slot */
        mov %rax, marker(%rip)
        TRAPS(0)
        NEXT_RESUME(1f)
        lea marker(%rip), %rax
        mov $ALIAS, %rcx
        add %rcx, %rax
        mov (%rax), %rax
1:      mov nlog(%rip), %eax
        EXPECT(1, 40)
        LAST
        mov R_EC(%rbx), %rax
        EXPECT(0, 41)

        TRAPS(0)
        mov %rsp, saved_ksp(%rip)
        push $XSS                          /* ss */
        lea ustack_top(%rip), %rax
        push %rax                          /* rsp */
        push $0x202                        /* rflags: IF, events unmasked */
        push $UCS                          /* cs */
        lea user_entry(%rip), %rax
        push %rax                          /* rip */
        push $0                            /* flags */
        jmp hypercall_page + 23 * 32

after_user:
        /* 18. the records of the user-mode run */
        movb $0, MASK
        mov nlog(%rip), %eax
        EXPECT(7, 42)
        /* #PF from user mode: U, cs and ss as the user had them, on the kernel stack */
        lea log(%rip), %rbx
        mov $14, %edi
        mov $4, %esi
        lea u_pf(%rip), %rdx
        mov $UCS, %ecx
        lea ustack_top(%rip), %r8
        lea kstack_top(%rip), %r9
        call chk_at
        EXPECT(0, 43)
        add $128, %rbx                     /* #GP(0) */
        mov $13, %edi
        xor %esi, %esi
        lea u_gp(%rip), %rdx
        mov $UCS, %ecx
        lea ustack_top(%rip), %r8
        lea kstack_top(%rip), %r9
        call chk_at
        EXPECT(0, 44)
        add $128, %rbx                     /* int $0x41 (DPL 1) from user: #GP */
        mov $13, %edi
        mov $(0x41 << 3 | 2), %esi
        lea u_i41(%rip), %rdx
        mov $UCS, %ecx
        lea ustack_top(%rip), %r8
        lea kstack_top(%rip), %r9
        call chk_at
        EXPECT(0, 45)
        add $128, %rbx                     /* int $0x43 (DPL 3) */
        mov $0x43, %edi
        mov $-1, %rsi
        lea u_i43_next(%rip), %rdx
        mov $UCS, %ecx
        lea ustack_top(%rip), %r8
        lea kstack_top(%rip), %r9
        call chk_at
        EXPECT(0, 46)
        add $128, %rbx                     /* int $0x80 */
        mov $0x80, %edi
        mov $-1, %rsi
        lea u_i80_next(%rip), %rdx
        mov $UCS, %ecx
        lea ustack_top(%rip), %r8
        lea kstack_top(%rip), %r9
        call chk_at
        EXPECT(0, 47)
        mov R_MASK(%rbx), %rax
        EXPECT(1, 48)
        add $128, %rbx                     /* #SS(0): push with a non-canonical rsp */
        mov $12, %edi
        xor %esi, %esi
        lea u_ss(%rip), %rdx
        mov $UCS, %ecx
        mov $NONCANON, %r8
        lea kstack_top(%rip), %r9
        call chk_at
        EXPECT(0, 49)
        add $128, %rbx                     /* syscall: the callback, not a hypercall */
        mov $SYSCALL_MARK, %edi
        mov $-1, %rsi
        lea u_sys_next(%rip), %rdx
        mov $UCS, %ecx
        lea ustack_top(%rip), %r8
        lea kstack_top(%rip), %r9
        call chk_at
        EXPECT(0, 50)
        mov R_RAX(%rbx), %rax              /* rax untouched: xen_version did not run */
        EXPECT(17, 51)
        mov R_FRCX(%rbx), %rax             /* rcx and r11 as the instruction left them */
        lea u_sys_next(%rip), %rcx
        cmp %rcx, %rax
        jne 8f
        mov R_FR11(%rbx), %rax
        and $0x400, %eax                   /* the user's DF */
        EXPECT(0x400, 52)
        mov R_FL(%rbx), %rax               /* the callback runs with DF clear */
        and $0x400, %eax
        EXPECT(0, 53)
        mov R_MASK(%rbx), %rax             /* CALLBACKF_mask_events */
        EXPECT(1, 54)
        /* the user's view */
        mov u_alias(%rip), %rax            /* the alias slot reads the data */
        EXPECT(0x1234, 55)
        mov u_rcx(%rip), %rax              /* iret VGCF_in_syscall: sysret, rcx = rip */
        lea u_after_sys(%rip), %rcx
        cmp %rcx, %rax
        jne 8f
        mov u_r11(%rip), %rax              /* r11 = rflags */
        and $0x600, %eax
        EXPECT(0x600, 56)
        jmp test_pass

/* ---- user mode ---- */
user_entry:
        NEXT_RESUME(1f)
u_pf:   mov UNMAPPED, %rax
1:      NEXT_RESUME(1f)
        mov $NONCANON, %rbx
u_gp:   mov (%rbx), %rax
1:      NEXT_RESUME(1f)
u_i41:  int $0x41
1:      int $0x43
u_i43_next:
        int $0x80
u_i80_next:
        lea marker(%rip), %rax
        mov $ALIAS, %rcx
        add %rcx, %rax
        mov (%rax), %rax
        mov %rax, u_alias(%rip)
        NEXT_RESUME(1f)
        mov %rsp, %r12
        mov $NONCANON, %rsp
u_ss:   push %rax
1:      mov %r12, %rsp
        NEXT_RESUME(u_after_sys)
        std
        mov $17, %eax                      /* xen_version(0): not a hypercall from here */
        xor %edi, %edi
        syscall
u_sys_next:
        ud2
u_after_sys:
        mov %rcx, u_rcx(%rip)
        mov %r11, u_r11(%rip)
        cld
        int $0x44                          /* back to the kernel for good */

/* ---- handlers ---- */
.macro HANDLER v, ec
h_\v:
        mov %rsp, ent_sp(%rip)
        mov %rcx, ent_rcx(%rip)
        mov %r11, ent_r11(%rip)
        pushfq
        popq ent_fl(%rip)
        lea h_\v(%rip), %rcx
        mov %rcx, ent_hnd(%rip)
        mov $\v, %ecx
        mov $\ec, %r11d
        movq $0, iret_flags(%rip)
        jmp common
.endm
        HANDLER 0, 0
        HANDLER 1, 0
        HANDLER 3, 0
        HANDLER 6, 0
        HANDLER 7, 0
        HANDLER 12, 1
        HANDLER 13, 1
        HANDLER 14, 1
        HANDLER 16, 0
        HANDLER 19, 0
        HANDLER 0x41, 0
        HANDLER 0x43, 0
        HANDLER 0x80, 0
h_sys:
        mov %rsp, ent_sp(%rip)
        mov %rcx, ent_rcx(%rip)
        mov %r11, ent_r11(%rip)
        pushfq
        popq ent_fl(%rip)
        lea h_sys(%rip), %rcx
        mov %rcx, ent_hnd(%rip)
        mov $SYSCALL_MARK, %ecx
        xor %r11d, %r11d
        movq $0x100, iret_flags(%rip)      /* VGCF_in_syscall */
        jmp common
h_end:
        mov saved_ksp(%rip), %rsp
        jmp after_user

/* Record the frame in log[nlog++], then return to `resume` (or the frame's rip) with
 * HYPERVISOR_iret. ecx = vector, r11 = 1 when the frame has an error code. */
common:
        mov %rax, ent_rax(%rip)
        push %rdx
        push %rsi
        push %rdi
        mov nlog(%rip), %eax
        cmp $32, %eax
        jae 7f
        shl $7, %eax
        lea log(%rip), %rdi
        add %rax, %rdi
        mov %rcx, R_VEC(%rdi)
        mov ent_sp(%rip), %rsi
        mov %rsi, R_SP(%rdi)
        mov ent_rcx(%rip), %rax
        mov %rax, R_RCX(%rdi)
        mov ent_r11(%rip), %rax
        mov %rax, R_R11(%rdi)
        mov ent_fl(%rip), %rax
        mov %rax, R_FL(%rdi)
        movzbl MASK, %eax
        mov %rax, R_MASK(%rdi)
        mov ent_rax(%rip), %rax
        mov %rax, R_RAX(%rdi)
        mov ent_hnd(%rip), %rax
        mov %rax, R_HND(%rdi)
        mov (%rsi), %rax
        mov %rax, R_FRCX(%rdi)
        mov 8(%rsi), %rax
        mov %rax, R_FR11(%rdi)
        movq $-1, R_EC(%rdi)
        test %r11d, %r11d
        jz 1f
        mov 16(%rsi), %rax
        mov %rax, R_EC(%rdi)
        add $8, %rsi
1:      mov 16(%rsi), %rax
        mov %rax, R_RIP(%rdi)
        mov 24(%rsi), %rax
        mov %rax, R_CS(%rdi)
        mov 32(%rsi), %rax
        mov %rax, R_RFL(%rdi)
        mov 40(%rsi), %rax
        mov %rax, R_RSP(%rdi)
        mov 48(%rsi), %rax
        mov %rax, R_SS(%rdi)
        incl nlog(%rip)
        xor %eax, %eax                     /* the return address */
        xchg %rax, resume(%rip)
        test %rax, %rax
        jz 1f
        mov %rax, 16(%rsi)
1:      test %r11d, %r11d                  /* drop the error code: move rcx, r11 up */
        jz 1f
        mov (%rsi), %rax
        mov %rax, 8(%rsi)
        mov -8(%rsi), %rax
        mov %rax, (%rsi)
1:      pop %rdi
        mov %rsi, %rax                     /* rdx and rsi back, then onto the frame */
        pop %rsi
        pop %rdx
        mov %rax, %rsp
        mov ent_rax(%rip), %rax
        pop %rcx
        pop %r11
        pushq iret_flags(%rip)
        jmp hypercall_page + 23 * 32
7:      movl $98, step_no(%rip)            /* runaway traps */
        lea stack_top(%rip), %rsp
        jmp fail

/* chk: check the last record. edi = vector, rsi = error code (-1: none), rdx = rip, rcx =
 * cs with the saved mask in bits 32+, r8 = the interrupted rsp; the frame must be at
 * r8 & ~15. rax = 0, or which check failed. */
chk:
        push %rbx
        LAST
        mov %r8, %r9
        call chk_at
        pop %rbx
        ret
/* chk_at: the same for the record at rbx, the frame aligned below r9. */
chk_at:
        mov $1, %eax
        cmp %rdi, R_VEC(%rbx)
        jne 1f
        inc %eax
        cmp %rsi, R_EC(%rbx)
        jne 1f
        inc %eax
        cmp %rdx, R_RIP(%rbx)
        jne 1f
        inc %eax
        cmp %rcx, R_CS(%rbx)
        jne 1f
        inc %eax
        cmp %r8, R_RSP(%rbx)
        jne 1f
        inc %eax
        cmpq $XSS, R_SS(%rbx)
        jne 1f
        inc %eax                           /* 7: the frame's place */
        and $~15, %r9
        mov R_EC(%rbx), %r10
        not %r10                           /* 0 when there is no error code */
        neg %r10
        sbb %r10, %r10
        and $8, %r10d
        add R_SP(%rbx), %r10
        add $56, %r10
        cmp %r9, %r10
        jne 1f
        inc %eax                           /* 8: rcx = the handler (Xen's sysret exit) */
        mov R_HND(%rbx), %r10
        cmp %r10, R_RCX(%rbx)
        jne 1f
        inc %eax                           /* 9: r11 = rflags */
        mov R_FL(%rbx), %r10
        cmp %r10, R_R11(%rbx)
        jne 1f
        inc %eax                           /* 10: IF in the frame = !saved mask */
        mov R_CS(%rbx), %r10
        shr $32, %r10
        test %r10b, %r10b
        setz %r10b
        movzbl %r10b, %r10d
        shl $9, %r10d
        mov R_RFL(%rbx), %r11
        and $0x200, %r11d
        cmp %r10, %r11
        jne 1f
        inc %eax                           /* 11: TF, NT, RF, AC clear in the handler */
        testl $0x54100, R_FL(%rbx)
        jnz 1f
        xor %eax, %eax
1:      ret

        .section .rodata
        .balign 16
/* trap_info: vector, flags (DPL | 4 = mask events), cs, address */
traptab:
        .byte 0, 0; .word 0; .long 0; .quad h_0
        .byte 1, 0; .word 0; .long 0; .quad h_1
        .byte 3, 0; .word 0; .long 0; .quad h_3
        .byte 6, 4; .word 0; .long 0; .quad h_6
        .byte 7, 0; .word 0; .long 0; .quad h_7
        .byte 12, 0; .word 0; .long 0; .quad h_12
        .byte 13, 0; .word 0; .long 0; .quad h_13
        .byte 14, 0; .word 0; .long 0; .quad h_14
        .byte 16, 0; .word 0; .long 0; .quad h_16
        .byte 19, 0; .word 0; .long 0; .quad h_19
        .byte 0x40, 0; .word 0; .long 0; .quad h_0
        .byte 0x41, 1; .word 0; .long 0; .quad h_0x41
        .byte 0x43, 3; .word 0; .long 0; .quad h_0x43
        .byte 0x44, 3; .word 0; .long 0; .quad h_end
        .byte 0x80, 7; .word 0; .long 0; .quad h_0x80
        .quad 0, 0
badtab:
        .byte 0x45, 3; .word 0; .long 0; .quad NONCANON
        .quad 0, 0
fcw_zm: .word 0x37b
mxcsr_zm: .long 0x1d80
mxcsr_def: .long 0x1f80
one:    .long 0x3f800000

        .data
        .balign 16
cbreg:  .word 2, 1; .long 0; .quad 0      /* CALLBACKTYPE_syscall, CALLBACKF_mask_events */
ext:    .long 0, 0
        .quad 0, 0
start_info: .quad 0
saved_ksp: .quad 0
resume: .quad 0
iret_flags: .quad 0
ent_sp: .quad 0
ent_rcx: .quad 0
ent_r11: .quad 0
ent_fl: .quad 0
ent_hnd: .quad 0
ent_rax: .quad 0
marker: .quad 0
u_alias: .quad 0
u_rcx:  .quad 0
u_r11:  .quad 0
nlog:   .long 0

        .bss
        .balign 4096
log:    .space 32 * 128
        .balign 16
        .space 8192
stack_top:
        .space 8192
kstack_top:
        .space 8192
ustack_top:

#include "testlib.S"
        TESTLIB traps
