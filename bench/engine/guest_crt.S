/* Runtime for the flat guest build of the engine benchmark kernels.
 * The flat platform (src/flat.rs) enters at 0x100000 in 64-bit mode with rsp at the top
 * of RAM; .bss is not part of the raw image, so it is zeroed here. */
        .code64
        .section .text.entry, "ax"
        .globl  _start
_start:
        cld
        lea     __bss_start(%rip), %rdi
        lea     _end(%rip), %rcx
        sub     %rdi, %rcx
        xor     %eax, %eax
        rep stosb
        call    bench_main
        out     %al, $0xf4          /* exit with bench_main's return value */
        hlt

        .text
/* void platform_putc(int c): one byte to the debug console (port 0xe9). */
        .globl  platform_putc
platform_putc:
        mov     %edi, %eax
        out     %al, $0xe9
        ret
        .section .note.GNU-stack, "", @progbits
