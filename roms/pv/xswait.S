/* xswait: a xenstore client on the guest's ring that waits for the toolstack, for the
 * host-socket test (tests/xenstore_socket.rs). It watches control/shutdown and data/ping,
 * writes data/ready = "1", then blocks in sched_op poll on the store port (no timeout, no
 * timer: only the store can wake it). On every watch event it re-reads both nodes:
 * data/ping's value is copied to data/pong; control/shutdown = "poweroff" ends the run
 * with "XENOLITH-TEST xswait: PASS". Events that arrive while it waits for a reply are
 * remembered, not lost. */
#include "xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-xswait")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)
XEN_NOTE_QUAD(XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page)

#define HYPERCALL(n) call hypercall_page + (n) * 32
#define EXPECT(v, step) cmp $(v), %rax; je 9f; movl $(step), step_no(%rip); jmp fail; 9:
#define SHINFO 0x380000
#define XS_READ 2
#define XS_WATCH 4
#define XS_WRITE 11
#define XS_WATCH_EVENT 15
/* The ring page: req[1024], rsp[1024], req_cons, req_prod, rsp_cons, rsp_prod. */
#define REQ_PROD 2052
#define RSP_CONS 2056
#define RSP_PROD 2060

        .section .text.entry, "ax"
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        lea stack_top(%rip), %rsp
        /* map shared_info (the store port's pending bit) */
        mov $SHINFO, %rdi
        mov 40(%rsi), %rsi
        or $3, %rsi
        xor %edx, %edx
        HYPERCALL(14)
        EXPECT(0, 1)
        mov start_info(%rip), %r8
        mov 56(%r8), %rax                  /* store_mfn: VA = pfn << 12 (VIRT_BASE 0) */
        shl $12, %rax
        mov %rax, ring(%rip)
        mov 64(%r8), %eax                  /* store_evtchn */
        mov %eax, port(%rip)
        /* watches, then "ready" */
        mov $XS_WATCH, %edi
        lea w_shutdown(%rip), %rsi
        mov $w_shutdown_len, %edx
        call xs_request
        EXPECT(XS_WATCH, 2)
        mov $XS_WATCH, %edi
        lea w_ping(%rip), %rsi
        mov $w_ping_len, %edx
        call xs_request
        EXPECT(XS_WATCH, 3)
        mov $XS_WRITE, %edi
        lea w_ready(%rip), %rsi
        mov $w_ready_len, %edx
        call xs_request
        EXPECT(XS_WRITE, 4)

main_loop:
        cmpb $0, pending(%rip)
        jne check
        call xs_recv                       /* blocks */
        cmp $XS_WATCH_EVENT, %eax
        jne main_loop
check:
        movb $0, pending(%rip)
        /* control/shutdown == "poweroff": done */
        mov $XS_READ, %edi
        lea p_shutdown(%rip), %rsi
        mov $p_shutdown_len, %edx
        call xs_request
        cmp $XS_READ, %eax
        jne 1f
        cmpl $8, rlen(%rip)
        jne 1f
        lea rbuf(%rip), %rsi
        lea s_poweroff(%rip), %rdi
        mov $8, %ecx
        repe cmpsb
        jne 1f
        jmp test_pass
        /* data/ping → data/pong */
1:      mov $XS_READ, %edi
        lea p_ping(%rip), %rsi
        mov $p_ping_len, %edx
        call xs_request
        cmp $XS_READ, %eax
        jne main_loop
        lea p_pong(%rip), %rsi             /* wbuf = "data/pong\0" value */
        lea wbuf(%rip), %rdi
        mov $p_pong_len, %ecx
        rep movsb
        lea rbuf(%rip), %rsi
        mov rlen(%rip), %ecx
        rep movsb
        mov $XS_WRITE, %edi
        lea wbuf(%rip), %rsi
        mov rlen(%rip), %edx
        add $p_pong_len, %edx
        call xs_request
        EXPECT(XS_WRITE, 5)
        jmp main_loop

/* xs_request(edi = type, rsi = payload, edx = length): send a request, return the reply's
 * type in eax (payload in rbuf, length in rlen). Watch events met on the way set
 * `pending`. */
xs_request:
        push %rbx
        push %r12
        mov ring(%rip), %r9
        mov REQ_PROD(%r9), %ecx
        mov %edi, hdr(%rip)
        movl $0, hdr+4(%rip)
        movl $0, hdr+8(%rip)
        mov %edx, hdr+12(%rip)
        mov %rsi, %r12
        mov %edx, %ebx
        lea hdr(%rip), %rsi                /* the header, then the payload */
        mov $16, %edx
        call put_bytes
        mov %r12, %rsi
        mov %ebx, %edx
        call put_bytes
        mov %ecx, REQ_PROD(%r9)
        call notify
1:      call xs_recv
        cmp $XS_WATCH_EVENT, %eax
        jne 2f
        movb $1, pending(%rip)
        jmp 1b
2:      pop %r12
        pop %rbx
        ret

/* put_bytes(rsi = bytes, edx = count; r9 = ring, ecx = req_prod, advanced) */
put_bytes:
        test %edx, %edx
        jz 1f
        mov %ecx, %eax
        and $1023, %eax
        movb (%rsi), %r8b
        movb %r8b, (%r9,%rax)
        inc %ecx
        inc %rsi
        dec %edx
        jmp put_bytes
1:      ret

/* xs_recv: wait for a whole message in the response ring; header in hdr, payload in rbuf
 * (rlen); returns the type in eax. */
xs_recv:
        push %rbx
1:      mov port(%rip), %eax               /* clear the port's pending bit, then look */
        lock btr %rax, SHINFO+2048
        mov ring(%rip), %r9
        mov RSP_CONS(%r9), %ecx
        mov RSP_PROD(%r9), %edx
        sub %ecx, %edx                     /* bytes available */
        cmp $16, %edx
        jb 5f
        lea hdr(%rip), %rdi
        mov $16, %ebx
        call get_bytes
        mov hdr+12(%rip), %eax
        cmp $4096, %eax
        ja 8f
        lea 16(%rax), %ebx
        cmp %ebx, %edx
        jb 5f                              /* not whole yet */
        mov %eax, rlen(%rip)
        lea rbuf(%rip), %rdi
        mov %eax, %ebx                     /* the payload (ecx is past the header) */
        call get_bytes
        mov %ecx, RSP_CONS(%r9)            /* consumed: the server may write more */
        call notify
        mov hdr(%rip), %eax
        pop %rbx
        ret
5:      mov $3, %edi                       /* SCHEDOP_poll on the store port, no timeout */
        lea pollargs(%rip), %rsi
        HYPERCALL(29)
        EXPECT(0, 6)
        jmp 1b

/* get_bytes(rdi = dest, ebx = count; r9 = ring, ecx = index, advanced) */
get_bytes:
        test %ebx, %ebx
        jz 1f
        mov %ecx, %eax
        and $1023, %eax
        movb 1024(%r9,%rax), %r8b
        movb %r8b, (%rdi)
        inc %ecx
        inc %rdi
        dec %ebx
        jmp get_bytes
1:      ret

/* notify the store port (EVTCHNOP_send) */
notify:
        push %rcx
        push %rdx
        push %r9
        mov $4, %edi
        lea port(%rip), %rsi
        HYPERCALL(32)
        pop %r9
        pop %rdx
        pop %rcx
        ret

        .section .rodata
w_shutdown: .ascii "control/shutdown\0s\0"
        .set w_shutdown_len, . - w_shutdown
w_ping: .ascii "data/ping\0p\0"
        .set w_ping_len, . - w_ping
w_ready: .ascii "data/ready\0" "1"
        .set w_ready_len, . - w_ready
p_shutdown: .ascii "control/shutdown\0"
        .set p_shutdown_len, . - p_shutdown
p_ping: .ascii "data/ping\0"
        .set p_ping_len, . - p_ping
p_pong: .ascii "data/pong\0"
        .set p_pong_len, . - p_pong
s_poweroff: .ascii "poweroff"

        .data
        .balign 8
pollargs: .quad port; .long 1, 0; .quad 0  /* sched_poll: ports, nr_ports, timeout */
start_info: .quad 0
ring:   .quad 0
port:   .long 0
hdr:    .long 0, 0, 0, 0
rlen:   .long 0
pending: .byte 0

        .bss
        .balign 16
rbuf:   .space 4096
wbuf:   .space 4096 + 16
        .space 16384
stack_top:

#include "testlib.S"
        TESTLIB xswait
