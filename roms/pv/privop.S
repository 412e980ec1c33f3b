/* privop: CPUID (forced emulation and plain) and the privileged instructions Xen emulates
 * for a PV kernel: rdmsr/wrmsr with Xen's MSR policy (#GP for unknown MSRs), port I/O
 * under the virtual IOPL, mov from cr3, rdtsc. Prints "XENOLITH-TEST privop: PASS". */
#include "xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-privop")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define EXPECT(v, step) cmp $(v), %rax; je 9f; movl $(step), step_no(%rip); jmp fail; 9:
#define XEN_CPUID ud2; .ascii "xen"; cpuid

        .section .text.entry, "ax"
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        lea stack_top(%rip), %rsp
        lea trap_table(%rip), %rdi
        HYPERCALL(0)
        EXPECT(0, 1)

        /* 1. forced-emulation CPUID: Xen's signature leaf */
        mov $0x40000000, %eax
        xor %ecx, %ecx
        XEN_CPUID
        cmp $0x566e6558, %ebx             /* "XenV" */
        jne 8f
        cmp $0x65584d4d, %ecx             /* "MMXe" */
        jne 8f
        cmp $0x4d4d566e, %edx             /* "nVMM" */
        jne 8f
        mov $0x40000001, %eax
        XEN_CPUID
        shr $16, %eax
        EXPECT(4, 2)
        /* 2. plain cpuid agrees with the forced one (leaf 1, hypervisor bit set) */
        mov $1, %eax
        XEN_CPUID
        mov %ecx, %r12d
        mov $1, %eax
        cpuid
        cmp %ecx, %r12d
        jne 8f
        bt $31, %ecx
        jnc 8f
        /* 3. wrmsr/rdmsr FS_BASE */
        mov $0xc0000100, %ecx
        mov $0x12345678, %eax
        mov $0x00001bcd, %edx
        wrmsr
        xor %eax, %eax
        xor %edx, %edx
        rdmsr
        shl $32, %rdx
        or %rdx, %rax
        mov $0x00001bcd12345678, %rbx
        cmp %rbx, %rax
        jne 8f
        /* a non-canonical base: #GP(0) */
        mov $0x0000abcd, %edx
        wrmsr
        mov gp_count(%rip), %eax
        EXPECT(1, 3)
        movl $0, gp_count(%rip)
        /* 4. rdmsr of an MSR outside the policy (APIC_BASE): #GP(0) to the guest */
        movq $-1, gp_error(%rip)
        mov $0x1b, %ecx
        rdmsr
        mov gp_count(%rip), %eax
        EXPECT(1, 4)
        mov gp_error(%rip), %rax
        EXPECT(0, 5)
        /* 5. in without IOPL: #GP */
        inb $0x60, %al
        mov gp_count(%rip), %eax
        EXPECT(2, 6)
        /* 6. physdev_op set_iopl(1), then in reads all ones, out is dropped */
        movl $1, iopl(%rip)
        mov $6, %edi
        lea iopl(%rip), %rsi
        HYPERCALL(33)
        EXPECT(0, 7)
        xor %eax, %eax
        inb $0x60, %al
        EXPECT(0xff, 8)
        mov $0x3f8, %dx
        outb %al, %dx
        xor %eax, %eax
        inw %dx, %ax
        EXPECT(0xffff, 9)
        /* 7. mov from cr3 gives the L4's machine address (pt_base; VIRT_BASE 0) */
        mov %cr3, %rax
        mov start_info(%rip), %r8
        cmp 88(%r8), %rax
        jne 8f
        /* 8. rdtsc advances */
        rdtsc
        mov %eax, %r13d
        rdtsc
        cmp %r13d, %eax
        jbe 8f

        /* 9. what Xen refuses a PV domU: sysctl (-EPERM), hvm_op get_param (-EINVAL) */
        mov $35, %eax
        lea status_buf(%rip), %rdi
        syscall
        EXPECT(-1, 20)
        mov $34, %eax
        mov $1, %edi
        lea status_buf(%rip), %rsi
        syscall
        EXPECT(-22, 21)
        jmp test_pass

/* #GP: count, record the error code, skip the faulting instruction (2 bytes: rdmsr, inb imm) */
gp_handler:
        pop %rcx
        pop %r11
        pop %rax
        mov %rax, gp_error(%rip)
        incl gp_count(%rip)
        addq $2, (%rsp)
        push $0
        jmp hypercall_page + 23 * 32

        .section .rodata

        .data
        .balign 16
trap_table:
        .byte 13, 0; .word 0xe033; .long 0; .quad gp_handler
        .quad 0, 0
start_info: .quad 0
gp_error: .quad 0
gp_count: .long 0
iopl: .long 0
status_buf: .space 64

        .bss
        .balign 16
        .space 16384
stack_top:

#include "testlib.S"
        TESTLIB privop
