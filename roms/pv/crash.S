/* crash: a PV guest that prints a line and then executes ud2 with no trap table, so the
 * platform must crash the domain (exit status 1, reason and registers on stderr). */
#include "xennotes.h"
XEN_NOTE_STR(XEN_ELFNOTE_GUEST_OS, "xenolith-crash")
XEN_NOTE_STR(XEN_ELFNOTE_XEN_VERSION, "xen-3.0")
XEN_NOTE_STR(XEN_ELFNOTE_LOADER, "generic")
XEN_NOTE_QUAD(XEN_ELFNOTE_ENTRY, _start)

        .section .text.entry, "ax"
        .globl _start
_start:
        mov $18, %eax             /* console_io */
        xor %edi, %edi            /* CONSOLEIO_write */
        mov $m_len, %esi
        lea m(%rip), %rdx
        syscall
        mov $0xdeadbeef, %r15
        ud2
        .section .rodata
m:      .ascii "xenolith-crash: about to execute ud2 without a trap table\n"
        .set m_len, . - m
