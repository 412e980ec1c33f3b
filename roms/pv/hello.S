/* hello: the demo PV guest. Checks the hypercall ABI (hypercall page and bare syscall),
 * console_io, -ENOSYS for an unimplemented hypercall, a trap bounced through the trap table
 * and returned with HYPERVISOR_iret, and the console ring with its event channel; prints
 * "XENOLITH-TEST hello: PASS" (or FAIL and the check that failed) and powers off. */
#include "xennotes.h"

XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-hello")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_VIRT_BASE, 0)
XEN_NOTE_QUAD(XEN_ELFNOTE_PADDR_OFFSET, 0)
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define FAIL(msg) lea msg(%rip), %rdi; jmp fail

        .section .text.entry, "ax"
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        lea stack_top(%rip), %rsp

        /* 1. xen_version(XENVER_version) through the hypercall page: 4.x */
        xor %edi, %edi
        HYPERCALL(HC_xen_version)
        shr $16, %eax
        cmp $4, %eax
        je 1f
        FAIL(m_version)
1:
        /* 2. the same as a bare syscall from guest kernel mode (rcx/r11 clobbered) */
        mov $HC_xen_version, %eax
        xor %edi, %edi
        syscall
        shr $16, %eax
        cmp $4, %eax
        je 1f
        FAIL(m_syscall)
1:
        /* 3. console_io(CONSOLEIO_write) */
        mov $0, %edi
        mov $m_hello_len, %esi
        lea m_hello(%rip), %rdx
        HYPERCALL(HC_console_io)
        test %rax, %rax
        jz 1f
        FAIL(m_consoleio)
1:
        /* 4. an unimplemented hypercall (dm_op, 41) returns -ENOSYS */
        mov $41, %eax
        syscall
        cmp $-38, %rax
        je 1f
        FAIL(m_enosys)
1:
        /* 5. int3 bounced through the trap table (DPL 3), back with HYPERVISOR_iret */
        lea trap_table(%rip), %rdi
        HYPERCALL(HC_set_trap_table)
        test %rax, %rax
        jz 1f
        FAIL(m_traptable)
1:
        mov $0x1234, %rbx
        int3
        cmpl $1, int3_count(%rip)
        je 1f
        FAIL(m_int3)
1:
        cmp $0x1234, %rbx
        je 1f
        FAIL(m_int3regs)
1:
        /* 6. int $0x40 with DPL 0 in the table: #GP with error code (0x40 << 3) | 2 */
        int $0x40
        cmpq $((0x40 << 3) | 2), gp_error(%rip)
        je 1f
        FAIL(m_intdpl)
1:
        /* 7. the PASS line through the console ring and its event channel */
        lea m_pass(%rip), %rdi
        mov $m_pass_len, %esi
        call ring_write
        call shutdown_poweroff

/* ring_write(rdi = bytes, esi = length): copy into the console ring, notify. */
ring_write:
        mov start_info(%rip), %r8
        mov 72(%r8), %r9          /* console.mfn */
        shl $12, %r9              /* VA = pfn << 12 (VIRT_BASE 0) */
        mov 3084(%r9), %ecx       /* out_prod */
2:      test %esi, %esi
        jz 3f
        mov %ecx, %eax
        and $2047, %eax
        movb (%rdi), %dl
        movb %dl, 1024(%r9,%rax)
        inc %ecx
        inc %rdi
        dec %esi
        jmp 2b
3:      mov %ecx, 3084(%r9)
        mov 80(%r8), %eax         /* console.evtchn */
        mov %eax, evtchn_send(%rip)
        mov $4, %edi              /* EVTCHNOP_send */
        lea evtchn_send(%rip), %rsi
        HYPERCALL(HC_event_channel_op)
        ret

shutdown_poweroff:
        movl $0, sched_shutdown(%rip)
        mov $2, %edi              /* SCHEDOP_shutdown */
        lea sched_shutdown(%rip), %rsi
        HYPERCALL(HC_sched_op)
        ud2

/* fail(rdi = NUL-terminated reason) */
fail:
        mov %rdi, %r12
        lea m_fail(%rip), %rdi
        mov $m_fail_len, %esi
        call ring_write
        mov %r12, %rdi
        xor %esi, %esi
1:      cmpb $0, (%rdi,%rsi)
        je 2f
        inc %esi
        jmp 1b
2:      call ring_write
        movl $3, sched_shutdown(%rip)   /* SHUTDOWN_crash */
        mov $2, %edi
        lea sched_shutdown(%rip), %rsi
        HYPERCALL(HC_sched_op)
        ud2

/* int3 handler: the frame is rcx, r11, rip, cs, rflags, rsp, ss. */
int3_handler:
        pop %rcx
        pop %r11
        incl int3_count(%rip)
        push $0                   /* iret flags */
        jmp hypercall_page + HC_iret * 32

/* #GP handler: rcx, r11, error code, rip (at the int), ...: skip the 2-byte int. */
gp_handler:
        pop %rcx
        pop %r11
        pop %rax
        mov %rax, gp_error(%rip)
        addq $2, (%rsp)
        push $0
        jmp hypercall_page + HC_iret * 32

        .section .rodata
m_hello: .ascii "xenolith-hello: console_io works\n"
        .set m_hello_len, . - m_hello
m_pass: .ascii "XENOLITH-TEST hello: PASS\n"
        .set m_pass_len, . - m_pass
m_fail: .ascii "XENOLITH-TEST hello: FAIL "
        .set m_fail_len, . - m_fail
m_version: .asciz "xen_version via the hypercall page\n"
m_syscall: .asciz "xen_version via syscall\n"
m_consoleio: .asciz "console_io write\n"
m_enosys: .asciz "unimplemented hypercall did not return -ENOSYS\n"
m_traptable: .asciz "set_trap_table\n"
m_int3: .asciz "int3 was not delivered once\n"
m_int3regs: .asciz "registers not preserved across int3/iret\n"
m_intdpl: .asciz "int $0x40 with DPL 0 did not raise #GP((0x40<<3)|2)\n"

        .data
        .balign 16
trap_table:
        .byte 3, 3; .word 0xe033; .long 0; .quad int3_handler
        .byte 13, 0; .word 0xe033; .long 0; .quad gp_handler
        .byte 0x40, 0; .word 0xe033; .long 0; .quad int3_handler
        .quad 0, 0
start_info: .quad 0
int3_count: .long 0
gp_error: .quad 0
evtchn_send: .long 0
sched_shutdown: .long 0

        .bss
        .balign 16
        .space 16384
stack_top:
