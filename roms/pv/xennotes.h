/* Xen ELF notes (public/elfnote.h): owner "Xen", 4-byte padded. */
#define XEN_NOTE_STR(type, str) \
  .pushsection .note.Xen, "a"; .balign 4; .long 4; .long 2f - 1f; .long type; .asciz "Xen"; \
  1: .asciz str; 2: .balign 4; .popsection
#define XEN_NOTE_QUAD(type, val) \
  .pushsection .note.Xen, "a"; .balign 4; .long 4; .long 8; .long type; .asciz "Xen"; \
  .quad val; .popsection
#define XEN_ELFNOTE_ENTRY 1
#define XEN_ELFNOTE_HYPERCALL_PAGE 2
#define XEN_ELFNOTE_VIRT_BASE 3
#define XEN_ELFNOTE_PADDR_OFFSET 4
#define XEN_ELFNOTE_XEN_VERSION 5
#define XEN_ELFNOTE_GUEST_OS 6
#define XEN_ELFNOTE_LOADER 8
#define XEN_ELFNOTE_FEATURES 10

/* Hypercall numbers */
#define HC_set_trap_table 0
#define HC_sched_op 29
#define HC_xen_version 17
#define HC_console_io 18
#define HC_iret 23
#define HC_event_channel_op 32
