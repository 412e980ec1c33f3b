# The default flat guest: exercises the engine (calls, loops, string ops, division,
# self-modifying code) and prints its own success line.
        .code64
        .text
        .globl _start
_start:
        lea     msg(%rip), %rsi
        call    puts
        # sum 1..1000 with a loop
        xor     %eax, %eax
        mov     $1000, %ecx
1:      add     %rcx, %rax
        loop    1b
        cmp     $500500, %rax
        jne     fail
        # division
        mov     $1000000007, %rax
        xor     %edx, %edx
        mov     $97, %rcx
        div     %rcx
        cmp     $10309278, %rax
        jne     fail
        cmp     $41, %rdx
        jne     fail
        # rep movsb into a buffer and compare back with repe cmpsb
        lea     msg(%rip), %rsi
        lea     buf(%rip), %rdi
        mov     $msglen, %ecx
        cld
        rep movsb
        lea     msg(%rip), %rsi
        lea     buf(%rip), %rdi
        mov     $msglen, %ecx
        repe cmpsb
        jne     fail
        # self-modifying code: patch the immediate of the next mov
        movb    $42, patch+1(%rip)
patch:  mov     $7, %al
        cmp     $42, %al
        jne     fail
        lea     ok(%rip), %rsi
        call    puts
        mov     $0, %al
        out     %al, $0xf4
fail:
        lea     bad(%rip), %rsi
        call    puts
        mov     $1, %al
        out     %al, $0xf4

puts:   lodsb
        test    %al, %al
        jz      2f
        out     %al, $0xe9
        jmp     puts
2:      ret

msg:    .asciz  "Xenolith flat guest: hello\n"
        .set    msglen, . - msg
ok:     .asciz  "Xenolith flat guest: all checks passed\n"
bad:    .asciz  "Xenolith flat guest: FAILED\n"
        .data
buf:    .space  64
