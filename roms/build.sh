#!/usr/bin/env bash
# Builds the flat ROMs from source (needs gcc/binutils). The results are committed so that
# a fresh checkout can run them without a toolchain; CI rebuilds and compares.
set -euo pipefail
cd "$(dirname "$0")"
for s in hello/hello.S; do
  d=$(dirname "$s"); n=$(basename "$s" .S)
  gcc -c -nostdlib -o "$d/$n.o" "$s"
  ld -nostdlib -static -Ttext=0x100000 -Tdata=0x108000 -e _start -o "$d/$n.elf" "$d/$n.o"
  objcopy -O binary "$d/$n.elf" "$d/$n.bin"
done
pv/build.sh
