/* grant: grant tables from the guest side — setup_table and mapping the frames it returns,
 * query_size, v1 entries used by GNTTABOP_copy (gref and gmfn sides, a read-only grant as
 * destination) and by map/unmap_grant_ref of the guest's own grant (GTF_reading/writing),
 * unknown ops, set_version 2 with get_version and get_status_frames (the status word set by
 * a map), a v2 copy, and XENMEM_add_to_physmap refused to a PV guest. Prints
 * "XENOLITH-TEST grant: PASS" or FAIL with the failing step, then powers off. */
#include "xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-grant")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define EXPECT(v, step) cmp $(v), %rax; je 9f; movl $(step), step_no(%rip); jmp fail; 9:
#define GNTTAB(cmd, arg, n) mov $(cmd), %edi; lea arg(%rip), %rsi; mov $(n), %edx; HYPERCALL(20)
#define PTE_RW 0x3
#define VA_GNT 0x300000     /* grant frame 0, frame 1 at +0x1000 */
#define VA_MAP 0x302000     /* map_grant_ref target */
#define VA_STAT 0x303000    /* status frame 0 */
#define PFN_A 0x200         /* granted data */
#define PFN_B 0x201         /* granted read-only */
#define PFN_C 0x202         /* copy destination */

        .section .text.entry, "ax"
        .globl _start
_start:
        lea stack_top(%rip), %rsp
        movabs $0x6b6f2d746e617267, %rax        /* "grant-ok" in PFN_A */
        mov %rax, (PFN_A << 12)

        /* 1. setup_table(DOMID_SELF, 2 frames) */
        GNTTAB(2, setup, 1)
        EXPECT(0, 1)
        movswq setup+8(%rip), %rax
        EXPECT(0, 2)
        /* query_size: 2 of 64 */
        GNTTAB(6, query, 1)
        EXPECT(0, 3)
        mov query+4(%rip), %eax
        EXPECT(2, 4)
        mov query+8(%rip), %eax
        EXPECT(64, 5)
        /* setup_table with count 2: -EINVAL */
        GNTTAB(2, setup, 2)
        EXPECT(-22, 6)

        /* 2. map both frames */
        mov $VA_GNT, %rdi
        mov frames(%rip), %rsi
        shl $12, %rsi
        or $PTE_RW, %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(0, 7)
        mov $(VA_GNT + 0x1000), %rdi
        mov frames+8(%rip), %rsi
        shl $12, %rsi
        or $PTE_RW, %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(0, 8)
        /* the toolstack's reserved entry 1 grants the xenstore page to domain 0 */
        movzwl VA_GNT+8, %eax
        EXPECT(1, 9)

        /* 3. v1 entries: 8 = PFN_A to us, 9 = PFN_B read-only to us */
        movl $(1 << 16 | 1), VA_GNT+8*8
        movl $PFN_A, VA_GNT+8*8+4
        movl $(1 << 16 | 1 | 4), VA_GNT+9*8
        movl $PFN_B, VA_GNT+9*8+4
        /* copy gref 8 @0 -> gmfn PFN_C @16, 8 bytes */
        GNTTAB(5, cp, 1)
        EXPECT(0, 10)
        movswq cp+36(%rip), %rax
        EXPECT(0, 11)
        mov (PFN_C << 12) + 16, %rax
        movabs $0x6b6f2d746e617267, %rcx
        cmp %rcx, %rax
        jne 8f
        /* the copy left no GTF_reading behind */
        movzwl VA_GNT+8*8, %eax
        EXPECT(1, 12)
        /* copy into the read-only grant 9: GNTST_general_error */
        GNTTAB(5, cp_ro, 1)
        EXPECT(0, 13)
        movswq cp_ro+36(%rip), %rax
        EXPECT(-1, 14)

        /* 4. map our own grant 8 at VA_MAP, read through it, unmap */
        GNTTAB(0, map, 1)
        EXPECT(0, 15)
        movswq map+18(%rip), %rax
        EXPECT(0, 16)
        mov VA_MAP, %rax
        movabs $0x6b6f2d746e617267, %rcx
        cmp %rcx, %rax
        jne 8f
        movzwl VA_GNT+8*8, %eax                 /* permit_access | reading | writing */
        EXPECT(0x19, 17)
        mov map+20(%rip), %eax
        mov %eax, unmap+16(%rip)
        GNTTAB(1, unmap, 1)
        EXPECT(0, 18)
        movswq unmap+20(%rip), %rax
        EXPECT(0, 19)
        movzwl VA_GNT+8*8, %eax
        EXPECT(1, 20)
        GNTTAB(1, unmap, 1)                    /* the handle is gone */
        EXPECT(0, 21)
        movswq unmap+20(%rip), %rax
        EXPECT(-4, 22)
        /* map with DOMID_SELF: map_grant_ref wants a real domain id */
        movw $0x7ff0, map+16(%rip)
        GNTTAB(0, map, 1)
        EXPECT(0, 23)
        movswq map+18(%rip), %rax
        EXPECT(-2, 24)

        /* 5. unknown and removed ops */
        GNTTAB(13, query, 1)
        EXPECT(-38, 25)
        GNTTAB(3, query, 1)
        EXPECT(-38, 26)

        /* 6. version 2 */
        GNTTAB(10, getver, 1)
        EXPECT(0, 27)
        mov getver+4(%rip), %eax
        EXPECT(1, 28)
        movl $2, setver(%rip)
        GNTTAB(8, setver, 1)
        EXPECT(0, 29)
        GNTTAB(10, getver, 1)
        EXPECT(0, 30)
        mov getver+4(%rip), %eax
        EXPECT(2, 31)
        /* entry 8 was cleared by the switch; reserved entry 1 kept in the v2 layout */
        mov VA_GNT+8*16, %rax
        EXPECT(0, 32)
        movzwl VA_GNT+16, %eax
        EXPECT(1, 33)
        /* get_status_frames(1) and map it */
        GNTTAB(9, gsf, 1)
        EXPECT(0, 34)
        movswq gsf+6(%rip), %rax
        EXPECT(0, 35)
        mov $VA_STAT, %rdi
        mov sframes(%rip), %rsi
        shl $12, %rsi
        or $PTE_RW, %rsi
        mov $2, %edx
        HYPERCALL(14)
        EXPECT(0, 36)
        /* v2 entry 10: full page PFN_A to us; copy it to PFN_C @32 */
        movl $(1 << 16 | 1), VA_GNT+10*16
        movq $PFN_A, VA_GNT+10*16+8
        GNTTAB(5, cp2, 1)
        EXPECT(0, 37)
        movswq cp2+36(%rip), %rax
        EXPECT(0, 38)
        mov (PFN_C << 12) + 32, %rax
        movabs $0x6b6f2d746e617267, %rcx
        cmp %rcx, %rax
        jne 8f
        /* map it: the status word says reading | writing, the entry's flags are untouched */
        movw $1, map+16(%rip)
        movl $10, map+12(%rip)
        GNTTAB(0, map, 1)
        EXPECT(0, 39)
        movswq map+18(%rip), %rax
        EXPECT(0, 40)
        movzwl VA_STAT+10*2, %eax
        EXPECT(0x18, 41)
        movzwl VA_GNT+10*16, %eax
        EXPECT(1, 42)
        /* set_version 1 while entry 10 is mapped: -EBUSY */
        movl $1, setver(%rip)
        GNTTAB(8, setver, 1)
        EXPECT(-16, 43)
        mov map+20(%rip), %eax
        mov %eax, unmap+16(%rip)
        GNTTAB(1, unmap, 1)
        EXPECT(0, 44)
        movzwl VA_STAT+10*2, %eax
        EXPECT(0, 45)

        /* 7. XENMEM_add_to_physmap(shared_info) on a PV guest: -EACCES */
        mov $7, %edi
        lea xatp(%rip), %rsi
        HYPERCALL(12)
        EXPECT(-13, 46)
        jmp test_pass

        .data
        .balign 16
setup:  .word 0x7ff0, 0
        .long 2
        .word 0, 0, 0, 0
        .quad frames
frames: .quad 0, 0
query:  .word 0x7ff0, 0
        .long 0, 0
        .word 0, 0
        /* gnttab_copy: source {u, domid, offset, pad}, dest {...}, len, flags, status */
cp:     .quad 8
        .word 1, 0, 0, 0
        .quad PFN_C
        .word 0x7ff0, 16, 0, 0
        .word 8, 1, 0, 0
        .quad 0
cp_ro:  .quad PFN_A
        .word 0x7ff0, 0, 0, 0
        .quad 9
        .word 1, 0, 0, 0
        .word 8, 2, 0, 0
        .quad 0
cp2:    .quad 10
        .word 1, 0, 0, 0
        .quad PFN_C
        .word 0x7ff0, 32, 0, 0
        .word 8, 1, 0, 0
        .quad 0
map:    .quad VA_MAP
        .long 2, 8
        .word 1, 0
        .long 0
        .quad 0
unmap:  .quad VA_MAP, 0
        .long 0
        .word 0, 0
setver: .long 0
getver: .word 0x7ff0, 0
        .long 0
gsf:    .long 1
        .word 0x7ff0, 0
        .quad sframes
sframes: .quad 0
xatp:   .word 0x7ff0, 0
        .long 0                                 /* XENMAPSPACE_shared_info */
        .quad 0, 0x400

        .bss
        .balign 16
        .space 16384
stack_top:

#include "testlib.S"
        TESTLIB grant
