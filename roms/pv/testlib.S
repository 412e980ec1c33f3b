/* testlib.S: the shared tail of the self-checking PV test guests, included at the end of
 * each with `TESTLIB name`. It provides:
 *   test_pass  print "XENOLITH-TEST name: PASS" and power off;
 *   8:/fail    print "XENOLITH-TEST name: FAIL at step NN" (step_no; 99 when jumped to
 *              through the local label 8) and shut down with SHUTDOWN_crash;
 *   print      console_io write of esi bytes at rdx.
 * The guest's EXPECT(v, step) macro stores the step and jumps to fail. */
.macro TESTLIB name
        .text
test_pass:
        lea m_pass(%rip), %rdx
        mov $m_pass_len, %esi
        call print
        movl $0, sched_shutdown(%rip)
        jmp shutdown
8:      movl $99, step_no(%rip)
fail:
        lea m_fail(%rip), %rdx
        mov $m_fail_len, %esi
        call print
        mov step_no(%rip), %eax            /* the step number as two digits */
        xor %edx, %edx
        mov $10, %ecx
        div %ecx
        add $'0', %al
        add $'0', %dl
        mov %al, digits(%rip)
        mov %dl, digits+1(%rip)
        lea digits(%rip), %rdx
        mov $3, %esi
        call print
        movl $3, sched_shutdown(%rip)      /* SHUTDOWN_crash */
shutdown:
        mov $2, %edi                       /* SCHEDOP_shutdown */
        lea sched_shutdown(%rip), %rsi
        mov $29, %eax
        syscall
        ud2
print:
        xor %edi, %edi                     /* CONSOLEIO_write */
        mov $18, %eax
        syscall
        ret

        .section .rodata
m_pass: .ascii "XENOLITH-TEST \name: PASS\n"
        .set m_pass_len, . - m_pass
m_fail: .ascii "XENOLITH-TEST \name: FAIL at step "
        .set m_fail_len, . - m_fail
        .data
step_no: .long 0
sched_shutdown: .long 0
digits: .ascii "00\n"
.endm
