#!/usr/bin/env bash
# Builds the engine benchmark kernels into bench/out/engine/: for each kernel K,
#   K.o       the kernel, compiled once (general registers only)
#   K.bin     flat guest image (K.o + guest_crt.S, linked at 0x100000), K.elf for objdump
#   K.native  host executable (the same K.o + native_main.c, libc for output only)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/../out/engine
mkdir -p "$out"

CC=${CC:-gcc}
# Code generation shared by guest and native (the kernel object is literally shared).
KFLAGS="-O2 -mgeneral-regs-only -mno-red-zone -fno-pic -fno-pie -ffreestanding -fno-stack-protector
        -fno-builtin -fno-tree-loop-distribute-patterns -fno-asynchronous-unwind-tables
        -fno-unwind-tables -fcf-protection=none -Wall -Wextra -Werror"

KERNELS="sha256:KERNEL_SHA256 memmix:KERNEL_MEMMIX vm:KERNEL_VM fpsimd:KERNEL_FPSIMD"

$CC -c -nostdlib -o "$out/guest_crt.o" "$here/guest_crt.S"
$CC -c -O2 -fno-pie -o "$out/native_main.o" "$here/native_main.c"
for kv in $KERNELS; do
  k=${kv%%:*}; def=${kv#*:}
  flags=$KFLAGS
  # The FP/SIMD kernel is compiled for SSE2 (x86-64's baseline) instead.
  [ "$k" = fpsimd ] && flags=${KFLAGS/-mgeneral-regs-only/-msse2 -mfpmath=sse}
  $CC $flags -DKERNEL=$def -c -o "$out/$k.o" "$here/kernels.c"
  # guest: no libc, no libgcc; any reference to memcpy/memset etc. fails the link
  ld -nostdlib -static -z noexecstack --no-warn-rwx-segments -T "$here/guest.ld" -o "$out/$k.elf" "$out/guest_crt.o" "$out/$k.o"
  objcopy -O binary "$out/$k.elf" "$out/$k.bin"
  # native
  $CC -no-pie -o "$out/$k.native" "$out/native_main.o" "$out/$k.o"
done
