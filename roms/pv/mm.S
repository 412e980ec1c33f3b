/* mm: PV MMU checks — update_va_mapping (and that the TLB follows it), validation errors
 * (writable mapping of a page table, frame outside the domain, reserved bits, Xen's L4
 * slots), pinning rules, MMU_MACHPHYS_UPDATE, multicall results, writable page tables. Prints
 * "XENOLITH-TEST mm: PASS" or FAIL with the failing step, then powers off. */
#include "xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-mm")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define EXPECT(v, step) cmp $(v), %rax; je 9f; movl $(step), step_no(%rip); jmp fail; 9:
#define PTE_RW 0x3
#define VA_TEST 0x300000
#define PFN_TEST 0x200

        .section .text.entry, "ax"
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        lea stack_top(%rip), %rsp

        /* 1. update_va_mapping(VA_TEST -> PFN_TEST, rw), then VA_TEST aliases PFN_TEST */
        mov $VA_TEST, %rdi
        mov $(PFN_TEST << 12 | PTE_RW), %rsi
        mov $2, %edx                           /* UVMF_INVLPG */
        HYPERCALL(14)
        EXPECT(0, 1)
        movq $0x5a5a1234, VA_TEST
        mov (PFN_TEST << 12), %rax
        EXPECT(0x5a5a1234, 2)

        /* 2. a writable mapping of the L4 (a page table) is refused */
        mov start_info(%rip), %r8
        mov 88(%r8), %r12                      /* pt_base (VA == machine address here) */
        mov $VA_TEST, %rdi
        mov %r12, %rsi
        or $PTE_RW, %rsi
        xor %edx, %edx
        HYPERCALL(14)
        EXPECT(-22, 3)
        /* read-only is fine (UVMF_INVLPG: without a flush the old mapping may stay in
         * the TLB, as on Xen) */
        mov $VA_TEST, %rdi
        mov %r12, %rsi
        or $1, %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(0, 4)
        mov VA_TEST, %rax                       /* reads the L4 itself: slot 0 present */
        and $1, %eax
        EXPECT(1, 5)

        /* 3. a frame outside the domain */
        mov $VA_TEST, %rdi
        mov $(0xfffff << 12 | 1), %rsi
        xor %edx, %edx
        HYPERCALL(14)
        EXPECT(-22, 6)

        /* 4. reserved bit 52 */
        mov $VA_TEST, %rdi
        mov $(1 << 52 | PFN_TEST << 12 | 1), %rsi
        xor %edx, %edx
        HYPERCALL(14)
        EXPECT(-22, 7)

        /* 5. mmu_update on one of Xen's L4 slots (256) */
        lea 256*8(%r12), %rax
        mov %rax, req(%rip)
        movq $0, req+8(%rip)
        lea req(%rip), %rdi
        mov $1, %esi
        lea done(%rip), %rdx
        mov $0x7ff0, %r10
        mov $1, %eax                            /* mmu_update, bare syscall */
        syscall
        EXPECT(-22, 8)
        mov done(%rip), %eax
        EXPECT(0, 9)

        /* 6. the current L4 is pinned already: pinning again fails */
        movl $3, ext(%rip)                      /* MMUEXT_PIN_L4_TABLE */
        mov %r12, %rax
        shr $12, %rax
        mov %rax, ext+8(%rip)
        lea ext(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10
        mov $26, %eax
        syscall
        EXPECT(-22, 10)

        /* 7. MMU_MACHPHYS_UPDATE keeping the identity is accepted */
        movq $(PFN_TEST << 12 | 1), req(%rip)
        movq $PFN_TEST, req+8(%rip)
        lea req(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10
        mov $1, %eax
        syscall
        EXPECT(0, 11)

        /* 8. multicall: two update_va_mappings, the second invalid */
        lea mc(%rip), %rdi
        mov $2, %esi
        HYPERCALL(13)
        EXPECT(0, 12)
        mov mc+8(%rip), %rax
        EXPECT(0, 13)
        mov mc+64+8(%rip), %rax
        EXPECT(-22, 14)
        mov VA_TEST, %rax                       /* the first one took effect */
        EXPECT(0x5a5a1234, 15)

        /* 9. a foreign domain id is refused */
        lea req(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $5, %r10
        mov $1, %eax
        syscall
        EXPECT(-3, 16)

        /* 10. type reference counts: a pinned L1 cannot be mapped writable; once unpinned
         * (its last type reference gone) it can; unpinning twice fails */
        mov $0x210000, %rdi                    /* make the frame's own mapping read-only */
        mov $(0x210 << 12 | 1), %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(0, 17)
        movl $0, ext(%rip)                     /* MMUEXT_PIN_L1_TABLE */
        movq $0x210, ext+8(%rip)
        call mmuext
        EXPECT(0, 18)
        mov $VA_TEST, %rdi
        mov $(0x210 << 12 | PTE_RW), %rsi
        xor %edx, %edx
        HYPERCALL(14)
        EXPECT(-22, 19)
        movl $4, ext(%rip)                     /* MMUEXT_UNPIN_TABLE */
        call mmuext
        EXPECT(0, 20)
        mov $VA_TEST, %rdi
        mov $(0x210 << 12 | PTE_RW), %rsi
        xor %edx, %edx
        HYPERCALL(14)
        EXPECT(0, 21)
        call mmuext
        EXPECT(-22, 22)

        /* 11. writable page tables: with VMASST_TYPE_writable_pagetables, writes to a
         * pinned L1 through a read-only mapping are emulated and validated (MOV, LOCK
         * CMPXCHG, LOCK BTR) */
        xor %edi, %edi                         /* VMASST_CMD_enable */
        mov $2, %esi                           /* VMASST_TYPE_writable_pagetables */
        HYPERCALL(21)
        EXPECT(0, 23)
        mov $VA_TEST, %rdi                     /* drop the writable alias of frame 0x210 */
        mov $(PFN_TEST << 12 | PTE_RW), %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(0, 24)
        movl $0, ext(%rip)                     /* pin 0x210 as an L1 again */
        movq $0x210, ext+8(%rip)
        call mmuext
        EXPECT(0, 25)
        movq $(PFN_TEST << 12 | 1), 0x210000   /* entry 0: PFN_TEST, read-only */
        mov 0x210000, %rax
        and $~0xfff, %rax
        EXPECT(PFN_TEST << 12, 26)
        mov 0x210000, %rax                     /* cmpxchg it to PFN_TEST+1 */
        mov $((PFN_TEST + 1) << 12 | 1), %rcx
        lock cmpxchg %rcx, 0x210000
        setz %al
        movzbl %al, %eax
        EXPECT(1, 27)
        mov 0x210000, %rax
        and $~0xfff, %rax
        EXPECT((PFN_TEST + 1) << 12, 28)
        lock btrq $0, 0x210000                 /* clear the present bit */
        setc %al
        movzbl %al, %eax
        EXPECT(1, 29)
        mov 0x210000, %rax
        and $1, %eax
        EXPECT(0, 30)

        /* 12. the reservation: decrease gives a frame back (it can no longer be mapped),
         * increase gets one (up to the maximum), populate_physmap sets the M2P to the
         * gpfn asked for, exchange swaps a frame and reports nr_exchanged */
        mov $3, %edi                           /* XENMEM_current_reservation */
        call memop_dom
        mov %rax, res0(%rip)
        movq $0x220, list(%rip)
        mov $1, %edi                           /* XENMEM_decrease_reservation */
        call memop_res
        EXPECT(1, 31)
        mov $3, %edi
        call memop_dom
        mov res0(%rip), %rcx
        dec %rcx
        cmp %rcx, %rax
        je 9f
        movl $32, step_no(%rip)
        jmp fail
9:      mov $VA_TEST, %rdi                     /* the frame given back cannot be mapped */
        mov $(0x220 << 12 | PTE_RW), %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(-22, 33)
        movq $0, list(%rip)
        xor %edi, %edi                         /* XENMEM_increase_reservation */
        call memop_res
        EXPECT(1, 34)
        mov list(%rip), %rax
        EXPECT(0x220, 35)
        xor %edi, %edi                         /* at the maximum: nothing more */
        call memop_res
        EXPECT(0, 36)
        movq $0x221, list(%rip)
        mov $1, %edi
        call memop_res
        EXPECT(1, 37)
        movq $0x5555, list(%rip)
        mov $6, %edi                           /* XENMEM_populate_physmap */
        call memop_res
        EXPECT(1, 38)
        mov list(%rip), %rax
        EXPECT(0x221, 39)
        mov $0xffff800000000000, %rcx          /* M2P[0x221] */
        mov 0x221*8(%rcx), %rax
        EXPECT(0x5555, 40)
        mov $11, %edi                          /* XENMEM_exchange */
        lea xch(%rip), %rsi
        mov $12, %eax
        syscall
        EXPECT(0, 41)
        mov xch_done(%rip), %rax
        EXPECT(1, 42)
        mov outlist(%rip), %rax                /* M2P[new frame] = the gpfn asked for */
        mov $0xffff800000000000, %rcx
        mov (%rcx,%rax,8), %rax
        EXPECT(0x6666, 43)
        movq $0, xch_done(%rip)                /* sizes that do not match: -EINVAL */
        movl $1, xch_out_order(%rip)
        mov $11, %edi
        lea xch(%rip), %rsi
        mov $12, %eax
        syscall
        EXPECT(-22, 44)

        /* 13. a full flush drops every translation changed since the last one, whether
         * the change named its page (update_va_mapping) or not (mmu_update) */
        movq $0xaaaa, (PFN_TEST << 12)
        movq $0xbbbb, ((PFN_TEST + 1) << 12)
        mov $VA_TEST, %rdi                     /* VA_TEST -> PFN_TEST, in the TLB */
        mov $(PFN_TEST << 12 | PTE_RW), %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(0, 45)
        mov VA_TEST, %rax
        EXPECT(0xaaaa, 46)
        mov $VA_TEST, %rdi                     /* -> PFN_TEST + 1, no flush */
        mov $((PFN_TEST + 1) << 12 | PTE_RW), %rsi
        xor %edx, %edx
        HYPERCALL(14)
        EXPECT(0, 47)
        mov $(VA_TEST + 0x1000), %rdi          /* another page, with UVMF_TLB_FLUSH */
        mov $(PFN_TEST << 12 | PTE_RW), %rsi
        mov $1, %edx
        HYPERCALL(14)
        EXPECT(0, 48)
        mov VA_TEST, %rax
        EXPECT(0xbbbb, 49)
        mov start_info(%rip), %r8              /* VA_TEST's L1 entry (VA == MA here) */
        mov 88(%r8), %rax
        movabs $0x000ffffffffff000, %rcx
        mov (%rax), %rax                       /* L4[0] */
        and %rcx, %rax
        mov (%rax), %rax                       /* L3[0] */
        and %rcx, %rax
        mov ((VA_TEST >> 21) & 511) * 8(%rax), %rax  /* L2 */
        and %rcx, %rax
        lea ((VA_TEST >> 12) & 511) * 8(%rax), %rax  /* L1 */
        mov %rax, req(%rip)                    /* mmu_update: -> PFN_TEST, no flush */
        movq $(PFN_TEST << 12 | PTE_RW), req+8(%rip)
        lea req(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10
        mov $1, %eax
        syscall
        EXPECT(0, 50)
        movl $6, ext(%rip)                     /* MMUEXT_TLB_FLUSH_LOCAL */
        call mmuext
        EXPECT(0, 51)
        mov VA_TEST, %rax
        EXPECT(0xaaaa, 52)
        jmp test_pass

/* memop_res(cmd in edi): memory_op(cmd, &res) */
memop_res:
        lea res(%rip), %rsi
        mov $12, %eax
        syscall
        ret

/* memop_dom(cmd in edi): memory_op(cmd, &dom) */
memop_dom:
        lea dom(%rip), %rsi
        mov $12, %eax
        syscall
        ret

/* mmuext(): one mmuext_op from `ext` for DOMID_SELF */
mmuext:
        lea ext(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10
        mov $26, %eax
        syscall
        ret

        .section .rodata

        .data
        .balign 16
mc:     .quad 14, 0, VA_TEST, (PFN_TEST << 12 | PTE_RW), 2, 0, 0, 0
        .quad 14, 0, VA_TEST, (0xfffff << 12 | 1), 0, 0, 0, 0
req:    .quad 0, 0
ext:    .long 0, 0
        .quad 0, 0
done:   .quad 0
res0:   .quad 0
dom:    .word 0x7ff0
        .balign 8
list:   .quad 0
inlist: .quad 0x222
outlist: .quad 0x6666
/* xen_memory_reservation: extent_start, nr_extents, extent_order, mem_flags, domid */
res:    .quad list, 1
        .long 0, 0
        .word 0x7ff0, 0, 0, 0
/* xen_memory_exchange: in, out, nr_exchanged */
xch:    .quad inlist, 1
        .long 0, 0
        .word 0x7ff0, 0, 0, 0
        .quad outlist, 1
xch_out_order:
        .long 0, 0
        .word 0x7ff0, 0, 0, 0
xch_done: .quad 0
start_info: .quad 0

        .bss
        .balign 16
        .space 16384
stack_top:

#include "testlib.S"
        TESTLIB mm
