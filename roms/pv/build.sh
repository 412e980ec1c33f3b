#!/usr/bin/env bash
# Builds the PV test guests (needs gcc/binutils). The results are committed so that a fresh
# checkout can run them without a toolchain.
set -euo pipefail
cd "$(dirname "$0")"
for n in hello crash mm privop events grant fifo traps xswait ldt; do
  gcc -c -nostdlib -o "/tmp/xenolith-pv-$n.o" "$n.S"
  ld -nostdlib -static --no-warn-rwx-segments -T xen.ld -o "$n.elf" "/tmp/xenolith-pv-$n.o"
done
# 32-bit PAE guests (ring 1).
for n in traps32; do
  gcc -m32 -c -nostdlib -o "/tmp/xenolith-pv-$n.o" "$n.S"
  ld -m elf_i386 -nostdlib -static --no-warn-rwx-segments -T xen32.ld -o "$n.elf" "/tmp/xenolith-pv-$n.o"
done
